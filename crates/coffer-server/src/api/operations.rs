use super::openapi::ReadErrors;
use super::QueryParameters;
use crate::error::ApiError;

use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// `{"status": ...}` of the health checks.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Status)]
pub struct StatusAnswer {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness
///
/// The process answers HTTP.
#[utoipa::path(
    get, path = "/healthz", tag = "operations", operation_id = "health", security(()),
    responses((status = 200, description = "Alive", body = StatusAnswer)),
)]
pub async fn health() -> Response {
    axum::Json(StatusAnswer { status: "ok" }).into_response()
}

/// Readiness
///
/// Ready once recovery is done (the server binds only after it), while the journal can still write, the engine
/// thread runs and, with Kafka configured, the broker is reachable.
#[utoipa::path(
    get, path = "/readyz", tag = "operations", operation_id = "ready", security(()),
    responses(
        (status = 200, description = "Ready", body = StatusAnswer),
        (status = 503, description = "Not ready; the message says why", body = crate::error::ErrorAnswer),
    ),
)]
pub async fn ready(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if let Some(reason) = state.ledger.not_ready() {
        return Err(ApiError::NotReady(reason));
    }
    if let Some(Err(reason)) = state.kafka.as_ref().map(|kafka| kafka.ready()) {
        return Err(ApiError::NotReady(reason));
    }
    Ok(axum::Json(StatusAnswer { status: "ready" }).into_response())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClusterParameters {
    /// An account whose shard and owner the answer names.
    account: Option<coffer_core::AccountId>,
}

/// The cluster as one node sees it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Cluster)]
pub struct ClusterAnswer<'a> {
    /// The account asked about, with its shard and that shard's owner.
    account: Option<AccountPlace>,
    /// This node's name.
    node: &'a str,
    shard_count: u32,
    /// The shared log's identity (the Kafka topic's).
    log_id: &'a str,
    /// The node that created the cluster.
    created_by: &'a str,
    /// Shards this node applies.
    owned_here: &'a [u32],
    nodes: &'a [crate::cluster::coordinator::NodeRow],
    shards: Vec<ShardAnswer<'a>>,
    /// Why this view may be stale (PostgreSQL unreachable).
    coordination_error: Option<&'a str>,
}

/// Where an account lives.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccountPlace {
    id: coffer_core::AccountId,
    shard: u32,
    owner: Option<String>,
}

/// One shard: its owner, lease and progress.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Shard)]
pub struct ShardAnswer<'a> {
    shard: u32,
    owner: Option<&'a str>,
    owner_url: Option<&'a str>,
    /// The lease epoch: increases with every change of owner.
    epoch: u64,
    lease_ms_left: i64,
    /// The next log offset the owner applies.
    applied_offset: u64,
    /// The log's end as the owner last saw it.
    log_end: u64,
    /// Entries written to the log and not applied yet.
    lag: u64,
    /// The shard's history holds every entry before this offset.
    history_offset: u64,
    history_lag: u64,
    /// Whether the idempotency window forgets ids (older ones are then looked up in the history).
    forgotten: bool,
    /// Whether the shard takes writes now.
    serving: bool,
    /// Why it does not, if it does not.
    refusing: Option<String>,
}

/// The cluster
///
/// Nodes, shards, owners, lease epochs, applied offsets and lag, as this node sees them.
#[utoipa::path(
    get, path = "/v1/cluster", tag = "operations", operation_id = "getCluster",
    params(ClusterParameters),
    responses(
        (status = 200, description = "The cluster", body = ClusterAnswer),
        (status = 404, description = "`no_cluster`: this node runs alone", body = crate::error::ErrorAnswer),
        ReadErrors,
    ),
)]
pub async fn cluster(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    QueryParameters(parameters): QueryParameters<ClusterParameters>,
) -> Result<Response, ApiError> {
    state
        .auth
        .require(&headers, crate::auth::Role::Reader, "read the cluster state")?;
    let Some(view) = state.ledger.backend().cluster_view() else {
        return Err(ApiError::NoCluster(
            "this node runs alone (start it with --cluster to form a cluster)",
        ));
    };
    let shards = view
        .shards
        .iter()
        .map(|shard| ShardAnswer {
            shard: shard.shard,
            owner: shard.owner.as_deref(),
            owner_url: shard.owner_url.as_deref(),
            epoch: shard.epoch,
            lease_ms_left: shard.lease_ms_left.max(0),
            applied_offset: shard.applied_offset,
            log_end: shard.log_end,
            lag: shard.log_end.saturating_sub(shard.applied_offset),
            history_offset: shard.history_offset,
            history_lag: shard.applied_offset.saturating_sub(shard.history_offset),
            forgotten: shard.forgotten,
            serving: view.refusal(shard.shard).is_none(),
            refusing: view.refusal(shard.shard),
        })
        .collect();
    let account = parameters.account.map(|id| {
        let shard = id.shard(view.shard_count);
        let owner = view
            .shards
            .iter()
            .find(|row| row.shard == shard)
            .and_then(|row| row.owner.clone());
        AccountPlace { id, shard, owner }
    });
    Ok(axum::Json(ClusterAnswer {
        account,
        node: &view.node,
        shard_count: view.shard_count,
        log_id: &view.log_id,
        created_by: &view.created_by,
        owned_here: &view.owned,
        nodes: &view.nodes,
        shards,
        coordination_error: view.coordination_error.as_deref(),
    })
    .into_response())
}

