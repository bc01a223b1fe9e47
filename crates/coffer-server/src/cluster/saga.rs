//! Cross-shard transactions: sagas on holds.
//!
//! A transaction of transfers whose accounts live in more than one shard is
//! applied in steps, each an ordinary transaction of one shard's engine, so
//! every ledger rule (floors, ceilings, closed accounts, frozen = open
//! holds, conservation per unit) holds in every shard at every moment:
//!
//! 1. **prepare**, on every shard the transaction names: each debit becomes
//!    a hold on its account towards the shard's transit account for the
//!    other side (the money shows as frozen at once; a short balance is
//!    rejected at once, with its code); each credit is made from the
//!    transit account and held back at once on the credited account, so
//!    the credit's checks (account, unit, closed, ceiling) run now.
//! 2. **commit** when every prepare held: debit holds are captured into
//!    transit, credit holds released; or **abort** when one was rejected:
//!    the debit holds are released, the credit holds captured back into
//!    transit. Neither can be rejected: transit accounts have no floor and
//!    no ceiling and nobody else moves them.
//!
//! For each shard pair and unit, the source's transit account gains what
//! the destination's loses: a pair nets to minus the amount in flight
//! (credited, not yet captured), zero when nothing is.
//!
//! The **home** shard (the first debited account's) keeps the saga in its
//! state: the transaction, what each participant reported, who waits. It
//! is snapshotted and rebuilt by replay like the engine, so whoever owns
//! the home after a failover holds the same sagas and re-drives the steps
//! still unanswered. Every step has an id derived from the transaction's,
//! so a step delivered twice (a re-drive, a zombie owner) is a replay in
//! the participant's engine. Nothing times out: a saga ends only when
//! every step it sent has been answered.

use super::address::ReplyTo;
use crate::queries::StepView;
use coffer_core::codec::{Reader, Writer};
use coffer_core::{
    AccountId, Amount, Balance, BatchOutcome, CoreError, Engine, HoldId, Metadata, Operation, Outcome, Record,
    Rejection, RejectionCode, Transaction, TransactionId, Unit, Verdict,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Sagas one home shard runs at a time; beyond, new ones are refused (503).
pub const SAGAS_IN_FLIGHT_MAX: usize = 10_000;
/// Finished sagas a home shard remembers, to answer retries and lookups.
/// An older id retried runs again: each of its steps is then a replay in
/// its participant's idempotency window, so the outcome is the same while
/// the participants remember the steps.
pub const SAGA_OUTCOMES_MAX: usize = 100_000;
/// Requests that may wait for one saga (the first and its retries).
pub const SAGA_WAITERS_MAX: usize = 8;

/// Shards one saga can name: both ends of each of its transfers.
const PARTICIPANTS_MAX: usize = 2 * coffer_core::limits::OPS_PER_TRANSACTION_MAX;

/// The prefix of every id a saga makes (steps, holds): `@` ids are the
/// system's, refused in clients' requests.
const PREFIX: &str = "@saga:";
const TRANSIT_PREFIX: &str = "@transit:";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepKind {
    Prepare,
    Commit,
    Abort,
}

impl StepKind {
    fn letter(self) -> char {
        match self {
            StepKind::Prepare => 'p',
            StepKind::Commit => 'c',
            StepKind::Abort => 'a',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StepKind::Prepare => "prepare",
            StepKind::Commit => "commit",
            StepKind::Abort => "abort",
        }
    }

    pub fn encode(self, writer: &mut Writer) {
        writer.u8(self as u8);
    }

    pub fn decode(reader: &mut Reader) -> Result<StepKind, CoreError> {
        match reader.u8()? {
            0 => Ok(StepKind::Prepare),
            1 => Ok(StepKind::Commit),
            2 => Ok(StepKind::Abort),
            other => Err(reader.error(format!("unknown saga step {other}"))),
        }
    }
}

/// Which end of a transfer a shard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Debit,
    Credit,
}

/// What a participant answers a step with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// The prepare held: the unit of each transfer end this shard has.
    Prepared(Vec<(u16, Side, Unit)>),
    /// The prepare was rejected; `op_index` is the transfer's index.
    Rejected(Rejection),
    /// A commit or abort was applied.
    Done,
}

impl StepResult {
    pub fn encode(&self, writer: &mut Writer) {
        match self {
            StepResult::Prepared(units) => {
                writer.u8(0);
                writer.u64(units.len() as u64);
                for (leg, side, unit) in units {
                    writer.u64(u64::from(*leg));
                    writer.bool(*side == Side::Credit);
                    writer.str(unit.as_str());
                }
            }
            StepResult::Rejected(rejection) => {
                writer.u8(1);
                writer.u8(rejection.code as u8);
                writer.u64(u64::from(rejection.op_index));
            }
            StepResult::Done => writer.u8(2),
        }
    }

    pub fn decode(reader: &mut Reader) -> Result<StepResult, CoreError> {
        Ok(match reader.u8()? {
            0 => {
                let count = reader.u64()?;
                if count > PARTICIPANTS_MAX as u64 {
                    return Err(reader.error(format!("{count} transfer ends in one prepare")));
                }
                let mut units = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let leg = leg_index(reader)?;
                    let side = if reader.bool()? { Side::Credit } else { Side::Debit };
                    units.push((leg, side, reader.parsed(Unit::parse)?));
                }
                StepResult::Prepared(units)
            }
            1 => {
                let code = reader.u8()?;
                let code = RejectionCode::from_u8(code).ok_or_else(|| reader.error("unknown rejection code"))?;
                StepResult::Rejected(Rejection {
                    code,
                    op_index: leg_index(reader)?,
                })
            }
            2 => StepResult::Done,
            other => return Err(reader.error(format!("unknown step result {other}"))),
        })
    }
}

fn leg_index(reader: &mut Reader) -> Result<u16, CoreError> {
    let leg = reader.u64()?;
    u16::try_from(leg)
        .ok()
        .filter(|leg| usize::from(*leg) < coffer_core::limits::OPS_PER_TRANSACTION_MAX)
        .ok_or_else(|| reader.error(format!("transfer index {leg}")))
}

