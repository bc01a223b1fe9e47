//! Property test: random transaction sequences through the engine and
//! through a deliberately simple reference model (BTreeMaps, clone-and-swap
//! atomicity, no undo log, no indices), compared after every step.

use coffer_core::{
    AccountId, Amount, Balance, Engine, EngineLimits, HoldId, HoldStatus, LimitChange, Operation, Outcome, Rejection,
    RejectionCode, Transaction, TransactionId, Unit, Verdict,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use RejectionCode::*;

const WINDOW_MS: u64 = 2_000;
const ENTRIES_MAX: u32 = 12;
const ACCOUNTS: [&str; 6] = ["hot", "a1", "a2", "a3", "b1", "b2"];
const UNITS: [&str; 2] = ["USD/2", "ITEM"];

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone, PartialEq)]
struct ModelAccount {
    unit: String,
    available: i128,
    frozen: i128,
    min: i128,
    max: Option<i128>,
    closed: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct ModelHold {
    account: String,
    to: Option<String>,
    remaining: i128,
    status: HoldStatus,
    expires_at: Option<u64>,
    serial: u64,
    finished_at: u64,
}

#[derive(Debug, Clone, Default)]
struct Model {
    accounts: BTreeMap<String, ModelAccount>,
    /// `@world` balance per unit; present once the unit exists.
    world: BTreeMap<String, i128>,
    holds: BTreeMap<String, ModelHold>,
    serial: u64,
    /// (id, payload, verdict, sequence, timestamp) in arrival order.
    seen: Vec<(String, Transaction, Verdict, u64, u64)>,
    sequence: u64,
    now: u64,
}

#[derive(Debug, PartialEq)]
enum ModelOutcome {
    New(Verdict, u64),
    Replayed(Verdict, u64),
    IdReused,
    /// In a linked chain with an id seen before: nothing applied.
    NotApplied(u64),
}

fn big(amount: Amount) -> Result<i128, RejectionCode> {
    i128::try_from(amount.value()).map_err(|_| AmountOverflow)
}

impl Model {
    fn batch(&mut self, timestamp: u64, transactions: &[Transaction]) -> Vec<ModelOutcome> {
        self.now = self.now.max(timestamp);
        let now = self.now;
        let mut due: Vec<_> = self
            .holds
            .iter()
            .filter(|(_, hold)| hold.status == HoldStatus::Active && hold.expires_at.is_some_and(|at| at <= now))
            .map(|(id, hold)| (hold.expires_at, hold.serial, id.clone()))
            .collect();
        due.sort();
        for (_, _, id) in due {
            let hold = self.holds.get_mut(&id).unwrap();
            let account = self.accounts.get_mut(&hold.account).unwrap();
            account.frozen -= hold.remaining;
            account.available += hold.remaining;
            hold.remaining = 0;
            hold.status = HoldStatus::Expired;
            hold.finished_at = now;
        }
        if now >= WINDOW_MS {
            let cutoff = now - WINDOW_MS;
            self.seen.retain(|entry| entry.4 > cutoff);
            self.holds
                .retain(|_, hold| hold.status == HoldStatus::Active || hold.finished_at > cutoff);
        }
        let mut outcomes = Vec::new();
        let mut rest = transactions;
        while let Some(first) = rest.first() {
            if !first.is_linked_to_next() {
                outcomes.push(self.transaction(first));
                rest = &rest[1..];
                continue;
            }
            let end = rest.iter().position(|transaction| !transaction.is_linked_to_next());
            let length = end.map_or(rest.len(), |end| end + 1);
            outcomes.extend(self.chain(&rest[..length], end.is_some()));
            rest = &rest[length..];
        }
        outcomes
    }

