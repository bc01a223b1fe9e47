//! Names and listing of journal files. Names embed zero-padded sequence
//! numbers so that lexical order is log order.

use crate::error::JournalError;
use std::fs::File;
use std::path::{Path, PathBuf};

const SEGMENT_SUFFIX: &str = ".wal";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";

pub fn segment_path(directory: &Path, first_sequence: u64) -> PathBuf {
    directory.join(format!("{first_sequence:020}{SEGMENT_SUFFIX}"))
}

pub fn snapshot_path(directory: &Path, sequence_next: u64) -> PathBuf {
    directory.join(format!("{SNAPSHOT_PREFIX}{sequence_next:020}{SNAPSHOT_SUFFIX}"))
}

fn numbered(directory: &Path, prefix: &str, suffix: &str) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(directory).map_err(JournalError::io(directory))?;
    for entry in entries {
        let entry = entry.map_err(JournalError::io(directory))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = name.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(suffix));
        if let Some(number) = number
            .filter(|digits| digits.len() == 20)
            .and_then(|digits| digits.parse().ok())
        {
            found.push((number, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Segments as (first sequence, path), in log order.
pub fn segments(directory: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    numbered(directory, "", SEGMENT_SUFFIX)
}

/// Snapshots as (sequence_next, path), oldest first.
pub fn snapshots(directory: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    numbered(directory, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX)
}

/// Makes a file creation, rename or deletion durable: the directory entry
/// itself must reach the disk, not only the file's contents.
pub fn sync_directory(directory: &Path) -> Result<(), JournalError> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(JournalError::io(directory))
}
