//! The HTTP API of DESIGN.md §3. Handlers are thin: parse, check the role,
//! build a core transaction, hand it to the sequencer, shape the answer.

mod accounts;
mod body;
mod history;
mod holds;
mod jobs;
mod operations;
pub mod products;
mod transactions;
mod views;

use crate::auth::Role;
use crate::error::ApiError;
use crate::sequencer::{Detail, Kind, SequencerError, Submitted};
use crate::state::AppState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use coffer_core::{Operation, Transaction, TransactionId, Verdict};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use body::{JsonBody, QueryParameters};

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.body_bytes_max;
    Router::new()
        .route("/v1/accounts", post(accounts::open).get(accounts::list))
        .route("/v1/accounts/{id}", get(accounts::get))
        .route("/v1/accounts/{id}/history", get(history::history))
        .route("/v1/accounts/{id}/balance", get(history::balance))
        .route("/v1/transactions", post(transactions::create))
        .route("/v1/transactions/batch", post(transactions::batch))
        .route("/v1/transactions/{id}", get(transactions::get))
        .route("/v1/deposits", post(transactions::deposit))
        .route("/v1/withdrawals", post(transactions::withdrawal))
        .route("/v1/transfers", post(transactions::transfer))
        .route("/v1/products", post(products::create))
        .route("/v1/products/{id}", get(products::get))
        .route("/v1/products/{id}/restock", post(products::restock))
        .route("/v1/products/{id}/purchase", post(products::purchase))
        .route("/v1/orders", get(products::list_orders))
        .route("/v1/orders/{id}", get(products::get_order))
        .route("/v1/orders/{id}/confirm", post(products::confirm))
        .route("/v1/orders/{id}/cancel", post(products::cancel))
        .route("/v1/balances/batch", axum::routing::put(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/items", get(jobs::items))
        .route("/v1/holds", post(holds::create))
        .route("/v1/holds/{id}", get(holds::get))
        .route("/v1/holds/{id}/capture", post(holds::capture))
        .route("/v1/holds/{id}/release", post(holds::release))
        .route("/healthz", get(operations::health))
        .route("/readyz", get(operations::ready))
        .route("/metrics", get(operations::metrics))
        .merge(documentation())
        .fallback(|| async { ApiError::NoRoute })
        .layer(axum::middleware::from_fn(operations::record_request))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The API description, written by hand (the request types are core types,
/// which carry no OpenAPI derives) and checked against the router by tests.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// `/openapi.json` and Swagger UI at `/docs`, served from files compiled in.
fn documentation() -> utoipa_swagger_ui::SwaggerUi {
    let document: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is valid JSON");
    utoipa_swagger_ui::SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", document)
}

impl From<SequencerError> for ApiError {
    fn from(error: SequencerError) -> Self {
        match error {
            SequencerError::Overloaded => ApiError::Overloaded,
            SequencerError::Stopped => ApiError::NotReady("the engine is stopping".into()),
            SequencerError::Journal(message) => ApiError::Journal(message),
        }
    }
}

/// The idempotency key: the `Idempotency-Key` header, else `id` in the
/// body, else a fresh server-generated id (the request is then not safely
/// retryable, which the docs say).
pub(crate) fn transaction_id(headers: &HeaderMap, body_id: Option<TransactionId>) -> Result<TransactionId, ApiError> {
    let header = headers.get("idempotency-key").map(|value| {
        let text = value
            .to_str()
            .map_err(|_| ApiError::invalid("Idempotency-Key must be ASCII"))?;
        TransactionId::parse(text).map_err(|error| ApiError::invalid(format!("Idempotency-Key: {error}")))
    });
    match (header.transpose()?, body_id) {
        (Some(header), Some(body)) if header != body => {
            Err(ApiError::invalid("the Idempotency-Key header and the body id differ"))
        }
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => Ok(generated_id()),
    }
}

/// The optional per-user transaction limit, keyed by the `Coffer-User`
/// header; requests without it are not limited.
pub(crate) async fn limit_transactions(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let (Some(limiter), Some(user)) = (&state.transaction_limiter, headers.get("coffer-user")) else {
        return Ok(());
    };
    let user = user
        .to_str()
        .ok()
        .filter(|user| !user.is_empty() && user.len() <= coffer_core::limits::ID_BYTES_MAX)
        .ok_or_else(|| ApiError::invalid("Coffer-User must be 1 to 128 ASCII characters"))?;
    match limiter.check(user).await {
        crate::rate_limit::Decision::Allowed => Ok(()),
        crate::rate_limit::Decision::Limited { retry_after_ms } => Err(ApiError::RateLimited {
            what: "transactions",
            retry_after_secs: retry_after_ms.div_ceil(1_000),
        }),
    }
}

/// Items per page: `limit`, 100 by default, at most `max`.
pub(crate) fn page_limit(limit: Option<u64>, max: u64) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(ApiError::invalid(format!("limit must be 1 to {max}")));
    }
    Ok(limit)
}

/// A page cursor this server issued: `{tag}{number}` (opaque to clients).
pub(crate) fn page_cursor(cursor: Option<&str>, tag: char) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|cursor| {
            cursor
                .strip_prefix(tag)
                .and_then(|digits| digits.parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("cursor is not one this server issued"))
        })
        .transpose()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

