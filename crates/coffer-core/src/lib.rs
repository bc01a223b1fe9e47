//! # coffer-core
//!
//! The deterministic ledger state machine at the centre of coffer: validated
//! domain types, the engine that applies transactions atomically with
//! idempotency and hold expiry, and the binary encodings used by the journal
//! and snapshots. No I/O, no async, no clock, no randomness: the engine's
//! only inputs are a batch timestamp and the transactions themselves.

mod account_table;
mod amount;
mod apply;
pub mod codec;
mod command;
mod engine;
mod entry_queue;
mod error;
mod idempotency;
mod identifier;
mod invariants;
pub mod limits;
mod metadata;
#[cfg(feature = "openapi")]
pub mod openapi;
mod operation;
mod operation_json;
mod prefetch;
mod probe_table;
mod rejection;
mod snapshot;
mod state;
mod transaction;
mod unit;

/// Reads an optional count as an integer or a whole-valued JSON number.
pub use amount::whole_number as deserialize_whole_number;
pub use amount::{Amount, Balance};
pub use command::Command;
pub use engine::Engine;
pub use error::CoreError;
pub use identifier::{AccountId, HoldId, TransactionId, WORLD};
pub use limits::EngineLimits;
pub use metadata::Metadata;
pub use operation::{LimitChange, Operation};
pub use prefetch::prefetch;
pub use rejection::{Rejection, RejectionCode};
pub use snapshot::{SnapshotSource, SNAPSHOT_FORMAT_VERSION};
pub use state::{
    AccountIndex, AccountStatus, AccountView, BatchOutcome, Effect, ExpiredHold, HoldStatus, HoldView, Outcome, Record,
    Verdict,
};
pub use transaction::Transaction;
pub use unit::Unit;
