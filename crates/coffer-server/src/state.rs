//! The one state every handler shares. It owns the server's parts; the
//! parts never reach back to it: each was given what it needs (the ledger,
//! mostly) when `app::start` built it.

use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::flash_sale::FlashSale;
use crate::jobs::Jobs;
use crate::kafka::KafkaLink;
use crate::ledger::Ledger;
use crate::rate_limit::RateLimiter;
use coffer_journal::JournalStats;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

pub struct AppState {
    pub config: ServerConfig,
    pub auth: Auth,
    /// Every write and every lookup by id.
    pub ledger: Arc<Ledger>,
    pub journal_stats: Arc<JournalStats>,
    pub purchase_limiter: RateLimiter,
    /// Per-user transaction limit (`Coffer-User` header), when configured.
    pub transaction_limiter: Option<RateLimiter>,
    pub flash_sale: FlashSale,
    pub jobs: Arc<Jobs>,
    pub kafka: Option<Arc<KafkaLink>>,
    pub metrics: PrometheusHandle,
}
