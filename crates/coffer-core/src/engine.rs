//! The deterministic state machine. Input: (timestamp, transactions); output:
//! outcomes. It never reads a clock, a random source or the environment, and
//! no hash-map iteration order reaches an outcome or a snapshot, so replaying
//! the same input always yields the same state, byte for byte.

use crate::account_table::AccountTable;
use crate::idempotency::{IdempotencyEntry, IdempotencyWindow};
use crate::identifier::{AccountId, HoldId, TransactionId};
use crate::limits::{EngineLimits, BATCH_TRANSACTIONS_MAX};
use crate::operation::Operation;
use crate::prefetch::prefetch;
use crate::rejection::Rejection;
use crate::state::{
    Account, AccountDetails, AccountIndex, AccountStatus, AccountView, BatchOutcome, Effect, ExpiredHold, Hold,
    HoldStatus, HoldView, Outcome, Record, Verdict, NO_CEILING,
};
use crate::transaction::Transaction;
use crate::unit::Unit;
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;

/// One entry of the per-transaction undo log, replayed in reverse on
/// rejection so that a transaction is all or nothing.
#[derive(Debug, Clone)]
pub(crate) enum Undo {
    /// The account's numbers before the transaction first touched it.
    Balances(AccountIndex, crate::state::Balances),
    /// The last account was created by this transaction.
    AccountOpened,
    /// The last unit, and its `@world` account, were created.
    UnitCreated,
    HoldCreated(HoldId),
    HoldChanged(HoldId, Hold),
}

/// How many transactions ahead the engine prefetches account records:
/// enough to cover a memory round trip, few enough not to overflow the
/// core's outstanding-miss buffers (measured: 3–5 best, 8 and 12 worse).
const PREFETCH_DISTANCE: usize = 4;
/// How far ahead the index slots that lead to those records (and the id's
/// slot in the window) are prefetched, so that they are in cache when the
/// records' addresses are read from them.
const INDEX_PREFETCH_DISTANCE: usize = 12;
/// Room for the hashes of every transaction from the one being applied to
/// the one whose index slots are being prefetched.
const HASHES_AHEAD: usize = 16;
const _: () = assert!(HASHES_AHEAD > INDEX_PREFETCH_DISTANCE && INDEX_PREFETCH_DISTANCE > PREFETCH_DISTANCE);

/// A transaction's id hash and its first operation's account hashes.
#[derive(Debug, Clone, Copy, Default)]
struct Hashes {
    id: u64,
    accounts: [Option<u64>; 2],
}

#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) limits: EngineLimits,
    pub(crate) units: Vec<Unit>,
    pub(crate) unit_lookup: HashMap<Unit, u32, FixedState>,
    /// The `@world` account of each unit, by unit number.
    pub(crate) world_of_unit: Vec<AccountIndex>,
    pub(crate) accounts: Vec<Account>,
    /// By account slot, like `accounts`.
    pub(crate) account_details: Vec<AccountDetails>,
    /// Regular (non-`@world`) accounts by id; values index `accounts`.
    pub(crate) account_index: AccountTable,
    pub(crate) holds: HashMap<HoldId, Hold, FixedState>,
    /// Active holds with an expiry, by (expires_at_ms, serial).
    pub(crate) hold_expiry: BTreeMap<(u64, u64), HoldId>,
    /// Finished holds in the order they finished; pruned after the window.
    pub(crate) finished_holds: VecDeque<HoldId>,
    pub(crate) hold_serial_next: u64,
    pub(crate) idempotency: IdempotencyWindow,
    pub(crate) sequence_next: u64,
    pub(crate) timestamp_ms_last: u64,
    pub(crate) hasher: FixedState,
    // Scratch space for one transaction, kept to avoid allocations.
    pub(crate) undo: Vec<Undo>,
    pub(crate) touched: Vec<AccountIndex>,
    pub(crate) finished_in_transaction: Vec<HoldId>,
}

impl Engine {
    pub fn new(limits: EngineLimits) -> Self {
        assert!(limits.accounts_max >= 2, "room for one account and its @world");
        assert!(limits.idempotency_entries_max >= 1);
        Engine {
            limits,
            units: Vec::new(),
            unit_lookup: HashMap::default(),
            world_of_unit: Vec::new(),
            accounts: Vec::new(),
            account_details: Vec::new(),
            account_index: AccountTable::default(),
            holds: HashMap::default(),
            hold_expiry: BTreeMap::new(),
            finished_holds: VecDeque::new(),
            hold_serial_next: 0,
            idempotency: IdempotencyWindow::default(),
            sequence_next: 0,
            timestamp_ms_last: 0,
            hasher: FixedState::default(),
            undo: Vec::new(),
            touched: Vec::new(),
            finished_in_transaction: Vec::new(),
        }
    }

    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// The sequence number the next transaction will get.
    pub fn sequence_next(&self) -> u64 {
        self.sequence_next
    }

