//! The records the engine keeps, and the read-only views it hands out.

use crate::identifier::{AccountId, HoldId};
use crate::metadata::Metadata;
use crate::rejection::Rejection;
use crate::unit::Unit;
use serde::{Deserialize, Serialize};

/// `max_total` of an account without a ceiling. Storing a sentinel instead of
/// an `Option<i128>` saves 16 bytes per account.
pub(crate) const NO_CEILING: i128 = i128::MAX;
/// `min_available` of `@world`: it may go negative without bound.
pub(crate) const NO_FLOOR: i128 = i128::MIN;

/// Position of an account in the engine. Stable for the engine's life and
/// across snapshots, so effects can name accounts without cloning ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountIndex(std::num::NonZeroU32);

impl AccountIndex {
    /// Stored as slot + 1 so that `Option<AccountIndex>` is four bytes.
    pub(crate) fn from_slot(slot: u32) -> Self {
        AccountIndex(
            std::num::NonZeroU32::new(slot.checked_add(1).expect("slot below u32::MAX")).expect("slot + 1 > 0"),
        )
    }

    pub(crate) fn slot(self) -> usize {
        self.0.get() as usize - 1
    }

    /// Creation order of the account (0-based): dense, so readers can keep
    /// per-account data in a vector.
    pub fn position(self) -> u32 {
        self.0.get() - 1
    }
}

/// The mutable numbers of an account. `Copy`, so the undo log can save and
/// restore them in one move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Balances {
    pub available: i128,
    pub frozen: i128,
    pub min_available: i128,
    pub max_total: i128,
    pub version: u64,
    pub updated_at_ms: u64,
    pub closed: bool,
}

impl Hold {
    pub fn expiry(&self) -> Option<u64> {
        self.expires_at_ms.map(std::num::NonZeroU64::get)
    }
}

impl Balances {
    pub fn total(&self) -> Option<i128> {
        self.available.checked_add(self.frozen)
    }
}

/// What every movement reads: 128 bytes, aligned so that they are two
/// cache lines of one 128-byte block (which the hardware fetches as a pair).
/// A transfer over a large ledger is bound by these misses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(align(128))]
pub(crate) struct Account {
    pub id: AccountId,
    pub unit: u32,
    pub balances: Balances,
}

const _: () = assert!(std::mem::size_of::<Account>() == 128);

/// What only reads and snapshots need, kept apart so it costs movements no
/// cache space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccountDetails {
    pub metadata: Option<Metadata>,
    pub created_at_ms: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Open,
    Closed,
}

/// An account as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub id: AccountId,
    pub unit: Unit,
    pub available: i128,
    pub frozen: i128,
    pub total: i128,
    pub min_available: Option<i128>,
    pub max_total: Option<i128>,
    pub status: AccountStatus,
    pub metadata: Option<Metadata>,
    pub version: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum HoldStatus {
    Active = 0,
    Captured = 1,
    Released = 2,
    Expired = 3,
}

impl HoldStatus {
    pub(crate) fn from_u8(value: u8) -> Option<Self> {
        [
            HoldStatus::Active,
            HoldStatus::Captured,
            HoldStatus::Released,
            HoldStatus::Expired,
        ]
        .into_iter()
        .find(|status| *status as u8 == value)
    }
}

/// A hold's numbers. The id is the key of the map that holds it, so this is
/// `Copy` and the undo log can restore it whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hold {
    pub account: AccountIndex,
    pub to: Option<AccountIndex>,
    pub amount: i128,
    pub captured: i128,
    pub remaining: i128,
    /// Never zero: an expiry is after its batch's timestamp. The niche
    /// keeps this field at eight bytes (budget: ≤ 256 bytes a hold, tests/memory.rs).
    pub expires_at_ms: Option<std::num::NonZeroU64>,
    pub status: HoldStatus,
    /// Creation order: breaks ties between holds expiring at the same instant.
    pub serial: u64,
    pub created_at_ms: u64,
    pub finished_at_ms: u64,
}

/// A hold as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub id: HoldId,
    pub account: AccountId,
    pub unit: Unit,
    pub to: Option<AccountId>,
    pub amount: i128,
    pub captured: i128,
    pub remaining: i128,
    pub status: HoldStatus,
    pub expires_at_ms: Option<u64>,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
}

/// What the engine decided for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Committed,
    Rejected(Rejection),
}

/// The remembered result of a transaction: enough to answer a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The transaction's position in the journal.
    pub sequence: u64,
    /// The timestamp of the batch that applied it.
    pub timestamp_ms: u64,
    pub verdict: Verdict,
}

/// An account's balances right after a committed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    pub account: AccountIndex,
    pub available: i128,
    pub frozen: i128,
    pub version: u64,
}

/// The result of submitting one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied now: committed (its effects are in `BatchOutcome::effects`
    /// at this range) or rejected (an empty range).
    New {
        record: Record,
        effects: std::ops::Range<usize>,
    },
    /// The same id and payload were seen before: nothing changed.
    Replayed(Record),
    /// The id was seen before with a different payload: nothing changed.
    IdReused(Record),
    /// In a linked chain that was not applied because another of its
    /// transactions had been seen before: nothing changed and nothing is
    /// remembered (the id stays free). The record is not stored: it says
    /// `linked_event_failed` at the transaction's sequence.
    NotApplied(Record),
}

impl Outcome {
    pub fn record(&self) -> &Record {
        match self {
            Outcome::New { record, .. }
            | Outcome::Replayed(record)
            | Outcome::IdReused(record)
            | Outcome::NotApplied(record) => record,
        }
    }
}

/// A hold released because its expiry passed, before a batch applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredHold {
    pub hold: HoldId,
    pub amount: i128,
    pub effect: Effect,
}

/// Everything one batch produced, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    pub timestamp_ms: u64,
    pub first_sequence: u64,
    pub expired: Vec<ExpiredHold>,
    pub outcomes: Vec<Outcome>,
    /// The effects of every commit in the batch, in order; one allocation
    /// per batch instead of one per transaction.
    pub effects: Vec<Effect>,
}

impl BatchOutcome {
    /// The accounts a new commit touched, with their balances after it.
    pub fn effects_of(&self, outcome: &Outcome) -> &[Effect] {
        match outcome {
            Outcome::New { effects, .. } => &self.effects[effects.clone()],
            Outcome::Replayed(_) | Outcome::IdReused(_) | Outcome::NotApplied(_) => &[],
        }
    }
}
