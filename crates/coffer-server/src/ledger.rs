//! The ledger as the rest of the server sees it. Every write and every
//! lookup by transaction id goes through `Ledger`, which owns "never
//! applied twice" end to end:
//!
//! - inside the engine's idempotency window, the engine decides (a retry
//!   replays the remembered outcome, another payload is `IdReused`);
//! - once the window has started to forget, ids are first looked up in the
//!   history store (in a cluster, the history of each shard whose window
//!   forgets), and a stored one is answered from there, never applied
//!   again (`TransactionRow::same_payload` tells a retry from a reused id);
//! - writes accepted before they are applied (`mode=async` through the
//!   Kafka commands topic) are `pending` here until applied.
//!
//! Durability is the backend's: the single node's sequencer answers after
//! the fsync; in a cluster, the shard's owner answers after the entry is in
//! the replicated log and applied.

use crate::backend::Backend;
use crate::error::ApiError;
use crate::history::{read_pooled, stored_among};
use crate::queries::StepView;
use crate::sequencer::{Answer, Detail, Kind, Query, Submitted};
use coffer_core::{
    AccountId, AccountView, HoldId, HoldView, Record, Rejection, RejectionCode, Transaction, TransactionId, Verdict,
};
use coffer_history::{HistoryError, Reader, TransactionRow};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Writes remembered as pending at most; beyond, they are still applied,
/// but a lookup answers 404 until they are.
pub const PENDING_MAX: usize = 1_000_000;

pub struct Ledger {
    backend: Arc<dyn Backend>,
    /// Produced to the Kafka commands topic and not yet applied.
    pending: Mutex<HashSet<TransactionId>>,
}

/// What is known of a transaction id.
pub enum Lookup {
    /// Accepted, not yet applied; a cluster's cross-shard transaction
    /// shows its steps so far.
    Pending(Vec<StepView>),
    /// In the engine's window.
    Recent(Record),
    /// Beyond the window, from the history store.
    Stored(TransactionRow, Record),
}

