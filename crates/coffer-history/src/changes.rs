//! Turning applied journal records into rows. Pure: the projector feeds it
//! the engine that applied the record, and it returns what to write.

use crate::compact::{blob_offset, id_hash, CompactBatch, CompactEntry, CompactTransaction, NewAccount, Source};
use crate::error::HistoryError;
use coffer_core::{
    AccountIndex, BatchOutcome, Effect, Engine, HoldId, HoldStatus, Operation, Outcome, Record, Rejection,
    RejectionCode, Transaction, Verdict,
};
use coffer_journal::{JournalBatch, Position};
use serde::Serialize;
use std::collections::HashMap;

/// One change to one account: the balances after it and by how much each
/// moved, so an account's entries sum to its balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// Global order of entries; also the pagination cursor.
    pub history_id: i64,
    pub account: String,
    pub unit: String,
    /// `transaction` or `hold_expired`.
    pub kind: &'static str,
    pub transaction_id: Option<String>,
    pub hold_id: Option<String>,
    pub sequence: i64,
    pub timestamp_ms: i64,
    pub available_change: i128,
    pub frozen_change: i128,
    pub available: i128,
    pub frozen: i128,
}

/// A transaction's stored outcome, kept beyond the engine's idempotency
/// window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRow {
    pub id: String,
    pub sequence: i64,
    pub timestamp_ms: i64,
    pub committed: bool,
    pub rejection_code: Option<String>,
    pub rejection_op_index: Option<i32>,
    /// `Transaction::fingerprint` of the payload, 32 hex digits.
    pub fingerprint: String,
    /// `{"ops": [...], "metadata": ...}` as submitted (canonical JSON).
    pub body: String,
    /// `[{"account", "unit", "available", "frozen"}]` after the commit.
    pub effects: String,
}

/// How a fingerprint is stored: 32 hex digits.
fn fingerprint_text(fingerprint: u128) -> String {
    format!("{fingerprint:032x}")
}

impl TransactionRow {
    /// Whether `transaction` asks for exactly what the stored one did: a
    /// retry to answer with the stored outcome, not an id reused for
    /// another payload.
    pub fn same_payload(&self, transaction: &Transaction) -> bool {
        self.fingerprint == fingerprint_text(transaction.fingerprint())
    }

    /// The stored outcome as the engine reports one.
    pub fn record(&self) -> Result<Record, HistoryError> {
        let malformed = || HistoryError::Invalid(format!("stored transaction {} is malformed", self.id));
        let verdict = if self.committed {
            Verdict::Committed
        } else {
            let code = self
                .rejection_code
                .as_deref()
                .and_then(RejectionCode::parse)
                .ok_or_else(malformed)?;
            let op_index = self
                .rejection_op_index
                .and_then(|index| u16::try_from(index).ok())
                .ok_or_else(malformed)?;
            Verdict::Rejected(Rejection { code, op_index })
        };
        Ok(Record {
            sequence: u64::try_from(self.sequence).map_err(|_| malformed())?,
            timestamp_ms: u64::try_from(self.timestamp_ms).map_err(|_| malformed())?,
            verdict,
        })
    }
}

/// A hold's latest state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRow {
    pub id: String,
    pub account: String,
    pub unit: String,
    pub destination: Option<String>,
    pub amount: i128,
    pub captured: i128,
    pub remaining: i128,
    pub status: &'static str,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub sequence: i64,
}

/// A flash-sale order, from the purchase transaction that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRow {
    pub order_id: String,
    pub product: String,
    pub user_id: String,
    pub quantity: i128,
    /// Price × quantity, when the product has a price.
    pub amount: Option<i128>,
    pub unit: Option<String>,
    /// `completed` (bought outright), `reserved`, then `confirmed`,
    /// `cancelled` or `expired`.
    pub status: String,
    pub expires_at_ms: Option<i64>,
    pub sequence: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A reserved order's end, seen on its stock hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderUpdate {
    pub order_id: String,
    pub status: &'static str,
    pub updated_at_ms: i64,
}

