//! The readers' side of the index: positioned reads of fixed-size records
//! under the published view; names and JSON are rendered here.

use super::files::{le_u64, read_at, EntryRecord, TransactionRecord, ENTRY_BYTES, NONE, TRANSACTION_BYTES};
use super::heads::Head;
use super::{scan_entries, IndexLocation, Shared, View};
use crate::changes::{
    render_transaction_row, Changes, Cursor, EffectJson, HistoryEntry, HoldRow, OrderRow, OrderUpdate, TransactionRow,
};
use crate::compact::id_hash;
use crate::error::HistoryError;
use crate::sqlite::SqliteStore;
use crate::store::{check_page_limit, order_status_name, HistoryQuery, OrderQuery, Reader};
use coffer_core::{Record, Rejection, RejectionCode, Transaction, Verdict};
use coffer_journal::Position;
use std::sync::Arc;

/// An expiry's blob record is its sequence and hold id: this many bytes
/// cover any (two varints of at most 10 bytes, and an id within its bound).
const EXPIRY_RECORD_BYTES_MAX: u64 = 10 + 10 + coffer_core::limits::ID_BYTES_MAX as u64;

pub struct IndexReader {
    location: Arc<IndexLocation>,
    sidecar: SqliteStore,
}

impl IndexReader {
    pub(super) fn new(location: Arc<IndexLocation>, sidecar: SqliteStore) -> Self {
        IndexReader { location, sidecar }
    }
}

/// One query's reads, under the view it started with.
struct Query<'a> {
    shared: &'a Shared,
    view: &'a View,
}

fn damaged(what: String) -> HistoryError {
    HistoryError::Invalid(format!("history index: {what}"))
}

