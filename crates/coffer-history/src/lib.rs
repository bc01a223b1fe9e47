//! # coffer-history
//!
//! coffer's read model. The journal keeps commands; this crate keeps what
//! they did, queryable with SQL long after the engine has forgotten it:
//! every transaction's outcome, every change to every account with its
//! balances after, and every hold's latest state. A projector thread
//! follows the journal's durable records and writes them with its cursor
//! atomically, so a crash never duplicates or skips a row. The store is
//! coffer's own index (the default), SQLite or PostgreSQL; an export copies
//! the index into SQLite or PostgreSQL for SQL tools. The formats and the
//! schema are documented in docs/HISTORY.md.

mod account_chain;
mod changes;
mod compact;
mod database;
mod error;
mod export;
mod feed;
mod index;
pub mod pg_connect;
mod pg_copy;
mod postgres;
mod projector;
mod sqlite;
mod sqlite_rows;
mod store;
mod verify;

pub use changes::{
    order_hold, Changes, Cursor, HistoryEntry, HoldRow, OrderMetadata, OrderRow, OrderUpdate, Projection, Shape,
    TransactionRow, ORDER_STOCK_PART,
};
pub use database::{Database, ReaderPool};
pub use error::HistoryError;
pub use export::Export;
pub use feed::{feed, FeedReceiver, FeedSender, FEED_RECORDS_MAX};
pub use projector::{Projector, ProjectorSettings, ProjectorStats};
pub use store::{HistoryQuery, OrderQuery, Reader, Writer, HISTORY_PAGE_MAX, LOOKUP_IDS_MAX};
pub use verify::{verify, VerifyReport};
