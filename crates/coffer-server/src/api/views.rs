//! JSON shapes of answers, as typed structs serialized directly. Never
//! through `serde_json::Value`: a Value cannot hold integers beyond 64 bits,
//! and balances of 18-decimal units pass 2^64 easily. serde_json's
//! serializer writes i128 exactly. Instants are RFC 3339 strings in UTC.

use crate::sequencer::{EffectView, Kind, Submitted};
use coffer_core::{AccountStatus, AccountView, HoldStatus, HoldView, Metadata, Record, Verdict};
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, UNIX_EPOCH};

pub fn instant(timestamp_ms: u64) -> String {
    Rfc3339(timestamp_ms).to_string()
}

/// An instant in milliseconds, written as RFC 3339 straight into the
/// answer: no `String` per result (a batch answer holds thousands).
#[derive(Clone, Copy)]
pub struct Rfc3339(pub u64);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.0)).fmt(formatter)
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

/// A transaction's result, serialized directly (no intermediate JSON
/// tree): a batch answer holds thousands of them.
#[derive(Serialize)]
pub struct TransactionAnswer<'a> {
    id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    op_index: Option<u16>,
    seq: u64,
    /// Absent only from minimal answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    effects: Option<EffectsAnswer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed: Option<bool>,
    /// The hold a hold operation created or changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldAnswer<'a>>,
}

#[derive(Serialize)]
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

type OutcomeFields = (&'static str, Option<&'static str>, Option<u16>);

/// `status`, `code` and `op_index` of a recorded outcome.
fn verdict_fields(record: &Record) -> OutcomeFields {
    match record.verdict {
        Verdict::Committed => ("committed", None, None),
        Verdict::Rejected(rejection) => ("rejected", Some(rejection.code.as_str()), Some(rejection.op_index)),
    }
}

/// The same for a submission, which may also have reused an id.
fn outcome_fields(submitted: &Submitted) -> OutcomeFields {
    match submitted.kind {
        Kind::IdReused => ("conflict", Some("id_reused"), None),
        Kind::NotApplied => ("not_applied", Some("linked_event_failed"), None),
        Kind::New | Kind::Replayed => verdict_fields(&submitted.record),
    }
}

/// For error details, whose results carry no amounts (rejections keep no
/// effects), so they fit a JSON tree.
pub fn record_value(id: &str, record: &Record) -> Value {
    serde_json::to_value(TransactionAnswer::of_record(id, record)).unwrap_or(Value::Null)
}

#[derive(Serialize)]
pub struct AccountAnswer<'a> {
    id: &'a str,
    unit: &'a str,
    available: i128,
    frozen: i128,
    total: i128,
    min_available: Option<i128>,
    max_total: Option<i128>,
    status: AccountStatus,
    metadata: Option<&'a Metadata>,
    version: u64,
    created_at: String,
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
#[derive(Serialize)]
pub struct Page<T, C> {
    pub data: Vec<T>,
    pub next_cursor: Option<C>,
}

#[derive(Serialize)]
pub struct HoldAnswer<'a> {
    id: &'a str,
    account: &'a str,
    unit: &'a str,
    to: Option<&'a str>,
    amount: i128,
    captured: i128,
    remaining: i128,
    status: HoldStatus,
    expires_at: Option<String>,
    created_at: String,
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
#[derive(Serialize)]
pub struct StoredTransactionAnswer<'a> {
    #[serde(flatten)]
    result: TransactionAnswer<'a>,
    ops: Option<&'a serde_json::value::RawValue>,
    metadata: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "effects")]
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
    }
}
