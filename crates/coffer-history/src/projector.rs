//! The projector: one thread that follows the journal's durable records,
//! applies them to its own engine (the journal keeps commands, and the
//! effects — balances after each transaction — come from applying them),
//! and writes rows plus its cursor in one database transaction per write.

use crate::changes::{Changes, Cursor, Projection, Shape};
use crate::database::Database;
use crate::error::HistoryError;
use crate::feed::{FeedReceiver, FeedRecord};
use crate::store::Writer;
use coffer_core::EngineLimits;
use coffer_journal::{Follower, JournalStats, Position, ReaderThread};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct ProjectorSettings {
    /// Rows gathered into one database transaction at most.
    pub rows_per_write_max: usize,
    /// Rows wait at most this long before they are written, unless a
    /// history read is waiting for them: then they are written at once.
    /// Long, because each commit rewrites every index page it touched:
    /// 500 ms instead of 50 ms took single transfers over HTTP with the
    /// history on from 30.6 k to 37.4 k/s.
    pub write_interval: Duration,
    /// Pause when the journal has nothing new.
    pub idle_poll: Duration,
    /// Pause before retrying after a database error (doubles to 32×).
    pub retry_backoff: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        ProjectorSettings {
            rows_per_write_max: 30_000,
            write_interval: Duration::from_millis(500),
            idle_poll: Duration::from_millis(2),
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// Progress, shared with the server (metrics, read-your-writes waits).
#[derive(Debug, Default)]
pub struct ProjectorStats {
    /// Every transaction below this sequence is in the database.
    /// Every transaction below `.0`, and every record before `.1`.
    projected: Mutex<(u64, Position)>,
    advanced: Condvar,
    /// Timestamp of the last record written.
    pub projected_timestamp_ms: AtomicU64,
    pub rows_written: AtomicU64,
    pub writes: AtomicU64,
    pub write_micros_last: AtomicU64,
    pub write_micros_total: AtomicU64,
    pub write_errors: AtomicU64,
    /// Records taken from the engine's feed instead of applied again.
    pub feed_records: AtomicU64,
    /// Times a record missing from the feed sent the projector back to the
    /// journal.
    pub feed_gaps: AtomicU64,
    /// History reads waiting for rows not yet written.
    readers_waiting: AtomicU32,
    /// Set when the projector stopped for good; the reason.
    failure: Mutex<Option<String>>,
}

impl ProjectorStats {
    pub fn projected_sequence(&self) -> u64 {
        self.projected.lock().expect("projected lock").0
    }

    /// Waits until every transaction below `sequence` is projected; false
    /// on timeout or if the projector has stopped.
    pub fn wait_for(&self, sequence: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |(projected, _)| *projected >= sequence)
    }

    /// Waits until every journal record before `position` is projected
    /// (records without transactions, hold expiries, included).
    pub fn wait_for_position(&self, position: Position, timeout: Duration) -> bool {
        self.wait_until(timeout, |(_, projected)| *projected >= position)
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&(u64, Position)) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut projected = self.projected.lock().expect("projected lock");
        if done(&projected) {
            return true;
        }
        self.readers_waiting.fetch_add(1, Ordering::AcqRel);
        let reached = loop {
            let now = Instant::now();
            if now >= deadline || self.failure().is_some() {
                break false;
            }
            projected = self
                .advanced
                .wait_timeout(projected, deadline - now)
                .expect("projected lock")
                .0;
            if done(&projected) {
                break true;
            }
        };
        self.readers_waiting.fetch_sub(1, Ordering::AcqRel);
        reached
    }

    /// Whether a history read waits for rows not yet written.
    fn reader_waiting(&self) -> bool {
        self.readers_waiting.load(Ordering::Acquire) > 0
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure lock").clone()
    }

    pub(crate) fn advance(&self, cursor: &Cursor) {
        *self.projected.lock().expect("projected lock") = (cursor.sequence_next, cursor.position);
        self.projected_timestamp_ms
            .store(cursor.timestamp_ms, Ordering::Relaxed);
        self.advanced.notify_all();
    }

    pub(crate) fn fail(&self, reason: String) {
        *self.failure.lock().expect("failure lock") = Some(reason);
        self.advanced.notify_all();
    }
}