    /// A linked chain, by the rules stated plainly: one id seen before (or
    /// twice) and nothing applies; an open chain is rejected whole;
    /// otherwise all ops of all its transactions on one scratch copy, kept
    /// only if every one passed.
    fn chain(&mut self, chain: &[Transaction], closed: bool) -> Vec<ModelOutcome> {
        let first = self.sequence;
        self.sequence += chain.len() as u64;
        let mut names: Vec<&str> = Vec::new();
        let known: Vec<Option<ModelOutcome>> = chain
            .iter()
            .map(|transaction| {
                let id = transaction.id().as_str();
                let repeated = names.contains(&id);
                names.push(id);
                match self.seen.iter().find(|entry| entry.0 == id) {
                    Some((_, payload, verdict, original, _)) => Some(
                        match payload.ops() == transaction.ops() && payload.metadata() == transaction.metadata() {
                            true => ModelOutcome::Replayed(*verdict, *original),
                            false => ModelOutcome::IdReused,
                        },
                    ),
                    None if repeated => Some(ModelOutcome::IdReused),
                    None => None,
                }
            })
            .collect();
        if known.iter().any(Option::is_some) {
            return known
                .into_iter()
                .enumerate()
                .map(|(offset, known)| known.unwrap_or(ModelOutcome::NotApplied(first + offset as u64)))
                .collect();
        }
        let failed = |code| Verdict::Rejected(Rejection { code, op_index: 0 });
        let verdicts: Vec<Verdict> = if !closed {
            vec![failed(RejectionCode::LinkedEventChainOpen); chain.len()]
        } else {
            let mut scratch = self.clone();
            let failure = chain.iter().enumerate().find_map(|(offset, transaction)| {
                transaction.ops().iter().enumerate().find_map(|(index, op)| {
                    scratch.op(op).err().map(|code| {
                        let op_index = index as u16;
                        (offset, Rejection { code, op_index })
                    })
                })
            });
            match failure {
                None => {
                    scratch.seen = std::mem::take(&mut self.seen);
                    *self = scratch;
                    vec![Verdict::Committed; chain.len()]
                }
                Some((failed_at, rejection)) => (0..chain.len())
                    .map(|offset| match offset == failed_at {
                        true => Verdict::Rejected(rejection),
                        false => failed(RejectionCode::LinkedEventFailed),
                    })
                    .collect(),
            }
        };
        chain
            .iter()
            .zip(verdicts)
            .enumerate()
            .map(|(offset, (transaction, verdict))| {
                let sequence = first + offset as u64;
                if self.seen.len() >= ENTRIES_MAX as usize {
                    self.seen.remove(0);
                }
                let id = transaction.id().as_str().to_owned();
                self.seen.push((id, transaction.clone(), verdict, sequence, self.now));
                ModelOutcome::New(verdict, sequence)
            })
            .collect()
    }

    fn transaction(&mut self, transaction: &Transaction) -> ModelOutcome {
        let sequence = self.sequence;
        self.sequence += 1;
        let id = transaction.id().as_str();
        if let Some((_, payload, verdict, original, _)) = self.seen.iter().find(|entry| entry.0 == id) {
            let same = payload.ops() == transaction.ops() && payload.metadata() == transaction.metadata();
            return if same {
                ModelOutcome::Replayed(*verdict, *original)
            } else {
                ModelOutcome::IdReused
            };
        }
        let mut scratch = self.clone();
        let mut verdict = Verdict::Committed;
        for (index, op) in transaction.ops().iter().enumerate() {
            if let Err(code) = scratch.op(op) {
                verdict = Verdict::Rejected(Rejection {
                    code,
                    op_index: index as u16,
                });
                break;
            }
        }
        if verdict == Verdict::Committed {
            scratch.seen = std::mem::take(&mut self.seen);
            *self = scratch;
        }
        if self.seen.len() >= ENTRIES_MAX as usize {
            self.seen.remove(0);
        }
        self.seen
            .push((id.to_owned(), transaction.clone(), verdict, sequence, self.now));
        ModelOutcome::New(verdict, sequence)
    }

    fn regular(&self, id: &AccountId) -> Result<String, RejectionCode> {
        if id.is_world() {
            return Err(WorldAccount);
        }
        self.accounts
            .contains_key(id.as_str())
            .then(|| id.to_string())
            .ok_or(AccountNotFound)
    }

    /// "@world" stays the literal name; the unit says which world.
    fn in_unit(&self, id: &AccountId, unit: &str) -> Result<String, RejectionCode> {
        if id.is_world() {
            return Ok("@world".into());
        }
        let account = self.accounts.get(id.as_str()).ok_or(AccountNotFound)?;
        if account.unit != unit {
            return Err(UnitMismatch);
        }
        Ok(id.to_string())
    }

    fn closed(&self, name: &str) -> bool {
        self.accounts.get(name).is_some_and(|account| account.closed)
    }

