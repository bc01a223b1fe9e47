//! The sequencer and the engine thread.
//!
//! Handlers put commands on one bounded queue (full: 503). The engine thread
//! takes everything waiting, applies the writes as one batch stamped with
//! the clock (the only clock read in the write path), appends the batch to
//! the journal and syncs it, and only then answers the batch's writers:
//! nothing is acknowledged before it is on disk. Commands that arrive during
//! the sync wait in the queue and form the next batch (group commit). Reads
//! travel the same queue, so a read after an acknowledged write sees it, and
//! a read waits for the durable watermark to pass what it saw, so it never
//! shows state that is not yet durable.

use crate::clock::now_ms;
use crate::queries::{answer, describe};
pub use crate::queries::{Answer, Detail, EffectView, Kind, Query, Submitted, LIST_SCAN_MAX, UNITS_QUERY_MAX};
use coffer_core::{BatchOutcome, Engine, Transaction};
use coffer_history::FeedSender;
use coffer_journal::{journal_batch, JournalBatch, JournalWriter};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// With no traffic, the engine still advances time this often so that
/// holds expire on schedule.
const IDLE_TICK: Duration = Duration::from_millis(50);

/// How far ahead the engine thread looks for idempotency evictions: a
/// request that saw "nothing forgotten" is applied well within it.
const FORGET_MARGIN_MS: u64 = 60_000;

enum Command {
    Submit {
        transactions: Vec<Transaction>,
        detail: Detail,
        reply: WriteReply,
    },
    Read {
        query: Query,
        reply: oneshot::Sender<(Answer, u64)>,
    },
}

/// Answers a write once it is durable, or with the journal's failure.
type WriteReply = oneshot::Sender<Result<Vec<Submitted>, String>>;

/// The durable watermark: every sequence below `sequence` is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    pub sequence: u64,
    pub failure: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    #[error("queue full")]
    Overloaded,
    #[error("engine stopped")]
    Stopped,
    #[error("journal failed: {0}")]
    Journal(String),
}

/// The handlers' side of the sequencer; cheap to share.
pub struct Sequencer {
    sender: Mutex<Option<SyncSender<Command>>>,
    durable: watch::Receiver<Durable>,
    thread: Mutex<Option<JoinHandle<()>>>,
    queue_depth: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether the engine's idempotency window has forgotten an id: from
    /// then on, new ids are also checked against the history store.
    forgotten: Arc<AtomicBool>,
}

pub struct SequencerSettings {
    pub queue_capacity: usize,
    pub batch_transactions_max: usize,
    pub snapshot_every_entries: u64,
}

impl Sequencer {
    /// `feed`: the history index's, offered every record appended.
    pub fn start(
        engine: Engine,
        journal: JournalWriter,
        settings: SequencerSettings,
        feed: Option<FeedSender>,
    ) -> Arc<Self> {
        let (sender, receiver) = sync_channel(settings.queue_capacity.max(1));
        let initial = Durable {
            sequence: engine.sequence_next(),
            failure: None,
        };
        let (durable_sender, durable) = watch::channel(initial);
        let queue_depth = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let forgotten = Arc::new(AtomicBool::new(
            engine.idempotency_forgets_by(now_ms() + FORGET_MARGIN_MS),
        ));
        let sequencer = Arc::new(Sequencer {
            sender: Mutex::new(Some(sender)),
            durable,
            thread: Mutex::new(None),
            queue_depth: Arc::clone(&queue_depth),
            forgotten: Arc::clone(&forgotten),
        });
        let thread = std::thread::Builder::new()
            .name("coffer-engine".into())
            .spawn(move || {
                let engine_thread = EngineThread {
                    engine,
                    journal: Some(journal),
                    feed,
                    durable: durable_sender,
                    settings,
                    entries_since_snapshot: 0,
                    queue_depth,
                    forgotten,
                    last_advance: std::time::Instant::now(),
                };
                engine_thread.run(receiver)
            })
            .expect("spawn the engine thread");
        *sequencer.thread.lock().expect("thread lock") = Some(thread);
        sequencer
    }

