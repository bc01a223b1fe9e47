//! JSON shapes of answers, as typed structs serialized directly. Never
//! through `serde_json::Value`: a Value cannot hold integers beyond 64 bits,
//! and balances of 18-decimal units pass 2^64 easily. serde_json's
//! serializer writes i128 exactly. Instants are RFC 3339 strings in UTC.

use crate::sequencer::{EffectView, Kind, Submitted};
use coffer_core::{AccountStatus, AccountView, HoldStatus, HoldView, Metadata, Record, Verdict};
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, UNIX_EPOCH};
use utoipa::ToSchema;

pub fn instant(timestamp_ms: u64) -> String {
    Rfc3339(timestamp_ms).to_string()
}

/// An instant in milliseconds, written as RFC 3339 straight into the
/// answer: no `String` per result (a batch answer holds thousands).
#[derive(Clone, Copy)]
pub struct Rfc3339(pub u64);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // RFC 3339 ends with the year 9999 (inputs are held to it; an
        // answer must never fail on one that is not).
        let milliseconds = self.0.min(coffer_core::limits::INSTANT_MS_MAX);
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(milliseconds)).fmt(formatter)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A commit's effects, serialized straight from the sequencer's answer
/// (no per-result vector).
pub struct EffectsAnswer<'a>(&'a [EffectView]);

impl Serialize for EffectsAnswer<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|effect| EffectAnswer {
            account: effect.account.as_str(),
            unit: effect.unit.as_str(),
            available: effect.available,
            frozen: effect.frozen,
            total: effect.available + effect.frozen,
            version: effect.version,
        }))
    }
}

/// What became of a transaction.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    /// Accepted into the commands topic, not applied yet.
    Pending,
    Committed,
    /// A ledger rule said no; `code` says which.
    Rejected,
    /// The id was used before for a different request (`id_reused`).
    Conflict,
    /// Part of a linked batch that reused another request's id.
    NotApplied,
}

/// A transaction's result.
// Serialized directly (no intermediate JSON tree): a batch answer holds
// thousands of them.
#[derive(Serialize, ToSchema)]
#[schema(as = TransactionResult)]
pub struct TransactionAnswer<'a> {
    /// The transaction id (its idempotency key).
    id: &'a str,
    status: TransactionStatus,
    /// The rejection code: insufficient_funds, account_not_found, ... (rejected only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "insufficient_funds")]
    code: Option<&'static str>,
    /// The operation a rejection names, from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    op_index: Option<u16>,
    /// The journal sequence number of the batch that applied it.
    seq: u64,
    /// Absent only from minimal answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    timestamp: Option<Rfc3339>,
    /// Balances after a first commit (absent from replays and minimal answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<EffectAnswer>>)]
    effects: Option<EffectsAnswer<'a>>,
    /// Batch items: whether this answers an earlier submission of the id.
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed: Option<bool>,
    /// The hold a hold operation created or changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldAnswer<'a>>,
}

/// An account's balances after a commit.
#[derive(Serialize, ToSchema)]
#[schema(as = Effect)]
pub struct EffectAnswer<'a> {
    account: &'a str,
    unit: &'a str,
    available: i128,
    frozen: i128,
    total: i128,
    version: u64,
}

impl<'a> TransactionAnswer<'a> {
    /// Id, outcome and sequence; everything else absent.
    fn bare(id: &'a str, (status, code, op_index): OutcomeFields, seq: u64) -> Self {
        TransactionAnswer {
            id,
            status,
            code,
            op_index,
            seq,
            timestamp: None,
            effects: None,
            replayed: None,
            hold: None,
        }
    }

    pub fn of_record(id: &'a str, record: &Record) -> Self {
        TransactionAnswer {
            timestamp: Some(Rfc3339(record.timestamp_ms)),
            ..TransactionAnswer::bare(id, verdict_fields(record), record.sequence)
        }
    }