    fn add_available(
        &mut self,
        name: &str,
        unit: &str,
        delta: i128,
        check_floor: bool,
        check_ceiling: bool,
    ) -> Result<(), RejectionCode> {
        if name == "@world" {
            let world = self.world.get_mut(unit).unwrap();
            *world = world.checked_add(delta).ok_or(AmountOverflow)?;
            return Ok(());
        }
        let account = self.accounts.get_mut(name).unwrap();
        let available = account.available.checked_add(delta).ok_or(AmountOverflow)?;
        if check_floor && available < account.min {
            return Err(InsufficientFunds);
        }
        let total = available.checked_add(account.frozen).ok_or(AmountOverflow)?;
        if check_ceiling && account.max.is_some_and(|max| total > max) {
            return Err(LimitExceeded);
        }
        account.available = available;
        Ok(())
    }

    fn op(&mut self, op: &Operation) -> Result<(), RejectionCode> {
        match op {
            Operation::Open {
                account,
                unit,
                min_available,
                max_total,
                ..
            } => {
                if self.accounts.contains_key(account.as_str()) {
                    return Err(AccountExists);
                }
                let min = min_available.map_or(0, Balance::value);
                let max = max_total.map(Balance::value).filter(|max| *max != i128::MAX);
                if min > 0 || max.is_some_and(|max| max < 0) {
                    return Err(LimitsViolated);
                }
                self.world.entry(unit.to_string()).or_insert(0);
                let account_record = ModelAccount {
                    unit: unit.to_string(),
                    available: 0,
                    frozen: 0,
                    min,
                    max,
                    closed: false,
                };
                self.accounts.insert(account.to_string(), account_record);
                Ok(())
            }
            Operation::Transfer { from, to, amount } => {
                if from == to {
                    return Err(SameAccount);
                }
                let (from, to, unit) = if from.is_world() {
                    let to = self.regular(to)?;
                    ("@world".to_owned(), to.clone(), self.accounts[&to].unit.clone())
                } else {
                    let from = self.regular(from)?;
                    let unit = self.accounts[&from].unit.clone();
                    (from, self.in_unit(to, &unit)?, unit)
                };
                if self.closed(&from) || self.closed(&to) {
                    return Err(AccountClosed);
                }
                let amount = big(*amount)?;
                self.add_available(&from, &unit, -amount, true, false)?;
                self.add_available(&to, &unit, amount, false, true)
            }
            Operation::Hold {
                hold,
                account,
                amount,
                to,
                expires_at_ms,
                ttl_ms,
            } => {
                let expires_at = expires_at_ms.or(ttl_ms.map(|ttl| self.now + ttl));
                if self.holds.contains_key(hold.as_str()) {
                    return Err(HoldExists);
                }
                let account = self.regular(account)?;
                if self.closed(&account) {
                    return Err(AccountClosed);
                }
                let unit = self.accounts[&account].unit.clone();
                let to = match to {
                    None => None,
                    Some(to) => {
                        let to = self.in_unit(to, &unit)?;
                        if to == account {
                            return Err(SameAccount);
                        }
                        if self.closed(&to) {
                            return Err(AccountClosed);
                        }
                        Some(to)
                    }
                };
                if expires_at.is_some_and(|at| at <= self.now) {
                    return Err(InvalidExpiry);
                }
                let amount = big(*amount)?;
                self.add_available(&account, &unit, -amount, true, false)?;
                let record = self.accounts.get_mut(&account).unwrap();
                record.frozen = record.frozen.checked_add(amount).ok_or(AmountOverflow)?;
                let serial = self.serial;
                self.serial += 1;
                let model_hold = ModelHold {
                    account,
                    to,
                    remaining: amount,
                    status: HoldStatus::Active,
                    expires_at,
                    serial,
                    finished_at: 0,
                };
                self.holds.insert(hold.to_string(), model_hold);
                Ok(())
            }
            Operation::Capture {
                hold: hold_id,
                amount,
                to,
            } => {
                let hold = self.active(hold_id)?;
                let amount = match amount {
                    Some(amount) => big(*amount).map_err(|_| CaptureExceedsHold)?,
                    None => hold.remaining,
                };
                if amount > hold.remaining {
                    return Err(CaptureExceedsHold);
                }
                let unit = self.accounts[&hold.account].unit.clone();
                let destination = match to {
                    Some(to) => self.in_unit(to, &unit)?,
                    None => hold.to.clone().unwrap_or_else(|| "@world".into()),
                };
                if destination == hold.account {
                    return Err(SameAccount);
                }
                if self.closed(&destination) {
                    return Err(AccountClosed);
                }
                self.accounts.get_mut(&hold.account).unwrap().frozen -= amount;
                self.add_available(&destination, &unit, amount, false, true)?;
                let now = self.now;
                let stored = self.holds.get_mut(hold_id.as_str()).unwrap();
                stored.remaining -= amount;
                if stored.remaining == 0 {
                    stored.status = HoldStatus::Captured;
                    stored.finished_at = now;
                }
                Ok(())
            }
            Operation::Release { hold: hold_id } => {
                let hold = self.active(hold_id)?;
                let account = self.accounts.get_mut(&hold.account).unwrap();
                account.frozen -= hold.remaining;
                account.available = account.available.checked_add(hold.remaining).ok_or(AmountOverflow)?;
                let now = self.now;
                let stored = self.holds.get_mut(hold_id.as_str()).unwrap();
                stored.remaining = 0;
                stored.status = HoldStatus::Released;
                stored.finished_at = now;
                Ok(())
            }
            Operation::SetBalance { account, available } => {
                let name = self.regular(account)?;
                if self.closed(&name) {
                    return Err(AccountClosed);
                }
                let current = self.accounts[&name].clone();
                let target = available.value();
                if target == current.available {
                    return Ok(());
                }
                if target < current.min {
                    return Err(InsufficientFunds);
                }
                let total = target.checked_add(current.frozen).ok_or(AmountOverflow)?;
                if current.max.is_some_and(|max| total > max) {
                    return Err(LimitExceeded);
                }
                let difference = target.checked_sub(current.available).ok_or(AmountOverflow)?;
                let world = self.world.get_mut(&current.unit).unwrap();
                *world = world.checked_sub(difference).ok_or(AmountOverflow)?;
                self.accounts.get_mut(&name).unwrap().available = target;
                Ok(())
            }
            Operation::SetLimits {
                account,
                min_available,
                max_total,
            } => {
                let name = self.regular(account)?;
                let record = self.accounts.get_mut(&name).unwrap();
                let min = min_available.map_or(record.min, Balance::value);
                let max = match max_total {
                    LimitChange::Unchanged => record.max,
                    LimitChange::Remove => None,
                    LimitChange::Set(value) => Some(value.value()).filter(|max| *max != i128::MAX),
                };
                let total = record.available.checked_add(record.frozen).ok_or(AmountOverflow)?;
                if record.available < min || max.is_some_and(|max| total > max) {
                    return Err(LimitsViolated);
                }
                record.min = min;
                record.max = max;
                Ok(())
            }
            Operation::Close { account } | Operation::Reopen { account } => {
                let close = matches!(op, Operation::Close { .. });
                let name = self.regular(account)?;
                let record = self.accounts.get_mut(&name).unwrap();
                match (record.closed, close) {
                    (true, true) => Err(AccountClosed),
                    (false, false) => Err(AccountNotClosed),
                    _ => {
                        record.closed = close;
                        Ok(())
                    }
                }
            }
        }
    }