    fn send(&self, command: Command) -> Result<(), SequencerError> {
        let guard = self.sender.lock().expect("sender lock");
        let sender = guard.as_ref().ok_or(SequencerError::Stopped)?;
        match sender.try_send(command) {
            Ok(()) => {
                self.queue_depth.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SequencerError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(SequencerError::Stopped),
        }
    }

    /// Waits until everything below `sequence` is durable.
    pub async fn durable(&self, sequence: u64) -> Result<(), SequencerError> {
        let mut receiver = self.durable.clone();
        let state = receiver
            .wait_for(|durable| durable.sequence >= sequence || durable.failure.is_some())
            .await
            .map_err(|_| SequencerError::Stopped)?;
        match &state.failure {
            Some(failure) if state.sequence < sequence => Err(SequencerError::Journal(failure.clone())),
            _ => Ok(()),
        }
    }

    /// Applies transactions (in one engine batch) and returns once durable.
    pub async fn submit(
        &self,
        transactions: Vec<Transaction>,
        detail: Detail,
    ) -> Result<Vec<Submitted>, SequencerError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Submit {
            transactions,
            detail,
            reply,
        })?;
        // The journal's completion answers, so this wakes once: when durable.
        answer
            .await
            .map_err(|_| SequencerError::Stopped)?
            .map_err(SequencerError::Journal)
    }

    pub async fn read(&self, query: Query) -> Result<Answer, SequencerError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Read { query, reply })?;
        let (answer, required) = answer.await.map_err(|_| SequencerError::Stopped)?;
        self.durable(required).await?;
        Ok(answer)
    }

    /// True once the queue is closed (shutdown has begun).
    pub fn stopped(&self) -> bool {
        self.sender.lock().expect("sender lock").is_none()
    }

    /// False once the engine thread has stopped (shutdown, or a failed
    /// assertion: then nothing more is applied and readiness fails).
    pub fn engine_running(&self) -> bool {
        self.thread
            .lock()
            .expect("thread lock")
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }

    pub fn journal_failure(&self) -> Option<String> {
        self.durable.borrow().failure.clone()
    }

    pub fn idempotency_has_forgotten(&self) -> bool {
        self.forgotten.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every transaction below this sequence is durable.
    pub fn durable_sequence(&self) -> u64 {
        self.durable.borrow().sequence
    }

    pub fn queue_depth(&self) -> usize {
        self.queue_depth.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops taking commands, lets the engine drain, snapshot and close the
    /// journal, and waits for it.
    pub fn shut_down(&self) {
        drop(self.sender.lock().expect("sender lock").take());
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            if thread.join().is_err() {
                tracing::error!("the engine thread panicked");
            }
        }
    }
}

struct EngineThread {
    engine: Engine,
    journal: Option<JournalWriter>,
    /// The history index's: every appended record's effects.
    feed: Option<FeedSender>,
    durable: watch::Sender<Durable>,
    settings: SequencerSettings,
    entries_since_snapshot: u64,
    queue_depth: Arc<std::sync::atomic::AtomicUsize>,
    forgotten: Arc<AtomicBool>,
    /// When engine time last moved (a batch or a tick).
    last_advance: std::time::Instant,
}

/// Writes taken from the queue and not yet durable: those waiting to be
/// applied as one batch, and those applied and appended to the journal,
/// whose answers wait for the next commit.
#[derive(Default)]
struct PendingBatch {
    transactions: Vec<Transaction>,
    /// How many of `transactions` each reply answers, and in what detail.
    replies: Vec<(usize, Detail, WriteReply)>,
    /// Answers of applied writes, sent once the journal has synced them.
    applied: Vec<(Vec<Submitted>, WriteReply)>,
    applied_transactions: usize,
}

impl PendingBatch {
    /// Transactions taken and not yet durable: what one commit covers.
    fn uncommitted_transactions(&self) -> usize {
        self.transactions.len() + self.applied_transactions
    }
}

