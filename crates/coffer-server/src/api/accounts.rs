use super::body::{JsonBody, QueryParameters};
use super::openapi::{IdempotencyHeader, NotFound, ReadErrors, WriteErrors, REPLAYED};
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

/// An account to open.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountRequest {
    /// The account id (not the idempotency key: use `Idempotency-Key`).
    id: AccountId,
    unit: Unit,
    /// The floor of `available`: 0 when absent (no overdraft); negative allows one.
    min_available: Option<Balance>,
    /// The ceiling of `available + frozen`; none when absent.
    max_total: Option<Balance>,
    metadata: Option<Metadata>,
    /// The id of the opening transaction (its idempotency key).
    transaction_id: Option<TransactionId>,
}

/// Open an account
///
/// Opening is a transaction: retried under its idempotency key it answers the account again (200).
#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts", operation_id = "openAccount",
    params(IdempotencyHeader),
    request_body = OpenAccountRequest,
    responses(
        (status = 201, description = "Opened: the account", body = views::AccountAnswer,
         links(
             ("account" = (operation_id = "getAccount", parameters(("id" = "$response.body#/id")))),
             ("history" = (operation_id = "getAccountHistory", parameters(("id" = "$response.body#/id")))),
             ("balance" = (operation_id = "getAccountBalance", parameters(("id" = "$response.body#/id")))),
         )),
        (status = 200, description = REPLAYED, body = views::AccountAnswer),
        WriteErrors,
    ),
)]
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

/// Read an account
#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "accounts", operation_id = "getAccount",
    params(("id" = AccountId, Path, description = "The account id")),
    responses((status = 200, description = "The account as it is now", body = views::AccountAnswer), ReadErrors, NotFound),
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParameters {
    /// Only accounts whose id starts with this.
    #[serde(default)]
    #[param(max_length = 128)]
    prefix: String,
    /// Accounts per page.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^a[0-9a-fA-F]{1,16}$")]
    cursor: Option<String>,
}

const _: () = assert!(LIST_LIMIT_MAX == 1_000, "the maximum of ListParameters::limit");

/// List accounts in creation order
#[utoipa::path(
    get, path = "/v1/accounts", tag = "accounts", operation_id = "listAccounts",
    params(ListParameters),
    responses((status = 200, description = "A page of accounts", body = views::Page<views::AccountAnswer>), ReadErrors),
)]
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
            .filter(|digits| digits.len() <= 16 && digits.bytes().all(|byte| byte.is_ascii_hexdigit()))
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
