//! A shard's owner: one thread that rebuilds the shard's engine from its
//! newest snapshot, checks that the log it finds is the log the snapshot
//! came from, then applies the partition in offset order and answers each
//! entry's waiter through the replies topic.
//!
//! The owner also writes the shard's history (`history::HistoryFeed`), and
//! snapshots only at offsets the history has reached.
//!
//! Applying is deterministic: an entry's batch timestamp is its record's
//! timestamp (never earlier than the one before), and time moves on idle
//! shards only through tick entries in the log. Two owners of one shard
//! (a paused old owner that woke up) therefore compute the same outcomes
//! and the same snapshots from the same log, and neither can harm the other.

use super::coordinator::{Coordinator, ShardReport, StoredSnapshot};
use super::history::{shard_database, Events, HistoryFeed};
use super::log::{log_end, Producer, Reader};
use super::saga::{self, Begun, Outbound, SagaTable};
use super::waiters::Waiters;
use super::wire::{encode_reply, Entry, Reply, ReplyTo};
use super::{ClusterError, ClusterSettings};
use crate::clock::now_ms;
use crate::queries::{answer, describe, Answer, Kind, Query, Submitted};
use coffer_core::codec::{Reader as BytesReader, Writer};
use coffer_core::{Engine, TransactionId};
use rdkafka::message::Message;
use rdkafka::Offset;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often an owner appends a tick and checks the partition's end.
const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// A snapshot at most this long after the first entry it would cover.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(10);
/// How long a shard that refused waits before it checks its log again.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// How far before its anchor an owner starts reading (see `recover`).
const ANCHOR_LOOKBACK_ENTRIES: u64 = 256;
/// Gaps in the log read in a row before an owner starts over from its
/// snapshot (each is first read again, from `ANCHOR_LOOKBACK_ENTRIES`
/// before it).
const GAPS_IN_A_ROW_MAX: u32 = 3;
const GAP_SEEK_WAIT: Duration = Duration::from_secs(5);
/// How long an owner waits for the record its snapshot was anchored to.
const ANCHOR_WAIT: Duration = Duration::from_secs(10);
/// How far ahead an owner looks for idempotency evictions when it reports
/// them: a node that read "nothing forgotten" from the lease table (up to
/// a quarter TTL old, then a quarter TTL to refresh) sends requests that
/// are applied well within it (`REPLY_WAIT` at most).
const FORGET_MARGIN_MS: u64 = 300_000;
const _: () = assert!(FORGET_MARGIN_MS >= 4 * super::REPLY_WAIT.as_millis() as u64 + 2 * 60_000);
/// How long a snapshot waits for the history to reach its offset.
const HISTORY_FLUSH_WAIT: Duration = Duration::from_secs(30);
/// Entries whose waiter has given up are applied without a reply: this
/// spares the replies topic when a new owner replays a long log.
const REPLY_AGE_MS_MAX: u64 = super::REPLY_WAIT.as_millis() as u64;
/// How long a home waits for a saga step's answer before it sends the
/// step again (a lost entry, a participant failing over). Sending again is
/// safe: a step applied twice is a replay.
const SAGA_REDRIVE_AFTER: Duration = Duration::from_secs(3);
const _: () = assert!(SAGA_REDRIVE_AFTER.as_millis() > 2 * TICK_INTERVAL.as_millis());

/// The handle the lease loop keeps for a shard it owns.
pub struct ShardOwner {
    keep: Arc<AtomicBool>,
    report: Arc<Mutex<ShardReport>>,
    thread: std::thread::JoinHandle<()>,
}

/// What a shard's owner needs; shared by every shard a node owns.
pub struct ShardContext {
    pub settings: Arc<ClusterSettings>,
    pub log_id: String,
    /// The cluster's shard count (fixed at creation).
    pub shards: u32,
    pub producer: Arc<Producer>,
    /// This process's waiting requests: a reply to one of them is handed
    /// over directly.
    pub waiters: Arc<Waiters>,
    /// Where the shards' results and change events go.
    pub events: Events,
    pub runtime: tokio::runtime::Handle,
}

impl ShardOwner {
    pub fn start(shard: u32, context: Arc<ShardContext>) -> ShardOwner {
        let keep = Arc::new(AtomicBool::new(true));
        let report = Arc::new(Mutex::new(ShardReport::default()));
        let thread = {
            let (keep, report) = (Arc::clone(&keep), Arc::clone(&report));
            std::thread::Builder::new()
                .name(format!("coffer-shard-{shard}"))
                .spawn(move || own(shard, &context, &keep, &report))
                .expect("spawn a shard thread")
        };
        ShardOwner { keep, report, thread }
    }

