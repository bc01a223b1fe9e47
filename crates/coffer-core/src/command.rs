//! A transaction as JSON, `{"id"?, "ops": [...], "metadata"?}`: the body of
//! `POST /v1/transactions` and the payload of a Kafka command. Reading it
//! validates everything a `Transaction` validates.

use crate::error::CoreError;
use crate::identifier::TransactionId;
use crate::metadata::Metadata;
use crate::operation::Operation;
use crate::transaction::Transaction;
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
const _: () = assert!(
    crate::limits::OPS_PER_TRANSACTION_MAX == 128,
    "max_items of Command::ops"
);

/// A transaction: its operations apply all or none, in order. Also the
/// payload of a Kafka command.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(example = json!({
        "id": "tx-2f6c1e",
        "ops": [
            {"type": "transfer", "from": "user:42", "to": "user:7", "amount": 2_500},
            {"type": "transfer", "from": "user:42", "to": "fees", "amount": 25}
        ],
        "metadata": {"order": "A-17"}
    }))
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The idempotency key (or the `Idempotency-Key` header); made up by the server when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<TransactionId>,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 128, value_type = Vec<crate::openapi::OperationSchema>))]
    pub ops: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

impl Command {
    /// The JSON form of `transaction`.
    pub fn of(transaction: &Transaction) -> Command {
        Command {
            id: Some(transaction.id().clone()),
            ops: transaction.ops().to_vec(),
            metadata: transaction.metadata().cloned(),
        }
    }

    /// Reads a command from untrusted bytes; an id-less one gets
    /// `default_id` (called only then). `Err` says why it is not one.
    pub fn read(bytes: &[u8], default_id: impl FnOnce() -> String) -> Result<Transaction, String> {
        let command: Command =
            serde_json::from_slice(bytes).map_err(|error| format!("invalid command JSON: {error}"))?;
        let id = match command.id {
            Some(id) => id,
            None => TransactionId::parse(&default_id()).map_err(|error| error.to_string())?,
        };
        Transaction::new(id, command.ops, command.metadata).map_err(|error: CoreError| error.to_string())
    }
}