enum FeedStep {
    Record(Box<FeedRecord>),
    Nothing,
    /// The next record does not continue the cursor.
    Gap,
}

pub struct Projector {
    stats: Arc<ProjectorStats>,
    thread: ReaderThread,
}

struct ProjectorThread {
    database: Database,
    directory: PathBuf,
    journal: Arc<JournalStats>,
    limits: EngineLimits,
    settings: ProjectorSettings,
    stop: Arc<AtomicBool>,
    stats: Arc<ProjectorStats>,
    /// The sequence journal retention must keep for this projector.
    needed: Arc<AtomicU64>,
}

impl Projector {
    /// Opens the database (migrating it) before returning, so a wrong URL
    /// fails startup; then follows the journal on its own thread.
    pub fn start(
        database: Database,
        directory: PathBuf,
        journal: Arc<JournalStats>,
        limits: EngineLimits,
        settings: ProjectorSettings,
        feed: Option<FeedReceiver>,
    ) -> Result<Projector, HistoryError> {
        assert!(
            feed.is_none() || database.shape() == Shape::Index,
            "only the index takes the feed"
        );
        let mut writer = database.open_writer()?;
        let cursor = writer.cursor()?;
        if cursor.is_none() {
            // A new store is built from the journal's first record.
            if let Some((first, _)) = coffer_journal::segments(&directory)?.first() {
                if *first > 0 {
                    return Err(HistoryError::Invalid(format!(
                        "the store is new and the journal starts at sequence {first} (retention deleted the \
                         records before), so the history cannot be built from it"
                    )));
                }
            }
        }
        if cursor.is_some_and(|cursor| cursor.is_midway()) {
            return Err(HistoryError::Invalid(format!(
                "{} is a history export that stopped between two of the index's writes, where no journal \
                 position is known: run the server with it as --history-export until it has caught up, then \
                 it can be the history store",
                database.describe()
            )));
        }
        // Journal retention keeps what the projector still needs.
        let needed = journal.register_reader(cursor.map_or(0, |cursor| cursor.sequence_next));
        let stats = Arc::new(ProjectorStats::default());
        if let Some(cursor) = &cursor {
            stats.advance(cursor);
        }
        let shared = Arc::clone(&stats);
        let thread = ReaderThread::spawn("coffer-projector", move |stop| {
            let state = ProjectorThread {
                database,
                directory,
                journal,
                limits,
                settings,
                stop,
                stats: shared,
                needed,
            };
            state.run(writer, cursor, feed);
        });
        Ok(Projector { stats, thread })
    }

    pub fn stats(&self) -> &Arc<ProjectorStats> {
        &self.stats
    }

    /// Writes what is durable and stops.
    pub fn stop(self) {
        self.thread.stop();
    }
}

impl ProjectorThread {
    /// `feed`: the engine's effects, when it hands them over (the index only).
    fn run(self, writer: Box<dyn Writer>, cursor: Option<Cursor>, feed: Option<FeedReceiver>) {
        if let Err(error) = self.follow(writer, cursor, feed.as_ref()) {
            tracing::error!(%error, "the history projector stopped; history reads fail until restart");
            self.stats.fail(error.to_string());
        }
    }