    pub fn report(&self) -> ShardReport {
        self.report.lock().expect("report lock").clone()
    }

    /// Tells the thread to stop applying, without waiting for it: a
    /// thread in the middle of a broker call stops when the call returns,
    /// and the lease loop must not wait that long. Until then it can only
    /// compute what the new owner computes.
    pub fn stop(self) {
        self.keep.store(false, Ordering::Release);
        drop(self.thread);
    }
}

/// Why a shard stops serving.
enum Stop {
    /// The lease is gone (or the node stops).
    Released,
    /// The log is not the one the shard's state came from: serving would fork.
    Refuse(String),
    /// The broker or the database failed; trying again may work.
    Failed(ClusterError),
}

impl From<ClusterError> for Stop {
    fn from(error: ClusterError) -> Self {
        Stop::Failed(error)
    }
}

fn own(shard: u32, context: &ShardContext, keep: &AtomicBool, report: &Mutex<ShardReport>) {
    while keep.load(Ordering::Acquire) {
        let reason = match serve(shard, context, keep, report) {
            Stop::Released => return,
            Stop::Refuse(reason) => {
                tracing::error!(shard, %reason, "shard refuses writes");
                reason
            }
            Stop::Failed(error) => {
                tracing::warn!(shard, %error, "shard stopped; retrying");
                format!("shard {shard} is recovering: {error}")
            }
        };
        report.lock().expect("report lock").refusing = Some(reason);
        let until = Instant::now() + RETRY_INTERVAL;
        while keep.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The shard's state as its log's owner builds it.
struct Replica {
    shard: u32,
    engine: Engine,
    /// The offset of the next entry to apply.
    next_offset: u64,
    /// xxh3-64 of the last applied entry's bytes.
    last_digest: u64,
    entries_since_snapshot: u64,
    first_unsnapshotted: Option<Instant>,
    history: HistoryFeed,
    replies: Arc<Replies>,
    shards: u32,
    /// Cross-shard transactions this shard is the home of.
    sagas: SagaTable,
    /// Appends saga steps and reports to other shards' logs.
    outbox: Outbox,
    /// When this owner last sent each in-flight saga's outstanding steps:
    /// not state (a new owner starts with none, so it re-drives them all).
    saga_sent: HashMap<TransactionId, Instant>,
}

fn serve(shard: u32, context: &ShardContext, keep: &AtomicBool, report: &Mutex<ShardReport>) -> Stop {
    let settings = &context.settings;
    let mut coordinator = match Coordinator::connect(&settings.database_url, &settings.schema) {
        Ok(coordinator) => coordinator,
        Err(error) => return Stop::Failed(error),
    };
    let (mut replica, consumer) = match recover(shard, context, &mut coordinator) {
        Ok(recovered) => recovered,
        Err(stop) => return stop,
    };
    tracing::info!(shard, next_offset = replica.next_offset, "serving shard");
    let topic = &settings.log.log_topic;
    let mut last_tick = Instant::now() - TICK_INTERVAL;
    let mut gaps = 0;
    loop {
        if !keep.load(Ordering::Acquire) {
            return Stop::Released;
        }
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(message)) => {
                let offset = message.offset().max(0) as u64;
                if offset < replica.next_offset {
                    continue;
                }
                // Offsets are contiguous (no transactions, no compaction):
                // a gap is an entry the broker skipped (tansu 0.6.0 does,
                // now and then, answering a fetch with the batch after the
                // one asked for), and applying past it would fork from
                // every other replica. Read again from a little before
                // it; after a few gaps in a row, start over from the
                // snapshot.
                if offset != replica.next_offset {
                    gaps += 1;
                    metrics::counter!("coffer_cluster_log_gaps_total").increment(1);
                    if gaps > GAPS_IN_A_ROW_MAX {
                        return Stop::Failed(ClusterError::Unavailable(format!(
                            "shard {shard}: the broker skipped from offset {} to {offset}, {gaps} times in a row",
                            replica.next_offset
                        )));
                    }
                    tracing::debug!(
                        shard,
                        expected = replica.next_offset,
                        offset,
                        "the broker skipped an entry"
                    );
                    let from = replica.next_offset.saturating_sub(ANCHOR_LOOKBACK_ENTRIES) as i64;
                    let seek = rdkafka::consumer::Consumer::seek(
                        &*consumer,
                        topic,
                        shard as i32,
                        Offset::Offset(from),
                        GAP_SEEK_WAIT,
                    );
                    if let Err(error) = seek {
                        return Stop::Failed(error.into());
                    }
                    continue;
                }
                gaps = 0;
                let payload = message.payload().unwrap_or_default();
                let timestamp_ms = message.timestamp().to_millis().unwrap_or(0).max(0) as u64;
                replica.apply(offset, timestamp_ms, payload);
            }
            Some(Err(error)) => return Stop::Failed(error.into()),
            None => {}
        }
        if let Err(error) = replica.history.pass_on() {
            return Stop::Failed(error.into());
        }
        if let Some(failure) = replica.history.failure() {
            return Stop::Failed(ClusterError::Unavailable(format!("shard {shard}'s history: {failure}")));
        }
        if last_tick.elapsed() >= TICK_INTERVAL {
            last_tick = Instant::now();
            replica.outbox.send(shard, Entry::Tick.encode());
            replica.redrive_sagas();
            let end = match log_end(&consumer, topic, shard) {
                Ok(end) => end,
                Err(error) => return Stop::Failed(error),
            };
            if end < replica.next_offset {
                return Stop::Refuse(format!(
                    "the log of shard {shard} now ends at offset {end}, before the {} entries already applied: \
                     the broker lost acknowledged entries; the shard refuses writes rather than fork",
                    replica.next_offset
                ));
            }
            *report.lock().expect("report lock") = ShardReport {
                applied_offset: replica.next_offset,
                log_end: end,
                history_offset: replica.history.written_offset(),
                forgotten: replica.forgets_soon(settings.limits.idempotency_entries_max),
                refusing: None,
            };
        }
        if replica.snapshot_due(settings.snapshot_every_entries) {
            if let Err(error) = replica.snapshot(&mut coordinator) {
                return Stop::Failed(error);
            }
        }
    }
}