impl EngineThread {
    fn run(mut self, receiver: Receiver<Command>) {
        loop {
            // Engine time must advance (holds expire) even when only reads
            // arrive, so the tick is due by the clock, not by idleness.
            let until_tick = IDLE_TICK.saturating_sub(self.last_advance.elapsed());
            let first = match receiver.recv_timeout(until_tick) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    self.tick();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = PendingBatch::default();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                self.queue_depth.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.handle(command, &mut batch);
                if batch.uncommitted_transactions() < self.settings.batch_transactions_max {
                    next = receiver.try_recv().ok();
                }
            }
            self.apply(&mut batch);
            self.commit(batch.applied);
            self.maybe_snapshot();
            if self.last_advance.elapsed() >= IDLE_TICK {
                self.tick();
            }
        }
        self.final_snapshot();
        if let Some(journal) = self.journal.take() {
            if let Err(error) = journal.close() {
                tracing::error!(%error, "journal close failed");
            }
        }
    }

    fn handle(&mut self, command: Command, batch: &mut PendingBatch) {
        match command {
            Command::Submit {
                transactions,
                detail,
                reply,
            } => {
                let count = transactions.len();
                if batch.transactions.len() + count > coffer_core::limits::BATCH_TRANSACTIONS_MAX {
                    self.apply(batch);
                }
                batch.transactions.extend(transactions);
                batch.replies.push((count, detail, reply));
            }
            Command::Read { query, reply } => {
                // A read sees every write queued before it, never a later
                // one. It is answered before those writes are durable (the
                // handler waits for the watermark), so writes on both sides
                // of it still share one sync.
                self.apply(batch);
                let answer = answer(&self.engine, query);
                let _ = reply.send((answer, self.engine.sequence_next()));
            }
        }
    }

    /// Applies the waiting writes as one engine batch and appends it to the
    /// journal; their answers join `batch.applied` until the commit.
    fn apply(&mut self, batch: &mut PendingBatch) {
        if batch.transactions.is_empty() {
            // Only empty submissions: nothing to make durable.
            for (_, _, reply) in batch.replies.drain(..) {
                let _ = reply.send(Ok(Vec::new()));
            }
            return;
        }
        let transactions = std::mem::take(&mut batch.transactions);
        let outcome = self.engine.apply_batch(now_ms(), &transactions);
        self.last_advance = std::time::Instant::now();
        let mut results = transactions.iter().zip(&outcome.outcomes);
        batch.applied_transactions += transactions.len();
        for (count, detail, reply) in batch.replies.drain(..) {
            let described = results
                .by_ref()
                .take(count)
                .map(|(transaction, result)| describe(&self.engine, transaction, result, &outcome, detail))
                .collect();
            batch.applied.push((described, reply));
        }
        assert!(results.next().is_none(), "every transaction has a reply");
        self.record_metrics(transactions.len());
        self.note_forgetting();
        self.append(&journal_batch(transactions, &outcome), &outcome);
    }

    /// Once set, it stays set: the window only moves forward.
    fn note_forgetting(&self) {
        if !self.forgotten.load(std::sync::atomic::Ordering::Relaxed)
            && self.engine.idempotency_forgets_by(now_ms() + FORGET_MARGIN_MS)
        {
            tracing::info!("the idempotency window is full: older ids are now checked against the history store");
            self.forgotten.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Once per batch, so the cost is shared by every transaction in it.
    fn record_metrics(&self, batch_transactions: usize) {
        metrics::histogram!("coffer_engine_batch_transactions").record(batch_transactions as f64);
        metrics::gauge!("coffer_accounts").set(self.engine.account_count() as f64);
        metrics::gauge!("coffer_open_holds").set(self.engine.open_hold_count() as f64);
        metrics::gauge!("coffer_idempotency_entries").set(self.engine.idempotency_entry_count() as f64);
        metrics::gauge!("coffer_sequence_next").set(self.engine.sequence_next() as f64);
    }

    /// A failed append stops the journal; the next commit reports it.
    /// An appended record is offered to the history's feed.
    fn append(&mut self, batch: &JournalBatch, outcome: &BatchOutcome) {
        self.entries_since_snapshot += batch.transactions.len() as u64;
        let journal = self.journal.as_mut().expect("journal open while running");
        match journal.append(batch) {
            Ok(()) => {
                if let Some(feed) = &mut self.feed {
                    let after = journal.end_position();
                    feed.offer(&self.engine, batch.first_sequence, &batch.transactions, outcome, after);
                }
            }
            Err(error) => tracing::error!(%error, "journal append refused"),
        }
    }

    /// Syncs everything appended, moves the durable watermark that reads
    /// wait for, and only then answers the writers. After a failure the
    /// journal takes nothing more, and every later write gets the failure.
    fn commit(&mut self, answers: Vec<(Vec<Submitted>, WriteReply)>) {
        let journal = self.journal.as_mut().expect("journal open while running");
        let syncs_before = journal.stats().syncs.load(std::sync::atomic::Ordering::Relaxed);
        let result = journal.commit().map_err(|error| error.to_string());
        let stats = journal.stats();
        if stats.syncs.load(std::sync::atomic::Ordering::Relaxed) != syncs_before {
            let micros = stats.sync_micros_last.load(std::sync::atomic::Ordering::Relaxed);
            metrics::histogram!("coffer_journal_fsync_seconds").record(micros as f64 / 1e6);
        }
        let end = journal.sequence_next();
        self.durable.send_if_modified(|state| match &result {
            Ok(()) if end > state.sequence => {
                state.sequence = end;
                true
            }
            Ok(()) => false,
            Err(message) => {
                state.failure = Some(message.clone());
                true
            }
        });
        for (results, reply) in answers {
            let _ = reply.send(result.clone().map(|()| results));
        }
    }

    /// Advances engine time while idle so that holds expire. Expiries change
    /// state, so a batch that expired anything is journaled (with no
    /// transactions) to replay identically.
    fn tick(&mut self) {
        let outcome = self.engine.apply_batch(now_ms(), &[]);
        self.last_advance = std::time::Instant::now();
        self.note_forgetting();
        if !outcome.expired.is_empty() {
            tracing::debug!(expired = outcome.expired.len(), "holds expired");
            self.append(&journal_batch(Vec::new(), &outcome), &outcome);
            self.commit(Vec::new());
        }
    }

    /// A snapshot costs time in proportion to the state (accounts, holds,
    /// remembered ids), so one is taken after as many new entries as the
    /// state holds, and at least `snapshot_every_entries`: the amortized
    /// cost per entry stays bounded however large the id window grows, and
    /// replay after a crash never covers more than one state's worth.
    fn maybe_snapshot(&mut self) {
        let state_items =
            self.engine.account_count() + self.engine.open_hold_count() + self.engine.idempotency_entry_count();
        let threshold = self.settings.snapshot_every_entries.max(state_items as u64);
        if self.entries_since_snapshot >= threshold {
            self.snapshot();
        }
    }

    /// The engine thread only takes the source (accounts and holds encoded,
    /// the id window shared by reference); the snapshot thread encodes the
    /// window, however many millions of ids it holds.
    fn snapshot(&mut self) {
        let started = std::time::Instant::now();
        let source = self.engine.snapshot_source();
        let pause = started.elapsed();
        metrics::histogram!("coffer_snapshot_pause_seconds").record(pause.as_secs_f64());
        tracing::info!(
            pause_ms = pause.as_millis() as u64,
            sequence_next = self.engine.sequence_next(),
            "snapshot taken"
        );
        let journal = self.journal.as_mut().expect("journal open while running");
        if let Err(error) = journal.snapshot(self.engine.sequence_next(), source, None) {
            tracing::error!(%error, "snapshot refused");
        }
        self.entries_since_snapshot = 0;
    }

    fn final_snapshot(&mut self) {
        if self.entries_since_snapshot > 0 {
            self.snapshot();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::{AccountId, EngineLimits, Operation, TransactionId, Unit};

    fn opening(name: &str) -> Transaction {
        let account = AccountId::parse(name).expect("account id");
        let open = Operation::open(account, Unit::parse("USD/2").expect("unit"));
        Transaction::new(TransactionId::parse(name).expect("id"), vec![open], None).expect("transaction")
    }

    fn transaction_query(name: &str) -> Query {
        Query::Transaction(TransactionId::parse(name).expect("id"))
    }

    /// Writes queued on both sides of reads are applied in queue order, each
    /// read sees exactly the writes before it, and one sync covers them all.
    #[test]
    fn writes_on_both_sides_of_a_read_share_one_sync() {
        let directory = tempfile::tempdir().expect("temp dir");
        let (engine, journal, _) = coffer_journal::open(
            directory.path(),
            coffer_journal::JournalOptions::default(),
            EngineLimits::default(),
        )
        .expect("journal");
        let stats = Arc::clone(journal.stats());
        let (sender, receiver) = sync_channel(8);
        let (first_reply, first_answer) = oneshot::channel();
        let (second_reply, second_answer) = oneshot::channel();
        let (read_first_reply, read_first) = oneshot::channel();
        let (read_second_reply, read_second) = oneshot::channel();
        let commands = [
            Command::Submit {
                transactions: vec![opening("first")],
                detail: Detail::WithoutEffects,
                reply: first_reply,
            },
            Command::Read {
                query: transaction_query("first"),
                reply: read_first_reply,
            },
            Command::Read {
                query: transaction_query("second"),
                reply: read_second_reply,
            },
            Command::Submit {
                transactions: vec![opening("second")],
                detail: Detail::WithoutEffects,
                reply: second_reply,
            },
        ];
        let queued = commands.len();
        for command in commands {
            sender.try_send(command).expect("queue has room");
        }
        drop(sender);
        let (durable_sender, durable) = watch::channel(Durable {
            sequence: 0,
            failure: None,
        });
        let engine_thread = EngineThread {
            engine,
            journal: Some(journal),
            feed: None,
            durable: durable_sender,
            settings: SequencerSettings {
                queue_capacity: 8,
                batch_transactions_max: 8_192,
                snapshot_every_entries: 1_000_000,
            },
            entries_since_snapshot: 0,
            queue_depth: Arc::new(std::sync::atomic::AtomicUsize::new(queued)),
            forgotten: Arc::new(AtomicBool::new(false)),
            last_advance: std::time::Instant::now(),
        };
        // Runs until the queue is empty and closed, then closes the journal.
        engine_thread.run(receiver);

        let (first_seen, first_required) = read_first.blocking_recv().expect("read answered");
        assert!(matches!(first_seen, Answer::Transaction(Some(_))));
        let (second_seen, second_required) = read_second.blocking_recv().expect("read answered");
        assert!(
            matches!(second_seen, Answer::Transaction(None)),
            "a read never sees a later write"
        );
        assert_eq!((first_required, second_required), (1, 1));
        for answer in [first_answer, second_answer] {
            let submitted = answer.blocking_recv().expect("write answered").expect("durable");
            assert_eq!(submitted[0].kind, Kind::New);
        }
        assert_eq!(durable.borrow().sequence, 2);
        assert_eq!(stats.syncs.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