    pub fn timestamp_ms_last(&self) -> u64 {
        self.timestamp_ms_last
    }

    /// Applies one batch. Every transaction gets the next sequence number,
    /// whatever its outcome, so the journal's numbering matches the engine's.
    /// A timestamp earlier than the previous batch's is raised to it: time
    /// never runs backwards inside the engine, and replay raises it the same.
    pub fn apply_batch(&mut self, timestamp_ms: u64, transactions: &[Transaction]) -> BatchOutcome {
        assert!(
            transactions.len() <= BATCH_TRANSACTIONS_MAX,
            "batch larger than BATCH_TRANSACTIONS_MAX"
        );
        let timestamp_ms = timestamp_ms.max(self.timestamp_ms_last);
        self.timestamp_ms_last = timestamp_ms;
        let first_sequence = self.sequence_next;
        let expired = self.advance_time(timestamp_ms);
        let mut effects = Vec::with_capacity(transactions.len() * 2);
        let mut outcomes = Vec::with_capacity(transactions.len());
        // The hashes of the transactions from the one being applied to the
        // one whose index slots are being prefetched, each computed once.
        let mut hashes = [Hashes::default(); HASHES_AHEAD];
        self.prime_prefetch(transactions, 0, &mut hashes);
        let mut index = 0;
        while index < transactions.len() {
            if transactions[index].is_linked_to_next() {
                let end = transactions[index..]
                    .iter()
                    .position(|transaction| !transaction.is_linked_to_next())
                    .map(|offset| index + offset + 1);
                let chain = &transactions[index..end.unwrap_or(transactions.len())];
                outcomes.extend(self.apply_chain(timestamp_ms, chain, end.is_some(), &mut effects));
                index += chain.len();
                // The prefetch ring skipped the chain: refill it from here.
                self.prime_prefetch(transactions, index, &mut hashes);
                continue;
            }
            let ahead = index + INDEX_PREFETCH_DISTANCE;
            if let Some(later) = transactions.get(ahead) {
                hashes[ahead % HASHES_AHEAD] = self.prefetch_index_slots(later);
            }
            if index + PREFETCH_DISTANCE < transactions.len() {
                self.prefetch_accounts(&hashes[(index + PREFETCH_DISTANCE) % HASHES_AHEAD]);
            }
            let id_hash = hashes[index % HASHES_AHEAD].id;
            outcomes.push(self.apply_transaction(timestamp_ms, &transactions[index], id_hash, &mut effects));
            index += 1;
        }
        assert_eq!(self.sequence_next, first_sequence + transactions.len() as u64);
        BatchOutcome {
            timestamp_ms,
            first_sequence,
            expired,
            outcomes,
            effects,
        }
    }

    /// Computes (and prefetches) the index slots of the transactions from
    /// `from` up to the prefetch distance: at the start of a batch, and
    /// after a linked chain, which the per-transaction ring skips.
    fn prime_prefetch(&self, transactions: &[Transaction], from: usize, hashes: &mut [Hashes; HASHES_AHEAD]) {
        for (index, transaction) in transactions.iter().enumerate().skip(from).take(INDEX_PREFETCH_DISTANCE) {
            hashes[index % HASHES_AHEAD] = self.prefetch_index_slots(transaction);
        }
    }