/// The newest snapshot, checked against the log: the partition must reach
/// the snapshot's offset and hold, just before it, the very entry the
/// snapshot saw last (or, for a shard with no snapshot, this cluster's
/// genesis entry at offset 0).
fn recover(shard: u32, context: &ShardContext, coordinator: &mut Coordinator) -> Result<(Replica, Reader), Stop> {
    let settings = &context.settings;
    let snapshot = coordinator.load_snapshot(shard)?;
    let (engine, sagas, next_offset, previous_digest) = match snapshot {
        Some(snapshot) => {
            let refuse = |error| Stop::Refuse(format!("the snapshot of shard {shard} does not decode: {error}"));
            let engine = Engine::decode_snapshot(&snapshot.state, settings.limits).map_err(refuse)?;
            let sagas = match snapshot.sagas.is_empty() {
                true => SagaTable::default(),
                false => decode_sagas(&snapshot.sagas).map_err(refuse)?,
            };
            (engine, sagas, snapshot.next_offset, snapshot.previous_digest)
        }
        None => (Engine::new(settings.limits), SagaTable::default(), 0, 0),
    };
    let topic = &settings.log.log_topic;
    let anchor = next_offset.saturating_sub(1);
    // Reading starts a little before the anchor: tansu 0.6.0 has been seen
    // to answer a fetch at the last offset of a record batch with the next
    // batch, skipping the very entry asked for.
    let start = anchor.saturating_sub(ANCHOR_LOOKBACK_ENTRIES);
    let consumer = settings.log.reader(topic, &[shard], Offset::Offset(start as i64))?;
    let end = log_end(&consumer, topic, shard)?;
    if end <= anchor {
        return Err(Stop::Refuse(format!(
            "the log of shard {shard} ends at offset {end}, but the shard's state was built from its entries up \
             to offset {anchor}: the broker lost acknowledged entries (or the topic was recreated); the shard \
             refuses writes rather than fork"
        )));
    }
    let started = Instant::now();
    let message = loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) if message.offset() < anchor as i64 => {}
            Some(Ok(message)) => break message,
            Some(Err(error)) => return Err(Stop::Failed(error.into())),
            None if started.elapsed() > ANCHOR_WAIT => {
                return Err(Stop::Failed(ClusterError::Unavailable(format!(
                    "shard {shard}: no entry at offset {anchor} within {ANCHOR_WAIT:?}"
                ))))
            }
            None => {}
        }
    };
    if message.offset() != anchor as i64 {
        return Err(Stop::Failed(ClusterError::Unavailable(format!(
            "shard {shard}: reading from offset {start} skipped offset {anchor} (the broker answered from {})",
            message.offset()
        ))));
    }
    let payload = message.payload().unwrap_or_default();
    let digest = xxhash_rust::xxh3::xxh3_64(payload);
    let anchored = match next_offset {
        0 => matches!(Entry::decode(payload), Ok(Entry::Genesis { log_id }) if log_id == context.log_id),
        _ => digest == previous_digest,
    };
    if !anchored {
        return Err(Stop::Refuse(format!(
            "the entry at offset {anchor} of shard {shard} is not the one this cluster wrote there: the topic \
             was recreated or belongs to another cluster; the shard refuses writes rather than fork"
        )));
    }
    let replies = Arc::new(Replies::of(context, shard));
    let history = open_history(shard, context, Arc::clone(&replies))?;
    let mut replica = Replica {
        shard,
        engine,
        next_offset: anchor + 1,
        last_digest: digest,
        entries_since_snapshot: 0,
        first_unsnapshotted: None,
        history,
        replies,
        shards: context.shards,
        sagas,
        outbox: Outbox::of(context),
        saga_sent: HashMap::new(),
    };
    replica.history.reach(&replica.engine, replica.next_offset);
    Ok((replica, consumer))
}

