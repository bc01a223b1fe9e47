//! How the SQLite store finds an account's entries without an index over
//! all of them.
//!
//! An index on `(account, history_id)` takes one insert per entry at a
//! place chosen by the account, so with many accounts nearly every entry
//! dirties its own index page, and the pages written per commit grow with
//! the history (the projection bench, 100,000 accounts: 91 k transactions/s
//! over the first 600 k, 33 k/s on average over 4.1 M). Instead:
//!
//! - each entry links to the same account's previous entry (`previous`);
//! - `account_heads` holds each account's newest entry and entry count:
//!   one upsert per account a commit touches, in a table as large as the
//!   number of accounts, not as the history;
//! - `account_marks` indexes every `MARK_SPACING`th entry of an account,
//!   so finding the newest entry below any bound takes one index seek and
//!   at most `MARK_SPACING` steps back along the chain.
//!
//! Time bounds become id bounds: the engine's clock never goes back, so
//! timestamps never decrease along `history_id`.

use crate::changes::HistoryEntry;
use crate::error::HistoryError;
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashMap;

/// Every this-many entries of an account are indexed in `account_marks`.
/// The migration that builds the marks for existing stores uses the same
/// number (a test holds them together).
pub const MARK_SPACING: i64 = 32;

/// Heads kept in memory by the writer; past this the cache starts over
/// (a miss costs one point read of `account_heads`).
const HEADS_CACHED_MAX: usize = 262_144;

/// An account's newest entry and how many it has.
#[derive(Debug, Clone, Copy)]
struct Head {
    history_id: i64,
    entries: i64,
}

/// The writer's side: links each new entry to its account's chain.
#[derive(Default)]
pub struct ChainWriter {
    /// Seeded per process, so clients cannot aim account names at one
    /// bucket; several times faster than SipHash on short names.
    heads: HashMap<String, Head, foldhash::fast::RandomState>,
}

impl ChainWriter {
    /// Inserts the entries with their links, their marks and the heads they
    /// move, inside the caller's database transaction. On error the caller
    /// rolls back and must call `forget`, since the cache moved ahead.
    pub fn insert(&mut self, transaction: &Transaction, entries: &[HistoryEntry]) -> Result<(), HistoryError> {
        if self.heads.len() + entries.len() > HEADS_CACHED_MAX {
            self.heads.clear();
        }
        let mut insert = transaction.prepare_cached(&format!(
            "INSERT INTO account_history ({}, previous) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            crate::sqlite_rows::ENTRY_COLUMNS
        ))?;
        let mut mark = transaction.prepare_cached("INSERT INTO account_marks (account, history_id) VALUES (?1, ?2)")?;
        for entry in entries {
            let (previous, entries_now) = self.advance_head(transaction, entry)?;
            insert.execute(params![
                entry.history_id,
                entry.account,
                entry.unit,
                entry.kind,
                entry.transaction_id,
                entry.hold_id,
                entry.sequence,
                entry.timestamp_ms,
                crate::sqlite_rows::amount(entry.available_change),
                crate::sqlite_rows::amount(entry.frozen_change),
                crate::sqlite_rows::amount(entry.available),
                crate::sqlite_rows::amount(entry.frozen),
                previous
            ])?;
            if entries_now % MARK_SPACING == 0 {
                mark.execute(params![entry.account, entry.history_id])?;
            }
        }
        self.store_heads(transaction, entries)
    }

    /// Moves the entry's account head to it; returns the entry it follows
    /// and the account's entry count with it.
    fn advance_head(
        &mut self,
        transaction: &Transaction,
        entry: &HistoryEntry,
    ) -> Result<(Option<i64>, i64), HistoryError> {
        let head = match self.heads.get(&entry.account) {
            Some(head) => Some(*head),
            None => stored_head(transaction, &entry.account)?,
        };
        if let Some(head) = head {
            assert!(head.history_id < entry.history_id, "entries arrive in history order");
        }
        let new_head = Head {
            history_id: entry.history_id,
            entries: head.map_or(0, |head| head.entries) + 1,
        };
        match self.heads.get_mut(&entry.account) {
            Some(cached) => *cached = new_head,
            None => {
                self.heads.insert(entry.account.clone(), new_head);
            }
        }
        Ok((head.map(|head| head.history_id), new_head.entries))
    }

    /// One upsert per account, however many of its entries the write had.
    fn store_heads(&self, transaction: &Transaction, entries: &[HistoryEntry]) -> Result<(), HistoryError> {
        let mut moved: Vec<&str> = entries.iter().map(|entry| entry.account.as_str()).collect();
        moved.sort_unstable();
        moved.dedup();
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO account_heads (account, history_id, entries) VALUES (?1, ?2, ?3) \
             ON CONFLICT (account) DO UPDATE SET history_id = excluded.history_id, entries = excluded.entries",
        )?;
        for account in moved {
            let head = self.heads[account];
            upsert.execute(params![account, head.history_id, head.entries])?;
        }
        Ok(())
    }

    /// After a failed write: the cache may hold heads that were rolled back.
    pub fn forget(&mut self) {
        self.heads.clear();
    }
}

fn stored_head(transaction: &Transaction, account: &str) -> Result<Option<Head>, HistoryError> {
    let mut select = transaction.prepare_cached("SELECT history_id, entries FROM account_heads WHERE account = ?1")?;
    let head = select
        .query_row([account], |row| {
            Ok(Head {
                history_id: row.get(0)?,
                entries: row.get(1)?,
            })
        })
        .optional()?;
    Ok(head)
}