    fn active(&self, hold: &HoldId) -> Result<ModelHold, RejectionCode> {
        let hold = self.holds.get(hold.as_str()).ok_or(HoldNotFound)?;
        if hold.status != HoldStatus::Active {
            return Err(HoldNotActive);
        }
        Ok(hold.clone())
    }
}

// ------------------------------------------------------------ the generator

fn amount() -> impl Strategy<Value = Amount> {
    let max = i128::MAX as u128;
    prop_oneof![
        12 => 1u128..60,
        1 => Just(max),
        1 => max - 3..=max,
        1 => Just(u128::MAX),
    ]
    .prop_map(|value| Amount::new(value).unwrap())
}

fn limit() -> impl Strategy<Value = Balance> {
    prop_oneof![8 => -80i128..1_200, 1 => Just(i128::MIN), 1 => Just(i128::MAX)].prop_map(Balance::new)
}

fn account() -> impl Strategy<Value = AccountId> {
    prop_oneof![
        4 => Just("hot"), 2 => Just("a1"), 2 => Just("a2"), 1 => Just("a3"),
        2 => Just("b1"), 1 => Just("b2"), 3 => Just("@world"), 1 => Just("ghost"),
    ]
    .prop_map(|id| AccountId::parse(id).unwrap())
}

fn hold_id() -> impl Strategy<Value = HoldId> {
    (0u8..6).prop_map(|n| HoldId::parse(&format!("h{n}")).unwrap())
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        2 => (0usize..ACCOUNTS.len(), 0usize..3, proptest::option::weighted(0.3, limit()), proptest::option::weighted(0.3, limit()))
            .prop_map(|(account, unit, min_available, max_total)| Operation::Open {
                account: AccountId::parse(ACCOUNTS[account]).unwrap(),
                // a1–a3 and hot are dollars, b* are items; index 2 is a wrong unit
                unit: Unit::parse(match (unit, ACCOUNTS[account].starts_with('b')) {
                    (2, _) => "EUR/2",
                    (_, true) => UNITS[1],
                    _ => UNITS[0],
                }).unwrap(),
                min_available, max_total, metadata: None,
            }),
        10 => (account(), account(), amount()).prop_map(|(from, to, amount)| Operation::Transfer { from, to, amount }),
        4 => (hold_id(), account(), amount(), proptest::option::weighted(0.4, account()), proptest::option::weighted(0.5, 1u64..400))
            .prop_map(|(hold, account, amount, to, ttl_ms)| Operation::Hold { hold, account, amount, to, expires_at_ms: None, ttl_ms }),
        3 => (hold_id(), proptest::option::weighted(0.5, amount()), proptest::option::weighted(0.3, account()))
            .prop_map(|(hold, amount, to)| Operation::Capture { hold, amount, to }),
        2 => hold_id().prop_map(|hold| Operation::Release { hold }),
        2 => (account(), limit()).prop_map(|(account, available)| Operation::SetBalance { account, available }),
        2 => (account(), proptest::option::weighted(0.5, limit()), prop_oneof![Just(LimitChange::Unchanged), Just(LimitChange::Remove), limit().prop_map(LimitChange::Set)])
            .prop_map(|(account, min_available, max_total)| Operation::SetLimits { account, min_available, max_total }),
        1 => account().prop_map(|account| Operation::Close { account }),
        1 => account().prop_map(|account| Operation::Reopen { account }),
    ]
}