/// The shard's history store, whose writer answers history reads through
/// the replies topic.
fn open_history(shard: u32, context: &ShardContext, replies: Arc<Replies>) -> Result<HistoryFeed, Stop> {
    let settings = &context.settings;
    let database = shard_database(&settings.database_url, &settings.schema, shard);
    HistoryFeed::open(&database, shard, context.events.clone(), move |waiting, offset| {
        for reply_to in waiting {
            replies.send(reply_to, Reply::HistorySynced(offset));
        }
    })
    .map_err(|error| Stop::Failed(error.into()))
}

/// Sends a shard's replies without waiting for the broker; a reply to a
/// request of this process goes straight to its waiter.
struct Replies {
    shard: u32,
    producer: Arc<Producer>,
    waiters: Arc<Waiters>,
    topic: Arc<str>,
    runtime: tokio::runtime::Handle,
}

impl Replies {
    fn of(context: &ShardContext, shard: u32) -> Replies {
        Replies {
            shard,
            producer: Arc::clone(&context.producer),
            waiters: Arc::clone(&context.waiters),
            topic: context.settings.log.replies_topic.as_str().into(),
            runtime: context.runtime.clone(),
        }
    }

    fn send(&self, reply_to: ReplyTo, reply: Reply) {
        if self.waiters.is_ours(reply_to) {
            self.waiters.deliver(reply_to, reply);
            return;
        }
        let payload = encode_reply(reply_to, &reply);
        let (producer, topic, shard) = (Arc::clone(&self.producer), Arc::clone(&self.topic), self.shard);
        self.runtime.spawn(async move {
            if let Err(error) = producer.send(&topic, shard, &payload).await {
                tracing::warn!(shard, %error, "a reply was not delivered; its waiter times out");
            }
        });
    }
}

