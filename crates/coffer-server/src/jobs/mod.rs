//! Bulk balance jobs: set the balances of many accounts as one tracked job.
//!
//! A job's definition is stored durably before the 202 answer, so an
//! accepted job survives a crash (`store`: files on a single node,
//! PostgreSQL in a cluster). A runner feeds it to the ledger in chunks —
//! each chunk one batch, so other traffic interleaves — and records each
//! chunk's results. Each item is a transaction with the id
//! `job:{job}:{index}`: a runner that resumes after the last recorded
//! chunk (after a restart, or on another node of a cluster) recognises an
//! item that was applied but not recorded by its id (replayed, never
//! applied again).

mod files;
mod postgres;
mod store;

pub use files::FileStore;
pub use postgres::PostgresJobStore;
pub use store::{JobStore, StoredJob};

use crate::clock::now_ms;
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::sequencer::{Answer, Detail, Kind, Query, Submitted, UNITS_QUERY_MAX};
use coffer_core::{AccountId, Balance, Operation, Transaction, TransactionId, Unit, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Items in one job at most (the request body limit usually binds first).
pub const JOB_ITEMS_MAX: usize = 200_000;
/// Items per chunk: one engine batch, one query of units.
pub const CHUNK_ITEMS: usize = 4_096;
/// Finished jobs kept and queryable; older ones are deleted.
pub const FINISHED_JOBS_KEPT: usize = 100;
/// Jobs running at once; more are refused with 503.
pub const RUNNING_JOBS_MAX: usize = 8;
pub const JOB_ID_BYTES_MAX: usize = 64;
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// In a cluster: how long a runner's claim on a job holds without renewal
/// (it renews after every chunk), and how often every node looks for jobs
/// whose runner died.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
const CLAIM_INTERVAL: Duration = Duration::from_secs(2);
const _: () = assert!(CLAIM_TTL.as_secs() >= 2 * crate::cluster::REPLY_WAIT.as_secs());

/// One item as requested: an account and its new available balance, or
/// why it could not even be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub account: String,
    /// Decimal text; `None` when the amount was invalid.
    pub amount: Option<String>,
    /// Set when the item was invalid as given.
    pub invalid: Option<String>,
}

/// What is written to `{id}.job` before the job is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub id: String,
    pub unit: String,
    pub create_missing: bool,
    pub created_at_ms: u64,
    pub items: Vec<Item>,
}

/// An item's outcome: `None` while pending.
pub type ItemResult = Option<Result<(), String>>;

pub struct Job {
    pub spec: JobSpec,
    pub results: Mutex<Vec<ItemResult>>,
    pub finished_at_ms: Mutex<Option<u64>>,
    /// This node runs it (its results in memory are the newest).
    running_here: AtomicBool,
}

impl Job {
    fn of(stored: StoredJob, running_here: bool) -> Job {
        Job {
            spec: stored.spec,
            results: Mutex::new(stored.results),
            finished_at_ms: Mutex::new(stored.finished_at_ms),
            running_here: AtomicBool::new(running_here),
        }
    }

    pub fn totals(&self) -> (usize, usize, usize) {
        let results = self.results.lock().expect("results lock");
        let completed = results.iter().filter(|result| matches!(result, Some(Ok(())))).count();
        let failed = results.iter().filter(|result| matches!(result, Some(Err(_)))).count();
        (completed, failed, results.len() - completed - failed)
    }
}

pub struct Jobs {
    store: Arc<dyn JobStore>,
    /// This node's name as a runner (its cluster node id).
    runner: String,
    /// The jobs this node runs, or has run, or (one node) knows.
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// Where the items are applied.
    ledger: Arc<Ledger>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {0} exists with a different definition")]
    Conflict(String),
    #[error("{RUNNING_JOBS_MAX} jobs are running; retry when one finishes")]
    Busy,
    #[error("job storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("job storage: {0}")]
    Database(String),
}

fn same_definition(left: &JobSpec, right: &JobSpec) -> bool {
    left.unit == right.unit && left.create_missing == right.create_missing && left.items == right.items
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or_else(|error| Err(JobError::Database(format!("a job storage task failed: {error}"))))
}

impl Jobs {
    /// Loads the jobs the store keeps for this node; unfinished ones are
    /// returned, to be resumed (`start`) once the server runs.
    pub fn open(
        store: Arc<dyn JobStore>,
        runner: String,
        ledger: Arc<Ledger>,
    ) -> Result<(Arc<Jobs>, Vec<Arc<Job>>), JobError> {
        let mut jobs = HashMap::new();
        let mut unfinished = Vec::new();
        for stored in store.load()? {
            let job = Arc::new(Job::of(stored, true));
            if job.totals().2 > 0 {
                unfinished.push(Arc::clone(&job));
            }
            jobs.insert(job.spec.id.clone(), job);
        }
        if !unfinished.is_empty() {
            tracing::info!(jobs = unfinished.len(), "resuming unfinished balance jobs");
        }
        let jobs = Arc::new(Jobs {
            store,
            runner,
            jobs: Mutex::new(jobs),
            ledger,
        });
        Ok((jobs, unfinished))
    }