/// What a purchase transaction carries in its metadata (`{"order": …}`),
/// written by the server's purchase endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderMetadata {
    pub product: String,
    pub user: String,
    pub quantity: String,
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
    pub reserved: bool,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

#[derive(serde::Deserialize)]
struct OrderEnvelope {
    order: OrderMetadata,
}

impl OrderMetadata {
    /// The order in a transaction's metadata, if it carries one.
    pub fn of(metadata: Option<&coffer_core::Metadata>) -> Option<Self> {
        let text = metadata?.as_str();
        if !text.starts_with("{\"order\":") {
            return None;
        }
        serde_json::from_str::<OrderEnvelope>(text)
            .ok()
            .map(|envelope| envelope.order)
    }
}

/// The id of the hold for one part (stock, quota, payment) of a reserved
/// order: `order:{order}:{part}`, or with the product as its shard key
/// (cluster mode) `order{product}:{order}:{part}`, which keeps the hold in
/// its product's shard. The purchase endpoint names its holds with this,
/// and the projector reads an order's fate off its stock hold.
pub fn order_hold(order_id: &str, part: &str, shard_key: Option<&str>) -> String {
    match shard_key {
        None => format!("order:{order_id}:{part}"),
        Some(product) => format!("order{{{product}}}:{order_id}:{part}"),
    }
}

/// The part whose hold decides a reservation's status.
pub const ORDER_STOCK_PART: &str = "stock";

fn order_of_stock_hold(hold: &str) -> Option<&str> {
    let named = match hold.strip_prefix("order{") {
        Some(tagged) => tagged.split_once("}:")?.1,
        None => hold.strip_prefix("order:")?,
    };
    named.strip_suffix(ORDER_STOCK_PART)?.strip_suffix(':')
}

/// Where the projector is: stored in the same database transaction as the
/// rows it covers, so a restart neither repeats nor skips a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub position: Position,
    /// The first transaction sequence not yet projected.
    pub sequence_next: u64,
    pub history_next: i64,
    /// Timestamp of the last projected record.
    pub timestamp_ms: u64,
}

impl Cursor {
    /// The segment of a cursor the history export wrote between two of the
    /// index's cursors: the index does not know the journal position there,
    /// so such a store cannot become a history store that follows the
    /// journal until the export has reached one of them.
    pub const MIDWAY_SEGMENT: u64 = u64::MAX;

    pub fn is_midway(&self) -> bool {
        self.position.segment == Self::MIDWAY_SEGMENT
    }
}

/// Rows waiting for one database transaction.
#[derive(Debug, Default)]
pub struct Changes {
    pub transactions: Vec<TransactionRow>,
    pub entries: Vec<HistoryEntry>,
    /// Keyed by hold id: a hold changed twice in one write is written once,
    /// with its latest state.
    pub holds: HashMap<String, HoldRow>,
    pub orders: Vec<OrderRow>,
    /// Applied after `orders`, in order.
    pub order_updates: Vec<OrderUpdate>,
    /// Transactions and entries in the index's form (`Shape::Index`), in
    /// place of `transactions` and `entries`.
    pub compact: CompactBatch,
}

impl Changes {
    pub fn row_count(&self) -> usize {
        self.transactions.len()
            + self.entries.len()
            + self.holds.len()
            + self.orders.len()
            + self.order_updates.len()
            + self.compact.len()
    }

    pub fn clear(&mut self) {
        self.compact.clear();
        self.transactions.clear();
        self.entries.clear();
        self.holds.clear();
        self.orders.clear();
        self.order_updates.clear();
    }
}

/// Serialized directly, never through `serde_json::Value`, which cannot
/// hold amounts beyond 64 bits.
#[derive(Serialize)]
struct BodyJson<'a> {
    ops: &'a [Operation],
    metadata: Option<&'a coffer_core::Metadata>,
}

#[derive(Serialize)]
pub(crate) struct EffectJson<'a> {
    pub account: &'a str,
    pub unit: &'a str,
    pub available: i128,
    pub frozen: i128,
}

/// Which form a store takes transactions and entries in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// SQL rows with names and JSON (`Changes::transactions`, `entries`).
    Rows,
    /// The history index's fixed-size facts (`Changes::compact`); it
    /// computes balance changes and renders JSON when read.
    Index,
}

