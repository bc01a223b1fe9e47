//! What the projection hands the history index: fixed-size facts and the
//! transactions' binary encoding, no names and no JSON (those are rendered
//! when read). A leaf module: the projection fills it, the index stores it.
//! Every reference inside a batch (entry to transaction, transaction to its
//! entries and bytes) is relative to the batch, so batches made apart (by
//! the engine thread, record by record) join by `extend_from`, and the
//! index places them where its files end.

use coffer_core::{Rejection, Verdict};
use std::ops::Range;

/// What made an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The batch's `transactions[n]`.
    Transaction(u32),
    /// A hold released by its expiry: `blob[offset..]` holds its sequence
    /// and id (`CompactBatch::push_expired`).
    Expired { offset: u32 },
}

/// One change to one account: its balances after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactEntry {
    /// The engine's account position (`AccountIndex::position`).
    pub account: u32,
    pub source: Source,
    pub timestamp_ms: u64,
    pub available: i128,
    pub frozen: i128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactTransaction {
    pub sequence: u64,
    pub timestamp_ms: u64,
    pub verdict: Verdict,
    /// `Transaction::encode` (id and body) in the batch's blob.
    pub encoded: Range<u32>,
    /// Where its id is filed (`id_hash`).
    pub id_hash: u64,
    /// Its entries: `entry_count` from the batch's `entries[first_entry]`.
    pub first_entry: u64,
    pub entry_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub position: u32,
    pub name: String,
    pub unit: String,
}

/// One write's worth, in record order.
#[derive(Debug, Default)]
pub struct CompactBatch {
    pub entries: Vec<CompactEntry>,
    pub transactions: Vec<CompactTransaction>,
    pub blob: Vec<u8>,
    /// Accounts opened since the previous batch, by position.
    pub accounts: Vec<NewAccount>,
}

impl CompactBatch {
    pub fn len(&self) -> usize {
        self.entries.len() + self.transactions.len()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.transactions.clear();
        self.blob.clear();
        self.accounts.clear();
    }

    /// Appends `other`, moving its references past what this batch holds.
    pub fn extend_from(&mut self, other: &CompactBatch) {
        let transactions = u32::try_from(self.transactions.len()).expect("a batch holds < 2^32 transactions");
        let entries = self.entries.len() as u64;
        let blob = blob_offset(&self.blob);
        self.entries.extend(other.entries.iter().map(|entry| CompactEntry {
            source: match entry.source {
                Source::Transaction(number) => Source::Transaction(number + transactions),
                Source::Expired { offset } => Source::Expired { offset: offset + blob },
            },
            ..*entry
        }));
        self.transactions
            .extend(other.transactions.iter().map(|transaction| CompactTransaction {
                encoded: transaction.encoded.start + blob..transaction.encoded.end + blob,
                first_entry: transaction.first_entry + entries,
                ..transaction.clone()
            }));
        self.blob.extend_from_slice(&other.blob);
        self.accounts.extend(other.accounts.iter().cloned());
    }

    /// Appends an expired hold's record to the blob; its entry's source.
    pub fn push_expired(&mut self, sequence: u64, hold: &str) -> Source {
        let offset = blob_offset(&self.blob);
        let mut writer = coffer_core::codec::Writer::new(&mut self.blob);
        writer.u64(sequence);
        writer.str(hold);
        Source::Expired { offset }
    }
}

/// Blob offsets are 32-bit: a batch is bounded far below 4 GiB.
pub fn blob_offset(blob: &[u8]) -> u32 {
    u32::try_from(blob.len()).expect("a batch's blob stays below 4 GiB")
}

/// The stable hash an id is filed under (xxh3-64 of its text).
pub fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// A verdict in two bytes and a flag: (committed, code, op index).
pub fn verdict_parts(verdict: Verdict) -> (bool, u8, u16) {
    match verdict {
        Verdict::Committed => (true, 0, 0),
        Verdict::Rejected(Rejection { code, op_index }) => (false, code as u8, op_index),
    }
}
