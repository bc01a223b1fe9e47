//! A cluster node's backend: the shards, each applied by its owner from a
//! Kafka partition, each with its history in PostgreSQL (docs/CLUSTER.md).

use super::{Backend, Pending};
use crate::cluster::leases::ClusterView;
use crate::cluster::Cluster;
use crate::queries::{Answer, Detail, Query, Submitted};
use coffer_core::{AccountId, Transaction};
use coffer_history::ReaderPool;
use std::collections::HashMap;
use std::sync::Arc;

impl Backend for Cluster {
    fn submit(&self, transactions: Vec<Transaction>, detail: Detail) -> Pending<'_, Vec<Submitted>> {
        Box::pin(async move { Ok(Cluster::submit(self, transactions, detail).await?) })
    }

    fn read(&self, query: Query) -> Pending<'_, Answer> {
        Box::pin(async move { Ok(Cluster::read(self, query).await?) })
    }

    fn not_ready(&self) -> Option<String> {
        Cluster::not_ready(self)
    }

    fn stopped(&self) -> bool {
        Cluster::stopped(self)
    }

    fn unroutable(&self, transaction: &Transaction) -> Option<String> {
        self.route(transaction).err().map(|error| error.to_string())
    }

    fn history_stores(&self) -> u32 {
        self.all_shards().end
    }

    fn history_store_of(&self, account: &AccountId) -> u32 {
        self.shard_of_account(account)
    }

    fn sync_history(&self, stores: Vec<u32>) -> Pending<'_, ()> {
        Box::pin(async move { Ok(Cluster::sync_history(self, stores).await?) })
    }

    fn history_pool(&self, store: u32) -> Arc<ReaderPool> {
        Arc::clone(self.history(store))
    }

    /// The ids of transactions whose shard's window forgets ids, once
    /// those shards' histories are synced. A transaction that names no
    /// single shard is left out: `submit` refuses it.
    fn forgetting<'a>(&'a self, transactions: &'a [Transaction]) -> Pending<'a, Vec<(u32, Vec<String>)>> {
        Box::pin(async move {
            let mut by_shard: HashMap<u32, Vec<String>> = HashMap::new();
            for transaction in transactions {
                if let Ok(shard) = self.shard_of(transaction) {
                    if self.has_forgotten(shard) {
                        by_shard.entry(shard).or_default().push(transaction.id().to_string());
                    }
                }
            }
            Cluster::sync_history(self, by_shard.keys().copied()).await?;
            Ok(by_shard.into_iter().collect())
        })
    }

    fn record_metrics(&self) {
        let view = self.view();
        for shard in &view.shards {
            let label = shard.shard.to_string();
            let owned_here = view.owned.contains(&shard.shard);
            metrics::gauge!("coffer_cluster_shard_applied_offset", "shard" => label.clone())
                .set(shard.applied_offset as f64);
            metrics::gauge!("coffer_cluster_shard_lag_entries", "shard" => label.clone())
                .set(shard.log_end.saturating_sub(shard.applied_offset) as f64);
            metrics::gauge!("coffer_cluster_shard_history_lag_entries", "shard" => label.clone())
                .set(shard.applied_offset.saturating_sub(shard.history_offset) as f64);
            metrics::gauge!("coffer_cluster_shard_epoch", "shard" => label.clone()).set(shard.epoch as f64);
            metrics::gauge!("coffer_cluster_shard_owned_here", "shard" => label.clone())
                .set(f64::from(u8::from(owned_here)));
            metrics::gauge!("coffer_cluster_shard_serving", "shard" => label)
                .set(f64::from(u8::from(view.refusal(shard.shard).is_none())));
        }
    }

    fn cluster_view(&self) -> Option<ClusterView> {
        Some(self.view())
    }
}
