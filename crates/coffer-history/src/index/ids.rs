//! Transaction ids, found by hash: sorted runs of (xxh3-64 of the id,
//! transaction number), one written per index write and merged four at a
//! time once four of a size sit at the tail (a base-4 counter: about
//! 3 log4(n / batch) runs, each pair rewritten about log4(n / batch) times,
//! always sequentially).
//! Random ids therefore cost the same as ordered ones: no page is updated
//! in place. A lookup reads one 4 KiB block per run, found through fences
//! (every block's first hash) kept in memory, and only when the filter over
//! all ids (`IdFilter`, in memory) says the index may hold the hash.

use super::files::{io_error, le_u64, read_at, RunInfo};
use crate::error::HistoryError;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const PAIR_BYTES: usize = 16;
/// Pairs per block: one positioned read of 4 KiB per run and lookup.
const BLOCK_PAIRS: usize = 256;
const _: () = assert!(PAIR_BYTES * BLOCK_PAIRS == 4_096);

/// The filter over every id of the index: a blocked Bloom filter (one
/// 64-byte line per hash, three bits set in it) of 8 bits per id, grown by
/// doubling. A lookup of an id the index does not hold (a new id, the usual
/// lookup once the engine's window has forgotten ids) is answered from it
/// alone about 96 % of the time, without touching a run.
const FILTER_BITS_PER_ID: u64 = 8;
const FILTER_PROBES: usize = 3;
const LINE_BITS: u64 = 512;
/// The smallest filter, in ids (128 KiB).
const FILTER_IDS_MIN: u64 = 1 << 17;
const _: () = assert!(LINE_BITS == 64 * 8 && 9 * FILTER_PROBES <= 32 && FILTER_IDS_MIN.is_power_of_two());

#[derive(Debug)]
pub struct IdFilter {
    /// Lines of eight words, written by the one writer (plain relaxed
    /// stores, no read-modify-write) before it publishes the view that
    /// holds the ids: a reader under that view sees every bit of them.
    words: Vec<AtomicU64>,
    lines_mask: u64,
    capacity_ids: u64,
}

impl IdFilter {
    /// An empty filter for at least `ids` ids.
    pub fn with_capacity(ids: u64) -> Self {
        let capacity_ids = ids.max(FILTER_IDS_MIN).next_power_of_two();
        let lines = capacity_ids * FILTER_BITS_PER_ID / LINE_BITS;
        IdFilter {
            words: (0..lines * 8).map(|_| AtomicU64::new(0)).collect(),
            lines_mask: lines - 1,
            capacity_ids,
        }
    }

    pub fn capacity_ids(&self) -> u64 {
        self.capacity_ids
    }

    /// The first word of the hash's line (chosen by its high bits) and its
    /// three bits in the line (from its low bits).
    fn place(&self, hash: u64) -> (usize, [u64; FILTER_PROBES]) {
        let line = ((hash >> 32) & self.lines_mask) as usize;
        (line * 8, std::array::from_fn(|probe| (hash >> (9 * probe)) & 511))
    }

    /// Only the writer inserts.
    pub fn insert(&self, hash: u64) {
        let (line, bits) = self.place(hash);
        for bit in bits {
            let word = &self.words[line + (bit / 64) as usize];
            word.store(word.load(Ordering::Relaxed) | 1 << (bit % 64), Ordering::Relaxed);
        }
    }

    /// False only if no id with this hash was inserted.
    pub fn may_hold(&self, hash: u64) -> bool {
        let (line, bits) = self.place(hash);
        bits.iter()
            .all(|bit| self.words[line + (bit / 64) as usize].load(Ordering::Relaxed) & 1 << (bit % 64) != 0)
    }
}

pub fn run_path(directory: &Path, generation: u64) -> PathBuf {
    directory.join(format!("ids-{generation:016}.run"))
}

/// Whether a file name is a run's, and its generation.
pub fn run_generation(name: &str) -> Option<u64> {
    name.strip_prefix("ids-")?.strip_suffix(".run")?.parse().ok()
}

#[derive(Debug)]
pub struct Run {
    pub info: RunInfo,
    file: File,
    /// The first hash of every block.
    fences: Vec<u64>,
}

