//! The index's files: fixed-size records appended in history order, and a
//! manifest that says how much of each file is committed. Little-endian
//! throughout; the layouts below are the on-disk format (version 2; an
//! index of version 1 is converted when opened, `migrate.rs`).

use crate::changes::Cursor;
use crate::error::HistoryError;
use coffer_journal::Position;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Version 2's entries (version 1's file, `entries`, had other links).
pub const ENTRIES_FILE: &str = "entries-v2";
pub const TRANSACTIONS_FILE: &str = "transactions";
pub const BLOB_FILE: &str = "blob";
pub const ACCOUNTS_FILE: &str = "accounts";
pub const MANIFEST_FILE: &str = "manifest";
pub const SIDECAR_FILE: &str = "holds-orders.sqlite";

/// "No entry" in a link field.
pub const NONE: u64 = u64::MAX;

/// Marks: every entry links to the account's latest earlier entry whose
/// depth is a multiple of each of these. Each stride is eight times the one
/// below, so a search back from the head takes at most seven steps per level
/// (and one read that ends the level) instead of one per entry: a balance at
/// a past instant of an account with a thousand entries reads about fifteen.
pub const MARK_STRIDES: [u64; MARK_LEVELS] = [8, 64, 512, 4_096, 32_768, 262_144];
pub const MARK_LEVELS: usize = 6;
const _: () = {
    let mut level = 0;
    while level < MARK_LEVELS {
        // Powers of two: a mask, not a division, per entry.
        assert!(MARK_STRIDES[level].is_power_of_two());
        assert!(level == 0 || MARK_STRIDES[level] == 8 * MARK_STRIDES[level - 1]);
        level += 1;
    }
};

/// Entry ids, transaction numbers, blob offsets and timestamps are stored in
/// 48 bits, depths in 40 (the all-ones link is `NONE`): 2.8 × 10^14 entries,
/// a blob of 256 TiB, instants until the year 10889, 10^12 entries an account.
pub const FIELD_48_MAX: u64 = (1 << 48) - 2;
pub const DEPTH_MAX: u64 = (1 << 40) - 1;

pub fn io_error(path: &Path, error: std::io::Error) -> HistoryError {
    HistoryError::Invalid(format!("history index {}: {error}", path.display()))
}

/// One account change: 96 bytes.
///
/// | offset | field |
/// |---|---|
/// | 0 | account position (u32) |
/// | 4 | kind (u8): 0 transaction, 1 hold expiry |
/// | 5 | depth (u40): the account's entries up to this one |
/// | 10 | timestamp_ms (u48) |
/// | 16 | source (u48): transaction number, or blob offset of the expiry |
/// | 22 | previous entry of the account (u48, all ones for none) |
/// | 28, 34, … 58 | marks, one per `MARK_STRIDES` (u48, all ones for none) |
/// | 64, 80 | available, frozen after (i128) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRecord {
    pub account: u32,
    pub expiry: bool,
    pub depth: u64,
    pub timestamp_ms: u64,
    pub source: u64,
    pub previous: u64,
    pub marks: [u64; MARK_LEVELS],
    pub available: i128,
    pub frozen: i128,
}

pub const ENTRY_BYTES: usize = 96;
const LINKS_AT: usize = 22;
const _: () = assert!(LINKS_AT == 4 + 1 + 5 + 6 + 6);
const _: () = assert!(ENTRY_BYTES == LINKS_AT + 6 * (1 + MARK_LEVELS) + 2 * 16);
const _: () = assert!(DEPTH_MAX < (1 << 40) && FIELD_48_MAX < (1 << 48) - 1);

