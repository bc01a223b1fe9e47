//! The ledger rules, one function per operation. Each one checks before it
//! changes anything it has not first saved in the undo log (`touch`,
//! `save_hold`), so returning a rejection at any point is safe: the engine
//! rolls the whole transaction back.

use crate::amount::{Amount, Balance};
use crate::engine::{Engine, Undo};
use crate::identifier::{AccountId, HoldId};
use crate::limits::UNITS_MAX;
use crate::metadata::Metadata;
use crate::operation::{LimitChange, Operation};
use crate::rejection::RejectionCode;
use crate::state::{Account, AccountDetails, AccountIndex, Balances, Hold, HoldStatus, NO_CEILING, NO_FLOOR};
use crate::unit::Unit;
use std::hash::BuildHasher;

type Rule = Result<(), RejectionCode>;

fn signed(amount: Amount) -> Result<i128, RejectionCode> {
    i128::try_from(amount.value()).map_err(|_| RejectionCode::AmountOverflow)
}

impl Engine {
    #[inline(always)]
    pub(crate) fn apply_operation(&mut self, timestamp_ms: u64, op: &Operation) -> Rule {
        match op {
            Operation::Open {
                account,
                unit,
                min_available,
                max_total,
                metadata,
            } => self.open(
                timestamp_ms,
                account,
                unit,
                *min_available,
                *max_total,
                metadata.as_ref(),
            ),
            Operation::Transfer { from, to, amount } => self.transfer(from, to, *amount),
            Operation::Hold {
                hold,
                account,
                amount,
                to,
                expires_at_ms,
                ttl_ms,
            } => {
                let expires_at_ms = match (expires_at_ms, ttl_ms) {
                    (Some(at), _) => Some(*at),
                    (None, Some(ttl)) => Some(timestamp_ms.checked_add(*ttl).ok_or(RejectionCode::InvalidExpiry)?),
                    (None, None) => None,
                };
                self.open_hold(timestamp_ms, hold, account, *amount, to.as_ref(), expires_at_ms)
            }
            Operation::Capture { hold, amount, to } => self.capture(timestamp_ms, hold, *amount, to.as_ref()),
            Operation::Release { hold } => self.release(timestamp_ms, hold),
            Operation::SetBalance { account, available } => self.set_balance(account, *available),
            Operation::SetLimits {
                account,
                min_available,
                max_total,
            } => self.set_limits(account, *min_available, *max_total),
            Operation::Close { account } => self.set_closed(account, true),
            Operation::Reopen { account } => self.set_closed(account, false),
        }
    }

    /// Saves an account's numbers in the undo log the first time this
    /// transaction touches it, and lists it for the effects.
    fn touch(&mut self, index: AccountIndex) -> &mut Balances {
        if !self.touched.contains(&index) {
            self.touched.push(index);
            self.undo
                .push(Undo::Balances(index, self.accounts[index.slot()].balances));
        }
        &mut self.accounts[index.slot()].balances
    }

    fn balances(&self, index: AccountIndex) -> &Balances {
        &self.accounts[index.slot()].balances
    }

    fn unit_number(&self, index: AccountIndex) -> u32 {
        self.accounts[index.slot()].unit
    }

    fn regular_account(&self, id: &AccountId) -> Result<AccountIndex, RejectionCode> {
        if id.is_world() {
            return Err(RejectionCode::WorldAccount);
        }
        self.find_account(id).ok_or(RejectionCode::AccountNotFound)
    }

    /// Resolves `id` where `@world` means the world of `unit`.
    fn account_in_unit(&self, id: &AccountId, unit: u32) -> Result<AccountIndex, RejectionCode> {
        if id.is_world() {
            return Ok(self.world_of_unit[unit as usize]);
        }
        let index = self.find_account(id).ok_or(RejectionCode::AccountNotFound)?;
        if self.unit_number(index) != unit {
            return Err(RejectionCode::UnitMismatch);
        }
        Ok(index)
    }

