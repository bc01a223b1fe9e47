//! The history index: coffer's own compact files over the journal, the
//! embedded default store (docs/HISTORY.md, "The index").
//!
//! Per transaction it appends a 48-byte record and its binary encoding;
//! per account change a 96-byte entry with the balances after it and links
//! to the account's previous entry and to marks further back; per id a
//! pair in a sorted run. Names live once, in an append-only account table.
//! A manifest, replaced atomically after every file is synced, says how
//! much of each file is the index and where the projection stands: a
//! crash leaves whatever lies beyond it, which opening cuts off.
//! Holds and orders (mutable, low-volume) sit in a small SQLite file
//! written before the manifest with idempotent statements.

mod files;
mod heads;
mod ids;
mod migrate;
mod reader;
mod writer;

use crate::changes::Cursor;
use crate::error::HistoryError;
use crate::sqlite::SqliteStore;
use files::{
    io_error, read_at, AppendFile, EntryRecord, Manifest, ACCOUNTS_FILE, BLOB_FILE, ENTRIES_FILE, ENTRY_BYTES,
    SIDECAR_FILE, TRANSACTIONS_FILE, TRANSACTION_BYTES,
};
use ids::{run_generation, Run};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use reader::{ExportBatch, IndexReader};
pub use writer::IndexWriter;

/// Where an index lives, and the one open copy of it in this process that
/// the writer and every reader share.
#[derive(Debug)]
pub struct IndexLocation {
    directory: PathBuf,
    open: Mutex<Option<Arc<Shared>>>,
}

impl IndexLocation {
    pub fn new(directory: PathBuf) -> Self {
        IndexLocation {
            directory,
            open: Mutex::new(None),
        }
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    pub fn open_writer(self: &Arc<Self>) -> Result<IndexWriter, HistoryError> {
        let (writer, shared) = IndexWriter::open(Arc::clone(self))?;
        *self.open.lock().expect("index lock") = Some(shared);
        Ok(writer)
    }

    pub fn open_reader(self: &Arc<Self>) -> Result<IndexReader, HistoryError> {
        if self.open.lock().expect("index lock").is_none() {
            // No writer in this process yet (a tool reading a data
            // directory): opening recovers the index as the writer would.
            drop(self.open_writer()?);
        }
        let sidecar = SqliteStore::open(&self.directory.join(SIDECAR_FILE), false)?;
        Ok(IndexReader::new(Arc::clone(self), sidecar))
    }

    /// The index as last published.
    fn shared(&self) -> Arc<Shared> {
        let open = self.open.lock().expect("index lock");
        Arc::clone(open.as_ref().expect("an index is opened before it is read"))
    }
}

/// Read handles and what readers may see: published after each manifest.
#[derive(Debug)]
struct Shared {
    entries: File,
    transactions: File,
    blob: File,
    view: RwLock<View>,
}

#[derive(Debug, Default)]
struct View {
    /// Where the projection stood at the manifest (the export copies up to it).
    cursor: Cursor,
    entries: u64,
    transactions: u64,
    blob_bytes: u64,
    runs: Vec<Arc<Run>>,
    /// Each account's newest entry (`NONE` for none), by position.
    heads: Vec<u64>,
    accounts: Accounts,
}

/// The append-only account table: names and units by position.
#[derive(Debug, Default)]
struct Accounts {
    names: Vec<Box<str>>,
    units: Vec<u16>,
    unit_names: Vec<Box<str>>,
    by_name: HashMap<Box<str>, u32>,
    unit_by_name: HashMap<Box<str>, u16>,
}

impl Accounts {
    fn push(&mut self, name: &str, unit: &str) {
        let position = u32::try_from(self.names.len()).expect("account positions are 32-bit");
        let unit_index = match self.unit_by_name.get(unit) {
            Some(index) => *index,
            None => {
                let index = u16::try_from(self.unit_names.len()).expect("units fit 16 bits");
                self.unit_names.push(unit.into());
                self.unit_by_name.insert(unit.into(), index);
                index
            }
        };
        self.names.push(name.into());
        self.units.push(unit_index);
        self.by_name.insert(name.into(), position);
    }

