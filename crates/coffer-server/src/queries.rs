//! What the engine is asked and what it answers, shared by the single
//! node's engine thread and a cluster shard's owner: both answer the same
//! queries from an engine and describe outcomes the same way.

use coffer_core::{
    AccountId, AccountView, BatchOutcome, Engine, HoldId, HoldView, Outcome, Record, Transaction, TransactionId,
    Verdict,
};

/// Accounts one list request may examine on the engine thread.
pub const LIST_SCAN_MAX: u64 = 10_000;
/// Accounts one list page holds at most.
pub const LIST_LIMIT_MAX: usize = 1_000;

/// An account balance after a commit, resolved to names for the reply.
#[derive(Debug, Clone)]
pub struct EffectView {
    pub account: AccountId,
    pub unit: coffer_core::Unit,
    pub available: i128,
    pub frozen: i128,
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    New,
    Replayed,
    IdReused,
    /// In a linked chain refused because another of its ids was seen
    /// before: nothing applied, the id not remembered.
    NotApplied,
}

/// Whether a write's answer shows the balances it left. Building them
/// costs the engine thread two account names copied per transfer, and the
/// answer under `Prefer: return=minimal` never shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    WithEffects,
    WithoutEffects,
}

/// What happened to one submitted transaction.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub id: TransactionId,
    pub kind: Kind,
    pub record: Record,
    /// Empty under `Detail::WithoutEffects`.
    pub effects: Vec<EffectView>,
}

#[derive(Debug, Clone)]
pub enum Query {
    Account(AccountId),
    Accounts {
        prefix: String,
        after: u64,
        limit: usize,
    },
    Hold(HoldId),
    Transaction(TransactionId),
    /// The unit of each account, `None` for one that does not exist
    /// (bulk jobs, at most `UNITS_QUERY_MAX` ids).
    Units(Vec<AccountId>),
}

/// Accounts one `Query::Units` may name.
pub const UNITS_QUERY_MAX: usize = 10_000;

pub enum Answer {
    Account(Option<AccountView>),
    /// Accounts and the cursor to continue from, if more may follow.
    Accounts(Vec<AccountView>, Option<u64>),
    Hold(Option<HoldView>),
    Transaction(Option<Record>),
    Units(Vec<Option<coffer_core::Unit>>),
    /// A cluster's transaction across shards, not finished yet: its steps.
    SagaInFlight(Vec<StepView>),
}

/// One step of a cross-shard transaction (a cluster's saga), as lookups
/// show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = SagaStep)]
pub struct StepView {
    pub shard: u32,
    /// `prepare`, `commit` or `abort`.
    pub step: String,
    /// `sent`, `prepared`, `rejected` or `done`.
    pub status: String,
}

pub(crate) fn answer(engine: &Engine, query: Query) -> Answer {
    match query {
        Query::Account(id) => Answer::Account(engine.account(&id)),
        Query::Accounts { prefix, after, limit } => list_accounts(engine, &prefix, after, limit),
        Query::Hold(id) => Answer::Hold(engine.hold(&id)),
        Query::Transaction(id) => Answer::Transaction(engine.transaction(&id)),
        Query::Units(ids) => {
            assert!(ids.len() <= UNITS_QUERY_MAX, "bounded by the caller");
            let units = ids
                .iter()
                .map(|id| {
                    let index = engine.find_account(id)?;
                    Some(engine.account_unit(index).clone())
                })
                .collect();
            Answer::Units(units)
        }
    }
}

/// One page of accounts whose id starts with `prefix`, from creation
/// position `after`. The scan itself is bounded too: a rare prefix over
/// millions of accounts returns a short (even empty) page and a cursor,
/// instead of stalling every writer behind one read.
fn list_accounts(engine: &Engine, prefix: &str, after: u64, limit: usize) -> Answer {
    let count = engine.account_count() as u64;
    let scan_end = count.min(after.saturating_add(LIST_SCAN_MAX));
    let mut found = Vec::with_capacity(limit.min(64));
    for slot in after..scan_end {
        let view = engine.account_at_slot(slot);
        if view.id.is_world() || !view.id.as_str().starts_with(prefix) {
            continue;
        }
        if found.len() == limit {
            return Answer::Accounts(found, Some(slot));
        }
        found.push(view);
    }
    Answer::Accounts(found, (scan_end < count).then_some(scan_end))
}

pub(crate) fn describe(
    engine: &Engine,
    transaction: &Transaction,
    outcome: &Outcome,
    batch: &BatchOutcome,
    detail: Detail,
) -> Submitted {
    let kind = match outcome {
        Outcome::New { .. } => Kind::New,
        Outcome::Replayed(_) => Kind::Replayed,
        Outcome::IdReused(_) => Kind::IdReused,
        Outcome::NotApplied(_) => Kind::NotApplied,
    };
    let effects = match detail {
        Detail::WithEffects => batch.effects_of(outcome),
        Detail::WithoutEffects => &[],
    };
    let effects = effects
        .iter()
        .map(|effect| EffectView {
            account: engine.account_id(effect.account).clone(),
            unit: engine.account_unit(effect.account).clone(),
            available: effect.available,
            frozen: effect.frozen,
            version: effect.version,
        })
        .collect();
    Submitted {
        id: transaction.id().clone(),
        kind,
        record: *outcome.record(),
        effects,
    }
}

impl Submitted {
    pub fn verdict(&self) -> Verdict {
        self.record.verdict
    }
}