    fn open_for_movement(&self, index: AccountIndex) -> Rule {
        if self.balances(index).closed {
            return Err(RejectionCode::AccountClosed);
        }
        Ok(())
    }

    /// Takes `amount` out of available, respecting the floor.
    fn debit(&mut self, index: AccountIndex, amount: i128) -> Rule {
        let balances = self.touch(index);
        let available = balances
            .available
            .checked_sub(amount)
            .ok_or(RejectionCode::AmountOverflow)?;
        if available < balances.min_available {
            return Err(RejectionCode::InsufficientFunds);
        }
        balances.available = available;
        Ok(())
    }

    /// Adds `amount` to available, respecting the ceiling on the total.
    fn credit(&mut self, index: AccountIndex, amount: i128) -> Rule {
        let balances = self.touch(index);
        let available = balances
            .available
            .checked_add(amount)
            .ok_or(RejectionCode::AmountOverflow)?;
        let total = available
            .checked_add(balances.frozen)
            .ok_or(RejectionCode::AmountOverflow)?;
        if total > balances.max_total {
            return Err(RejectionCode::LimitExceeded);
        }
        balances.available = available;
        Ok(())
    }

    fn open(
        &mut self,
        timestamp_ms: u64,
        id: &AccountId,
        unit: &Unit,
        min_available: Option<Balance>,
        max_total: Option<Balance>,
        metadata: Option<&Metadata>,
    ) -> Rule {
        if self.find_account(id).is_some() {
            return Err(RejectionCode::AccountExists);
        }
        let min_available = min_available.map_or(0, Balance::value);
        let max_total = max_total.map_or(NO_CEILING, Balance::value);
        if min_available > 0 || max_total < 0 {
            return Err(RejectionCode::LimitsViolated);
        }
        let unit_number = match self.unit_lookup.get(unit) {
            Some(number) => *number,
            None => self.create_unit(timestamp_ms, unit)?,
        };
        if self.accounts.len() >= self.limits.accounts_max as usize {
            return Err(RejectionCode::CapacityExceeded);
        }
        let balances = Balances {
            available: 0,
            frozen: 0,
            min_available,
            max_total,
            version: 0,
            updated_at_ms: timestamp_ms,
            closed: false,
        };
        let account = Account {
            id: id.clone(),
            unit: unit_number,
            balances,
        };
        let details = AccountDetails {
            metadata: metadata.cloned(),
            created_at_ms: timestamp_ms,
        };
        let index = self.push_account(account, details);
        self.undo.push(Undo::AccountOpened);
        let hash = self.hasher.hash_one(id.as_str());
        self.account_index.insert(hash, index.slot() as u32);
        self.touch(index);
        Ok(())
    }

    pub(crate) fn push_account(&mut self, account: Account, details: AccountDetails) -> AccountIndex {
        let index = AccountIndex::from_slot(u32::try_from(self.accounts.len()).expect("accounts_max fits in u32"));
        self.accounts.push(account);
        self.account_details.push(details);
        assert_eq!(self.accounts.len(), self.account_details.len());
        index
    }

    fn create_unit(&mut self, timestamp_ms: u64, unit: &Unit) -> Result<u32, RejectionCode> {
        // A new unit needs room for its @world and the account being opened.
        if self.units.len() >= UNITS_MAX || self.accounts.len() + 2 > self.limits.accounts_max as usize {
            return Err(RejectionCode::CapacityExceeded);
        }
        let unit_number = self.units.len() as u32;
        let balances = Balances {
            available: 0,
            frozen: 0,
            min_available: NO_FLOOR,
            max_total: NO_CEILING,
            version: 0,
            updated_at_ms: timestamp_ms,
            closed: false,
        };
        let world = Account {
            id: AccountId::world(),
            unit: unit_number,
            balances,
        };
        let details = AccountDetails {
            metadata: None,
            created_at_ms: timestamp_ms,
        };
        let world = self.push_account(world, details);
        self.units.push(unit.clone());
        self.unit_lookup.insert(unit.clone(), unit_number);
        self.world_of_unit.push(world);
        self.undo.push(Undo::UnitCreated);
        Ok(unit_number)
    }

