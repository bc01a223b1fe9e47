//! Startup: newest valid snapshot, then replay of every later record, with
//! every replayed outcome compared to the journaled one.

use crate::error::JournalError;
use crate::files::segments;
use crate::format::{EntryVerdict, RecordHeader};
use crate::options::JournalOptions;
use crate::scan::{decode_batch, scan_segment, TornTail};
use crate::snapshots::{covered_by_snapshot, load_newest_snapshot};
use crate::writer::{JournalWriter, OpenSegment};
use coffer_core::{Engine, EngineLimits};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What startup found and did, for the logs and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// `sequence_next` of the snapshot recovery started from, if any.
    pub snapshot_sequence: Option<u64>,
    pub records_replayed: u64,
    pub entries_replayed: u64,
    /// The sequence the next transaction gets.
    pub sequence_next: u64,
    pub torn_tail: Option<TornTail>,
    pub duration: Duration,
}

/// Whether recovery may repair a torn tail (startup) or only report it
/// (`coffer journal verify`, which never writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Repair,
    ReadOnly,
}

/// Opens a journal directory for writing: recovers the engine, truncates a
/// torn tail, and starts the writer after the last valid record.
pub fn open(
    directory: &Path,
    options: JournalOptions,
    limits: EngineLimits,
) -> Result<(Engine, JournalWriter, RecoveryReport), JournalError> {
    std::fs::create_dir_all(directory).map_err(JournalError::io(directory))?;
    remove_temporary_files(directory)?;
    let Recovered {
        engine,
        report,
        last_segment,
    } = recover(directory, limits, Mode::Repair)?;
    let segment = OpenSegment::resume(
        directory,
        last_segment,
        engine.sequence_next(),
        options.segment_bytes_max,
    )?;
    let writer = JournalWriter::start(directory.to_owned(), options, engine.sequence_next(), segment);
    tracing::info!(
        directory = %directory.display(),
        snapshot = ?report.snapshot_sequence,
        records = report.records_replayed,
        entries = report.entries_replayed,
        sequence_next = report.sequence_next,
        millis = report.duration.as_millis() as u64,
        "journal recovered"
    );
    Ok((engine, writer, report))
}

fn remove_temporary_files(directory: &Path) -> Result<(), JournalError> {
    for entry in std::fs::read_dir(directory).map_err(JournalError::io(directory))? {
        let path = entry.map_err(JournalError::io(directory))?.path();
        if path.extension().is_some_and(|extension| extension == "tmp") {
            std::fs::remove_file(&path).map_err(JournalError::io(&path))?;
        }
    }
    Ok(())
}

/// What recovery rebuilt, and where the writer continues.
pub struct Recovered {
    pub engine: Engine,
    pub report: RecoveryReport,
    /// The last segment and its valid length, if there is one.
    pub last_segment: Option<(u64, PathBuf, u64)>,
}

/// Rebuilds the engine from a journal directory.
pub fn recover(directory: &Path, limits: EngineLimits, mode: Mode) -> Result<Recovered, JournalError> {
    let started = Instant::now();
    let (mut engine, snapshot_sequence) = load_newest_snapshot(directory, limits, u64::MAX)?;
    let segments = segments(directory)?;
    let mut replay = Replay {
        engine: &mut engine,
        expected: None,
        records: 0,
        entries: 0,
    };
    let mut torn_tail = None;
    let mut last_segment = None;
    for (index, (first_sequence, path)) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let bytes = std::fs::read(path).map_err(JournalError::io(path))?;
        let mut first_record = true;
        let end = scan_segment(path, &bytes, is_last, |offset, header, payload| {
            if first_record && header.first_sequence != *first_sequence {
                return Err(corrupt(
                    path,
                    offset,
                    format!(
                        "segment is named {first_sequence} but starts at {}",
                        header.first_sequence
                    ),
                ));
            }
            first_record = false;
            replay.record(path, offset, header, payload)
        })?;
        if let Some(tail) = end.torn_tail {
            tracing::warn!(path = %tail.path.display(), offset = tail.offset, bytes = tail.bytes_dropped, "torn record at the journal tail");
            if mode == Mode::Repair {
                truncate(&tail.path, tail.offset)?;
            }
            torn_tail = Some(tail);
        }
        if is_last {
            last_segment = Some((*first_sequence, path.clone(), end.valid_bytes));
        }
    }
    let (records_replayed, entries_replayed) = (replay.records, replay.entries);
    if let Some(expected) = replay.expected {
        assert_eq!(expected, engine.sequence_next());
    }
    let report = RecoveryReport {
        snapshot_sequence,
        records_replayed,
        entries_replayed,
        sequence_next: engine.sequence_next(),
        torn_tail,
        duration: started.elapsed(),
    };
    Ok(Recovered {
        engine,
        report,
        last_segment,
    })
}

fn corrupt(path: &Path, offset: u64, reason: String) -> JournalError {
    JournalError::Corrupt {
        path: path.to_owned(),
        offset,
        reason,
    }
}

/// Cuts a torn record off; the writer preallocates the segment again.
fn truncate(path: &Path, length: u64) -> Result<(), JournalError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(JournalError::io(path))?;
    file.set_len(length)
        .and_then(|()| file.sync_all())
        .map_err(JournalError::io(path))
}

struct Replay<'a> {
    engine: &'a mut Engine,
    /// The first sequence the next record must have; `None` before the
    /// first record is seen.
    expected: Option<u64>,
    records: u64,
    entries: u64,
}

impl Replay<'_> {
    fn record(&mut self, path: &Path, offset: u64, header: &RecordHeader, payload: &[u8]) -> Result<(), JournalError> {
        let first = header.first_sequence;
        let end = first + u64::from(header.count);
        let snapshot_next = self.engine.sequence_next();
        match self.expected {
            Some(expected) if expected != first => {
                return Err(corrupt(
                    path,
                    offset,
                    format!("record starts at sequence {first}, expected {expected}"),
                ));
            }
            None if first > snapshot_next => {
                let reason = format!("the journal starts at sequence {first}, but the state only reaches {snapshot_next}: records are missing");
                return Err(corrupt(path, offset, reason));
            }
            _ => {}
        }
        self.expected = Some(end);
        if covered_by_snapshot(first, header.count, snapshot_next) {
            return Ok(());
        }
        if first < snapshot_next {
            return Err(corrupt(
                path,
                offset,
                format!("record {first}..{end} straddles the snapshot at {snapshot_next}"),
            ));
        }
        let batch = decode_batch(path, offset, header, payload)?;
        let outcome = self.engine.apply_batch(batch.timestamp_ms, &batch.transactions);
        for (index, (journaled, replayed)) in batch.verdicts.iter().zip(&outcome.outcomes).enumerate() {
            let replayed = EntryVerdict::of(replayed);
            if *journaled != replayed {
                let sequence = first + index as u64;
                return Err(JournalError::Diverged {
                    sequence,
                    journaled: journaled.to_string(),
                    replayed: replayed.to_string(),
                });
            }
        }
        self.records += 1;
        self.entries += u64::from(header.count);
        Ok(())
    }
}