impl Query<'_> {
    fn entry(&self, id: u64) -> Result<EntryRecord, HistoryError> {
        if id >= self.view.entries {
            return Err(damaged(format!(
                "entry {id} beyond the {} published",
                self.view.entries
            )));
        }
        let bytes = read_at(&self.shared.entries, id * ENTRY_BYTES as u64, ENTRY_BYTES)?;
        Ok(EntryRecord::decode(&bytes))
    }

    fn transaction(&self, number: u64) -> Result<TransactionRecord, HistoryError> {
        if number >= self.view.transactions {
            return Err(damaged(format!(
                "transaction {number} beyond the {} published",
                self.view.transactions
            )));
        }
        let bytes = read_at(
            &self.shared.transactions,
            number * TRANSACTION_BYTES as u64,
            TRANSACTION_BYTES,
        )?;
        Ok(TransactionRecord::decode(&bytes))
    }

    fn encoded(&self, record: &TransactionRecord) -> Result<Vec<u8>, HistoryError> {
        read_at(&self.shared.blob, record.blob_offset, record.blob_len as usize)
    }

    /// The account's newest entry with an id below `before` stamped at or
    /// before `at_ms`. Both hold for every entry older than one for which
    /// they hold, so this is a skip-list search from the head: from an entry
    /// too new, its links are tried from the furthest back; the first too
    /// new is where the search goes on, one that fits is the answer so far,
    /// and only links newer than it are tried after it. An id is known
    /// before its entry is read, a time only after; entries stamped after
    /// `at_ms` cost a read each, so no search over all entries by time.
    fn newest_at(&self, head: u64, before: u64, at_ms: i64) -> Result<Option<(u64, EntryRecord)>, HistoryError> {
        if head == NONE {
            return Ok(None);
        }
        let fits = |id: u64, entry: &EntryRecord| id < before && entry.timestamp_ms as i64 <= at_ms;
        let (mut current_id, mut current) = (head, self.entry(head)?);
        if fits(head, &current) {
            return Ok(Some((head, current)));
        }
        let mut found: Option<(u64, EntryRecord)> = None;
        'search: loop {
            for link in current.marks.into_iter().rev().chain([current.previous]) {
                if link == NONE || found.is_some_and(|(id, _)| link <= id) {
                    continue;
                }
                if link >= current_id {
                    // Links point back; anything else would search forever.
                    return Err(damaged(format!("entry {current_id} links forward to {link}")));
                }
                let entry = self.entry(link)?;
                if fits(link, &entry) {
                    found = Some((link, entry));
                } else {
                    (current_id, current) = (link, entry);
                    continue 'search;
                }
            }
            // Every link of `current` is at or behind `found`: its previous
            // entry is `found`, the newest that fits (or it has none).
            return Ok(found);
        }
    }

    /// Renders an entry; `previous` holds the account's entry before it.
    fn render(
        &self,
        id: u64,
        entry: &EntryRecord,
        previous: Option<&EntryRecord>,
    ) -> Result<HistoryEntry, HistoryError> {
        let (available_before, frozen_before) =
            previous.map_or((0, 0), |previous| (previous.available, previous.frozen));
        let (kind, transaction_id, hold_id, sequence) = if entry.expiry {
            let length = EXPIRY_RECORD_BYTES_MAX.min(self.view.blob_bytes.saturating_sub(entry.source));
            let bytes = read_at(&self.shared.blob, entry.source, length as usize)?;
            let mut reader = coffer_core::codec::Reader::new(&bytes);
            let malformed = |_| damaged(format!("entry {id}: a malformed expiry record"));
            let sequence = reader.u64().map_err(malformed)?;
            let hold = reader.str().map_err(malformed)?;
            ("hold_expired", None, Some(hold.to_owned()), sequence)
        } else {
            let record = self.transaction(entry.source)?;
            let bytes = self.encoded(&record)?;
            let transaction_id = coffer_core::codec::Reader::new(&bytes)
                .str()
                .map_err(|_| damaged(format!("transaction {}: a malformed id", entry.source)))?
                .to_owned();
            ("transaction", Some(transaction_id), None, record.sequence)
        };
        let accounts = &self.view.accounts;
        if entry.account as usize >= accounts.len() {
            return Err(damaged(format!("entry {id}: account {} unknown", entry.account)));
        }
        Ok(HistoryEntry {
            history_id: id as i64,
            account: accounts.name(entry.account).to_owned(),
            unit: accounts.unit(entry.account).to_owned(),
            kind,
            transaction_id,
            hold_id,
            sequence: sequence as i64,
            timestamp_ms: entry.timestamp_ms as i64,
            available_change: entry.available - available_before,
            frozen_change: entry.frozen - frozen_before,
            available: entry.available,
            frozen: entry.frozen,
        })
    }

    fn previous_of(&self, entry: &EntryRecord) -> Result<Option<EntryRecord>, HistoryError> {
        (entry.previous != NONE).then(|| self.entry(entry.previous)).transpose()
    }

    fn render_transaction(&self, record: &TransactionRecord) -> Result<TransactionRow, HistoryError> {
        let bytes = self.encoded(record)?;
        let transaction = Transaction::decode(&mut coffer_core::codec::Reader::new(&bytes))
            .map_err(|error| damaged(format!("transaction at sequence {}: {error}", record.sequence)))?;
        let verdict = if record.committed {
            Verdict::Committed
        } else {
            let code = RejectionCode::ALL
                .into_iter()
                .find(|code| *code as u8 == record.code)
                .ok_or_else(|| damaged(format!("rejection code {} unknown", record.code)))?;
            Verdict::Rejected(Rejection {
                code,
                op_index: record.op_index,
            })
        };
        let outcome = Record {
            sequence: record.sequence,
            timestamp_ms: record.timestamp_ms,
            verdict,
        };
        let count = record.entry_count as usize;
        let entries = if count == 0 {
            Vec::new()
        } else {
            read_at(
                &self.shared.entries,
                record.first_entry * ENTRY_BYTES as u64,
                count * ENTRY_BYTES,
            )?
        };
        let accounts = &self.view.accounts;
        let effects = entries
            .chunks_exact(ENTRY_BYTES)
            .map(EntryRecord::decode)
            .map(|entry| match (entry.account as usize) < accounts.len() {
                true => Ok(EffectJson {
                    account: accounts.name(entry.account),
                    unit: accounts.unit(entry.account),
                    available: entry.available,
                    frozen: entry.frozen,
                }),
                false => Err(damaged(format!(
                    "an entry of sequence {}: account unknown",
                    record.sequence
                ))),
            })
            .collect::<Result<Vec<EffectJson>, HistoryError>>()?;
        Ok(render_transaction_row(&transaction, &outcome, &effects))
    }

    /// The stored transaction with this id.
    fn find_transaction(&self, id: &str) -> Result<Option<TransactionRow>, HistoryError> {
        let mut numbers = Vec::new();
        let hash = id_hash(id);
        for run in &self.view.runs {
            run.find(hash, &mut numbers)?;
        }
        for number in numbers {
            let record = self.transaction(number)?;
            let bytes = self.encoded(&record)?;
            let stored_id = coffer_core::codec::Reader::new(&bytes)
                .str()
                .map_err(|_| damaged(format!("transaction {number}: a malformed id")))?;
            if stored_id == id {
                return self.render_transaction(&record).map(Some);
            }
        }
        Ok(None)
    }

    /// The first transaction number with a sequence above `after`.
    fn first_transaction_after(&self, after: i64) -> Result<u64, HistoryError> {
        let (mut low, mut high) = (0u64, self.view.transactions);
        while low < high {
            let middle = low + (high - low) / 2;
            let bytes = read_at(&self.shared.transactions, middle * TRANSACTION_BYTES as u64, 8)?;
            if le_u64(&bytes, 0) as i64 <= after {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }
}

/// One write of the history export: the rows and the cursor they reach.
pub type ExportBatch = (Changes, Cursor);

impl Query<'_> {
    /// Transactions and entries after the export's cursor `from`, rendered
    /// as the SQL stores take them: up to the published cursor if that is
    /// at most `rows_max` rows away, else up to the transaction that would
    /// pass it (a cut the journal cannot name: `Cursor::is_midway`).
    fn export_rows(&self, from: &Cursor, rows_max: usize) -> Result<Option<ExportBatch>, HistoryError> {
        let published = self.view.cursor;
        if from.sequence_next > published.sequence_next || from.history_next > published.history_next {
            return Err(HistoryError::Invalid(format!(
                "the history export is at sequence {} and entry {}, beyond the index (at {} and {}): \
                 it was made from another data directory",
                from.sequence_next, from.history_next, published.sequence_next, published.history_next
            )));
        }
        if *from == published {
            return Ok(None);
        }
        let first_transaction = self.first_transaction_after(from.sequence_next as i64 - 1)?;
        let first_entry = from.history_next as u64;
        let transactions_left = self.view.transactions - first_transaction;
        let rows_left = transactions_left + (self.view.entries - first_entry);
        // Transactions in proportion to the rows they bring; what follows
        // the last transaction is hold expiries, few per record.
        let take = (rows_max as u64).saturating_mul(transactions_left) / rows_left.max(1);
        let (end_transaction, end_entry, cursor) = if rows_left <= rows_max as u64 || take.max(1) >= transactions_left {
            (self.view.transactions, self.view.entries, published)
        } else {
            let end = first_transaction + take.max(1);
            let next = self.transaction(end)?;
            let cursor = Cursor {
                position: Position {
                    segment: Cursor::MIDWAY_SEGMENT,
                    offset: 0,
                },
                sequence_next: next.sequence,
                history_next: next.first_entry as i64,
                timestamp_ms: self.transaction(end - 1)?.timestamp_ms,
            };
            (end, next.first_entry, cursor)
        };
        let mut changes = Changes::default();
        for number in first_transaction..end_transaction {
            let record = self.transaction(number)?;
            changes.transactions.push(self.render_transaction(&record)?);
        }
        scan_entries(&self.shared.entries, first_entry, end_entry, |id, entry| {
            let previous = self.previous_of(&entry)?;
            changes.entries.push(self.render(id, &entry, previous.as_ref())?);
            Ok(())
        })?;
        Ok(Some((changes, cursor)))
    }
}