/// How a generated transaction gets its id: mostly fresh, sometimes an
/// exact retry of an earlier transaction, sometimes an earlier id with a
/// different payload.
#[derive(Debug, Clone)]
enum IdChoice {
    Fresh,
    Retry(usize),
    Reuse(usize),
}

#[derive(Debug, Clone)]
struct Step {
    advance_ms: u64,
    transactions: Vec<(IdChoice, Vec<Operation>, bool)>,
}

fn step() -> impl Strategy<Value = Step> {
    let id_choice = prop_oneof![8 => Just(IdChoice::Fresh), 1 => any::<usize>().prop_map(IdChoice::Retry), 1 => any::<usize>().prop_map(IdChoice::Reuse)];
    // One transaction in four is linked to the next: chains, some left
    // open at the end of their batch.
    let transaction = (
        id_choice,
        proptest::collection::vec(operation(), 1..4),
        prop::bool::weighted(0.25),
    );
    (
        prop_oneof![3 => 0u64..50, 1 => 50u64..1_500],
        proptest::collection::vec(transaction, 0..6),
    )
        .prop_map(|(advance_ms, transactions)| Step {
            advance_ms,
            transactions,
        })
}

/// Turns generated steps into transactions, resolving retries and reuses
/// against what was generated before. Invalid combinations (both ttl and
/// expiry, say) are dropped: Transaction::new refuses them by design.
fn materialize(step: &Step, history: &mut Vec<Transaction>) -> Vec<Transaction> {
    let mut batch = Vec::new();
    for (choice, ops, linked) in &step.transactions {
        let transaction = match choice {
            IdChoice::Retry(pick) if !history.is_empty() => history[pick % history.len()].clone(),
            IdChoice::Reuse(pick) if !history.is_empty() => {
                let id = history[pick % history.len()].id().clone();
                match Transaction::new(id, ops.clone(), None) {
                    Ok(transaction) => transaction,
                    Err(_) => continue,
                }
            }
            _ => {
                let id = TransactionId::parse(&format!("t{}", history.len())).unwrap();
                match Transaction::new(id, ops.clone(), None) {
                    Ok(transaction) => transaction,
                    Err(_) => continue,
                }
            }
        };
        let transaction = transaction.linked_to_next(*linked);
        history.push(transaction.clone());
        batch.push(transaction);
    }
    batch
}

