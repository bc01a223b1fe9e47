//! The index of regular accounts by id: a `ProbeTable` whose values are
//! account slots + 1. Accounts are never deleted (closing is a flag); the
//! only removal is the undo of an opening.

use crate::probe_table::{slot_of, tag_of_slot, ProbeTable};

#[derive(Debug, Clone)]
pub(crate) struct AccountTable {
    table: ProbeTable,
    len: usize,
}

const SLOTS_MIN: usize = 1 << 8;

impl Default for AccountTable {
    fn default() -> Self {
        AccountTable {
            table: ProbeTable::new(SLOTS_MIN),
            len: 0,
        }
    }
}

fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl AccountTable {
    /// The account slots whose tag matches, in probe order; the caller
    /// compares ids.
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        self.table.probe(tag_of(hash)).map(|(_, slot)| slot as u32 - 1)
    }

    /// Starts loading the slot a lookup of `hash` probes first.
    pub fn prefetch(&self, hash: u64) {
        self.table.prefetch(tag_of(hash));
    }

    /// Indexes an account known to be absent.
    pub fn insert(&mut self, hash: u64, account_slot: u32) {
        assert!(account_slot < u32::MAX);
        // At most half full, so that probes stay within a cache line or two.
        if (self.len + 1) * 2 > self.table.size() {
            self.grow();
        }
        let tag = tag_of(hash);
        let (index, empty) = self.table.vacancy(tag, |_| false);
        assert!(empty);
        self.table.set(index, slot_of(tag, account_slot + 1));
        self.len += 1;
    }

    /// Doubles the table. The tags place every slot again without
    /// rehashing an id.
    fn grow(&mut self) {
        let size = self.table.size() * 2;
        let old = std::mem::replace(&mut self.table, ProbeTable::new(size));
        for slot in old.occupied() {
            let (index, _) = self.table.vacancy(tag_of_slot(slot), |_| false);
            self.table.set(index, slot);
        }
    }

    /// Forgets an account (the undo of its opening).
    pub fn remove(&mut self, hash: u64, account_slot: u32) {
        let found = self
            .table
            .probe(tag_of(hash))
            .find(|(_, slot)| *slot as u32 == account_slot + 1);
        let (index, _) = found.expect("the removed account is indexed");
        self.table.remove_at(index);
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_account_through_growth_and_removals() {
        let mut table = AccountTable::default();
        // Few distinct tags, so probe runs are long and wrap around.
        let hash = |n: u32| u64::from(n % 97 * 40_503) << 32 | u64::from(n);
        let mut present = std::collections::BTreeSet::new();
        for n in 0..5_000u32 {
            table.insert(hash(n), n);
            present.insert(n);
            if n % 7 == 3 {
                let victim = n - n % 5;
                if present.remove(&victim) {
                    table.remove(hash(victim), victim);
                }
            }
        }
        for n in 0..5_000u32 {
            let found = table.candidates(hash(n)).any(|slot| slot == n);
            assert_eq!(found, present.contains(&n), "account {n}");
            assert!(table.candidates(hash(n)).all(|slot| slot % 97 == n % 97));
        }
        assert_eq!(table.len, present.len());
    }
}
