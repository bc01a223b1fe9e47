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
/// snapshot. The last segment is never deleted: it is being written.
pub fn prune(directory: &Path, options: &JournalOptions) -> Result<(), JournalError> {
    let all = snapshots(directory)?;
    let kept = (options.snapshots_kept.max(1) as usize).min(all.len());
    let (old, kept) = all.split_at(all.len() - kept);
    for (_, path) in old {
        std::fs::remove_file(path).map_err(JournalError::io(path))?;
    }
    let Some((oldest_kept, _)) = kept.first() else {
        return Ok(());
    };
    if options.retention == Retention::KeepAll {
        return Ok(());
    }
    let segments = segments(directory)?;
    for pair in segments.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if next_first <= oldest_kept {
            std::fs::remove_file(path).map_err(JournalError::io(path))?;
        }
    }
    sync_directory(directory)
}
