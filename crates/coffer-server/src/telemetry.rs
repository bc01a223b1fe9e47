//! The metrics coffer exports, in one table: each name, its kind and its
//! HELP text (docs/METRICS.md lists the same names; a test keeps them
//! equal). Prometheus conventions: counters end in `_total`, byte counts
//! in `_bytes`, durations in `_seconds`; histograms have buckets, so
//! `histogram_quantile` works across instances.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: Kind, help: &'static str) -> Metric {
    Metric { name, kind, help }
}

use Kind::{Counter, Gauge, Histogram};

pub const METRICS: &[Metric] = &[
    metric(
        "coffer_http_requests_total",
        Counter,
        "HTTP requests answered, by route template, method and status.",
    ),
    metric(
        "coffer_http_request_duration_seconds",
        Histogram,
        "Time to answer an HTTP request, by route template and method.",
    ),
    metric("coffer_queue_depth", Gauge, "Writes waiting for the engine thread."),
    metric(
        "coffer_engine_batch_transactions",
        Histogram,
        "Transactions the engine thread applied per batch (one journal record).",
    ),
    metric("coffer_accounts", Gauge, "Accounts in the engine."),
    metric(
        "coffer_open_holds",
        Gauge,
        "Holds neither captured, released nor expired.",
    ),
    metric(
        "coffer_idempotency_entries",
        Gauge,
        "Transaction ids the engine remembers (its idempotency window).",
    ),
    metric("coffer_sequence_next", Gauge, "Sequence the next transaction gets."),
    metric(
        "coffer_snapshot_pause_seconds",
        Histogram,
        "Time the engine thread paused to hand a snapshot over.",
    ),
    metric(
        "coffer_journal_written_bytes_total",
        Counter,
        "Bytes appended to the journal.",
    ),
    metric(
        "coffer_journal_syncs_total",
        Counter,
        "Journal fsyncs (each covers a group of writes).",
    ),
    metric("coffer_journal_fsync_seconds", Histogram, "Time of each journal fsync."),
    metric(
        "coffer_journal_fsync_seconds_last",
        Gauge,
        "Time of the latest journal fsync.",
    ),
    metric(
        "coffer_journal_durable_sequence",
        Gauge,
        "Every transaction below this sequence is durable.",
    ),
    metric(
        "coffer_history_lag_transactions",
        Gauge,
        "Durable transactions not yet in the history store.",
    ),
    metric(
        "coffer_history_lag_seconds",
        Gauge,
        "Age of the newest record in the history store while it is behind; 0 when caught up.",
    ),
    metric(
        "coffer_history_rows_written_total",
        Counter,
        "Rows (entries, transactions, holds, orders) the history projector wrote.",
    ),
    metric(
        "coffer_history_write_errors_total",
        Counter,
        "History store writes that failed and were retried.",
    ),
    metric(
        "coffer_history_write_slowdowns_total",
        Counter,
        "Writes that waited for the history projector to catch up.",
    ),
    metric(
        "coffer_history_write_seconds_last",
        Gauge,
        "Time of the latest history store write.",
    ),
    metric(
        "coffer_history_feed_records_total",
        Counter,
        "Records the history index took from the engine's feed.",
    ),
    metric(
        "coffer_history_feed_gaps_total",
        Counter,
        "Times a record missing from the feed sent the history projector back to the journal.",
    ),
    metric(
        "coffer_history_export_lag_transactions",
        Gauge,
        "Durable transactions not yet in the SQL export (--history-export).",
    ),
    metric(
        "coffer_kafka_publish_lag_transactions",
        Gauge,
        "Durable transactions whose events are not yet published to Kafka.",
    ),
    metric(
        "coffer_kafka_messages_published_total",
        Counter,
        "Event messages published to Kafka.",
    ),
    metric(
        "coffer_kafka_consumer_lag_messages",
        Gauge,
        "Command messages in Kafka not yet consumed.",
    ),
    metric(
        "coffer_kafka_commands_applied_total",
        Counter,
        "Commands consumed from Kafka and applied.",
    ),
    metric(
        "coffer_kafka_dead_letters_total",
        Counter,
        "Malformed commands sent to the dead-letter topic.",
    ),
    metric(
        "coffer_kafka_connected",
        Gauge,
        "1 while the Kafka link is ready, else 0.",
    ),
    metric(
        "coffer_cluster_shard_applied_offset",
        Gauge,
        "Partition offset this node's copy of the shard has applied, by shard.",
    ),
    metric(
        "coffer_cluster_shard_lag_entries",
        Gauge,
        "Entries of the shard's log this node has not applied yet, by shard.",
    ),
    metric(
        "coffer_cluster_shard_history_lag_entries",
        Gauge,
        "Applied entries not yet in the shard's history, by shard.",
    ),
    metric(
        "coffer_cluster_shard_epoch",
        Gauge,
        "Epoch of the shard's lease, by shard.",
    ),
    metric(
        "coffer_cluster_shard_owned_here",
        Gauge,
        "1 while this node holds the shard's lease, by shard.",
    ),
    metric(
        "coffer_cluster_shard_serving",
        Gauge,
        "1 while this node would take the shard's writes, by shard.",
    ),
    metric(
        "coffer_cluster_append_seconds",
        Histogram,
        "Time to append a write to its shard's log.",
    ),
    metric(
        "coffer_cluster_request_seconds",
        Histogram,
        "Time from sending a write to its shard's log to its answer, by shard.",
    ),
    metric(
        "coffer_cluster_log_gaps_total",
        Counter,
        "Entries the broker skipped in a shard's partition, read again from before the gap.",
    ),
    metric(
        "coffer_sagas_in_flight",
        Gauge,
        "Cross-shard transactions this home shard runs now, by shard.",
    ),
    metric(
        "coffer_saga_oldest_age_seconds",
        Gauge,
        "Age of the oldest cross-shard transaction in flight from this home shard, by shard.",
    ),
    metric(
        "coffer_sagas_started_total",
        Counter,
        "Cross-shard transactions started.",
    ),
    metric(
        "coffer_sagas_finished_total",
        Counter,
        "Cross-shard transactions finished.",
    ),
    metric(
        "coffer_saga_steps_redriven_total",
        Counter,
        "Saga steps sent again: unanswered after 3 s, or by a new owner of the home shard.",
    ),
];

