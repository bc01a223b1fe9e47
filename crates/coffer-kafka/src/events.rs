//! Change data capture: every durable journal record becomes results and
//! events on Kafka. The publisher applies records to its own engine (the
//! journal keeps commands; balances come from applying them) through the
//! same projection the history store uses, so an event carries exactly what
//! a history row does.
//!
//! Delivery is at-least-once: the cursor file is written only after the
//! broker has acknowledged everything before it, so a crash in between
//! publishes some messages again. Every event carries `event_id` (a global
//! order, stable across restarts) for consumers to deduplicate.

use crate::ingest::FreshProducer;
use crate::{KafkaError, KafkaSettings};
use coffer_core::{BatchOutcome, EngineLimits, Operation, Outcome, Transaction, Verdict};
use coffer_history::{Changes, Cursor, HistoryEntry, Projection, Shape, TransactionRow};
use coffer_journal::{Follower, JournalStats, Position, ReaderThread};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages gathered before waiting for the broker and saving the cursor.
const MESSAGES_PER_GROUP_MAX: usize = 10_000;
const IDLE_POLL: Duration = Duration::from_millis(5);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
const HEALTH_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Every transaction below this sequence is published.
    pub published_sequence: AtomicU64,
    pub messages_published: AtomicU64,
    /// False while the broker is failing deliveries.
    pub connected: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl PublisherStats {
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure lock").clone()
    }
}

pub struct Publisher {
    stats: Arc<PublisherStats>,
    thread: ReaderThread,
}

/// One result or event, ready to send.
pub struct Message {
    topic: String,
    key: String,
    payload: String,
    sequence: u64,
    event_id: Option<i64>,
    /// The cluster shard it comes from (event ids are per shard there).
    shard: Option<u32>,
}

#[derive(Serialize, Deserialize, Default)]
struct StoredCursor {
    segment: u64,
    offset: u64,
    sequence_next: u64,
    history_next: i64,
    timestamp_ms: u64,
}

impl Publisher {
    /// Resumes from the cursor file (or the journal's start) on its own
    /// thread.
    pub fn start(
        settings: &KafkaSettings,
        journal_directory: PathBuf,
        cursor_path: PathBuf,
        journal: Arc<JournalStats>,
        limits: EngineLimits,
    ) -> Result<Publisher, KafkaError> {
        let cursor = read_cursor(&cursor_path)?;
        let needed = journal.register_reader(cursor.map_or(0, |cursor| cursor.sequence_next));
        let delivery = Delivery::new(settings)?;
        let stats = Arc::clone(delivery.stats());
        let thread = ReaderThread::spawn("coffer-events", move |stop| {
            let worker = Worker {
                delivery,
                journal_directory,
                cursor_path,
                journal,
                limits,
                needed,
                stop,
            };
            worker.run(cursor);
        });
        Ok(Publisher { stats, thread })
    }

    pub fn stats(&self) -> &Arc<PublisherStats> {
        &self.stats
    }

    /// Publishes what is durable, then stops.
    pub fn stop(self) {
        self.thread.stop();
    }
}

struct Worker {
    delivery: Delivery,
    journal_directory: PathBuf,
    cursor_path: PathBuf,
    journal: Arc<JournalStats>,
    limits: EngineLimits,
    needed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// Sends results and events, retrying until the broker has them all.
pub struct Delivery {
    settings: KafkaSettings,
    producer: FreshProducer,
    stats: Arc<PublisherStats>,
}

impl Worker {
    fn run(self, cursor: Option<Cursor>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the publisher");
        if let Err(error) = runtime.block_on(self.follow(cursor)) {
            tracing::error!(%error, "the event publisher stopped; restart to resume");
            *self.delivery.stats.failure.lock().expect("failure lock") = Some(error.to_string());
        }
    }

