//! The server's side of the history store: starting the projector, reading
//! through a connection pool off the async threads, and the two rules that
//! tie the store to the engine — reads wait until the history has caught
//! up with what was acknowledged, and writes are held to the projector's
//! pace so that an id never leaves the engine's window before it is in the
//! store (the `Ledger` looks forgotten ids up here).

use crate::config::ServerConfig;
use crate::error::ApiError;
use anyhow::Context;
use coffer_history::{
    Database, Export, FeedReceiver, HistoryError, Projector, ProjectorSettings, ProjectorStats, Reader, ReaderPool,
    Shape, TransactionRow, LOOKUP_IDS_MAX,
};
use coffer_journal::JournalStats;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts the SQL copy, if one is configured: it follows the index
/// (`history`, the history store), never the journal.
fn start_export(config: &ServerConfig, history: &Database) -> anyhow::Result<Option<Export>> {
    let Some(url) = &config.history_export else {
        return Ok(None);
    };
    let database = Database::parse(url, &config.data_dir, &config.history_schema)?;
    anyhow::ensure!(
        database.shape() == Shape::Rows,
        "--history-export takes sqlite, sqlite:PATH or a postgres:// URL (the index is the history store itself)"
    );
    anyhow::ensure!(
        history.shape() == Shape::Index,
        "--history-export copies the history index; the history store is {} (--history-url index)",
        history.describe()
    );
    let settings = ProjectorSettings {
        rows_per_write_max: EXPORT_ROWS_PER_WRITE_MAX,
        ..ProjectorSettings::default()
    };
    let export = Export::start(history, database.clone(), settings)
        .with_context(|| format!("opening the history export {}", database.describe()))?;
    tracing::info!(store = %database.describe(), "history export open");
    Ok(Some(export))
}

/// Rows one export write takes at most: about 33,000 transfers, some
/// 30 MiB rendered. Large, for PostgreSQL's COPY; the same for SQLite.
const EXPORT_ROWS_PER_WRITE_MAX: usize = 100_000;

/// Rows (entries and transactions) one index write takes at most: about
/// 100,000 transfers, some 30 MiB in memory.
const INDEX_ROWS_PER_WRITE_MAX: usize = 300_000;

/// How long a history read waits for the projector to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Past `--history-lag-max` divided by this, a write first waits for the
/// projector: clients slow down to what the history absorbs instead of
/// running into the hard limit's 503s (as a storage engine stalls writes
/// while its compaction is behind).
const SLOWDOWN_DIVISOR: u64 = 2;

/// A write waits this long at most for the projector; then it goes ahead
/// (still below the hard limit), so a stalled store costs each write a
/// bounded delay, and the hard limit still ends it.
const SLOWDOWN_WAIT_MAX: Duration = Duration::from_secs(1);

/// How often the projector's progress is passed to waiting writes.
const PROGRESS_POLL: Duration = Duration::from_millis(5);

pub struct History {
    pool: Arc<ReaderPool>,
    projector: Mutex<Option<Projector>>,
    /// The SQL copy (`--history-export`): its own projector and cursor,
    /// outside the lag rules and the idempotency lookups.
    export: Mutex<Option<Export>>,
    pub export_stats: Option<Arc<ProjectorStats>>,
    pub stats: Arc<ProjectorStats>,
    journal: Arc<JournalStats>,
    lag_max: u64,
    /// The projected sequence, for writes waiting in the slowdown zone.
    projected: tokio::sync::watch::Receiver<u64>,
    /// Writes that waited for the projector.
    pub slowdowns: AtomicU64,
}

impl History {
    /// Transactions durable but not yet in the SQL copy.
    pub fn export_lag(&self, durable_sequence: u64) -> Option<u64> {
        let stats = self.export_stats.as_ref()?;
        Some(durable_sequence.saturating_sub(stats.projected_sequence()))
    }

    /// Whether the configured store takes the engine's effects through a
    /// feed (the index does; SQL stores apply the journal themselves).
    pub fn takes_feed(config: &ServerConfig) -> anyhow::Result<bool> {
        if config.history_url == "off" {
            return Ok(false);
        }
        let database = Database::parse(&config.history_url, &config.data_dir, &config.history_schema)?;
        Ok(database.shape() == Shape::Index)
    }

    /// `None` when the history is switched off.
    pub fn start(
        config: &ServerConfig,
        journal: Arc<JournalStats>,
        feed: Option<FeedReceiver>,
    ) -> anyhow::Result<Option<Arc<History>>> {
        if config.history_url == "off" {
            tracing::warn!("history is off: no account history, and ids are remembered only inside the window");
            return Ok(None);
        }
        let database = Database::parse(&config.history_url, &config.data_dir, &config.history_schema)?;
        let settings = match database.shape() {
            // The index's writes cost per write (a few fsyncs, a run, a
            // manifest), not per row: larger ones.
            Shape::Index => ProjectorSettings {
                rows_per_write_max: INDEX_ROWS_PER_WRITE_MAX,
                ..ProjectorSettings::default()
            },
            Shape::Rows => ProjectorSettings::default(),
        };
        let projector = Projector::start(
            database.clone(),
            config.journal_directory(),
            Arc::clone(&journal),
            config.engine_limits(),
            settings,
            feed,
        )
        .with_context(|| {
            let earlier = config.data_dir.join("history.sqlite");
            if database.shape() == Shape::Index && earlier.exists() {
                // An earlier coffer kept its history in SQLite by default; the
                // index is built from the journal, which retention may have cut.
                format!(
                    "opening the history store {}; this data directory also holds {}, an earlier coffer's \
                     history: if the journal no longer holds every record, the index cannot be built from it, \
                     so start with --history-url sqlite to keep using that store",
                    database.describe(),
                    earlier.display()
                )
            } else {
                format!("opening the history store {}", database.describe())
            }
        })?;
        tracing::info!(store = %database.describe(), "history store open");
        let export = start_export(config, &database)?;
        let stats = Arc::clone(projector.stats());
        Ok(Some(Arc::new(History {
            pool: Arc::new(ReaderPool::new(database)),
            projected: follow_progress(Arc::clone(&stats)),
            stats,
            projector: Mutex::new(Some(projector)),
            export_stats: export.as_ref().map(|export| Arc::clone(export.stats())),
            export: Mutex::new(export),
            lag_max: config.history_lag_max,
            journal,
            slowdowns: AtomicU64::new(0),
        })))
    }