/// Opens every account in its unit and funds it, so that random operations
/// mostly meet real accounts.
fn setup() -> Vec<Transaction> {
    ACCOUNTS
        .iter()
        .map(|name| {
            let account = AccountId::parse(name).unwrap();
            let unit = Unit::parse(if name.starts_with('b') { UNITS[1] } else { UNITS[0] }).unwrap();
            let ops = vec![
                Operation::Open {
                    account: account.clone(),
                    unit,
                    min_available: None,
                    max_total: None,
                    metadata: None,
                },
                Operation::deposit(account, Amount::new(500).unwrap()),
            ];
            Transaction::new(TransactionId::parse(&format!("setup-{name}")).unwrap(), ops, None).unwrap()
        })
        .collect()
}

// --------------------------------------------------------------- the checks

fn compare(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    engine.check_invariants().map_err(TestCaseError::fail)?;
    for (name, expected) in &model.accounts {
        let view = engine
            .account(&AccountId::parse(name).unwrap())
            .expect("model account exists in engine");
        let actual = (
            view.available,
            view.frozen,
            view.max_total,
            view.status == coffer_core::AccountStatus::Closed,
        );
        prop_assert_eq!(
            actual,
            (expected.available, expected.frozen, expected.max, expected.closed),
            "account {}",
            name
        );
        prop_assert_eq!(view.unit.as_str(), expected.unit.as_str());
    }
    for (unit, balance) in &model.world {
        let world = engine.world_account(&Unit::parse(unit).unwrap()).expect("world exists");
        prop_assert_eq!(engine.account_at(world).available, *balance, "@world of {}", unit);
        prop_assert_eq!(engine.unit_sum(&Unit::parse(unit).unwrap()), Some(0));
    }
    prop_assert_eq!(engine.account_count(), model.accounts.len() + model.world.len());
    for n in 0..6 {
        let id = HoldId::parse(&format!("h{n}")).unwrap();
        let actual = engine
            .hold(&id)
            .map(|hold| (hold.status, hold.remaining, hold.account.to_string()));
        let expected = model
            .holds
            .get(id.as_str())
            .map(|hold| (hold.status, hold.remaining, hold.account.clone()));
        prop_assert_eq!(actual, expected, "hold {}", id);
    }
    Ok(())
}

fn same_outcome(actual: &Outcome, expected: &ModelOutcome) -> bool {
    match (actual, expected) {
        (Outcome::New { record, .. }, ModelOutcome::New(verdict, sequence)) => {
            record.verdict == *verdict && record.sequence == *sequence
        }
        (Outcome::Replayed(record), ModelOutcome::Replayed(verdict, sequence)) => {
            record.verdict == *verdict && record.sequence == *sequence
        }
        (Outcome::IdReused(_), ModelOutcome::IdReused) => true,
        (Outcome::NotApplied(record), ModelOutcome::NotApplied(sequence)) => record.sequence == *sequence,
        _ => false,
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_reference_model(steps in proptest::collection::vec(step(), 1..50), snapshot_at in 0usize..50) {
        let limits = EngineLimits { idempotency_window_ms: WINDOW_MS, idempotency_entries_max: ENTRIES_MAX, ..EngineLimits::default() };
        let mut engine = Engine::new(limits);
        let mut model = Model::default();
        let mut now = 10_000u64;
        let setup = setup();
        engine.apply_batch(now, &setup);
        model.batch(now, &setup);
        compare(&engine, &model)?;
        let mut history = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            let transactions = materialize(step, &mut history);
            if index == snapshot_at {
                let mut bytes = Vec::new();
                engine.encode_snapshot(&mut bytes);
                engine = Engine::decode_snapshot(&bytes, limits).map_err(|error| TestCaseError::fail(error.to_string()))?;
            }
            now += step.advance_ms;
            let before: Vec<_> = engine.accounts().collect();
            let batch = engine.apply_batch(now, &transactions);
            let expected = model.batch(now, &transactions);
            for (actual, expected) in batch.outcomes.iter().zip(&expected) {
                prop_assert!(same_outcome(actual, expected), "engine {:?} but model {:?}", actual, expected);
            }
            let only_duplicates = batch.expired.is_empty()
                && batch.outcomes.iter().all(|outcome| !matches!(outcome, Outcome::New { .. }));
            if only_duplicates {
                prop_assert_eq!(&before, &engine.accounts().collect::<Vec<_>>(), "a duplicate id changed state");
            }
            compare(&engine, &model)?;
        }
    }
}
