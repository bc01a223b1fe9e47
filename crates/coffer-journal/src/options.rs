/// Whether an append waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// One `fdatasync` per group commit; nothing is acknowledged before it.
    Fsync,
    /// No sync at all. UNSAFE: a crash or power loss loses acknowledged
    /// writes. For benchmarks only; the server logs a warning when set.
    None,
}

/// What happens to segments that every kept snapshot already covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Delete them once the oldest kept snapshot covers them.
    AfterSnapshot,
    /// Keep every segment forever (full audit trail on disk).
    KeepAll,
}

#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// A segment is closed once it reaches this size (a record is never
    /// split, so one large record may exceed it).
    pub segment_bytes_max: u64,
    pub durability: Durability,
    /// Snapshots kept on disk; older ones are deleted.
    pub snapshots_kept: u32,
    pub retention: Retention,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes_max: 64 * 1024 * 1024,
            durability: Durability::Fsync,
            snapshots_kept: 2,
            retention: Retention::AfterSnapshot,
        }
    }
}
