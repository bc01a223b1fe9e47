//! The server-grade history store: PostgreSQL, tables in their own schema.
//! Rows go in as whole columns (one `INSERT … SELECT FROM UNNEST` per table
//! per write): one round trip for thousands of rows. Amounts are
//! `NUMERIC(40, 0)`, sent as decimal text and cast by the server.

use crate::changes::{Changes, Cursor, HistoryEntry, HoldRow, OrderRow, TransactionRow};
use crate::error::HistoryError;
use crate::pg_copy::CopyRows;
use crate::store::{check_page_limit, hold_status_name, kind_name, HistoryQuery, OrderQuery, Reader, Writer};
use coffer_journal::Position;
use postgres::{Client, Row, Transaction};

const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE projector_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    segment BIGINT NOT NULL,
    segment_offset BIGINT NOT NULL,
    sequence_next BIGINT NOT NULL,
    history_next BIGINT NOT NULL,
    timestamp_ms BIGINT NOT NULL
);
CREATE TABLE transactions (
    id TEXT PRIMARY KEY,
    sequence BIGINT NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    rejection_code TEXT,
    rejection_op_index INTEGER,
    fingerprint TEXT NOT NULL,
    body TEXT NOT NULL,
    effects TEXT NOT NULL
);
CREATE INDEX transactions_by_sequence ON transactions (sequence);
CREATE TABLE account_history (
    history_id BIGINT PRIMARY KEY,
    account TEXT NOT NULL,
    unit TEXT NOT NULL,
    kind TEXT NOT NULL,
    transaction_id TEXT,
    hold_id TEXT,
    sequence BIGINT NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    available_change NUMERIC(40, 0) NOT NULL,
    frozen_change NUMERIC(40, 0) NOT NULL,
    available NUMERIC(40, 0) NOT NULL,
    frozen NUMERIC(40, 0) NOT NULL
);
CREATE INDEX account_history_by_account ON account_history (account, history_id);
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    unit TEXT NOT NULL,
    destination TEXT,
    amount NUMERIC(40, 0) NOT NULL,
    captured NUMERIC(40, 0) NOT NULL,
    remaining NUMERIC(40, 0) NOT NULL,
    status TEXT NOT NULL,
    expires_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    sequence BIGINT NOT NULL
);
CREATE INDEX holds_by_account ON holds (account);
",
    r"
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    product TEXT NOT NULL,
    user_id TEXT NOT NULL,
    quantity NUMERIC(40, 0) NOT NULL,
    amount NUMERIC(40, 0),
    unit TEXT,
    status TEXT NOT NULL,
    expires_at_ms BIGINT,
    sequence BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX orders_by_product ON orders (product, sequence);
CREATE INDEX orders_by_user ON orders (user_id, sequence);
CREATE INDEX orders_by_sequence ON orders (sequence);
",
];

const ENTRY_SELECT: &str = "SELECT history_id, account, unit, kind, transaction_id, hold_id, sequence, timestamp_ms, \
     available_change::TEXT, frozen_change::TEXT, available::TEXT, frozen::TEXT FROM account_history";
const TRANSACTION_SELECT: &str = "SELECT id, sequence, timestamp_ms, status, rejection_code, rejection_op_index, \
     fingerprint, body, effects FROM transactions";

pub struct PostgresStore {
    client: Client,
    /// The cursor as this writer last read or wrote it. Several processes
    /// may write one store (a cluster shard's old owner that woke up, and
    /// its new owner): a write applies only if the stored cursor is still
    /// this one, so rows are never written twice or out of order.
    written: Option<Cursor>,
}

impl PostgresStore {
    pub fn open(url: &str, schema: &str, migrate: bool) -> Result<Self, HistoryError> {
        let mut client = crate::pg_connect::connect(url)?;
        // `schema` is validated by `Database::parse` (a-z, 0-9, _).
        client.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
        ))?;
        let mut store = PostgresStore { client, written: None };
        if migrate {
            store.migrate()?;
            store.written = store.stored_cursor()?;
        }
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), HistoryError> {
        let mut transaction = self.client.transaction()?;
        // Two servers starting on one schema take turns.
        transaction.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
             LOCK TABLE schema_version IN EXCLUSIVE MODE",
        )?;
        let applied: i64 = transaction
            .query_one("SELECT COUNT(*) FROM schema_version", &[])?
            .get(0);
        for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            transaction.batch_execute(sql)?;
            transaction.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(version as i32 + 1)],
            )?;
        }
        transaction.commit()?;
        Ok(())
    }
}

