//! Cluster mode: shards on Kafka partitions, owners by lease in PostgreSQL.
//!
//! Any node takes any request: it finds the shard of the request's accounts,
//! appends the command to that shard's partition of the log topic, and
//! answers when the shard's owner replies through the replies topic. The
//! partition is the write-ahead log: an answer leaves only after the entry
//! is in the replicated log and applied by the owner, so it survives the
//! loss of any coffer process and its disk. Reads travel the same way, so
//! a read sees every write acknowledged before it, on any node.
//!
//! - `coordinator`: the PostgreSQL tables (cluster, nodes, leases, snapshots);
//! - `log`: the topics, the producer, partition readers;
//! - `wire`: log entries and replies;
//! - `shard`: a shard's owner, which applies its partition;
//! - `history`: each shard's history in PostgreSQL, written by its owner;
//! - `waiters`: this process's requests waiting for their replies;
//! - `leases`: the loop that decides which shards this node owns.

mod address;
pub mod coordinator;
pub mod history;
pub mod leases;
pub mod log;
mod saga;
mod shard;
mod waiters;
pub mod wire;

use crate::queries::{Answer, Detail, Query, Submitted};
use coffer_core::{AccountId, EngineLimits, Operation, Transaction};
use coffer_history::ReaderPool;
use coordinator::Coordinator;
use leases::{ClusterView, LeaseLoop};
use log::{LogSettings, Producer};
use rdkafka::message::Message;
use rdkafka::Offset;
use shard::ShardContext;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use waiters::Waiters;
use wire::{decode_reply, Entry, Reply, ReplyTo};