    /// A job as it is now: from memory when this node runs it (or is the
    /// only node), else from the shared store.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Job>>, JobError> {
        let known = self.jobs.lock().expect("jobs lock").get(id).cloned();
        if let Some(job) = known {
            if !self.store.shared() || job.running_here.load(Ordering::Acquire) {
                return Ok(Some(job));
            }
        }
        if !self.store.shared() {
            return Ok(None);
        }
        let (store, id) = (Arc::clone(&self.store), id.to_owned());
        let stored = blocking(move || store.find(&id)).await?;
        Ok(stored.map(|stored| Arc::new(Job::of(stored, false))))
    }

    /// Stores a new job durably. The same definition again answers the
    /// existing job (`false`: not new). Blocking.
    pub fn create(&self, spec: JobSpec) -> Result<(Arc<Job>, bool), JobError> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if let Some(existing) = jobs.get(&spec.id) {
            return match same_definition(&existing.spec, &spec) {
                true => Ok((Arc::clone(existing), false)),
                false => Err(JobError::Conflict(spec.id)),
            };
        }
        if let Some(stored) = self.store.create(&spec, &self.runner, RUNNING_JOBS_MAX)? {
            if !same_definition(&stored, &spec) {
                return Err(JobError::Conflict(spec.id));
            }
            let job = self
                .store
                .find(&spec.id)?
                .ok_or_else(|| JobError::Database(format!("job {} was deleted while it was read", spec.id)))?;
            return Ok((Arc::new(Job::of(job, false)), false));
        }
        let stored = StoredJob {
            results: vec![None; spec.items.len()],
            finished_at_ms: None,
            spec,
        };
        let job = Arc::new(Job::of(stored, true));
        jobs.insert(job.spec.id.clone(), Arc::clone(&job));
        Ok((job, true))
    }

    /// Runs a job to its end in the background.
    pub fn start(self: &Arc<Self>, job: Arc<Job>) {
        tokio::spawn(Arc::clone(self).run(job));
    }

    /// In a cluster: takes over, now and then, a job whose runner died.
    pub fn claim_abandoned(self: &Arc<Self>) {
        if !self.store.shared() {
            return;
        }
        let jobs = Arc::clone(self);
        tokio::spawn(async move {
            while !jobs.ledger.stopped() {
                tokio::time::sleep(CLAIM_INTERVAL).await;
                let (store, runner) = (Arc::clone(&jobs.store), jobs.runner.clone());
                match blocking(move || store.claim(&runner, CLAIM_TTL)).await {
                    Ok(Some(stored)) => {
                        tracing::info!(job = %stored.spec.id, "taking over a balance job whose runner stopped");
                        let job = Arc::new(Job::of(stored, true));
                        jobs.jobs
                            .lock()
                            .expect("jobs lock")
                            .insert(job.spec.id.clone(), Arc::clone(&job));
                        jobs.start(job);
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "looking for abandoned balance jobs failed"),
                }
            }
        });
    }

    /// Runs a job until it ends, the server stops (a restart resumes it),
    /// or another runner took it over.
    async fn run(self: Arc<Self>, job: Arc<Job>) {
        let started = std::time::Instant::now();
        loop {
            if self.ledger.stopped() {
                return;
            }
            let next = {
                let results = job.results.lock().expect("results lock");
                results.iter().position(Option::is_none)
            };
            let Some(start) = next else { break };
            let end = (start + CHUNK_ITEMS).min(job.spec.items.len());
            if let Err(error) = self.run_chunk(&job, start..end).await {
                // Overload or a journal hiccup: the chunk is retried; its
                // items' ids make a retry harmless.
                tracing::warn!(job = %job.spec.id, %error, "balance job chunk failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            if !self.keep_running(&job).await {
                return;
            }
        }
        let finished_at_ms = now_ms();
        *job.finished_at_ms.lock().expect("lock") = Some(finished_at_ms);
        let (store, id) = (Arc::clone(&self.store), job.spec.id.clone());
        match blocking(move || store.finish(&id, finished_at_ms)).await {
            Ok(forgotten) => {
                let mut jobs = self.jobs.lock().expect("jobs lock");
                for id in forgotten {
                    jobs.remove(&id);
                }
            }
            Err(error) => tracing::warn!(job = %job.spec.id, %error, "could not mark a balance job finished"),
        }
        let (completed, failed, _) = job.totals();
        tracing::info!(job = %job.spec.id, completed, failed, millis = started.elapsed().as_millis() as u64, "balance job finished");
    }

    /// Renews this runner's claim (a cluster); false when another runner
    /// has taken the job over: this one stops, and forgets it.
    async fn keep_running(&self, job: &Job) -> bool {
        if !self.store.shared() {
            return true;
        }
        let (store, id, runner) = (Arc::clone(&self.store), job.spec.id.clone(), self.runner.clone());
        match blocking(move || store.renew(&id, &runner, CLAIM_TTL)).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(job = %job.spec.id, "another node runs this balance job now");
                job.running_here.store(false, Ordering::Release);
                self.jobs.lock().expect("jobs lock").remove(&job.spec.id);
                false
            }
            // The claim may lapse; whoever runs the job then, its items
            // apply once.
            Err(error) => {
                tracing::warn!(job = %job.spec.id, %error, "could not renew a balance job's claim");
                true
            }
        }
    }
}