fn texts(values: impl Iterator<Item = i128>) -> Vec<String> {
    values.map(|value| value.to_string()).collect()
}

const CURSOR_SELECT: &str =
    "SELECT segment, segment_offset, sequence_next, history_next, timestamp_ms FROM projector_cursor";

fn cursor_of(row: &Row) -> Cursor {
    Cursor {
        position: Position {
            segment: row.get::<_, i64>(0) as u64,
            offset: row.get::<_, i64>(1) as u64,
        },
        sequence_next: row.get::<_, i64>(2) as u64,
        history_next: row.get(3),
        timestamp_ms: row.get::<_, i64>(4) as u64,
    }
}

impl PostgresStore {
    fn stored_cursor(&mut self) -> Result<Option<Cursor>, HistoryError> {
        Ok(self.client.query_opt(CURSOR_SELECT, &[])?.as_ref().map(cursor_of))
    }
}

impl Writer for PostgresStore {
    fn cursor(&mut self) -> Result<Option<Cursor>, HistoryError> {
        self.written = self.stored_cursor()?;
        Ok(self.written)
    }

    fn write(&mut self, changes: &Changes, cursor: &Cursor) -> Result<(), HistoryError> {
        let mut transaction = self.client.transaction()?;
        // Serializes writers; the row exists once anything was written.
        transaction.batch_execute("LOCK TABLE projector_cursor IN EXCLUSIVE MODE")?;
        let stored = transaction.query_opt(CURSOR_SELECT, &[])?.as_ref().map(cursor_of);
        if stored == Some(*cursor) {
            // Already written: by this writer, whose commit's answer was
            // lost with its connection, or by another that computed the
            // same rows from the same log.
            self.written = stored;
            return Ok(());
        }
        if stored != self.written {
            return Err(HistoryError::CursorMoved {
                expected: self.written.map(|cursor| cursor.position),
                found: stored.map(|cursor| cursor.position),
            });
        }
        if !changes.transactions.is_empty() {
            copy_transactions(&mut transaction, &changes.transactions)?;
        }
        if !changes.entries.is_empty() {
            copy_entries(&mut transaction, &changes.entries)?;
        }
        if !changes.holds.is_empty() {
            let rows: Vec<_> = changes.holds.values().collect();
            let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
            let accounts: Vec<&str> = rows.iter().map(|row| row.account.as_str()).collect();
            let units: Vec<&str> = rows.iter().map(|row| row.unit.as_str()).collect();
            let destinations: Vec<Option<&str>> = rows.iter().map(|row| row.destination.as_deref()).collect();
            let amounts = texts(rows.iter().map(|row| row.amount));
            let captured = texts(rows.iter().map(|row| row.captured));
            let remaining = texts(rows.iter().map(|row| row.remaining));
            let statuses: Vec<&str> = rows.iter().map(|row| row.status).collect();
            let expiries: Vec<Option<i64>> = rows.iter().map(|row| row.expires_at_ms).collect();
            let created: Vec<i64> = rows.iter().map(|row| row.created_at_ms).collect();
            let finished: Vec<Option<i64>> = rows.iter().map(|row| row.finished_at_ms).collect();
            let sequences: Vec<i64> = rows.iter().map(|row| row.sequence).collect();
            transaction.execute(
                "INSERT INTO holds (id, account, unit, destination, amount, captured, remaining, status, \
                 expires_at_ms, created_at_ms, finished_at_ms, sequence) SELECT * FROM UNNEST(\
                 $1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[]::NUMERIC[], $6::TEXT[]::NUMERIC[], \
                 $7::TEXT[]::NUMERIC[], $8::TEXT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::BIGINT[]) \
                 ON CONFLICT (id) DO UPDATE SET captured = EXCLUDED.captured, remaining = EXCLUDED.remaining, \
                 status = EXCLUDED.status, finished_at_ms = EXCLUDED.finished_at_ms, sequence = EXCLUDED.sequence",
                &[
                    &ids,
                    &accounts,
                    &units,
                    &destinations,
                    &amounts,
                    &captured,
                    &remaining,
                    &statuses,
                    &expiries,
                    &created,
                    &finished,
                    &sequences,
                ],
            )?;
        }
        if !changes.orders.is_empty() {
            let rows = &changes.orders;
            let ids: Vec<&str> = rows.iter().map(|row| row.order_id.as_str()).collect();
            let products: Vec<&str> = rows.iter().map(|row| row.product.as_str()).collect();
            let users: Vec<&str> = rows.iter().map(|row| row.user_id.as_str()).collect();
            let quantities = texts(rows.iter().map(|row| row.quantity));
            let amounts: Vec<Option<String>> = rows
                .iter()
                .map(|row| row.amount.map(|value| value.to_string()))
                .collect();
            let units: Vec<Option<&str>> = rows.iter().map(|row| row.unit.as_deref()).collect();
            let statuses: Vec<&str> = rows.iter().map(|row| row.status.as_str()).collect();
            let expiries: Vec<Option<i64>> = rows.iter().map(|row| row.expires_at_ms).collect();
            let sequences: Vec<i64> = rows.iter().map(|row| row.sequence).collect();
            let created: Vec<i64> = rows.iter().map(|row| row.created_at_ms).collect();
            let updated: Vec<i64> = rows.iter().map(|row| row.updated_at_ms).collect();
            transaction.execute(
                "INSERT INTO orders (order_id, product, user_id, quantity, amount, unit, status, expires_at_ms, \
                 sequence, created_at_ms, updated_at_ms) SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], \
                 $4::TEXT[]::NUMERIC[], $5::TEXT[]::NUMERIC[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[], \
                 $10::BIGINT[], $11::BIGINT[]) ON CONFLICT (order_id) DO NOTHING",
                &[
                    &ids,
                    &products,
                    &users,
                    &quantities,
                    &amounts,
                    &units,
                    &statuses,
                    &expiries,
                    &sequences,
                    &created,
                    &updated,
                ],
            )?;
        }
        if !changes.order_updates.is_empty() {
            let update = transaction.prepare(
                "UPDATE orders SET status = $2, updated_at_ms = $3 WHERE order_id = $1 AND status = 'reserved'",
            )?;
            for change in &changes.order_updates {
                transaction.execute(&update, &[&change.order_id, &change.status, &change.updated_at_ms])?;
            }
        }
        transaction.execute(
            "INSERT INTO projector_cursor (id, segment, segment_offset, sequence_next, history_next, timestamp_ms) \
             VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET segment = EXCLUDED.segment, \
             segment_offset = EXCLUDED.segment_offset, sequence_next = EXCLUDED.sequence_next, \
             history_next = EXCLUDED.history_next, timestamp_ms = EXCLUDED.timestamp_ms",
            &[
                &(cursor.position.segment as i64),
                &(cursor.position.offset as i64),
                &(cursor.sequence_next as i64),
                &cursor.history_next,
                &(cursor.timestamp_ms as i64),
            ],
        )?;
        transaction.commit()?;
        self.written = Some(*cursor);
        Ok(())
    }
}