/// How long a node waits for a shard to apply an entry it appended: long
/// enough to cover a failover (lease TTL, then recovery).
pub const REPLY_WAIT: Duration = Duration::from_secs(15);
/// Requests one node may have waiting for replies; beyond, 503.
pub const WAITERS_MAX: usize = 100_000;
/// Shards a cluster may be created with.
pub const SHARDS_MAX: u32 = 1_024;
/// How long a joining node waits for the creator to finish the topics.
const CREATION_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] postgres::Error),
    #[error("{0}")]
    Connect(#[from] coffer_history::pg_connect::PgConnectError),
    #[error("history: {0}")]
    History(#[from] coffer_history::HistoryError),
    #[error("events: {0}")]
    Events(#[from] coffer_kafka::KafkaError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Kafka topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    /// The request names accounts of more than one shard, and cannot run
    /// as a saga (`saga::check`).
    #[error("the transaction touches accounts in shards {shards:?}: {reason}")]
    CrossShard { shards: Vec<u32>, reason: String },
    /// A cross-shard transaction with this id is in flight with another
    /// payload.
    #[error("transaction {0} is in flight across shards with another payload")]
    IdReusedInFlight(String),
    /// No answer can be given now; retrying (with the same ids) is safe.
    #[error("{0}")]
    Unavailable(String),
    #[error("the node is stopping")]
    Stopped,
}

/// Everything a node needs to join (or create) a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub database_url: String,
    /// PostgreSQL schema of the coordination tables.
    pub schema: String,
    pub node_id: String,
    /// How other nodes and operators reach this node.
    pub advertised_url: String,
    /// Used only by the node that creates the cluster.
    pub shards: u32,
    pub log: LogSettings,
    /// The results and events topics every shard publishes to.
    pub events: coffer_kafka::KafkaSettings,
    /// Must be equal on every node: owners must compute the same outcomes.
    pub limits: EngineLimits,
    pub lease_ttl: Duration,
    pub snapshot_every_entries: u64,
}

/// This node's part in the cluster.
pub struct Cluster {
    settings: Arc<ClusterSettings>,
    shards: u32,
    producer: Arc<Producer>,
    waiters: Arc<Waiters>,
    next_request: AtomicU64,
    leases: Mutex<LeaseLoop>,
    view: Arc<RwLock<ClusterView>>,
    stopping: Arc<AtomicBool>,
    listener: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Connections to each shard's history, opened on demand.
    histories: Vec<Arc<ReaderPool>>,
}

/// A random number: this process's incarnation, a new cluster's log id.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl Cluster {
    /// Joins the cluster, creating it (tables, topics, genesis entries)
    /// when the database has none.
    pub async fn start(settings: ClusterSettings) -> Result<Arc<Cluster>, ClusterError> {
        let settings = Arc::new(settings);
        let (mut coordinator, row, created) = {
            let settings = Arc::clone(&settings);
            tokio::task::spawn_blocking(move || -> Result<_, ClusterError> {
                let mut coordinator = Coordinator::connect(&settings.database_url, &settings.schema)?;
                coordinator.create_tables()?;
                let log_id = format!("{:016x}{:016x}", random_u64(), random_u64());
                let (row, created) = coordinator.claim_creation(settings.shards, &log_id, &settings.node_id)?;
                Ok((coordinator, row, created))
            })
            .await
            .expect("coordinator task")?
        };
        let producer = Producer::new(settings.log.clone());
        let row = if created {
            tracing::info!(shards = row.shards, "creating the cluster");
            settings.log.create_topics(row.shards).await?;
            let genesis = Entry::Genesis {
                log_id: row.log_id.clone(),
            }
            .encode();
            for shard in 0..row.shards {
                let offset = producer.send(&settings.log.log_topic, shard, &genesis).await?;
                if offset != 0 {
                    return Err(ClusterError::Topic {
                        topic: settings.log.log_topic.clone(),
                        reason: format!("partition {shard} of a new topic took its first entry at offset {offset}"),
                    });
                }
            }
            tokio::task::block_in_place(|| coordinator.mark_ready())?;
            coordinator::ClusterRow { ready: true, ..row }
        } else {
            wait_for_creation(&mut coordinator, row).await?
        };
        tracing::info!(shards = row.shards, created_by = %row.created_by, "joined the cluster");
        let waiters = Arc::new(Waiters::new(random_u64()));
        let stopping = Arc::new(AtomicBool::new(false));
        let listener = listen_for_replies(&settings, row.shards, Arc::clone(&waiters), Arc::clone(&stopping))?;
        settings.events.ensure_topics_unless_refused().await?;
        let context = Arc::new(ShardContext {
            settings: Arc::clone(&settings),
            log_id: row.log_id.clone(),
            shards: row.shards,
            producer: Arc::clone(&producer),
            waiters: Arc::clone(&waiters),
            events: history::Events {
                delivery: Arc::new(coffer_kafka::Delivery::new(&settings.events)?),
                runtime: tokio::runtime::Handle::current(),
            },
            runtime: tokio::runtime::Handle::current(),
        });
        let leases = LeaseLoop::start(coordinator, &row, context)?;
        let histories = (0..row.shards)
            .map(|shard| {
                let database = history::shard_database(&settings.database_url, &settings.schema, shard);
                Arc::new(ReaderPool::new(database))
            })
            .collect();
        Ok(Arc::new(Cluster {
            histories,
            shards: row.shards,
            producer,
            waiters,
            next_request: AtomicU64::new(0),
            view: Arc::clone(&leases.view),
            leases: Mutex::new(leases),
            stopping,
            listener: Mutex::new(Some(listener)),
            settings,
        }))
    }

    pub fn view(&self) -> ClusterView {
        self.view.read().expect("view lock").clone()
    }

    /// Why this node is not ready, if it is not: every shard must have an
    /// owner that takes writes.
    pub fn not_ready(&self) -> Option<String> {
        let view = self.view.read().expect("view lock");
        if let Some(error) = &view.coordination_error {
            return Some(format!("coordination database: {error}"));
        }
        if view.shards.is_empty() {
            return Some("no shard view yet".into());
        }
        (0..self.shards).find_map(|shard| view.refusal(shard))
    }

    pub fn stopped(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Whether this node applies `shard` now: it holds its lease, and the
    /// shard takes writes.
    pub fn serves(&self, shard: u32) -> bool {
        let view = self.view.read().expect("view lock");
        view.owned.contains(&shard) && view.refusal(shard).is_none()
    }

    /// Applies transactions, each in its accounts' shard, one answer each
    /// in their order. A transaction of transfers across shards runs as a
    /// saga from its home shard (`saga`); a linked chain must stay within
    /// one shard.
    pub async fn submit(&self, transactions: Vec<Transaction>, detail: Detail) -> Result<Vec<Submitted>, ClusterError> {
        let count = transactions.len();
        let mut groups: Vec<(u32, Vec<usize>, Vec<Transaction>)> = Vec::new();
        let mut sagas: Vec<(usize, u32, Transaction)> = Vec::new();
        let mut chain_shard: Option<u32> = None;
        for (index, transaction) in transactions.into_iter().enumerate() {
            let shard = match self.route(&transaction)? {
                Route::Shard(shard) => shard,
                Route::Saga(_) if chain_shard.is_some() => {
                    return Err(ClusterError::CrossShard {
                        shards: saga::participants(&transaction, self.shards),
                        reason: saga::Refusal::Linked.to_string(),
                    })
                }
                Route::Saga(home) => {
                    sagas.push((index, home, transaction));
                    continue;
                }
            };
            if let Some(chained) = chain_shard.filter(|chained| *chained != shard) {
                return Err(ClusterError::CrossShard {
                    shards: vec![chained, shard],
                    reason: saga::Refusal::Linked.to_string(),
                });
            }
            chain_shard = transaction.is_linked_to_next().then_some(shard);
            match groups.iter_mut().find(|(group, ..)| *group == shard) {
                Some((_, indexes, members)) => {
                    indexes.push(index);
                    members.push(transaction);
                }
                None => groups.push((shard, vec![index], vec![transaction])),
            }
        }
        let mut pending = Vec::with_capacity(groups.len() + sagas.len());
        for (shard, indexes, members) in groups {
            let expected = members.len();
            let entry = |reply_to| Entry::Submit {
                reply_to,
                detail,
                transactions: members,
            };
            pending.push((self.append(shard, entry).await?, indexes, expected));
        }
        for (index, home, transaction) in sagas {
            let entry = |reply_to| Entry::SagaBegin { reply_to, transaction };
            pending.push((self.append(home, entry).await?, vec![index], 1));
        }
        let mut answers: Vec<Option<Submitted>> = vec![None; count];
        for (waiting, indexes, expected) in pending {
            let submitted = match waiting.reply().await? {
                Reply::ReusedInFlight(id) => return Err(ClusterError::IdReusedInFlight(id)),
                reply => reply.into_written().map_err(ClusterError::Unavailable)?,
            };
            assert_eq!(submitted.len(), expected, "one outcome per transaction");
            for (index, outcome) in indexes.into_iter().zip(submitted) {
                answers[index] = Some(outcome);
            }
        }
        Ok(answers
            .into_iter()
            .map(|answer| answer.expect("every index answered"))
            .collect())
    }

    /// Answers a query from the state of its shard as of a log position
    /// after the request arrived. A transaction id names no shard: every
    /// shard is asked.
    pub async fn read(&self, query: Query) -> Result<Answer, ClusterError> {
        let shard = match &query {
            Query::Account(id) => id.shard(self.shards),
            Query::Hold(id) => id.shard(self.shards),
            Query::Transaction(_) => return self.find_transaction(query).await,
            Query::Units(ids) => return self.units(ids).await,
            Query::Accounts { prefix, after, limit } => {
                return self.list_accounts(prefix.clone(), *after, *limit).await
            }
        };
        self.answer(shard, query).await
    }

    async fn answer(&self, shard: u32, query: Query) -> Result<Answer, ClusterError> {
        let reply = self.request(shard, |reply_to| Entry::Read { reply_to, query }).await?;
        reply.into_answer().map_err(ClusterError::Unavailable)
    }

    async fn find_transaction(&self, query: Query) -> Result<Answer, ClusterError> {
        let Query::Transaction(id) = query else {
            unreachable!("called for transaction queries")
        };
        let mut pending = Vec::with_capacity(self.shards as usize);
        for shard in 0..self.shards {
            let query = Query::Transaction(id.clone());
            pending.push(self.append(shard, |reply_to| Entry::Read { reply_to, query }).await?);
        }
        let mut found = Answer::Transaction(None);
        for waiting in pending {
            let answer = waiting
                .reply()
                .await?
                .into_answer()
                .map_err(ClusterError::Unavailable)?;
            if let answer @ (Answer::Transaction(Some(_)) | Answer::SagaInFlight(_)) = answer {
                found = answer;
            }
        }
        Ok(found)
    }

    /// A page of accounts, shard after shard. The cursor is a position
    /// across shards: the shard in its high bits, the creation slot within
    /// the shard below (a single node's cursors are shard 0's).
    async fn list_accounts(&self, prefix: String, after: u64, limit: usize) -> Result<Answer, ClusterError> {
        const SLOT_BITS: u32 = 48;
        let position = |shard: u32, slot: u64| (u64::from(shard) << SLOT_BITS) | slot;
        let (mut shard, mut slot) = ((after >> SLOT_BITS) as u32, after & ((1 << SLOT_BITS) - 1));
        let mut found = Vec::with_capacity(limit.min(64));
        while shard < self.shards && found.len() < limit {
            let query = Query::Accounts {
                prefix: prefix.clone(),
                after: slot,
                limit: limit - found.len(),
            };
            let Answer::Accounts(page, next) = self.answer(shard, query).await? else {
                return Err(ClusterError::Unavailable(
                    "an accounts query answered with something else".into(),
                ));
            };
            found.extend(page);
            match next {
                // A full page, or the shard's scan bound: continue there.
                Some(next) => return Ok(Answer::Accounts(found, Some(position(shard, next)))),
                None => (shard, slot) = (shard + 1, 0),
            }
        }
        Ok(Answer::Accounts(
            found,
            (shard < self.shards).then(|| position(shard, 0)),
        ))
    }

    async fn units(&self, ids: &[AccountId]) -> Result<Answer, ClusterError> {
        let mut pending = Vec::new();
        for shard in 0..self.shards {
            let (indexes, members): (Vec<usize>, Vec<AccountId>) = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| id.shard(self.shards) == shard)
                .map(|(index, id)| (index, id.clone()))
                .unzip();
            if !members.is_empty() {
                let query = Query::Units(members);
                pending.push((
                    self.append(shard, |reply_to| Entry::Read { reply_to, query }).await?,
                    indexes,
                ));
            }
        }
        let mut units = vec![None; ids.len()];
        for (waiting, indexes) in pending {
            let Answer::Units(found) = waiting
                .reply()
                .await?
                .into_answer()
                .map_err(ClusterError::Unavailable)?
            else {
                return Err(ClusterError::Unavailable(
                    "a units query answered with something else".into(),
                ));
            };
            for (index, unit) in indexes.into_iter().zip(found) {
                units[index] = unit;
            }
        }
        Ok(Answer::Units(units))
    }

    /// The shard of an account.
    pub fn shard_of_account(&self, id: &AccountId) -> u32 {
        id.shard(self.shards)
    }

    /// Whether `shard`'s idempotency window forgets ids, as its owner last
    /// reported (true when unknown).
    pub fn has_forgotten(&self, shard: u32) -> bool {
        let view = self.view.read().expect("view lock");
        view.shards
            .iter()
            .find(|row| row.shard == shard)
            .is_none_or(|row| row.forgotten)
    }

    /// Every shard, for lookups by transaction id.
    pub fn all_shards(&self) -> std::ops::Range<u32> {
        0..self.shards
    }

    /// Connections to `shard`'s history.
    pub fn history(&self, shard: u32) -> &Arc<ReaderPool> {
        &self.histories[shard as usize]
    }

    /// Waits until the history of each of `shards` holds every entry
    /// appended before this call: a history read that follows sees every
    /// write acknowledged before it.
    pub async fn sync_history(&self, shards: impl IntoIterator<Item = u32>) -> Result<(), ClusterError> {
        let mut pending = Vec::new();
        for shard in shards {
            pending.push(self.append(shard, |reply_to| Entry::HistorySync { reply_to }).await?);
        }
        for waiting in pending {
            match waiting.reply().await? {
                Reply::HistorySynced(_) => {}
                other => {
                    return Err(ClusterError::Unavailable(format!(
                        "a history sync was answered with {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Where a transaction is applied: in its one shard, or, if it is
    /// made of transfers across shards, as a saga kept by its home shard.
    pub fn route(&self, transaction: &Transaction) -> Result<Route, ClusterError> {
        match self.shard_of(transaction) {
            Ok(shard) => Ok(Route::Shard(shard)),
            Err(ClusterError::CrossShard { shards, .. }) => match saga::check(transaction) {
                Ok(()) => Ok(Route::Saga(saga::home(transaction, self.shards))),
                Err(refusal) => Err(ClusterError::CrossShard {
                    shards,
                    reason: refusal.to_string(),
                }),
            },
            Err(other) => Err(other),
        }
    }

    /// The one shard of everything the transaction names. `@world` is in
    /// every shard and decides nothing.
    pub fn shard_of(&self, transaction: &Transaction) -> Result<u32, ClusterError> {
        let mut shards: Vec<u32> = Vec::new();
        for operation in transaction.ops() {
            let hold = match operation {
                Operation::Hold { hold, .. } | Operation::Capture { hold, .. } | Operation::Release { hold } => {
                    Some(hold.shard(self.shards))
                }
                _ => None,
            };
            let accounts = operation
                .accounts()
                .into_iter()
                .flatten()
                .filter(|account| !account.is_world())
                .map(|account| account.shard(self.shards));
            for shard in hold.into_iter().chain(accounts) {
                if !shards.contains(&shard) {
                    shards.push(shard);
                }
            }
        }
        match shards.as_slice() {
            [] => Ok(0),
            [shard] => Ok(*shard),
            _ => Err(ClusterError::CrossShard {
                shards,
                reason: "a transaction must stay within one shard".into(),
            }),
        }
    }

    /// Appends an entry to `shard`'s log and waits for its owner's reply.
    async fn request(&self, shard: u32, entry: impl FnOnce(ReplyTo) -> Entry) -> Result<Reply, ClusterError> {
        self.append(shard, entry).await?.reply().await
    }

    /// Appends an entry to `shard`'s log; its reply is awaited separately,
    /// so that entries to several shards wait together.
    async fn append(&self, shard: u32, entry: impl FnOnce(ReplyTo) -> Entry) -> Result<Pending<'_>, ClusterError> {
        if self.stopped() {
            return Err(ClusterError::Stopped);
        }
        // A shard between owners is not refused: the entry waits in the
        // log for the next owner, and the request for its reply.
        if let Some(reason) = self.view.read().expect("view lock").refusing(shard) {
            return Err(ClusterError::Unavailable(reason));
        }
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let reply_to = ReplyTo {
            incarnation: self.waiters.incarnation(),
            request,
        };
        let Some(receiver) = self.waiters.wait(request, WAITERS_MAX) else {
            return Err(ClusterError::Unavailable(format!(
                "{WAITERS_MAX} requests already wait for their shards; retry shortly"
            )));
        };
        let pending = Pending {
            shard,
            receiver,
            started: Instant::now(),
            _forget: Forget {
                waiters: &self.waiters,
                request,
            },
        };
        let payload = entry(reply_to).encode();
        self.producer
            .send(&self.settings.log.log_topic, shard, &payload)
            .await
            .map_err(|error| {
                ClusterError::Unavailable(format!("shard {shard}'s log did not take the entry: {error}"))
            })?;
        metrics::histogram!("coffer_cluster_append_seconds").record(pending.started.elapsed().as_secs_f64());
        Ok(pending)
    }

    /// Stops this node's shards, gives their leases back, stops listening.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.leases.lock().expect("leases lock").stop();
        if let Some(listener) = self.listener.lock().expect("listener lock").take() {
            let _ = listener.join();
        }
    }
}

/// Where a transaction goes (`Cluster::route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Shard(u32),
    /// A saga, kept by this home shard.
    Saga(u32),
}

/// An entry in a shard's log whose reply has not come yet.
struct Pending<'a> {
    shard: u32,
    receiver: oneshot::Receiver<Reply>,
    started: Instant,
    _forget: Forget<'a>,
}

impl Pending<'_> {
    async fn reply(self) -> Result<Reply, ClusterError> {
        let shard = self.shard;
        match tokio::time::timeout(REPLY_WAIT.saturating_sub(self.started.elapsed()), self.receiver).await {
            Ok(Ok(reply)) => {
                metrics::histogram!("coffer_cluster_request_seconds", "shard" => shard.to_string())
                    .record(self.started.elapsed().as_secs_f64());
                Ok(reply)
            }
            Ok(Err(_)) => Err(ClusterError::Stopped),
            Err(_) => Err(ClusterError::Unavailable(format!(
                "shard {shard} did not answer within {} s (its owner may be failing over); the write may or may \
                 not be applied: retry with the same transaction id",
                REPLY_WAIT.as_secs()
            ))),
        }
    }
}

/// Removes a request's waiter however the request ends.
struct Forget<'a> {
    waiters: &'a Waiters,
    request: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiters.forget(self.request);
    }
}

