//! A cluster's history, in PostgreSQL: one schema per shard
//! (`{cluster schema}_history_{shard}`, the single-node PostgreSQL store's
//! tables), written by the shard's owner from the entries it applies and
//! read by every node.
//!
//! The store's cursor is the partition offset of the next entry to
//! project, written in the same database transaction as the rows. The
//! PostgreSQL store applies a write only if the cursor is still the one
//! its writer last saw, so a paused old owner that wakes up writes
//! nothing twice. An owner snapshots its shard only at an offset the
//! history has reached: a new owner, which starts from the snapshot, can
//! always rebuild the rows from there.
//!
//! The same rows become the shard's results and change events on Kafka,
//! sent before the rows are committed: an owner that dies in between
//! leaves the next one to send them again (at-least-once; events carry
//! the shard and an id in the shard's order, for consumers to
//! deduplicate).

use super::wire::ReplyTo;
use super::SHARDS_MAX;
use coffer_core::{BatchOutcome, Engine, Transaction};
use coffer_history::{Changes, Cursor, Database, HistoryError, Projection, Shape, Writer};
use coffer_journal::Position;
use coffer_kafka::{messages, Applied, Delivery, Message};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SCHEMA_INFIX: &str = "_history_";
/// Room a cluster schema's name leaves for its shards' history schemas
/// (PostgreSQL names are at most 63 bytes).
pub const SCHEMA_SUFFIX_LEN_MAX: usize = SCHEMA_INFIX.len() + 4;
const _: () = assert!(SHARDS_MAX <= 10_000, "a shard number has at most 4 digits");

/// Rows gathered into one database transaction at most; past it, the
/// owner waits for the writer (the history holds the shard to its pace).
const ROWS_PER_WRITE_MAX: usize = 30_000;
/// Rows wait at most this long before they are written, unless a history
/// read waits for them: then they go at once.
const WRITE_INTERVAL: Duration = Duration::from_millis(200);
/// Pause before retrying a failed database write (doubles to 32×).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// The history store of `shard`.
pub fn shard_database(database_url: &str, cluster_schema: &str, shard: u32) -> Database {
    assert!(shard < SHARDS_MAX);
    assert!(cluster_schema.len() + SCHEMA_SUFFIX_LEN_MAX <= 63);
    Database::Postgres {
        url: database_url.to_owned(),
        schema: format!("{cluster_schema}{SCHEMA_INFIX}{shard}"),
    }
}

/// What the writer thread shares with the owner.
#[derive(Default)]
struct Written {
    /// Every entry before this offset is in the store.
    offset: AtomicU64,
    /// Why the writer stopped for good (another writer moved the cursor).
    failure: Mutex<Option<String>>,
}

/// One database transaction's worth, its results and events, and the
/// history reads waiting for it.
struct Batch {
    changes: Changes,
    messages: Vec<Message>,
    cursor: Cursor,
    syncs: Vec<ReplyTo>,
}

/// Where a node's shards send their results and change events.
#[derive(Clone)]
pub struct Events {
    pub delivery: Arc<Delivery>,
    pub runtime: tokio::runtime::Handle,
}

/// The owner's side: builds rows from the entries the owner applies and
/// hands them to a writer thread, so database round trips never stall
/// the apply loop (except when the rows reach their bound).
pub struct HistoryFeed {
    shard: u32,
    /// The store's cursor when the owner started: entries before it are
    /// already stored and are applied without rows.
    stored: Cursor,
    /// Present from the stored cursor on.
    projection: Option<Projection>,
    changes: Changes,
    events: Events,
    messages: Vec<Message>,
    syncs: Vec<ReplyTo>,
    pending_since: Option<Instant>,
    to_writer: Option<SyncSender<Batch>>,
    recycled: Receiver<Changes>,
    written: Arc<Written>,
}

