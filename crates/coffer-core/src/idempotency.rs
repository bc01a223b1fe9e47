//! The window of remembered transaction ids.
//!
//! Entries live in a queue in arrival order (which is also time order, since
//! batch timestamps never go backwards), so eviction by age or by count pops
//! from the front. A hash table of absolute queue positions finds an id
//! without storing it twice.
//!
//! Eviction is lazy: popping the front makes every table position below
//! `front_position` stale, and lookups ignore stale positions. Stale slots
//! are swept in one sequential pass when the table would otherwise grow, so
//! the steady state costs no random memory access per eviction (a random
//! probe per eviction was a quarter of the engine's time in the benchmark).
//! The table holds at most its capacity, about twice the live entries.

use crate::identifier::TransactionId;
use crate::state::Record;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::collections::VecDeque;
use std::hash::BuildHasher;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyEntry {
    pub id: TransactionId,
    /// The id's table hash, kept so that rehashing never reads the id.
    pub hash: u64,
    pub fingerprint: u128,
    pub record: Record,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct IdempotencyWindow {
    entries: VecDeque<IdempotencyEntry>,
    /// Absolute position of `entries[0]`; positions only grow.
    front_position: u64,
    /// Positions of live entries, plus stale ones below `front_position`.
    table: HashTable<u64>,
    hasher: FixedState,
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

    pub fn get(&self, id: &TransactionId) -> Option<&IdempotencyEntry> {
        self.get_hashed(id, self.hash(id))
    }

    pub fn get_hashed(&self, id: &TransactionId, hash: u64) -> Option<&IdempotencyEntry> {
        let front = self.front_position;
        let entries = &self.entries;
        self.table
            .find(hash, |position| {
                *position >= front && entries[(position - front) as usize].id == *id
            })
            .map(|position| &entries[(position - front) as usize])
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
        if self.table.len() == self.table.capacity() {
            self.sweep_stale();
        }
        let position = self.front_position + self.entries.len() as u64;
        let front = self.front_position;
        let entries = &self.entries;
        // Only live positions remain whenever the table may rehash (it is
        // swept first), so this closure never sees a stale one.
        self.table.insert_unique(entry.hash, position, |existing| {
            entries[(existing - front) as usize].hash
        });
        self.entries.push_back(entry);
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

    fn sweep_stale(&mut self) {
        let front = self.front_position;
        self.table.retain(|position| *position >= front);
        assert!(
            self.table.len() == self.entries.len(),
            "after a sweep the table holds exactly the live entries"
        );
    }
}
