//! A single node's jobs, in its data directory: `{id}.job` (the
//! definition, written durably — temp file, fsync, rename — before the job
//! is accepted) and `{id}.results` (one line of results per chunk,
//! appended). A torn last line is ignored: its items run again, which
//! their ids make harmless.

use super::store::{JobStore, StoredJob};
use super::{ItemResult, JobError, JobSpec, FINISHED_JOBS_KEPT};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// One chunk's results, a line of `{id}.results`.
#[derive(Serialize, Deserialize)]
struct ChunkLine {
    start: usize,
    results: Vec<Option<String>>,
}

pub struct FileStore {
    directory: PathBuf,
    unfinished: Mutex<HashSet<String>>,
    /// (finished at, id), oldest first.
    finished: Mutex<BTreeSet<(u64, String)>>,
}

impl FileStore {
    pub fn open(directory: PathBuf) -> Result<FileStore, JobError> {
        std::fs::create_dir_all(&directory)?;
        Ok(FileStore {
            directory,
            unfinished: Mutex::new(HashSet::new()),
            finished: Mutex::new(BTreeSet::new()),
        })
    }

    fn path(&self, id: &str, extension: &str) -> PathBuf {
        self.directory.join(format!("{id}.{extension}"))
    }

    fn read(&self, job_path: &Path) -> Result<StoredJob, JobError> {
        let spec: JobSpec = serde_json::from_slice(&std::fs::read(job_path)?).map_err(std::io::Error::from)?;
        let results = read_results(&job_path.with_extension("results"), spec.items.len())?;
        // A file store records no finishing time: a finished job counts as
        // finished when it was created (for the order of deletion).
        let finished_at_ms = results.iter().all(Option::is_some).then_some(spec.created_at_ms);
        Ok(StoredJob {
            spec,
            results,
            finished_at_ms,
        })
    }
}

impl JobStore for FileStore {
    fn shared(&self) -> bool {
        false
    }

    fn load(&self) -> Result<Vec<StoredJob>, JobError> {
        let mut jobs = Vec::new();
        for entry in std::fs::read_dir(&self.directory)? {
            let path = entry?.path();
            if path.extension().is_some_and(|extension| extension == "tmp") {
                std::fs::remove_file(&path)?;
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "job") {
                continue;
            }
            let job = self.read(&path)?;
            match job.finished_at_ms {
                Some(at) => self
                    .finished
                    .lock()
                    .expect("finished lock")
                    .insert((at, job.spec.id.clone())),
                None => self
                    .unfinished
                    .lock()
                    .expect("unfinished lock")
                    .insert(job.spec.id.clone()),
            };
            jobs.push(job);
        }
        Ok(jobs)
    }

    fn find(&self, id: &str) -> Result<Option<StoredJob>, JobError> {
        let path = self.path(id, "job");
        match path.exists() {
            true => self.read(&path).map(Some),
            false => Ok(None),
        }
    }

    fn create(&self, spec: &JobSpec, _runner: &str, running_max: usize) -> Result<Option<JobSpec>, JobError> {
        let path = self.path(&spec.id, "job");
        if path.exists() {
            return self.read(&path).map(|stored| Some(stored.spec));
        }
        let mut unfinished = self.unfinished.lock().expect("unfinished lock");
        if unfinished.len() >= running_max {
            return Err(JobError::Busy);
        }
        write_durably(&path, &serde_json::to_vec(spec).expect("serializes"))?;
        unfinished.insert(spec.id.clone());
        Ok(None)
    }

    fn record(&self, id: &str, start: usize, results: &[Option<String>]) -> Result<(), JobError> {
        let line = serde_json::to_string(&ChunkLine {
            start,
            results: results.to_vec(),
        })
        .expect("serializes");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(id, "results"))?;
        file.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    fn finish(&self, id: &str, at_ms: u64) -> Result<Vec<String>, JobError> {
        self.unfinished.lock().expect("unfinished lock").remove(id);
        let mut finished = self.finished.lock().expect("finished lock");
        finished.insert((at_ms, id.to_owned()));
        let mut forgotten = Vec::new();
        while finished.len() > FINISHED_JOBS_KEPT {
            let (_, oldest) = finished.pop_first().expect("more than kept");
            for extension in ["job", "results"] {
                let path = self.path(&oldest, extension);
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
            }
            forgotten.push(oldest);
        }
        Ok(forgotten)
    }

    /// One node: no other runner to take a job from.
    fn claim(&self, _runner: &str, _ttl: Duration) -> Result<Option<StoredJob>, JobError> {
        Ok(None)
    }

    fn renew(&self, _id: &str, _runner: &str, _ttl: Duration) -> Result<bool, JobError> {
        Ok(true)
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

/// The recorded results; a torn last line (a crash mid-append) ends them.
fn read_results(path: &Path, items: usize) -> std::io::Result<Vec<ItemResult>> {
    let mut results = vec![None; items];
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(results);
    };
    for line in std::io::BufReader::new(file).lines() {
        let Ok(chunk) = serde_json::from_str::<ChunkLine>(&line?) else {
            break;
        };
        apply_chunk(&mut results, chunk.start, chunk.results);
    }
    Ok(results)
}

/// Results of the items from `start` on, into a job's results.
pub(super) fn apply_chunk(results: &mut [ItemResult], start: usize, chunk: Vec<Option<String>>) {
    for (offset, result) in chunk.into_iter().enumerate() {
        if let Some(slot) = results.get_mut(start + offset) {
            *slot = Some(match result {
                None => Ok(()),
                Some(code) => Err(code),
            });
        }
    }
}