pub(crate) fn generated_id() -> TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let text = format!("gen-{nanos:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed));
    TransactionId::parse(&text).expect("generated ids are valid")
}

/// The role an operation needs: changing limits, balances or account
/// status, or opening a system account, is an administrator's act.
fn role_for(op: &Operation) -> Role {
    match op {
        Operation::SetBalance { .. }
        | Operation::SetLimits { .. }
        | Operation::Close { .. }
        | Operation::Reopen { .. } => Role::Admin,
        Operation::Open { account, .. } if account.is_system() => Role::Admin,
        _ => Role::Writer,
    }
}

pub(crate) fn authorize(state: &AppState, headers: &HeaderMap, ops: &[Operation]) -> Result<(), ApiError> {
    let needed = ops.iter().map(role_for).max().unwrap_or(Role::Writer);
    let action = if needed == Role::Admin {
        "change balances, limits, status or system accounts"
    } else {
        "write"
    };
    state.auth.require(headers, needed, action).map(drop)
}

/// Parses an id from the URL path; a bad one is a 400 that says why.
pub(crate) fn path_id<T>(text: &str, parse: fn(&str) -> Result<T, coffer_core::CoreError>) -> Result<T, ApiError> {
    parse(text).map_err(|error| ApiError::invalid(error.to_string()))
}

pub(crate) fn build(
    id: TransactionId,
    ops: Vec<Operation>,
    metadata: Option<coffer_core::Metadata>,
) -> Result<Transaction, ApiError> {
    Transaction::new(id, ops, metadata).map_err(|error| ApiError::invalid(error.to_string()))
}

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
        let mut response = self.respond(views::TransactionBody::minimal(&self.submitted, false));
        mark_minimal(&mut response);
        response
    }
}

/// RFC 7240 `Prefer: return=minimal`, among other preferences or not.
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').any(|preference| {
                let name_and_value = preference.split(';').next().unwrap_or_default();
                let compact: String = name_and_value
                    .chars()
                    .filter(|character| !character.is_ascii_whitespace())
                    .collect();
                compact.eq_ignore_ascii_case("return=minimal")
            })
        })
    })
}

/// Balances in the answer unless the client prefers it minimal.
pub(crate) fn detail_preferred(headers: &HeaderMap) -> Detail {
    match prefers_minimal(headers) {
        true => Detail::WithoutEffects,
        false => Detail::WithEffects,
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
        self.respond(views::TransactionBody::of_submitted(&self.submitted, false))
    }
}

/// Runs one transaction. DESIGN.md §3: 201 on a first commit, 200 with
/// `Idempotent-Replayed: true` on a replay, 422 with the rejection code,
/// 409 on an id reused with another payload.
pub(crate) async fn execute(state: &AppState, transaction: Transaction, detail: Detail) -> Result<Committed, ApiError> {
    let mut results = state.submit(vec![transaction], detail).await?;
    answer(results.pop().expect("one result per transaction"))
}

pub(crate) fn answer(submitted: Submitted) -> Result<Committed, ApiError> {
    let replayed = submitted.kind == Kind::Replayed;
    match (submitted.kind, submitted.verdict()) {
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
