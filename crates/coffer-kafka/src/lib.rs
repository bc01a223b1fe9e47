//! # coffer-kafka
//!
//! Kafka plumbing for coffer, independent of the HTTP server:
//!
//! - `Ingest`: a consumer-group reader of the commands topic that hands out
//!   batches, sends malformed messages to the dead-letter topic, and
//!   commits offsets only when told (after the commands are durable).
//! - `CommandProducer`: the idempotent producer behind `mode=async` HTTP.
//! - `Publisher`: follows the journal's durable records and publishes every
//!   transaction's result (keyed by transaction id) and every change to an
//!   account (keyed by account) with the journal sequence in a header; its
//!   cursor is a file, so publication resumes after a restart
//!   (at-least-once; consumers deduplicate by `event_id`).
//!
//! Topics are created at startup when missing. See docs/KAFKA.md.

mod events;
mod health;
mod ingest;

pub use events::{messages, Applied, Delivery, Message, Publisher, PublisherStats};
pub use health::{retire, Health, Watched};
pub use ingest::{Command, CommandProducer, Ingest};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::BaseProducer;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Errors of the Kafka layer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("Kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("Kafka topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    /// The brokers refused the connection's TLS or SASL: a configuration
    /// error, not an outage.
    #[error("Kafka refused the connection: {0}")]
    Refused(String),
    #[error("journal: {0}")]
    Journal(#[from] coffer_journal::JournalError),
    #[error("event cursor {path}: {reason}")]
    Cursor { path: String, reason: String },
}

/// Where to connect and which topics to use.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port,host:port`.
    pub brokers: String,
    pub commands_topic: String,
    pub results_topic: String,
    pub events_topic: String,
    pub dead_letter_topic: String,
    pub group_id: String,
    /// Partitions of topics coffer creates.
    pub partitions: i32,
    /// Partitions of the commands topic this instance consumes (its
    /// shard); `None`: all of them.
    pub owned_partitions: Option<Vec<i32>>,
    /// librdkafka options passed through (`key=value`), applied last.
    pub options: Vec<(String, String)>,
}

/// How long creating topics may wait for the broker.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `call` unless the brokers refuse a client of `config` first (TLS,
/// SASL): librdkafka retries such a connection until the call times out,
/// which would hide the reason. A probe client of its own watches for the
/// refusal: an admin client never serves its log and error events while a
/// call is under way.
pub async fn refused_or<T, E: From<KafkaError>>(
    config: &ClientConfig,
    mut call: std::pin::Pin<&mut impl std::future::Future<Output = Result<T, E>>>,
) -> Result<T, E> {
    let health = Watched::default();
    let probe: BaseProducer<Watched> = config.create_with_context(health.clone()).map_err(KafkaError::from)?;
    let mut checks = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            result = &mut call => {
                retire(probe);
                return result;
            }
            _ = checks.tick() => {
                // Serves the probe's events (its log among them) without waiting.
                probe.poll(Duration::ZERO);
                if let Some(reason) = health.0.refused() {
                    retire(probe);
                    return Err(KafkaError::Refused(reason).into());
                }
            }
        }
    }
}

/// How long a produce may wait for the broker before it counts as failed.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

impl KafkaSettings {
    /// The settings every client shares: brokers, then the passthrough.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }

    /// Creates the four topics where missing (an existing topic is fine).
    /// Fails at once with [`KafkaError::Refused`] when the brokers refuse
    /// the client's TLS or SASL.
    pub async fn ensure_topics(&self) -> Result<(), KafkaError> {
        let config = self.client_config();
        let admin: AdminClient<DefaultClientContext> = config.create()?;
        let creating = std::pin::pin!(self.create_topics(&admin));
        refused_or(&config, creating).await
    }

    /// `ensure_topics` at startup: a refusal (TLS, SASL) is the error, as
    /// retrying cannot fix a configuration; an outage is only logged, and
    /// the topics are created when the brokers answer.
    pub async fn ensure_topics_unless_refused(&self) -> Result<(), KafkaError> {
        match self.ensure_topics().await {
            Err(error @ KafkaError::Refused(_)) => Err(error),
            Err(error) => {
                tracing::warn!(%error, "Kafka topics not created yet; created when the brokers answer");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    async fn create_topics(&self, admin: &AdminClient<DefaultClientContext>) -> Result<(), KafkaError> {
        let names = [
            &self.commands_topic,
            &self.results_topic,
            &self.events_topic,
            &self.dead_letter_topic,
        ];
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|name| NewTopic::new(name, self.partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(ADMIN_TIMEOUT))
            .request_timeout(Some(ADMIN_TIMEOUT));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::Topic {
                        topic,
                        reason: code.to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}
