//! The engine's own effects, handed to the history as it applies them.
//!
//! Following the journal, the projector must apply every record again to
//! learn its effects: as much CPU as the engine spends. The engine thread
//! already has them, so it turns each record it appends into the index's
//! compact form (a copy of ids and balances, no JSON) and offers it here.
//! The projector takes a record from the feed only when it starts exactly
//! where the store's cursor is and once the journal holds it durably; a
//! record the feed dropped (it is bounded) sends the projector back to the
//! journal, which it follows until it reaches the feed again. The journal
//! stays the record of truth: the feed only spares the re-application.

use crate::changes::{Changes, Cursor, Projection, Shape};
use coffer_core::{BatchOutcome, Engine, Transaction};
use coffer_journal::Position;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// Records the feed holds for the projector at most: a bounded memory
/// (each is one engine batch, at most `BATCH_TRANSACTIONS_MAX`).
pub const FEED_RECORDS_MAX: usize = 256;

/// One journal record's changes.
pub struct FeedRecord {
    /// Where the record before it ends: the cursor this one continues.
    pub before: Position,
    /// The cursor after it (`history_next` unused: the index counts).
    pub cursor: Cursor,
    pub changes: Changes,
}

/// The engine thread's end.
pub struct FeedSender {
    projection: Projection,
    sender: SyncSender<FeedRecord>,
    /// Where the last record offered ends.
    after: Position,
    dropped: Arc<AtomicU64>,
}

/// The projector's end.
pub struct FeedReceiver {
    pub(crate) receiver: Receiver<FeedRecord>,
    /// Records dropped because the feed was full (a metric).
    pub dropped: Arc<AtomicU64>,
}

/// A feed for an engine whose journal ends at `end` (the engine's state).
pub fn feed(engine: &Engine, end: Position) -> (FeedSender, FeedReceiver) {
    let (sender, receiver) = sync_channel(FEED_RECORDS_MAX);
    let dropped = Arc::new(AtomicU64::new(0));
    let cursor = Cursor {
        position: end,
        sequence_next: engine.sequence_next(),
        history_next: 0,
        timestamp_ms: engine.timestamp_ms_last(),
    };
    (
        FeedSender {
            projection: Projection::new(engine, cursor, Shape::Index),
            sender,
            after: end,
            dropped: Arc::clone(&dropped),
        },
        FeedReceiver { receiver, dropped },
    )
}

impl FeedSender {
    /// Offers the record just appended, ending at `after`: `engine` has
    /// applied it (the compact form reads new accounts' names and holds'
    /// states from it). Never blocks: a full feed drops the record.
    pub fn offer(
        &mut self,
        engine: &Engine,
        first_sequence: u64,
        transactions: &[Transaction],
        outcome: &BatchOutcome,
        after: Position,
    ) {
        let mut changes = Changes::default();
        self.projection
            .project_applied(engine, first_sequence, transactions, outcome, after, &mut changes);
        let record = FeedRecord {
            before: std::mem::replace(&mut self.after, after),
            cursor: self.projection.cursor,
            changes,
        };
        match self.sender.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The projector has stopped; it reads the journal when it starts.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Changes {
    /// Adds a later record's changes (the feed's records join into one write).
    pub(crate) fn extend_from(&mut self, later: Changes) {
        assert!(
            later.transactions.is_empty() && later.entries.is_empty(),
            "the feed carries compact changes"
        );
        self.compact.extend_from(&later.compact);
        self.holds.extend(later.holds);
        self.orders.extend(later.orders);
        self.order_updates.extend(later.order_updates);
    }
}