impl Replica {
    fn apply(&mut self, offset: u64, timestamp_ms: u64, payload: &[u8]) {
        self.history.reach(&self.engine, offset);
        self.next_offset = offset + 1;
        self.last_digest = xxhash_rust::xxh3::xxh3_64(payload);
        self.entries_since_snapshot += 1;
        self.first_unsnapshotted.get_or_insert_with(Instant::now);
        // Only this cluster's nodes append; an entry that does not decode
        // is skipped by every owner alike.
        let entry = match Entry::decode(payload) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(shard = self.shard, offset, %error, "skipping an entry that does not decode");
                self.history.applied(&self.engine, offset, None);
                return;
            }
        };
        if !matches!(entry, Entry::Tick | Entry::Submit { .. } | Entry::SagaStep { .. }) {
            // It changes no engine state: the history's cursor just moves
            // past it.
            self.history.applied(&self.engine, offset, None);
        }
        // Side effects (replies, saga steps) only for entries appended
        // lately: a new owner replaying a long log re-drives what is
        // still outstanding instead (`redrive_sagas`).
        let fresh = now_ms().saturating_sub(timestamp_ms) <= REPLY_AGE_MS_MAX;
        let (reply_to, reply) = match entry {
            Entry::Genesis { .. } => return,
            Entry::Tick => {
                let outcome = self.engine.apply_batch(timestamp_ms, &[]);
                self.history.applied(&self.engine, offset, Some((&[], &outcome)));
                return;
            }
            Entry::Submit {
                reply_to,
                detail,
                transactions,
            } => {
                let outcome = self.engine.apply_batch(timestamp_ms, &transactions);
                self.history
                    .applied(&self.engine, offset, Some((&transactions, &outcome)));
                let submitted: Vec<_> = transactions
                    .iter()
                    .zip(&outcome.outcomes)
                    .map(|(transaction, result)| describe(&self.engine, transaction, result, &outcome, detail))
                    .collect();
                (reply_to, Reply::written(&submitted))
            }
            Entry::Read {
                reply_to,
                query: Query::Transaction(id),
            } => (reply_to, self.look_up(id)),
            Entry::Read { reply_to, query } => (reply_to, Reply::answered(answer(&self.engine, query))),
            Entry::HistorySync { reply_to } => match fresh.then(|| self.history.sync(reply_to, offset)).flatten() {
                Some(reply_to) => (reply_to, Reply::HistorySynced(offset)),
                None => return,
            },
            Entry::SagaBegin { reply_to, transaction } => {
                let id = transaction.id().clone();
                match self.sagas.begin(transaction, reply_to, timestamp_ms, self.shards) {
                    Begun::Started(outbound) => {
                        metrics::counter!("coffer_sagas_started_total").increment(1);
                        if fresh {
                            self.saga_sent.insert(id, Instant::now());
                            self.send_steps(outbound);
                        }
                        return;
                    }
                    Begun::Joined => return,
                    Begun::Known { record, same_payload } => {
                        let kind = if same_payload { Kind::Replayed } else { Kind::IdReused };
                        let submitted = Submitted {
                            id,
                            kind,
                            record,
                            effects: Vec::new(),
                        };
                        (reply_to, Reply::written(&[submitted]))
                    }
                    Begun::Refused(reason) => (reply_to, Reply::Refused(reason)),
                    Begun::ReusedInFlight => (reply_to, Reply::ReusedInFlight(id.to_string())),
                }
            }
            Entry::SagaStep {
                home,
                kind,
                transaction,
            } => {
                let participation = saga::participate(
                    &mut self.engine,
                    timestamp_ms,
                    self.shard,
                    self.shards,
                    kind,
                    &transaction,
                );
                self.history.applied(
                    &self.engine,
                    offset,
                    Some((&participation.transactions, &participation.outcome)),
                );
                if fresh {
                    let report = Entry::SagaReport {
                        saga: transaction.id().clone(),
                        shard: self.shard,
                        kind,
                        result: participation.result,
                    };
                    self.outbox.send(home, report.encode());
                }
                return;
            }
            Entry::SagaReport {
                saga,
                shard,
                kind,
                result,
            } => {
                let position = saga::Position {
                    sequence: offset,
                    timestamp_ms,
                };
                let (outbound, finished) = self.sagas.report(&saga, shard, kind, result, position, self.shards);
                if fresh && !outbound.is_empty() {
                    self.saga_sent.insert(saga.clone(), Instant::now());
                    self.send_steps(outbound);
                }
                if let Some(finished) = finished {
                    metrics::counter!("coffer_sagas_finished_total").increment(1);
                    self.saga_sent.remove(&finished.id);
                    if fresh {
                        let submitted = Submitted {
                            id: finished.id,
                            kind: Kind::New,
                            record: finished.record,
                            effects: Vec::new(),
                        };
                        for waiter in finished.waiters {
                            self.replies
                                .send(waiter, Reply::written(std::slice::from_ref(&submitted)));
                        }
                    }
                }
                return;
            }
        };
        if fresh {
            self.replies.send(reply_to, reply);
        }
    }

    /// A transaction by id: a saga this shard is the home of, else the
    /// engine's window.
    fn look_up(&self, id: TransactionId) -> Reply {
        match self.sagas.lookup(&id, self.shards) {
            Some(saga::Lookup::InFlight(steps)) => Reply::SagaInFlight(steps),
            Some(saga::Lookup::Finished(record)) => Reply::answered(Answer::Transaction(Some(record))),
            None => Reply::answered(answer(&self.engine, Query::Transaction(id))),
        }
    }

    fn send_steps(&self, outbound: Vec<Outbound>) {
        for step in outbound {
            let entry = Entry::SagaStep {
                home: self.shard,
                kind: step.kind,
                transaction: step.transaction,
            };
            self.outbox.send(step.shard, entry.encode());
        }
    }

    /// Sends again the steps of sagas this owner has not sent lately: all
    /// of them after a failover, and those whose answer is overdue.
    fn redrive_sagas(&mut self) {
        let mut redriven = Vec::new();
        for (id, outbound) in self.sagas.outstanding(self.shards) {
            let due = self
                .saga_sent
                .get(id)
                .is_none_or(|sent| sent.elapsed() >= SAGA_REDRIVE_AFTER);
            if due {
                redriven.push((id.clone(), outbound));
            }
        }
        for (id, outbound) in redriven {
            metrics::counter!("coffer_saga_steps_redriven_total").increment(outbound.len() as u64);
            self.saga_sent.insert(id, Instant::now());
            self.send_steps(outbound);
        }
        let sagas = &self.sagas;
        self.saga_sent.retain(|id, _| sagas.is_in_flight(id));
        let shard = self.shard.to_string();
        metrics::gauge!("coffer_sagas_in_flight", "shard" => shard.clone()).set(self.sagas.in_flight() as f64);
        let oldest_ms = self
            .sagas
            .oldest_started_ms()
            .map_or(0, |started| now_ms().saturating_sub(started));
        metrics::gauge!("coffer_saga_oldest_age_seconds", "shard" => shard).set(oldest_ms as f64 / 1_000.0);
    }

    /// Whether the idempotency window forgets ids or soon may: by time
    /// within `FORGET_MARGIN_MS`, or by count once half full (nodes learn
    /// it through the lease table, a second or two late).
    fn forgets_soon(&self, entries_max: u32) -> bool {
        self.engine.idempotency_forgets_by(now_ms() + FORGET_MARGIN_MS)
            || self.engine.idempotency_entry_count() as u64 * 2 >= u64::from(entries_max)
    }

    fn snapshot_due(&self, every_entries: u64) -> bool {
        self.entries_since_snapshot >= every_entries
            || self
                .first_unsnapshotted
                .is_some_and(|first| first.elapsed() >= SNAPSHOT_INTERVAL)
    }

    fn snapshot(&mut self, coordinator: &mut Coordinator) -> Result<(), ClusterError> {
        self.history.flush(HISTORY_FLUSH_WAIT)?;
        let mut state = Vec::new();
        self.engine.encode_snapshot(&mut state);
        let mut sagas = Vec::new();
        self.sagas.encode(&mut Writer::new(&mut sagas));
        let snapshot = StoredSnapshot {
            next_offset: self.next_offset,
            previous_digest: self.last_digest,
            state,
            sagas,
        };
        let stored = coordinator.store_snapshot(self.shard, &snapshot)?;
        tracing::debug!(shard = self.shard, next_offset = self.next_offset, stored, "snapshot");
        self.entries_since_snapshot = 0;
        self.first_unsnapshotted = None;
        Ok(())
    }
}

fn decode_sagas(bytes: &[u8]) -> Result<SagaTable, coffer_core::CoreError> {
    let mut reader = BytesReader::new(bytes);
    let table = SagaTable::decode(&mut reader)?;
    if !reader.is_empty() {
        return Err(reader.error("trailing bytes after the sagas"));
    }
    Ok(table)
}

/// Appends entries without waiting: a lost tick is replaced by the next
/// one, a lost saga step or report is sent again by the home's re-drive.
struct Outbox {
    producer: Arc<Producer>,
    topic: Arc<str>,
    runtime: tokio::runtime::Handle,
}

impl Outbox {
    fn of(context: &ShardContext) -> Outbox {
        Outbox {
            producer: Arc::clone(&context.producer),
            topic: context.settings.log.log_topic.as_str().into(),
            runtime: context.runtime.clone(),
        }
    }

    fn send(&self, shard: u32, payload: Vec<u8>) {
        let (producer, topic) = (Arc::clone(&self.producer), Arc::clone(&self.topic));
        self.runtime.spawn(async move {
            if let Err(error) = producer.send(&topic, shard, &payload).await {
                tracing::debug!(shard, %error, "an entry was not appended; it is sent again");
            }
        });
    }
}