impl IndexReader {
    /// The history export's next write after its cursor `from` (at most
    /// about `rows_max` transactions and entries), with the holds and
    /// orders that changed in its range; `None` when the export has
    /// reached the index. A hold or order may be newer than the range (the
    /// sidecar runs ahead of the manifest): the export writes a state that
    /// a later write would have brought, never an older one.
    pub fn export_after(&mut self, from: &Cursor, rows_max: usize) -> Result<Option<ExportBatch>, HistoryError> {
        assert!(rows_max > 0);
        let Some((mut changes, cursor)) = self.query(|reads| reads.export_rows(from, rows_max))? else {
            return Ok(None);
        };
        let sequences = from.sequence_next as i64..=cursor.sequence_next as i64;
        let times_ms = from.timestamp_ms as i64..=cursor.timestamp_ms as i64;
        let (holds, orders) = self.sidecar.changed_between(sequences, times_ms)?;
        changes.holds = holds.into_iter().map(|hold| (hold.id.clone(), hold)).collect();
        for order in orders {
            // Orders are inserted if new, and leave `reserved` only once.
            if order.status != "reserved" {
                changes.order_updates.push(OrderUpdate {
                    order_id: order.order_id.clone(),
                    status: order_status_name(&order.status)?,
                    updated_at_ms: order.updated_at_ms,
                });
            }
            changes.orders.push(order);
        }
        Ok(Some((changes, cursor)))
    }

    fn query<T>(&self, read: impl FnOnce(&Query) -> Result<T, HistoryError>) -> Result<T, HistoryError> {
        let shared = self.location.shared();
        let view = shared.view.read().expect("index view lock");
        read(&Query {
            shared: &shared,
            view: &view,
        })
    }
}

