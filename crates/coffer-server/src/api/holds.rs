use super::body::JsonBody;
use super::request::{authorize, build, instant_ms, path_id, transaction_id};
use super::respond::execute;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// The idempotency key of the transaction that creates the hold.
    id: Option<TransactionId>,
    hold: HoldId,
    account: AccountId,
    amount: Amount,
    to: Option<AccountId>,
    ttl_ms: Option<u64>,
    /// RFC 3339 instant, e.g. 2026-11-25T12:00:00Z.
    expires_at: Option<String>,
    metadata: Option<Metadata>,
}

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    id: Option<TransactionId>,
    amount: Option<Amount>,
    to: Option<AccountId>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    id: Option<TransactionId>,
    metadata: Option<Metadata>,
}

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