    async fn follow(&self, cursor: Option<Cursor>) -> Result<(), KafkaError> {
        let resume = cursor.map(|cursor| (cursor.position, cursor.sequence_next));
        let mut follower = Follower::open(&self.journal_directory, Arc::clone(&self.journal), self.limits, resume)?;
        let mut projection = Projection::new(&follower.engine, cursor.unwrap_or_default(), Shape::Rows);
        self.advance(&projection.cursor);
        let mut changes = Changes::default();
        let mut pending = Vec::new();
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            let next = follower.next_applied()?;
            let caught_up = next.is_none();
            if let Some((record, outcome)) = next {
                projection.project(&follower.engine, &record.batch, &outcome, record.next, &mut changes);
                let applied = Applied {
                    shard: None,
                    transactions: &record.batch.transactions,
                    outcome: &outcome,
                    rows: &changes.transactions,
                    entries: &changes.entries,
                };
                messages(&self.delivery.settings, &applied, &mut pending);
                changes.clear();
            }
            if !pending.is_empty() && (caught_up || pending.len() >= MESSAGES_PER_GROUP_MAX) {
                self.delivery.deliver(&pending).await;
                pending.clear();
                save_cursor(&self.cursor_path, &projection.cursor)?;
                self.advance(&projection.cursor);
            } else if caught_up && pending.is_empty() {
                self.delivery.producer.refresh()?;
                let published = self.delivery.stats.published_sequence.load(Ordering::Relaxed);
                if projection.cursor.sequence_next > published {
                    save_cursor(&self.cursor_path, &projection.cursor)?;
                    self.advance(&projection.cursor);
                }
                if stopping {
                    return Ok(());
                }
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }

    fn advance(&self, cursor: &Cursor) {
        self.delivery
            .stats
            .published_sequence
            .store(cursor.sequence_next, Ordering::Release);
        self.needed.store(cursor.sequence_next, Ordering::Release);
    }
}

impl Delivery {
    pub fn new(settings: &KafkaSettings) -> Result<Delivery, KafkaError> {
        let stats = Arc::new(PublisherStats::default());
        stats.connected.store(true, Ordering::Relaxed);
        Ok(Delivery {
            settings: settings.clone(),
            producer: FreshProducer::new(settings)?,
            stats,
        })
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    pub fn stats(&self) -> &Arc<PublisherStats> {
        &self.stats
    }

    /// Sends every message and waits for the broker's acknowledgements,
    /// retrying (the whole group: at-least-once) until they all succeed.
    pub async fn deliver(&self, messages: &[Message]) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.try_deliver(messages).await {
                Ok(()) => {
                    self.stats.connected.store(true, Ordering::Relaxed);
                    self.stats
                        .messages_published
                        .fetch_add(messages.len() as u64, Ordering::Relaxed);
                    return;
                }
                Err(error) => {
                    self.stats.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "publishing to Kafka failed");
                    tokio::time::sleep(backoff).await;
                    // A restarted broker may have lost the topics.
                    if let Err(error) = self.settings.ensure_topics().await {
                        tracing::warn!(%error, "Kafka topics not recreated yet");
                    }
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        }
    }

    async fn try_deliver(&self, messages: &[Message]) -> Result<(), KafkaError> {
        let (producer, health) = self.producer.get()?;
        let mut deliveries = std::collections::VecDeque::with_capacity(messages.len());
        for message in messages {
            let sequence = message.sequence.to_string();
            let mut headers = OwnedHeaders::new().insert(Header {
                key: "coffer-sequence",
                value: Some(&sequence),
            });
            let event_id = message.event_id.map(|id| id.to_string());
            if let Some(event_id) = &event_id {
                headers = headers.insert(Header {
                    key: "coffer-event-id",
                    value: Some(event_id),
                });
            }
            let shard = message.shard.map(|shard| shard.to_string());
            if let Some(shard) = &shard {
                headers = headers.insert(Header {
                    key: "coffer-shard",
                    value: Some(shard),
                });
            }
            let mut record = FutureRecord::to(&message.topic)
                .key(&message.key)
                .payload(&message.payload)
                .headers(headers);
            // `send_result` enqueues now (an `async send` would only enqueue
            // when awaited: one round trip per message). A full local queue
            // waits for the oldest delivery, then tries again.
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push_back(delivery);
                        break;
                    }
                    Err((rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        record = returned;
                        match deliveries.pop_front() {
                            Some(oldest) => check(watch(oldest, &health).await?)?,
                            None => tokio::time::sleep(IDLE_POLL).await,
                        }
                    }
                    Err((error, _)) => return Err(KafkaError::Client(error)),
                }
            }
        }
        while let Some(delivery) = deliveries.pop_front() {
            check(watch(delivery, &health).await?)?;
        }
        health.mark_used();
        Ok(())
    }
}

/// Waits for a delivery, giving up as soon as the client has lost every
/// broker: it must be replaced before they come back (see `health`).
async fn watch<F: std::future::Future>(delivery: F, health: &crate::Health) -> Result<F::Output, KafkaError> {
    tokio::pin!(delivery);
    loop {
        tokio::select! {
            done = &mut delivery => return Ok(done),
            () = tokio::time::sleep(HEALTH_POLL) => {
                if health.lost() {
                    return Err(KafkaError::Client(rdkafka::error::KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)));
                }
            }
        }
    }
}

/// A delivery's outcome; a canceled future means the producer went away.
fn check<Canceled>(
    delivery: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, Canceled>,
) -> Result<(), KafkaError> {
    match delivery {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(KafkaError::Client(error)),
        Err(_) => Err(KafkaError::Client(rdkafka::error::KafkaError::Canceled)),
    }
}

/// One applied batch and the history rows projected from it.
pub struct Applied<'a> {
    /// The cluster shard that applied it; `None` on a single node.
    pub shard: Option<u32>,
    pub transactions: &'a [Transaction],
    pub outcome: &'a BatchOutcome,
    pub rows: &'a [TransactionRow],
    pub entries: &'a [HistoryEntry],
}

