//! The Kafka side of a cluster: the log topic (one partition per shard, the
//! shards' write-ahead log) and the replies topic, their creation, an
//! idempotent producer, and readers of one partition.

use super::ClusterError;
use coffer_kafka::{retire, Health, Watched};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the broker may take to answer a metadata or offsets request.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the cluster's log lives.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub brokers: String,
    /// librdkafka options passed through, applied last.
    pub options: Vec<(String, String)>,
    pub log_topic: String,
    pub replies_topic: String,
}

impl LogSettings {
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    fn with_options(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }

    /// Creates both topics with one partition per shard. An existing topic
    /// is an error: a new cluster never adopts a log it did not write.
    pub async fn create_topics(&self, shards: u32) -> Result<(), ClusterError> {
        let config = self.with_options(self.client_config());
        let admin: AdminClient<DefaultClientContext> = config.create()?;
        let creating = std::pin::pin!(self.create_topics_with(&admin, shards));
        coffer_kafka::refused_or(&config, creating).await
    }

    async fn create_topics_with(
        &self,
        admin: &AdminClient<DefaultClientContext>,
        shards: u32,
    ) -> Result<(), ClusterError> {
        let topics: Vec<NewTopic> = [&self.log_topic, &self.replies_topic]
            .iter()
            .map(|name| NewTopic::new(name, shards as i32, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &options).await? {
            if let Err((topic, code)) = result {
                let reason = match code {
                    RDKafkaErrorCode::TopicAlreadyExists => {
                        "already exists: a new cluster needs new topics (another --kafka-topic-prefix)".into()
                    }
                    code => code.to_string(),
                };
                return Err(ClusterError::Topic { topic, reason });
            }
        }
        Ok(())
    }

    /// An idempotent producer that waits for every in-sync replica.
    fn producer(&self, health: &Arc<Health>) -> Result<FutureProducer<Watched>, ClusterError> {
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000");
        Ok(self
            .with_options(config)
            .create_with_context(Watched(Arc::clone(health)))?)
    }

    /// A reader of `partitions` of `topic` from `offset`, outside any
    /// consumer group (ownership is decided by leases, not by Kafka).
    pub fn reader(&self, topic: &str, partitions: &[u32], offset: Offset) -> Result<Reader, ClusterError> {
        let mut config = self.client_config();
        config
            .set("group.id", "coffer-cluster-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "5");
        let health = Arc::new(Health::default());
        let consumer: BaseConsumer<Watched> = self
            .with_options(config)
            .create_with_context(Watched(Arc::clone(&health)))?;
        // Used from the start: its metadata cache fills at the assignment.
        health.mark_used();
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition_offset(topic, *partition as i32, offset)?;
        }
        consumer.assign(&list)?;
        Ok(Reader(Some(consumer)))
    }
}

/// A partition reader, retired on a thread of its own when dropped:
/// destroying a client whose brokers are gone can take a while.
pub struct Reader(Option<BaseConsumer<Watched>>);

impl std::ops::Deref for Reader {
    type Target = BaseConsumer<Watched>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            retire(consumer);
        }
    }
}

/// The partition's end: the offset the next record will get.
pub fn log_end(consumer: &BaseConsumer<Watched>, topic: &str, partition: u32) -> Result<u64, ClusterError> {
    let (_, high) = consumer.fetch_watermarks(topic, partition as i32, BROKER_TIMEOUT)?;
    Ok(high.max(0) as u64)
}

/// A producer that is rebuilt after a failure, and once it has lost every
/// broker: librdkafka's idempotent producer stays failed once the broker
/// has lost its state, and a client that kept its metadata cache through
/// the loss of every broker has crashed on the topics' new ids (see
/// `coffer_kafka::Health`). A cluster outlives broker restarts.
pub struct Producer {
    settings: LogSettings,
    current: Mutex<Option<(FutureProducer<Watched>, Arc<Health>)>>,
}

/// How often an idle producer is checked for the loss of every broker: it
/// must be replaced before the brokers return.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(20);

impl Producer {
    /// A producer, and a thread that replaces its client as soon as it has
    /// lost every broker (not only at the next send).
    pub fn new(settings: LogSettings) -> Arc<Producer> {
        let producer = Arc::new(Producer {
            settings,
            current: Mutex::new(None),
        });
        let watched = Arc::downgrade(&producer);
        std::thread::Builder::new()
            .name("coffer-producer-health".into())
            .spawn(move || {
                while let Some(producer) = watched.upgrade() {
                    producer.retire_if_lost();
                    drop(producer);
                    std::thread::sleep(HEALTH_CHECK_INTERVAL);
                }
            })
            .expect("spawn the producer health thread");
        producer
    }

    fn retire_if_lost(&self) {
        let mut current = self.current.lock().expect("producer lock");
        if current.as_ref().is_some_and(|(_, health)| health.lost()) {
            tracing::info!("the producer lost every broker; replacing it");
            retire(current.take());
        }
    }

    fn client(&self) -> Result<(FutureProducer<Watched>, Arc<Health>), ClusterError> {
        self.retire_if_lost();
        let mut current = self.current.lock().expect("producer lock");
        if current.is_none() {
            let health = Arc::new(Health::default());
            *current = Some((self.settings.producer(&health)?, health));
        }
        Ok(current.clone().expect("just made"))
    }

    /// Sends and waits until the broker has the record; its offset.
    pub async fn send(&self, topic: &str, partition: u32, payload: &[u8]) -> Result<i64, ClusterError> {
        let (client, health) = self.client()?;
        let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).partition(partition as i32).payload(payload);
        match client.send(record, Duration::from_secs(10)).await {
            Ok(delivery) => {
                health.mark_used();
                Ok(delivery.offset)
            }
            Err((error, _)) => {
                let mut current = self.current.lock().expect("producer lock");
                if current
                    .as_ref()
                    .is_some_and(|(_, current)| Arc::ptr_eq(current, &health))
                {
                    retire(current.take());
                }
                Err(ClusterError::Kafka(error))
            }
        }
    }
}