    fn transfer(&mut self, from: &AccountId, to: &AccountId, amount: Amount) -> Rule {
        if from == to {
            return Err(RejectionCode::SameAccount);
        }
        let (from, to) = self.resolve_pair(from, to)?;
        self.open_for_movement(from)?;
        self.open_for_movement(to)?;
        let amount = signed(amount)?;
        self.debit(from, amount)?;
        self.credit(to, amount)
    }

    /// Resolves two distinct ids of one unit; `@world` takes the other's unit.
    fn resolve_pair(
        &self,
        first: &AccountId,
        second: &AccountId,
    ) -> Result<(AccountIndex, AccountIndex), RejectionCode> {
        if first.is_world() {
            let second = self.regular_account(second)?;
            return Ok((self.world_of_unit[self.unit_number(second) as usize], second));
        }
        let first = self.regular_account(first)?;
        let second = self.account_in_unit(second, self.unit_number(first))?;
        Ok((first, second))
    }

    fn open_hold(
        &mut self,
        timestamp_ms: u64,
        hold_id: &HoldId,
        account: &AccountId,
        amount: Amount,
        to: Option<&AccountId>,
        expires_at_ms: Option<u64>,
    ) -> Rule {
        if self.holds.contains_key(hold_id) {
            return Err(RejectionCode::HoldExists);
        }
        let account = self.regular_account(account)?;
        self.open_for_movement(account)?;
        let to = match to {
            None => None,
            Some(to_id) => {
                let to = self.account_in_unit(to_id, self.unit_number(account))?;
                if to == account {
                    return Err(RejectionCode::SameAccount);
                }
                self.open_for_movement(to)?;
                Some(to)
            }
        };
        if expires_at_ms.is_some_and(|at| at <= timestamp_ms) {
            return Err(RejectionCode::InvalidExpiry);
        }
        if self.open_hold_count() >= self.limits.holds_max as usize {
            return Err(RejectionCode::CapacityExceeded);
        }
        let amount = signed(amount)?;
        self.debit(account, amount)?;
        let balances = self.touch(account);
        balances.frozen = balances
            .frozen
            .checked_add(amount)
            .ok_or(RejectionCode::AmountOverflow)?;
        let serial = self.hold_serial_next;
        self.hold_serial_next += 1;
        let hold = Hold {
            account,
            to,
            amount,
            captured: 0,
            remaining: amount,
            expires_at_ms: expires_at_ms.and_then(std::num::NonZeroU64::new),
            status: HoldStatus::Active,
            serial,
            created_at_ms: timestamp_ms,
            finished_at_ms: 0,
        };
        self.holds.insert(hold_id.clone(), hold);
        if let Some(at) = expires_at_ms {
            self.hold_expiry.insert((at, serial), hold_id.clone());
        }
        self.undo.push(Undo::HoldCreated(hold_id.clone()));
        Ok(())
    }

    /// Returns an active hold after saving it in the undo log.
    fn active_hold(&mut self, hold_id: &HoldId) -> Result<Hold, RejectionCode> {
        let hold = *self.holds.get(hold_id).ok_or(RejectionCode::HoldNotFound)?;
        if hold.status != HoldStatus::Active {
            return Err(RejectionCode::HoldNotActive);
        }
        self.undo.push(Undo::HoldChanged(hold_id.clone(), hold));
        Ok(hold)
    }

    fn finish_hold(&mut self, timestamp_ms: u64, hold_id: &HoldId, mut hold: Hold, status: HoldStatus) {
        if let Some(at) = hold.expiry() {
            self.hold_expiry.remove(&(at, hold.serial));
        }
        hold.status = status;
        hold.finished_at_ms = timestamp_ms;
        self.holds.insert(hold_id.clone(), hold);
        self.finished_in_transaction.push(hold_id.clone());
    }

