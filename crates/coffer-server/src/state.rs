use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::sequencer::Sequencer;
use coffer_journal::JournalStats;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// The one state every handler shares.
pub struct AppState {
    pub config: ServerConfig,
    pub auth: Auth,
    pub sequencer: Arc<Sequencer>,
    pub journal_stats: Arc<JournalStats>,
    pub metrics: PrometheusHandle,
}
