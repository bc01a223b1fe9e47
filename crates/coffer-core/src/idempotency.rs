//! The window of remembered transaction ids.
//!
//! Entries live in a queue in arrival order (which is also time order, since
//! batch timestamps never go backwards), so eviction by age or by count pops
//! from the front. An open-addressing index of absolute queue positions
//! finds an id without storing it twice.
//!
//! The index is a `ProbeTable` (see there for why), whose eviction is
//! lazy: popping the queue front makes every position below
//! `front_position` stale; lookups skip stale slots, inserts reuse them and
//! a sweeper a few slots per insert empties them, so evicting costs no
//! random memory access and a window of steady size keeps one table (whose
//! pages stay mapped, so prefetches of it are never dropped). The table is
//! replaced, a few buckets per insert, only when the window grows.

use crate::entry_queue::{EntryQueue, QueueView};
use crate::identifier::TransactionId;
use crate::probe_table::{slot_of, tag_of_slot, ProbeTable};
use crate::state::Record;
use foldhash::fast::FixedState;
use std::hash::BuildHasher;

/// One remembered transaction: 64 bytes, one cache line (asserted below),
/// because the window streams through memory at the engine's full rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyEntry {
    pub id: TransactionId,
    pub fingerprint: u128,
    pub record: Record,
}

const _: () = assert!(std::mem::size_of::<IdempotencyEntry>() == 64);

const SLOTS_MIN: usize = 1 << 10;
/// Slots the sweeper inspects per insert (one cache line, read in order).
/// Each insert makes at most one slot stale (its eviction), so stale slots
/// never exceed an eighth of the table: with live entries at most 56 % of
/// it (see `start_migration`), the table stays below the 75 % that would force
/// a migration, and a window of steady size never migrates.
const SWEEP_SLOTS_PER_INSERT: usize = 8;
/// How many entries ahead of eviction the front of the queue is prefetched.
const EVICTION_PREFETCH_DISTANCE: usize = 32;
/// Buckets of the old table moved per insert while a migration runs. A new
/// table starts at most 56 % used and a migration starts at 75 %, so at
/// least a fifth of its slots' worth of inserts come first: moving 16
/// buckets per insert ends a migration from a table up to three times
/// larger in time.
const MIGRATE_BUCKETS_PER_INSERT: usize = 16;

/// Slots are `ProbeTable` slots: the tag is the hash's top 32 bits with the
/// lowest forced to one (so no slot is zero), the value the entry's
/// position mod 2^32.
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

/// Where a slot sits among the window's live entries: its offset from the
/// front, when that is below `live`. A stale slot whose position happens to
/// wrap into the live range is harmless: every match compares the id.
fn live_offset(slot: u64, front: u64, live: u64) -> Option<u64> {
    let offset = u64::from((slot as u32).wrapping_sub(front as u32));
    (offset < live).then_some(offset)
}

#[derive(Debug, Clone)]
pub(crate) struct IdempotencyWindow {
    entries: EntryQueue<IdempotencyEntry>,
    /// Absolute position of `entries[0]`; positions only grow.
    front_position: u64,
    table: ProbeTable,
    /// Slots of `table` in use, live or stale.
    used: usize,
    /// Where the sweeper that empties stale slots goes on.
    sweep_index: usize,
    /// The previous table while its live slots move into `table`, and the
    /// next bucket to move. Lookups consult both until it is empty.
    migrating: Option<(ProbeTable, usize)>,
    hasher: FixedState,
}

