//! Writing snapshots durably and pruning what they make unnecessary.

use crate::error::JournalError;
use crate::files::{segments, snapshot_path, snapshots, sync_directory};
use crate::format::encode_snapshot_file;
use crate::options::{JournalOptions, Retention};
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
