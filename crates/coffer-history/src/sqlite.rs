//! The embedded history store: one SQLite file in WAL mode.
//!
//! Amounts are 128-bit; SQLite's integers are 64-bit. Amount columns have no
//! declared type, so SQLite keeps what it is given: an INTEGER when the
//! amount fits (so `SUM` works in users' queries), exact decimal TEXT when
//! it does not.

use crate::account_chain::{ChainReader, ChainWriter};
use crate::changes::{Changes, Cursor, HistoryEntry, HoldRow, OrderRow, TransactionRow};
use crate::error::HistoryError;
use crate::sqlite_rows::{amount, entry_of, read_amount, with_kind, ENTRY_COLUMNS};
use crate::store::{check_page_limit, hold_status_name, HistoryQuery, OrderQuery, Reader, Writer};
use coffer_journal::Position;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

/// Schema versions, applied in order; each runs once.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE projector_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    segment INTEGER NOT NULL,
    segment_offset INTEGER NOT NULL,
    sequence_next INTEGER NOT NULL,
    history_next INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL
);
CREATE TABLE transactions (
    sequence INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    timestamp_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    rejection_code TEXT,
    rejection_op_index INTEGER,
    fingerprint TEXT NOT NULL,
    body TEXT NOT NULL,
    effects TEXT NOT NULL
);
CREATE TABLE account_history (
    history_id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    unit TEXT NOT NULL,
    kind TEXT NOT NULL,
    transaction_id TEXT,
    hold_id TEXT,
    sequence INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    available_change,
    frozen_change,
    available,
    frozen
);
CREATE INDEX account_history_by_account ON account_history (account, history_id);
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    unit TEXT NOT NULL,
    destination TEXT,
    amount,
    captured,
    remaining,
    status TEXT NOT NULL,
    expires_at_ms INTEGER,
    created_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    sequence INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX holds_by_account ON holds (account);
",
    r"
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    product TEXT NOT NULL,
    user_id TEXT NOT NULL,
    quantity,
    amount,
    unit TEXT,
    status TEXT NOT NULL,
    expires_at_ms INTEGER,
    sequence INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX orders_by_product ON orders (product, sequence);
CREATE INDEX orders_by_user ON orders (user_id, sequence);
CREATE INDEX orders_by_sequence ON orders (sequence);
",
    // Account chains instead of an index over every entry (account_chain.rs).
    // The marks' spacing, 32, is account_chain::MARK_SPACING.
    r"
ALTER TABLE account_history ADD COLUMN previous INTEGER;
CREATE TABLE account_heads (
    account TEXT PRIMARY KEY,
    history_id INTEGER NOT NULL,
    entries INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE account_marks (
    account TEXT NOT NULL,
    history_id INTEGER NOT NULL,
    PRIMARY KEY (account, history_id)
) WITHOUT ROWID;
UPDATE account_history SET previous = chain.previous FROM (
    SELECT history_id, lag(history_id) OVER (PARTITION BY account ORDER BY history_id) AS previous
    FROM account_history
) AS chain WHERE account_history.history_id = chain.history_id;
INSERT INTO account_heads (account, history_id, entries)
    SELECT account, max(history_id), count(*) FROM account_history GROUP BY account;
INSERT INTO account_marks (account, history_id)
    SELECT account, history_id FROM (
        SELECT account, history_id, row_number() OVER (PARTITION BY account ORDER BY history_id) AS ordinal
        FROM account_history
    ) WHERE ordinal % 32 = 0;
DROP INDEX account_history_by_account;
",
    // The history export takes the holds and orders changed since its last
    // write from the index's sidecar (export.rs).
    r"
CREATE INDEX holds_by_sequence ON holds (sequence);
CREATE INDEX orders_by_update ON orders (updated_at_ms);
",
];

const ORDER_COLUMNS: &str = "order_id, product, user_id, quantity, amount, unit, status, expires_at_ms, sequence, \
                             created_at_ms, updated_at_ms";
const HOLD_COLUMNS: &str = "id, account, unit, destination, amount, captured, remaining, status, expires_at_ms, \
                            created_at_ms, finished_at_ms, sequence";
const TRANSACTION_COLUMNS: &str =
    "id, sequence, timestamp_ms, status, rejection_code, rejection_op_index, fingerprint, body, effects";

pub struct SqliteStore {
    connection: Connection,
    chains: ChainWriter,
}

