use thiserror::Error;

/// Errors of the history layer.
#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("{0}")]
    PostgresConnect(#[from] crate::pg_connect::PgConnectError),
    #[error("journal: {0}")]
    Journal(#[from] coffer_journal::JournalError),
    #[error("history store: {0}")]
    Invalid(String),
    /// Another writer moved the store's cursor since this one last saw it.
    #[error("another writer moved the history cursor (expected {expected:?}, found {found:?})")]
    CursorMoved {
        expected: Option<coffer_journal::Position>,
        found: Option<coffer_journal::Position>,
    },
}
