//! What a history store does, whichever database holds it: the projector's
//! side (`Writer`, the only writer) and the readers' side (`Reader`).
//! `database.rs` chooses the backend; the backends implement these.

use crate::changes::{Changes, Cursor, HistoryEntry, HoldRow, OrderRow, TransactionRow};
use crate::error::HistoryError;

/// Entries one history page returns at most.
pub const HISTORY_PAGE_MAX: u32 = 1_000;
/// Ids one idempotency lookup asks for at most (an HTTP batch's size bound).
pub const LOOKUP_IDS_MAX: usize = 10_000;

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

pub(crate) fn order_status_name(stored: &str) -> Result<&'static str, HistoryError> {
    ["reserved", "completed", "confirmed", "cancelled", "expired"]
        .into_iter()
        .find(|name| *name == stored)
        .ok_or_else(|| HistoryError::Invalid(format!("unknown order status {stored:?}")))
}

pub(crate) fn kind_name(stored: &str) -> Result<&'static str, HistoryError> {
    match stored {
        "transaction" => Ok("transaction"),
        "hold_expired" => Ok("hold_expired"),
        other => Err(HistoryError::Invalid(format!("unknown history kind {other:?}"))),
    }
}
