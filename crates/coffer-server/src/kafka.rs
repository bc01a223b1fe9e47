//! Kafka wired into the server: commands in (offsets committed only once
//! applied), results and change events out (a single node's journal
//! publisher; in a cluster each shard's owner publishes its own), and, on a
//! single node, `mode=async` HTTP through the commands topic.

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::sequencer::Detail;
use coffer_core::{Transaction, TransactionId};
use coffer_kafka::{Command, CommandProducer, Ingest, KafkaSettings, Publisher, PublisherStats};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Commands one engine batch takes from Kafka at most.
pub const INGEST_BATCH_MAX: usize = 4_096;
const INGEST_LINGER: Duration = Duration::from_millis(5);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
const LAG_INTERVAL: Duration = Duration::from_secs(2);
const PRODUCER_REFRESH_INTERVAL: Duration = Duration::from_millis(50);
/// How often a node that does not consume looks whether it should.
const CONSUMER_ROLE_INTERVAL: Duration = Duration::from_millis(500);
/// Consecutive read errors after which the consumer starts over.
const CONSECUTIVE_FAILURES_MAX: u32 = 5;

/// Whether this process consumes the commands topic now: a single node
/// always; in a cluster, the node that owns shard 0 while the shard
/// serves (the others wait, so that one node reads each command, and a
/// failover moves the reading with the lease; a broker that lost the
/// shards' logs stops it).
pub type ConsumerRole = Box<dyn Fn() -> bool + Send + Sync>;

pub struct KafkaLink {
    pub settings: KafkaSettings,
    /// `mode=async` HTTP, single node only: a cluster node's record of
    /// what is pending would not see the shard owners apply it.
    producer: Option<CommandProducer>,
    /// Where commands are applied, and async ones recorded as pending.
    ledger: Arc<Ledger>,
    consumes: ConsumerRole,
    /// Whether a reconnection creates missing topics. A cluster creates
    /// them once, at startup: a broker that comes back without them has
    /// lost the shards' logs too, and the shards refuse writes.
    recreates_topics: bool,
    /// Set by `stop`: the background tasks end.
    stopping: AtomicBool,
    publisher: Mutex<Option<Publisher>>,
    /// The journal publisher's, on a single node.
    pub publisher_stats: Option<Arc<PublisherStats>>,
    pub consumer_connected: AtomicBool,
    pub consumer_lag: AtomicI64,
    pub commands_applied: AtomicU64,
    pub dead_letters: AtomicU64,
}

impl KafkaLink {
    /// A single node's link: `None` without `--kafka-brokers`. Topics are
    /// created here when the broker answers; if it does not, the ingest
    /// loop keeps trying.
    pub async fn start_local(
        config: &ServerConfig,
        journal: Arc<coffer_journal::JournalStats>,
        ledger: Arc<Ledger>,
    ) -> anyhow::Result<Option<Arc<KafkaLink>>> {
        let Some(settings) = config.kafka_settings()? else {
            return Ok(None);
        };
        settings.ensure_topics_unless_refused().await?;
        let publisher = Publisher::start(
            &settings,
            config.journal_directory(),
            config.data_dir.join("kafka-events.cursor"),
            journal,
            config.engine_limits(),
        )?;
        let producer = CommandProducer::new(&settings)?;
        let single_node = SingleNode { producer, publisher };
        Ok(Some(KafkaLink::new(
            settings,
            ledger,
            Some(single_node),
            Box::new(|| true),
        )))
    }

    /// A cluster node's link: it consumes the commands topic while
    /// `consumes` says so, and publishes nothing itself.
    pub async fn start_in_cluster(
        settings: KafkaSettings,
        ledger: Arc<Ledger>,
        consumes: ConsumerRole,
    ) -> anyhow::Result<Arc<KafkaLink>> {
        settings.ensure_topics_unless_refused().await?;
        Ok(KafkaLink::new(settings, ledger, None, consumes))
    }

