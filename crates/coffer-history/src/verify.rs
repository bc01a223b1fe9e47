//! Checking a history store against the journal: the projection is a pure
//! function of the journal, so projecting it again must give exactly the
//! stored rows — none missing, none duplicated, none different.

use crate::changes::{Changes, Cursor, HistoryEntry, Projection, TransactionRow};
use crate::error::HistoryError;
use crate::store::{Database, Reader};
use coffer_core::EngineLimits;
use coffer_journal::{Follower, JournalStats, Mode, Position};
use std::collections::VecDeque;
use std::path::Path;

/// Rows compared, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub transactions: u64,
    pub entries: u64,
    pub sequence_next: u64,
}

const PAGE_ROWS: u32 = 5_000;

/// Compares the store with a fresh projection of the journal in
/// `directory`, which no server may be writing. The journal must still
/// start at sequence 0 (keep every segment to verify a long history).
pub fn verify(directory: &Path, database: &Database, limits: EngineLimits) -> Result<VerifyReport, HistoryError> {
    let recovered = coffer_journal::recover(directory, limits, Mode::ReadOnly)?;
    let end = recovered
        .last_segment
        .map_or(Position::default(), |(segment, _, bytes)| Position {
            segment,
            offset: bytes,
        });
    // Only the end is needed; the follower rebuilds its own engine.
    let stats = JournalStats::finished(recovered.engine.sequence_next(), end);
    drop(recovered.engine);
    let stored_cursor = database.open_writer()?.cursor()?.unwrap_or_default();
    let mut reader = database.open_reader()?;
    let mut follower = Follower::open(directory, stats, limits, None)?;
    let mut projection = Projection::new(&follower.engine, Cursor::default());
    let mut stored = StoredRows::default();
    let mut report = VerifyReport::default();
    let mut changes = Changes::default();
    while projection.cursor.position < stored_cursor.position {
        let (record, outcome) = follower.next_applied()?.ok_or_else(|| {
            mismatch(format!(
                "the store's cursor {stored_cursor:?} is past the journal's end"
            ))
        })?;
        projection.project(&follower.engine, &record.batch, &outcome, record.next, &mut changes);
        for expected in changes.transactions.drain(..) {
            let found = stored.next_transaction(reader.as_mut())?;
            compare("transaction", &expected, found.as_ref())?;
            report.transactions += 1;
        }
        for expected in changes.entries.drain(..) {
            let found = stored.next_entry(reader.as_mut())?;
            compare("history entry", &expected, found.as_ref())?;
            report.entries += 1;
        }
        changes.clear();
    }
    if projection.cursor != stored_cursor {
        return Err(mismatch(format!(
            "stored cursor {stored_cursor:?}, projection reached {:?}",
            projection.cursor
        )));
    }
    if let Some(extra) = stored.next_transaction(reader.as_mut())? {
        return Err(mismatch(format!(
            "transaction {} is stored but not projected",
            extra.id
        )));
    }
    if let Some(extra) = stored.next_entry(reader.as_mut())? {
        return Err(mismatch(format!(
            "history entry {} is stored but not projected",
            extra.history_id
        )));
    }
    report.sequence_next = stored_cursor.sequence_next;
    Ok(report)
}

fn mismatch(reason: String) -> HistoryError {
    HistoryError::Invalid(format!("history differs from the journal: {reason}"))
}

fn compare<T: PartialEq + std::fmt::Debug>(what: &str, expected: &T, found: Option<&T>) -> Result<(), HistoryError> {
    match found {
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(mismatch(format!("{what}: expected {expected:?}, stored {found:?}"))),
        None => Err(mismatch(format!("{what} missing: {expected:?}"))),
    }
}

/// Stored rows read page by page, in projection order.
#[derive(Default)]
struct StoredRows {
    transactions: VecDeque<TransactionRow>,
    transactions_after: Option<i64>,
    entries: VecDeque<HistoryEntry>,
    entries_after: Option<i64>,
}

impl StoredRows {
    fn next_transaction(&mut self, reader: &mut dyn Reader) -> Result<Option<TransactionRow>, HistoryError> {
        if self.transactions.is_empty() {
            let after = self.transactions_after.unwrap_or(-1);
            self.transactions.extend(reader.transactions_after(after, PAGE_ROWS)?);
            self.transactions_after = self
                .transactions
                .back()
                .map(|row| row.sequence)
                .or(self.transactions_after);
        }
        Ok(self.transactions.pop_front())
    }

    fn next_entry(&mut self, reader: &mut dyn Reader) -> Result<Option<HistoryEntry>, HistoryError> {
        if self.entries.is_empty() {
            let after = self.entries_after.unwrap_or(-1);
            self.entries.extend(reader.entries_after(after, PAGE_ROWS)?);
            self.entries_after = self.entries.back().map(|row| row.history_id).or(self.entries_after);
        }
        Ok(self.entries.pop_front())
    }
}
