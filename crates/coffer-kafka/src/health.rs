//! Replacing clients that lost every broker.
//!
//! A client that has talked to the cluster caches the topics' ids. When
//! every broker is lost and the cluster comes back with those topics
//! recreated (new ids: a test broker with in-memory storage does exactly
//! that), librdkafka has been seen to crash on the stale cache (SIGSEGV in
//! `rd_kafka_metadata_cache_find`). So a client that has been used and then
//! lost all brokers is marked, and its holder replaces it with a fresh one,
//! whose cache is empty, before the brokers return.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Health {
    used: AtomicBool,
    lost: AtomicBool,
    /// Why the brokers refused this client (TLS or SASL), as librdkafka
    /// said it: retrying cannot help, and the failing call itself only
    /// says that it timed out.
    refused: Mutex<Option<String>>,
}

impl Health {
    /// The client has exchanged messages with the cluster (its metadata
    /// cache holds topic ids).
    pub fn mark_used(&self) {
        self.used.store(true, Ordering::Relaxed);
    }

    /// Used, then every broker was lost: replace the client.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// The brokers' refusal of this client's certificate check or login.
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().expect("health lock").clone()
    }
}

/// The context of every coffer Kafka client.
#[derive(Clone, Default)]
pub struct Watched(pub Arc<Health>);

impl ClientContext for Watched {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)) && self.0.used.load(Ordering::Relaxed)
        {
            self.0.lost.store(true, Ordering::Release);
        }
        tracing::warn!(%error, reason, "Kafka client error");
    }

    /// librdkafka's log comes straight from its threads, while its error
    /// events wait for the client to be polled (an admin client's only
    /// when it is dropped): refusals are recognised here.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if facility == "FAIL" && REFUSALS.iter().any(|refusal| message.contains(refusal)) {
            self.0.refuse(message);
        }
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {facility} {message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {facility} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {facility} {message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}"),
        }
    }
}

/// How librdkafka words a connection the brokers refused (TLS, SASL).
const REFUSALS: [&str; 3] = [
    "SSL handshake failed",
    "certificate verify failed",
    "SASL authentication error",
];

impl Health {
    fn refuse(&self, reason: &str) {
        *self.refused.lock().expect("health lock") = Some(reason.to_owned());
    }
}

impl ConsumerContext for Watched {}

/// For the probe `refused_or` runs, which sends nothing.
impl ProducerContext for Watched {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, (): ()) {}
}

/// Drops a client on a thread of its own: destroying a librdkafka client
/// whose brokers are gone can take a while, and must not block a caller.
pub fn retire<T: Send + 'static>(client: T) {
    let dropping = std::thread::Builder::new()
        .name("coffer-kafka-retire".into())
        .spawn(move || drop(client));
    if let Err(error) = dropping {
        tracing::warn!(%error, "could not retire a Kafka client on its own thread");
    }
}