/// Prometheus metrics
///
/// The text exposition format; every metric is listed with its meaning in docs/METRICS.md.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics", security(()),
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)),
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = &state.journal_stats;
    metrics::counter!("coffer_journal_written_bytes_total").absolute(stats.bytes_written.load(Ordering::Relaxed));
    metrics::counter!("coffer_journal_syncs_total").absolute(stats.syncs.load(Ordering::Relaxed));
    metrics::gauge!("coffer_journal_fsync_seconds_last")
        .set(stats.sync_micros_last.load(Ordering::Relaxed) as f64 / 1e6);
    let durable_sequence = stats.durable_sequence.load(Ordering::Relaxed);
    metrics::gauge!("coffer_journal_durable_sequence").set(durable_sequence as f64);
    state.ledger.backend().record_metrics();
    if let Some(kafka) = &state.kafka {
        record_kafka_metrics(kafka, durable_sequence);
    }
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

fn record_kafka_metrics(kafka: &crate::kafka::KafkaLink, durable_sequence: u64) {
    if let Some(stats) = &kafka.publisher_stats {
        let published = stats.published_sequence.load(Ordering::Relaxed);
        metrics::gauge!("coffer_kafka_publish_lag_transactions").set(durable_sequence.saturating_sub(published) as f64);
        metrics::counter!("coffer_kafka_messages_published_total")
            .absolute(stats.messages_published.load(Ordering::Relaxed));
    }
    metrics::gauge!("coffer_kafka_consumer_lag_messages").set(kafka.consumer_lag.load(Ordering::Relaxed) as f64);
    metrics::counter!("coffer_kafka_commands_applied_total").absolute(kafka.commands_applied.load(Ordering::Relaxed));
    metrics::counter!("coffer_kafka_dead_letters_total").absolute(kafka.dead_letters.load(Ordering::Relaxed));
    metrics::gauge!("coffer_kafka_connected").set(f64::from(u8::from(kafka.ready().is_ok())));
}

/// Counts every request and its latency by route template and status.
pub async fn record_request(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = response.status().as_u16();
    with_request_metric(route, method, status, |metric| {
        metric.requests.increment(1);
        metric.duration.record(started.elapsed().as_secs_f64());
    });
    response
}

/// Standard methods by name, anything else as `other`, so that clients
/// cannot create unbounded label values.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, name)| name)
}

/// The metric handles of one (route, method, status).
struct RequestMetric {
    route: Box<str>,
    method: &'static str,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Handles cached per thread: looking a labelled metric up in the registry
/// builds and hashes its key on every request. The whole middleware cost
/// 6–7 % of single-transfer throughput (measured by removing it); caching
/// the handles won some back (four alternating runs: +0.9 to +4.9 %).
/// Bounded: routes are templates, methods and statuses a few values each.
const REQUEST_METRICS_CACHED_MAX: usize = 4_096;

thread_local! {
    static REQUEST_METRICS: std::cell::RefCell<std::collections::HashMap<u64, Vec<RequestMetric>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn with_request_metric(route: &str, method: &'static str, status: u16, record: impl FnOnce(&RequestMetric)) {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let key = BuildHasherDefault::<DefaultHasher>::default().hash_one((route, method, status));
    REQUEST_METRICS.with_borrow_mut(|cache| {
        let same =
            |metric: &&RequestMetric| metric.status == status && metric.method == method && &*metric.route == route;
        if let Some(metric) = cache.get(&key).and_then(|metrics| metrics.iter().find(same)) {
            return record(metric);
        }
        let labels = [
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("status", status.to_string()),
        ];
        let metric = RequestMetric {
            route: route.into(),
            method,
            status,
            requests: metrics::counter!("coffer_http_requests_total", &labels),
            duration: metrics::histogram!("coffer_http_request_duration_seconds", &labels[..2]),
        };
        record(&metric);
        if cache.len() < REQUEST_METRICS_CACHED_MAX {
            cache.entry(key).or_default().push(metric);
        }
    });
}