/// The projection's own state: each account's last projected balances (to
/// compute changes) and the next entry id.
pub struct Projection {
    shape: Shape,
    balances: Vec<(i128, i128)>,
    /// Accounts the engine had at the last projected record (new ones go
    /// into the compact batch with their names).
    accounts_known: usize,
    pub cursor: Cursor,
}

impl Projection {
    /// Starts from an engine at `cursor`: its balances are the last ones
    /// projected.
    pub fn new(engine: &Engine, cursor: Cursor, shape: Shape) -> Self {
        let balances = match shape {
            Shape::Rows => engine.accounts().map(|view| (view.available, view.frozen)).collect(),
            Shape::Index => Vec::new(),
        };
        Projection {
            shape,
            balances,
            accounts_known: engine.account_count(),
            cursor,
        }
    }

    /// Adds the rows of one applied record to `changes` and advances the cursor.
    pub fn project(
        &mut self,
        engine: &Engine,
        batch: &JournalBatch,
        outcome: &BatchOutcome,
        next: Position,
        changes: &mut Changes,
    ) {
        self.project_applied(
            engine,
            batch.first_sequence,
            &batch.transactions,
            outcome,
            next,
            changes,
        );
    }

    /// Adds the rows of one applied batch, whatever log it came from (the
    /// journal, or a cluster shard's partition), and advances the cursor
    /// to `next`.
    pub fn project_applied(
        &mut self,
        engine: &Engine,
        first_sequence: u64,
        transactions: &[Transaction],
        outcome: &BatchOutcome,
        next: Position,
        changes: &mut Changes,
    ) {
        assert_eq!(transactions.len(), outcome.outcomes.len());
        if self.shape == Shape::Index {
            self.project_compact(engine, first_sequence, transactions, outcome, &mut changes.compact);
        }
        let rows = self.shape == Shape::Rows;
        let sequence = first_sequence as i64;
        for expired in &outcome.expired {
            if rows {
                let entry = self.entry(engine, &expired.effect, "expired", sequence, outcome.timestamp_ms);
                changes.entries.push(HistoryEntry {
                    kind: "hold_expired",
                    transaction_id: None,
                    hold_id: Some(expired.hold.as_str().to_owned()),
                    ..entry
                });
            }
            record_hold(engine, &expired.hold, sequence, changes);
            if let Some(order_id) = order_of_stock_hold(expired.hold.as_str()) {
                changes.order_updates.push(OrderUpdate {
                    order_id: order_id.to_owned(),
                    status: "expired",
                    updated_at_ms: outcome.timestamp_ms as i64,
                });
            }
        }
        for (transaction, result) in transactions.iter().zip(&outcome.outcomes) {
            let Outcome::New { record, .. } = result else { continue };
            let effects = outcome.effects_of(result);
            let sequence = record.sequence as i64;
            let id = transaction.id().as_str();
            if rows {
                for effect in effects {
                    let entry = self.entry(engine, effect, id, sequence, record.timestamp_ms);
                    changes.entries.push(entry);
                }
            }
            if record.verdict == Verdict::Committed {
                record_orders(transaction, record, changes);
                for op in transaction.ops() {
                    if let Operation::Hold { hold, .. }
                    | Operation::Capture { hold, .. }
                    | Operation::Release { hold } = op
                    {
                        record_hold(engine, hold, sequence, changes);
                    }
                }
            }
            if rows {
                changes
                    .transactions
                    .push(transaction_row(engine, transaction, record, effects));
            }
        }
        self.cursor = Cursor {
            position: next,
            sequence_next: first_sequence + transactions.len() as u64,
            history_next: self.cursor.history_next,
            timestamp_ms: outcome.timestamp_ms,
        };
    }

