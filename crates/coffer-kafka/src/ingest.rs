//! Reading commands from Kafka, and producing them (HTTP `mode=async`).

use crate::health::{Health, Watched};
use crate::{KafkaError, KafkaSettings, PRODUCE_TIMEOUT};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One message of the commands topic.
#[derive(Debug, Clone)]
pub struct Command {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Command {
    /// The transaction id of a command that names none: derived from where
    /// it sits in the log, so a redelivery gets the same id and can never
    /// apply twice.
    pub fn derived_id(&self) -> String {
        format!("kafka:{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

/// The consumer-group side: batches in, dead letters out, offsets
/// committed only on request.
pub struct Ingest {
    consumer: StreamConsumer<Watched>,
    producer: FutureProducer<Watched>,
    settings: KafkaSettings,
    health: Arc<Health>,
}

/// How long one wait for the first message of a batch lasts, so the caller
/// can notice shutdown.
const FIRST_MESSAGE_WAIT: Duration = Duration::from_millis(200);

impl Ingest {
    /// Blocking (it asks the broker for the topic's partitions): call it
    /// from a blocking thread.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let mut config = settings.client_config();
        config
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Commands are latency-sensitive: do not let the broker sit on
            // a fetch for the default half second.
            .set("fetch.wait.max.ms", "10");
        for (key, value) in &settings.options {
            config.set(key, value);
        }
        let health = Arc::new(Health::default());
        let consumer: StreamConsumer<Watched> = config.create_with_context(Watched(Arc::clone(&health)))?;
        assign(&consumer, settings)?;
        let producer = producer(settings, &health)?;
        Ok(Ingest {
            consumer,
            producer,
            settings: settings.clone(),
            health,
        })
    }

    /// True once this client must be replaced (see `health`).
    pub fn lost(&self) -> bool {
        self.health.lost()
    }

    /// Up to `max` messages: waits briefly for the first, then gathers what
    /// arrives within `linger`. Empty when nothing came.
    pub async fn next_batch(&self, max: usize, linger: Duration) -> Result<Vec<Command>, KafkaError> {
        assert!(max >= 1);
        let mut batch = Vec::new();
        let first = match tokio::time::timeout(FIRST_MESSAGE_WAIT, self.consumer.recv()).await {
            Err(_) => return Ok(batch),
            Ok(message) => message?,
        };
        self.health.mark_used();
        batch.push(command_of(&first));
        let deadline = Instant::now() + linger;
        while batch.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Err(_) => break,
                Ok(message) => batch.push(command_of(&message?)),
            }
        }
        Ok(batch)
    }

    /// Sends a message that cannot become a transaction to the dead-letter
    /// topic, with the reason and its origin in headers.
    pub async fn dead_letter(&self, command: &Command, error: &str) -> Result<(), KafkaError> {
        let origin = format!("{}:{}:{}", command.topic, command.partition, command.offset);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "coffer-error",
                value: Some(error),
            })
            .insert(Header {
                key: "coffer-origin",
                value: Some(&origin),
            });
        let mut record = FutureRecord::to(&self.settings.dead_letter_topic)
            .payload(&command.payload)
            .headers(headers);
        if let Some(key) = &command.key {
            record = record.key(key);
        }
        self.producer
            .send(record, PRODUCE_TIMEOUT)
            .await
            .map(drop)
            .map_err(|(error, _)| KafkaError::Client(error))
    }

    /// Commits, per partition, the offset after the last of `commands`:
    /// call it only once they are durable (or dead-lettered).
    pub fn commit(&self, commands: &[Command]) -> Result<(), KafkaError> {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for command in commands {
            let offset = next.entry((&command.topic, command.partition)).or_insert(0);
            *offset = (*offset).max(command.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        if list.count() > 0 {
            self.consumer.commit(&list, CommitMode::Async)?;
        }
        Ok(())
    }

    /// Messages on the assigned partitions not yet consumed. Blocking (asks
    /// the broker for watermarks): call from a blocking thread.
    pub fn lag(&self) -> Result<i64, KafkaError> {
        let positions = self.consumer.position()?;
        let mut lag = 0;
        for element in positions.elements() {
            let (_, high) =
                self.consumer
                    .fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(2))?;
            let position = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => continue,
            };
            lag += (high - position).max(0);
        }
        Ok(lag)
    }
}