impl EntryRecord {
    /// Panics on a field beyond its width (see `FIELD_48_MAX`): the writer
    /// refuses a write whose entries, transactions or blob would pass it;
    /// engine timestamps and an account's depth cannot reach theirs.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.depth <= DEPTH_MAX && self.timestamp_ms <= FIELD_48_MAX && self.source <= FIELD_48_MAX);
        let mut bytes = [0u8; ENTRY_BYTES];
        bytes[0..4].copy_from_slice(&self.account.to_le_bytes());
        bytes[4] = u8::from(self.expiry);
        bytes[5..10].copy_from_slice(&self.depth.to_le_bytes()[..5]);
        put_u48(&mut bytes, 10, self.timestamp_ms);
        put_u48(&mut bytes, 16, self.source);
        for (at, link) in (LINKS_AT..)
            .step_by(6)
            .zip([self.previous].into_iter().chain(self.marks))
        {
            assert!(link == NONE || link <= FIELD_48_MAX);
            put_u48(&mut bytes, at, link & LINK_NONE);
        }
        bytes[64..80].copy_from_slice(&self.available.to_le_bytes());
        bytes[80..96].copy_from_slice(&self.frozen.to_le_bytes());
        out.extend_from_slice(&bytes);
    }

    pub fn decode(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), ENTRY_BYTES);
        let link = |at: usize| match le_u48(bytes, at) {
            LINK_NONE => NONE,
            id => id,
        };
        let mut depth = [0u8; 8];
        depth[..5].copy_from_slice(&bytes[5..10]);
        EntryRecord {
            account: le_u32(bytes, 0),
            expiry: bytes[4] == 1,
            depth: u64::from_le_bytes(depth),
            timestamp_ms: le_u48(bytes, 10),
            source: le_u48(bytes, 16),
            previous: link(LINKS_AT),
            marks: std::array::from_fn(|level| link(LINKS_AT + 6 * (1 + level))),
            available: le_i128(bytes, 64),
            frozen: le_i128(bytes, 80),
        }
    }
}

/// `NONE` in a 48-bit link.
const LINK_NONE: u64 = (1 << 48) - 1;

fn put_u48(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 6].copy_from_slice(&value.to_le_bytes()[..6]);
}

fn le_u48(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word[..6].copy_from_slice(&bytes[at..at + 6]);
    u64::from_le_bytes(word)
}

/// One stored transaction: 48 bytes.
///
/// | offset | field |
/// |---|---|
/// | 0 | sequence (u64) |
/// | 8 | timestamp_ms (u64) |
/// | 16 | blob offset of `Transaction::encode` (u64) |
/// | 24 | its length (u32) |
/// | 28 | entry count (u32) |
/// | 32 | first entry (u64) |
/// | 40 | committed (u8), 41 rejection code (u8), 42 op index (u16), 44 zero (u32) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionRecord {
    pub sequence: u64,
    pub timestamp_ms: u64,
    pub blob_offset: u64,
    pub blob_len: u32,
    pub entry_count: u32,
    pub first_entry: u64,
    pub committed: bool,
    pub code: u8,
    pub op_index: u16,
}

pub const TRANSACTION_BYTES: usize = 48;
const _: () = assert!(TRANSACTION_BYTES == 3 * 8 + 2 * 4 + 8 + 1 + 1 + 2 + 4);

impl TransactionRecord {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        for value in [self.sequence, self.timestamp_ms, self.blob_offset] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&self.blob_len.to_le_bytes());
        out.extend_from_slice(&self.entry_count.to_le_bytes());
        out.extend_from_slice(&self.first_entry.to_le_bytes());
        out.push(u8::from(self.committed));
        out.push(self.code);
        out.extend_from_slice(&self.op_index.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        debug_assert_eq!(out.len() - start, TRANSACTION_BYTES);
    }

    pub fn decode(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), TRANSACTION_BYTES);
        TransactionRecord {
            sequence: le_u64(bytes, 0),
            timestamp_ms: le_u64(bytes, 8),
            blob_offset: le_u64(bytes, 16),
            blob_len: le_u32(bytes, 24),
            entry_count: le_u32(bytes, 28),
            first_entry: le_u64(bytes, 32),
            committed: bytes[40] == 1,
            code: bytes[41],
            op_index: u16::from_le_bytes([bytes[42], bytes[43]]),
        }
    }
}

pub fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

pub fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

