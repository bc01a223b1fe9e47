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
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Health {
    used: AtomicBool,
    lost: AtomicBool,
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
}

impl ConsumerContext for Watched {}

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