/// Why a transaction cannot run as a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Only transfers cross shards (holds, opens and the administrators'
    /// operations name one shard's state).
    NotTransfers { op_index: usize, kind: &'static str },
    /// A transfer to its own account.
    SameAccount { op_index: usize },
    /// Linked chains stay within one shard.
    Linked,
    /// A flash sale's purchase keeps its order in one shard's history.
    Purchase,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotTransfers { op_index, kind } => write!(
                formatter,
                "only transfers may span shards; ops[{op_index}] is a {kind}: keep its accounts in one shard (a \
                 shared {{key}} in their ids)"
            ),
            Refusal::SameAccount { op_index } => {
                write!(formatter, "ops[{op_index}] transfers from an account to itself")
            }
            Refusal::Linked => write!(formatter, "a linked chain must stay within one shard"),
            Refusal::Purchase => write!(
                formatter,
                "a purchase must stay within its product's shard (the buyer's and the merchant's accounts too)"
            ),
        }
    }
}

/// One transfer of a saga's transaction.
struct Leg<'a> {
    index: u16,
    from: &'a AccountId,
    to: &'a AccountId,
    amount: Amount,
}

fn legs(transaction: &Transaction) -> impl Iterator<Item = Leg<'_>> {
    transaction
        .ops()
        .iter()
        .enumerate()
        .filter_map(|(index, operation)| match operation {
            Operation::Transfer { from, to, amount } => Some(Leg {
                index: index as u16,
                from,
                to,
                amount: *amount,
            }),
            _ => None,
        })
}

/// Checks that `transaction` can run as a saga.
pub fn check(transaction: &Transaction) -> Result<(), Refusal> {
    if transaction.is_linked_to_next() {
        return Err(Refusal::Linked);
    }
    if coffer_history::OrderMetadata::of(transaction.metadata()).is_some() {
        return Err(Refusal::Purchase);
    }
    for (op_index, operation) in transaction.ops().iter().enumerate() {
        match operation {
            Operation::Transfer { from, to, .. } if from == to => return Err(Refusal::SameAccount { op_index }),
            Operation::Transfer { .. } => {}
            other => {
                return Err(Refusal::NotTransfers {
                    op_index,
                    kind: other.kind(),
                })
            }
        }
    }
    Ok(())
}

/// The shard of a transfer end; `@world`, in every shard, takes the
/// other end's.
fn shard_of(end: &AccountId, other: &AccountId, shards: u32) -> u32 {
    match end.is_world() {
        true => other.shard(shards),
        false => end.shard(shards),
    }
}

/// The shard that keeps the saga: the first debited account's (the first
/// credited one's when every transfer comes from `@world`).
pub fn home(transaction: &Transaction, shards: u32) -> u32 {
    let mut legs = legs(transaction);
    let first = legs.next().expect("a saga has a transfer");
    shard_of(first.from, first.to, shards)
}

/// Every shard the saga has steps on, in order.
pub fn participants(transaction: &Transaction, shards: u32) -> Vec<u32> {
    let mut found = BTreeSet::new();
    for leg in legs(transaction) {
        found.insert(shard_of(leg.from, leg.to, shards));
        found.insert(shard_of(leg.to, leg.from, shards));
    }
    found.into_iter().collect()
}

/// What a saga's ids are made from: a digest of its transaction id, so
/// they are short whatever the id's length.
fn tag(id: &TransactionId) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(id.as_str().as_bytes()))
}

pub fn step_id(id: &TransactionId, kind: StepKind, shard: u32) -> TransactionId {
    TransactionId::parse(&format!("{PREFIX}{}:{}{shard}", tag(id), kind.letter())).expect("a step id is an id")
}

fn hold_id(tag: &str, leg: u16, side: Side) -> HoldId {
    let letter = match side {
        Side::Debit => 'd',
        Side::Credit => 'c',
    };
    HoldId::parse(&format!("{PREFIX}{tag}:{letter}{leg}")).expect("a saga hold id is an id")
}

/// The account of `shard` through which `unit` moves to or from `peer`.
/// Its id carries a shard key that hashes to `shard`, so it is read where
/// it lives like any account.
pub fn transit_id(shard: u32, peer: u32, unit: &Unit, shards: u32) -> AccountId {
    let unit = unit.as_str().replace('/', ".");
    let key = transit_key(shard, shards);
    AccountId::parse(&format!("{TRANSIT_PREFIX}{{{key}}}:{peer}:{unit}")).expect("a transit id is an id")
}

/// The first `t<n>` whose hash falls in `shard`. Found by trying (about
/// `shards` hashes), so each is found once per process.
fn transit_key(shard: u32, shards: u32) -> String {
    static FOUND: std::sync::OnceLock<std::sync::Mutex<HashMap<(u32, u32), String>>> = std::sync::OnceLock::new();
    let mut found = FOUND.get_or_init(Default::default).lock().expect("transit keys lock");
    found
        .entry((shard, shards))
        .or_insert_with(|| {
            (0u64..)
                .map(|n| format!("t{n}"))
                .find(|key| {
                    AccountId::parse(&format!("{{{key}}}"))
                        .expect("a key is an id")
                        .shard(shards)
                        == shard
                })
                .expect("some key hashes to every shard")
        })
        .clone()
}

/// What a participant applied for one step, for its history and reply.
pub struct Participation {
    /// The engine transactions applied (transit accounts opened, then the
    /// step), and their outcome.
    pub transactions: Vec<Transaction>,
    pub outcome: BatchOutcome,
    pub result: StepResult,
}