impl SqliteStore {
    pub fn open(path: &Path, migrate: bool) -> Result<Self, HistoryError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| HistoryError::Invalid(format!("create {}: {error}", parent.display())))?;
        }
        let connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        // NORMAL is enough: the journal is the record of truth, and rows and
        // cursor commit together, so a lost commit is projected again.
        // 4 KiB pages. Larger pages made catching up faster (the projection
        // bench: 113 k transactions/s at 4 KiB, 162-171 k at 32 KiB) but not
        // live projection (38-41 k transfers/s over HTTP either way), and
        // every commit rewrites each index page it touched: at 32 KiB the
        // writes (and checkpoints of 64 MiB) delayed the journal's fsyncs
        // enough to double the request p99 (31-37 ms against 12-18 ms at
        // 64 connections). Takes effect when the file is created.
        connection.pragma_update(None, "page_size", 4_096)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // Index pages stay in memory (random inserts by account and id touch
        // pages all over the index); a bounded 64 MiB per connection.
        connection.pragma_update(None, "cache_size", -65_536)?;
        // Fewer, larger checkpoints than the default 1,000 pages: the WAL
        // may grow to 8 MiB between them (no measurable difference at 512).
        connection.pragma_update(None, "wal_autocheckpoint", 2_048)?;
        let mut store = SqliteStore {
            connection,
            chains: ChainWriter::default(),
        };
        if migrate {
            store.migrate()?;
        }
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), HistoryError> {
        let transaction = self.connection.transaction()?;
        transaction.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let applied: i64 = transaction.query_row("SELECT COUNT(*) FROM schema_version", [], |row| row.get(0))?;
        for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            transaction.execute_batch(sql)?;
            transaction.execute("INSERT INTO schema_version (version) VALUES (?1)", [version as i64 + 1])?;
        }
        transaction.commit()?;
        Ok(())
    }
}

impl Writer for SqliteStore {
    fn cursor(&mut self) -> Result<Option<Cursor>, HistoryError> {
        let cursor = self
            .connection
            .query_row(
                "SELECT segment, segment_offset, sequence_next, history_next, timestamp_ms FROM projector_cursor",
                [],
                |row| {
                    Ok(Cursor {
                        position: Position {
                            segment: row.get::<_, i64>(0)? as u64,
                            offset: row.get::<_, i64>(1)? as u64,
                        },
                        sequence_next: row.get::<_, i64>(2)? as u64,
                        history_next: row.get(3)?,
                        timestamp_ms: row.get::<_, i64>(4)? as u64,
                    })
                },
            )
            .optional()?;
        Ok(cursor)
    }

    fn write(&mut self, changes: &Changes, cursor: &Cursor) -> Result<(), HistoryError> {
        let written = self.write_rows(changes, cursor);
        if written.is_err() {
            self.chains.forget();
        }
        written
    }
}

impl SqliteStore {
    /// Every commit reaches the disk before it returns (for a store that
    /// another file's cursor relies on, as the index's holds and orders).
    pub(crate) fn set_synchronous_full(&mut self) -> Result<(), HistoryError> {
        self.connection.pragma_update(None, "synchronous", "FULL")?;
        Ok(())
    }

