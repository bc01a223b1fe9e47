//! The id window's entries in arrival order, stored in fixed-size chunks
//! that are shared, not copied, with a snapshot.
//!
//! Why chunks: a queue in one buffer doubles by copying everything it holds
//! (hundreds of MiB on the engine thread at millions of ids), and a snapshot
//! had to encode every entry before the engine could go on (hundreds of ms
//! every few million transactions). Here growing never moves a stored entry,
//! and a snapshot takes a `QueueView`: a reference to each chunk, so the
//! encoding runs on another thread while the engine keeps appending. Only
//! the last chunk, if the view shares it, is copied on the next append.

use std::collections::VecDeque;
use std::sync::Arc;

/// Entries per chunk: 4 MiB of 64-byte entries, so that the copy of a
/// shared last chunk stays short, and the chunk list stays short too
/// (about 300 chunks for the default 20 M ids).
pub(crate) const CHUNK_ENTRIES: usize = 1 << 16;

#[derive(Debug, Clone)]
pub(crate) struct EntryQueue<T> {
    /// Every chunk but the last holds exactly `CHUNK_ENTRIES` entries.
    chunks: VecDeque<Arc<Vec<T>>>,
    /// Entries of the first chunk already popped.
    head: usize,
    len: usize,
}

impl<T> Default for EntryQueue<T> {
    fn default() -> Self {
        EntryQueue {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
        }
    }
}

impl<T: Clone> EntryQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, offset: usize) -> Option<&T> {
        if offset >= self.len {
            return None;
        }
        let index = self.head + offset;
        Some(&self.chunks[index / CHUNK_ENTRIES][index % CHUNK_ENTRIES])
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn back(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|last| self.get(last))
    }

    pub fn push_back(&mut self, entry: T) {
        let needs_chunk = self.chunks.back().is_none_or(|chunk| chunk.len() == CHUNK_ENTRIES);
        if needs_chunk {
            self.chunks.push_back(Arc::new(Vec::with_capacity(CHUNK_ENTRIES)));
        }
        let last = self.chunks.back_mut().expect("a chunk with room");
        if Arc::get_mut(last).is_none() {
            // A snapshot still reads this chunk: continue in a copy of it.
            let mut copy = Vec::with_capacity(CHUNK_ENTRIES);
            copy.extend_from_slice(last);
            *last = Arc::new(copy);
        }
        let chunk = Arc::get_mut(last).expect("the chunk is not shared");
        assert!(chunk.len() < CHUNK_ENTRIES);
        chunk.push(entry);
        self.len += 1;
    }

    /// Removes the oldest entry; false when empty. A chunk is released once
    /// its last entry is popped (its memory goes when no view holds it).
    pub fn pop_front(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        self.head += 1;
        self.len -= 1;
        if self.head == CHUNK_ENTRIES || self.len == 0 {
            if self.head == CHUNK_ENTRIES {
                self.chunks.pop_front();
            } else {
                // Empty: start over in the chunk that remains.
                assert_eq!(self.chunks.len(), 1);
                self.chunks.clear();
            }
            self.head = 0;
        }
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        entries(&self.chunks, self.head, self.len)
    }

    /// The entries as they are now, for another thread; costs one reference
    /// count per chunk.
    pub fn view(&self) -> QueueView<T> {
        QueueView {
            chunks: self.chunks.iter().cloned().collect(),
            head: self.head,
            len: self.len,
        }
    }
}

/// A frozen copy of an `EntryQueue`'s contents, sharing its chunks.
#[derive(Debug, Clone)]
pub(crate) struct QueueView<T> {
    chunks: Vec<Arc<Vec<T>>>,
    head: usize,
    len: usize,
}

impl<T> QueueView<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        entries(&self.chunks, self.head, self.len)
    }
}

/// The `len` entries after the first `head` of `chunks`, in order.
fn entries<'a, T: 'a>(
    chunks: impl IntoIterator<Item = &'a Arc<Vec<T>>>,
    head: usize,
    len: usize,
) -> impl Iterator<Item = &'a T> {
    chunks.into_iter().flat_map(|chunk| chunk.iter()).skip(head).take(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Pushes and pops across many chunk boundaries, against a plain
    /// `VecDeque`, with views taken along the way that must not change.
    #[test]
    fn behaves_as_a_queue_and_views_stay_frozen() {
        let mut queue = EntryQueue::default();
        let mut model = VecDeque::new();
        let mut views = Vec::new();
        let mut next = 0u64;
        let mut random = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..40u64 {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let pushes = (random % (2 * CHUNK_ENTRIES as u64)) as usize;
            for _ in 0..pushes {
                queue.push_back(next);
                model.push_back(next);
                next += 1;
            }
            let pops = (random >> 20) as usize % (model.len() + 1);
            for _ in 0..pops {
                assert!(queue.pop_front());
                model.pop_front();
            }
            if step % 5 == 4 {
                // Empty it entirely now and then.
                while queue.pop_front() {}
                model.clear();
            }
            assert_eq!(queue.len(), model.len());
            assert_eq!(queue.front(), model.front());
            assert_eq!(queue.back(), model.back());
            for offset in [0, 1, CHUNK_ENTRIES - 1, CHUNK_ENTRIES, model.len() / 2, model.len()] {
                assert_eq!(queue.get(offset), model.get(offset), "step {step} offset {offset}");
            }
            assert!(queue.iter().eq(model.iter()));
            views.push((queue.view(), model.clone()));
        }
        for (view, contents) in &views {
            assert_eq!(view.len(), contents.len());
            assert!(view.iter().eq(contents.iter()), "a view never changes");
        }
        assert!(!EntryQueue::<u64>::default().pop_front());
    }
}
