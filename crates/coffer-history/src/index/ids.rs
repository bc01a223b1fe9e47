//! Transaction ids, found by hash: sorted runs of (xxh3-64 of the id,
//! transaction number), one written per index write and merged four at a
//! time once four of a size sit at the tail (a base-4 counter: about
//! 3 log4(n / batch) runs, each pair rewritten about log4(n / batch) times,
//! always sequentially).
//! Random ids therefore cost the same as ordered ones: no page is updated
//! in place. A lookup reads one 4 KiB block per run, found through fences
//! (every block's first hash) kept in memory, and only when the block's
//! filter, also in memory, says the hash may be in it: a new id (the usual
//! lookup, once the engine's window has forgotten ids) reads almost nothing.

use super::files::{io_error, le_u64, read_at, RunInfo};
use crate::error::HistoryError;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PAIR_BYTES: usize = 16;
/// Pairs per block: one positioned read of 4 KiB per run and lookup.
const BLOCK_PAIRS: usize = 256;
const _: () = assert!(PAIR_BYTES * BLOCK_PAIRS == 4_096);
/// A block's filter: 8 bits per pair, 3 set per hash. A full block answers
/// "maybe" for about 3 % of the hashes it does not hold, so a lookup of a
/// new id reads about one block in thirty runs. One byte of memory per id.
const FILTER_BYTES: usize = BLOCK_PAIRS;
const FILTER_BITS: u64 = 8 * FILTER_BYTES as u64;
const FILTER_PROBES: u32 = 3;
/// Each probe takes the next `log2(FILTER_BITS)` low bits of the hash.
const PROBE_SHIFT: u32 = FILTER_BITS.trailing_zeros();
const _: () = assert!(FILTER_BITS.is_power_of_two() && PROBE_SHIFT * FILTER_PROBES <= 64);

/// The fences and filters of a run's blocks, built as its pairs stream by
/// in order (written, merged, or read at open).
#[derive(Debug, Default)]
struct Blocks {
    /// The first hash of every block.
    fences: Vec<u64>,
    filters: Vec<u8>,
}

impl Blocks {
    /// The filter bits of `hash`: its low bits, which do not decide its
    /// block (its high bits do, as the run is sorted).
    fn bits(hash: u64) -> impl Iterator<Item = usize> {
        (0..FILTER_PROBES).map(move |probe| ((hash >> (PROBE_SHIFT * probe)) & (FILTER_BITS - 1)) as usize)
    }

    /// Adds the run's pair number `index`, with `hash`.
    fn add(&mut self, index: u64, hash: u64) {
        if index.is_multiple_of(BLOCK_PAIRS as u64) {
            self.fences.push(hash);
            self.filters.resize(self.filters.len() + FILTER_BYTES, 0);
        }
        let filter = self.filters.len() - FILTER_BYTES;
        for bit in Self::bits(hash) {
            self.filters[filter + bit / 8] |= 1 << (bit % 8);
        }
    }

    fn may_hold(&self, block: usize, hash: u64) -> bool {
        let filter = &self.filters[block * FILTER_BYTES..(block + 1) * FILTER_BYTES];
        Self::bits(hash).all(|bit| filter[bit / 8] & (1 << (bit % 8)) != 0)
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
    blocks: Blocks,
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

    pub fn open(directory: &Path, info: RunInfo) -> Result<Run, HistoryError> {
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
        let mut blocks = Blocks::default();
        let mut pairs = PairReader::new(&file);
        for index in 0..info.count {
            let (hash, _) = pairs.next(&path)?;
            blocks.add(index, hash);
        }
        Ok(Run { info, file, blocks })
    }

    /// The transaction numbers filed under `hash` in this run.
    pub fn find(&self, hash: u64, found: &mut Vec<u64>) -> Result<(), HistoryError> {
        let fences = &self.blocks.fences;
        let mut block = fences.partition_point(|fence| *fence < hash).saturating_sub(1);
        while block < fences.len() && fences[block] <= hash {
            if !self.blocks.may_hold(block, hash) {
                block += 1;
                continue;
            }
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
    blocks: Blocks,
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
            blocks: Blocks::default(),
        })
    }

    fn push(&mut self, (hash, number): (u64, u64)) -> Result<(), HistoryError> {
        self.blocks.add(self.count, hash);
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
            blocks: self.blocks,
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

    /// The filters never hide a pair, and keep most hashes a run does not
    /// hold from a read (3 probes, 8 bits a pair: about 3 % pass).
    #[test]
    fn block_filters_pass_every_member_and_few_others() {
        let mut blocks = Blocks::default();
        let hash = |n: u64| xxhash_rust::xxh3::xxh3_64(&n.to_le_bytes());
        let mut members: Vec<u64> = (0..100_000).map(hash).collect();
        members.sort_unstable();
        for (index, member) in members.iter().enumerate() {
            blocks.add(index as u64, *member);
        }
        let block_of = |hash: u64| blocks.fences.partition_point(|fence| *fence <= hash).saturating_sub(1);
        assert!(members.iter().all(|member| blocks.may_hold(block_of(*member), *member)));
        let passed = (100_000..200_000)
            .map(hash)
            .filter(|other| blocks.may_hold(block_of(*other), *other))
            .count();
        assert!(passed < 5_000, "{passed} of 100,000 others pass");
    }
}