    /// Two stages on two threads: this one applies records and builds rows
    /// while the writer thread commits the previous rows, so the database
    /// round trip overlaps the projection work.
    fn follow(
        &self,
        mut writer: Box<dyn Writer>,
        cursor: Option<Cursor>,
        feed: Option<&FeedReceiver>,
    ) -> Result<(), HistoryError> {
        let started = Instant::now();
        let resume = cursor.map(|cursor| (cursor.position, cursor.sequence_next));
        let follower = Follower::open(&self.directory, Arc::clone(&self.journal), self.limits, resume)?;
        let projection = Projection::new(&follower.engine, cursor.unwrap_or_default(), self.database.shape());
        tracing::info!(
            store = %self.database.describe(),
            sequence_next = projection.cursor.sequence_next,
            millis = started.elapsed().as_millis() as u64,
            "history projector resumed"
        );
        // One write in flight and one being built: memory stays bounded.
        let (to_writer, written) = sync_channel::<(Changes, Cursor)>(1);
        let (recycle, recycled) = channel::<Changes>();
        std::thread::scope(|scope| {
            let writing = std::thread::Builder::new()
                .name("coffer-history-writer".into())
                .spawn_scoped(scope, move || -> Result<(), HistoryError> {
                    for (mut changes, cursor) in written {
                        self.write(&mut writer, &changes, &cursor)?;
                        changes.clear();
                        let _ = recycle.send(changes);
                    }
                    Ok(())
                })
                .expect("spawn the history writer thread");
            let projected = self.project(follower, projection, feed, to_writer, recycled);
            let wrote = writing.join().expect("the history writer thread panicked");
            wrote.and(projected)
        })
    }

    fn project(
        &self,
        mut follower: Follower,
        mut projection: Projection,
        feed: Option<&FeedReceiver>,
        to_writer: SyncSender<(Changes, Cursor)>,
        recycled: Receiver<Changes>,
    ) -> Result<(), HistoryError> {
        let writer_gone = || HistoryError::Invalid("the history writer stopped".into());
        let mut changes = Changes::default();
        let mut pending_since: Option<Instant> = None;
        // Taking the engine's records from the feed instead of applying the
        // journal's; `waiting` is a feed record taken but not yet usable.
        let mut on_feed = false;
        let mut waiting: Option<FeedRecord> = None;
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            let caught_up = if let (true, Some(feed)) = (on_feed, feed) {
                match self.next_from_feed(feed, &mut waiting, &projection.cursor) {
                    FeedStep::Record(record) => {
                        self.stats.feed_records.fetch_add(1, Ordering::Relaxed);
                        let FeedRecord {
                            cursor, changes: later, ..
                        } = *record;
                        changes.extend_from(later);
                        projection.cursor = cursor;
                        pending_since.get_or_insert_with(Instant::now);
                        false
                    }
                    FeedStep::Nothing => true,
                    FeedStep::Gap => {
                        // A record the feed dropped: back to the journal from
                        // the cursor, until the feed continues it again.
                        self.stats.feed_gaps.fetch_add(1, Ordering::Relaxed);
                        let cursor = projection.cursor;
                        let resume = Some((cursor.position, cursor.sequence_next));
                        follower = Follower::open(&self.directory, Arc::clone(&self.journal), self.limits, resume)?;
                        projection = Projection::new(&follower.engine, cursor, Shape::Index);
                        on_feed = false;
                        false
                    }
                }
            } else {
                let next = follower.next_applied()?;
                let caught_up = next.is_none();
                if let Some((record, outcome)) = next {
                    projection.project(&follower.engine, &record.batch, &outcome, record.next, &mut changes);
                    pending_since.get_or_insert_with(Instant::now);
                } else if let Some(feed) = feed {
                    on_feed = joins_feed(feed, &mut waiting, &projection.cursor);
                }
                caught_up
            };
            let full = changes.row_count() >= self.settings.rows_per_write_max;
            // Not on every catch-up: each database commit has a fixed cost
            // (WAL frames, checksums, index pages), so small frequent commits
            // cost several times more per row than one every interval. A
            // waiting reader cannot wait that long.
            let due = pending_since.is_some_and(|since| {
                full || (caught_up && (stopping || self.stats.reader_waiting()))
                    || since.elapsed() >= self.settings.write_interval
            });
            if due {
                let spare = recycled.try_recv().unwrap_or_default();
                let message = (std::mem::replace(&mut changes, spare), projection.cursor);
                // While the writer is busy, keep gathering (larger writes are
                // cheaper per row), unless the rows reached their bound.
                let handed_over = if full || (caught_up && stopping) {
                    to_writer.send(message).map_err(|_| writer_gone())?;
                    true
                } else {
                    match to_writer.try_send(message) {
                        Ok(()) => true,
                        Err(TrySendError::Full((kept, _))) => {
                            changes = kept;
                            false
                        }
                        Err(TrySendError::Disconnected(_)) => return Err(writer_gone()),
                    }
                };
                if handed_over {
                    pending_since = None;
                }
            }
            if caught_up && pending_since.is_none() {
                if stopping {
                    return Ok(());
                }
                std::thread::sleep(self.settings.idle_poll);
            } else if caught_up {
                std::thread::sleep(self.settings.idle_poll);
            }
        }
    }

    fn next_from_feed(&self, feed: &FeedReceiver, waiting: &mut Option<FeedRecord>, cursor: &Cursor) -> FeedStep {
        let record = match waiting.take() {
            Some(record) => record,
            None => match feed.receiver.try_recv() {
                Ok(record) => record,
                Err(_) => return FeedStep::Nothing,
            },
        };
        if record.before != cursor.position {
            return FeedStep::Gap;
        }
        // Never a record that a crash could still take back.
        if self.journal.durable_position() < record.cursor.position {
            *waiting = Some(record);
            return FeedStep::Nothing;
        }
        FeedStep::Record(Box::new(record))
    }

    fn write(&self, writer: &mut Box<dyn Writer>, changes: &Changes, cursor: &Cursor) -> Result<(), HistoryError> {
        let target = WriteTarget {
            database: &self.database,
            settings: &self.settings,
            stats: &self.stats,
            stop: &self.stop,
        };
        target.write_until_done(writer, changes, cursor)?;
        self.needed.store(cursor.sequence_next, Ordering::Release);
        Ok(())
    }
}