/// Applies `shard`'s part of a saga step to its engine. Deterministic: the
/// same log gives every owner the same engine transactions.
pub fn participate(
    engine: &mut Engine,
    timestamp_ms: u64,
    shard: u32,
    shards: u32,
    kind: StepKind,
    transaction: &Transaction,
) -> Participation {
    let tag = tag(transaction.id());
    let id = step_id(transaction.id(), kind, shard);
    let mut ops = Vec::new();
    // The transfer each operation belongs to, for a rejection's index.
    let mut op_legs = Vec::new();
    let mut units = Vec::new();
    let mut opened = Vec::new();
    for leg in legs(transaction) {
        let (from_shard, to_shard) = (shard_of(leg.from, leg.to, shards), shard_of(leg.to, leg.from, shards));
        if from_shard == shard && !leg.from.is_world() {
            let hold = hold_id(&tag, leg.index, Side::Debit);
            let step = match kind {
                StepKind::Prepare => {
                    let to = match leg.to.is_world() {
                        true => leg.to.clone(),
                        false => transit(engine, shard, to_shard, leg.from, shards, &mut opened),
                    };
                    if let Some(view) = engine.account(leg.from) {
                        units.push((leg.index, Side::Debit, view.unit));
                    }
                    Operation::Hold {
                        hold,
                        account: leg.from.clone(),
                        amount: leg.amount,
                        to: Some(to),
                        expires_at_ms: None,
                        ttl_ms: None,
                    }
                }
                StepKind::Commit => Operation::Capture {
                    hold,
                    amount: None,
                    to: None,
                },
                StepKind::Abort => Operation::Release { hold },
            };
            ops.push(step);
            op_legs.push(leg.index);
        }
        if to_shard == shard && !leg.to.is_world() {
            let hold = hold_id(&tag, leg.index, Side::Credit);
            match kind {
                StepKind::Prepare => {
                    let from = match leg.from.is_world() {
                        true => leg.from.clone(),
                        false => transit(engine, shard, from_shard, leg.to, shards, &mut opened),
                    };
                    if let Some(view) = engine.account(leg.to) {
                        units.push((leg.index, Side::Credit, view.unit));
                    }
                    ops.push(Operation::transfer(from.clone(), leg.to.clone(), leg.amount));
                    ops.push(Operation::Hold {
                        hold,
                        account: leg.to.clone(),
                        amount: leg.amount,
                        to: Some(from),
                        expires_at_ms: None,
                        ttl_ms: None,
                    });
                    op_legs.extend([leg.index, leg.index]);
                }
                StepKind::Commit => {
                    ops.push(Operation::Release { hold });
                    op_legs.push(leg.index);
                }
                StepKind::Abort => {
                    ops.push(Operation::Capture {
                        hold,
                        amount: None,
                        to: None,
                    });
                    op_legs.push(leg.index);
                }
            }
        }
    }
    assert!(!ops.is_empty(), "a step goes only to shards the transaction names");
    let metadata = Metadata::from_value(&serde_json::json!({"saga": transaction.id().as_str(), "step": kind.name()}))
        .expect("a saga's metadata fits");
    let step = Transaction::new(id, ops, Some(metadata)).expect("a step is a valid transaction");
    let mut transactions = opened;
    transactions.push(step);
    let outcome = engine.apply_batch(timestamp_ms, &transactions);
    let record = match outcome.outcomes.last().expect("one outcome per transaction") {
        Outcome::New { record, .. } | Outcome::Replayed(record) | Outcome::IdReused(record) => *record,
        Outcome::NotApplied(_) => unreachable!("a step is not linked"),
    };
    let result = match (record.verdict, kind) {
        (Verdict::Committed, StepKind::Prepare) => StepResult::Prepared(units),
        (Verdict::Committed, _) => StepResult::Done,
        (Verdict::Rejected(rejection), StepKind::Prepare) => StepResult::Rejected(Rejection {
            code: rejection.code,
            op_index: op_legs[usize::from(rejection.op_index)],
        }),
        (Verdict::Rejected(rejection), _) => {
            // Only an operator moving a saga's hold or transit account by
            // hand gets here: the step stays unanswered, the saga in
            // flight and visible, rather than finish on a guess.
            tracing::error!(saga = %transaction.id(), shard, step = kind.name(), ?rejection,
                "a saga's commit or abort was rejected");
            StepResult::Rejected(rejection)
        }
    };
    Participation {
        transactions,
        outcome,
        result,
    }
}

/// The transit account of `shard` towards `peer` in `account`'s unit;
/// opened first (`opened`) when it does not exist yet. An account that
/// does not exist names a transit account that is never opened: the step
/// is rejected on the account itself.
fn transit(
    engine: &Engine,
    shard: u32,
    peer: u32,
    account: &AccountId,
    shards: u32,
    opened: &mut Vec<Transaction>,
) -> AccountId {
    let Some(view) = engine.account(account) else {
        return transit_id(shard, peer, &Unit::parse("NONE").expect("a unit"), shards);
    };
    let transit = transit_id(shard, peer, &view.unit, shards);
    let pending = opened
        .iter()
        .any(|open| matches!(open.ops().first(), Some(Operation::Open { account, .. }) if *account == transit));
    if engine.account(&transit).is_none() && !pending {
        let id = TransactionId::parse(&format!(
            "{PREFIX}open:{:032x}",
            xxhash_rust::xxh3::xxh3_128(transit.as_str().as_bytes())
        ))
        .expect("an id");
        let open = Operation::Open {
            account: transit.clone(),
            unit: view.unit,
            min_available: Some(Balance::new(i128::MIN)),
            max_total: None,
            metadata: None,
        };
        opened.push(Transaction::new(id, vec![open], None).expect("a valid open"));
    }
    transit
}

/// Where a saga stands at its home.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Preparing,
    Committing,
    Aborting(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Saga {
    transaction: Transaction,
    started_ms: u64,
    waiters: Vec<ReplyTo>,
    phase: Phase,
    /// Each participant's answer to its prepare.
    prepared: BTreeMap<u32, StepResult>,
    /// Participants whose commit or abort is applied.
    done: BTreeSet<u32>,
}

/// A step to append to a participant's log.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub shard: u32,
    pub kind: StepKind,
    pub transaction: Transaction,
}