impl HistoryFeed {
    /// Opens the shard's store (creating its tables) and starts its writer
    /// thread; `synced` replies to history reads once their rows are in.
    pub fn open(
        database: &Database,
        shard: u32,
        events: Events,
        synced: impl Fn(Vec<ReplyTo>, u64) + Send + 'static,
    ) -> Result<HistoryFeed, HistoryError> {
        let mut writer = database.open_writer()?;
        let stored_row = writer.cursor()?;
        // A new store starts after the partition's genesis entry.
        let stored = stored_row.unwrap_or(Cursor {
            position: offset_position(1),
            ..Cursor::default()
        });
        assert_eq!(stored.position.segment, 0, "a shard's history cursor is an offset");
        let written = Arc::new(Written {
            offset: AtomicU64::new(stored.position.offset),
            failure: Mutex::new(None),
        });
        let (to_writer, batches) = sync_channel::<Batch>(1);
        let (recycle, recycled) = channel::<Changes>();
        {
            let (written, database, events) = (Arc::clone(&written), database.clone(), events.clone());
            std::thread::Builder::new()
                .name(format!("coffer-history-{shard}"))
                .spawn(move || {
                    let failed = write_batches(
                        writer,
                        stored_row,
                        &Sink {
                            database,
                            events,
                            written: Arc::clone(&written),
                        },
                        &batches,
                        &recycle,
                        synced,
                    );
                    if let Err(error) = failed {
                        tracing::warn!(shard, %error, "the shard's history writer stopped");
                        *written.failure.lock().expect("failure lock") = Some(error.to_string());
                    }
                })
                .expect("spawn a shard history writer");
        }
        Ok(HistoryFeed {
            shard,
            stored,
            projection: None,
            changes: Changes::default(),
            events,
            messages: Vec::new(),
            syncs: Vec::new(),
            pending_since: None,
            to_writer: Some(to_writer),
            recycled,
            written,
        })
    }

    /// Where the owner's replay must start for the rows to be complete.
    pub fn stored_offset(&self) -> u64 {
        self.stored.position.offset
    }

    /// Every entry before this offset is in the store.
    pub fn written_offset(&self) -> u64 {
        self.written.offset.load(Ordering::Acquire)
    }

    pub fn failure(&self) -> Option<String> {
        self.written.failure.lock().expect("failure lock").clone()
    }

    /// Called before the entry at `offset` is applied, with the engine as
    /// it is then: rows start where the store's cursor is.
    pub fn reach(&mut self, engine: &Engine, offset: u64) {
        if self.projection.is_some() || offset < self.stored.position.offset {
            return;
        }
        if offset > self.stored.position.offset {
            // Only when the store was dropped or replaced: its rows for the
            // entries in between cannot be rebuilt from this snapshot.
            tracing::error!(
                shard = self.shard,
                from = self.stored.position.offset,
                to = offset,
                "the shard's history store is behind its snapshot: these entries have no rows"
            );
        }
        let cursor = Cursor {
            position: offset_position(offset),
            ..self.stored
        };
        self.projection = Some(Projection::new(engine, cursor, Shape::Rows));
    }

    /// Adds the rows of the entry at `offset`, just applied (`batch`:
    /// the transactions and their outcome, for entries that applied any).
    pub fn applied(&mut self, engine: &Engine, offset: u64, batch: Option<(&[Transaction], &BatchOutcome)>) {
        let Some(projection) = &mut self.projection else { return };
        let next = offset_position(offset + 1);
        match batch {
            Some((transactions, outcome)) => {
                let first_sequence = engine.sequence_next() - transactions.len() as u64;
                let (rows_before, entries_before) = (self.changes.transactions.len(), self.changes.entries.len());
                projection.project_applied(engine, first_sequence, transactions, outcome, next, &mut self.changes);
                let applied = Applied {
                    shard: Some(self.shard),
                    transactions,
                    outcome,
                    rows: &self.changes.transactions[rows_before..],
                    entries: &self.changes.entries[entries_before..],
                };
                messages(self.events.delivery.settings(), &applied, &mut self.messages);
            }
            None => projection.cursor.position = next,
        }
        self.pending_since.get_or_insert_with(Instant::now);
    }

    /// A history read waits for the entry at `offset`: `Some` when its rows
    /// are in the store already (the owner replies now), else it is
    /// answered by the writer after its next write.
    pub fn sync(&mut self, reply_to: ReplyTo, offset: u64) -> Option<ReplyTo> {
        if self.projection.is_none() || offset < self.written_offset() {
            return Some(reply_to);
        }
        self.syncs.push(reply_to);
        None
    }

    /// Hands the rows to the writer when due: when they reach their bound
    /// (waiting for the writer then), when a history read waits, or after
    /// `WRITE_INTERVAL`.
    pub fn pass_on(&mut self) -> Result<(), HistoryError> {
        let Some(since) = self.pending_since else { return Ok(()) };
        let full = self.changes.row_count() >= ROWS_PER_WRITE_MAX;
        if !(full || !self.syncs.is_empty() || since.elapsed() >= WRITE_INTERVAL) {
            return Ok(());
        }
        self.hand_over(full)
    }