/// Results, balance changes, rejections, and account openings and
/// closings of one applied batch.
pub fn messages(settings: &KafkaSettings, applied: &Applied, out: &mut Vec<Message>) {
    let shard = applied.shard;
    for row in applied.rows {
        let result = ResultMessage {
            id: &row.id,
            status: if row.committed { "committed" } else { "rejected" },
            code: row.rejection_code.as_deref(),
            op_index: row.rejection_op_index,
            seq: row.sequence,
            timestamp_ms: row.timestamp_ms,
            effects: serde_json::value::RawValue::from_string(row.effects.clone()).ok(),
        };
        out.push(Message {
            topic: settings.results_topic.clone(),
            key: row.id.clone(),
            payload: serde_json::to_string(&result).expect("serializes"),
            sequence: row.sequence as u64,
            event_id: None,
            shard,
        });
        if !row.committed {
            let event = Event {
                event_type: "transaction_rejected",
                transaction_id: Some(&row.id),
                code: row.rejection_code.as_deref(),
                sequence: row.sequence,
                timestamp_ms: row.timestamp_ms,
                shard,
                ..Event::default()
            };
            out.push(event.message(settings, &row.id));
        }
    }
    for entry in applied.entries {
        let event = Event {
            event_type: if entry.kind == "hold_expired" {
                "hold_expired"
            } else {
                "balance_changed"
            },
            event_id: Some(entry.history_id),
            account: Some(&entry.account),
            unit: Some(&entry.unit),
            transaction_id: entry.transaction_id.as_deref(),
            hold_id: entry.hold_id.as_deref(),
            sequence: entry.sequence,
            timestamp_ms: entry.timestamp_ms,
            available_change: Some(entry.available_change.to_string()),
            frozen_change: Some(entry.frozen_change.to_string()),
            available: Some(entry.available.to_string()),
            frozen: Some(entry.frozen.to_string()),
            shard,
            ..Event::default()
        };
        out.push(event.message(settings, &entry.account));
    }
    for (transaction, result) in applied.transactions.iter().zip(&applied.outcome.outcomes) {
        let Outcome::New { record, .. } = result else { continue };
        if record.verdict != Verdict::Committed {
            continue;
        }
        for op in transaction.ops() {
            let (event_type, account) = match op {
                Operation::Open { account, .. } => ("account_opened", account),
                Operation::Close { account } => ("account_closed", account),
                Operation::Reopen { account } => ("account_reopened", account),
                _ => continue,
            };
            let event = Event {
                event_type,
                account: Some(account.as_str()),
                transaction_id: Some(transaction.id().as_str()),
                sequence: record.sequence as i64,
                timestamp_ms: record.timestamp_ms as i64,
                shard,
                ..Event::default()
            };
            out.push(event.message(settings, account.as_str()));
        }
    }
}

#[derive(Serialize)]
struct ResultMessage<'a> {
    id: &'a str,
    status: &'static str,
    code: Option<&'a str>,
    op_index: Option<i32>,
    seq: i64,
    timestamp_ms: i64,
    effects: Option<Box<serde_json::value::RawValue>>,
}

/// One event. Amounts are decimal strings: exact in every language.
#[derive(Serialize, Default)]
struct Event<'a> {
    #[serde(rename = "type")]
    event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<i64>,
    /// In a cluster: the shard, whose events `event_id` orders.
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    sequence: i64,
    timestamp_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    available_change: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frozen_change: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frozen: Option<String>,
}

impl Event<'_> {
    fn message(&self, settings: &KafkaSettings, key: &str) -> Message {
        Message {
            topic: settings.events_topic.clone(),
            key: key.to_owned(),
            payload: serde_json::to_string(self).expect("serializes"),
            sequence: self.sequence as u64,
            event_id: self.event_id,
            shard: self.shard,
        }
    }
}

fn cursor_error(path: &Path, reason: impl ToString) -> KafkaError {
    KafkaError::Cursor {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_cursor(path: &Path) -> Result<Option<Cursor>, KafkaError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(cursor_error(path, error)),
    };
    let stored: StoredCursor = serde_json::from_slice(&bytes).map_err(|error| cursor_error(path, error))?;
    Ok(Some(Cursor {
        position: Position {
            segment: stored.segment,
            offset: stored.offset,
        },
        sequence_next: stored.sequence_next,
        history_next: stored.history_next,
        timestamp_ms: stored.timestamp_ms,
    }))
}

/// Temp file and rename: a crash leaves the old cursor or the new one.
/// No fsync: a cursor lost to a power cut only republishes (at-least-once).
fn save_cursor(path: &Path, cursor: &Cursor) -> Result<(), KafkaError> {
    let stored = StoredCursor {
        segment: cursor.position.segment,
        offset: cursor.position.offset,
        sequence_next: cursor.sequence_next,
        history_next: cursor.history_next,
        timestamp_ms: cursor.timestamp_ms,
    };
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_vec(&stored).expect("serializes"))
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| cursor_error(path, error))
}