    fn find(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    fn name(&self, position: u32) -> &str {
        &self.names[position as usize]
    }

    fn unit(&self, position: u32) -> &str {
        &self.unit_names[self.units[position as usize] as usize]
    }

    fn len(&self) -> usize {
        self.names.len()
    }
}

/// Reads the account table: `count` accounts in `bytes`.
fn load_accounts(path: &Path, bytes: &[u8], count: u64) -> Result<Accounts, HistoryError> {
    let mut accounts = Accounts::default();
    let mut reader = coffer_core::codec::Reader::new(bytes);
    while !reader.is_empty() {
        let name = reader.str();
        let unit = reader.str();
        match (name, unit) {
            (Ok(name), Ok(unit)) => accounts.push(name, unit),
            _ => {
                return Err(HistoryError::Invalid(format!(
                    "history index {}: a malformed account record",
                    path.display()
                )))
            }
        }
    }
    if accounts.len() as u64 != count {
        return Err(HistoryError::Invalid(format!(
            "history index {}: {} accounts, the manifest counts {count}",
            path.display(),
            accounts.len()
        )));
    }
    Ok(accounts)
}

/// Calls `each` for every entry in `from..to`, reading in large chunks.
fn scan_entries(
    file: &File,
    from: u64,
    to: u64,
    mut each: impl FnMut(u64, EntryRecord) -> Result<(), HistoryError>,
) -> Result<(), HistoryError> {
    const CHUNK_ENTRIES: u64 = 16_384;
    let mut id = from;
    while id < to {
        let count = (to - id).min(CHUNK_ENTRIES);
        let bytes = read_at(file, id * ENTRY_BYTES as u64, (count as usize) * ENTRY_BYTES)?;
        for record in bytes.chunks_exact(ENTRY_BYTES) {
            each(id, EntryRecord::decode(record))?;
            id += 1;
        }
    }
    Ok(())
}

/// Deletes files of the index that the manifest does not list (runs and
/// heads checkpoints a crash left half-made or a merge made obsolete, and
/// version 1's entries once the index is converted).
fn remove_unlisted(directory: &Path, manifest: &Manifest) -> Result<(), HistoryError> {
    let listing = std::fs::read_dir(directory).map_err(|error| io_error(directory, error))?;
    for item in listing {
        let item = item.map_err(|error| io_error(directory, error))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let listed = if name == migrate::ENTRIES_FILE_V1 {
            false
        } else if let Some(generation) = run_generation(name) {
            manifest.runs.iter().any(|run| run.generation == generation)
        } else if let Some(generation) = heads::generation(name) {
            manifest.heads.is_some_and(|(current, _)| current == generation)
        } else {
            continue;
        };
        if !listed {
            std::fs::remove_file(item.path()).map_err(|error| io_error(&item.path(), error))?;
        }
    }
    Ok(())
}

fn open_files(directory: &Path, manifest: &Manifest) -> Result<[AppendFile; 4], HistoryError> {
    Ok([
        AppendFile::open(directory.join(ENTRIES_FILE), manifest.entries * ENTRY_BYTES as u64)?,
        AppendFile::open(
            directory.join(TRANSACTIONS_FILE),
            manifest.transactions * TRANSACTION_BYTES as u64,
        )?,
        AppendFile::open(directory.join(BLOB_FILE), manifest.blob_bytes)?,
        AppendFile::open(directory.join(ACCOUNTS_FILE), manifest.accounts_bytes)?,
    ])
}

impl PartialEq for IndexLocation {
    fn eq(&self, other: &Self) -> bool {
        self.directory == other.directory
    }
}

impl Eq for IndexLocation {}