impl Run {
    /// Writes `pairs` (sorted) as run `generation` and makes it durable.
    pub fn write(directory: &Path, generation: u64, pairs: &[(u64, u64)]) -> Result<Run, HistoryError> {
        debug_assert!(pairs.windows(2).all(|pair| pair[0] <= pair[1]));
        let path = run_path(directory, generation);
        let mut out = RunWriter::create(&path)?;
        for &pair in pairs {
            out.push(pair)?;
        }
        out.finish(generation)
    }

    /// Opens run `info`, calling `each` with every hash in it.
    pub fn open(directory: &Path, info: RunInfo, mut each: impl FnMut(u64)) -> Result<Run, HistoryError> {
        let path = run_path(directory, info.generation);
        let file = File::open(&path).map_err(|error| io_error(&path, error))?;
        let length = file.metadata().map_err(|error| io_error(&path, error))?.len();
        if length != info.count * PAIR_BYTES as u64 {
            return Err(HistoryError::Invalid(format!(
                "history index {}: {length} bytes for {} ids; delete the history directory to rebuild it",
                path.display(),
                info.count
            )));
        }
        let mut fences = Vec::with_capacity((info.count as usize).div_ceil(BLOCK_PAIRS));
        let mut pairs = PairReader::new(&file);
        for index in 0..info.count {
            let (hash, _) = pairs.next(&path)?;
            if index % BLOCK_PAIRS as u64 == 0 {
                fences.push(hash);
            }
            each(hash);
        }
        Ok(Run { info, file, fences })
    }

    /// Calls `each` with every hash in the run, in order (the writer's,
    /// as merges do).
    pub fn hashes(&self, directory: &Path, mut each: impl FnMut(u64)) -> Result<(), HistoryError> {
        let path = run_path(directory, self.info.generation);
        let mut pairs = PairReader::new(&self.file);
        for _ in 0..self.info.count {
            each(pairs.next(&path)?.0);
        }
        Ok(())
    }

    /// The transaction numbers filed under `hash` in this run.
    pub fn find(&self, hash: u64, found: &mut Vec<u64>) -> Result<(), HistoryError> {
        let mut block = self.fences.partition_point(|fence| *fence < hash).saturating_sub(1);
        while block < self.fences.len() && self.fences[block] <= hash {
            let first = (block * BLOCK_PAIRS) as u64;
            let pairs = (self.info.count - first).min(BLOCK_PAIRS as u64) as usize;
            let bytes = read_at(&self.file, first * PAIR_BYTES as u64, pairs * PAIR_BYTES)?;
            for pair in bytes.chunks_exact(PAIR_BYTES) {
                let stored = le_u64(pair, 0);
                if stored == hash {
                    found.push(le_u64(pair, 8));
                } else if stored > hash {
                    return Ok(());
                }
            }
            block += 1;
        }
        Ok(())
    }

    /// Merges `runs` (oldest first) into run `generation`, streaming all
    /// of them; equal pairs keep the older run's first.
    pub fn merge(directory: &Path, generation: u64, runs: &[Arc<Run>]) -> Result<Run, HistoryError> {
        let path = run_path(directory, generation);
        let mut out = RunWriter::create(&path)?;
        let paths: Vec<PathBuf> = runs
            .iter()
            .map(|run| run_path(directory, run.info.generation))
            .collect();
        let mut inputs: Vec<PairReader> = runs.iter().map(|run| PairReader::new(&run.file)).collect();
        let mut left: Vec<u64> = runs.iter().map(|run| run.info.count).collect();
        let mut heads = Vec::with_capacity(runs.len());
        for (index, input) in inputs.iter_mut().enumerate() {
            heads.push(if left[index] > 0 {
                Some(input.next(&paths[index])?)
            } else {
                None
            });
        }
        while let Some(index) = (0..heads.len())
            .filter(|index| heads[*index].is_some())
            .min_by_key(|index| heads[*index])
        {
            out.push(heads[index].expect("a head"))?;
            left[index] -= 1;
            heads[index] = if left[index] > 0 {
                Some(inputs[index].next(&paths[index])?)
            } else {
                None
            };
        }
        out.finish(generation)
    }
}

struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
    count: u64,
    fences: Vec<u64>,
}

