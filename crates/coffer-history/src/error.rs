use thiserror::Error;

/// Errors of the history layer.
#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("journal: {0}")]
    Journal(#[from] coffer_journal::JournalError),
    #[error("history store: {0}")]
    Invalid(String),
}
