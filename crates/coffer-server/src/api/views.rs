//! JSON shapes of answers. Amounts are JSON numbers (serde_json writes
//! i128 exactly); instants are RFC 3339 strings in UTC.

use crate::sequencer::{Kind, Submitted};
use coffer_core::{AccountView, HoldView, Record, Verdict};
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

pub fn instant(timestamp_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(timestamp_ms)).to_string()
}

pub fn record(id: &str, record: &Record) -> Value {
    let mut body = json!({
        "id": id,
        "seq": record.sequence,
        "timestamp": instant(record.timestamp_ms),
    });
    match record.verdict {
        Verdict::Committed => body["status"] = json!("committed"),
        Verdict::Rejected(rejection) => {
            body["status"] = json!("rejected");
            body["code"] = json!(rejection.code.as_str());
            body["op_index"] = json!(rejection.op_index);
        }
    }
    body
}

pub fn transaction_result(submitted: &Submitted) -> Value {
    let mut body = record(submitted.id.as_str(), &submitted.record);
    // A replay answers from the remembered outcome, which keeps no effects.
    if submitted.kind == Kind::New && submitted.record.verdict == Verdict::Committed {
        let effects: Vec<Value> = submitted
            .effects
            .iter()
            .map(|effect| {
                json!({
                    "account": effect.account.as_str(),
                    "unit": effect.unit.as_str(),
                    "available": effect.available,
                    "frozen": effect.frozen,
                    "total": effect.available + effect.frozen,
                    "version": effect.version,
                })
            })
            .collect();
        body["effects"] = json!(effects);
    }
    body
}

pub fn account(view: &AccountView) -> Value {
    json!({
        "id": view.id.as_str(),
        "unit": view.unit.as_str(),
        "available": view.available,
        "frozen": view.frozen,
        "total": view.total,
        "min_available": view.min_available,
        "max_total": view.max_total,
        "status": view.status,
        "metadata": view.metadata,
        "version": view.version,
        "created_at": instant(view.created_at_ms),
        "updated_at": instant(view.updated_at_ms),
    })
}

pub fn hold(view: &HoldView) -> Value {
    json!({
        "id": view.id.as_str(),
        "account": view.account.as_str(),
        "unit": view.unit.as_str(),
        "to": view.to.as_ref().map(|to| to.as_str()),
        "amount": view.amount,
        "captured": view.captured,
        "remaining": view.remaining,
        "status": view.status,
        "expires_at": view.expires_at_ms.map(instant),
        "created_at": instant(view.created_at_ms),
        "finished_at": view.finished_at_ms.map(instant),
    })
}
