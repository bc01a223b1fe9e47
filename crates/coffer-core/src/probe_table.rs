//! The open-addressing table under the engine's two big indexes (accounts
//! by id, transaction ids in the window).
//!
//! Why not a general hash map: the engine is bound by memory latency, and it
//! hides it by prefetching the slots that transactions further down a batch
//! will probe. That needs the slot's address from the hash alone, and slots
//! small enough that a probe usually stays in one cache line. A slot here is
//! eight bytes: `tag << 32 | value`, where the tag is 32 bits of the key's
//! hash and also picks the home slot (so the table can move or delete slots
//! without reading keys), and the value is the caller's (never making the
//! whole slot zero, which marks it empty). Linear probing with
//! backward-shift deletion: no tombstones, so a lookup stops at the first
//! empty slot.

#[derive(Clone)]
pub(crate) struct ProbeTable {
    slots: Vec<u64>,
}

impl std::fmt::Debug for ProbeTable {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "ProbeTable({} slots)", self.slots.len())
    }
}

pub(crate) fn tag_of_slot(slot: u64) -> u32 {
    (slot >> 32) as u32
}

pub(crate) fn slot_of(tag: u32, value: u32) -> u64 {
    let slot = u64::from(tag) << 32 | u64::from(value);
    assert_ne!(slot, 0, "a slot in use is never zero");
    slot
}

impl ProbeTable {
    /// A table of zeros (all empty), from the allocator's zeroed pages.
    pub fn new(size: usize) -> Self {
        assert!(size.is_power_of_two() && size <= 1 << 32);
        ProbeTable { slots: vec![0; size] }
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    pub fn slot(&self, index: usize) -> u64 {
        self.slots[index]
    }

    pub fn set(&mut self, index: usize, slot: u64) {
        self.slots[index] = slot;
    }

    /// Starts loading the slot a probe for `tag` reads first.
    pub fn prefetch(&self, tag: u32) {
        crate::prefetch::prefetch(&self.slots[self.home(tag)]);
    }

    /// The slots carrying `tag` in its probe run, with their indexes.
    pub fn probe(&self, tag: u32) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mask = self.mask();
        let mut index = self.home(tag);
        std::iter::from_fn(move || loop {
            let slot = self.slots[index];
            if slot == 0 {
                return None;
            }
            let found = index;
            index = (index + 1) & mask;
            if tag_of_slot(slot) == tag {
                return Some((found, slot));
            }
        })
    }

    /// The first slot of `tag`'s probe run that is empty or that `reusable`
    /// accepts; whether it was empty.
    pub fn vacancy(&self, tag: u32, reusable: impl Fn(u64) -> bool) -> (usize, bool) {
        let mask = self.mask();
        let mut index = self.home(tag);
        loop {
            let slot = self.slots[index];
            if slot == 0 || reusable(slot) {
                return (index, slot == 0);
            }
            index = (index + 1) & mask;
        }
    }

    /// Empties slot `gap`, shifting later slots of its run back into it
    /// where their probes allow, so that no lookup meets a false end.
    pub fn remove_at(&mut self, mut gap: usize) {
        assert_ne!(self.slots[gap], 0, "removing a slot in use");
        let mask = self.mask();
        let mut next = (gap + 1) & mask;
        while self.slots[next] != 0 {
            let home = self.home(tag_of_slot(self.slots[next]));
            // A slot whose home lies cyclically in gap+1..=next is found
            // before its probe reaches the gap; any other may fill it.
            let home_after_gap = (next.wrapping_sub(home) & mask) < (next.wrapping_sub(gap) & mask);
            if !home_after_gap {
                self.slots[gap] = self.slots[next];
                gap = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[gap] = 0;
    }

    /// The slots in use, in table order.
    pub fn occupied(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().copied().filter(|slot| *slot != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts and backward-shift removals with many colliding tags (long,
    /// wrapping runs), checked against a set.
    #[test]
    fn removal_keeps_every_other_slot_reachable() {
        let mut table = ProbeTable::new(1 << 10);
        let mut present = std::collections::BTreeSet::new();
        let tag = |n: u32| (n % 13).wrapping_mul(0x9E37_79B1) | 0x3FF;
        for n in 1..600u32 {
            let (index, _) = table.vacancy(tag(n), |_| false);
            table.set(index, slot_of(tag(n), n));
            present.insert(n);
            if n % 3 == 0 {
                let victim = n - n % 7;
                if present.remove(&victim) {
                    let (index, _) = table
                        .probe(tag(victim))
                        .find(|(_, slot)| *slot as u32 == victim)
                        .unwrap();
                    table.remove_at(index);
                }
            }
        }
        for n in 1..600u32 {
            let found = table.probe(tag(n)).any(|(_, slot)| slot as u32 == n);
            assert_eq!(found, present.contains(&n), "value {n}");
        }
        assert_eq!(table.occupied().count(), present.len());
    }
}
