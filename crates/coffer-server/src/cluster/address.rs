//! Who waits for an entry's reply: a leaf shared by the log's wire format
//! and the sagas, which keep their waiters in the shard's state.

use coffer_core::codec::{Reader, Writer};
use coffer_core::CoreError;

/// A node process (`incarnation`, new at every start, so a restarted node
/// never takes an old reply for its own) and its request number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyTo {
    pub incarnation: u64,
    pub request: u64,
}

impl ReplyTo {
    pub fn encode(&self, writer: &mut Writer) {
        writer.u64(self.incarnation);
        writer.u64(self.request);
    }

    pub fn decode(reader: &mut Reader) -> Result<ReplyTo, CoreError> {
        Ok(ReplyTo {
            incarnation: reader.u64()?,
            request: reader.u64()?,
        })
    }
}