/// Checks links, heads and marks against the entries themselves (full
/// scans, for `verify`): a crash may not leave them out of step, since
/// they commit with the rows, and this is what shows it.
pub fn check(connection: &rusqlite::Connection) -> Result<(), HistoryError> {
    let checks = [
        (
            "entries whose previous link is not the account's previous entry",
            "SELECT count(*) FROM (SELECT previous, lag(history_id) OVER (PARTITION BY account ORDER BY history_id) \
             AS expected FROM account_history) WHERE previous IS NOT expected"
                .to_owned(),
        ),
        (
            "accounts whose head is not their newest entry and count",
            "SELECT count(*) FROM (SELECT account, max(history_id) AS newest, count(*) AS entries \
             FROM account_history GROUP BY account) AS actual FULL JOIN account_heads AS head USING (account) \
             WHERE head.history_id IS NOT actual.newest OR head.entries IS NOT actual.entries"
                .to_owned(),
        ),
        (
            "entries marked or unmarked wrongly",
            format!(
                "SELECT count(*) FROM (SELECT account, history_id, row_number() OVER (PARTITION BY account \
                 ORDER BY history_id) AS ordinal FROM account_history) AS entry FULL JOIN account_marks AS mark \
                 USING (account, history_id) WHERE (entry.ordinal % {MARK_SPACING} = 0) IS NOT \
                 (mark.account IS NOT NULL AND entry.ordinal IS NOT NULL)"
            ),
        ),
    ];
    for (what, sql) in checks {
        let wrong: i64 = connection.query_row(&sql, [], |row| row.get(0))?;
        if wrong > 0 {
            return Err(HistoryError::Invalid(format!("account chains: {wrong} {what}")));
        }
    }
    Ok(())
}

/// One entry and the link to the account's entry before it.
pub struct Link {
    pub entry: HistoryEntry,
    pub previous: Option<i64>,
}

/// The reader's side: walks chains on a connection.
pub struct ChainReader<'connection> {
    pub connection: &'connection rusqlite::Connection,
}

impl ChainReader<'_> {
    pub fn link(&self, history_id: i64) -> Result<Link, HistoryError> {
        let mut select = self.connection.prepare_cached(&format!(
            "SELECT {}, previous FROM account_history WHERE history_id = ?1",
            crate::sqlite_rows::ENTRY_COLUMNS
        ))?;
        let (entry, previous) = select
            .query_row([history_id], |row| {
                Ok((crate::sqlite_rows::entry_of(row)?, row.get(12)?))
            })
            .optional()?
            .ok_or_else(|| HistoryError::Invalid(format!("history entry {history_id} is linked but missing")))?;
        Ok(Link {
            entry: crate::sqlite_rows::with_kind(entry)?,
            previous,
        })
    }

    /// A chain that strays into another account's entries is a damaged
    /// store: say so rather than show another account's history.
    pub fn check_owner(&self, account: &str, link: &Link) -> Result<(), HistoryError> {
        if link.entry.account == account {
            return Ok(());
        }
        Err(HistoryError::Invalid(format!(
            "history entry {} is on {account}'s chain but belongs to {}",
            link.entry.history_id, link.entry.account
        )))
    }

    /// The account's newest entry with a `history_id` below `bound`.
    pub fn newest_below(&self, account: &str, bound: i64) -> Result<Option<Link>, HistoryError> {
        // The first mark at or above the bound has at most MARK_SPACING
        // entries of the account between it and the bound; without one,
        // the head has at most that many above the last mark.
        let mut seek = self.connection.prepare_cached(
            "SELECT history_id FROM account_marks WHERE account = ?1 AND history_id >= ?2 \
             ORDER BY history_id LIMIT 1",
        )?;
        let mut start: Option<i64> = seek.query_row(params![account, bound], |row| row.get(0)).optional()?;
        if start.is_none() {
            let mut head = self
                .connection
                .prepare_cached("SELECT history_id FROM account_heads WHERE account = ?1")?;
            start = head.query_row([account], |row| row.get(0)).optional()?;
        }
        let mut next = start;
        for _ in 0..=MARK_SPACING {
            let Some(history_id) = next else {
                return Ok(None);
            };
            let link = self.link(history_id)?;
            self.check_owner(account, &link)?;
            if link.entry.history_id < bound {
                return Ok(Some(link));
            }
            next = link.previous;
        }
        Err(HistoryError::Invalid(format!(
            "{account}'s chain has more than {MARK_SPACING} entries between two marks"
        )))
    }

    /// The first `history_id` whose timestamp is after `at_ms`, if any: a
    /// binary search over the entries, whose timestamps never decrease.
    pub fn first_after(&self, at_ms: i64) -> Result<Option<i64>, HistoryError> {
        let (lowest, highest): (Option<i64>, Option<i64>) = self.connection.query_row(
            "SELECT min(history_id), max(history_id) FROM account_history",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let (Some(mut low), Some(mut high)) = (lowest, highest) else {
            return Ok(None);
        };
        let mut probe = self.connection.prepare_cached(
            "SELECT history_id, timestamp_ms FROM account_history WHERE history_id >= ?1 \
             ORDER BY history_id LIMIT 1",
        )?;
        // Every id below `low` is at or before `at_ms`; the answer, if it
        // is not `found`, lies in [low, high].
        let mut found = None;
        while low <= high {
            let middle = low + (high - low) / 2;
            let next: Option<(i64, i64)> = probe
                .query_row([middle], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            match next {
                Some((history_id, timestamp_ms)) if history_id <= high => {
                    if timestamp_ms > at_ms {
                        found = Some(history_id);
                        high = middle - 1;
                    } else {
                        low = history_id + 1;
                    }
                }
                _ => high = middle - 1,
            }
        }
        Ok(found)
    }
}
