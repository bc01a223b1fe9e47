use super::body::JsonBody;
use super::openapi::{IdempotencyHeader, NotFound, ReadErrors, WriteErrors, REPLAYED};
use super::request::{authorize, build, instant_ms, path_id, transaction_id};
use super::respond::{execute, TransactionWritten};
use super::views;
use crate::auth::Role;
use crate::error::ApiError;
use crate::sequencer::Detail;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use coffer_core::{AccountId, Amount, HoldId, Metadata, Operation, TransactionId};
use serde::Deserialize;
use std::sync::Arc;

/// A hold to place.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// The idempotency key of the transaction that creates the hold.
    id: Option<TransactionId>,
    /// The hold's id, chosen by the client.
    hold: HoldId,
    /// The account whose available money is frozen.
    account: AccountId,
    amount: Amount,
    /// Where a capture sends the money unless it names another account; else `@world`.
    to: Option<AccountId>,
    /// Expires this long after it is made (at most a year). Give this or `expires_at`, not both.
    #[serde(default, deserialize_with = "coffer_core::deserialize_whole_number")]
    #[schema(minimum = 1, maximum = 31_622_400_000_u64)]
    ttl_ms: Option<u64>,
    /// Expires at this instant (UTC, RFC 3339). Give this or `ttl_ms`, not both.
    #[schema(value_type = Option<super::request::Rfc3339Schema>)]
    expires_at: Option<String>,
    metadata: Option<Metadata>,
}

const _: () = assert!(
    coffer_core::limits::HOLD_TTL_MS_MAX == 31_622_400_000,
    "the maximum of HoldRequest::ttl_ms"
);

/// Place a hold
///
/// Moves `amount` from the account's available balance to frozen under the hold's id, until it is captured,
/// released or expires.
#[utoipa::path(
    post, path = "/v1/holds", tag = "holds", operation_id = "createHold",
    params(IdempotencyHeader),
    request_body = HoldRequest,
    responses(
        (status = 201, description = "Held: the transaction's result, with the hold", body = views::TransactionAnswer,
         links(
             ("hold" = (operation_id = "getHold", parameters(("id" = "$response.body#/hold/id")))),
             ("capture" = (operation_id = "captureHold", parameters(("id" = "$response.body#/hold/id")))),
             ("release" = (operation_id = "releaseHold", parameters(("id" = "$response.body#/hold/id")))),
         )),
        (status = 200, description = REPLAYED, body = views::TransactionAnswer),
        WriteErrors,
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<HoldRequest>,
) -> Result<Response, ApiError> {
    let expires_at_ms = body
        .expires_at
        .as_deref()
        .map(|text| instant_ms("expires_at", text, false))
        .transpose()?
        .map(|at| u64::try_from(at).map_err(|_| ApiError::invalid("expires_at is before 1970")))
        .transpose()?;
    let hold_id = body.hold.clone();
    let op = Operation::Hold {
        hold: body.hold,
        account: body.account,
        amount: body.amount,
        to: body.to,
        expires_at_ms,
        ttl_ms: body.ttl_ms,
    };
    authorize(&state, &headers, std::slice::from_ref(&op))?;
    let transaction = build(transaction_id(&headers, body.id)?, vec![op], body.metadata)?;
    with_hold(&state, transaction, hold_id).await
}

/// Runs a hold transaction and adds the hold, as it is now, to the answer.
async fn with_hold(
    state: &AppState,
    transaction: coffer_core::Transaction,
    hold_id: HoldId,
) -> Result<Response, ApiError> {
    let committed = execute(state, transaction, Detail::WithEffects).await?;
    let hold = state.ledger.hold(hold_id).await?;
    let mut body = views::TransactionAnswer::of_submitted(&committed.submitted, false);
    body.hold = hold.as_ref().map(views::HoldAnswer::from);
    Ok(committed.respond(body))
}

/// Read a hold
#[utoipa::path(
    get, path = "/v1/holds/{id}", tag = "holds", operation_id = "getHold",
    params(("id" = HoldId, Path, description = "The hold id")),
    responses((status = 200, description = "The hold as it is now", body = views::HoldAnswer), ReadErrors, NotFound),
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let id = path_id(&id, HoldId::parse)?;
    match state.ledger.hold(id.clone()).await? {
        Some(hold) => Ok(axum::Json(views::HoldAnswer::from(&hold)).into_response()),
        None => Err(ApiError::NotFound {
            what: "hold",
            id: id.to_string(),
        }),
    }
}

/// What to capture of a hold.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// The idempotency key (or the `Idempotency-Key` header).
    id: Option<TransactionId>,
    /// How much to settle; what remains of the hold when absent.
    amount: Option<Amount>,
    /// Where the money goes; else the hold's `to`, else `@world`.
    to: Option<AccountId>,
    metadata: Option<Metadata>,
}

/// A hold's release.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The idempotency key (or the `Idempotency-Key` header).
    id: Option<TransactionId>,
    metadata: Option<Metadata>,
}

/// Capture a hold
///
/// Settles (part of) the hold: the frozen money leaves the account for `to`. A partial capture leaves the
/// rest held.
#[utoipa::path(
    post, path = "/v1/holds/{id}/capture", tag = "holds", operation_id = "captureHold",
    params(("id" = HoldId, Path, description = "The hold id"), IdempotencyHeader),
    request_body = CaptureRequest,
    responses(TransactionWritten, WriteErrors),
)]
pub async fn capture(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CaptureRequest>,
) -> Result<Response, ApiError> {
    let hold = path_id(&id, HoldId::parse)?;
    let op = Operation::Capture {
        hold: hold.clone(),
        amount: body.amount,
        to: body.to,
    };
    authorize(&state, &headers, std::slice::from_ref(&op))?;
    let transaction = build(transaction_id(&headers, body.id)?, vec![op], body.metadata)?;
    with_hold(&state, transaction, hold).await
}

/// Release a hold
///
/// Returns what remains of the hold to the account's available balance.
#[utoipa::path(
    post, path = "/v1/holds/{id}/release", tag = "holds", operation_id = "releaseHold",
    params(("id" = HoldId, Path, description = "The hold id"), IdempotencyHeader),
    request_body = ReleaseRequest,
    responses(TransactionWritten, WriteErrors),
)]
pub async fn release(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReleaseRequest>,
) -> Result<Response, ApiError> {
    let hold = path_id(&id, HoldId::parse)?;
    let op = Operation::Release { hold: hold.clone() };
    authorize(&state, &headers, std::slice::from_ref(&op))?;
    let transaction = build(transaction_id(&headers, body.id)?, vec![op], body.metadata)?;
    with_hold(&state, transaction, hold).await
}