    /// Hands every row over and waits until it is written: an owner calls
    /// it before a snapshot, which may then cover no entry without rows.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), HistoryError> {
        let Some(projection) = &self.projection else {
            return Ok(());
        };
        let target = projection.cursor.position.offset;
        if self.pending_since.is_some() {
            self.hand_over(true)?;
        }
        let deadline = Instant::now() + timeout;
        while self.written_offset() < target {
            if let Some(failure) = self.failure() {
                return Err(HistoryError::Invalid(failure));
            }
            if Instant::now() >= deadline {
                return Err(HistoryError::Invalid(format!(
                    "shard {}: the history did not reach offset {target} within {timeout:?}",
                    self.shard
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    fn hand_over(&mut self, wait: bool) -> Result<(), HistoryError> {
        let projection = self.projection.as_ref().expect("rows pending only while projecting");
        let spare = self.recycled.try_recv().unwrap_or_default();
        let batch = Batch {
            changes: std::mem::replace(&mut self.changes, spare),
            messages: std::mem::take(&mut self.messages),
            cursor: projection.cursor,
            syncs: std::mem::take(&mut self.syncs),
        };
        let to_writer = self.to_writer.as_ref().expect("the writer lives as long as the feed");
        let gone = || HistoryError::Invalid(format!("shard {}: the history writer stopped", self.shard));
        let sent = match wait {
            true => to_writer.send(batch).map_err(|_| gone()),
            false => match to_writer.try_send(batch) {
                Ok(()) => Ok(()),
                // The writer is busy: keep gathering (a larger write costs
                // less per row).
                Err(TrySendError::Full(batch)) => {
                    self.changes = batch.changes;
                    self.messages = batch.messages;
                    self.syncs = batch.syncs;
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => Err(gone()),
            },
        };
        self.pending_since = None;
        sent
    }
}

impl Drop for HistoryFeed {
    /// The writer finishes the batch it holds and ends; nobody waits for
    /// it (a database call may take long, and the store's cursor check
    /// makes a late write harmless).
    fn drop(&mut self) {
        self.to_writer.take();
    }
}

fn offset_position(offset: u64) -> Position {
    Position { segment: 0, offset }
}

/// The writer thread: writes each batch until it succeeds (a database
/// outage delays the history, and through the bound, the shard), then
/// answers the history reads it carried.
/// Where the writer thread puts a batch.
struct Sink {
    database: Database,
    events: Events,
    written: Arc<Written>,
}

/// A batch's messages first (until the broker has them all), then its
/// rows. A write moves the store's cursor from `previous` to the batch's;
/// the store refuses it if another writer moved the cursor meanwhile
/// (`CursorMoved`: another owner writes the shard's history now).
fn write_batches(
    mut writer: Box<dyn Writer>,
    mut previous: Option<Cursor>,
    sink: &Sink,
    batches: &Receiver<Batch>,
    recycle: &std::sync::mpsc::Sender<Changes>,
    synced: impl Fn(Vec<ReplyTo>, u64),
) -> Result<(), HistoryError> {
    let (database, written) = (&sink.database, &sink.written);
    for mut batch in batches {
        if !batch.messages.is_empty() {
            sink.events
                .runtime
                .block_on(sink.events.delivery.deliver(&batch.messages));
        }
        let mut backoff = RETRY_BACKOFF;
        while let Err(error) = writer.write(&batch.changes, &batch.cursor) {
            if matches!(error, HistoryError::CursorMoved { .. }) {
                return Err(error);
            }
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "a shard's history write failed");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(RETRY_BACKOFF * 32);
            // The connection may be gone: a new one, which must find the
            // cursor where this writer left it (or where this batch
            // leaves it, if the failed write's commit went through).
            let Ok(mut reopened) = database.open_writer() else {
                continue;
            };
            let stored = reopened.cursor()?;
            if stored == Some(batch.cursor) {
                writer = reopened;
                break;
            }
            if stored != previous {
                return Err(HistoryError::CursorMoved {
                    expected: previous.map(|cursor| cursor.position),
                    found: stored.map(|cursor| cursor.position),
                });
            }
            writer = reopened;
        }
        previous = Some(batch.cursor);
        let offset = batch.cursor.position.offset;
        written.offset.store(offset, Ordering::Release);
        if !batch.syncs.is_empty() {
            synced(std::mem::take(&mut batch.syncs), offset);
        }
        batch.changes.clear();
        let _ = recycle.send(batch.changes);
    }
    Ok(())
}