pub fn le_i128(bytes: &[u8], at: usize) -> i128 {
    i128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

/// A file written only at its end, through a buffer, by one writer.
pub struct AppendFile {
    path: PathBuf,
    file: File,
    /// Bytes in the file, buffered ones excluded.
    written: u64,
    buffer: Vec<u8>,
}

impl AppendFile {
    /// Opens (creating) `path` and cuts it to `committed` bytes: whatever a
    /// crash left beyond the manifest is not part of the index.
    pub fn open(path: PathBuf, committed: u64) -> Result<Self, HistoryError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| io_error(&path, error))?;
        let length = file.metadata().map_err(|error| io_error(&path, error))?.len();
        if length < committed {
            return Err(HistoryError::Invalid(format!(
                "history index {}: {length} bytes, the manifest counts {committed}; \
                 the index is damaged: delete the history directory to rebuild it from the journal",
                path.display()
            )));
        }
        if length > committed {
            file.set_len(committed).map_err(|error| io_error(&path, error))?;
        }
        Ok(AppendFile {
            path,
            file,
            written: committed,
            buffer: Vec::new(),
        })
    }

    /// The length including what is buffered.
    pub fn len(&self) -> u64 {
        self.written + self.buffer.len() as u64
    }

    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// Writes the buffer and makes the file durable.
    pub fn sync(&mut self) -> Result<(), HistoryError> {
        if !self.buffer.is_empty() {
            self.file
                .write_all_at(&self.buffer, self.written)
                .map_err(|error| io_error(&self.path, error))?;
            self.written += self.buffer.len() as u64;
            self.buffer.clear();
        }
        self.file.sync_data().map_err(|error| io_error(&self.path, error))
    }

    /// A handle for readers (positioned reads never move a shared offset).
    pub fn reader(&self) -> Result<File, HistoryError> {
        self.file.try_clone().map_err(|error| io_error(&self.path, error))
    }
}

/// Reads `len` bytes at `offset`.
pub fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, HistoryError> {
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, offset)
        .map_err(|error| HistoryError::Invalid(format!("history index read at {offset}: {error}")))?;
    Ok(bytes)
}

/// A sorted run of the id index: `generation` names its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    pub generation: u64,
    pub count: u64,
}

/// How much of each file is the index, and where the projection is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub cursor: Cursor,
    pub entries: u64,
    pub transactions: u64,
    pub blob_bytes: u64,
    pub accounts: u64,
    pub accounts_bytes: u64,
    /// The newest heads checkpoint: its generation and the entries it covers.
    pub heads: Option<(u64, u64)>,
    /// Id runs, oldest (largest) first.
    pub runs: Vec<RunInfo>,
    /// The next file generation to use.
    pub generation_next: u64,
}

const MANIFEST_MAGIC: &[u8; 8] = b"CFHIDX02";
/// Version 1's manifest has the same fields (`migrate.rs` converts it).
const MANIFEST_MAGIC_V1: &[u8; 8] = b"CFHIDX01";

/// A committed manifest, by its format version.
pub enum Stored {
    Version1(Manifest),
    Current(Manifest),
}
/// Runs a manifest lists at most: they merge four of a size at a time, so
/// there are at most three per size class (20 classes cover 4^20 writes).
pub const RUNS_MAX: usize = 64;