impl Reader for IndexReader {
    fn history(&mut self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, HistoryError> {
        check_page_limit(query.limit);
        self.query(|reads| {
            let Some(position) = reads.view.accounts.find(&query.account) else {
                return Ok(Vec::new());
            };
            let head = reads.view.heads.get(position as usize).copied().unwrap_or(NONE);
            let before = match query.before {
                Some(before) if before <= 0 => return Ok(Vec::new()),
                Some(before) => before as u64,
                None => u64::MAX,
            };
            let from_ms = query.from_ms.unwrap_or(i64::MIN);
            let mut found: Vec<(u64, EntryRecord)> = Vec::new();
            let mut next = reads.newest_at(head, before, query.to_ms.unwrap_or(i64::MAX))?;
            while let Some((id, entry)) = next {
                if (entry.timestamp_ms as i64) < from_ms {
                    break;
                }
                let previous = entry.previous;
                found.push((id, entry));
                if found.len() == query.limit as usize {
                    break;
                }
                next = (previous != NONE)
                    .then(|| Ok::<_, HistoryError>((previous, reads.entry(previous)?)))
                    .transpose()?;
            }
            let oldest_previous = match found.last() {
                Some((_, oldest)) => reads.previous_of(oldest)?,
                None => None,
            };
            (0..found.len())
                .map(|n| {
                    let previous = found.get(n + 1).map(|(_, entry)| entry).or(oldest_previous.as_ref());
                    reads.render(found[n].0, &found[n].1, previous)
                })
                .collect()
        })
    }

    fn balance_at(&mut self, account: &str, at_ms: i64) -> Result<Option<HistoryEntry>, HistoryError> {
        self.query(|reads| {
            let Some(position) = reads.view.accounts.find(account) else {
                return Ok(None);
            };
            let head = reads.view.heads.get(position as usize).copied().unwrap_or(NONE);
            match reads.newest_at(head, u64::MAX, at_ms)? {
                Some((id, entry)) => {
                    let previous = reads.previous_of(&entry)?;
                    reads.render(id, &entry, previous.as_ref()).map(Some)
                }
                None => Ok(None),
            }
        })
    }

    fn transactions(&mut self, ids: &[&str]) -> Result<Vec<TransactionRow>, HistoryError> {
        self.query(|reads| {
            let mut found = Vec::new();
            for id in ids {
                if let Some(row) = reads.find_transaction(id)? {
                    found.push(row);
                }
            }
            Ok(found)
        })
    }

    fn entries_after(&mut self, after: i64, limit: u32) -> Result<Vec<HistoryEntry>, HistoryError> {
        self.query(|reads| {
            let first = u64::try_from(after.saturating_add(1)).unwrap_or(0);
            let end = reads.view.entries.min(first.saturating_add(u64::from(limit)));
            let mut rendered = Vec::new();
            scan_entries(&reads.shared.entries, first.min(end), end, |id, entry| {
                let previous = reads.previous_of(&entry)?;
                rendered.push(reads.render(id, &entry, previous.as_ref())?);
                Ok(())
            })?;
            Ok(rendered)
        })
    }

    fn transactions_after(&mut self, after: i64, limit: u32) -> Result<Vec<TransactionRow>, HistoryError> {
        self.query(|reads| {
            let first = reads.first_transaction_after(after)?;
            let end = reads.view.transactions.min(first + u64::from(limit));
            (first..end)
                .map(|number| reads.render_transaction(&reads.transaction(number)?))
                .collect()
        })
    }

    fn holds_after(&mut self, after: &str, limit: u32) -> Result<Vec<HoldRow>, HistoryError> {
        self.sidecar.holds_after(after, limit)
    }

    fn order(&mut self, id: &str) -> Result<Option<OrderRow>, HistoryError> {
        self.sidecar.order(id)
    }

    fn orders(&mut self, query: &OrderQuery) -> Result<Vec<OrderRow>, HistoryError> {
        self.sidecar.orders(query)
    }

    /// Every entry's links and depth follow from the entries before it, and
    /// the published heads are each account's newest entry.
    fn check_derived(&mut self) -> Result<(), HistoryError> {
        self.query(|reads| {
            let mut heads: Vec<Head> = Vec::new();
            scan_entries(&reads.shared.entries, 0, reads.view.entries, |id, entry| {
                let position = entry.account as usize;
                if position >= heads.len() {
                    heads.resize(position + 1, Head::default());
                }
                let (previous, depth, marks) = heads[position].next_links();
                if (entry.previous, entry.depth, entry.marks) != (previous, depth, marks) {
                    return Err(damaged(format!(
                        "entry {id}: links ({}, {}, {:?}), expected ({previous}, {depth}, {marks:?})",
                        entry.previous, entry.depth, entry.marks
                    )));
                }
                heads[position] = Head::of(id, &entry);
                Ok(())
            })?;
            let expected: Vec<u64> = heads.iter().map(|head| head.id).collect();
            let published = &reads.view.heads[..expected.len().min(reads.view.heads.len())];
            if published != expected.as_slice() || reads.view.heads[expected.len()..].iter().any(|id| *id != NONE) {
                return Err(damaged("the account heads do not match the entries".into()));
            }
            Ok(())
        })
    }
}