/// Transactions and entries, the bulk of every write, go in by binary
/// COPY (`pg_copy.rs`): no statement per row and no decimal text to parse.
fn copy_transactions(transaction: &mut Transaction, rows: &[TransactionRow]) -> Result<(), HistoryError> {
    let writer = transaction.copy_in(
        "COPY transactions (id, sequence, timestamp_ms, status, rejection_code, rejection_op_index, fingerprint, \
         body, effects) FROM STDIN (FORMAT binary)",
    )?;
    let mut copy = CopyRows::new(writer);
    for row in rows {
        copy.row(9).map_err(copy_failed)?;
        copy.text(&row.id);
        copy.int8(row.sequence);
        copy.int8(row.timestamp_ms);
        copy.text(if row.committed { "committed" } else { "rejected" });
        copy.optional_text(row.rejection_code.as_deref());
        copy.optional_int4(row.rejection_op_index);
        copy.text(&row.fingerprint);
        copy.text(&row.body);
        copy.text(&row.effects);
    }
    copy.finish().map_err(copy_failed)?.finish()?;
    Ok(())
}

fn copy_entries(transaction: &mut Transaction, rows: &[HistoryEntry]) -> Result<(), HistoryError> {
    let writer = transaction.copy_in(
        "COPY account_history (history_id, account, unit, kind, transaction_id, hold_id, sequence, timestamp_ms, \
         available_change, frozen_change, available, frozen) FROM STDIN (FORMAT binary)",
    )?;
    let mut copy = CopyRows::new(writer);
    for row in rows {
        copy.row(12).map_err(copy_failed)?;
        copy.int8(row.history_id);
        copy.text(&row.account);
        copy.text(&row.unit);
        copy.text(row.kind);
        copy.optional_text(row.transaction_id.as_deref());
        copy.optional_text(row.hold_id.as_deref());
        copy.int8(row.sequence);
        copy.int8(row.timestamp_ms);
        for amount in [row.available_change, row.frozen_change, row.available, row.frozen] {
            copy.numeric(amount);
        }
    }
    copy.finish().map_err(copy_failed)?.finish()?;
    Ok(())
}