    /// A result under `Prefer: return=minimal`: what a client needs to
    /// know, without balances or an instant (a fifth of the bytes of a full
    /// result, which the batch throughput is bound by). `marked` adds
    /// `replayed` (batch items; a single answer says it by its status).
    pub fn minimal(submitted: &'a Submitted, marked: bool) -> Self {
        TransactionAnswer {
            replayed: marked.then_some(submitted.kind == Kind::Replayed),
            ..TransactionAnswer::bare(
                submitted.id.as_str(),
                outcome_fields(submitted),
                submitted.record.sequence,
            )
        }
    }

    /// The result of a submission; `marked` adds `replayed` (batch items).
    pub fn of_submitted(submitted: &'a Submitted, marked: bool) -> Self {
        let mut body = TransactionAnswer::minimal(submitted, marked);
        body.timestamp = Some(Rfc3339(submitted.record.timestamp_ms));
        match submitted.kind {
            // A replay answers from the remembered outcome, which keeps no effects.
            Kind::New if submitted.record.verdict == Verdict::Committed => {
                body.effects = Some(EffectsAnswer(&submitted.effects));
            }
            _ => {}
        }
        body
    }
}

/// A transaction accepted but not applied yet.
#[derive(Serialize, ToSchema)]
#[schema(as = PendingTransaction)]
pub struct PendingAnswer<'a> {
    id: &'a str,
    /// Always `pending`.
    status: TransactionStatus,
    /// A cluster's transaction across shards: its steps so far, each a
    /// transaction of one shard (prepare holds the money, then commit or
    /// abort).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    steps: &'a [SagaStepAnswer],
}

impl<'a> PendingAnswer<'a> {
    pub fn new(id: &'a str) -> Self {
        PendingAnswer {
            id,
            status: TransactionStatus::Pending,
            steps: &[],
        }
    }

    pub fn with_steps(self, steps: &'a [SagaStepAnswer]) -> Self {
        PendingAnswer { steps, ..self }
    }
}

/// One step of a cross-shard transaction.
pub type SagaStepAnswer = crate::queries::StepView;

/// A transaction looked up by id (or accepted asynchronously): pending, a
/// result from the engine's memory, or one from the history store.
#[derive(Serialize)]
#[serde(untagged)]
pub enum LookupAnswer<'a> {
    Pending(PendingAnswer<'a>),
    Recent(TransactionAnswer<'a>),
    Stored(StoredTransactionAnswer<'a>),
}

// anyOf, not the oneOf an untagged derive makes: a stored result is a
// result with more fields, so both match it.
impl utoipa::PartialSchema for LookupAnswer<'_> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::openapi::any_of([
            PendingAnswer::name(),
            TransactionAnswer::name(),
            StoredTransactionAnswer::name(),
        ])
    }
}

impl ToSchema for LookupAnswer<'_> {
    fn name() -> std::borrow::Cow<'static, str> {
        "TransactionLookup".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        super::openapi::collect::<PendingAnswer>(schemas);
        super::openapi::collect::<TransactionAnswer>(schemas);
        super::openapi::collect::<StoredTransactionAnswer>(schemas);
    }
}

type OutcomeFields = (TransactionStatus, Option<&'static str>, Option<u16>);

/// `status`, `code` and `op_index` of a recorded outcome.
fn verdict_fields(record: &Record) -> OutcomeFields {
    match record.verdict {
        Verdict::Committed => (TransactionStatus::Committed, None, None),
        Verdict::Rejected(rejection) => (
            TransactionStatus::Rejected,
            Some(rejection.code.as_str()),
            Some(rejection.op_index),
        ),
    }
}

/// The same for a submission, which may also have reused an id.
fn outcome_fields(submitted: &Submitted) -> OutcomeFields {
    match submitted.kind {
        Kind::IdReused => (TransactionStatus::Conflict, Some("id_reused"), None),
        Kind::NotApplied => (TransactionStatus::NotApplied, Some("linked_event_failed"), None),
        Kind::New | Kind::Replayed => verdict_fields(&submitted.record),
    }
}

/// For error details, whose results carry no amounts (rejections keep no
/// effects), so they fit a JSON tree.
pub fn record_value(id: &str, record: &Record) -> Value {
    serde_json::to_value(TransactionAnswer::of_record(id, record)).unwrap_or(Value::Null)
}

/// An account and its balances.
#[derive(Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountAnswer<'a> {
    id: &'a str,
    #[schema(example = "USD/2")]
    unit: &'a str,
    available: i128,
    frozen: i128,
    total: i128,
    min_available: Option<i128>,
    max_total: Option<i128>,
    status: AccountStatus,
    #[schema(value_type = Option<Metadata>)]
    metadata: Option<&'a Metadata>,
    /// Increases with every change of the account.
    version: u64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl<'a> From<&'a AccountView> for AccountAnswer<'a> {
    fn from(view: &'a AccountView) -> Self {
        AccountAnswer {
            id: view.id.as_str(),
            unit: view.unit.as_str(),
            available: view.available,
            frozen: view.frozen,
            total: view.total,
            min_available: view.min_available,
            max_total: view.max_total,
            status: view.status,
            metadata: view.metadata.as_ref(),
            version: view.version,
            created_at: instant(view.created_at_ms),
            updated_at: instant(view.updated_at_ms),
        }
    }
}