impl RunWriter {
    fn create(path: &Path) -> Result<Self, HistoryError> {
        // Read too: the finished run is searched through this handle.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|error| io_error(path, error))?;
        Ok(RunWriter {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            count: 0,
            fences: Vec::new(),
        })
    }

    fn push(&mut self, (hash, number): (u64, u64)) -> Result<(), HistoryError> {
        if self.count.is_multiple_of(BLOCK_PAIRS as u64) {
            self.fences.push(hash);
        }
        self.count += 1;
        let mut pair = [0u8; PAIR_BYTES];
        pair[..8].copy_from_slice(&hash.to_le_bytes());
        pair[8..].copy_from_slice(&number.to_le_bytes());
        self.out.write_all(&pair).map_err(|error| io_error(&self.path, error))
    }

    fn finish(self, generation: u64) -> Result<Run, HistoryError> {
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|error| io_error(&path, error.into_error()))?;
        file.sync_all().map_err(|error| io_error(&path, error))?;
        Ok(Run {
            info: RunInfo {
                generation,
                count: self.count,
            },
            file,
            fences: self.fences,
        })
    }
}

struct PairReader<'a> {
    input: BufReader<&'a File>,
}

impl<'a> PairReader<'a> {
    fn new(file: &'a File) -> Self {
        // A shared `&File` reads from the handle's offset: rewind it first
        // (runs are read whole only at open and merge, by the one writer).
        use std::io::Seek;
        let mut handle = file;
        let _ = handle.seek(std::io::SeekFrom::Start(0));
        PairReader {
            input: BufReader::with_capacity(1 << 20, file),
        }
    }

    fn next(&mut self, path: &Path) -> Result<(u64, u64), HistoryError> {
        let mut pair = [0u8; PAIR_BYTES];
        self.input
            .read_exact(&mut pair)
            .map_err(|error| io_error(path, error))?;
        Ok((le_u64(&pair, 0), le_u64(&pair, 8)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_runs_find_every_id_and_collisions_find_all() {
        let directory = tempfile::tempdir().unwrap();
        let mut older: Vec<(u64, u64)> = (0..1_000u64)
            .map(|n| (n.wrapping_mul(0x9E37_79B9_7F4A_7C15), n))
            .collect();
        older.sort_unstable();
        let mut newer: Vec<(u64, u64)> = (1_000..1_700u64)
            .map(|n| (n.wrapping_mul(0x9E37_79B9_7F4A_7C15), n))
            .collect();
        newer.push((older[300].0, 5_000));
        newer.sort_unstable();
        let a = Arc::new(Run::write(directory.path(), 1, &older).unwrap());
        let b = Arc::new(Run::write(directory.path(), 2, &newer).unwrap());
        let empty = Arc::new(Run::write(directory.path(), 3, &[]).unwrap());
        let single = Arc::new(Run::write(directory.path(), 4, &[(7, 9_999)]).unwrap());
        let merged = Run::merge(directory.path(), 5, &[a, empty, b, single]).unwrap();
        assert_eq!(merged.info.count, 1_702);
        for &(hash, number) in older.iter().chain(&newer) {
            let mut found = Vec::new();
            merged.find(hash, &mut found).unwrap();
            assert!(found.contains(&number), "{hash:x} → {number}");
        }
        let mut found = Vec::new();
        merged.find(older[300].0, &mut found).unwrap();
        assert_eq!(found.len(), 2);
        let mut found = Vec::new();
        merged.find(12_345, &mut found).unwrap();
        assert!(found.is_empty());
    }

    /// The filter never hides an id, and keeps most others from the runs
    /// (3 probes in one line, 8 bits an id: about 4 % pass when full).
    #[test]
    fn the_filter_passes_every_member_and_few_others() {
        let filter = IdFilter::with_capacity(200_000);
        assert_eq!(filter.capacity_ids(), 262_144);
        let hash = |n: u64| xxhash_rust::xxh3::xxh3_64(&n.to_le_bytes());
        (0..262_144).map(hash).for_each(|member| filter.insert(member));
        assert!((0..262_144).map(hash).all(|member| filter.may_hold(member)));
        let passed = (1_000_000..1_100_000).filter(|n| filter.may_hold(hash(*n))).count();
        assert!(passed < 6_000, "{passed} of 100,000 others pass");
    }
}
