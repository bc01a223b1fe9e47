use std::path::PathBuf;
use thiserror::Error;

/// Errors of the journal layer. Every one of them names the file involved:
/// an operator reading the log must know where to look.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A bad record that is not a torn tail: refusing to start is the only
    /// safe answer, since skipping it would silently drop acknowledged data.
    #[error("journal corrupt in {path} at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("snapshot {path} is unusable: {reason}")]
    Snapshot { path: PathBuf, reason: String },
    /// Replaying a record gave a different outcome than the one journaled:
    /// the engine is not deterministic, or the binary changed its rules.
    #[error("replay diverged at sequence {sequence}: journal says {journaled}, engine now says {replayed}")]
    Diverged {
        sequence: u64,
        journaled: String,
        replayed: String,
    },
    /// A previous write or fsync failed. After a failed fsync the kernel may
    /// have dropped the dirty pages, so the only safe state is stopped.
    #[error("journal stopped after an earlier write failure: {0}")]
    Failed(String),
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> JournalError {
        let path = path.into();
        move |source| JournalError::Io { path, source }
    }
}
