//! Answers to writes: a transaction's outcome mapped to its status (201
//! first commit, 200 replay, 422 rejection, 409 reused id), in buffers
//! sized up front.

use super::views;
use crate::error::ApiError;
use crate::sequencer::{Detail, Kind, Submitted};
use crate::state::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_core::{Transaction, Verdict};

/// Answers serialized into one buffer sized for them up front: axum's
/// `Json` writes through a `BytesMut` that starts at 128 bytes and grows,
/// with one buffer call per JSON token. Batch answers run to thousands of
/// items; a transfer's answer, with two balances, to about 350 bytes.
pub(crate) fn sized_json(status: StatusCode, body: &impl serde::Serialize, bytes_expected: usize) -> Response {
    let mut bytes = Vec::with_capacity(bytes_expected);
    match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        // Our answer types always serialize; should one fail, axum's own
        // 500 answer says why.
        Err(_) => axum::Json(body).into_response(),
    }
}

/// A transaction's answer with its balances fits (two accounts, long ids).
const SINGLE_RESULT_BYTES: usize = 512;

/// What a committed transaction answers, for the API document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum TransactionWritten {
    /// Committed: the transaction's result (with the hold, for hold operations).
    #[response(status = 201)]
    Committed(views::TransactionAnswer<'static>),
    /// Idempotent replay of an earlier commit, answered as it was (header `Idempotent-Replayed: true`); nothing was
    /// applied again.
    #[response(status = 200)]
    Replayed(views::TransactionAnswer<'static>),
}

/// A successful write, before its body is chosen: by default the
/// transaction result; handlers may answer with a resource instead.
pub(crate) struct Committed {
    pub status: StatusCode,
    pub replayed: bool,
    pub submitted: Submitted,
}

impl Committed {
    pub fn respond(&self, body: impl serde::Serialize) -> Response {
        let mut response = sized_json(self.status, &body, SINGLE_RESULT_BYTES);
        if self.replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }

    /// The full answer, or under `Prefer: return=minimal` only id, status
    /// and sequence (a replay still answers 200 with `Idempotent-Replayed`).
    pub fn respond_in(self, detail: Detail) -> Response {
        if detail == Detail::WithEffects {
            return self.into_response();
        }
        let mut response = self.respond(views::TransactionAnswer::minimal(&self.submitted, false));
        mark_minimal(&mut response);
        response
    }
}

/// Says that an answer is the minimal one the client asked for.
pub(crate) fn mark_minimal(response: &mut Response) {
    response
        .headers_mut()
        .insert("preference-applied", HeaderValue::from_static("return=minimal"));
}

impl IntoResponse for Committed {
    fn into_response(self) -> Response {
        self.respond(views::TransactionAnswer::of_submitted(&self.submitted, false))
    }
}

/// Runs one transaction: 201 on a first commit, 200 with
/// `Idempotent-Replayed: true` on a replay, 422 with the rejection code,
/// 409 on an id reused with another payload.
pub(crate) async fn execute(state: &AppState, transaction: Transaction, detail: Detail) -> Result<Committed, ApiError> {
    let mut results = state.ledger.submit(vec![transaction], detail).await?;
    answer(results.pop().expect("one result per transaction"))
}

pub(crate) fn answer(submitted: Submitted) -> Result<Committed, ApiError> {
    let replayed = submitted.kind == Kind::Replayed;
    match (submitted.kind, submitted.verdict()) {
        (Kind::NotApplied, _) => Err(ApiError::Conflict {
            code: "not_applied",
            message: format!("{} was not applied: its linked batch reuses another id", submitted.id),
        }),
        (Kind::IdReused, _) => {
            let original = views::record_value(submitted.id.as_str(), &submitted.record);
            Err(ApiError::IdReused {
                id: submitted.id.to_string(),
                original,
            })
        }
        (_, Verdict::Rejected(rejection)) => Err(ApiError::Rejected {
            code: rejection.code.as_str(),
            op_index: rejection.op_index,
            result: views::record_value(submitted.id.as_str(), &submitted.record),
            replayed,
        }),
        (_, Verdict::Committed) => {
            let status = if replayed { StatusCode::OK } else { StatusCode::CREATED };
            Ok(Committed {
                status,
                replayed,
                submitted,
            })
        }
    }
}
