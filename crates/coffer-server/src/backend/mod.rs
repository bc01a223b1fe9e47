//! What applies the ledger's writes and answers its reads, behind one
//! trait with two implementations, each a module of its own: `local` (one
//! engine thread over the node's journal, and the history store that
//! follows it) and `cluster` (the shards of a cluster, each over a Kafka
//! partition, each with its history in PostgreSQL). The server chooses one
//! at startup (`app.rs`); the `Ledger` and everything above it do not care
//! which.

pub mod cluster;
pub mod local;

use crate::cluster::leases::ClusterView;
use crate::error::ApiError;
use crate::queries::{Answer, Detail, Query, Submitted};
use coffer_core::{AccountId, Transaction};
use coffer_history::ReaderPool;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A backend's answer, once it has one.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

pub trait Backend: Send + Sync {
    /// Applies transactions and answers once they are durable: one result
    /// each, in their order. A linked chain stays whole.
    fn submit(&self, transactions: Vec<Transaction>, detail: Detail) -> Pending<'_, Vec<Submitted>>;

    /// Answers a query once everything it saw is durable.
    fn read(&self, query: Query) -> Pending<'_, Answer>;

    /// Why no write can be taken now, if so (readiness).
    fn not_ready(&self) -> Option<String>;

    /// True once no more commands are taken (shutdown).
    fn stopped(&self) -> bool;

    /// Why `transaction` can never be applied here, if it cannot.
    fn unroutable(&self, transaction: &Transaction) -> Option<String>;

    /// How many history stores there are, numbered from 0; none when the
    /// history is off.
    fn history_stores(&self) -> u32;

    /// The history store that keeps `account`'s entries.
    fn history_store_of(&self, account: &AccountId) -> u32;

    /// Waits until each of `stores` holds every write acknowledged before
    /// the call.
    fn sync_history(&self, stores: Vec<u32>) -> Pending<'_, ()>;

    /// Connections to history store `store` (below `history_stores`).
    fn history_pool(&self, store: u32) -> Arc<ReaderPool>;

    /// The ids of `transactions` that the idempotency windows may have
    /// forgotten, by the history store to look them up in; once this
    /// answers, those stores hold every id their windows forgot. Also
    /// holds the write to the history's pace where the history follows
    /// the writes (a single node).
    fn forgetting<'a>(&'a self, transactions: &'a [Transaction]) -> Pending<'a, Vec<(u32, Vec<String>)>>;

    /// Sets the backend's own gauges (queue, history lag, shards).
    fn record_metrics(&self);

    /// The cluster as this node sees it; `None` on a single node.
    fn cluster_view(&self) -> Option<ClusterView>;
}