/// Where a participant's answer lies in the home's log: a finished saga's
/// record carries it.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// The answer's offset in the home's partition.
    pub sequence: u64,
    pub timestamp_ms: u64,
}

/// A finished saga's outcome and who waits for it.
#[derive(Debug)]
pub struct Finished {
    pub id: TransactionId,
    pub record: Record,
    pub waiters: Vec<ReplyTo>,
}

/// What a home makes of a saga's first entry (or a retry's).
#[derive(Debug)]
pub enum Begun {
    /// Started: its prepares are to be sent.
    Started(Vec<Outbound>),
    /// The same transaction is in flight: the waiter joins it.
    Joined,
    /// Finished with this record, with the same payload or another.
    Known { record: Record, same_payload: bool },
    /// In flight with another payload.
    ReusedInFlight,
    /// Too many sagas in flight, or waiters on this one.
    Refused(String),
}

/// What a home knows of an id.
#[derive(Debug, Clone)]
pub enum Lookup {
    InFlight(Vec<StepView>),
    Finished(Record),
}

/// The sagas a home shard keeps: in flight, and the outcomes of the
/// newest `SAGA_OUTCOMES_MAX` finished ones.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SagaTable {
    in_flight: BTreeMap<TransactionId, Saga>,
    outcomes: HashMap<TransactionId, (u128, Record)>,
    /// Finished ids, oldest first: the eviction order.
    finished_order: VecDeque<TransactionId>,
}