    /// A linked chain: every transaction applies, or none does.
    ///
    /// - One of its ids seen before (or twice in the chain): nothing is
    ///   applied or remembered. Seen ids answer as usual (replayed, or id
    ///   reused); the others `NotApplied`, so they stay free for a retry.
    /// - Not `closed` (the batch ended inside it): every transaction is
    ///   rejected with `linked_event_chain_open`.
    /// - Otherwise the transactions apply in order under one undo log, each
    ///   with its own effects; the first rejection rolls all of them back:
    ///   that one keeps its code, the others get `linked_event_failed`.
    ///
    /// Every transaction takes its own sequence number, and (but for the
    /// first case) is remembered under its own id.
    // Rare, so out of line. The helpers it shares with the single path
    // (apply_operations, apply_operation, commit_touched, end_transaction,
    // the window's insert and sweep) are inlined always: with a second
    // call site LLVM stopped inlining them into apply_batch. Callgrind,
    // `window_pause 300000`: 71 instructions a transaction more than
    // before chains without the attributes, 41 with them.
    #[cold]
    #[inline(never)]
    fn apply_chain(
        &mut self,
        timestamp_ms: u64,
        chain: &[Transaction],
        closed: bool,
        effects: &mut Vec<Effect>,
    ) -> Vec<Outcome> {
        assert!(!chain.is_empty());
        assert!(self.undo.is_empty() && self.touched.is_empty() && self.finished_in_transaction.is_empty());
        let first_sequence = self.sequence_next;
        self.sequence_next += chain.len() as u64;
        let record = |offset: usize, verdict: Verdict| Record {
            sequence: first_sequence + offset as u64,
            timestamp_ms,
            verdict,
        };
        let mut seen_in_chain = std::collections::HashSet::with_capacity(chain.len());
        let known: Vec<Option<IdempotencyEntry>> = chain
            .iter()
            .map(|transaction| {
                let repeated = !seen_in_chain.insert(transaction.id());
                let hash = self.idempotency.hash(transaction.id());
                match self.idempotency.get_hashed(transaction.id(), hash) {
                    Some(entry) => Some(entry.clone()),
                    // A second use within the chain reuses the first one's id.
                    None if repeated => Some(IdempotencyEntry {
                        id: transaction.id().clone(),
                        fingerprint: !transaction.fingerprint(),
                        record: record(0, Verdict::Rejected(linked_failure(0))),
                    }),
                    None => None,
                }
            })
            .collect();
        if known.iter().any(Option::is_some) {
            return chain
                .iter()
                .zip(known)
                .enumerate()
                .map(|(offset, (transaction, entry))| match entry {
                    Some(entry) if entry.fingerprint == transaction.fingerprint() => Outcome::Replayed(entry.record),
                    Some(entry) => Outcome::IdReused(entry.record),
                    None => Outcome::NotApplied(record(offset, Verdict::Rejected(linked_failure(0)))),
                })
                .collect();
        }
        let mut results: Vec<(Verdict, std::ops::Range<usize>)> = Vec::with_capacity(chain.len());
        let failure = match closed {
            false => Some((
                chain.len(),
                Rejection {
                    code: crate::rejection::RejectionCode::LinkedEventChainOpen,
                    op_index: 0,
                },
            )),
            true => chain.iter().enumerate().find_map(|(offset, transaction)| {
                let effects_start = effects.len();
                match self.apply_operations(timestamp_ms, transaction) {
                    Ok(()) => {
                        self.commit_touched(timestamp_ms, effects);
                        results.push((Verdict::Committed, effects_start..effects.len()));
                        None
                    }
                    Err(rejection) => Some((offset, rejection)),
                }
            }),
        };
        match failure {
            None => self.end_transaction(),
            Some((failed, rejection)) => {
                self.roll_back();
                let effects_start = results.first().map_or(effects.len(), |(_, range)| range.start);
                effects.truncate(effects_start);
                results = (0..chain.len())
                    .map(|offset| {
                        // An open chain fails as a whole; a closed one at `failed`.
                        let own = offset == failed || failed == chain.len();
                        let verdict = Verdict::Rejected(if own { rejection } else { linked_failure(0) });
                        (verdict, effects_start..effects_start)
                    })
                    .collect();
            }
        }
        chain
            .iter()
            .zip(results)
            .enumerate()
            .map(|(offset, (transaction, (verdict, range)))| {
                let record = record(offset, verdict);
                let entry = IdempotencyEntry {
                    id: transaction.id().clone(),
                    fingerprint: transaction.fingerprint(),
                    record,
                };
                let hash = self.idempotency.hash(transaction.id());
                self.idempotency
                    .insert(entry, hash, self.limits.idempotency_entries_max);
                Outcome::New { record, effects: range }
            })
            .collect()
    }

