//! Opening an index of version 1 converts it to version 2.
//!
//! Version 1's entries kept their links in 64-bit fields and marked every
//! 64th, 4,096th and 262,144th entry of an account; version 2 packs them in
//! 48 bits and marks every 8th, 64th, … (`MARK_STRIDES`). Only the entries
//! change: they are rewritten into version 2's file with their marks
//! computed again, the heads are checkpointed, and a version 2 manifest,
//! replaced atomically, commits the conversion. A crash before that leaves
//! version 1 as it was (the conversion starts over at the next open); after
//! it, version 1's entries file is unlisted and the next open deletes it.

use super::files::{
    io_error, le_i128, le_u32, le_u64, read_at, EntryRecord, Manifest, DEPTH_MAX, ENTRIES_FILE, FIELD_48_MAX, NONE,
};
use super::heads::{self, Head};
use crate::error::HistoryError;
use std::fs::File;
use std::io::Write;
use std::path::Path;

pub const ENTRIES_FILE_V1: &str = "entries";
const ENTRY_BYTES_V1: usize = 96;
/// Entries read and written at once.
const CHUNK_ENTRIES: u64 = 16_384;

/// Converts the index in `directory`, whose version 1 manifest is `old`, and
/// returns the version 2 manifest it committed.
pub(super) fn from_version_1(directory: &Path, old: Manifest) -> Result<Manifest, HistoryError> {
    let started = std::time::Instant::now();
    let source_path = directory.join(ENTRIES_FILE_V1);
    let source = File::open(&source_path).map_err(|error| io_error(&source_path, error))?;
    let length = source.metadata().map_err(|error| io_error(&source_path, error))?.len();
    if length < old.entries * ENTRY_BYTES_V1 as u64 {
        return Err(damaged(&source_path, "shorter than its manifest says"));
    }
    let target_path = directory.join(ENTRIES_FILE);
    let heads = match rewrite_entries(&source, &source_path, &target_path, old.entries) {
        Ok(heads) => heads,
        Err(error) => {
            // Version 1 stays as it was: nothing of the conversion is left.
            let _ = std::fs::remove_file(&target_path);
            return Err(error);
        }
    };
    let mut manifest = old;
    manifest.heads = None;
    if manifest.entries > 0 {
        heads::write_checkpoint(directory, &mut manifest, &heads)?;
    }
    manifest.write(directory)?;
    match std::fs::remove_file(&source_path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(&source_path, error)),
    }
    tracing::info!(
        entries = manifest.entries,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "history index converted from version 1 to 2"
    );
    Ok(manifest)
}

/// Writes version 1's `entries` entries from `source` into `target_path` as
/// version 2's, durably; returns the account heads after them.
fn rewrite_entries(
    source: &File,
    source_path: &Path,
    target_path: &Path,
    entries: u64,
) -> Result<Vec<Head>, HistoryError> {
    let mut target = File::create(target_path).map_err(|error| io_error(target_path, error))?;
    let mut heads: Vec<Head> = Vec::new();
    let mut converted = Vec::with_capacity(CHUNK_ENTRIES as usize * super::files::ENTRY_BYTES);
    let mut id = 0;
    while id < entries {
        let count = (entries - id).min(CHUNK_ENTRIES);
        let bytes = read_at(source, id * ENTRY_BYTES_V1 as u64, count as usize * ENTRY_BYTES_V1)?;
        converted.clear();
        for old_entry in bytes.chunks_exact(ENTRY_BYTES_V1) {
            let entry = convert(&heads, old_entry).ok_or_else(|| damaged(source_path, &format!("entry {id}")))?;
            entry.encode(&mut converted);
            heads::set(&mut heads, entry.account, Head::of(id, &entry));
            id += 1;
        }
        target
            .write_all(&converted)
            .map_err(|error| io_error(target_path, error))?;
    }
    target.sync_all().map_err(|error| io_error(target_path, error))?;
    Ok(heads)
}

/// Version 1's entry as version 2's, linked after `heads`; `None` if its
/// links are not the ones its account's chain gives, or a field is too wide.
fn convert(heads: &[Head], bytes: &[u8]) -> Option<EntryRecord> {
    let account = le_u32(bytes, 0);
    let head = heads.get(account as usize).copied().unwrap_or_default();
    let (previous, depth, marks) = head.next_links();
    let entry = EntryRecord {
        account,
        expiry: le_u32(bytes, 4) == 1,
        depth: le_u64(bytes, 8),
        timestamp_ms: le_u64(bytes, 16),
        source: le_u64(bytes, 24),
        previous: le_u64(bytes, 32),
        marks,
        available: le_i128(bytes, 64),
        frozen: le_i128(bytes, 80),
    };
    let fits = entry.depth <= DEPTH_MAX && entry.timestamp_ms <= FIELD_48_MAX && entry.source <= FIELD_48_MAX;
    let linked = entry.previous == previous && entry.depth == depth && (previous == NONE || previous <= FIELD_48_MAX);
    (fits && linked).then_some(entry)
}

fn damaged(path: &Path, what: &str) -> HistoryError {
    HistoryError::Invalid(format!(
        "history index {} (version 1): {what} is damaged; it cannot be converted to version 2: \
         delete the history directory to rebuild the index from the journal",
        path.display()
    ))
}
