//! Bulk balance jobs: set the balances of many accounts as one tracked job.
//!
//! A job's definition is written durably (temp file, fsync, rename) before
//! the 202 answer, so an accepted job survives a crash. A runner feeds it
//! to the engine in chunks — each chunk one engine batch, so other traffic
//! interleaves — and appends each chunk's results to a results file. Each
//! item is a transaction with the id `job:{job}:{index}`: after a restart
//! the runner resumes after the last recorded chunk, and an item that was
//! applied but not recorded is recognised by its id (replayed, never
//! applied again).

use crate::clock::now_ms;
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::sequencer::{Answer, Detail, Kind, Query, Submitted, UNITS_QUERY_MAX};
use coffer_core::{AccountId, Balance, Operation, Transaction, TransactionId, Unit, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Items in one job at most (the request body limit usually binds first).
pub const JOB_ITEMS_MAX: usize = 200_000;
/// Items per chunk: one engine batch, one query of units.
pub const CHUNK_ITEMS: usize = 4_096;
/// Finished jobs kept on disk and queryable; older ones are deleted.
pub const FINISHED_JOBS_KEPT: usize = 100;
/// Jobs running at once; more are refused with 503.
pub const RUNNING_JOBS_MAX: usize = 8;
pub const JOB_ID_BYTES_MAX: usize = 64;
const RETRY_PAUSE: Duration = Duration::from_millis(200);

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
}

impl Job {
    pub fn totals(&self) -> (usize, usize, usize) {
        let results = self.results.lock().expect("results lock");
        let completed = results.iter().filter(|result| matches!(result, Some(Ok(())))).count();
        let failed = results.iter().filter(|result| matches!(result, Some(Err(_)))).count();
        (completed, failed, results.len() - completed - failed)
    }
}

/// One chunk's results, a line of `{id}.results`.
#[derive(Serialize, Deserialize)]
struct ChunkLine {
    start: usize,
    results: Vec<Option<String>>,
}

pub struct Jobs {
    directory: PathBuf,
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
}

impl Jobs {
    /// Loads every job in `directory`; unfinished ones are returned, to be
    /// resumed (`start`) once the server runs.
    pub fn open(directory: PathBuf, ledger: Arc<Ledger>) -> anyhow::Result<(Arc<Jobs>, Vec<Arc<Job>>)> {
        std::fs::create_dir_all(&directory)?;
        let mut jobs = HashMap::new();
        let mut unfinished = Vec::new();
        for entry in std::fs::read_dir(&directory)? {
            let path = entry?.path();
            if path.extension().is_some_and(|extension| extension == "tmp") {
                std::fs::remove_file(&path)?;
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "job") {
                continue;
            }
            let spec: JobSpec = serde_json::from_slice(&std::fs::read(&path)?)?;
            let results = read_results(&path.with_extension("results"), spec.items.len())?;
            let job = Arc::new(Job {
                finished_at_ms: Mutex::new(None),
                results: Mutex::new(results),
                spec,
            });
            if job.totals().2 > 0 {
                unfinished.push(Arc::clone(&job));
            } else {
                *job.finished_at_ms.lock().expect("lock") = Some(job.spec.created_at_ms);
            }
            jobs.insert(job.spec.id.clone(), job);
        }
        if !unfinished.is_empty() {
            tracing::info!(jobs = unfinished.len(), "resuming unfinished balance jobs");
        }
        let jobs = Arc::new(Jobs {
            directory,
            jobs: Mutex::new(jobs),
            ledger,
        });
        Ok((jobs, unfinished))
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().expect("jobs lock").get(id).cloned()
    }

