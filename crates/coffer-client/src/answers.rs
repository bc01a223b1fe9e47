//! The API's answers. Amounts are 128-bit integers in the smallest unit
//! (cents for `USD/2`), as the server writes them; instants are RFC 3339
//! strings in UTC.

use serde::Deserialize;
use serde_json::Value;

/// An error answer's body (`{"error": {...}}`).
#[derive(Debug, Clone, Deserialize)]
pub struct ApiError {
    /// Stable, for programs: `insufficient_funds`, `not_found`,
    /// `id_reused`, `rate_limited`, …
    pub code: String,
    /// For people.
    pub message: String,
    #[serde(default)]
    pub details: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub id: String,
    pub unit: String,
    pub available: i128,
    pub frozen: i128,
    pub total: i128,
    pub min_available: Option<i128>,
    pub max_total: Option<i128>,
    /// `open` or `closed`.
    pub status: String,
    pub metadata: Option<Value>,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// A transaction's outcome.
#[derive(Debug, Clone, Deserialize)]
pub struct TransactionResult {
    pub id: String,
    /// `committed`, `rejected`, or `pending` (an async write on its way).
    pub status: String,
    /// The rejection's code.
    pub code: Option<String>,
    /// The operation that was rejected.
    pub op_index: Option<u16>,
    /// Position in the ledger's order (absent while pending).
    pub seq: Option<u64>,
    pub timestamp: Option<String>,
    /// Balances after a first commit (a replayed answer has none).
    #[serde(default)]
    pub effects: Vec<Effect>,
    /// The hold a hold operation created or changed.
    pub hold: Option<Value>,
}

/// An account's balances after a transaction.
#[derive(Debug, Clone, Deserialize)]
pub struct Effect {
    pub account: String,
    pub unit: String,
    pub available: i128,
    pub frozen: i128,
    pub total: i128,
    pub version: u64,
}

/// One change to an account, with its balances after.
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryEntry {
    pub id: String,
    pub kind: String,
    pub transaction_id: Option<String>,
    pub hold_id: Option<String>,
    pub seq: i64,
    pub timestamp: String,
    pub unit: String,
    pub available_change: i128,
    pub frozen_change: i128,
    pub available: i128,
    pub frozen: i128,
    pub total: i128,
}

/// One page of a list, and the cursor of the next if there is one.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}