    /// Holds last changed at a sequence in `sequences`, and orders created
    /// in `sequences` or updated at an instant in `times_ms` (both bounds
    /// included): what changed between two of the history export's cursors.
    pub(crate) fn changed_between(
        &mut self,
        sequences: RangeInclusive<i64>,
        times_ms: RangeInclusive<i64>,
    ) -> Result<(Vec<HoldRow>, Vec<OrderRow>), HistoryError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE sequence BETWEEN ?1 AND ?2"
        ))?;
        let holds = statement
            .query_map(params![sequences.start(), sequences.end()], hold_of)?
            .map(named_status)
            .collect::<Result<_, _>>()?;
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE sequence BETWEEN ?1 AND ?2 \
             UNION SELECT {ORDER_COLUMNS} FROM orders WHERE updated_at_ms BETWEEN ?3 AND ?4"
        ))?;
        let orders = statement
            .query_map(
                params![sequences.start(), sequences.end(), times_ms.start(), times_ms.end()],
                order_of,
            )?
            .collect::<Result<_, _>>()?;
        Ok((holds, orders))
    }

    fn write_rows(&mut self, changes: &Changes, cursor: &Cursor) -> Result<(), HistoryError> {
        let transaction = self.connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(&format!(
                "INSERT INTO transactions ({TRANSACTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?;
            for row in &changes.transactions {
                insert.execute(params![
                    row.id,
                    row.sequence,
                    row.timestamp_ms,
                    if row.committed { "committed" } else { "rejected" },
                    row.rejection_code,
                    row.rejection_op_index,
                    row.fingerprint,
                    row.body,
                    row.effects
                ])?;
            }
            self.chains.insert(&transaction, &changes.entries)?;
            let mut upsert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO holds (id, account, unit, destination, amount, captured, remaining, status, \
                 expires_at_ms, created_at_ms, finished_at_ms, sequence) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for hold in changes.holds.values() {
                upsert.execute(params![
                    hold.id,
                    hold.account,
                    hold.unit,
                    hold.destination,
                    amount(hold.amount),
                    amount(hold.captured),
                    amount(hold.remaining),
                    hold.status,
                    hold.expires_at_ms,
                    hold.created_at_ms,
                    hold.finished_at_ms,
                    hold.sequence
                ])?;
            }
            let mut insert = transaction.prepare_cached(&format!(
                "INSERT OR IGNORE INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))?;
            for order in &changes.orders {
                insert.execute(params![
                    order.order_id,
                    order.product,
                    order.user_id,
                    amount(order.quantity),
                    order.amount.map(amount),
                    order.unit,
                    order.status,
                    order.expires_at_ms,
                    order.sequence,
                    order.created_at_ms,
                    order.updated_at_ms
                ])?;
            }
            let mut update = transaction.prepare_cached(
                "UPDATE orders SET status = ?2, updated_at_ms = ?3 WHERE order_id = ?1 AND status = 'reserved'",
            )?;
            for change in &changes.order_updates {
                update.execute(params![change.order_id, change.status, change.updated_at_ms])?;
            }
            transaction.execute(
                "INSERT OR REPLACE INTO projector_cursor (id, segment, segment_offset, sequence_next, history_next, timestamp_ms) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                params![
                    cursor.position.segment as i64,
                    cursor.position.offset as i64,
                    cursor.sequence_next as i64,
                    cursor.history_next,
                    cursor.timestamp_ms as i64
                ],
            )?;
        }
        transaction.commit()?;
        Ok(())
    }
}

impl Reader for SqliteStore {
    fn history(&mut self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, HistoryError> {
        check_page_limit(query.limit);
        let chains = ChainReader {
            connection: &self.connection,
        };
        let mut bound = query.before.unwrap_or(i64::MAX);
        if let Some(to_ms) = query.to_ms {
            if let Some(first_after) = chains.first_after(to_ms)? {
                bound = bound.min(first_after);
            }
        }
        let from_ms = query.from_ms.unwrap_or(i64::MIN);
        let mut entries = Vec::new();
        let mut next = chains.newest_below(&query.account, bound)?;
        while let Some(link) = next {
            if link.entry.timestamp_ms < from_ms {
                break;
            }
            let previous = link.previous;
            entries.push(link.entry);
            if entries.len() == query.limit as usize {
                break;
            }
            next = previous.map(|history_id| chains.link(history_id)).transpose()?;
            if let Some(link) = &next {
                chains.check_owner(&query.account, link)?;
            }
        }
        Ok(entries)
    }

    fn balance_at(&mut self, account: &str, at_ms: i64) -> Result<Option<HistoryEntry>, HistoryError> {
        let chains = ChainReader {
            connection: &self.connection,
        };
        let bound = chains.first_after(at_ms)?.unwrap_or(i64::MAX);
        Ok(chains.newest_below(account, bound)?.map(|link| link.entry))
    }

    fn transactions(&mut self, ids: &[&str]) -> Result<Vec<TransactionRow>, HistoryError> {
        let mut statement = self
            .connection
            .prepare_cached(&format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = ?1"))?;
        let mut found = Vec::new();
        for id in ids {
            if let Some(row) = statement.query_row([id], transaction_of).optional()? {
                found.push(row);
            }
        }
        Ok(found)
    }

    fn entries_after(&mut self, after: i64, limit: u32) -> Result<Vec<HistoryEntry>, HistoryError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM account_history WHERE history_id > ?1 ORDER BY history_id LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![after, limit], entry_of)?;
        rows.map(|row| with_kind(row?)).collect()
    }

    fn transactions_after(&mut self, after: i64, limit: u32) -> Result<Vec<TransactionRow>, HistoryError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE sequence > ?1 ORDER BY sequence LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![after, limit], transaction_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn holds_after(&mut self, after: &str, limit: u32) -> Result<Vec<HoldRow>, HistoryError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![after, limit], hold_of)?;
        rows.map(named_status).collect()
    }

    fn order(&mut self, id: &str) -> Result<Option<OrderRow>, HistoryError> {
        let mut statement = self
            .connection
            .prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?1"))?;
        Ok(statement.query_row([id], order_of).optional()?)
    }

    fn check_derived(&mut self) -> Result<(), HistoryError> {
        crate::account_chain::check(&self.connection)
    }

    fn orders(&mut self, query: &OrderQuery) -> Result<Vec<OrderRow>, HistoryError> {
        check_page_limit(query.limit);
        // NULL filters match everything; one statement serves every combination.
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE (?1 IS NULL OR product = ?1) AND (?2 IS NULL OR user_id = ?2) \
             AND (?3 IS NULL OR status = ?3) AND sequence < ?4 ORDER BY sequence DESC LIMIT ?5"
        ))?;
        let rows = statement.query_map(
            params![
                query.product,
                query.user,
                query.status,
                query.before.unwrap_or(i64::MAX),
                query.limit
            ],
            order_of,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn order_of(row: &Row) -> rusqlite::Result<OrderRow> {
    let amount = match row.get_ref(4)? {
        ValueRef::Null => None,
        _ => Some(read_amount(row, 4)?),
    };
    Ok(OrderRow {
        order_id: row.get(0)?,
        product: row.get(1)?,
        user_id: row.get(2)?,
        quantity: read_amount(row, 3)?,
        amount,
        unit: row.get(5)?,
        status: row.get(6)?,
        expires_at_ms: row.get(7)?,
        sequence: row.get(8)?,
        created_at_ms: row.get(9)?,
        updated_at_ms: row.get(10)?,
    })
}

/// A hold row and its stored status, checked by `named_status`.
fn hold_of(row: &Row) -> rusqlite::Result<(HoldRow, String)> {
    let hold = HoldRow {
        id: row.get(0)?,
        account: row.get(1)?,
        unit: row.get(2)?,
        destination: row.get(3)?,
        amount: read_amount(row, 4)?,
        captured: read_amount(row, 5)?,
        remaining: read_amount(row, 6)?,
        status: "",
        expires_at_ms: row.get(8)?,
        created_at_ms: row.get(9)?,
        finished_at_ms: row.get(10)?,
        sequence: row.get(11)?,
    };
    Ok((hold, row.get(7)?))
}

fn named_status(row: rusqlite::Result<(HoldRow, String)>) -> Result<HoldRow, HistoryError> {
    let (mut hold, status) = row?;
    hold.status = hold_status_name(&status)?;
    Ok(hold)
}

fn transaction_of(row: &Row) -> rusqlite::Result<TransactionRow> {
    let status: String = row.get(3)?;
    Ok(TransactionRow {
        id: row.get(0)?,
        sequence: row.get(1)?,
        timestamp_ms: row.get(2)?,
        committed: status == "committed",
        rejection_code: row.get(4)?,
        rejection_op_index: row.get(5)?,
        fingerprint: row.get(6)?,
        body: row.get(7)?,
        effects: row.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account_chain::MARK_SPACING;

    fn entry(history_id: i64, account: &str) -> HistoryEntry {
        HistoryEntry {
            history_id,
            account: account.into(),
            unit: "USD/2".into(),
            kind: "transaction",
            transaction_id: Some(format!("t-{history_id}")),
            hold_id: None,
            sequence: history_id,
            timestamp_ms: 1_000 + history_id / 3,
            available_change: 1,
            frozen_change: 0,
            available: history_id as i128,
            frozen: 0,
        }
    }

    fn page(store: &mut SqliteStore, account: &str, before: Option<i64>, limit: u32) -> Vec<i64> {
        let query = HistoryQuery {
            account: account.into(),
            before,
            from_ms: None,
            to_ms: None,
            limit,
        };
        store
            .history(&query)
            .unwrap()
            .iter()
            .map(|entry| entry.history_id)
            .collect()
    }

    #[test]
    fn the_migration_builds_the_marks_with_the_spacing_the_writer_uses() {
        assert!(MIGRATIONS[2].contains(&format!("ordinal % {MARK_SPACING} = 0")));
    }

    /// A store written before account chains existed is migrated in place:
    /// links, heads and marks are built from the old index, and new entries
    /// continue the chains.
    #[test]
    fn a_store_from_before_the_chains_is_migrated_and_extended() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("history.sqlite");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .unwrap();
        for (version, sql) in MIGRATIONS[..2].iter().enumerate() {
            connection.execute_batch(sql).unwrap();
            connection
                .execute("INSERT INTO schema_version (version) VALUES (?1)", [version as i64 + 1])
                .unwrap();
        }
        // Two accounts, interleaved unevenly: 0, 3, 6, ... are "b".
        let old: Vec<HistoryEntry> = (0..200)
            .map(|id| entry(id, if id % 3 == 0 { "b" } else { "a" }))
            .collect();
        for row in &old {
            connection
                .execute(
                    &format!("INSERT INTO account_history ({ENTRY_COLUMNS}) VALUES (?1, ?2, 'USD/2', 'transaction', ?3, NULL, ?1, ?4, 1, 0, ?1, 0)"),
                    params![row.history_id, row.account, row.transaction_id, row.timestamp_ms],
                )
                .unwrap();
        }
        drop(connection);

        let mut store = SqliteStore::open(&path, true).unwrap();
        let expected_a: Vec<i64> = (0..200).rev().filter(|id| id % 3 != 0).collect();
        assert_eq!(page(&mut store, "a", None, 1_000), expected_a);
        assert_eq!(page(&mut store, "b", Some(100), 5), vec![99, 96, 93, 90, 87]);
        let marks: i64 = store
            .connection
            .query_row("SELECT count(*) FROM account_marks", [], |row| row.get(0))
            .unwrap();
        assert_eq!(marks, 133 / MARK_SPACING + 67 / MARK_SPACING);

        let new: Vec<HistoryEntry> = (200..300).map(|id| entry(id, "a")).collect();
        let transaction = store.connection.transaction().unwrap();
        store.chains.insert(&transaction, &new).unwrap();
        transaction.commit().unwrap();
        let mut expected_a: Vec<i64> = (200..300).rev().collect();
        expected_a.extend((0..200).rev().filter(|id| id % 3 != 0));
        assert_eq!(page(&mut store, "a", None, 1_000), expected_a);
        assert_eq!(page(&mut store, "a", Some(201), 3), vec![200, 199, 197]);
        let at = store.balance_at("b", 1_000 + 150 / 3).unwrap().unwrap();
        assert_eq!(at.history_id, 150);
        store.check_derived().unwrap();
    }

    /// `verify` runs this check: each kind of damage is found.
    #[test]
    fn the_derived_check_finds_a_broken_link_head_or_mark() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("history.sqlite");
        let mut store = SqliteStore::open(&path, true).unwrap();
        let entries: Vec<HistoryEntry> = (0..100)
            .map(|id| entry(id, if id % 2 == 0 { "a" } else { "b" }))
            .collect();
        let transaction = store.connection.transaction().unwrap();
        store.chains.insert(&transaction, &entries).unwrap();
        transaction.commit().unwrap();
        store.check_derived().unwrap();
        for (damage, repair) in [
            (
                "UPDATE account_history SET previous = 40 WHERE history_id = 44",
                "UPDATE account_history SET previous = 42 WHERE history_id = 44",
            ),
            (
                "UPDATE account_heads SET entries = 49 WHERE account = 'a'",
                "UPDATE account_heads SET entries = 50 WHERE account = 'a'",
            ),
            (
                "INSERT INTO account_marks VALUES ('b', 3)",
                "DELETE FROM account_marks WHERE account = 'b' AND history_id = 3",
            ),
            (
                "DELETE FROM account_marks WHERE account = 'a'",
                "INSERT INTO account_marks VALUES ('a', 62)",
            ),
        ] {
            store.connection.execute_batch(damage).unwrap();
            let error = store.check_derived().unwrap_err().to_string();
            assert!(error.contains("account chains"), "{damage}: {error}");
            store.connection.execute_batch(repair).unwrap();
            store.check_derived().unwrap();
        }
    }

    /// A write that fails is rolled back; the heads the writer had cached
    /// for it must go too, or the next write would link to entries that
    /// were never stored.
    #[test]
    fn a_failed_write_leaves_no_cached_heads_behind() {
        let directory = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&directory.path().join("history.sqlite"), true).unwrap();
        let write = |store: &mut SqliteStore, entries: Vec<HistoryEntry>| {
            let changes = Changes {
                entries,
                ..Changes::default()
            };
            store.write(&changes, &Cursor::default())
        };
        write(&mut store, vec![entry(0, "a"), entry(1, "a")]).unwrap();
        // Entry 5 is new, entry 1 a duplicate: the whole write fails.
        assert!(write(&mut store, vec![entry(5, "a"), entry(1, "b")]).is_err());
        write(&mut store, vec![entry(6, "a")]).unwrap();
        assert_eq!(page(&mut store, "a", None, 10), vec![6, 1, 0]);
        assert_eq!(page(&mut store, "b", None, 10), Vec::<i64>::new());
    }
}