    /// Projects what is durable, then stops (after the engine has stopped).
    pub fn stop(&self) {
        if let Some(projector) = self.projector.lock().expect("projector lock").take() {
            projector.stop();
        }
        if let Some(export) = self.export.lock().expect("export lock").take() {
            export.stop();
        }
    }

    /// Transactions durable but not yet in the store.
    pub fn lag(&self, durable_sequence: u64) -> u64 {
        durable_sequence.saturating_sub(self.stats.projected_sequence())
    }

    /// Writes are refused (503) while the history is too far behind: beyond
    /// the idempotency window, a retry is recognised only through the
    /// store. Otherwise the lag.
    fn check_lag(&self, durable_sequence: u64) -> Result<u64, ApiError> {
        if let Some(failure) = self.stats.failure() {
            return Err(ApiError::HistoryUnavailable(failure));
        }
        let lag = self.lag(durable_sequence);
        if lag > self.lag_max {
            return Err(ApiError::HistoryUnavailable(format!(
                "the history is {lag} transactions behind (limit {})",
                self.lag_max
            )));
        }
        Ok(lag)
    }

    /// Admits a write: 503 past the hard limit (`check_lag`); past the
    /// slowdown mark, first waits (at most `SLOWDOWN_WAIT_MAX`) until the
    /// projector is back below it, so closed-loop clients are paced to the
    /// history's rate.
    pub async fn admit_write(&self, durable_sequence: impl Fn() -> u64) -> Result<(), ApiError> {
        let durable = durable_sequence();
        let slowdown = self.lag_max / SLOWDOWN_DIVISOR;
        if self.check_lag(durable)? <= slowdown {
            return Ok(());
        }
        self.slowdowns.fetch_add(1, Ordering::Relaxed);
        let target = durable - slowdown;
        let mut projected = self.projected.clone();
        // A timeout is no error: the write goes ahead if still allowed.
        let _ = tokio::time::timeout(SLOWDOWN_WAIT_MAX, projected.wait_for(|projected| *projected >= target)).await;
        self.check_lag(durable_sequence()).map(|_| ())
    }

    /// Waits until every transaction below `sequence` is in the store, so a
    /// history read sees every acknowledged write.
    pub async fn caught_up(self: &Arc<Self>) -> Result<(), ApiError> {
        let position = self.journal.durable_position();
        let history = Arc::clone(self);
        let caught_up =
            tokio::task::spawn_blocking(move || history.stats.wait_for_position(position, CATCH_UP_TIMEOUT))
                .await
                .map_err(|error| ApiError::HistoryUnavailable(error.to_string()))?;
        if caught_up {
            return Ok(());
        }
        Err(ApiError::HistoryUnavailable(self.stats.failure().unwrap_or_else(
            || {
                format!(
                    "the history is still {} transactions behind",
                    self.lag(self.journal.durable_sequence.load(Ordering::Acquire))
                )
            },
        )))
    }

    /// Connections to the store.
    pub fn pool(&self) -> &Arc<ReaderPool> {
        &self.pool
    }
}

/// Runs a query on one of `pool`'s connections, on a blocking thread.
pub async fn read_pooled<T: Send + 'static>(
    pool: &Arc<ReaderPool>,
    query: impl FnOnce(&mut dyn Reader) -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, ApiError> {
    let pool = Arc::clone(pool);
    tokio::task::spawn_blocking(move || pool.with(query))
        .await
        .map_err(|error| ApiError::HistoryUnavailable(error.to_string()))?
        .map_err(|error| {
            tracing::warn!(%error, "history read failed");
            ApiError::HistoryUnavailable(error.to_string())
        })
}

/// The stored transactions among `ids` (any number: looked up in bounded
/// queries).
pub fn stored_among(reader: &mut dyn Reader, ids: &[String]) -> Result<Vec<TransactionRow>, HistoryError> {
    let mut rows = Vec::new();
    for chunk in ids.chunks(LOOKUP_IDS_MAX) {
        rows.extend(reader.transactions(&chunk.iter().map(String::as_str).collect::<Vec<_>>())?);
    }
    Ok(rows)
}

/// One task passes the projector's progress to every waiting write (the
/// projector thread knows nothing of async); it ends with the `History`.
/// Called on the server's runtime (startup runs `History::start` there).
fn follow_progress(stats: Arc<ProjectorStats>) -> tokio::sync::watch::Receiver<u64> {
    let (sender, receiver) = tokio::sync::watch::channel(stats.projected_sequence());
    tokio::runtime::Handle::current().spawn(async move {
        loop {
            tokio::select! {
                () = sender.closed() => break,
                () = tokio::time::sleep(PROGRESS_POLL) => {
                    let projected = stats.projected_sequence();
                    sender.send_if_modified(|last| std::mem::replace(last, projected) != projected);
                }
            }
        }
    });
    receiver
}