/// One page of a list: the items and the cursor of the next page, if any.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A hold: money frozen on an account until captured, released or expired.
#[derive(Serialize, ToSchema)]
#[schema(as = Hold)]
pub struct HoldAnswer<'a> {
    id: &'a str,
    account: &'a str,
    unit: &'a str,
    to: Option<&'a str>,
    amount: i128,
    captured: i128,
    remaining: i128,
    status: HoldStatus,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
}

impl<'a> From<&'a HoldView> for HoldAnswer<'a> {
    fn from(view: &'a HoldView) -> Self {
        HoldAnswer {
            id: view.id.as_str(),
            account: view.account.as_str(),
            unit: view.unit.as_str(),
            to: view.to.as_ref().map(|to| to.as_str()),
            amount: view.amount,
            captured: view.captured,
            remaining: view.remaining,
            status: view.status,
            expires_at: view.expires_at_ms.map(instant),
            created_at: instant(view.created_at_ms),
            finished_at: view.finished_at_ms.map(instant),
        }
    }
}

/// A transaction answered from the history store (beyond the engine's
/// window): the stored result, with the operations and effects as stored.
#[derive(Serialize, ToSchema)]
#[schema(as = StoredTransactionResult)]
pub struct StoredTransactionAnswer<'a> {
    #[serde(flatten)]
    result: TransactionAnswer<'a>,
    /// The operations as submitted.
    #[schema(value_type = Option<Vec<coffer_core::openapi::OperationSchema>>)]
    ops: Option<&'a serde_json::value::RawValue>,
    #[schema(value_type = Option<Metadata>)]
    metadata: Option<&'a serde_json::value::RawValue>,
    /// Balances after the commit, as stored.
    #[serde(rename = "effects")]
    #[schema(value_type = Option<Vec<EffectAnswer>>)]
    stored_effects: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct StoredBody<'a> {
    #[serde(borrow)]
    ops: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    metadata: Option<&'a serde_json::value::RawValue>,
}

impl<'a> StoredTransactionAnswer<'a> {
    pub fn new(row: &'a coffer_history::TransactionRow, record: &Record) -> Self {
        let body: Option<StoredBody> = serde_json::from_str(&row.body).ok();
        StoredTransactionAnswer {
            result: TransactionAnswer::of_record(&row.id, record),
            ops: body.as_ref().map(|body| body.ops),
            metadata: body.and_then(|body| body.metadata),
            stored_effects: serde_json::from_str(&row.effects).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_serialize_as_rfc3339_with_milliseconds() {
        let at_ms = 1_764_201_600_123; // 2025-11-27T00:00:00.123Z
        assert_eq!(instant(at_ms), "2025-11-27T00:00:00.123Z");
        assert_eq!(
            serde_json::to_string(&Rfc3339(at_ms)).unwrap(),
            "\"2025-11-27T00:00:00.123Z\""
        );
        assert_eq!(
            serde_json::to_string(&Rfc3339(0)).unwrap(),
            "\"1970-01-01T00:00:00.000Z\""
        );
        assert_eq!(
            instant(u64::MAX),
            "9999-12-31T23:59:59.999Z",
            "clamped, never a failure"
        );
    }
}
