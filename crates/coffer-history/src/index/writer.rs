//! The projector's side of the index: appends one write's records, files
//! its ids in a new run, syncs, then replaces the manifest and publishes.

use super::files::{
    io_error, read_at, AppendFile, EntryRecord, Manifest, Stored, TransactionRecord, ACCOUNTS_FILE, FIELD_48_MAX, NONE,
    SIDECAR_FILE,
};
use super::heads::{self, Head};
use super::ids::{run_path, Run};
use super::{load_accounts, open_files, remove_unlisted, scan_entries, IndexLocation, Shared, View};
use crate::changes::{Changes, Cursor};
use crate::compact::{verdict_parts, Source};
use crate::error::HistoryError;
use crate::sqlite::SqliteStore;
use crate::store::Writer;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// A heads checkpoint is written once this many entries (or four per
/// account, if more) have been added since the last: opening reads the
/// checkpoint and scans only the entries after it.
const HEADS_CHECKPOINT_ENTRIES_MIN: u64 = 1_000_000;
/// Id runs merged at once: each id is rewritten about log4(ids / write)
/// times (half as often as merging pairs), and a lookup reads at most three
/// runs per size.
const MERGE_FAN_IN: usize = 4;
const _: () = assert!(3 * 20 + MERGE_FAN_IN <= super::files::RUNS_MAX);
/// How many entries ahead the writer loads account heads.
const HEADS_PREFETCH_AHEAD: usize = 16;

pub struct IndexWriter {
    location: Arc<IndexLocation>,
    shared: Arc<Shared>,
    /// `None` until the first write of a new index.
    manifest: Option<Manifest>,
    entries: AppendFile,
    transactions: AppendFile,
    blob: AppendFile,
    accounts: AppendFile,
    /// Account count in `accounts` (published with the manifest).
    account_count: u64,
    heads: Vec<Head>,
    runs: Vec<Arc<Run>>,
    sidecar: SqliteStore,
    /// Scratch: this write's (id hash, transaction number) pairs.
    pairs: Vec<(u64, u64)>,
    /// Scratch: the (account, entry) heads this write moved, in order.
    touched: Vec<(u32, u64)>,
}

