//! # coffer-journal
//!
//! The durable write-ahead log behind coffer's engine. Every engine batch is
//! one record (checksummed header and payload) appended to a segment file
//! with group commit; snapshots of the engine let recovery skip old records;
//! recovery replays what follows the newest valid snapshot and checks that
//! every replayed outcome equals the journaled one. See `format` for the
//! byte layout and docs/ARCHITECTURE.md for the reasoning.

mod error;
mod files;
pub mod format;
mod options;
mod recovery;
mod scan;
mod snapshots;
mod stats;
mod tail;
mod writer;

pub use error::JournalError;
pub use files::{segments, snapshots, sync_directory};
pub use format::{EntryVerdict, JournalBatch};
pub use options::{Durability, JournalOptions, Retention};
pub use recovery::{open, recover, Mode, Recovered, RecoveryReport};
pub use scan::{scan_segment, SegmentEnd, TornTail};
pub use snapshots::{prune, write_snapshot};
pub use stats::{JournalStats, Position};
pub use tail::{Follower, ReaderThread, Tail, TailRecord};
pub use writer::{Completion, JournalWriter, SnapshotState};

/// Turns an engine batch into what the journal stores.
pub fn journal_batch(transactions: Vec<coffer_core::Transaction>, outcome: &coffer_core::BatchOutcome) -> JournalBatch {
    JournalBatch {
        timestamp_ms: outcome.timestamp_ms,
        first_sequence: outcome.first_sequence,
        verdicts: outcome.outcomes.iter().map(EntryVerdict::of).collect(),
        transactions,
    }
}
