//! A full scan of every domain invariant (conservation per unit, floors and
//! ceilings, frozen = open holds). Too slow for the hot path
//! (the engine asserts the cheap per-transaction postconditions instead), but
//! run by tests after every step and by snapshot decoding.

use crate::engine::Engine;
use crate::state::{AccountIndex, HoldStatus, NO_CEILING};

impl Engine {
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut unit_sums = vec![WideSum::default(); self.units.len()];
        let mut frozen_by_holds = vec![0i128; self.accounts.len()];
        for (hold_id, hold) in &self.holds {
            if hold.remaining < 0 || hold.captured < 0 || hold.remaining + hold.captured > hold.amount {
                return Err(format!("hold {hold_id} has inconsistent amounts"));
            }
            let indexed = hold
                .expiry()
                .map(|at| self.hold_expiry.get(&(at, hold.serial)) == Some(hold_id));
            match hold.status {
                HoldStatus::Active => {
                    let frozen = &mut frozen_by_holds[hold.account.slot()];
                    *frozen = frozen.checked_add(hold.remaining).ok_or("open holds overflow")?;
                    if indexed == Some(false) {
                        return Err(format!("active hold {hold_id} is missing from the expiry index"));
                    }
                }
                _ if hold.remaining != 0 || indexed == Some(true) => {
                    return Err(format!(
                        "finished hold {hold_id} still holds funds or is indexed for expiry"
                    ));
                }
                _ => {}
            }
        }
        let active_with_expiry = self
            .holds
            .values()
            .filter(|hold| hold.status == HoldStatus::Active && hold.expiry().is_some())
            .count();
        let active = self
            .holds
            .values()
            .filter(|hold| hold.status == HoldStatus::Active)
            .count();
        if active + self.finished_holds.len() != self.holds.len() {
            return Err("the finished-hold queue does not list exactly the finished holds".into());
        }
        if active_with_expiry != self.hold_expiry.len() {
            return Err("the expiry index names holds that are not active".into());
        }
        for (slot, account) in self.accounts.iter().enumerate() {
            let balances = &account.balances;
            let total = balances
                .total()
                .ok_or_else(|| format!("account {} total overflows", account.id))?;
            unit_sums[account.unit as usize].add(total);
            if balances.frozen != frozen_by_holds[slot] {
                return Err(format!(
                    "account {} frozen {} but its open holds sum to {}",
                    account.id, balances.frozen, frozen_by_holds[slot]
                ));
            }
            if balances.available < balances.min_available {
                return Err(format!("account {} is below its floor", account.id));
            }
            if balances.max_total != NO_CEILING && total > balances.max_total {
                return Err(format!("account {} is above its ceiling", account.id));
            }
            let is_world = self.world_of_unit.get(account.unit as usize) == Some(&AccountIndex::from_slot(slot as u32));
            if account.id.is_world() != is_world {
                return Err(format!("account {} at {slot} is misfiled as @world", account.id));
            }
        }
        if let Some(unit) = unit_sums.iter().position(|sum| sum.value() != Some(0)) {
            return Err(format!(
                "unit {} does not sum to zero: {:?}",
                self.units[unit], unit_sums[unit]
            ));
        }
        Ok(())
    }

    /// Sum of all totals of a unit, `@world` included: always zero. None
    /// for an unknown unit.
    pub fn unit_sum(&self, unit: &crate::Unit) -> Option<i128> {
        let number = *self.unit_lookup.get(unit)?;
        let mut sum = WideSum::default();
        for account in self.accounts.iter().filter(|account| account.unit == number) {
            sum.add(account.balances.total().expect("totals stay in range"));
        }
        Some(sum.value().expect("a unit sums to zero, which fits"))
    }
}

/// A 256-bit running sum: partial sums of i128 totals can leave the i128
/// range even when the full sum is zero (one account at i128::MAX, @world
/// at i128::MIN, another at 1).
#[derive(Debug, Clone, Copy, Default)]
struct WideSum {
    low: u128,
    high: i128,
}

impl WideSum {
    fn add(&mut self, value: i128) {
        let (low, carry) = self.low.overflowing_add(value as u128);
        let sign_extension: i128 = if value < 0 { -1 } else { 0 };
        self.low = low;
        self.high += sign_extension + i128::from(carry);
    }

    fn value(&self) -> Option<i128> {
        let fits =
            (self.high == 0 && self.low <= i128::MAX as u128) || (self.high == -1 && self.low > i128::MAX as u128);
        fits.then_some(self.low as i128)
    }
}
