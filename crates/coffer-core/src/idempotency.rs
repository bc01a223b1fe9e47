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

const SLOTS_MIN: usize = 1 << 10;
/// Buckets of the old table moved per insert while a migration runs. A new
/// table has room for twice the live entries, so a migration ends long
/// before the new table fills.
const MIGRATE_BUCKETS_PER_INSERT: usize = 64;

/// Linear-probing slots of `[hash, position + 1]`; `[_, 0]` is empty, so
/// a fresh table is all zeros and comes from the allocator's zeroed pages
/// (no memset of a table that can reach a gigabyte). A position below the
/// window's front is stale: skipped by lookups, reused by inserts.
#[derive(Clone)]
struct Table {
    slots: Vec<[u64; 2]>,
    /// Slots that are not empty (live or stale).
    used: usize,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Table({} slots, {} used)", self.slots.len(), self.used)
    }
}

impl Table {
    fn new(size: usize) -> Self {
        assert!(size.is_power_of_two());
        Table {
            slots: vec![[0u64; 2]; size],
            used: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn find(&self, hash: u64, front: u64, matches: impl Fn(u64) -> bool) -> Option<u64> {
        let mask = self.mask();
        let mut index = hash as usize & mask;
        loop {
            let [slot_hash, position_plus_one] = self.slots[index];
            if position_plus_one == 0 {
                return None;
            }
            let position = position_plus_one - 1;
            if slot_hash == hash && position >= front && matches(position) {
                return Some(position);
            }
            index = (index + 1) & mask;
        }
    }

    /// Writes into the first empty or stale slot of the probe.
    fn place(&mut self, hash: u64, position: u64, front: u64) {
        let mask = self.mask();
        let mut index = hash as usize & mask;
        loop {
            let slot = &mut self.slots[index];
            let position_plus_one = slot[1];
            if position_plus_one == 0 || position_plus_one - 1 < front {
                if position_plus_one == 0 {
                    self.used += 1;
                }
                *slot = [hash, position + 1];
                return;
            }
            index = (index + 1) & mask;
        }
    }

    /// A quarter of the slots stays empty so that every probe ends quickly.
    fn crowded(&self) -> bool {
        self.used * 4 > self.slots.len() * 3
    }
}

#[derive(Debug, Clone)]
pub(crate) struct IdempotencyWindow {
    entries: VecDeque<IdempotencyEntry>,
    /// Absolute position of `entries[0]`; positions only grow.
    front_position: u64,
    table: Table,
    /// The previous table while its live slots move into `table`, and the
    /// next bucket to move. Lookups consult both until it is empty.
    migrating: Option<(Table, usize)>,
    hasher: FixedState,
}

impl Default for IdempotencyWindow {
    fn default() -> Self {
        IdempotencyWindow {
            entries: VecDeque::new(),
            front_position: 0,
            table: Table::new(SLOTS_MIN),
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

    pub fn hash(&self, id: &TransactionId) -> u64 {
        self.hasher.hash_one(id.as_str())
    }

    /// Starts loading the slot a lookup of `hash` will probe first.
    pub fn prefetch(&self, hash: u64) {
        crate::engine::prefetch(&self.table.slots[hash as usize & self.table.mask()]);
    }

    pub fn get(&self, id: &TransactionId) -> Option<&IdempotencyEntry> {
        self.get_hashed(id, self.hash(id))
    }

    pub fn get_hashed(&self, id: &TransactionId, hash: u64) -> Option<&IdempotencyEntry> {
        let front = self.front_position;
        let entries = &self.entries;
        let matches = |position: u64| entries[(position - front) as usize].id == *id;
        let found = self.table.find(hash, front, matches).or_else(|| {
            let (old, _) = self.migrating.as_ref()?;
            old.find(hash, front, matches)
        });
        found.map(|position| &entries[(position - front) as usize])
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
        self.table.place(entry.hash, position, self.front_position);
        self.entries.push_back(entry);
        self.migrate(MIGRATE_BUCKETS_PER_INSERT);
        if self.table.crowded() {
            self.start_migration();
        }
    }

    /// Moves up to `buckets` buckets of the old table into the current one.
    fn migrate(&mut self, buckets: usize) {
        let Some((old, next)) = &mut self.migrating else { return };
        let end = (*next + buckets).min(old.slots.len());
        for bucket in *next..end {
            let [hash, position_plus_one] = old.slots[bucket];
            // Live: not empty (0) and not below the front.
            if position_plus_one > self.front_position {
                self.table.place(hash, position_plus_one - 1, self.front_position);
            }
        }
        *next = end;
        if end == old.slots.len() {
            self.migrating = None;
        }
    }

    /// Replaces a crowded table by an empty one with room for twice the
    /// live entries; the old one drains a little on every insert, so no
    /// single insert pays for the whole rebuild (3.4 s at 20 M ids).
    fn start_migration(&mut self) {
        if self.migrating.is_some() {
            // Not expected (see MIGRATE_BUCKETS_PER_INSERT); stay correct.
            self.migrate(usize::MAX);
        }
        let size = (self.entries.len() * 2 + 1).next_power_of_two().max(SLOTS_MIN);
        let old = std::mem::replace(&mut self.table, Table::new(size));
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
        if self.entries.pop_front().is_some() {
            self.front_position += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Verdict;
    use std::collections::HashMap;

    fn entry(window: &IdempotencyWindow, n: u64, timestamp_ms: u64) -> IdempotencyEntry {
        let id = TransactionId::parse(&format!("id-{n}")).unwrap();
        let record = Record {
            sequence: n,
            timestamp_ms,
            verdict: Verdict::Committed,
        };
        IdempotencyEntry {
            hash: window.hash(&id),
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
            window.insert(entry(&window, n, timestamp_ms), entries_max);
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
        assert!(window.table.slots.len() <= 4 * (2 * entries_max as usize).next_power_of_two());
    }
}
