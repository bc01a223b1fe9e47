//! Snapshot files: written durably, loaded (the newest usable one), and
//! pruned with the segments they make unnecessary.

use crate::error::JournalError;
use crate::files::{segments, snapshot_path, snapshots, sync_directory};
use crate::format::{decode_snapshot_file, encode_snapshot_file};
use crate::options::{JournalOptions, Retention};
use coffer_core::{Engine, EngineLimits};
use std::io::Write;
use std::path::Path;

/// Writes `state` (an engine snapshot covering every sequence below
/// `sequence_next`) as temp file, fsync, rename, fsync of the directory:
/// after a crash there is either the whole new snapshot or none of it.
pub fn write_snapshot(directory: &Path, sequence_next: u64, state: &[u8]) -> Result<(), JournalError> {
    let path = snapshot_path(directory, sequence_next);
    let temporary = path.with_extension("snap.tmp");
    let bytes = encode_snapshot_file(sequence_next, state);
    let mut file = std::fs::File::create(&temporary).map_err(JournalError::io(&temporary))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(JournalError::io(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(JournalError::io(&path))?;
    sync_directory(directory)
}

/// Deletes snapshots beyond the newest `snapshots_kept`, then (unless the
/// retention keeps everything) segments that end before the oldest kept
/// snapshot. A journal reader that still needs `reader_sequence` (the
/// history projector rebuilds its state from a snapshot at or before its
/// cursor) keeps the newest such snapshot and every segment after it; with
/// no snapshot that old, it keeps every segment. The last segment is never
/// deleted: it is being written.
pub fn prune(directory: &Path, options: &JournalOptions, reader_sequence: u64) -> Result<(), JournalError> {
    let all = snapshots(directory)?;
    let kept_newest = (options.snapshots_kept.max(1) as usize).min(all.len());
    let reader_snapshot = all
        .iter()
        .rposition(|(sequence_next, _)| *sequence_next <= reader_sequence);
    let first_kept = (all.len() - kept_newest).min(reader_snapshot.unwrap_or(usize::MAX));
    for (index, (_, path)) in all.iter().enumerate().take(all.len() - kept_newest) {
        if Some(index) != reader_snapshot {
            std::fs::remove_file(path).map_err(JournalError::io(path))?;
        }
    }
    if options.retention == Retention::KeepAll || all.is_empty() {
        return Ok(());
    }
    // The reader needs the journal from its snapshot on, or from the start.
    let needed_from = match reader_snapshot {
        Some(_) => all[first_kept].0,
        None => 0,
    };
    let segments = segments(directory)?;
    for pair in segments.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= needed_from {
            std::fs::remove_file(path).map_err(JournalError::io(path))?;
        }
    }
    sync_directory(directory)
}

/// Whether a snapshot covering every sequence below `snapshot_next` already
/// holds a record's effects. A record without transactions (hold expiries
/// only) at exactly `snapshot_next` may have been written before or after
/// the snapshot: it is replayed, which is harmless either way because
/// expiring the same holds again at the same time changes nothing.
pub(crate) fn covered_by_snapshot(first_sequence: u64, count: u32, snapshot_next: u64) -> bool {
    let end = first_sequence + u64::from(count);
    end < snapshot_next || (end == snapshot_next && count > 0)
}

/// The newest usable snapshot covering at most `sequence_max`, or an empty
/// engine when there is none.
pub(crate) fn load_newest_snapshot(
    directory: &Path,
    limits: EngineLimits,
    sequence_max: u64,
) -> Result<(Engine, Option<u64>), JournalError> {
    let candidates = snapshots(directory)?.into_iter().rev();
    for (sequence_next, path) in candidates.filter(|(sequence_next, _)| *sequence_next <= sequence_max) {
        match load_snapshot(&path, sequence_next, limits) {
            Ok(engine) => return Ok((engine, Some(sequence_next))),
            // An older snapshot plus a longer replay gives the same state, so
            // a bad snapshot costs time, not data. If the segments it needed
            // are gone, replay reports the gap.
            Err(error) => tracing::warn!(%error, "skipping unusable snapshot"),
        }
    }
    Ok((Engine::new(limits), None))
}

fn load_snapshot(path: &Path, sequence_next: u64, limits: EngineLimits) -> Result<Engine, JournalError> {
    let unusable = |reason: String| JournalError::Snapshot {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(JournalError::io(path))?;
    let (declared, state) = decode_snapshot_file(&bytes).map_err(unusable)?;
    let engine = Engine::decode_snapshot(state, limits).map_err(|error| unusable(error.to_string()))?;
    if declared != sequence_next || engine.sequence_next() != sequence_next {
        return Err(unusable(format!(
            "name says {sequence_next}, header {declared}, state {}",
            engine.sequence_next()
        )));
    }
    Ok(engine)
}