impl Jobs {
    async fn run_chunk(&self, job: &Job, range: std::ops::Range<usize>) -> Result<(), ApiError> {
        let spec = &job.spec;
        let unit = Unit::parse(&spec.unit).expect("validated when the job was created");
        let items = &spec.items[range.clone()];
        // Item positions that are well-formed, with their parsed values.
        let parsed: Vec<(usize, AccountId, Balance)> = items
            .iter()
            .enumerate()
            .filter_map(|(offset, item)| {
                let account = AccountId::parse(&item.account).ok()?;
                let amount = Balance::parse(item.amount.as_deref()?).ok()?;
                item.invalid.is_none().then_some((offset, account, amount))
            })
            .collect();
        assert!(parsed.len() <= UNITS_QUERY_MAX);
        let ids = parsed.iter().map(|(_, account, _)| account.clone()).collect();
        let Answer::Units(units) = self.ledger.read(Query::Units(ids)).await? else {
            unreachable!("a units query answers with units")
        };
        let mut results: Vec<Option<String>> = items
            .iter()
            .map(|item| Some(item.invalid.clone().unwrap_or_else(|| "invalid".into())))
            .collect();
        let mut transactions = Vec::new();
        let mut positions = Vec::new();
        for ((offset, account, amount), existing) in parsed.into_iter().zip(units) {
            let open = match existing {
                Some(existing) if existing != unit => {
                    results[offset] = Some("unit_mismatch".into());
                    continue;
                }
                Some(_) => None,
                None if spec.create_missing => Some(Operation::open(account.clone(), unit.clone())),
                None => {
                    results[offset] = Some("account_not_found".into());
                    continue;
                }
            };
            let ops: Vec<Operation> = open
                .into_iter()
                .chain([Operation::SetBalance {
                    account,
                    available: amount,
                }])
                .collect();
            let id = TransactionId::parse(&format!("job:{}:{}", spec.id, range.start + offset)).expect("bounded id");
            transactions.push(Transaction::new(id, ops, None).expect("valid ops"));
            positions.push(offset);
        }
        if !transactions.is_empty() {
            let submitted = self.ledger.submit(transactions, Detail::WithoutEffects).await?;
            for (offset, outcome) in positions.into_iter().zip(submitted) {
                results[offset] = item_result(&outcome);
            }
        }
        self.record(job, range.start, results).await
    }

    async fn record(&self, job: &Job, start: usize, results: Vec<Option<String>>) -> Result<(), ApiError> {
        let (store, id, chunk) = (Arc::clone(&self.store), job.spec.id.clone(), results.clone());
        // Not fatal: the results are in memory, and a later run re-derives
        // them from the items' ids.
        if let Err(error) = blocking(move || store.record(&id, start, &chunk)).await {
            tracing::warn!(job = %job.spec.id, %error, "could not record balance job results");
        }
        let mut stored = job.results.lock().expect("results lock");
        files::apply_chunk(&mut stored, start, results);
        Ok(())
    }
}

/// An item's outcome. An id seen before with other ops means an earlier
/// run applied this item (it chose `open` while the account was missing):
/// its original outcome is the item's.
fn item_result(submitted: &Submitted) -> Option<String> {
    debug_assert!(matches!(submitted.kind, Kind::New | Kind::Replayed | Kind::IdReused));
    match submitted.record.verdict {
        Verdict::Committed => None,
        Verdict::Rejected(rejection) => Some(rejection.code.as_str().to_owned()),
    }
}