    /// Expires holds and forgets what fell out of the retention window.
    fn advance_time(&mut self, timestamp_ms: u64) -> Vec<ExpiredHold> {
        let mut expired = Vec::new();
        while let Some(entry) = self.hold_expiry.first_entry() {
            if entry.key().0 > timestamp_ms {
                break;
            }
            let hold_id = entry.remove();
            expired.push(self.expire_hold(hold_id, timestamp_ms));
        }
        let cutoff_ms = timestamp_ms.saturating_sub(self.limits.idempotency_window_ms);
        if timestamp_ms >= self.limits.idempotency_window_ms {
            self.idempotency.evict_through(cutoff_ms);
            while let Some(hold_id) = self.finished_holds.front() {
                let hold = &self.holds[hold_id];
                if hold.finished_at_ms > cutoff_ms {
                    break;
                }
                self.holds.remove(hold_id);
                self.finished_holds.pop_front();
            }
        }
        expired
    }

    fn expire_hold(&mut self, hold_id: HoldId, timestamp_ms: u64) -> ExpiredHold {
        let hold = self
            .holds
            .get_mut(&hold_id)
            .expect("the expiry index only names existing holds");
        assert_eq!(hold.status, HoldStatus::Active);
        let amount = hold.remaining;
        hold.status = HoldStatus::Expired;
        hold.remaining = 0;
        hold.finished_at_ms = timestamp_ms;
        let account = hold.account;
        let balances = &mut self.accounts[account.slot()].balances;
        balances.frozen -= amount;
        balances.available = balances
            .available
            .checked_add(amount)
            .expect("frozen came out of available");
        balances.version += 1;
        balances.updated_at_ms = timestamp_ms;
        assert!(balances.frozen >= 0);
        self.retain_finished_hold(hold_id.clone());
        let effect = self.effect_of(account);
        ExpiredHold {
            hold: hold_id,
            amount,
            effect,
        }
    }

    /// Keeps a finished hold for lookup, forgetting the oldest beyond the
    /// count bound (the time bound is applied in `advance_time`).
    fn retain_finished_hold(&mut self, hold_id: HoldId) {
        self.finished_holds.push_back(hold_id);
        while self.finished_holds.len() > self.limits.finished_holds_max as usize {
            let oldest = self
                .finished_holds
                .pop_front()
                .expect("longer than the bound, so not empty");
            self.holds.remove(&oldest);
        }
    }

    fn apply_transaction(
        &mut self,
        timestamp_ms: u64,
        transaction: &Transaction,
        hash: u64,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        debug_assert_eq!(hash, self.idempotency.hash(transaction.id()));
        let sequence = self.sequence_next;
        self.sequence_next += 1;
        let fingerprint = transaction.fingerprint();
        if let Some(entry) = self.idempotency.get_hashed(transaction.id(), hash) {
            return if entry.fingerprint == fingerprint {
                Outcome::Replayed(entry.record)
            } else {
                Outcome::IdReused(entry.record)
            };
        }
        assert!(self.undo.is_empty() && self.touched.is_empty() && self.finished_in_transaction.is_empty());
        let effects_start = effects.len();
        let verdict = match self.apply_operations(timestamp_ms, transaction) {
            Ok(()) => {
                self.commit(timestamp_ms, effects);
                Verdict::Committed
            }
            Err(rejection) => {
                self.roll_back();
                Verdict::Rejected(rejection)
            }
        };
        let record = Record {
            sequence,
            timestamp_ms,
            verdict,
        };
        let entry = IdempotencyEntry {
            id: transaction.id().clone(),
            fingerprint,
            record,
        };
        self.idempotency
            .insert(entry, hash, self.limits.idempotency_entries_max);
        Outcome::New {
            record,
            effects: effects_start..effects.len(),
        }
    }

    #[inline(always)]
    fn apply_operations(&mut self, timestamp_ms: u64, transaction: &Transaction) -> Result<(), Rejection> {
        for (index, op) in transaction.ops().iter().enumerate() {
            let op_index = u16::try_from(index).expect("ops per transaction fit in u16");
            self.apply_operation(timestamp_ms, op)
                .map_err(|code| Rejection { code, op_index })?;
        }
        Ok(())
    }

    fn commit(&mut self, timestamp_ms: u64, effects: &mut Vec<Effect>) {
        self.commit_touched(timestamp_ms, effects);
        self.end_transaction();
    }