/// Takes the owned partitions of the commands topic, each from the group's
/// committed offset. Partitions are assigned, not balanced by the group
/// protocol: an instance killed with SIGKILL would otherwise hold its
/// partitions until its session times out (45 s by default), and shards
/// must stay with the instance whose engine owns their accounts. Blocking.
fn assign(consumer: &StreamConsumer<Watched>, settings: &KafkaSettings) -> Result<(), KafkaError> {
    let topic = &settings.commands_topic;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|found| found.name() == topic)
        .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
        .filter(|partition| {
            settings
                .owned_partitions
                .as_ref()
                .is_none_or(|owned| owned.contains(partition))
        })
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::Topic {
            topic: topic.clone(),
            reason: "no partitions to consume (missing topic, or none of --kafka-owned-partitions exist)".into(),
        });
    }
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition_offset(topic, partition, Offset::Stored)?;
    }
    consumer.assign(&list)?;
    Ok(())
}

fn command_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Command {
    Command {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// An idempotent producer that waits for every in-sync replica: once it
/// reports success, the message survives a broker or coffer crash.
pub(crate) fn producer(settings: &KafkaSettings, health: &Arc<Health>) -> Result<FutureProducer<Watched>, KafkaError> {
    let mut config = settings.client_config();
    config.set("enable.idempotence", "true").set("acks", "all");
    for (key, value) in &settings.options {
        config.set(key, value);
    }
    Ok(config.create_with_context(Watched(Arc::clone(health)))?)
}

/// An idempotent producer that is replaced by a fresh one once it has lost
/// every broker (see `health`).
pub(crate) struct FreshProducer {
    current: Mutex<(FutureProducer<Watched>, Arc<Health>)>,
    settings: KafkaSettings,
}

impl FreshProducer {
    pub(crate) fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let health = Arc::new(Health::default());
        Ok(FreshProducer {
            current: Mutex::new((producer(settings, &health)?, health)),
            settings: settings.clone(),
        })
    }

    /// Replaces the client if it lost every broker; call it periodically
    /// so that an idle client is replaced too.
    pub(crate) fn refresh(&self) -> Result<(), KafkaError> {
        let mut current = self.current.lock().expect("producer lock");
        if current.1.lost() {
            let health = Arc::new(Health::default());
            let fresh = producer(&self.settings, &health)?;
            let old = std::mem::replace(&mut *current, (fresh, health));
            crate::health::retire(old);
        }
        Ok(())
    }

    /// The current client (a cheap handle) and its health.
    pub(crate) fn get(&self) -> Result<(FutureProducer<Watched>, Arc<Health>), KafkaError> {
        self.refresh()?;
        let current = self.current.lock().expect("producer lock");
        Ok((current.0.clone(), Arc::clone(&current.1)))
    }
}

/// Produces commands to the commands topic (HTTP `mode=async`).
pub struct CommandProducer {
    producer: FreshProducer,
    topic: String,
}

impl CommandProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(CommandProducer {
            producer: FreshProducer::new(settings)?,
            topic: settings.commands_topic.clone(),
        })
    }

    /// Replaces the client if it lost every broker: call it periodically.
    pub fn refresh(&self) -> Result<(), KafkaError> {
        self.producer.refresh()
    }

    /// Returns once the broker has the command.
    pub async fn send(&self, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
        let (producer, health) = self.producer.get()?;
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        producer
            .send(record, PRODUCE_TIMEOUT)
            .await
            .map(|_| health.mark_used())
            .map_err(|(error, _)| KafkaError::Client(error))
    }
}
