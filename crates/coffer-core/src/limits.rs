//! Every bound the engine enforces, in one place.
//!
//! The engine runs on one thread and holds its whole state in memory, so an
//! unbounded input (a huge transaction, a giant metadata blob, an id window
//! that never forgets) would turn into unbounded latency or memory for every
//! other client. Each limit below is checked on parse or on apply, and is
//! documented in docs/LIMITS.md.

/// Longest identifier (account, hold, transaction), in bytes.
pub const ID_BYTES_MAX: usize = 128;
/// Longest asset code in a unit such as `USD/2`.
pub const UNIT_CODE_BYTES_MAX: usize = 16;
/// Largest decimal scale of a unit: u128 has 38 full decimal digits.
pub const UNIT_SCALE_MAX: u8 = 38;
/// Operations in one atomic transaction.
pub const OPS_PER_TRANSACTION_MAX: usize = 128;
/// Compact JSON size of a metadata object.
pub const METADATA_BYTES_MAX: usize = 2048;
/// Transactions in one engine batch (one journal record).
pub const BATCH_TRANSACTIONS_MAX: usize = 65_536;
/// Longest hold time to live: one year. Longer holds are almost always a
/// client bug (seconds where milliseconds were meant).
pub const HOLD_TTL_MS_MAX: u64 = 366 * 24 * 3_600 * 1_000;
/// The last instant an absolute hold expiry may name: 9999-12-31T23:59:59.999Z,
/// the last RFC 3339 can write (answers show expiries as RFC 3339).
pub const INSTANT_MS_MAX: u64 = 253_402_300_799_999;
/// Distinct units one engine may know.
pub const UNITS_MAX: usize = 65_536;

/// The limits an operator may tune; the defaults suit one 24 GiB node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Accounts, including the implicit `@world` account of each unit.
    pub accounts_max: u32,
    /// Open (active) holds. A new hold beyond it is `capacity_exceeded`.
    pub holds_max: u32,
    /// Finished holds kept for lookup, on top of the time window: the oldest
    /// is forgotten first, so retention never blocks new holds.
    pub finished_holds_max: u32,
    /// How long a transaction id (and a finished hold) is remembered.
    pub idempotency_window_ms: u64,
    /// How many transaction ids are remembered at most.
    pub idempotency_entries_max: u32,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            accounts_max: 20_000_000,
            holds_max: 10_000_000,
            finished_holds_max: 1_000_000,
            idempotency_window_ms: 24 * 3_600 * 1_000,
            idempotency_entries_max: 20_000_000,
        }
    }
}