    /// Versions, postconditions and effects of the accounts the operations
    /// since the last call touched. The undo log stays: a linked chain may
    /// still roll them back.
    #[inline(always)]
    fn commit_touched(&mut self, timestamp_ms: u64, effects: &mut Vec<Effect>) {
        effects.reserve(self.touched.len());
        for index in self.touched.drain(..) {
            let account = &mut self.accounts[index.slot()];
            let balances = &mut account.balances;
            balances.version += 1;
            balances.updated_at_ms = timestamp_ms;
            // Postconditions of every rule, checked on what changed.
            assert!(balances.frozen >= 0, "frozen never negative");
            assert!(
                balances.available >= balances.min_available,
                "available never below its floor"
            );
            assert!(
                balances.max_total == NO_CEILING || balances.total().is_some_and(|total| total <= balances.max_total)
            );
            effects.push(Effect {
                account: index,
                available: balances.available,
                frozen: balances.frozen,
                version: balances.version,
            });
        }
    }

    /// Makes everything applied since the undo log was last empty final.
    #[inline(always)]
    fn end_transaction(&mut self) {
        self.undo.clear();
        let mut finished = std::mem::take(&mut self.finished_in_transaction);
        for hold_id in finished.drain(..) {
            self.retain_finished_hold(hold_id);
        }
        self.finished_in_transaction = finished;
    }

    fn roll_back(&mut self) {
        while let Some(entry) = self.undo.pop() {
            match entry {
                Undo::Balances(index, balances) => self.accounts[index.slot()].balances = balances,
                Undo::AccountOpened => {
                    let account = self.accounts.pop().expect("undo names an opened account");
                    self.account_details.pop();
                    let hash = self.hasher.hash_one(account.id.as_str());
                    self.account_index.remove(hash, self.accounts.len() as u32);
                }
                Undo::UnitCreated => {
                    let world = self.accounts.pop().expect("undo names a @world account");
                    self.account_details.pop();
                    assert!(world.id.is_world());
                    let unit = self.units.pop().expect("undo names a unit");
                    self.unit_lookup.remove(&unit);
                    self.world_of_unit.pop();
                }
                Undo::HoldCreated(hold_id) => {
                    let hold = self.holds.remove(&hold_id).expect("undo names a created hold");
                    if let Some(expires_at_ms) = hold.expiry() {
                        self.hold_expiry.remove(&(expires_at_ms, hold.serial));
                    }
                    self.hold_serial_next -= 1;
                }
                Undo::HoldChanged(hold_id, previous) => {
                    let hold = self.holds.get_mut(&hold_id).expect("undo names an existing hold");
                    let was_removed_from_expiry =
                        previous.status == HoldStatus::Active && hold.status != HoldStatus::Active;
                    *hold = previous;
                    if let (true, Some(expires_at_ms)) = (was_removed_from_expiry, previous.expiry()) {
                        self.hold_expiry.insert((expires_at_ms, previous.serial), hold_id);
                    }
                }
            }
        }
        self.touched.clear();
        self.finished_in_transaction.clear();
    }

    /// Starts loading the index slots a later transaction will probe: its
    /// id's in the window and its first operation's accounts'. Random access
    /// over millions of accounts and ids is bound by memory latency, so
    /// overlapping the loads of several transactions is where the
    /// throughput comes from.
    fn prefetch_index_slots(&self, transaction: &Transaction) -> Hashes {
        let mut hashes = Hashes {
            id: self.idempotency.hash(transaction.id()),
            accounts: [None; 2],
        };
        self.idempotency.prefetch(hashes.id);
        let accounts = transaction.ops().first().map_or([None; 2], Operation::accounts);
        for (hash, id) in hashes.accounts.iter_mut().zip(accounts) {
            *hash = id.map(|id| self.hasher.hash_one(id.as_str()));
            if let Some(hash) = hash {
                self.account_index.prefetch(*hash);
            }
        }
        hashes
    }

    /// Starts loading the account records a later transaction will need,
    /// through index slots prefetched earlier. It takes the first candidate
    /// without comparing ids: a wrong guess only wastes one prefetch.
    fn prefetch_accounts(&self, hashes: &Hashes) {
        for hash in hashes.accounts.into_iter().flatten() {
            if let Some(slot) = self.account_index.candidates(hash).next() {
                if let Some(account) = self.accounts.get(slot as usize) {
                    prefetch(account);
                }
            }
        }
    }

    pub(crate) fn effect_of(&self, index: AccountIndex) -> Effect {
        let balances = &self.accounts[index.slot()].balances;
        Effect {
            account: index,
            available: balances.available,
            frozen: balances.frozen,
            version: balances.version,
        }
    }

    // ---- Reads. They see only what the engine has applied; the server
    // ---- answers them after the batch that applied a write is durable.

    pub fn find_account(&self, id: &AccountId) -> Option<AccountIndex> {
        let hash = self.hasher.hash_one(id.as_str());
        self.account_index
            .candidates(hash)
            .find(|slot| self.accounts[*slot as usize].id == *id)
            .map(AccountIndex::from_slot)
    }

