//! The history export: a thread that copies the index into a SQL store
//! (SQLite or PostgreSQL) for users' own tools. It follows the index, not
//! the journal, so it holds no journal segment back and applies nothing
//! again; it is never asked for idempotency and never slows writes. Its
//! cursor commits with its rows, as the projector's does.

use crate::changes::{Cursor, Shape};
use crate::database::Database;
use crate::error::HistoryError;
use crate::index::{ExportBatch, IndexReader};
use crate::projector::{ProjectorSettings, ProjectorStats, WriteTarget};
use crate::store::Writer;
use coffer_journal::ReaderThread;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest single sleep, so that a stop is seen promptly.
const SLEEP_MAX: Duration = Duration::from_millis(20);

pub struct Export {
    stats: Arc<ProjectorStats>,
    thread: ReaderThread,
}

impl Export {
    /// Opens both stores before returning (a wrong URL fails startup), then
    /// copies on its own thread. `index` is the history store it follows.
    pub fn start(index: &Database, target: Database, settings: ProjectorSettings) -> Result<Export, HistoryError> {
        let Database::Index(location) = index else {
            return Err(HistoryError::Invalid(format!(
                "the history export copies the index, and the history store is {}",
                index.describe()
            )));
        };
        if target.shape() != Shape::Rows {
            return Err(HistoryError::Invalid(format!(
                "the history export writes to SQLite or PostgreSQL, not to {}",
                target.describe()
            )));
        }
        let reader = location.open_reader()?;
        let mut writer = target.open_writer()?;
        let cursor = writer.cursor()?.unwrap_or_default();
        let stats = Arc::new(ProjectorStats::default());
        stats.advance(&cursor);
        let shared = Arc::clone(&stats);
        let thread = ReaderThread::spawn("coffer-export", move |stop| {
            let copying = Copying {
                target,
                settings,
                stats: shared,
                stop,
            };
            if let Err(error) = copying.run(reader, writer, cursor) {
                tracing::error!(%error, "the history export stopped; it resumes from its cursor at restart");
                copying.stats.fail(error.to_string());
            }
        });
        Ok(Export { stats, thread })
    }

    pub fn stats(&self) -> &Arc<ProjectorStats> {
        &self.stats
    }

    /// Copies what the index holds, then stops.
    pub fn stop(self) {
        self.thread.stop();
    }
}

struct Copying {
    target: Database,
    settings: ProjectorSettings,
    stats: Arc<ProjectorStats>,
    stop: Arc<AtomicBool>,
}

impl Copying {
    /// Two stages on two threads: this one writes while the other reads
    /// and renders the next rows, so the database's work overlaps ours.
    fn run(&self, reader: IndexReader, mut writer: Box<dyn Writer>, cursor: Cursor) -> Result<(), HistoryError> {
        let target = WriteTarget {
            database: &self.target,
            settings: &self.settings,
            stats: &self.stats,
            stop: &self.stop,
        };
        // One write rendered ahead at most: memory stays bounded.
        let (to_writer, rendered) = sync_channel::<ExportBatch>(1);
        std::thread::scope(|scope| {
            let rendering = std::thread::Builder::new()
                .name("coffer-export-read".into())
                .spawn_scoped(scope, move || self.render(reader, cursor, to_writer))
                .expect("spawn the export's reading thread");
            let mut wrote = Ok(());
            for (changes, next) in rendered {
                wrote = target.write_until_done(&mut writer, &changes, &next);
                if wrote.is_err() {
                    break;
                }
            }
            // The loop dropped the receiver: after a failed write, the
            // reading thread's next send fails and it ends.
            let read = rendering.join().expect("the export's reading thread panicked");
            wrote.and(read)
        })
    }

    fn render(
        &self,
        mut reader: IndexReader,
        mut cursor: Cursor,
        to_writer: SyncSender<ExportBatch>,
    ) -> Result<(), HistoryError> {
        let mut last_read: Option<Instant> = None;
        // Behind by more than a write: no pause between writes.
        let mut behind = true;
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            // A SQL commit costs per commit as well as per row: when keeping
            // up, one write per interval.
            let wait = last_read
                .filter(|_| !behind && !stopping)
                .and_then(|at| self.settings.write_interval.checked_sub(at.elapsed()));
            if let Some(wait) = wait {
                std::thread::sleep(wait.min(SLEEP_MAX));
                continue;
            }
            let Some((changes, next)) = reader.export_after(&cursor, self.settings.rows_per_write_max)? else {
                if stopping {
                    return Ok(());
                }
                behind = false;
                std::thread::sleep(self.settings.idle_poll.min(SLEEP_MAX));
                continue;
            };
            behind = next.is_midway();
            cursor = next;
            last_read = Some(Instant::now());
            if to_writer.send((changes, next)).is_err() {
                // The writer stopped on an error; it reports it.
                return Ok(());
            }
        }
    }
}