impl SagaTable {
    pub fn is_in_flight(&self, id: &TransactionId) -> bool {
        self.in_flight.contains_key(id)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When the oldest saga in flight started.
    pub fn oldest_started_ms(&self) -> Option<u64> {
        self.in_flight.values().map(|saga| saga.started_ms).min()
    }

    pub fn begin(&mut self, transaction: Transaction, reply_to: ReplyTo, timestamp_ms: u64, shards: u32) -> Begun {
        let id = transaction.id().clone();
        if let Some((fingerprint, record)) = self.outcomes.get(&id) {
            return Begun::Known {
                record: *record,
                same_payload: *fingerprint == transaction.fingerprint(),
            };
        }
        if let Some(saga) = self.in_flight.get_mut(&id) {
            if saga.transaction.fingerprint() != transaction.fingerprint() {
                return Begun::ReusedInFlight;
            }
            if saga.waiters.len() >= SAGA_WAITERS_MAX {
                return Begun::Refused(format!(
                    "{SAGA_WAITERS_MAX} requests already wait for transaction {id}; retry shortly"
                ));
            }
            saga.waiters.push(reply_to);
            return Begun::Joined;
        }
        if self.in_flight.len() >= SAGAS_IN_FLIGHT_MAX {
            return Begun::Refused(format!(
                "{SAGAS_IN_FLIGHT_MAX} cross-shard transactions are in flight from this shard; retry shortly"
            ));
        }
        let outbound = participants(&transaction, shards)
            .into_iter()
            .map(|shard| Outbound {
                shard,
                kind: StepKind::Prepare,
                transaction: transaction.clone(),
            })
            .collect();
        self.in_flight.insert(
            id,
            Saga {
                transaction,
                started_ms: timestamp_ms,
                waiters: vec![reply_to],
                phase: Phase::Preparing,
                prepared: BTreeMap::new(),
                done: BTreeSet::new(),
            },
        );
        Begun::Started(outbound)
    }

    /// A participant's answer to a step. Answers to steps already answered,
    /// or of sagas no longer in flight, change nothing (steps are delivered
    /// twice when re-driven). Returns the steps to send next, and the saga's
    /// outcome once every step is answered.
    pub fn report(
        &mut self,
        id: &TransactionId,
        shard: u32,
        kind: StepKind,
        result: StepResult,
        position: Position,
        shards: u32,
    ) -> (Vec<Outbound>, Option<Finished>) {
        let Some(saga) = self.in_flight.get_mut(id) else {
            return (Vec::new(), None);
        };
        let participants = participants(&saga.transaction, shards);
        if !participants.contains(&shard) {
            return (Vec::new(), None);
        }
        match (&saga.phase, kind, &result) {
            (Phase::Preparing, StepKind::Prepare, _) => {
                saga.prepared.entry(shard).or_insert(result);
            }
            (Phase::Committing, StepKind::Commit, StepResult::Done)
            | (Phase::Aborting(_), StepKind::Abort, StepResult::Done) => {
                saga.done.insert(shard);
            }
            _ => return (Vec::new(), None),
        }
        if saga.phase == Phase::Preparing && saga.prepared.len() == participants.len() {
            saga.phase = match decide(&saga.transaction, &saga.prepared) {
                None => Phase::Committing,
                Some(rejection) => Phase::Aborting(rejection),
            };
            let outbound = outstanding(saga, shards);
            if !outbound.is_empty() {
                return (outbound, None);
            }
        }
        let finished = match &saga.phase {
            Phase::Preparing => false,
            Phase::Committing | Phase::Aborting(_) => outstanding(saga, shards).is_empty(),
        };
        if !finished {
            return (Vec::new(), None);
        }
        let saga = self.in_flight.remove(id).expect("in flight");
        let verdict = match saga.phase {
            Phase::Aborting(rejection) => Verdict::Rejected(rejection),
            _ => Verdict::Committed,
        };
        let record = Record {
            sequence: position.sequence,
            timestamp_ms: position.timestamp_ms,
            verdict,
        };
        self.remember(id.clone(), saga.transaction.fingerprint(), record);
        let finished = Finished {
            id: id.clone(),
            record,
            waiters: saga.waiters,
        };
        (Vec::new(), Some(finished))
    }

    fn remember(&mut self, id: TransactionId, fingerprint: u128, record: Record) {
        if self.finished_order.len() >= SAGA_OUTCOMES_MAX {
            let oldest = self.finished_order.pop_front().expect("not empty");
            self.outcomes.remove(&oldest);
        }
        self.outcomes.insert(id.clone(), (fingerprint, record));
        self.finished_order.push_back(id);
    }

    /// Every step sent and not answered yet, per saga: what a new owner
    /// (or a re-drive after a lost entry) sends again.
    pub fn outstanding(&self, shards: u32) -> impl Iterator<Item = (&TransactionId, Vec<Outbound>)> {
        self.in_flight
            .iter()
            .map(move |(id, saga)| (id, outstanding(saga, shards)))
    }

    pub fn lookup(&self, id: &TransactionId, shards: u32) -> Option<Lookup> {
        if let Some((_, record)) = self.outcomes.get(id) {
            return Some(Lookup::Finished(*record));
        }
        let saga = self.in_flight.get(id)?;
        let mut steps = Vec::new();
        for shard in participants(&saga.transaction, shards) {
            let status = match saga.prepared.get(&shard) {
                None => "sent",
                Some(StepResult::Rejected(_)) => "rejected",
                Some(_) => "prepared",
            };
            steps.push(StepView {
                shard,
                step: StepKind::Prepare.name().into(),
                status: status.into(),
            });
            let second = match &saga.phase {
                Phase::Preparing => None,
                Phase::Committing => Some(StepKind::Commit),
                Phase::Aborting(_) => {
                    matches!(saga.prepared.get(&shard), Some(StepResult::Prepared(_))).then_some(StepKind::Abort)
                }
            };
            if let Some(kind) = second {
                steps.push(StepView {
                    shard,
                    step: kind.name().into(),
                    status: if saga.done.contains(&shard) { "done" } else { "sent" }.into(),
                });
            }
        }
        Some(Lookup::InFlight(steps))
    }

    pub fn encode(&self, writer: &mut Writer) {
        writer.u64(self.in_flight.len() as u64);
        for saga in self.in_flight.values() {
            saga.transaction.encode(writer);
            writer.u64(saga.started_ms);
            writer.u64(saga.waiters.len() as u64);
            for waiter in &saga.waiters {
                waiter.encode(writer);
            }
            match &saga.phase {
                Phase::Preparing => writer.u8(0),
                Phase::Committing => writer.u8(1),
                Phase::Aborting(rejection) => {
                    writer.u8(2);
                    StepResult::Rejected(*rejection).encode(writer);
                }
            }
            writer.u64(saga.prepared.len() as u64);
            for (shard, result) in &saga.prepared {
                writer.u64(u64::from(*shard));
                result.encode(writer);
            }
            writer.u64(saga.done.len() as u64);
            for shard in &saga.done {
                writer.u64(u64::from(*shard));
            }
        }
        writer.u64(self.finished_order.len() as u64);
        for id in &self.finished_order {
            let (fingerprint, record) = &self.outcomes[id];
            writer.str(id.as_str());
            writer.u128(*fingerprint);
            encode_record(record, writer);
        }
    }

    pub fn decode(reader: &mut Reader) -> Result<SagaTable, CoreError> {
        let mut table = SagaTable::default();
        let count = bounded(reader, SAGAS_IN_FLIGHT_MAX)?;
        for _ in 0..count {
            let transaction = Transaction::decode(reader)?;
            let started_ms = reader.u64()?;
            let waiters = (0..bounded(reader, SAGA_WAITERS_MAX)?)
                .map(|_| ReplyTo::decode(reader))
                .collect::<Result<_, _>>()?;
            let phase = match reader.u8()? {
                0 => Phase::Preparing,
                1 => Phase::Committing,
                2 => match StepResult::decode(reader)? {
                    StepResult::Rejected(rejection) => Phase::Aborting(rejection),
                    _ => return Err(reader.error("an aborting saga without its rejection")),
                },
                other => return Err(reader.error(format!("unknown saga phase {other}"))),
            };
            let mut prepared = BTreeMap::new();
            for _ in 0..bounded(reader, PARTICIPANTS_MAX)? {
                prepared.insert(reader.u32()?, StepResult::decode(reader)?);
            }
            let mut done = BTreeSet::new();
            for _ in 0..bounded(reader, PARTICIPANTS_MAX)? {
                done.insert(reader.u32()?);
            }
            let saga = Saga {
                transaction,
                started_ms,
                waiters,
                phase,
                prepared,
                done,
            };
            table.in_flight.insert(saga.transaction.id().clone(), saga);
        }
        for _ in 0..bounded(reader, SAGA_OUTCOMES_MAX)? {
            let id = reader.transaction_id()?;
            let fingerprint = reader.u128()?;
            let record = decode_record(reader)?;
            table.remember(id, fingerprint, record);
        }
        Ok(table)
    }
}

fn bounded(reader: &mut Reader, max: usize) -> Result<usize, CoreError> {
    let count = reader.u64()?;
    if count > max as u64 {
        return Err(reader.error(format!("{count} saga entries, at most {max}")));
    }
    Ok(count as usize)
}

fn encode_record(record: &Record, writer: &mut Writer) {
    writer.u64(record.sequence);
    writer.u64(record.timestamp_ms);
    match record.verdict {
        Verdict::Committed => writer.u8(0),
        Verdict::Rejected(rejection) => {
            writer.u8(1);
            StepResult::Rejected(rejection).encode(writer);
        }
    }
}

fn decode_record(reader: &mut Reader) -> Result<Record, CoreError> {
    let sequence = reader.u64()?;
    let timestamp_ms = reader.u64()?;
    let verdict = match reader.u8()? {
        0 => Verdict::Committed,
        1 => match StepResult::decode(reader)? {
            StepResult::Rejected(rejection) => Verdict::Rejected(rejection),
            _ => return Err(reader.error("a rejected record without its rejection")),
        },
        other => return Err(reader.error(format!("unknown verdict {other}"))),
    };
    Ok(Record {
        sequence,
        timestamp_ms,
        verdict,
    })
}

/// The steps of `saga` sent and not answered.
fn outstanding(saga: &Saga, shards: u32) -> Vec<Outbound> {
    let step = |shard, kind| Outbound {
        shard,
        kind,
        transaction: saga.transaction.clone(),
    };
    let participants = participants(&saga.transaction, shards);
    match &saga.phase {
        Phase::Preparing => participants
            .into_iter()
            .filter(|shard| !saga.prepared.contains_key(shard))
            .map(|shard| step(shard, StepKind::Prepare))
            .collect(),
        Phase::Committing => participants
            .into_iter()
            .filter(|shard| !saga.done.contains(shard))
            .map(|shard| step(shard, StepKind::Commit))
            .collect(),
        // Only what a prepare held is undone.
        Phase::Aborting(_) => participants
            .into_iter()
            .filter(|shard| matches!(saga.prepared.get(shard), Some(StepResult::Prepared(_))))
            .filter(|shard| !saga.done.contains(shard))
            .map(|shard| step(shard, StepKind::Abort))
            .collect(),
    }
}

/// `None` to commit; else the rejection the saga ends with: the first
/// transfer's (by index) a prepare refused, or whose ends' units differ.
fn decide(transaction: &Transaction, prepared: &BTreeMap<u32, StepResult>) -> Option<Rejection> {
    let mut first: Option<Rejection> = None;
    let mut consider = |rejection: Rejection| {
        if first.is_none_or(|seen| rejection.op_index < seen.op_index) {
            first = Some(rejection);
        }
    };
    let mut units: HashMap<(u16, Side), &Unit> = HashMap::new();
    for result in prepared.values() {
        match result {
            StepResult::Prepared(ends) => units.extend(ends.iter().map(|(leg, side, unit)| ((*leg, *side), unit))),
            StepResult::Rejected(rejection) => consider(*rejection),
            StepResult::Done => unreachable!("a prepare answers prepared or rejected"),
        }
    }
    for leg in legs(transaction) {
        let ends = (
            units.get(&(leg.index, Side::Debit)),
            units.get(&(leg.index, Side::Credit)),
        );
        if let (Some(debit), Some(credit)) = ends {
            if debit != credit {
                consider(Rejection {
                    code: RejectionCode::UnitMismatch,
                    op_index: leg.index,
                });
            }
        }
    }
    first
}

#[cfg(test)]
mod tests {
    //! The saga state machine against a model: shards (an engine and a
    //! saga table each) exchange entries through inboxes that deliver late,
    //! twice, out of order or never, while owners change (state encoded and
    //! decoded, nothing else kept). Whatever the schedule, each saga ends as
    //! the model says, every transfer of a committed saga applied once, and
    //! the shards' books balance.

