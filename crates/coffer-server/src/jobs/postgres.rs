//! A cluster's jobs, in PostgreSQL (the cluster's schema): `jobs` (the
//! definition, who runs it and until when its claim holds) and
//! `job_results` (one row of results per chunk). Any node answers for any
//! job; a job whose runner stops renewing its claim (the node died) is
//! claimed by another node, which resumes after the recorded chunks. Two
//! runners of one job are harmless: an item is a transaction with a
//! derived id, applied once, and its recorded result is its outcome.

use super::files::apply_chunk;
use super::store::{JobStore, StoredJob};
use super::{JobError, JobSpec, FINISHED_JOBS_KEPT};
use coffer_history::pg_connect::{self, PgConnectError};
use postgres::Client;
use std::sync::Mutex;
use std::time::Duration;

/// Any key: it serializes the creation of tables and of jobs (the bound
/// on running jobs holds across nodes).
const JOBS_LOCK_KEY: i64 = 0x636f_6666_6a6f;

pub struct PostgresJobStore {
    url: String,
    schema: String,
    client: Mutex<Option<Client>>,
}

impl From<postgres::Error> for JobError {
    fn from(error: postgres::Error) -> Self {
        JobError::Database(error.to_string())
    }
}

impl From<PgConnectError> for JobError {
    fn from(error: PgConnectError) -> Self {
        JobError::Database(error.to_string())
    }
}

impl PostgresJobStore {
    /// Connects and creates the tables where missing. `schema` is the
    /// cluster's, validated with the configuration.
    pub fn open(url: &str, schema: &str) -> Result<PostgresJobStore, JobError> {
        let store = PostgresJobStore {
            url: url.to_owned(),
            schema: schema.to_owned(),
            client: Mutex::new(None),
        };
        store.with(|client, schema| {
            let mut transaction = client.transaction()?;
            transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&JOBS_LOCK_KEY])?;
            transaction.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.jobs (
                     id TEXT PRIMARY KEY,
                     spec TEXT NOT NULL,
                     created_at_ms BIGINT NOT NULL,
                     finished_at_ms BIGINT,
                     runner TEXT NOT NULL,
                     claimed_until TIMESTAMPTZ NOT NULL);
                 CREATE TABLE IF NOT EXISTS {schema}.job_results (
                     job_id TEXT NOT NULL REFERENCES {schema}.jobs (id) ON DELETE CASCADE,
                     start INTEGER NOT NULL,
                     results TEXT NOT NULL,
                     PRIMARY KEY (job_id, start));"
            ))?;
            transaction.commit()?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `work` on the connection, opening a new one if the last failed.
    fn with<T>(&self, work: impl FnOnce(&mut Client, &str) -> Result<T, JobError>) -> Result<T, JobError> {
        let mut slot = self.client.lock().expect("client lock");
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(pg_connect::connect(&self.url)?);
        }
        let client = slot.as_mut().expect("connected above");
        let result = work(client, &self.schema);
        if result.is_err() && client.is_closed() {
            *slot = None;
        }
        result
    }
}

fn spec_of(text: &str) -> Result<JobSpec, JobError> {
    serde_json::from_str(text).map_err(|error| JobError::Database(format!("a stored job does not read: {error}")))
}

fn ttl_ms(ttl: Duration) -> f64 {
    ttl.as_millis() as f64
}

impl JobStore for PostgresJobStore {
    fn shared(&self) -> bool {
        true
    }

    /// Nothing: unfinished jobs are claimed (`claim`), whoever created them.
    fn load(&self) -> Result<Vec<StoredJob>, JobError> {
        Ok(Vec::new())
    }

    fn find(&self, id: &str) -> Result<Option<StoredJob>, JobError> {
        self.with(|client, schema| {
            let Some(row) = client.query_opt(
                &format!("SELECT spec, finished_at_ms FROM {schema}.jobs WHERE id = $1"),
                &[&id],
            )?
            else {
                return Ok(None);
            };
            let spec = spec_of(row.get(0))?;
            let mut results = vec![None; spec.items.len()];
            for chunk in client.query(
                &format!("SELECT start, results FROM {schema}.job_results WHERE job_id = $1"),
                &[&id],
            )? {
                let chunk_results: Vec<Option<String>> = serde_json::from_str(chunk.get(1))
                    .map_err(|error| JobError::Database(format!("stored results do not read: {error}")))?;
                apply_chunk(&mut results, chunk.get::<_, i32>(0) as usize, chunk_results);
            }
            Ok(Some(StoredJob {
                spec,
                results,
                finished_at_ms: row.get::<_, Option<i64>>(1).map(|at| at as u64),
            }))
        })
    }