    /// The index's form of one batch: entries take their history ids in the
    /// same order as the rows' (expiries first, then each commit's effects).
    fn project_compact(
        &mut self,
        engine: &Engine,
        first_sequence: u64,
        transactions: &[Transaction],
        outcome: &BatchOutcome,
        compact: &mut CompactBatch,
    ) {
        let accounts_now = engine.account_count();
        for slot in self.accounts_known..accounts_now {
            let view = engine.account_at_slot(slot as u64);
            let position = u32::try_from(slot).expect("account positions are 32-bit");
            compact.accounts.push(NewAccount {
                position,
                name: view.id.as_str().to_owned(),
                unit: view.unit.as_str().to_owned(),
            });
        }
        self.accounts_known = accounts_now;
        for expired in &outcome.expired {
            let source = compact.push_expired(first_sequence, expired.hold.as_str());
            Self::push_compact_entry(&expired.effect, source, outcome.timestamp_ms, compact);
        }
        for (transaction, result) in transactions.iter().zip(&outcome.outcomes) {
            let Outcome::New { record, .. } = result else { continue };
            let effects = outcome.effects_of(result);
            let number = u32::try_from(compact.transactions.len()).expect("a batch holds < 2^32 transactions");
            let start = blob_offset(&compact.blob);
            transaction.encode(&mut coffer_core::codec::Writer::new(&mut compact.blob));
            let first_entry = compact.entries.len() as u64;
            for effect in effects {
                Self::push_compact_entry(effect, Source::Transaction(number), record.timestamp_ms, compact);
            }
            compact.transactions.push(CompactTransaction {
                sequence: record.sequence,
                timestamp_ms: record.timestamp_ms,
                verdict: record.verdict,
                encoded: start..blob_offset(&compact.blob),
                id_hash: id_hash(transaction.id().as_str()),
                first_entry,
                entry_count: effects.len() as u32,
            });
        }
    }

    /// The index numbers entries itself (where its file ends); the cursor's
    /// `history_next` is the rows' count only.
    fn push_compact_entry(effect: &Effect, source: Source, timestamp_ms: u64, compact: &mut CompactBatch) {
        compact.entries.push(CompactEntry {
            account: effect.account.position(),
            source,
            timestamp_ms,
            available: effect.available,
            frozen: effect.frozen,
        });
    }

    fn entry(
        &mut self,
        engine: &Engine,
        effect: &Effect,
        transaction_id: &str,
        sequence: i64,
        timestamp_ms: u64,
    ) -> HistoryEntry {
        let (available_before, frozen_before) = self.swap_balances(effect.account, (effect.available, effect.frozen));
        let history_id = self.cursor.history_next;
        self.cursor.history_next += 1;
        HistoryEntry {
            history_id,
            account: engine.account_id(effect.account).as_str().to_owned(),
            unit: engine.account_unit(effect.account).as_str().to_owned(),
            kind: "transaction",
            transaction_id: Some(transaction_id.to_owned()),
            hold_id: None,
            sequence,
            timestamp_ms: timestamp_ms as i64,
            available_change: effect.available - available_before,
            frozen_change: effect.frozen - frozen_before,
            available: effect.available,
            frozen: effect.frozen,
        }
    }

    /// Records an account's new balances, returning the previous ones
    /// (zero for an account opened since the last call).
    fn swap_balances(&mut self, account: AccountIndex, after: (i128, i128)) -> (i128, i128) {
        let position = account.position() as usize;
        if position >= self.balances.len() {
            self.balances.resize(position + 1, (0, 0));
        }
        std::mem::replace(&mut self.balances[position], after)
    }
}

fn transaction_row(
    engine: &Engine,
    transaction: &coffer_core::Transaction,
    record: &coffer_core::Record,
    effects: &[Effect],
) -> TransactionRow {
    let effects: Vec<EffectJson> = effects
        .iter()
        .map(|effect| EffectJson {
            account: engine.account_id(effect.account).as_str(),
            unit: engine.account_unit(effect.account).as_str(),
            available: effect.available,
            frozen: effect.frozen,
        })
        .collect();
    render_transaction_row(transaction, record, &effects)
}

