//! Account heads: where each account's next entry links to, and the
//! checkpoints of them that bound the scan at open.

use super::files::{io_error, le_u64, write_durably, EntryRecord, Manifest, MARK_LEVELS, MARK_STRIDES, NONE};
use crate::error::HistoryError;
use std::path::{Path, PathBuf};

/// A head in a checkpoint: id, depth and marks (u64 each).
const HEAD_BYTES: usize = 8 * (2 + MARK_LEVELS);

pub(super) fn path(directory: &Path, generation: u64) -> PathBuf {
    directory.join(format!("heads-{generation:016}"))
}

/// The generation of a checkpoint file's name.
pub(super) fn generation(name: &str) -> Option<u64> {
    name.strip_prefix("heads-")?.parse().ok()
}

/// What the next entry of an account links to: its newest entry, with
/// that entry's depth and marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) id: u64,
    depth: u64,
    marks: [u64; MARK_LEVELS],
}

impl Default for Head {
    fn default() -> Self {
        Head {
            id: NONE,
            depth: 0,
            marks: [NONE; MARK_LEVELS],
        }
    }
}

impl Head {
    /// The links of the entry that follows this head.
    pub(super) fn next_links(&self) -> (u64, u64, [u64; MARK_LEVELS]) {
        let marks = std::array::from_fn(|level| {
            // Strides are powers of two: a mask, not a division per entry.
            if self.id != NONE && self.depth & (MARK_STRIDES[level] - 1) == 0 {
                self.id
            } else {
                self.marks[level]
            }
        });
        (self.id, self.depth + 1, marks)
    }

    pub(super) fn of(id: u64, entry: &EntryRecord) -> Head {
        Head {
            id,
            depth: entry.depth,
            marks: entry.marks,
        }
    }
}

pub(super) fn set(heads: &mut Vec<Head>, account: u32, head: Head) {
    let position = account as usize;
    if position >= heads.len() {
        heads.resize(position + 1, Head::default());
    }
    heads[position] = head;
}

/// Writes the heads as a new checkpoint covering the manifest's entries
/// and lists it in the manifest (not yet written).
pub(super) fn write_checkpoint(directory: &Path, manifest: &mut Manifest, heads: &[Head]) -> Result<(), HistoryError> {
    let generation = manifest.take_generation();
    let mut bytes = Vec::with_capacity(heads.len() * HEAD_BYTES + 4);
    for head in heads {
        for value in [head.id, head.depth].into_iter().chain(head.marks) {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_durably(&path(directory, generation), &bytes)?;
    manifest.heads = Some((generation, manifest.entries));
    Ok(())
}

pub(super) fn read_checkpoint(path: &Path) -> Result<Vec<Head>, HistoryError> {
    let bytes = std::fs::read(path).map_err(|error| io_error(path, error))?;
    let damaged = || {
        HistoryError::Invalid(format!(
            "history index {}: damaged; delete the history directory to rebuild it from the journal",
            path.display()
        ))
    };
    if bytes.len() < 4 || (bytes.len() - 4) % HEAD_BYTES != 0 {
        return Err(damaged());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(damaged());
    }
    Ok(body
        .chunks_exact(HEAD_BYTES)
        .map(|head| {
            let field = |n: usize| le_u64(head, n * 8);
            Head {
                id: field(0),
                depth: field(1),
                marks: std::array::from_fn(|level| field(2 + level)),
            }
        })
        .collect())
}
