//! A single node's backend: one engine thread over the node's own journal
//! (`Sequencer`), and the history store that follows the journal, if on.

use super::{Backend, Pending};
use crate::clock::now_ms;
use crate::cluster::leases::ClusterView;
use crate::history::History;
use crate::queries::{Answer, Detail, Query, Submitted};
use crate::sequencer::Sequencer;
use coffer_core::{AccountId, Transaction};
use coffer_history::ReaderPool;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Local {
    sequencer: Arc<Sequencer>,
    history: Option<Arc<History>>,
}

impl Local {
    pub fn new(sequencer: Arc<Sequencer>, history: Option<Arc<History>>) -> Local {
        Local { sequencer, history }
    }

    fn history(&self) -> Result<&Arc<History>, crate::error::ApiError> {
        self.history
            .as_ref()
            .ok_or_else(|| crate::error::ApiError::HistoryUnavailable("the history is off (--history-url off)".into()))
    }
}

impl Backend for Local {
    fn submit(&self, transactions: Vec<Transaction>, detail: Detail) -> Pending<'_, Vec<Submitted>> {
        Box::pin(async move { Ok(self.sequencer.submit(transactions, detail).await?) })
    }

    fn read(&self, query: Query) -> Pending<'_, Answer> {
        Box::pin(async move { Ok(self.sequencer.read(query).await?) })
    }

    fn not_ready(&self) -> Option<String> {
        if let Some(failure) = self.sequencer.journal_failure() {
            return Some(format!("journal failed: {failure}"));
        }
        if !self.sequencer.engine_running() {
            return Some("the engine thread has stopped".into());
        }
        let failure = self.history.as_ref().and_then(|history| history.stats.failure());
        failure.map(|failure| format!("history projector stopped: {failure}"))
    }

    fn stopped(&self) -> bool {
        self.sequencer.stopped()
    }

    fn unroutable(&self, _: &Transaction) -> Option<String> {
        None
    }

    fn history_stores(&self) -> u32 {
        u32::from(self.history.is_some())
    }

    fn history_store_of(&self, _: &AccountId) -> u32 {
        0
    }

    fn sync_history(&self, stores: Vec<u32>) -> Pending<'_, ()> {
        Box::pin(async move {
            assert!(
                stores.iter().all(|store| *store == 0),
                "a single node has one history store"
            );
            self.history()?.caught_up().await
        })
    }

    fn history_pool(&self, store: u32) -> Arc<ReaderPool> {
        assert_eq!(store, 0, "a single node has one history store");
        let history = self
            .history
            .as_ref()
            .expect("a history store exists below history_stores");
        Arc::clone(history.pool())
    }

    /// Writes are held to the projector's pace (`History::admit_write`), so
    /// an id is in the store before the window forgets it: no wait here.
    fn forgetting<'a>(&'a self, transactions: &'a [Transaction]) -> Pending<'a, Vec<(u32, Vec<String>)>> {
        Box::pin(async move {
            let Some(history) = &self.history else {
                return Ok(Vec::new());
            };
            history.admit_write(|| self.sequencer.durable_sequence()).await?;
            if !self.sequencer.idempotency_has_forgotten() {
                return Ok(Vec::new());
            }
            let ids = transactions
                .iter()
                .map(|transaction| transaction.id().to_string())
                .collect();
            Ok(vec![(0, ids)])
        })
    }

    fn record_metrics(&self) {
        metrics::gauge!("coffer_queue_depth").set(self.sequencer.queue_depth() as f64);
        if let Some(history) = &self.history {
            record_history_metrics(history, self.sequencer.durable_sequence());
        }
    }

    fn cluster_view(&self) -> Option<ClusterView> {
        None
    }
}

fn record_history_metrics(history: &History, durable_sequence: u64) {
    let stats = &history.stats;
    let lag = history.lag(durable_sequence);
    metrics::gauge!("coffer_history_lag_transactions").set(lag as f64);
    // Age of the newest projected record while behind; zero when caught up.
    let lag_seconds = match lag {
        0 => 0.0,
        _ => now_ms().saturating_sub(stats.projected_timestamp_ms.load(Ordering::Relaxed)) as f64 / 1e3,
    };
    metrics::gauge!("coffer_history_lag_seconds").set(lag_seconds);
    metrics::counter!("coffer_history_rows_written_total").absolute(stats.rows_written.load(Ordering::Relaxed));
    metrics::counter!("coffer_history_write_errors_total").absolute(stats.write_errors.load(Ordering::Relaxed));
    metrics::counter!("coffer_history_write_slowdowns_total").absolute(history.slowdowns.load(Ordering::Relaxed));
    if let Some(lag) = history.export_lag(durable_sequence) {
        metrics::gauge!("coffer_history_export_lag_transactions").set(lag as f64);
    }
    metrics::counter!("coffer_history_feed_records_total").absolute(stats.feed_records.load(Ordering::Relaxed));
    metrics::counter!("coffer_history_feed_gaps_total").absolute(stats.feed_gaps.load(Ordering::Relaxed));
    metrics::gauge!("coffer_history_write_seconds_last")
        .set(stats.write_micros_last.load(Ordering::Relaxed) as f64 / 1e6);
}
