//! The index's files: fixed-size records appended in history order, and a
//! manifest that says how much of each file is committed. Little-endian
//! throughout; the layouts below are the on-disk format (version 1).

use crate::changes::Cursor;
use crate::error::HistoryError;
use coffer_journal::Position;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const ENTRIES_FILE: &str = "entries";
pub const TRANSACTIONS_FILE: &str = "transactions";
pub const BLOB_FILE: &str = "blob";
pub const ACCOUNTS_FILE: &str = "accounts";
pub const MANIFEST_FILE: &str = "manifest";
pub const SIDECAR_FILE: &str = "holds-orders.sqlite";

/// "No entry" in a link field.
pub const NONE: u64 = u64::MAX;

/// Marks: every entry links to the account's latest earlier entry whose
/// depth is a multiple of each of these, so a search back from the head
/// takes at most about 64 steps per level instead of one per entry.
pub const MARK_STRIDES: [u64; 3] = [64, 64 * 64, 64 * 64 * 64];
const _: () = assert!(
    MARK_STRIDES[0] < MARK_STRIDES[1]
        && MARK_STRIDES[1] < MARK_STRIDES[2]
        && MARK_STRIDES[0].is_power_of_two()
        && MARK_STRIDES[1].is_power_of_two()
        && MARK_STRIDES[2].is_power_of_two()
);

pub fn io_error(path: &Path, error: std::io::Error) -> HistoryError {
    HistoryError::Invalid(format!("history index {}: {error}", path.display()))
}

/// One account change: 96 bytes.
///
/// | offset | field |
/// |---|---|
/// | 0 | account position (u32) |
/// | 4 | kind (u32): 0 transaction, 1 hold expiry |
/// | 8 | depth (u64): the account's entries up to this one |
/// | 16 | timestamp_ms (u64) |
/// | 24 | source (u64): transaction number, or blob offset of the expiry |
/// | 32 | previous entry of the account (u64, `NONE`) |
/// | 40, 48, 56 | marks, one per `MARK_STRIDES` (u64, `NONE`) |
/// | 64, 80 | available, frozen after (i128) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRecord {
    pub account: u32,
    pub expiry: bool,
    pub depth: u64,
    pub timestamp_ms: u64,
    pub source: u64,
    pub previous: u64,
    pub marks: [u64; 3],
    pub available: i128,
    pub frozen: i128,
}

pub const ENTRY_BYTES: usize = 96;
const _: () = assert!(ENTRY_BYTES == 4 + 4 + 7 * 8 + 2 * 16);

impl EntryRecord {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut bytes = [0u8; ENTRY_BYTES];
        bytes[0..4].copy_from_slice(&self.account.to_le_bytes());
        bytes[4..8].copy_from_slice(&u32::from(self.expiry).to_le_bytes());
        let words = [self.depth, self.timestamp_ms, self.source, self.previous];
        for (at, value) in (8..).step_by(8).zip(words.into_iter().chain(self.marks)) {
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        bytes[64..80].copy_from_slice(&self.available.to_le_bytes());
        bytes[80..96].copy_from_slice(&self.frozen.to_le_bytes());
        out.extend_from_slice(&bytes);
    }

    pub fn decode(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), ENTRY_BYTES);
        EntryRecord {
            account: le_u32(bytes, 0),
            expiry: le_u32(bytes, 4) == 1,
            depth: le_u64(bytes, 8),
            timestamp_ms: le_u64(bytes, 16),
            source: le_u64(bytes, 24),
            previous: le_u64(bytes, 32),
            marks: [le_u64(bytes, 40), le_u64(bytes, 48), le_u64(bytes, 56)],
            available: le_i128(bytes, 64),
            frozen: le_i128(bytes, 80),
        }
    }
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

fn le_i128(bytes: &[u8], at: usize) -> i128 {
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

const MANIFEST_MAGIC: &[u8; 8] = b"CFHIDX01";
/// Runs a manifest lists at most: they merge four of a size at a time, so
/// there are at most three per size class (20 classes cover 4^20 writes).
pub const RUNS_MAX: usize = 64;

impl Manifest {
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

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let fixed = 8 + 14 * 8;
        if bytes.len() < fixed + 4 || &bytes[..8] != MANIFEST_MAGIC {
            return Err("not a coffer history index manifest".into());
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
        Ok(Manifest {
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
        })
    }

    /// The committed manifest, or `None` for a new index.
    pub fn read(directory: &Path) -> Result<Option<Self>, HistoryError> {
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
            marks: [NONE, 5, NONE],
            available: -(1 << 100),
            frozen: i128::MAX,
        };
        let mut bytes = Vec::new();
        entry.encode(&mut bytes);
        assert_eq!(EntryRecord::decode(&bytes), entry);
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
        assert_eq!(Manifest::decode(&encoded), Ok(manifest));
        encoded[20] ^= 1;
        assert!(Manifest::decode(&encoded).is_err());
    }
}
