//! Where balance jobs are kept: one trait, two backends, chosen once at
//! startup (`Jobs::open`): files in a node's data directory (a single
//! node), or PostgreSQL (a cluster, whose nodes share the jobs: any node
//! answers for a job, and finishes one whose runner died).
//!
//! Calls block: `Jobs` makes them on blocking threads.

use super::{ItemResult, JobError, JobSpec};
use std::time::Duration;

/// A job as stored, with the results recorded so far.
pub struct StoredJob {
    pub spec: JobSpec,
    pub results: Vec<ItemResult>,
    pub finished_at_ms: Option<u64>,
}

pub trait JobStore: Send + Sync {
    /// Whether other nodes share the store: then a job's results are read
    /// back from it, and unfinished jobs are claimed rather than resumed.
    fn shared(&self) -> bool;

    /// The jobs this node keeps at startup (unfinished ones are resumed).
    fn load(&self) -> Result<Vec<StoredJob>, JobError>;

    /// One job as stored now.
    fn find(&self, id: &str) -> Result<Option<StoredJob>, JobError>;

    /// Stores a new job durably, claimed by `runner`. `Some(stored)` when
    /// the id exists already (nothing is written then); `Busy` when
    /// `running_max` jobs are unfinished.
    fn create(&self, spec: &JobSpec, runner: &str, running_max: usize) -> Result<Option<JobSpec>, JobError>;

    /// Records the results of the items from `start` on.
    fn record(&self, id: &str, start: usize, results: &[Option<String>]) -> Result<(), JobError>;

    /// Marks a job finished, and deletes the oldest finished jobs beyond
    /// `FINISHED_JOBS_KEPT`: their ids.
    fn finish(&self, id: &str, at_ms: u64) -> Result<Vec<String>, JobError>;

    /// Takes an unfinished job whose runner stopped renewing its claim.
    fn claim(&self, runner: &str, ttl: Duration) -> Result<Option<StoredJob>, JobError>;

    /// Keeps `runner`'s claim on a job; false when another runner took it.
    fn renew(&self, id: &str, runner: &str, ttl: Duration) -> Result<bool, JobError>;
}