/// A transaction's row from the transaction, its outcome and its effects
/// (the projection renders it when it writes rows, the index when read).
pub(crate) fn render_transaction_row(
    transaction: &coffer_core::Transaction,
    record: &coffer_core::Record,
    effects: &[EffectJson],
) -> TransactionRow {
    let (committed, rejection_code, rejection_op_index) = match record.verdict {
        Verdict::Committed => (true, None, None),
        Verdict::Rejected(rejection) => (
            false,
            Some(rejection.code.as_str().to_owned()),
            Some(i32::from(rejection.op_index)),
        ),
    };
    let body = BodyJson {
        ops: transaction.ops(),
        metadata: transaction.metadata(),
    };
    TransactionRow {
        id: transaction.id().as_str().to_owned(),
        sequence: record.sequence as i64,
        timestamp_ms: record.timestamp_ms as i64,
        committed,
        rejection_code,
        rejection_op_index,
        fingerprint: fingerprint_text(transaction.fingerprint()),
        body: serde_json::to_string(&body).expect("operations serialize"),
        effects: serde_json::to_string(&effects).expect("effects serialize"),
    }
}

/// A purchase creates its order; capturing or releasing an order's stock
/// hold confirms or cancels it.
fn record_orders(transaction: &coffer_core::Transaction, record: &coffer_core::Record, changes: &mut Changes) {
    let timestamp_ms = record.timestamp_ms as i64;
    if let Some(order) = OrderMetadata::of(transaction.metadata()) {
        let parse = |text: &str| text.parse::<i128>().ok();
        changes.orders.push(OrderRow {
            order_id: transaction.id().as_str().to_owned(),
            product: order.product,
            user_id: order.user,
            quantity: parse(&order.quantity).unwrap_or(0),
            amount: order.amount.as_deref().and_then(parse),
            unit: order.unit,
            status: if order.reserved { "reserved" } else { "completed" }.to_owned(),
            expires_at_ms: order.expires_at_ms.map(|at| at as i64),
            sequence: record.sequence as i64,
            created_at_ms: timestamp_ms,
            updated_at_ms: timestamp_ms,
        });
    }
    for op in transaction.ops() {
        let (hold, status) = match op {
            Operation::Capture { hold, .. } => (hold, "confirmed"),
            Operation::Release { hold } => (hold, "cancelled"),
            _ => continue,
        };
        if let Some(order_id) = order_of_stock_hold(hold.as_str()) {
            changes.order_updates.push(OrderUpdate {
                order_id: order_id.to_owned(),
                status,
                updated_at_ms: timestamp_ms,
            });
        }
    }
}

fn record_hold(engine: &Engine, hold: &HoldId, sequence: i64, changes: &mut Changes) {
    // A finished hold may already be forgotten by the engine when many holds
    // finish in one record (the finished-holds bound); its last state is
    // then not known here.
    let Some(view) = engine.hold(hold) else { return };
    let status = match view.status {
        HoldStatus::Active => "active",
        HoldStatus::Captured => "captured",
        HoldStatus::Released => "released",
        HoldStatus::Expired => "expired",
    };
    let row = HoldRow {
        id: view.id.as_str().to_owned(),
        account: view.account.as_str().to_owned(),
        unit: view.unit.as_str().to_owned(),
        destination: view.to.as_ref().map(|to| to.as_str().to_owned()),
        amount: view.amount,
        captured: view.captured,
        remaining: view.remaining,
        status,
        expires_at_ms: view.expires_at_ms.map(|at| at as i64),
        created_at_ms: view.created_at_ms as i64,
        finished_at_ms: view.finished_at_ms.map(|at| at as i64),
        sequence,
    };
    changes.holds.insert(row.id.clone(), row);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orders_stock_hold_names_its_order_in_either_form() {
        for shard_key in [None, Some("phone")] {
            let stock = order_hold("o-1", ORDER_STOCK_PART, shard_key);
            assert_eq!(order_of_stock_hold(&stock), Some("o-1"));
            assert_eq!(order_of_stock_hold(&order_hold("o-1", "quota", shard_key)), None);
        }
        assert_eq!(order_hold("o-1", "stock", Some("phone")), "order{phone}:o-1:stock");
        assert_eq!(order_of_stock_hold("order{phone:o-1:stock"), None);
        assert_eq!(order_of_stock_hold("hold:o-1:stock"), None);
    }
}