impl Default for IdempotencyWindow {
    fn default() -> Self {
        IdempotencyWindow {
            entries: EntryQueue::default(),
            front_position: 0,
            table: ProbeTable::new(SLOTS_MIN),
            used: 0,
            sweep_index: 0,
            migrating: None,
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

    /// The entries as they are now, readable on another thread.
    pub fn view(&self) -> QueueView<IdempotencyEntry> {
        self.entries.view()
    }

    pub fn hash(&self, id: &TransactionId) -> u64 {
        self.hasher.hash_one(id.as_str())
    }

    /// Starts loading the slots a lookup of `hash` will probe first.
    pub fn prefetch(&self, hash: u64) {
        let tag = tag_of(hash);
        self.table.prefetch(tag);
        if let Some((old, _)) = &self.migrating {
            old.prefetch(tag);
        }
    }

    pub fn get(&self, id: &TransactionId) -> Option<&IdempotencyEntry> {
        self.get_hashed(id, self.hash(id))
    }

    pub fn get_hashed(&self, id: &TransactionId, hash: u64) -> Option<&IdempotencyEntry> {
        let (tag, front, live) = (tag_of(hash), self.front_position, self.entries.len() as u64);
        let entries = &self.entries;
        let find = |table: &ProbeTable| {
            table
                .probe(tag)
                .filter_map(|(_, slot)| live_offset(slot, front, live))
                .filter_map(|offset| entries.get(offset as usize))
                .find(|entry| entry.id == *id)
        };
        find(&self.table).or_else(|| find(&self.migrating.as_ref()?.0))
    }

    /// Remembers an id that is not in the window; `hash` is `self.hash(id)`.
    #[inline(always)]
    pub fn insert(&mut self, entry: IdempotencyEntry, hash: u64, entries_max: u32) {
        assert!(entries_max > 0);
        debug_assert_eq!(hash, self.hash(&entry.id));
        debug_assert!(self.get_hashed(&entry.id, hash).is_none());
        while self.entries.len() >= entries_max as usize {
            self.evict_front();
        }
        // The oldest entries are read (dropped) when evicted, a window's
        // length after they were written: long out of cache, and one line
        // each between random accesses, which the hardware does not stream.
        if let Some(soon_evicted) = self.entries.get(EVICTION_PREFETCH_DISTANCE) {
            crate::prefetch::prefetch(soon_evicted);
        }
        if let Some(last) = self.entries.back() {
            assert!(
                last.record.timestamp_ms <= entry.record.timestamp_ms,
                "window must stay in time order"
            );
        }
        let position = self.front_position + self.entries.len() as u64;
        self.entries.push_back(entry);
        self.place(tag_of(hash), position);
        self.migrate(MIGRATE_BUCKETS_PER_INSERT);
        self.sweep(SWEEP_SLOTS_PER_INSERT);
        if self.used * 4 > self.table.size() * 3 {
            self.start_migration();
        }
    }

    /// Indexes a live position in the first empty or stale slot of its probe.
    fn place(&mut self, tag: u32, position: u64) {
        let (front, live) = (self.front_position, self.entries.len() as u64);
        let (index, empty) = self.table.vacancy(tag, |slot| live_offset(slot, front, live).is_none());
        self.table.set(index, slot_of(tag, position as u32));
        self.used += usize::from(empty);
    }

    /// Empties the next stale slots in table order. A removal shifts later
    /// slots back into the one just inspected, so it is inspected again.
    #[inline(always)]
    fn sweep(&mut self, count: usize) {
        let (front, live) = (self.front_position, self.entries.len() as u64);
        for _ in 0..count {
            let slot = self.table.slot(self.sweep_index);
            if slot != 0 && live_offset(slot, front, live).is_none() {
                self.table.remove_at(self.sweep_index);
                self.used -= 1;
            } else {
                self.sweep_index = (self.sweep_index + 1) & (self.table.size() - 1);
            }
        }
    }

    /// Moves up to `buckets` buckets of the old table into the current one.
    fn migrate(&mut self, buckets: usize) {
        let Some((old, next)) = self.migrating.take() else {
            return;
        };
        let (front, live) = (self.front_position, self.entries.len() as u64);
        let end = next.saturating_add(buckets).min(old.size());
        for bucket in next..end {
            let slot = old.slot(bucket);
            if let Some(offset) = (slot != 0).then(|| live_offset(slot, front, live)).flatten() {
                self.place(tag_of_slot(slot), front + offset);
            }
        }
        if end < old.size() {
            self.migrating = Some((old, end));
        }
    }

    /// Replaces a crowded table (the window grew) by an empty one at most
    /// 56 % full with the live entries; the old one drains a little on every
    /// insert, so no single insert pays for the whole rebuild (seconds at
    /// 20 M ids).
    fn start_migration(&mut self) {
        if self.migrating.is_some() {
            // Not expected (see MIGRATE_BUCKETS_PER_INSERT); stay correct.
            self.migrate(usize::MAX);
        }
        let size = (self.entries.len() * 9 / 5 + 1).next_power_of_two().max(SLOTS_MIN);
        let old = std::mem::replace(&mut self.table, ProbeTable::new(size));
        self.used = 0;
        self.sweep_index = 0;
        self.migrating = Some((old, 0));
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
        if self.entries.pop_front() {
            self.front_position += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Verdict;
    use std::collections::HashMap;

    fn entry(n: u64, timestamp_ms: u64) -> IdempotencyEntry {
        let id = TransactionId::parse(&format!("id-{n}")).unwrap();
        let record = Record {
            sequence: n,
            timestamp_ms,
            verdict: Verdict::Committed,
        };
        IdempotencyEntry {
            id,
            fingerprint: u128::from(n),
            record,
        }
    }

    /// Many migrations, with eviction by count and by time, against a
    /// HashMap of what must be remembered.
    #[test]
    fn lookups_stay_exact_through_migrations_and_eviction() {
        let mut window = IdempotencyWindow::default();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let (entries_max, mut oldest) = (5_000u32, 0u64);
        let mut migrations = 0;
        for n in 0..60_000u64 {
            let timestamp_ms = n / 10;
            let was_migrating = window.migrating.is_some();
            let entry = entry(n, timestamp_ms);
            let hash = window.hash(&entry.id);
            window.insert(entry, hash, entries_max);
            migrations += usize::from(!was_migrating && window.migrating.is_some());
            model.insert(n, timestamp_ms);
            while model.len() > entries_max as usize {
                model.remove(&oldest);
                oldest += 1;
            }
            if n % 7_919 == 0 {
                window.evict_through(timestamp_ms.saturating_sub(200));
                model.retain(|_, at| *at > timestamp_ms.saturating_sub(200));
                oldest = model.keys().min().copied().unwrap_or(n + 1);
            }
            if n % 997 == 0 {
                for probe in n.saturating_sub(12_000)..=n {
                    let id = TransactionId::parse(&format!("id-{probe}")).unwrap();
                    let found = window.get(&id).map(|entry| entry.record.sequence);
                    assert_eq!(
                        found,
                        model.contains_key(&probe).then_some(probe),
                        "id-{probe} after {n}"
                    );
                }
            }
        }
        assert_eq!(window.len(), model.len());
        assert!(migrations >= 3, "the test must cross several migrations: {migrations}");
        assert!(window.table.size() <= 4 * (2 * entries_max as usize).next_power_of_two());
    }

    /// The sweeper keeps a window of steady size in one table: no migration
    /// (whose fresh pages would drop prefetches) and no crowding.
    #[test]
    fn a_window_of_steady_size_never_migrates() {
        let mut window = IdempotencyWindow::default();
        let entries_max = 20_000u32;
        for n in 0..u64::from(entries_max) * 2 {
            let entry = entry(n, 1);
            let hash = window.hash(&entry.id);
            window.insert(entry, hash, entries_max);
        }
        let size = window.table.size();
        for n in u64::from(entries_max) * 2..u64::from(entries_max) * 12 {
            let entry = entry(n, 1);
            let hash = window.hash(&entry.id);
            window.insert(entry, hash, entries_max);
            assert!(
                window.migrating.is_none() && window.table.size() == size,
                "migrated at {n}"
            );
            assert!(
                window.used * 100 <= size * 70,
                "{} of {size} slots used at {n}",
                window.used
            );
        }
        assert_eq!(window.used, window.table.occupied().count());
    }
}