    /// Stores a new job durably. The same definition again answers the
    /// existing job (`false`: not new).
    pub fn create(&self, spec: JobSpec) -> Result<(Arc<Job>, bool), JobError> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if let Some(existing) = jobs.get(&spec.id) {
            let same = existing.spec.unit == spec.unit
                && existing.spec.create_missing == spec.create_missing
                && existing.spec.items == spec.items;
            return match same {
                true => Ok((Arc::clone(existing), false)),
                false => Err(JobError::Conflict(spec.id)),
            };
        }
        let running = jobs
            .values()
            .filter(|job| job.finished_at_ms.lock().expect("lock").is_none())
            .count();
        if running >= RUNNING_JOBS_MAX {
            return Err(JobError::Busy);
        }
        self.forget_old(&mut jobs)?;
        write_durably(
            &self.directory.join(format!("{}.job", spec.id)),
            &serde_json::to_vec(&spec).expect("serializes"),
        )?;
        let job = Arc::new(Job {
            results: Mutex::new(vec![None; spec.items.len()]),
            finished_at_ms: Mutex::new(None),
            spec,
        });
        jobs.insert(job.spec.id.clone(), Arc::clone(&job));
        Ok((job, true))
    }

    /// Deletes the oldest finished jobs beyond `FINISHED_JOBS_KEPT`.
    fn forget_old(&self, jobs: &mut HashMap<String, Arc<Job>>) -> std::io::Result<()> {
        let mut finished: Vec<(u64, String)> = jobs
            .values()
            .filter_map(|job| {
                job.finished_at_ms
                    .lock()
                    .expect("lock")
                    .map(|at| (at, job.spec.id.clone()))
            })
            .collect();
        if finished.len() < FINISHED_JOBS_KEPT {
            return Ok(());
        }
        finished.sort();
        for (_, id) in finished.iter().take(finished.len() + 1 - FINISHED_JOBS_KEPT) {
            jobs.remove(id);
            for extension in ["job", "results"] {
                let path = self.directory.join(format!("{id}.{extension}"));
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
            }
        }
        Ok(())
    }

    fn results_path(&self, id: &str) -> PathBuf {
        self.directory.join(format!("{id}.results"))
    }

    /// Runs a job to its end in the background.
    pub fn start(self: &Arc<Self>, job: Arc<Job>) {
        tokio::spawn(Arc::clone(self).run(job));
    }

    /// Runs a job until it ends or the server stops (a restart resumes it).
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
        }
        *job.finished_at_ms.lock().expect("lock") = Some(now_ms());
        let (completed, failed, _) = job.totals();
        tracing::info!(job = %job.spec.id, completed, failed, millis = started.elapsed().as_millis() as u64, "balance job finished");
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(path.parent().expect("a job file has a directory"))?.sync_all()
}

/// The recorded results; a torn last line (a crash mid-append) is ignored:
/// its items are simply run again, which their ids make harmless.
fn read_results(path: &Path, items: usize) -> std::io::Result<Vec<ItemResult>> {
    let mut results = vec![None; items];
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(results);
    };
    for line in std::io::BufReader::new(file).lines() {
        let Ok(chunk) = serde_json::from_str::<ChunkLine>(&line?) else {
            break;
        };
        for (offset, result) in chunk.results.into_iter().enumerate() {
            if let Some(slot) = results.get_mut(chunk.start + offset) {
                *slot = Some(match result {
                    None => Ok(()),
                    Some(code) => Err(code),
                });
            }
        }
    }
    Ok(results)
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
        self.record(job, range.start, results)
    }

    fn record(&self, job: &Job, start: usize, results: Vec<Option<String>>) -> Result<(), ApiError> {
        let line = serde_json::to_string(&ChunkLine {
            start,
            results: results.clone(),
        })
        .expect("serializes");
        let path = self.results_path(&job.spec.id);
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
        // Not fatal: the results are in memory, and a restart re-derives them.
        if let Err(error) = appended {
            tracing::warn!(path = %path.display(), %error, "could not record balance job results");
        }
        let mut stored = job.results.lock().expect("results lock");
        for (offset, result) in results.into_iter().enumerate() {
            stored[start + offset] = Some(match result {
                None => Ok(()),
                Some(code) => Err(code),
            });
        }
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
