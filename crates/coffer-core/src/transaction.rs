//! A transaction: operations applied atomically under one idempotency key,
//! and its binary form in the journal.

use crate::codec::{decode_operation, encode_transaction_body, Reader, Writer};
use crate::error::CoreError;
use crate::identifier::TransactionId;
use crate::limits::OPS_PER_TRANSACTION_MAX;
use crate::metadata::Metadata;
use crate::operation::Operation;

/// A list of operations applied atomically under one idempotency key.
/// Construction validates everything that does not depend on engine state,
/// so the engine only ever sees well-formed transactions, and computes the
/// payload's fingerprint: construction runs on the many threads that parse
/// requests, the engine on one, so hashing there keeps the engine thread
/// for the ledger rules (it was about a sixth of a transfer's apply time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    id: TransactionId,
    ops: Vec<Operation>,
    metadata: Option<Metadata>,
    /// `fingerprint` of the above; the fields are private and never
    /// change, so it cannot go stale.
    fingerprint: u128,
    /// Linked to the next transaction of its batch: a chain of linked
    /// transactions (ending with one that is not) applies all or none.
    /// Not part of the payload: each transaction keeps its own fingerprint.
    linked: bool,
}

impl Transaction {
    pub fn new(id: TransactionId, ops: Vec<Operation>, metadata: Option<Metadata>) -> Result<Self, CoreError> {
        if ops.is_empty() || ops.len() > OPS_PER_TRANSACTION_MAX {
            return Err(CoreError::invalid(
                "ops",
                format!(
                    "a transaction has 1 to {OPS_PER_TRANSACTION_MAX} operations, got {}",
                    ops.len()
                ),
            ));
        }
        for (index, op) in ops.iter().enumerate() {
            op.validate().map_err(|error| match error {
                CoreError::Invalid { field, reason } => CoreError::Invalid {
                    field,
                    reason: format!("{reason} (ops[{index}])"),
                },
                CoreError::Unprocessable { reason } => CoreError::Unprocessable {
                    reason: format!("{reason} (ops[{index}])"),
                },
                other => other,
            })?;
        }
        let mut transaction = Transaction {
            id,
            ops,
            metadata,
            fingerprint: 0,
            linked: false,
        };
        transaction.fingerprint = fingerprint(&transaction.ops, transaction.metadata.as_ref());
        Ok(transaction)
    }

    /// What identifies the payload for idempotency: equal fingerprints
    /// mean a retry, different ones a reused id.
    pub fn fingerprint(&self) -> u128 {
        self.fingerprint
    }

    pub fn id(&self) -> &TransactionId {
        &self.id
    }

    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_ref()
    }

    /// The same transaction, linked (or not) to the next one of its batch.
    pub fn linked_to_next(mut self, linked: bool) -> Self {
        self.linked = linked;
        self
    }

    pub fn is_linked_to_next(&self) -> bool {
        self.linked
    }

    /// The transactions as one linked chain: each linked to the next, the
    /// last to none.
    pub fn chain(transactions: Vec<Transaction>) -> Vec<Transaction> {
        let last = transactions.len().saturating_sub(1);
        transactions
            .into_iter()
            .enumerate()
            .map(|(index, transaction)| transaction.linked_to_next(index < last))
            .collect()
    }
}

impl Transaction {
    /// The journal form: the id, then the body the fingerprint hashes.
    pub fn encode(&self, writer: &mut Writer) {
        writer.str(self.id.as_str());
        encode_transaction_body(&self.ops, self.metadata.as_ref(), writer);
    }

    /// Reads what `encode` wrote, validating it as `new` does.
    pub fn decode(reader: &mut Reader) -> Result<Transaction, CoreError> {
        let start = reader.position();
        let id = reader.transaction_id()?;
        let count = reader.u64()?;
        if count == 0 || count > OPS_PER_TRANSACTION_MAX as u64 {
            return Err(reader.error(format!("operation count {count} out of range")));
        }
        let mut ops = Vec::with_capacity(count as usize);
        for _ in 0..count {
            ops.push(decode_operation(reader)?);
        }
        let metadata = reader.metadata()?;
        Transaction::new(id, ops, metadata).map_err(|error| CoreError::Decode {
            offset: start,
            reason: error.to_string(),
        })
    }
}

/// The xxh3-128 of the transaction's body encoding (its id excluded): what
/// `Transaction::fingerprint` returns. Stable across versions (snapshots
/// and history stores keep it beyond the window; a test pins it). The
/// buffer is per thread: this runs for every request that is parsed.
fn fingerprint(ops: &[Operation], metadata: Option<&Metadata>) -> u128 {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        encode_transaction_body(ops, metadata, &mut Writer::new(&mut buffer));
        xxhash_rust::xxh3::xxh3_128(&buffer)
    })
}
