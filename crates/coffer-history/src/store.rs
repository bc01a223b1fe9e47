//! The history database: which one, and the two roles a connection plays.
//! The projector is the only writer; HTTP handlers read through a small
//! pool of reader connections.

use crate::changes::{Changes, Cursor, HistoryEntry, HoldRow, OrderRow, TransactionRow};
use crate::error::HistoryError;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Entries one history page returns at most.
pub const HISTORY_PAGE_MAX: u32 = 1_000;
/// Ids one idempotency lookup asks for at most (an HTTP batch's size bound).
pub const LOOKUP_IDS_MAX: usize = 10_000;
/// Reader connections kept open per server.
const IDLE_READERS_MAX: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded default: one file, WAL mode.
    Sqlite { path: PathBuf },
    /// Server-grade: the tables live in `schema`, created when missing.
    Postgres { url: String, schema: String },
}

impl Database {
    /// `sqlite` (a file in the data directory), `sqlite:PATH`, or a
    /// `postgres://` / `postgresql://` URL.
    pub fn parse(text: &str, data_directory: &Path, schema: &str) -> Result<Self, HistoryError> {
        if text == "sqlite" {
            return Ok(Database::Sqlite {
                path: data_directory.join("history.sqlite"),
            });
        }
        if let Some(path) = text.strip_prefix("sqlite:") {
            return Ok(Database::Sqlite { path: path.into() });
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let valid_schema = !schema.is_empty()
                && schema.len() <= 63
                && schema
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
            if !valid_schema {
                return Err(HistoryError::Invalid(format!(
                    "history schema {schema:?}: 1 to 63 of a-z, 0-9 and _"
                )));
            }
            return Ok(Database::Postgres {
                url: text.to_owned(),
                schema: schema.to_owned(),
            });
        }
        Err(HistoryError::Invalid(format!(
            "history store {text:?}: expected sqlite, sqlite:PATH or a postgres:// URL"
        )))
    }

    /// A name for logs that never shows a password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite { path } => format!("sqlite:{}", path.display()),
            Database::Postgres { schema, .. } => format!("postgres (schema {schema})"),
        }
    }

    /// Opens the projector's connection, applying migrations.
    pub fn open_writer(&self) -> Result<Box<dyn Writer>, HistoryError> {
        match self {
            Database::Sqlite { path } => Ok(Box::new(crate::sqlite::SqliteStore::open(path, true)?)),
            Database::Postgres { url, schema } => {
                Ok(Box::new(crate::postgres::PostgresStore::open(url, schema, true)?))
            }
        }
    }

    pub fn open_reader(&self) -> Result<Box<dyn Reader>, HistoryError> {
        match self {
            Database::Sqlite { path } => Ok(Box::new(crate::sqlite::SqliteStore::open(path, false)?)),
            Database::Postgres { url, schema } => {
                Ok(Box::new(crate::postgres::PostgresStore::open(url, schema, false)?))
            }
        }
    }
}

/// The projector's side.
pub trait Writer: Send {
    fn cursor(&mut self) -> Result<Option<Cursor>, HistoryError>;
    /// Writes the rows and the cursor in one database transaction.
    fn write(&mut self, changes: &Changes, cursor: &Cursor) -> Result<(), HistoryError>;
}

/// What one history page asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub account: String,
    /// Only entries older than this id (the previous page's cursor).
    pub before: Option<i64>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: u32,
}

/// What one orders page asks for: every filter is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderQuery {
    pub product: Option<String>,
    pub user: Option<String>,
    pub status: Option<String>,
    /// Only orders created before this sequence (the previous page's cursor).
    pub before: Option<i64>,
    pub limit: u32,
}

/// The HTTP handlers' side.
pub trait Reader: Send {
    /// Newest first.
    fn history(&mut self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, HistoryError>;
    /// The account's last entry at or before `at_ms`.
    fn balance_at(&mut self, account: &str, at_ms: i64) -> Result<Option<HistoryEntry>, HistoryError>;
    /// The stored transactions among `ids`.
    fn transactions(&mut self, ids: &[&str]) -> Result<Vec<TransactionRow>, HistoryError>;
    /// Every account's entries in global order, after `after` (a page; for
    /// `coffer history verify`).
    fn entries_after(&mut self, after: i64, limit: u32) -> Result<Vec<HistoryEntry>, HistoryError>;
    /// Transactions in sequence order, after sequence `after` (a page).
    fn transactions_after(&mut self, after: i64, limit: u32) -> Result<Vec<TransactionRow>, HistoryError>;
    /// Holds in id order, after `after` (a page; for `coffer history verify`).
    fn holds_after(&mut self, after: &str, limit: u32) -> Result<Vec<HoldRow>, HistoryError>;
    fn order(&mut self, id: &str) -> Result<Option<OrderRow>, HistoryError>;
    /// Newest first.
    fn orders(&mut self, query: &OrderQuery) -> Result<Vec<OrderRow>, HistoryError>;
    /// Whatever the store keeps beside the rows to find them (SQLite's
    /// account chains) agrees with the rows. A full scan: for `verify`.
    fn check_derived(&mut self) -> Result<(), HistoryError> {
        Ok(())
    }
}

/// Reader connections, opened on demand and reused.
pub struct ReaderPool {
    database: Database,
    idle: Mutex<Vec<Box<dyn Reader>>>,
}

impl ReaderPool {
    pub fn new(database: Database) -> Self {
        ReaderPool {
            database,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on a connection. Blocking: call it from a blocking
    /// thread. A connection that failed is dropped, not reused.
    pub fn with<T>(&self, read: impl FnOnce(&mut dyn Reader) -> Result<T, HistoryError>) -> Result<T, HistoryError> {
        let reused = self.idle.lock().expect("reader pool lock").pop();
        let mut reader = match reused {
            Some(reader) => reader,
            None => self.database.open_reader()?,
        };
        let result = read(reader.as_mut());
        if result.is_ok() {
            let mut idle = self.idle.lock().expect("reader pool lock");
            if idle.len() < IDLE_READERS_MAX {
                idle.push(reader);
            }
        }
        result
    }
}

impl Drop for ReaderPool {
    /// PostgreSQL's blocking client closes its connection by blocking on
    /// its own runtime, which panics on an async thread: the pool may be
    /// dropped on one (with the server's state), so close on a plain thread.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        if idle.is_empty() {
            return;
        }
        let closing = std::thread::spawn(move || drop(idle));
        if closing.join().is_err() {
            tracing::warn!("closing history reader connections panicked");
        }
    }
}

/// Pages are bounded; the server checks the limit before it asks.
pub(crate) fn check_page_limit(limit: u32) {
    assert!((1..=HISTORY_PAGE_MAX).contains(&limit));
}

pub(crate) fn hold_status_name(stored: &str) -> Result<&'static str, HistoryError> {
    ["active", "captured", "released", "expired"]
        .into_iter()
        .find(|name| *name == stored)
        .ok_or_else(|| HistoryError::Invalid(format!("unknown hold status {stored:?}")))
}

pub(crate) fn kind_name(stored: &str) -> Result<&'static str, HistoryError> {
    match stored {
        "transaction" => Ok("transaction"),
        "hold_expired" => Ok("hold_expired"),
        other => Err(HistoryError::Invalid(format!("unknown history kind {other:?}"))),
    }
}