    fn create(&self, spec: &JobSpec, runner: &str, running_max: usize) -> Result<Option<JobSpec>, JobError> {
        self.with(|client, schema| {
            let mut transaction = client.transaction()?;
            transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&JOBS_LOCK_KEY])?;
            if let Some(row) =
                transaction.query_opt(&format!("SELECT spec FROM {schema}.jobs WHERE id = $1"), &[&spec.id])?
            {
                return spec_of(row.get(0)).map(Some);
            }
            let running: i64 = transaction
                .query_one(
                    &format!("SELECT count(*) FROM {schema}.jobs WHERE finished_at_ms IS NULL"),
                    &[],
                )?
                .get(0);
            if running as usize >= running_max {
                return Err(JobError::Busy);
            }
            transaction.execute(
                &format!(
                    "INSERT INTO {schema}.jobs (id, spec, created_at_ms, runner, claimed_until)
                     VALUES ($1, $2, $3, $4, now() + $5 * interval '1 millisecond')"
                ),
                &[
                    &spec.id,
                    &serde_json::to_string(spec).expect("serializes"),
                    &(spec.created_at_ms as i64),
                    &runner,
                    &ttl_ms(super::CLAIM_TTL),
                ],
            )?;
            transaction.commit()?;
            Ok(None)
        })
    }

    fn record(&self, id: &str, start: usize, results: &[Option<String>]) -> Result<(), JobError> {
        self.with(|client, schema| {
            client.execute(
                &format!(
                    "INSERT INTO {schema}.job_results (job_id, start, results) VALUES ($1, $2, $3)
                     ON CONFLICT (job_id, start) DO UPDATE SET results = EXCLUDED.results"
                ),
                &[
                    &id,
                    &(start as i32),
                    &serde_json::to_string(results).expect("serializes"),
                ],
            )?;
            Ok(())
        })
    }

    fn finish(&self, id: &str, at_ms: u64) -> Result<Vec<String>, JobError> {
        self.with(|client, schema| {
            client.execute(
                &format!("UPDATE {schema}.jobs SET finished_at_ms = $2 WHERE id = $1 AND finished_at_ms IS NULL"),
                &[&id, &(at_ms as i64)],
            )?;
            let forgotten = client.query(
                &format!(
                    "DELETE FROM {schema}.jobs WHERE id IN (
                         SELECT id FROM {schema}.jobs WHERE finished_at_ms IS NOT NULL
                         ORDER BY finished_at_ms DESC, id OFFSET $1)
                     RETURNING id"
                ),
                &[&(FINISHED_JOBS_KEPT as i64)],
            )?;
            Ok(forgotten.iter().map(|row| row.get(0)).collect())
        })
    }

    fn claim(&self, runner: &str, ttl: Duration) -> Result<Option<StoredJob>, JobError> {
        let claimed = self.with(|client, schema| {
            Ok(client.query_opt(
                &format!(
                    "UPDATE {schema}.jobs SET runner = $1, claimed_until = now() + $2 * interval '1 millisecond'
                     WHERE id = (SELECT id FROM {schema}.jobs
                                 WHERE finished_at_ms IS NULL AND claimed_until < now()
                                 ORDER BY created_at_ms LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING id"
                ),
                &[&runner, &ttl_ms(ttl)],
            )?)
        })?;
        match claimed {
            Some(row) => self.find(row.get(0)),
            None => Ok(None),
        }
    }

    fn renew(&self, id: &str, runner: &str, ttl: Duration) -> Result<bool, JobError> {
        self.with(|client, schema| {
            let renewed = client.execute(
                &format!(
                    "UPDATE {schema}.jobs SET claimed_until = now() + $3 * interval '1 millisecond'
                     WHERE id = $1 AND runner = $2"
                ),
                &[&id, &runner, &ttl_ms(ttl)],
            )?;
            Ok(renewed == 1)
        })
    }
}

impl Drop for PostgresJobStore {
    /// PostgreSQL's blocking client closes its connection by blocking on
    /// its own runtime, which panics on an async thread: close it on a
    /// plain thread.
    fn drop(&mut self) {
        let client = self
            .client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(client) = client {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}
