//! Checking a history store against the journal: the projection is a pure
//! function of the journal, so projecting it again must give exactly the
//! stored rows — none missing, none duplicated, none different.

use crate::changes::{Changes, Cursor, HistoryEntry, HoldRow, OrderRow, Projection, Shape, TransactionRow};
use crate::database::Database;
use crate::error::HistoryError;
use crate::store::{OrderQuery, Reader};
use coffer_core::EngineLimits;
use coffer_journal::{Follower, JournalStats, Mode, Position};
use std::collections::{HashMap, VecDeque};
use std::path::Path;

/// Rows compared, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub transactions: u64,
    pub entries: u64,
    pub holds: u64,
    pub orders: u64,
    pub sequence_next: u64,
}

const PAGE_ROWS: u32 = 5_000;

/// Compares the store with a fresh projection of the journal in
/// `directory`, which no server may be writing. The journal must still
/// start at sequence 0 (keep every segment to verify a long history).
/// Transactions and history entries are compared as they are projected;
/// holds and orders, which later transactions update in place, by their
/// final state (held in memory: a row per hold and per order).
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
    let mut projection = Projection::new(&follower.engine, Cursor::default(), Shape::Rows);
    let mut stored = StoredRows::default();
    let mut report = VerifyReport::default();
    let mut changes = Changes::default();
    let mut expected = FinalRows::default();
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
        expected.apply(&mut changes);
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
    (report.holds, report.orders) = expected.compare_with(reader.as_mut())?;
    reader.check_derived()?;
    report.sequence_next = stored_cursor.sequence_next;
    Ok(report)
}

/// The holds and orders a projection leaves, by id, written as the store's
/// writer writes them.
#[derive(Default)]
struct FinalRows {
    holds: HashMap<String, HoldRow>,
    orders: HashMap<String, OrderRow>,
}

impl FinalRows {
    fn apply(&mut self, changes: &mut Changes) {
        for (id, hold) in changes.holds.drain() {
            self.holds.insert(id, hold);
        }
        for order in changes.orders.drain(..) {
            self.orders.insert(order.order_id.clone(), order);
        }
        // Only a reservation changes state (see the writers' UPDATE).
        for update in &changes.order_updates {
            if let Some(order) = self.orders.get_mut(&update.order_id) {
                if order.status == "reserved" {
                    order.status = update.status.to_owned();
                    order.updated_at_ms = update.updated_at_ms;
                }
            }
        }
    }

    /// Every stored hold and order must be expected and equal, and every
    /// expected one stored. Returns how many of each were compared.
    fn compare_with(mut self, reader: &mut dyn Reader) -> Result<(u64, u64), HistoryError> {
        let (mut holds, mut orders) = (0u64, 0u64);
        let mut after = String::new();
        loop {
            let page = reader.holds_after(&after, PAGE_ROWS)?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for stored in page {
                let expected = self.holds.remove(&stored.id);
                if expected.as_ref() != Some(&stored) {
                    return Err(mismatch(format!("hold: stored {stored:?}, projected {expected:?}")));
                }
                holds += 1;
            }
        }
        let mut query = OrderQuery {
            limit: crate::store::HISTORY_PAGE_MAX,
            ..OrderQuery::default()
        };
        loop {
            let page = reader.orders(&query)?;
            let Some(last) = page.last() else { break };
            query.before = Some(last.sequence);
            for stored in page {
                let expected = self.orders.remove(&stored.order_id);
                if expected.as_ref() != Some(&stored) {
                    return Err(mismatch(format!("order: stored {stored:?}, projected {expected:?}")));
                }
                orders += 1;
            }
        }
        if let Some(hold) = self.holds.values().next() {
            return Err(mismatch(format!("hold missing: {hold:?}")));
        }
        if let Some(order) = self.orders.values().next() {
            return Err(mismatch(format!("order missing: {order:?}")));
        }
        Ok((holds, orders))
    }
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
