use super::{authorize, build, execute, transaction_id, views, JsonBody, QueryParameters};
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
pub struct OpenAccount {
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
    JsonBody(body): JsonBody<OpenAccount>,
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
    let account = read_account(&state, body.id).await?;
    Ok(committed.respond(views::AccountBody::from(&account)))
}

pub(crate) async fn read_account(state: &AppState, id: AccountId) -> Result<coffer_core::AccountView, ApiError> {
    match state.sequencer.read(Query::Account(id.clone())).await? {
        Answer::Account(Some(view)) => Ok(view),
        _ => Err(ApiError::NotFound {
            what: "account",
            id: id.to_string(),
        }),
    }
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let id = super::path_id(&id, AccountId::parse)?;
    let account = read_account(&state, id).await?;
    Ok(axum::Json(views::AccountBody::from(&account)).into_response())
}

pub const LIST_LIMIT_MAX: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    QueryParameters(query): QueryParameters<ListQuery>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let limit = super::page_limit(query.limit.map(|limit| limit as u64), LIST_LIMIT_MAX as u64)? as usize;
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
        .sequencer
        .read(Query::Accounts {
            prefix: query.prefix,
            after,
            limit,
        })
        .await?
    else {
        unreachable!("an accounts query answers with accounts")
    };
    let data = accounts.iter().map(views::AccountBody::from).collect();
    let next_cursor = next.map(|slot| format!("a{slot:x}"));
    Ok(axum::Json(views::Page { data, next_cursor }).into_response())
}