/// What a writing thread (the projector's, the export's) needs to write
/// through outages.
pub(crate) struct WriteTarget<'a> {
    pub database: &'a Database,
    pub settings: &'a ProjectorSettings,
    pub stats: &'a ProjectorStats,
    pub stop: &'a AtomicBool,
}

impl WriteTarget<'_> {
    /// Writes until it succeeds: a database outage delays the history but
    /// never loses it (the journal or the index keeps the records).
    pub fn write_until_done(
        &self,
        writer: &mut Box<dyn Writer>,
        changes: &Changes,
        cursor: &Cursor,
    ) -> Result<(), HistoryError> {
        let mut backoff = self.settings.retry_backoff;
        loop {
            let started = Instant::now();
            match writer.write(changes, cursor) {
                Ok(()) => {
                    let stats = self.stats;
                    let micros = started.elapsed().as_micros() as u64;
                    stats.write_micros_last.store(micros, Ordering::Relaxed);
                    stats.write_micros_total.fetch_add(micros, Ordering::Relaxed);
                    stats
                        .rows_written
                        .fetch_add(changes.row_count() as u64, Ordering::Relaxed);
                    stats.writes.fetch_add(1, Ordering::Relaxed);
                    stats.advance(cursor);
                    return Ok(());
                }
                Err(error) => {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "history write failed");
                    if self.stop.load(Ordering::Acquire) {
                        return Err(error);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.settings.retry_backoff * 32);
                    // The connection may be gone; a new one is the cheap fix.
                    if let Ok(reopened) = self.database.open_writer() {
                        *writer = reopened;
                    }
                }
            }
        }
    }
}

/// Caught up with the journal: whether the feed continues from the
/// cursor (its records before the cursor are dropped; one after it
/// waits until the journal reaches it).
fn joins_feed(feed: &FeedReceiver, waiting: &mut Option<FeedRecord>, cursor: &Cursor) -> bool {
    loop {
        let record = match waiting.take() {
            Some(record) => record,
            None => match feed.receiver.try_recv() {
                Ok(record) => record,
                Err(_) => return false,
            },
        };
        if record.cursor.position <= cursor.position {
            continue;
        }
        let joins = record.before == cursor.position;
        *waiting = Some(record);
        return joins;
    }
}