    fn capture(&mut self, timestamp_ms: u64, hold_id: &HoldId, amount: Option<Amount>, to: Option<&AccountId>) -> Rule {
        let mut hold = self.active_hold(hold_id)?;
        let amount = match amount {
            Some(amount) => signed(amount).map_err(|_| RejectionCode::CaptureExceedsHold)?,
            None => hold.remaining,
        };
        if amount > hold.remaining {
            return Err(RejectionCode::CaptureExceedsHold);
        }
        let unit = self.unit_number(hold.account);
        let destination = match to {
            Some(to) => self.account_in_unit(to, unit)?,
            None => hold.to.unwrap_or(self.world_of_unit[unit as usize]),
        };
        if destination == hold.account {
            return Err(RejectionCode::SameAccount);
        }
        self.open_for_movement(destination)?;
        let source = self.touch(hold.account);
        source.frozen -= amount;
        assert!(source.frozen >= 0, "frozen covers every open hold");
        self.credit(destination, amount)?;
        hold.remaining -= amount;
        hold.captured += amount;
        if hold.remaining == 0 {
            self.finish_hold(timestamp_ms, hold_id, hold, HoldStatus::Captured);
        } else {
            self.holds.insert(hold_id.clone(), hold);
        }
        Ok(())
    }

    fn release(&mut self, timestamp_ms: u64, hold_id: &HoldId) -> Rule {
        let mut hold = self.active_hold(hold_id)?;
        let source = self.touch(hold.account);
        source.frozen -= hold.remaining;
        source.available = source
            .available
            .checked_add(hold.remaining)
            .ok_or(RejectionCode::AmountOverflow)?;
        assert!(source.frozen >= 0, "frozen covers every open hold");
        hold.remaining = 0;
        self.finish_hold(timestamp_ms, hold_id, hold, HoldStatus::Released);
        Ok(())
    }

    /// Moves the difference from or to `@world`, so history stays complete.
    fn set_balance(&mut self, account: &AccountId, available: Balance) -> Rule {
        let index = self.regular_account(account)?;
        self.open_for_movement(index)?;
        let target = available.value();
        let current = *self.balances(index);
        if target == current.available {
            return Ok(());
        }
        if target < current.min_available {
            return Err(RejectionCode::InsufficientFunds);
        }
        let total = target
            .checked_add(current.frozen)
            .ok_or(RejectionCode::AmountOverflow)?;
        if total > current.max_total {
            return Err(RejectionCode::LimitExceeded);
        }
        let difference = target
            .checked_sub(current.available)
            .ok_or(RejectionCode::AmountOverflow)?;
        let world = self.world_of_unit[self.unit_number(index) as usize];
        let world_balances = self.touch(world);
        world_balances.available = world_balances
            .available
            .checked_sub(difference)
            .ok_or(RejectionCode::AmountOverflow)?;
        self.touch(index).available = target;
        Ok(())
    }

    fn set_limits(&mut self, account: &AccountId, min_available: Option<Balance>, max_total: LimitChange) -> Rule {
        let index = self.regular_account(account)?;
        let current = *self.balances(index);
        let min_available = min_available.map_or(current.min_available, Balance::value);
        let max_total = match max_total {
            LimitChange::Unchanged => current.max_total,
            LimitChange::Remove => NO_CEILING,
            LimitChange::Set(value) => value.value(),
        };
        let total = current.total().ok_or(RejectionCode::AmountOverflow)?;
        if current.available < min_available || total > max_total {
            return Err(RejectionCode::LimitsViolated);
        }
        let balances = self.touch(index);
        balances.min_available = min_available;
        balances.max_total = max_total;
        Ok(())
    }

    fn set_closed(&mut self, account: &AccountId, closed: bool) -> Rule {
        let index = self.regular_account(account)?;
        match (self.balances(index).closed, closed) {
            (true, true) => Err(RejectionCode::AccountClosed),
            (false, false) => Err(RejectionCode::AccountNotClosed),
            _ => {
                self.touch(index).closed = closed;
                Ok(())
            }
        }
    }
}
