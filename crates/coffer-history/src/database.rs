//! Which history database, chosen from the configuration: the one place
//! that names the backends. The projector opens its writer here; HTTP
//! handlers read through a small pool of reader connections.

use crate::changes::Shape;
use crate::error::HistoryError;
use crate::index::IndexLocation;
use crate::postgres::PostgresStore;
use crate::sqlite::SqliteStore;
use crate::store::{Reader, Writer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Reader connections kept open per server.
const IDLE_READERS_MAX: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded default: coffer's own files in a directory, shared by
    /// the projector and the readers of this process.
    Index(Arc<IndexLocation>),
    /// One SQLite file, WAL mode.
    Sqlite { path: PathBuf },
    /// Server-grade: the tables live in `schema`, created when missing.
    Postgres { url: String, schema: String },
}

impl Database {
    /// `index` (a directory in the data directory), `index:PATH`, `sqlite`
    /// (a file in the data directory), `sqlite:PATH`, or a `postgres://` /
    /// `postgresql://` URL.
    pub fn parse(text: &str, data_directory: &Path, schema: &str) -> Result<Self, HistoryError> {
        if text == "index" {
            return Ok(Database::Index(Arc::new(IndexLocation::new(
                data_directory.join("history"),
            ))));
        }
        if let Some(path) = text.strip_prefix("index:") {
            return Ok(Database::Index(Arc::new(IndexLocation::new(path.into()))));
        }
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
            "history store {text:?}: expected index, index:PATH, sqlite, sqlite:PATH or a postgres:// URL"
        )))
    }

    /// A name for logs that never shows a password.
    pub fn describe(&self) -> String {
        match self {
            Database::Index(location) => format!("index:{}", location.directory().display()),
            Database::Sqlite { path } => format!("sqlite:{}", path.display()),
            Database::Postgres { schema, .. } => format!("postgres (schema {schema})"),
        }
    }

    /// The form the projection hands this store its changes in.
    pub fn shape(&self) -> Shape {
        match self {
            Database::Index(_) => Shape::Index,
            Database::Sqlite { .. } | Database::Postgres { .. } => Shape::Rows,
        }
    }

    /// Opens the projector's connection, applying migrations.
    pub fn open_writer(&self) -> Result<Box<dyn Writer>, HistoryError> {
        match self {
            Database::Index(location) => Ok(Box::new(location.open_writer()?)),
            Database::Sqlite { path } => Ok(Box::new(SqliteStore::open(path, true)?)),
            Database::Postgres { url, schema } => Ok(Box::new(PostgresStore::open(url, schema, true)?)),
        }
    }

    pub fn open_reader(&self) -> Result<Box<dyn Reader>, HistoryError> {
        match self {
            Database::Index(location) => Ok(Box::new(location.open_reader()?)),
            Database::Sqlite { path } => Ok(Box::new(SqliteStore::open(path, false)?)),
            Database::Postgres { url, schema } => Ok(Box::new(PostgresStore::open(url, schema, false)?)),
        }
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