/// The COPY stream's writer fails only when the connection does.
fn copy_failed(error: std::io::Error) -> HistoryError {
    HistoryError::Invalid(format!("PostgreSQL COPY: {error}"))
}

fn parse_amount(row: &Row, index: usize) -> Result<i128, HistoryError> {
    let text: String = row.get(index);
    text.parse()
        .map_err(|_| HistoryError::Invalid(format!("amount {text:?} out of range")))
}

fn entry_of(row: &Row) -> Result<HistoryEntry, HistoryError> {
    Ok(HistoryEntry {
        history_id: row.get(0),
        account: row.get(1),
        unit: row.get(2),
        kind: kind_name(row.get(3))?,
        transaction_id: row.get(4),
        hold_id: row.get(5),
        sequence: row.get(6),
        timestamp_ms: row.get(7),
        available_change: parse_amount(row, 8)?,
        frozen_change: parse_amount(row, 9)?,
        available: parse_amount(row, 10)?,
        frozen: parse_amount(row, 11)?,
    })
}

impl Reader for PostgresStore {
    fn history(&mut self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, HistoryError> {
        check_page_limit(query.limit);
        let rows = self.client.query(
            &format!(
                "{ENTRY_SELECT} WHERE account = $1 AND history_id < $2 AND timestamp_ms >= $3 \
                 AND timestamp_ms <= $4 ORDER BY history_id DESC LIMIT $5"
            ),
            &[
                &query.account,
                &query.before.unwrap_or(i64::MAX),
                &query.from_ms.unwrap_or(i64::MIN),
                &query.to_ms.unwrap_or(i64::MAX),
                &i64::from(query.limit),
            ],
        )?;
        rows.iter().map(entry_of).collect()
    }

    fn balance_at(&mut self, account: &str, at_ms: i64) -> Result<Option<HistoryEntry>, HistoryError> {
        let row = self.client.query_opt(
            &format!("{ENTRY_SELECT} WHERE account = $1 AND timestamp_ms <= $2 ORDER BY history_id DESC LIMIT 1"),
            &[&account, &at_ms],
        )?;
        row.as_ref().map(entry_of).transpose()
    }

    fn transactions(&mut self, ids: &[&str]) -> Result<Vec<TransactionRow>, HistoryError> {
        let rows = self
            .client
            .query(&format!("{TRANSACTION_SELECT} WHERE id = ANY($1)"), &[&ids])?;
        Ok(rows.iter().map(transaction_of).collect())
    }

    fn entries_after(&mut self, after: i64, limit: u32) -> Result<Vec<HistoryEntry>, HistoryError> {
        let rows = self.client.query(
            &format!("{ENTRY_SELECT} WHERE history_id > $1 ORDER BY history_id LIMIT $2"),
            &[&after, &i64::from(limit)],
        )?;
        rows.iter().map(entry_of).collect()
    }

    fn transactions_after(&mut self, after: i64, limit: u32) -> Result<Vec<TransactionRow>, HistoryError> {
        let rows = self.client.query(
            &format!("{TRANSACTION_SELECT} WHERE sequence > $1 ORDER BY sequence LIMIT $2"),
            &[&after, &i64::from(limit)],
        )?;
        Ok(rows.iter().map(transaction_of).collect())
    }

    fn holds_after(&mut self, after: &str, limit: u32) -> Result<Vec<HoldRow>, HistoryError> {
        let rows = self.client.query(
            "SELECT id, account, unit, destination, amount::TEXT, captured::TEXT, remaining::TEXT, status, \
             expires_at_ms, created_at_ms, finished_at_ms, sequence FROM holds WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &i64::from(limit)],
        )?;
        rows.iter()
            .map(|row| {
                Ok(HoldRow {
                    id: row.get(0),
                    account: row.get(1),
                    unit: row.get(2),
                    destination: row.get(3),
                    amount: parse_amount(row, 4)?,
                    captured: parse_amount(row, 5)?,
                    remaining: parse_amount(row, 6)?,
                    status: hold_status_name(row.get(7))?,
                    expires_at_ms: row.get(8),
                    created_at_ms: row.get(9),
                    finished_at_ms: row.get(10),
                    sequence: row.get(11),
                })
            })
            .collect()
    }

    fn order(&mut self, id: &str) -> Result<Option<OrderRow>, HistoryError> {
        let row = self
            .client
            .query_opt(&format!("{ORDER_SELECT} WHERE order_id = $1"), &[&id])?;
        row.as_ref().map(order_of).transpose()
    }

    fn orders(&mut self, query: &OrderQuery) -> Result<Vec<OrderRow>, HistoryError> {
        check_page_limit(query.limit);
        let rows = self.client.query(
            &format!(
                "{ORDER_SELECT} WHERE ($1::TEXT IS NULL OR product = $1) AND ($2::TEXT IS NULL OR user_id = $2) \
                 AND ($3::TEXT IS NULL OR status = $3) AND sequence < $4 ORDER BY sequence DESC LIMIT $5"
            ),
            &[
                &query.product,
                &query.user,
                &query.status,
                &query.before.unwrap_or(i64::MAX),
                &i64::from(query.limit),
            ],
        )?;
        rows.iter().map(order_of).collect()
    }
}

const ORDER_SELECT: &str = "SELECT order_id, product, user_id, quantity::TEXT, amount::TEXT, unit, status, \
     expires_at_ms, sequence, created_at_ms, updated_at_ms FROM orders";

fn order_of(row: &Row) -> Result<OrderRow, HistoryError> {
    let amount: Option<String> = row.get(4);
    Ok(OrderRow {
        order_id: row.get(0),
        product: row.get(1),
        user_id: row.get(2),
        quantity: parse_amount(row, 3)?,
        amount: amount
            .map(|text| {
                text.parse()
                    .map_err(|_| HistoryError::Invalid(format!("amount {text:?} out of range")))
            })
            .transpose()?,
        unit: row.get(5),
        status: row.get(6),
        expires_at_ms: row.get(7),
        sequence: row.get(8),
        created_at_ms: row.get(9),
        updated_at_ms: row.get(10),
    })
}

fn transaction_of(row: &Row) -> TransactionRow {
    TransactionRow {
        id: row.get(0),
        sequence: row.get(1),
        timestamp_ms: row.get(2),
        committed: row.get::<_, &str>(3) == "committed",
        rejection_code: row.get(4),
        rejection_op_index: row.get(5),
        fingerprint: row.get(6),
        body: row.get(7),
        effects: row.get(8),
    }
}