    pub fn world_account(&self, unit: &Unit) -> Option<AccountIndex> {
        self.unit_lookup
            .get(unit)
            .map(|unit_number| self.world_of_unit[*unit_number as usize])
    }

    pub fn account(&self, id: &AccountId) -> Option<AccountView> {
        self.find_account(id).map(|index| self.account_at(index))
    }

    pub fn account_id(&self, index: AccountIndex) -> &AccountId {
        &self.accounts[index.slot()].id
    }

    pub fn account_unit(&self, index: AccountIndex) -> &Unit {
        &self.units[self.accounts[index.slot()].unit as usize]
    }

    pub fn account_at(&self, index: AccountIndex) -> AccountView {
        let account = &self.accounts[index.slot()];
        let details = &self.account_details[index.slot()];
        let balances = &account.balances;
        AccountView {
            id: account.id.clone(),
            unit: self.units[account.unit as usize].clone(),
            available: balances.available,
            frozen: balances.frozen,
            total: balances.total().expect("totals stay in range"),
            min_available: (balances.min_available != crate::state::NO_FLOOR).then_some(balances.min_available),
            max_total: (balances.max_total != NO_CEILING).then_some(balances.max_total),
            status: if balances.closed {
                AccountStatus::Closed
            } else {
                AccountStatus::Open
            },
            metadata: details.metadata.clone(),
            version: balances.version,
            created_at_ms: details.created_at_ms,
            updated_at_ms: balances.updated_at_ms,
        }
    }

    /// The account at a creation-order position (0-based), for paging.
    pub fn account_at_slot(&self, slot: u64) -> AccountView {
        assert!(slot < self.accounts.len() as u64, "slot within the account count");
        self.account_at(AccountIndex::from_slot(slot as u32))
    }

    /// All accounts in creation order, `@world` accounts included.
    pub fn accounts(&self) -> impl Iterator<Item = AccountView> + '_ {
        (0..self.accounts.len() as u32).map(|slot| self.account_at(AccountIndex::from_slot(slot)))
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    pub fn hold(&self, id: &HoldId) -> Option<HoldView> {
        let hold = self.holds.get(id)?;
        Some(HoldView {
            id: id.clone(),
            account: self.account_id(hold.account).clone(),
            unit: self.account_unit(hold.account).clone(),
            to: hold.to.map(|to| self.account_id(to).clone()),
            amount: hold.amount,
            captured: hold.captured,
            remaining: hold.remaining,
            status: hold.status,
            expires_at_ms: hold.expiry(),
            created_at_ms: hold.created_at_ms,
            finished_at_ms: (hold.status != HoldStatus::Active).then_some(hold.finished_at_ms),
        })
    }

    /// Active holds, counting those finished by the transaction being
    /// applied as still open until it commits.
    pub fn open_hold_count(&self) -> usize {
        self.holds.len() - self.finished_holds.len()
    }

    /// The remembered outcome of a transaction id still in the window.
    pub fn transaction(&self, id: &TransactionId) -> Option<Record> {
        self.idempotency.get(id).map(|entry| entry.record)
    }

    pub fn idempotency_entry_count(&self) -> usize {
        self.idempotency.len()
    }

    /// Whether the window has forgotten an id, or would by a batch at
    /// `timestamp_ms` or within the last tenth of its count bound. Until
    /// then every id ever applied is answered from memory; callers that keep
    /// ids longer (the history store) need checking only from then on, and
    /// the margin covers requests already on their way. Sequence 0 is always
    /// a new transaction, so it is the window's front until an eviction.
    pub fn idempotency_forgets_by(&self, timestamp_ms: u64) -> bool {
        let Some(front) = self.idempotency.entries().next() else {
            return self.sequence_next > 0;
        };
        let limits = &self.limits;
        let count_margin = (limits.idempotency_entries_max as usize) - (limits.idempotency_entries_max as usize) / 10;
        front.record.sequence > 0
            || self.idempotency.len() >= count_margin
            || front.record.timestamp_ms.saturating_add(limits.idempotency_window_ms) <= timestamp_ms
    }
}

/// The rejection of a chain's transactions that did not fail themselves.
fn linked_failure(op_index: u16) -> Rejection {
    Rejection {
        code: crate::rejection::RejectionCode::LinkedEventFailed,
        op_index,
    }
}