impl Manifest {
    /// A new file generation (for a run or a heads checkpoint).
    pub fn take_generation(&mut self) -> u64 {
        let generation = self.generation_next;
        self.generation_next += 1;
        generation
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MANIFEST_MAGIC);
        let cursor = &self.cursor;
        let heads = self.heads.unwrap_or((NONE, 0));
        for value in [
            cursor.position.segment,
            cursor.position.offset,
            cursor.sequence_next,
            cursor.history_next as u64,
            cursor.timestamp_ms,
            self.entries,
            self.transactions,
            self.blob_bytes,
            self.accounts,
            self.accounts_bytes,
            heads.0,
            heads.1,
            self.generation_next,
            self.runs.len() as u64,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        for run in &self.runs {
            out.extend_from_slice(&run.generation.to_le_bytes());
            out.extend_from_slice(&run.count.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Stored, String> {
        let fixed = 8 + 14 * 8;
        let current = match bytes.get(..8) {
            Some(magic) if magic == MANIFEST_MAGIC => true,
            Some(magic) if magic == MANIFEST_MAGIC_V1 => false,
            _ => return Err("not a coffer history index manifest".into()),
        };
        if bytes.len() < fixed + 4 {
            return Err("a manifest cut short".into());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != le_u32(crc, 0) {
            return Err("manifest checksum mismatch".into());
        }
        let field = |n: usize| le_u64(body, 8 + n * 8);
        let run_count = field(13) as usize;
        if run_count > RUNS_MAX || body.len() != fixed + run_count * 16 {
            return Err("manifest length does not match its run count".into());
        }
        let runs = (0..run_count)
            .map(|n| RunInfo {
                generation: le_u64(body, fixed + n * 16),
                count: le_u64(body, fixed + n * 16 + 8),
            })
            .collect();
        let manifest = Manifest {
            cursor: Cursor {
                position: Position {
                    segment: field(0),
                    offset: field(1),
                },
                sequence_next: field(2),
                history_next: field(3) as i64,
                timestamp_ms: field(4),
            },
            entries: field(5),
            transactions: field(6),
            blob_bytes: field(7),
            accounts: field(8),
            accounts_bytes: field(9),
            heads: (field(10) != NONE).then(|| (field(10), field(11))),
            generation_next: field(12),
            runs,
        };
        Ok(match current {
            true => Stored::Current(manifest),
            false => Stored::Version1(manifest),
        })
    }

    /// The committed manifest, or `None` for a new index.
    pub fn read(directory: &Path) -> Result<Option<Stored>, HistoryError> {
        let path = directory.join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Manifest::decode(&bytes)
                .map(Some)
                .map_err(|reason| HistoryError::Invalid(format!("history index {}: {reason}", path.display()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(&path, error)),
        }
    }

    /// Replaces the manifest atomically: temp file, fsync, rename, fsync of
    /// the directory. A crash leaves the old one or this one.
    pub fn write(&self, directory: &Path) -> Result<(), HistoryError> {
        let path = directory.join(MANIFEST_FILE);
        let temporary = directory.join(format!("{MANIFEST_FILE}.tmp"));
        write_durably(&temporary, &self.encode())?;
        std::fs::rename(&temporary, &path).map_err(|error| io_error(&path, error))?;
        coffer_journal::sync_directory(directory)?;
        Ok(())
    }
}

/// Writes a new file and fsyncs it (the caller renames or lists it).
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), HistoryError> {
    let mut file = File::create(path).map_err(|error| io_error(path, error))?;
    file.write_all(bytes).map_err(|error| io_error(path, error))?;
    file.sync_all().map_err(|error| io_error(path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_the_manifest_read_back_what_was_written() {
        let entry = EntryRecord {
            account: 7,
            expiry: true,
            depth: 3,
            timestamp_ms: 1_700_000_000_000,
            source: 42,
            previous: 10,
            marks: [NONE, 5, NONE, 1 << 40, FIELD_48_MAX, 0],
            available: -(1 << 100),
            frozen: i128::MAX,
        };
        let mut bytes = Vec::new();
        entry.encode(&mut bytes);
        assert_eq!(EntryRecord::decode(&bytes), entry);
        let widest = EntryRecord {
            depth: DEPTH_MAX,
            timestamp_ms: FIELD_48_MAX,
            source: FIELD_48_MAX,
            previous: FIELD_48_MAX,
            ..entry
        };
        let mut bytes = Vec::new();
        widest.encode(&mut bytes);
        assert_eq!(EntryRecord::decode(&bytes), widest);
        let transaction = TransactionRecord {
            sequence: 9,
            timestamp_ms: 8,
            blob_offset: 1 << 40,
            blob_len: 77,
            entry_count: 2,
            first_entry: 5,
            committed: false,
            code: 3,
            op_index: 65_000,
        };
        let mut bytes = Vec::new();
        transaction.encode(&mut bytes);
        assert_eq!(TransactionRecord::decode(&bytes), transaction);
        let manifest = Manifest {
            entries: 5,
            heads: Some((3, 4)),
            runs: vec![RunInfo {
                generation: 1,
                count: 2,
            }],
            generation_next: 4,
            ..Manifest::default()
        };
        let mut encoded = manifest.encode();
        assert!(matches!(Manifest::decode(&encoded), Ok(Stored::Current(read)) if read == manifest));
        encoded[..8].copy_from_slice(MANIFEST_MAGIC_V1);
        let crc = crc32c::crc32c(&encoded[..encoded.len() - 4]);
        let at = encoded.len() - 4;
        encoded[at..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(Manifest::decode(&encoded), Ok(Stored::Version1(read)) if read == manifest));
        encoded[20] ^= 1;
        assert!(Manifest::decode(&encoded).is_err());
    }
}
