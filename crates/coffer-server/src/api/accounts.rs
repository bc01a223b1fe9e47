use super::body::{JsonBody, QueryParameters};
use super::paging::page_limit;
use super::request::{authorize, build, path_id, transaction_id};
use super::respond::execute;
use super::views;
use crate::auth::Role;
use crate::error::ApiError;
use crate::sequencer::{Answer, Detail, Query};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use coffer_core::{AccountId, Balance, Metadata, Operation, TransactionId, Unit};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountRequest {
    /// The account id (not the idempotency key: use `Idempotency-Key`).
    id: AccountId,
    unit: Unit,
    min_available: Option<Balance>,
    max_total: Option<Balance>,
    metadata: Option<Metadata>,
    transaction_id: Option<TransactionId>,
}

pub async fn open(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<OpenAccountRequest>,
) -> Result<Response, ApiError> {
    let op = Operation::Open {
        account: body.id.clone(),
        unit: body.unit,
        min_available: body.min_available,
        max_total: body.max_total,
        metadata: body.metadata,
    };
    authorize(&state, &headers, std::slice::from_ref(&op))?;
    let transaction = build(transaction_id(&headers, body.transaction_id)?, vec![op], None)?;
    let committed = execute(&state, transaction, Detail::WithEffects).await?;
    // Answer with the account as it is now.
    let account = state.ledger.account(body.id).await?;
    Ok(committed.respond(views::AccountAnswer::from(&account)))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let id = path_id(&id, AccountId::parse)?;
    let account = state.ledger.account(id).await?;
    Ok(axum::Json(views::AccountAnswer::from(&account)).into_response())
}

pub use crate::queries::LIST_LIMIT_MAX;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParameters {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    QueryParameters(query): QueryParameters<ListParameters>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let limit = page_limit(query.limit.map(|limit| limit as u64), LIST_LIMIT_MAX as u64)? as usize;
    if query.prefix.len() > coffer_core::limits::ID_BYTES_MAX {
        return Err(ApiError::invalid("prefix is longer than an id can be"));
    }
    // The cursor is opaque to clients; it is a creation-order position.
    let after = match &query.cursor {
        None => 0,
        Some(cursor) => cursor
            .strip_prefix("a")
            .and_then(|digits| u64::from_str_radix(digits, 16).ok())
            .ok_or_else(|| ApiError::invalid("cursor is not one this server issued"))?,
    };
    let Answer::Accounts(accounts, next) = state
        .ledger
        .read(Query::Accounts {
            prefix: query.prefix,
            after,
            limit,
        })
        .await?
    else {
        unreachable!("an accounts query answers with accounts")
    };
    let data = accounts.iter().map(views::AccountAnswer::from).collect();
    let next_cursor = next.map(|slot| format!("a{slot:x}"));
    Ok(axum::Json(views::Page { data, next_cursor }).into_response())
}
