//! How history entries sit in SQLite rows: shared by the store and by the
//! account chains that find an account's entries.

use crate::changes::HistoryEntry;
use crate::error::HistoryError;
use crate::store::kind_name;
use rusqlite::types::{Value, ValueRef};
use rusqlite::Row;

pub(crate) const ENTRY_COLUMNS: &str =
    "history_id, account, unit, kind, transaction_id, hold_id, sequence, timestamp_ms, \
                             available_change, frozen_change, available, frozen";

pub(crate) fn amount(value: i128) -> Value {
    match i64::try_from(value) {
        Ok(small) => Value::Integer(small),
        Err(_) => Value::Text(value.to_string()),
    }
}

pub(crate) fn read_amount(row: &Row, index: usize) -> rusqlite::Result<i128> {
    match row.get_ref(index)? {
        ValueRef::Integer(small) => Ok(i128::from(small)),
        ValueRef::Text(text) => std::str::from_utf8(text)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| rusqlite::Error::InvalidColumnType(index, "amount".into(), rusqlite::types::Type::Text)),
        other => Err(rusqlite::Error::InvalidColumnType(
            index,
            "amount".into(),
            other.data_type(),
        )),
    }
}

pub(crate) fn entry_of(row: &Row) -> rusqlite::Result<(HistoryEntry, String)> {
    let kind: String = row.get(3)?;
    let entry = HistoryEntry {
        history_id: row.get(0)?,
        account: row.get(1)?,
        unit: row.get(2)?,
        kind: "transaction",
        transaction_id: row.get(4)?,
        hold_id: row.get(5)?,
        sequence: row.get(6)?,
        timestamp_ms: row.get(7)?,
        available_change: read_amount(row, 8)?,
        frozen_change: read_amount(row, 9)?,
        available: read_amount(row, 10)?,
        frozen: read_amount(row, 11)?,
    };
    Ok((entry, kind))
}

pub(crate) fn with_kind((entry, kind): (HistoryEntry, String)) -> Result<HistoryEntry, HistoryError> {
    Ok(HistoryEntry {
        kind: kind_name(&kind)?,
        ..entry
    })
}