    use super::*;
    use coffer_core::EngineLimits;
    use proptest::prelude::*;

    const SHARDS: u32 = 3;
    const ACCOUNTS: usize = 9;
    const FUNDING: u128 = 1_000_000;
    const WAITER: ReplyTo = ReplyTo {
        incarnation: 1,
        request: 1,
    };

    #[derive(Debug, Clone)]
    enum Message {
        Begin(Transaction),
        Step {
            home: u32,
            kind: StepKind,
            transaction: Transaction,
        },
        Report {
            saga: TransactionId,
            shard: u32,
            kind: StepKind,
            result: StepResult,
        },
    }

    struct Shard {
        engine: Engine,
        sagas: SagaTable,
        inbox: Vec<Message>,
    }

    /// A small deterministic generator: the schedule comes from the seed.
    struct Dice(u64);

    impl Dice {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % bound
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    fn limits() -> EngineLimits {
        EngineLimits {
            accounts_max: 1_000,
            holds_max: 1_000,
            finished_holds_max: 10_000,
            idempotency_window_ms: u64::MAX / 4,
            idempotency_entries_max: 100_000,
        }
    }

    fn account(number: usize) -> AccountId {
        AccountId::parse(&format!("acct:{number}")).unwrap()
    }

    fn usd() -> Unit {
        Unit::parse("USD/2").unwrap()
    }

    /// What the model predicts of a saga.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expected {
        Commit,
        Reject(RejectionCode, u16),
    }

    struct World {
        shards: Vec<Shard>,
        dice: Dice,
        time_ms: u64,
        outcomes: BTreeMap<TransactionId, Record>,
    }

    impl World {
        fn new(seed: u64) -> World {
            let mut shards: Vec<Shard> = (0..SHARDS)
                .map(|_| Shard {
                    engine: Engine::new(limits()),
                    sagas: SagaTable::default(),
                    inbox: Vec::new(),
                })
                .collect();
            // Accounts 0..ACCOUNTS-1 exist and are funded; ACCOUNTS does not;
            // the last one holds euros.
            for number in 0..ACCOUNTS {
                let id = account(number);
                let unit = if number == ACCOUNTS - 1 {
                    Unit::parse("EUR").unwrap()
                } else {
                    usd()
                };
                let shard = &mut shards[id.shard(SHARDS) as usize];
                let ops = vec![
                    Operation::open(id.clone(), unit),
                    Operation::deposit(id.clone(), Amount::new(FUNDING).unwrap()),
                ];
                let open =
                    Transaction::new(TransactionId::parse(&format!("fund-{number}")).unwrap(), ops, None).unwrap();
                shard.engine.apply_batch(1, &[open]);
            }
            World {
                shards,
                dice: Dice(seed | 1),
                time_ms: 10,
                outcomes: BTreeMap::new(),
            }
        }

        fn send(&mut self, shard: u32, message: Message) {
            self.shards[shard as usize].inbox.push(message);
        }

        fn send_steps(&mut self, home: u32, outbound: Vec<Outbound>) {
            for step in outbound {
                let message = Message::Step {
                    home,
                    kind: step.kind,
                    transaction: step.transaction,
                };
                self.send(step.shard, message);
            }
        }