impl Ledger {
    pub fn new(backend: Arc<dyn Backend>) -> Arc<Ledger> {
        Arc::new(Ledger {
            backend,
            pending: Mutex::new(HashSet::new()),
        })
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Why no write can be taken now (readiness).
    pub fn not_ready(&self) -> Option<String> {
        self.backend.not_ready()
    }

    /// Whether account histories are kept, or why not.
    pub fn history_kept(&self) -> Result<(), ApiError> {
        match self.backend.history_stores() {
            0 => Err(ApiError::HistoryUnavailable(
                "the history is off (--history-url off)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// How many history stores there are: one on a single node, one per
    /// shard in a cluster. Stores are numbered from 0.
    pub fn history_stores(&self) -> u32 {
        self.backend.history_stores()
    }

    /// The history store that keeps `account`'s entries.
    pub fn history_store_of(&self, account: &AccountId) -> u32 {
        self.backend.history_store_of(account)
    }

    /// Runs a query on the history store that holds `account`, once it
    /// holds every write acknowledged before the call.
    pub async fn read_history<T: Send + 'static>(
        &self,
        account: &AccountId,
        query: impl FnOnce(&mut dyn Reader) -> Result<T, HistoryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.read_store(self.history_store_of(account), query).await
    }

    /// Runs a query on history store `store`, once it holds every write
    /// acknowledged before the call.
    pub async fn read_store<T: Send + 'static>(
        &self,
        store: u32,
        query: impl FnOnce(&mut dyn Reader) -> Result<T, HistoryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.history_kept()?;
        assert!(store < self.history_stores(), "history store {store} does not exist");
        self.backend.sync_history(vec![store]).await?;
        read_pooled(&self.backend.history_pool(store), query).await
    }

    /// Runs a query on every history store, once each holds every write
    /// acknowledged before the call: one answer per store, in store order.
    pub async fn read_every_store<T: Send + 'static>(
        &self,
        query: impl Fn(&mut dyn Reader) -> Result<T, HistoryError> + Clone + Send + 'static,
    ) -> Result<Vec<T>, ApiError> {
        self.history_kept()?;
        let stores: Vec<u32> = (0..self.history_stores()).collect();
        self.backend.sync_history(stores.clone()).await?;
        let mut answers = Vec::with_capacity(stores.len());
        for store in stores {
            answers.push(read_pooled(&self.backend.history_pool(store), query.clone()).await?);
        }
        Ok(answers)
    }

    /// The stored transactions among `ids`, by the stores to look in (the
    /// caller has synced them).
    async fn stored(&self, ids_by_store: Vec<(u32, Vec<String>)>) -> Result<Vec<TransactionRow>, ApiError> {
        let mut rows = Vec::new();
        for (store, ids) in ids_by_store {
            let pool = self.backend.history_pool(store);
            rows.extend(read_pooled(&pool, move |reader| stored_among(reader, &ids)).await?);
        }
        Ok(rows)
    }

    /// True once the engine takes no more commands (shutdown): the
    /// background writers (jobs, Kafka) stop then.
    pub fn stopped(&self) -> bool {
        self.backend.stopped()
    }

    /// Why `transaction` can never be applied here, if it cannot: in a
    /// cluster, accounts in more than one shard.
    pub fn unroutable(&self, transaction: &Transaction) -> Option<String> {
        self.backend.unroutable(transaction)
    }

    /// Applies transactions and answers once durable, one result each.
    /// Linked chains (`Transaction::is_linked_to_next`) stay whole: if the
    /// history store knows some of a batch's ids, a batch with chains is
    /// not applied at all (as the engine does when its window knows them).
    pub async fn submit(&self, transactions: Vec<Transaction>, detail: Detail) -> Result<Vec<Submitted>, ApiError> {
        let known = self.known(&transactions).await?;
        if known.iter().all(Option::is_none) {
            return self.backend.submit(transactions, detail).await;
        }
        if transactions.iter().any(Transaction::is_linked_to_next) {
            return Ok(known
                .into_iter()
                .zip(transactions)
                .map(|(stored, transaction)| stored.unwrap_or_else(|| not_applied(&transaction)))
                .collect());
        }
        let fresh: Vec<Transaction> = transactions
            .into_iter()
            .zip(&known)
            .filter(|(_, stored)| stored.is_none())
            .map(|(transaction, _)| transaction)
            .collect();
        let mut applied = match fresh.is_empty() {
            true => Vec::new(),
            false => self.backend.submit(fresh, detail).await?,
        }
        .into_iter();
        Ok(known
            .into_iter()
            .map(|stored| stored.unwrap_or_else(|| applied.next().expect("one result per fresh transaction")))
            .collect())
    }

    /// Records ids accepted elsewhere (the Kafka commands topic) as pending.
    pub fn mark_pending(&self, ids: &[TransactionId]) {
        let mut pending = self.pending.lock().expect("pending lock");
        for id in ids {
            if pending.len() >= PENDING_MAX {
                break;
            }
            pending.insert(id.clone());
        }
    }

    /// The ids are applied (or failed): no longer pending.
    pub fn settle(&self, ids: &[TransactionId]) {
        let mut pending = self.pending.lock().expect("pending lock");
        if pending.is_empty() {
            return;
        }
        for id in ids {
            pending.remove(id);
        }
    }

    /// What is known of `id`: pending, in the window, or stored.
    pub async fn lookup(&self, id: &TransactionId) -> Result<Option<Lookup>, ApiError> {
        if self.pending.lock().expect("pending lock").contains(id) {
            return Ok(Some(Lookup::Pending(Vec::new())));
        }
        match self.read(Query::Transaction(id.clone())).await? {
            Answer::Transaction(Some(record)) => return Ok(Some(Lookup::Recent(record))),
            Answer::SagaInFlight(steps) => return Ok(Some(Lookup::Pending(steps))),
            _ => {}
        }
        // Applied between the two checks: the window has it now.
        if self.pending.lock().expect("pending lock").contains(id) {
            return Ok(Some(Lookup::Pending(Vec::new())));
        }
        // An id names no shard: every store is asked.
        let stores: Vec<u32> = (0..self.history_stores()).collect();
        if !stores.is_empty() {
            self.backend.sync_history(stores.clone()).await?;
        }
        let everywhere = stores.into_iter().map(|store| (store, vec![id.to_string()])).collect();
        let row = self.stored(everywhere).await?.pop();
        row.map(|row| {
            let record = stored_record(&row)?;
            Ok(Lookup::Stored(row, record))
        })
        .transpose()
    }

    /// A read answered once everything it saw is durable.
    pub async fn read(&self, query: Query) -> Result<Answer, ApiError> {
        self.backend.read(query).await
    }

    pub async fn account(&self, id: AccountId) -> Result<AccountView, ApiError> {
        match self.read(Query::Account(id.clone())).await? {
            Answer::Account(Some(view)) => Ok(view),
            _ => Err(ApiError::NotFound {
                what: "account",
                id: id.to_string(),
            }),
        }
    }

    pub async fn hold(&self, id: HoldId) -> Result<Option<HoldView>, ApiError> {
        let Answer::Hold(view) = self.read(Query::Hold(id)).await? else {
            unreachable!("a hold query answers with a hold")
        };
        Ok(view)
    }

    /// The stored outcomes of transactions the window may have forgotten,
    /// in their order; `None` for the others. Also holds a single node's
    /// writes to the history's pace (`Backend::forgetting`).
    async fn known(&self, transactions: &[Transaction]) -> Result<Vec<Option<Submitted>>, ApiError> {
        let rows = self.stored(self.backend.forgetting(transactions).await?).await?;
        if rows.is_empty() {
            return Ok(vec![None; transactions.len()]);
        }
        let by_id: HashMap<&str, &TransactionRow> = rows.iter().map(|row| (row.id.as_str(), row)).collect();
        transactions
            .iter()
            .map(|transaction| {
                by_id
                    .get(transaction.id().as_str())
                    .map(|row| stored_outcome(transaction, row))
                    .transpose()
            })
            .collect()
    }
}

/// A transaction of a linked chain that is not applied.
fn not_applied(transaction: &Transaction) -> Submitted {
    let rejection = Rejection {
        code: RejectionCode::LinkedEventFailed,
        op_index: 0,
    };
    Submitted {
        id: transaction.id().clone(),
        kind: Kind::NotApplied,
        record: Record {
            sequence: 0,
            timestamp_ms: 0,
            verdict: Verdict::Rejected(rejection),
        },
        effects: Vec::new(),
    }
}

/// A stored transaction as the answer to a retry of `transaction`.
fn stored_outcome(transaction: &Transaction, row: &TransactionRow) -> Result<Submitted, ApiError> {
    Ok(Submitted {
        id: transaction.id().clone(),
        kind: match row.same_payload(transaction) {
            true => Kind::Replayed,
            false => Kind::IdReused,
        },
        record: stored_record(row)?,
        effects: Vec::new(),
    })
}

fn stored_record(row: &TransactionRow) -> Result<Record, ApiError> {
    row.record()
        .map_err(|error| ApiError::HistoryUnavailable(error.to_string()))
}