/// Durations from 100 µs (a fast fsync) to 10 s (a stalled dependency).
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Powers of two up to the largest batch the engine thread forms.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0,
];

/// The process-global recorder (tests start many servers in one process).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install).clone()
}

fn install() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(Matcher::Full("coffer_engine_batch_transactions".into()), BATCH_BUCKETS)
        })
        .expect("bucket lists are not empty")
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
    }
    for metric in METRICS {
        match metric.kind {
            Counter => metrics::describe_counter!(metric.name, metric.help),
            Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
    // Histograms with buckets keep counts, not samples; upkeep still
    // drains what recording threads hand over between scrapes.
    let upkept = handle.clone();
    std::thread::Builder::new()
        .name("coffer-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkept.run_upkeep();
        })
        .expect("spawn the metrics upkeep thread");
    handle
}

const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let mut names: Vec<&str> = METRICS.iter().map(|metric| metric.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "a name listed twice");
        for metric in METRICS {
            let name = metric.name;
            assert!(name.starts_with("coffer_") && !metric.help.is_empty(), "{name}");
            assert_eq!(
                metric.kind == Counter,
                name.ends_with("_total"),
                "{name}: only counters end in _total"
            );
            assert!(
                !name.contains("_micros") && !name.contains("_millis"),
                "{name}: durations in seconds"
            );
            if name.contains("bytes") {
                assert!(name.ends_with("_bytes") || name.ends_with("_bytes_total"), "{name}");
            }
        }
    }

    /// docs/METRICS.md names every metric, and no other.
    #[test]
    fn the_metrics_document_lists_every_metric() {
        let document = include_str!("../../../docs/METRICS.md");
        let mut documented: Vec<&str> = document
            .lines()
            .filter_map(|line| line.strip_prefix("| `coffer_"))
            .filter_map(|rest| rest.split('`').next())
            .collect();
        documented.sort_unstable();
        let mut listed: Vec<&str> = METRICS
            .iter()
            .map(|metric| metric.name.strip_prefix("coffer_").expect("prefixed"))
            .collect();
        listed.sort_unstable();
        assert_eq!(documented, listed);
    }
}
