//! How far the journal is durable, and who still reads it: the writer
//! advances these, and every follower (history, event publisher, tools)
//! reads them. The only place that says what is durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A place between two records: the segment (named by its first sequence)
/// and a byte offset in it. Ordered as the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Counters for metrics; updated by the writer.
#[derive(Debug, Default)]
pub struct JournalStats {
    pub bytes_written: AtomicU64,
    pub records_written: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_micros_last: AtomicU64,
    pub sync_micros_total: AtomicU64,
    /// Sequence below which everything is durable.
    pub durable_sequence: AtomicU64,
    pub snapshot_micros_last: AtomicU64,
    /// Where the durable bytes end: (segment's first sequence, length).
    /// A pair, so behind a lock: readers must never see a new segment with
    /// the previous segment's length.
    durable_position: Mutex<Position>,
    /// The sequence each journal reader (the history projector, the event
    /// publisher) still needs: pruning keeps a snapshot at or before the
    /// lowest and every segment after it.
    readers: Mutex<Vec<Arc<AtomicU64>>>,
}

impl JournalStats {
    pub(crate) fn new(sequence_next: u64, position: Position) -> Self {
        JournalStats {
            bytes_written: AtomicU64::new(0),
            records_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_micros_last: AtomicU64::new(0),
            sync_micros_total: AtomicU64::new(0),
            durable_sequence: AtomicU64::new(sequence_next),
            snapshot_micros_last: AtomicU64::new(0),
            durable_position: Mutex::new(position),
            readers: Mutex::new(Vec::new()),
        }
    }

    /// Stats of a journal that no writer appends to (offline tools and
    /// tests): everything up to `end` counts as durable.
    pub fn finished(sequence_next: u64, end: Position) -> Arc<Self> {
        Arc::new(JournalStats::new(sequence_next, end))
    }

    /// Registers a reader that needs the journal from `sequence` on; it
    /// stores its progress in the returned cell as it goes.
    pub fn register_reader(&self, sequence: u64) -> Arc<AtomicU64> {
        let cell = Arc::new(AtomicU64::new(sequence));
        self.readers.lock().expect("readers lock").push(Arc::clone(&cell));
        cell
    }

    /// The lowest sequence a reader still needs; `u64::MAX` without readers.
    pub fn reader_sequence(&self) -> u64 {
        let readers = self.readers.lock().expect("readers lock");
        readers
            .iter()
            .map(|cell| cell.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The end of what is durable: a reader may read every byte before it.
    pub fn durable_position(&self) -> Position {
        *self.durable_position.lock().expect("durable position lock")
    }

    pub(crate) fn set_durable_position(&self, position: Position) {
        *self.durable_position.lock().expect("durable position lock") = position;
    }
}