async fn wait_for_creation(
    coordinator: &mut Coordinator,
    mut row: coordinator::ClusterRow,
) -> Result<coordinator::ClusterRow, ClusterError> {
    let started = Instant::now();
    while !row.ready {
        if started.elapsed() > CREATION_WAIT {
            return Err(ClusterError::Unavailable(format!(
                "the cluster created by {} is still not ready after {CREATION_WAIT:?}",
                row.created_by
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        row = tokio::task::block_in_place(|| coordinator.cluster())?.expect("the cluster row stays");
    }
    Ok(row)
}

/// Reads every partition of the replies topic from its current end and
/// hands each reply addressed to this process to its waiter. A reader
/// that fails (the broker restarted) is replaced.
fn listen_for_replies(
    settings: &Arc<ClusterSettings>,
    shards: u32,
    waiters: Arc<Waiters>,
    stopping: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, ClusterError> {
    let mut reader = Some(replies_reader(settings, shards)?);
    let settings = Arc::clone(settings);
    Ok(std::thread::Builder::new()
        .name("coffer-replies".into())
        .spawn(move || {
            while !stopping.load(Ordering::Acquire) {
                let consumer = match reader.take().map_or_else(|| replies_reader(&settings, shards), Ok) {
                    Ok(consumer) => consumer,
                    Err(error) => {
                        tracing::warn!(%error, "replies reader");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
                while !stopping.load(Ordering::Acquire) {
                    match consumer.poll(Duration::from_millis(50)) {
                        Some(Ok(message)) => deliver(&waiters, message.payload().unwrap_or_default()),
                        Some(Err(error)) => {
                            tracing::warn!(%error, "replies reader failed; starting a new one");
                            std::thread::sleep(Duration::from_millis(500));
                            break;
                        }
                        None => {}
                    }
                }
            }
        })
        .expect("spawn the replies thread"))
}

fn replies_reader(settings: &ClusterSettings, shards: u32) -> Result<log::Reader, ClusterError> {
    let topic = &settings.log.replies_topic;
    let partitions: Vec<u32> = (0..shards).collect();
    let reader = settings.log.reader(topic, &partitions, Offset::End)?;
    // Resolve "the end" now, not at the first fetch: a reply produced in
    // between would be skipped.
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in &partitions {
        let end = log::log_end(&reader, topic, *partition)?;
        list.add_partition_offset(topic, *partition as i32, Offset::Offset(end as i64))?;
    }
    rdkafka::consumer::Consumer::assign(&*reader, &list)?;
    Ok(reader)
}

fn deliver(waiters: &Waiters, payload: &[u8]) {
    let (reply_to, reply) = match decode_reply(payload) {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::warn!(%error, "a reply that does not decode");
            return;
        }
    };
    waiters.deliver(reply_to, reply);
}
