use crate::api::products::FlashSale;
use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::history::History;
use crate::jobs::Jobs;
use crate::kafka::KafkaLink;
use crate::rate_limit::RateLimiter;
use crate::sequencer::{Detail, Sequencer, Submitted};
use coffer_core::Transaction;
use coffer_journal::JournalStats;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// The one state every handler shares.
pub struct AppState {
    pub config: ServerConfig,
    pub auth: Auth,
    pub sequencer: Arc<Sequencer>,
    pub journal_stats: Arc<JournalStats>,
    pub history: Option<Arc<History>>,
    pub purchase_limiter: RateLimiter,
    /// Per-user transaction limit (`Coffer-User` header), when configured.
    pub transaction_limiter: Option<RateLimiter>,
    pub flash_sale: FlashSale,
    pub jobs: Jobs,
    pub kafka: Option<Arc<KafkaLink>>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// Applies transactions once durable. Every write goes through here:
    /// ids the engine's window may have forgotten are answered from the
    /// history store instead of being applied a second time.
    pub async fn submit(&self, transactions: Vec<Transaction>, detail: Detail) -> Result<Vec<Submitted>, ApiError> {
        let known = self.known(&transactions).await?;
        if known.iter().all(Option::is_none) {
            return Ok(self.sequencer.submit(transactions, detail).await?);
        }
        let fresh: Vec<Transaction> = transactions
            .into_iter()
            .zip(&known)
            .filter(|(_, stored)| stored.is_none())
            .map(|(transaction, _)| transaction)
            .collect();
        let mut applied = match fresh.is_empty() {
            true => Vec::new(),
            false => self.sequencer.submit(fresh, detail).await?,
        }
        .into_iter();
        Ok(known
            .into_iter()
            .map(|stored| stored.unwrap_or_else(|| applied.next().expect("one result per fresh transaction")))
            .collect())
    }

    /// `mode=async`: queues the transactions, unless the store already
    /// knows one of them (then the caller answers with the stored outcome).
    pub async fn submit_detached(&self, transactions: Vec<Transaction>) -> Result<Option<Submitted>, ApiError> {
        let known = self.known(&transactions).await?;
        if let Some(stored) = known.into_iter().flatten().next() {
            return Ok(Some(stored));
        }
        self.sequencer.submit_detached(transactions)?;
        Ok(None)
    }

    /// The stored outcomes of transactions the window may have forgotten.
    async fn known(&self, transactions: &[Transaction]) -> Result<Vec<Option<Submitted>>, ApiError> {
        let Some(history) = &self.history else {
            return Ok(vec![None; transactions.len()]);
        };
        history.admit_write(|| self.sequencer.durable_sequence()).await?;
        if !self.sequencer.idempotency_has_forgotten() {
            return Ok(vec![None; transactions.len()]);
        }
        history.known(transactions).await
    }
}