    fn new(
        settings: KafkaSettings,
        ledger: Arc<Ledger>,
        single_node: Option<SingleNode>,
        consumes: ConsumerRole,
    ) -> Arc<KafkaLink> {
        tracing::info!(brokers = %settings.brokers, commands = %settings.commands_topic, "Kafka connected");
        let recreates_topics = single_node.is_some();
        let (producer, publisher) = single_node.map(|parts| (parts.producer, parts.publisher)).unzip();
        Arc::new(KafkaLink {
            producer,
            publisher_stats: publisher.as_ref().map(|publisher| Arc::clone(publisher.stats())),
            publisher: Mutex::new(publisher),
            ledger,
            recreates_topics,
            consumes,
            stopping: AtomicBool::new(false),
            consumer_connected: AtomicBool::new(false),
            consumer_lag: AtomicI64::new(0),
            commands_applied: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            settings,
        })
    }

    /// Whether `mode=async` writes go through the commands topic.
    pub fn takes_async(&self) -> bool {
        self.producer.is_some()
    }

    /// Publishes what the engine left durable, then stops (after the engine).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(publisher) = self.publisher.lock().expect("publisher lock").take() {
            publisher.stop();
        }
    }

    /// `mode=async`: returns once the broker has the command, so an
    /// accepted command survives a coffer crash.
    pub async fn produce(&self, transaction: &Transaction) -> Result<(), ApiError> {
        let producer = self
            .producer
            .as_ref()
            .expect("only a link that takes async writes produces");
        let payload = serde_json::to_vec(&coffer_core::Command::of(transaction)).expect("commands serialize");
        producer
            .send(transaction.id().as_str(), &payload)
            .await
            .map_err(|error| ApiError::NotReady(format!("Kafka did not take the command: {error}")))?;
        self.ledger.mark_pending(std::slice::from_ref(transaction.id()));
        Ok(())
    }

    /// False once the server is stopping: the background tasks end.
    fn running(&self) -> bool {
        !self.stopping.load(Ordering::Relaxed) && !self.ledger.stopped()
    }

    pub fn ready(&self) -> Result<(), String> {
        if let Some(stats) = &self.publisher_stats {
            if let Some(failure) = stats.failure() {
                return Err(format!("event publisher stopped: {failure}"));
            }
            if !stats.connected.load(Ordering::Relaxed) {
                return Err("Kafka is unreachable".into());
            }
        }
        if (self.consumes)() && !self.consumer_connected.load(Ordering::Relaxed) {
            return Err("Kafka is unreachable".into());
        }
        Ok(())
    }

    /// Consumes commands until the server stops.
    pub fn spawn(self: &Arc<Self>) {
        let link = Arc::clone(self);
        tokio::spawn(async move { link.consume().await });
    }

    /// Connects, consumes, and on repeated errors (a broker restarted, a
    /// topic gone) connects again from scratch, recreating the topics.
    async fn consume(self: Arc<Self>) {
        if self.producer.is_some() {
            tokio::spawn(Arc::clone(&self).refresh_producer());
        }
        while self.running() {
            if !(self.consumes)() {
                self.consumer_connected.store(false, Ordering::Relaxed);
                tokio::time::sleep(CONSUMER_ROLE_INTERVAL).await;
                continue;
            }
            let Some(ingest) = self.connect().await else {
                return;
            };
            self.consumer_connected.store(true, Ordering::Relaxed);
            tokio::spawn(Arc::clone(&self).measure_lag(Arc::downgrade(&ingest)));
            let ended = self.consume_until_failing(&ingest).await;
            // A client that lost every broker must be gone before they return.
            coffer_kafka::retire(ingest);
            self.consumer_connected.store(false, Ordering::Relaxed);
            match ended {
                Ended::Stopping => return,
                Ended::Failing => tracing::warn!("Kafka client lost or failing; reconnecting with a fresh one"),
                Ended::NotOurs => tracing::info!("this node no longer consumes the commands topic"),
            }
        }
    }

    async fn connect(&self) -> Option<Arc<Ingest>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if !self.running() {
                return None;
            }
            let ensured = match self.recreates_topics {
                true => self.settings.ensure_topics().await,
                false => Ok(()),
            };
            let created = match ensured {
                Ok(()) => {
                    let settings = self.settings.clone();
                    tokio::task::spawn_blocking(move || Ingest::new(&settings))
                        .await
                        .expect("the Kafka connect task does not panic")
                }
                Err(error) => Err(error),
            };
            match created {
                Ok(ingest) => return Some(Arc::new(ingest)),
                Err(error) => {
                    self.consumer_connected.store(false, Ordering::Relaxed);
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Kafka consumer not connected");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        }
    }

    /// Consumes until errors repeat, the server stops, or another node
    /// is to consume.
    async fn consume_until_failing(&self, ingest: &Ingest) -> Ended {
        let mut failures = 0u32;
        loop {
            if !(self.consumes)() {
                return Ended::NotOurs;
            }
            let read = ingest.next_batch(INGEST_BATCH_MAX, INGEST_LINGER).await;
            if ingest.lost() {
                return Ended::Failing;
            }
            let batch = match read {
                Ok(batch) => batch,
                Err(error) => {
                    self.consumer_connected.store(false, Ordering::Relaxed);
                    failures += 1;
                    tracing::warn!(%error, failures, "reading commands from Kafka failed");
                    if failures >= CONSECUTIVE_FAILURES_MAX {
                        return Ended::Failing;
                    }
                    tokio::time::sleep(Duration::from_millis(200) * failures).await;
                    continue;
                }
            };
            failures = 0;
            self.consumer_connected.store(true, Ordering::Relaxed);
            if !self.running() {
                return Ended::Stopping;
            }
            if !batch.is_empty() && !self.apply(ingest, &batch).await {
                return Ended::Stopping;
            }
        }
    }

    /// Applies one batch and commits its offsets; false once the server is
    /// stopping (the offsets stay uncommitted: the batch comes back, and
    /// its ids make that harmless).
    async fn apply(&self, ingest: &Ingest, batch: &[Command]) -> bool {
        let mut transactions = Vec::with_capacity(batch.len());
        for command in batch {
            let checked = parse(command).and_then(|transaction| match self.ledger.unroutable(&transaction) {
                None => Ok(transaction),
                Some(reason) => Err(reason),
            });
            match checked {
                Ok(transaction) => transactions.push(transaction),
                Err(reason) => {
                    self.dead_letter(ingest, command, &reason).await;
                }
            }
        }
        let mut backoff = Duration::from_millis(50);
        while !transactions.is_empty() {
            if !self.running() {
                return false;
            }
            match self.ledger.submit(transactions.clone(), Detail::WithoutEffects).await {
                Ok(_) => break,
                Err(ApiError::NotReady(_)) => return false,
                Err(error) => {
                    tracing::warn!(%error, "applying Kafka commands failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        }
        self.commands_applied
            .fetch_add(transactions.len() as u64, Ordering::Relaxed);
        let ids: Vec<TransactionId> = transactions
            .iter()
            .map(|transaction| transaction.id().clone())
            .collect();
        self.ledger.settle(&ids);
        if let Err(error) = ingest.commit(batch) {
            tracing::warn!(%error, "committing Kafka offsets failed; the commands may be delivered again (harmless)");
        }
        true
    }

    async fn dead_letter(&self, ingest: &Ingest, command: &Command, reason: &str) {
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = ingest.dead_letter(command, reason).await {
            tracing::warn!(%error, "writing to the dead-letter topic failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
    }

    /// Measures the lag while this consumer is the current one.
    async fn measure_lag(self: Arc<Self>, ingest: Weak<Ingest>) {
        while let Some(measuring) = ingest.upgrade() {
            if let Ok(Ok(lag)) = tokio::task::spawn_blocking(move || measuring.lag()).await {
                self.consumer_lag.store(lag, Ordering::Relaxed);
            }
            tokio::time::sleep(LAG_INTERVAL).await;
        }
    }

    /// Replaces the async-HTTP producer once it has lost every broker,
    /// even while idle.
    async fn refresh_producer(self: Arc<Self>) {
        while self.running() {
            let Some(producer) = &self.producer else { return };
            if let Err(error) = producer.refresh() {
                tracing::warn!(%error, "could not replace the Kafka command producer");
            }
            tokio::time::sleep(PRODUCER_REFRESH_INTERVAL).await;
        }
    }
}

/// What only a single node's link has.
struct SingleNode {
    /// For `mode=async` HTTP writes.
    producer: CommandProducer,
    /// Publishes the journal's results and events.
    publisher: Publisher,
}

/// Why `consume_until_failing` returned.
enum Ended {
    /// The server is stopping.
    Stopping,
    /// Errors repeated, or the client lost every broker: start over.
    Failing,
    /// Another node is to consume now.
    NotOurs,
}

/// A command as a transaction, or why it cannot be one.
fn parse(command: &Command) -> Result<Transaction, String> {
    coffer_core::Command::read(&command.payload, || command.derived_id())
}