        /// Delivers one entry: usually the oldest of a random shard's inbox,
        /// sometimes another (out of order); sometimes it stays to come
        /// again (twice), sometimes it is lost.
        fn deliver_one(&mut self) -> bool {
            let busy: Vec<u32> = (0..SHARDS)
                .filter(|shard| !self.shards[*shard as usize].inbox.is_empty())
                .collect();
            if busy.is_empty() {
                return false;
            }
            let shard = busy[self.dice.below(busy.len() as u64) as usize];
            let inbox_len = self.shards[shard as usize].inbox.len() as u64;
            let index = if self.dice.chance(70) {
                0
            } else {
                self.dice.below(inbox_len) as usize
            };
            let message = match self.dice.chance(15) {
                true => self.shards[shard as usize].inbox[index].clone(),
                false => self.shards[shard as usize].inbox.remove(index),
            };
            // Steps and reports are appended without waiting, and may be
            // lost; a transaction's first entry is acknowledged by the log.
            if matches!(message, Message::Step { .. } | Message::Report { .. }) && self.dice.chance(5) {
                return true;
            }
            self.time_ms += 1;
            self.apply(shard, message);
            if self.dice.chance(3) {
                self.fail_over(shard);
            }
            true
        }

        fn apply(&mut self, shard: u32, message: Message) {
            let time_ms = self.time_ms;
            match message {
                Message::Begin(transaction) => {
                    match self.shards[shard as usize]
                        .sagas
                        .begin(transaction, WAITER, time_ms, SHARDS)
                    {
                        Begun::Started(outbound) => self.send_steps(shard, outbound),
                        Begun::Known { same_payload, .. } => assert!(same_payload, "a retry is the same payload"),
                        Begun::Joined => {}
                        // Copies beyond the waiters' bound: a 503 the client retries.
                        Begun::Refused(_) => assert!(self.shards[shard as usize].sagas.in_flight() > 0),
                        Begun::ReusedInFlight => panic!("a retry is the same payload"),
                    }
                }

                Message::Step {
                    home,
                    kind,
                    transaction,
                } => {
                    let engine = &mut self.shards[shard as usize].engine;
                    let participation = participate(engine, time_ms, shard, SHARDS, kind, &transaction);
                    engine.check_invariants().unwrap();
                    let report = Message::Report {
                        saga: transaction.id().clone(),
                        shard,
                        kind,
                        result: participation.result,
                    };
                    self.send(home, report);
                }
                Message::Report {
                    saga,
                    shard: from,
                    kind,
                    result,
                } => {
                    let position = Position {
                        sequence: time_ms,
                        timestamp_ms: time_ms,
                    };
                    let (outbound, finished) = self.shards[shard as usize]
                        .sagas
                        .report(&saga, from, kind, result, position, SHARDS);
                    self.send_steps(shard, outbound);
                    if let Some(finished) = finished {
                        assert_eq!(finished.waiters.first(), Some(&WAITER));
                        let earlier = self.outcomes.insert(finished.id, finished.record);
                        assert!(earlier.is_none(), "a saga finishes once");
                    }
                }
            }
        }

        /// A new owner: the shard's state as a snapshot gives it, then every
        /// outstanding step of its sagas sent again.
        fn fail_over(&mut self, shard: u32) {
            let current = &mut self.shards[shard as usize];
            let mut bytes = Vec::new();
            current.engine.encode_snapshot(&mut bytes);
            current.engine = Engine::decode_snapshot(&bytes, limits()).unwrap();
            let mut bytes = Vec::new();
            current.sagas.encode(&mut Writer::new(&mut bytes));
            let mut reader = Reader::new(&bytes);
            let decoded = SagaTable::decode(&mut reader).unwrap();
            assert!(reader.is_empty());
            assert_eq!(decoded, current.sagas, "the sagas read back as written");
            current.sagas = decoded;
            self.redrive(shard);
        }

        fn redrive(&mut self, shard: u32) {
            let outbound: Vec<Outbound> = self.shards[shard as usize]
                .sagas
                .outstanding(SHARDS)
                .flat_map(|(_, steps)| steps)
                .collect();
            self.send_steps(shard, outbound);
        }
    }

    /// A random cross-shard transaction and what the model says of it:
    /// small amounts always fit (the funding covers every one of them), an
    /// amount above all the money there is never does, a missing account
    /// or another unit is refused where it is.
    fn transaction(dice: &mut Dice, number: usize) -> (Transaction, Expected) {
        loop {
            let legs = 1 + dice.below(3) as usize;
            let mut ops = Vec::new();
            let mut expected = Expected::Commit;
            for leg in 0..legs {
                let from = match dice.below(10) {
                    0 => AccountId::world(),
                    _ => account(dice.below(ACCOUNTS as u64 - 1) as usize),
                };
                let to = match dice.below(12) {
                    0 => AccountId::world(),
                    1 => account(ACCOUNTS),
                    2 => account(ACCOUNTS - 1),
                    _ => account(dice.below(ACCOUNTS as u64 - 1) as usize),
                };
                if from == to || (from.is_world() && to.is_world()) {
                    continue;
                }
                let huge = !from.is_world() && dice.chance(8);
                let amount = if huge {
                    FUNDING * 100
                } else {
                    1 + u128::from(dice.below(100))
                };
                let problem = if to == account(ACCOUNTS) {
                    Some(RejectionCode::AccountNotFound)
                } else if huge {
                    Some(RejectionCode::InsufficientFunds)
                } else if to == account(ACCOUNTS - 1) && !from.is_world() {
                    Some(RejectionCode::UnitMismatch)
                } else {
                    None
                };
                if let (Some(code), Expected::Commit) = (problem, expected) {
                    expected = Expected::Reject(code, leg as u16);
                }
                ops.push(Operation::transfer(from, to, Amount::new(amount).unwrap()));
            }
            if ops.len() != legs {
                continue;
            }
            let id = TransactionId::parse(&format!("saga-{number}")).unwrap();
            let transaction = Transaction::new(id, ops, None).unwrap();
            if participants(&transaction, SHARDS).len() < 2 || check(&transaction).is_err() {
                continue;
            }
            return (transaction, expected);
        }
    }