impl IndexWriter {
    /// Opens the index at `location`, cutting off what a crash left beyond
    /// its manifest, and returns what its readers share.
    pub(super) fn open(location: Arc<IndexLocation>) -> Result<(IndexWriter, Arc<Shared>), HistoryError> {
        let directory = location.directory().to_owned();
        std::fs::create_dir_all(&directory).map_err(|error| io_error(&directory, error))?;
        let stored = match Manifest::read(&directory)? {
            Some(Stored::Version1(old)) => Some(super::migrate::from_version_1(&directory, old)?),
            Some(Stored::Current(manifest)) => Some(manifest),
            None => None,
        };
        let manifest = stored.clone().unwrap_or_default();
        remove_unlisted(&directory, &manifest)?;
        let [entries, transactions, blob, accounts] = open_files(&directory, &manifest)?;
        let accounts_path = directory.join(ACCOUNTS_FILE);
        let account_bytes = read_at(&accounts.reader()?, 0, manifest.accounts_bytes as usize)?;
        let account_table = load_accounts(&accounts_path, &account_bytes, manifest.accounts)?;
        let mut heads = match manifest.heads {
            Some((generation, _)) => heads::read_checkpoint(&heads::path(&directory, generation))?,
            None => Vec::new(),
        };
        let entries_reader = entries.reader()?;
        let scanned_from = manifest.heads.map_or(0, |(_, covered)| covered);
        scan_entries(&entries_reader, scanned_from, manifest.entries, |id, entry| {
            heads::set(&mut heads, entry.account, Head::of(id, &entry));
            Ok(())
        })?;
        let runs = manifest
            .runs
            .iter()
            .map(|info| Run::open(&directory, *info).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sidecar = SqliteStore::open(&directory.join(SIDECAR_FILE), true)?;
        // The manifest may pass its rows only once they are on disk.
        sidecar.set_synchronous_full()?;
        let view = View {
            cursor: manifest.cursor,
            entries: manifest.entries,
            transactions: manifest.transactions,
            blob_bytes: manifest.blob_bytes,
            runs: runs.clone(),
            heads: heads.iter().map(|head| head.id).collect(),
            accounts: account_table,
        };
        let shared = Arc::new(Shared {
            entries: entries_reader,
            transactions: transactions.reader()?,
            blob: blob.reader()?,
            view: RwLock::new(view),
        });
        let writer = IndexWriter {
            location,
            shared: Arc::clone(&shared),
            account_count: manifest.accounts,
            manifest: stored,
            entries,
            transactions,
            blob,
            accounts,
            heads,
            runs,
            sidecar,
            pairs: Vec::new(),
            touched: Vec::new(),
        };
        Ok((writer, shared))
    }

    fn directory(&self) -> &Path {
        self.location.directory()
    }

    /// Appends the write's records to the files' buffers and notes the new
    /// heads of the accounts it touched, in order, in `touched`.
    fn append(&mut self, changes: &Changes, manifest: &Manifest) {
        let compact = &changes.compact;
        for account in &compact.accounts {
            assert_eq!(
                u64::from(account.position),
                self.account_count,
                "accounts arrive in order"
            );
            let mut writer = coffer_core::codec::Writer::new(self.accounts.buffer());
            writer.str(&account.name);
            writer.str(&account.unit);
            self.account_count += 1;
        }
        let transaction_base = manifest.transactions;
        let blob_base = self.blob.len();
        self.pairs.clear();
        for (number, transaction) in compact.transactions.iter().enumerate() {
            assert!(transaction.sequence >= manifest.cursor.sequence_next);
            let (committed, code, op_index) = verdict_parts(transaction.verdict);
            let record = TransactionRecord {
                sequence: transaction.sequence,
                timestamp_ms: transaction.timestamp_ms,
                blob_offset: blob_base + u64::from(transaction.encoded.start),
                blob_len: transaction.encoded.end - transaction.encoded.start,
                entry_count: transaction.entry_count,
                first_entry: manifest.entries + transaction.first_entry,
                committed,
                code,
                op_index,
            };
            record.encode(self.transactions.buffer());
            self.pairs.push((transaction.id_hash, transaction_base + number as u64));
        }
        self.touched.clear();
        for (offset, entry) in compact.entries.iter().enumerate() {
            // Heads are read at random (by account): the memory latency, not
            // the work, is the cost, so load the ones a few entries ahead.
            if let Some(ahead) = compact.entries.get(offset + HEADS_PREFETCH_AHEAD) {
                if let Some(head) = self.heads.get(ahead.account as usize) {
                    coffer_core::prefetch(head);
                }
            }
            let id = manifest.entries + offset as u64;
            let head = self.heads.get(entry.account as usize).copied().unwrap_or_default();
            let (previous, depth, marks) = head.next_links();
            let (expiry, source) = match entry.source {
                Source::Transaction(number) => (false, transaction_base + u64::from(number)),
                Source::Expired { offset } => (true, blob_base + u64::from(offset)),
            };
            let record = EntryRecord {
                account: entry.account,
                expiry,
                depth,
                timestamp_ms: entry.timestamp_ms,
                source,
                previous,
                marks,
                available: entry.available,
                frozen: entry.frozen,
            };
            record.encode(self.entries.buffer());
            heads::set(&mut self.heads, entry.account, Head::of(id, &record));
            self.touched.push((entry.account, id));
        }
        self.blob.buffer().extend_from_slice(&compact.blob);
    }

    /// Files this write's ids in a new run, then merges the newest
    /// `MERGE_FAN_IN` runs while the oldest of them is no larger than the
    /// others together (runs of one size merge; a large run waits for its
    /// peers). Returns the runs to delete once the manifest no longer lists
    /// them.
    fn file_ids(&mut self, manifest: &mut Manifest) -> Result<Vec<u64>, HistoryError> {
        let mut obsolete = Vec::new();
        if self.pairs.is_empty() {
            return Ok(obsolete);
        }
        self.pairs.sort_unstable();
        let generation = manifest.take_generation();
        let run = Run::write(self.directory(), generation, &self.pairs)?;
        self.runs.push(Arc::new(run));
        while let Some(first) = self.runs.len().checked_sub(MERGE_FAN_IN) {
            let tail = &self.runs[first..];
            let newer: u64 = tail[1..].iter().map(|run| run.info.count).sum();
            if tail[0].info.count > newer {
                break;
            }
            let generation = manifest.take_generation();
            let merged = Run::merge(self.directory(), generation, tail)?;
            obsolete.extend(tail.iter().map(|run| run.info.generation));
            self.runs.truncate(first);
            self.runs.push(Arc::new(merged));
        }
        manifest.runs = self.runs.iter().map(|run| run.info).collect();
        Ok(obsolete)
    }

    /// Writes a heads checkpoint when enough entries came since the last.
    /// Returns the checkpoint to delete once the manifest moved past it.
    fn checkpoint_heads(&mut self, manifest: &mut Manifest) -> Result<Option<u64>, HistoryError> {
        let covered = manifest.heads.map_or(0, |(_, covered)| covered);
        let due = HEADS_CHECKPOINT_ENTRIES_MIN.max(4 * self.heads.len() as u64);
        if manifest.entries - covered < due {
            return Ok(None);
        }
        let previous = manifest.heads.map(|(generation, _)| generation);
        heads::write_checkpoint(self.directory(), manifest, &self.heads)?;
        Ok(previous)
    }

    fn write_index(&mut self, changes: &Changes, cursor: &Cursor) -> Result<(), HistoryError> {
        let mut manifest = self.manifest.clone().unwrap_or_default();
        let compact = &changes.compact;
        let ends = [
            manifest.entries + compact.entries.len() as u64,
            manifest.transactions + compact.transactions.len() as u64,
            self.blob.len() + compact.blob.len() as u64,
        ];
        if ends.iter().any(|end| *end > FIELD_48_MAX) {
            return Err(HistoryError::Invalid(format!(
                "the history index is full: entries, transactions and blob bytes are counted in 48 bits \
                 ({ends:?} after this write)"
            )));
        }
        self.append(changes, &manifest);
        manifest.entries += compact.entries.len() as u64;
        manifest.transactions += compact.transactions.len() as u64;
        manifest.blob_bytes = self.blob.len();
        manifest.accounts = self.account_count;
        manifest.accounts_bytes = self.accounts.len();
        manifest.cursor = Cursor {
            history_next: manifest.entries as i64,
            ..*cursor
        };
        for file in [
            &mut self.entries,
            &mut self.transactions,
            &mut self.blob,
            &mut self.accounts,
        ] {
            file.sync()?;
        }
        let obsolete_runs = self.file_ids(&mut manifest)?;
        let obsolete_heads = self.checkpoint_heads(&mut manifest)?;
        manifest.write(self.directory())?;
        self.publish(&manifest, changes);
        self.manifest = Some(manifest);
        // Files the manifest no longer lists; a crash before this leaves
        // them for the next open to delete.
        for generation in obsolete_runs {
            let path = run_path(self.directory(), generation);
            std::fs::remove_file(&path).map_err(|error| io_error(&path, error))?;
        }
        if let Some(generation) = obsolete_heads {
            let path = heads::path(self.directory(), generation);
            std::fs::remove_file(&path).map_err(|error| io_error(&path, error))?;
        }
        Ok(())
    }

    fn publish(&self, manifest: &Manifest, changes: &Changes) {
        let mut view = self.shared.view.write().expect("index view lock");
        for account in &changes.compact.accounts {
            view.accounts.push(&account.name, &account.unit);
        }
        for &(account, id) in &self.touched {
            let position = account as usize;
            if position >= view.heads.len() {
                view.heads.resize(position + 1, NONE);
            }
            view.heads[position] = id;
        }
        view.cursor = manifest.cursor;
        view.entries = manifest.entries;
        view.transactions = manifest.transactions;
        view.blob_bytes = manifest.blob_bytes;
        view.runs = self.runs.clone();
    }
}

impl Writer for IndexWriter {
    fn cursor(&mut self) -> Result<Option<Cursor>, HistoryError> {
        Ok(self.manifest.as_ref().map(|manifest| manifest.cursor))
    }

    fn write(&mut self, changes: &Changes, cursor: &Cursor) -> Result<(), HistoryError> {
        assert!(
            changes.transactions.is_empty() && changes.entries.is_empty(),
            "the index takes compact changes"
        );
        // Holds and orders first, with statements that a repeat leaves as
        // they are: a crash before the manifest projects them again.
        if !(changes.holds.is_empty() && changes.orders.is_empty() && changes.order_updates.is_empty()) {
            self.sidecar.write(changes, cursor)?;
        }
        self.write_index(changes, cursor)
    }
}
