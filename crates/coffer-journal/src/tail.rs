//! Following the journal as it grows: the history projector and the event
//! publisher read records here, strictly behind the durable end, so they
//! never see a record that a crash could still take back.

use crate::error::JournalError;
use crate::files::{segment_path, segments};
use crate::format::{decode_header, JournalBatch, RecordHeader, HEADER_BYTES};
use crate::scan::decode_batch;
use crate::snapshots::{covered_by_snapshot, load_newest_snapshot};
use crate::stats::{JournalStats, Position};
use coffer_core::{BatchOutcome, Engine, EngineLimits};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One record read from the journal, with where the next one starts.
#[derive(Debug)]
pub struct TailRecord {
    pub batch: JournalBatch,
    pub next: Position,
}

/// Reads records in order from a position, up to the durable end.
pub struct Tail {
    directory: PathBuf,
    stats: Arc<JournalStats>,
    position: Position,
    reader: Option<SegmentReader>,
}

const READ_BUFFER_BYTES: u64 = 1 << 20;

/// Buffered reads of one segment that never read past the durable end: the
/// segment is preallocated, so bytes beyond it read as zeros now and hold
/// records later, and a buffer must not keep those zeros.
struct SegmentReader {
    file: File,
    buffer: Vec<u8>,
    /// The file offset of `buffer[0]`.
    buffer_start: u64,
}

impl SegmentReader {
    fn open(path: &Path) -> Result<Self, JournalError> {
        Ok(SegmentReader {
            file: File::open(path).map_err(JournalError::io(path))?,
            buffer: Vec::new(),
            buffer_start: 0,
        })
    }

    /// The `length` bytes at `offset`; `offset + length <= durable_end`.
    fn read(&mut self, path: &Path, offset: u64, length: usize, durable_end: u64) -> Result<&[u8], JournalError> {
        let end = offset + length as u64;
        assert!(end <= durable_end, "reads stay behind the durable end");
        let buffer_end = self.buffer_start + self.buffer.len() as u64;
        if offset < self.buffer_start || end > buffer_end {
            let fill_end = durable_end.min(offset + READ_BUFFER_BYTES).max(end);
            self.buffer.resize((fill_end - offset) as usize, 0);
            self.file
                .read_exact_at(&mut self.buffer, offset)
                .map_err(JournalError::io(path))?;
            self.buffer_start = offset;
        }
        let start = (offset - self.buffer_start) as usize;
        Ok(&self.buffer[start..start + length])
    }
}

impl Tail {
    pub fn new(directory: &Path, stats: Arc<JournalStats>, position: Position) -> Self {
        Tail {
            directory: directory.to_owned(),
            stats,
            position,
            reader: None,
        }
    }

    /// The position of the next record to read.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The next durable record, or `None` when everything durable is read.
    pub fn next_record(&mut self) -> Result<Option<TailRecord>, JournalError> {
        loop {
            let durable = self.stats.durable_position();
            if self.position >= durable {
                return Ok(None);
            }
            let path = segment_path(&self.directory, self.position.segment);
            let segment_end = if self.position.segment == durable.segment {
                durable.offset
            } else {
                std::fs::metadata(&path).map_err(JournalError::io(&path))?.len()
            };
            if self.position.offset >= segment_end {
                self.move_to_next_segment()?;
                continue;
            }
            return self.read_record(&path, segment_end).map(Some);
        }
    }

    fn move_to_next_segment(&mut self) -> Result<(), JournalError> {
        let next = segments(&self.directory)?
            .into_iter()
            .map(|(first_sequence, _)| first_sequence)
            .find(|first_sequence| *first_sequence > self.position.segment);
        let Some(segment) = next else {
            return Err(JournalError::Failed(format!(
                "journal segment {} ended but no later segment exists",
                self.position.segment
            )));
        };
        self.position = Position { segment, offset: 0 };
        self.reader = None;
        Ok(())
    }