    fn other_payload(transaction: &Transaction) -> Transaction {
        let metadata = Metadata::from_value(&serde_json::json!({"other": true})).unwrap();
        Transaction::new(transaction.id().clone(), transaction.ops().to_vec(), Some(metadata)).unwrap()
    }

    fn run(seed: u64, sagas: usize) {
        let mut world = World::new(seed);
        let mut expected = BTreeMap::new();
        let mut dice = Dice(seed.wrapping_mul(31) | 1);
        for number in 0..sagas {
            let (transaction, outcome) = transaction(&mut dice, number);
            let home = home(&transaction, SHARDS);
            expected.insert(transaction.id().clone(), (transaction.clone(), outcome));
            world.send(home, Message::Begin(transaction.clone()));
            if dice.chance(20) {
                world.send(home, Message::Begin(transaction.clone()));
            }
            for _ in 0..dice.below(6) {
                world.deliver_one();
            }
            // The id with another payload while the saga runs: 409.
            let sagas = &mut world.shards[home as usize].sagas;
            if sagas.is_in_flight(transaction.id()) {
                let begun = sagas.begin(other_payload(&transaction), WAITER, 0, SHARDS);
                assert!(matches!(begun, Begun::ReusedInFlight), "{begun:?}");
            }
        }
        // Drain: a lost entry is found again by the homes' re-drive.
        let mut rounds = 0;
        while world.deliver_one() || world.shards.iter().any(|shard| shard.sagas.in_flight() > 0) {
            if world.shards.iter().all(|shard| shard.inbox.is_empty()) {
                rounds += 1;
                assert!(rounds < 10_000, "the sagas drain");
                for shard in 0..SHARDS {
                    world.redrive(shard);
                }
            }
        }

        let mut balances: HashMap<AccountId, i128> =
            (0..ACCOUNTS).map(|number| (account(number), FUNDING as i128)).collect();
        for (id, (transaction, outcome)) in &expected {
            let record = world.outcomes.get(id).unwrap_or_else(|| panic!("{id} finished"));
            match (outcome, record.verdict) {
                (Expected::Commit, Verdict::Committed) => {
                    for leg in legs(transaction) {
                        if !leg.from.is_world() {
                            *balances.get_mut(leg.from).unwrap() -= leg.amount.value() as i128;
                        }
                        if !leg.to.is_world() {
                            *balances.get_mut(leg.to).unwrap() += leg.amount.value() as i128;
                        }
                    }
                }
                (Expected::Reject(code, _), Verdict::Rejected(rejection)) => {
                    // Several problems in one saga: any of their codes may be
                    // reported first by its shard; the index is the lowest.
                    let codes = [
                        RejectionCode::AccountNotFound,
                        RejectionCode::InsufficientFunds,
                        RejectionCode::UnitMismatch,
                    ];
                    assert!(
                        codes.contains(&rejection.code),
                        "{id}: {rejection:?}, expected {code:?}"
                    );
                }
                (expected, verdict) => panic!("{id}: expected {expected:?}, got {verdict:?}"),
            }
            // A retry of a finished saga is answered from the table.
            let home = &mut world.shards[home(transaction, SHARDS) as usize].sagas;
            match home.begin(transaction.clone(), WAITER, 0, SHARDS) {
                Begun::Known {
                    record: known,
                    same_payload: true,
                } => assert_eq!(known, *record),
                other => panic!("{id}: a retry got {other:?}"),
            }
        }
        let mut transit_sums: HashMap<(u32, u32), i128> = HashMap::new();
        for (number, shard) in world.shards.iter().enumerate() {
            let engine = &shard.engine;
            engine.check_invariants().unwrap();
            assert_eq!(engine.unit_sum(&usd()), Some(0), "shard {number}: conservation");
            assert_eq!(engine.open_hold_count(), 0, "shard {number}: no hold left open");
            for view in engine.accounts() {
                if let Some(rest) = view.id.as_str().strip_prefix(TRANSIT_PREFIX) {
                    let peer: u32 = rest.split(':').nth(1).unwrap().parse().unwrap();
                    let pair = ((number as u32).min(peer), (number as u32).max(peer));
                    *transit_sums.entry(pair).or_default() += view.available;
                    assert_eq!(view.frozen, 0);
                } else if !view.id.is_world() {
                    assert_eq!(view.available, balances[&view.id], "{}", view.id);
                    assert_eq!(view.frozen, 0, "{}", view.id);
                }
            }
        }
        for (pair, sum) in transit_sums {
            assert_eq!(sum, 0, "transit pair {pair:?} nets to zero");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn sagas_end_as_the_model_says_whatever_the_schedule(seed in any::<u64>(), sagas in 1usize..40) {
            run(seed, sagas);
        }
    }

    #[test]
    fn steps_and_results_read_back_as_written() {
        for result in [
            StepResult::Prepared(vec![(0, Side::Debit, usd()), (3, Side::Credit, usd())]),
            StepResult::Rejected(Rejection {
                code: RejectionCode::InsufficientFunds,
                op_index: 2,
            }),
            StepResult::Done,
        ] {
            let mut bytes = Vec::new();
            result.encode(&mut Writer::new(&mut bytes));
            let mut reader = Reader::new(&bytes);
            assert_eq!(StepResult::decode(&mut reader).unwrap(), result);
            assert!(reader.is_empty());
            for cut in 0..bytes.len() {
                assert!(StepResult::decode(&mut Reader::new(&bytes[..cut])).is_err());
            }
        }
    }

    #[test]
    fn transit_accounts_live_in_their_shard() {
        for shards in [1, 2, 6, 64] {
            for shard in 0..shards {
                let id = transit_id(shard, (shard + 1) % shards, &usd(), shards);
                assert_eq!(id.shard(shards), shard, "{id}");
                assert!(id.is_system());
            }
        }
    }
}
