//! The window of remembered transaction ids.
//!
//! Entries live in a queue in arrival order (which is also time order, since
//! batch timestamps never go backwards), so eviction by age or by count pops
//! from the front. An open-addressing index of absolute queue positions
//! finds an id without storing it twice.
//!
//! Why a purpose-built index instead of a general hash map: the engine is
//! bound by memory latency, and this index lets it prefetch the slot a
//! transaction will probe several transactions ahead (`prefetch`). Its
//! eviction is lazy: popping the queue front makes every position below
//! `front_position` stale; lookups skip stale slots and inserts reuse them,
//! so evicting costs no random memory access. The index is rebuilt from the
//! live entries (one sequential pass) only when empty slots run low.

use crate::identifier::TransactionId;
use crate::state::Record;
use foldhash::fast::FixedState;
use std::collections::VecDeque;
use std::hash::BuildHasher;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyEntry {
    pub id: TransactionId,
    /// The id's hash, kept so that rebuilding the index never reads the id.
    pub hash: u64,
    pub fingerprint: u128,
    pub record: Record,
}

const EMPTY: u64 = u64::MAX;
const SLOTS_MIN: usize = 1 << 10;

#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    /// Absolute queue position, or EMPTY. Below `front_position`: stale.
    position: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct IdempotencyWindow {
    entries: VecDeque<IdempotencyEntry>,
    /// Absolute position of `entries[0]`; positions only grow.
    front_position: u64,
    /// Power-of-two sized, linear probing.
    slots: Vec<Slot>,
    /// Slots that are not EMPTY (live or stale).
    slots_used: usize,
    hasher: FixedState,
}

impl Default for IdempotencyWindow {
    fn default() -> Self {
        IdempotencyWindow {
            entries: VecDeque::new(),
            front_position: 0,
            slots: vec![
                Slot {
                    hash: 0,
                    position: EMPTY
                };
                SLOTS_MIN
            ],
            slots_used: 0,
            hasher: FixedState::default(),
        }
    }
}

impl IdempotencyWindow {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn entries(&self) -> impl Iterator<Item = &IdempotencyEntry> {
        self.entries.iter()
    }

    pub fn hash(&self, id: &TransactionId) -> u64 {
        self.hasher.hash_one(id.as_str())
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Starts loading the slot a lookup of `hash` will probe first.
    pub fn prefetch(&self, hash: u64) {
        crate::engine::prefetch(&self.slots[hash as usize & self.mask()]);
    }

    pub fn get(&self, id: &TransactionId) -> Option<&IdempotencyEntry> {
        self.get_hashed(id, self.hash(id))
    }

    pub fn get_hashed(&self, id: &TransactionId, hash: u64) -> Option<&IdempotencyEntry> {
        let mask = self.mask();
        let mut index = hash as usize & mask;
        loop {
            let slot = self.slots[index];
            if slot.position == EMPTY {
                return None;
            }
            if slot.hash == hash && slot.position >= self.front_position {
                let entry = &self.entries[(slot.position - self.front_position) as usize];
                if entry.id == *id {
                    return Some(entry);
                }
            }
            index = (index + 1) & mask;
        }
    }

    /// Remembers an id that is not in the window.
    pub fn insert(&mut self, entry: IdempotencyEntry, entries_max: u32) {
        assert!(entries_max > 0);
        debug_assert_eq!(entry.hash, self.hash(&entry.id));
        debug_assert!(self.get_hashed(&entry.id, entry.hash).is_none());
        while self.entries.len() >= entries_max as usize {
            self.evict_front();
        }
        if let Some(last) = self.entries.back() {
            assert!(
                last.record.timestamp_ms <= entry.record.timestamp_ms,
                "window must stay in time order"
            );
        }
        let position = self.front_position + self.entries.len() as u64;
        self.place(entry.hash, position);
        self.entries.push_back(entry);
        // Keep a quarter of the slots EMPTY so every probe ends quickly.
        if self.slots_used * 4 > self.slots.len() * 3 {
            self.rebuild();
        }
    }

    /// Writes a position into the first EMPTY or stale slot of its probe.
    fn place(&mut self, hash: u64, position: u64) {
        let mask = self.mask();
        let mut index = hash as usize & mask;
        loop {
            let slot = &mut self.slots[index];
            if slot.position == EMPTY || slot.position < self.front_position {
                if slot.position == EMPTY {
                    self.slots_used += 1;
                }
                *slot = Slot { hash, position };
                return;
            }
            index = (index + 1) & mask;
        }
    }

    /// A fresh index at twice the live entries, rounded up to a power of two.
    fn rebuild(&mut self) {
        let size = (self.entries.len() * 2 + 1).next_power_of_two().max(SLOTS_MIN);
        self.slots = vec![
            Slot {
                hash: 0,
                position: EMPTY
            };
            size
        ];
        self.slots_used = 0;
        for offset in 0..self.entries.len() {
            let hash = self.entries[offset].hash;
            self.place(hash, self.front_position + offset as u64);
        }
        assert_eq!(self.slots_used, self.entries.len());
    }

    /// Forgets every entry recorded at or before `cutoff_ms`.
    pub fn evict_through(&mut self, cutoff_ms: u64) {
        while self
            .entries
            .front()
            .is_some_and(|entry| entry.record.timestamp_ms <= cutoff_ms)
        {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if self.entries.pop_front().is_some() {
            self.front_position += 1;
        }
    }
}