    fn read_record(&mut self, path: &Path, segment_end: u64) -> Result<TailRecord, JournalError> {
        let offset = self.position.offset;
        let corrupt = |reason: String| JournalError::Corrupt {
            path: path.to_owned(),
            offset,
            reason,
        };
        if self.reader.is_none() {
            self.reader = Some(SegmentReader::open(path)?);
        }
        let reader = self.reader.as_mut().expect("opened above");
        if offset + HEADER_BYTES as u64 > segment_end {
            return Err(corrupt(format!(
                "record header runs past the durable end {segment_end}"
            )));
        }
        let header: RecordHeader =
            decode_header(reader.read(path, offset, HEADER_BYTES, segment_end)?).map_err(corrupt)?;
        let record_end = offset + HEADER_BYTES as u64 + u64::from(header.payload_bytes);
        if record_end > segment_end {
            return Err(corrupt(format!(
                "record ends at {record_end}, past the durable end {segment_end}"
            )));
        }
        let payload = reader.read(
            path,
            offset + HEADER_BYTES as u64,
            header.payload_bytes as usize,
            segment_end,
        )?;
        if crc32c::crc32c(payload) != header.payload_crc {
            return Err(corrupt("payload checksum mismatch".into()));
        }
        let batch = decode_batch(path, offset, &header, payload)?;
        self.position.offset = record_end;
        Ok(TailRecord {
            batch,
            next: self.position,
        })
    }
}

/// An engine rebuilt to exactly a journal position, and a tail positioned
/// there: what a reader that needs the engine's effects (balances after
/// each transaction) resumes from.
pub struct Follower {
    pub engine: Engine,
    pub tail: Tail,
}

impl Follower {
    /// Rebuilds the state at `position` from the newest snapshot covering at
    /// most `sequence` (the first sequence after `position`), replaying the
    /// records between the two. `None` starts from the journal's beginning,
    /// which must still be on disk.
    pub fn open(
        directory: &Path,
        stats: Arc<JournalStats>,
        limits: EngineLimits,
        resume: Option<(Position, u64)>,
    ) -> Result<Self, JournalError> {
        let (position, sequence) = resume.unwrap_or_default();
        let (mut engine, snapshot_next) = load_newest_snapshot(directory, limits, sequence)?;
        let snapshot_next = snapshot_next.unwrap_or(0);
        let all = segments(directory)?;
        let start = all
            .iter()
            .rev()
            .find(|(first_sequence, _)| *first_sequence <= snapshot_next)
            .or(all.first())
            .map_or(0, |(first_sequence, _)| *first_sequence);
        if start > snapshot_next {
            return Err(JournalError::Failed(format!(
                "the journal starts at sequence {start}, but the newest snapshot at or before {sequence} \
                 covers only up to {snapshot_next}: the records in between were deleted"
            )));
        }
        let mut tail = Tail::new(
            directory,
            stats,
            Position {
                segment: start,
                offset: 0,
            },
        );
        while tail.position() < position {
            let record = tail.next_record()?.ok_or_else(|| {
                JournalError::Failed(format!("journal ends before the reader's position {position:?}"))
            })?;
            let header = &record.batch;
            if !covered_by_snapshot(header.first_sequence, header.transactions.len() as u32, snapshot_next) {
                engine.apply_batch(header.timestamp_ms, &header.transactions);
            }
        }
        if tail.position() != position {
            return Err(JournalError::Failed(format!(
                "the reader's position {position:?} is not at a record boundary"
            )));
        }
        Ok(Follower { engine, tail })
    }

    /// Reads and applies the next durable record.
    pub fn next_applied(&mut self) -> Result<Option<(TailRecord, BatchOutcome)>, JournalError> {
        let Some(record) = self.tail.next_record()? else {
            return Ok(None);
        };
        let batch = &record.batch;
        let outcome = self.engine.apply_batch(batch.timestamp_ms, &batch.transactions);
        for (index, (journaled, replayed)) in batch.verdicts.iter().zip(&outcome.outcomes).enumerate() {
            let replayed = crate::format::EntryVerdict::of(replayed);
            if *journaled != replayed {
                return Err(JournalError::Diverged {
                    sequence: batch.first_sequence + index as u64,
                    journaled: journaled.to_string(),
                    replayed: replayed.to_string(),
                });
            }
        }
        Ok(Some((record, outcome)))
    }
}

/// The thread of a journal reader (history projector, event publisher):
/// asked to stop, it finishes what is durable and exits; dropping the
/// handle stops it and waits.
pub struct ReaderThread {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReaderThread {
    /// Runs `body` on a thread named `name`; `body` polls the flag it is
    /// given and returns once it is set and the reader has caught up.
    pub fn spawn(name: &str, body: impl FnOnce(Arc<std::sync::atomic::AtomicBool>) + Send + 'static) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || body(flag))
            .expect("spawn a journal reader thread");
        ReaderThread {
            stop,
            thread: Some(thread),
        }
    }

    /// Catches up with what is durable, then stops.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let name = thread.thread().name().unwrap_or("journal reader").to_owned();
            if thread.join().is_err() {
                tracing::error!(thread = %name, "a journal reader thread panicked");
            }
        }
    }
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        self.shut_down();
    }
}
