//! Account history and balances at a past instant, from the history store.
//! Both first wait until the store holds every acknowledged write.

use super::body::QueryParameters;
use super::openapi::{HistoryUnavailable, NotFound, ReadErrors};
use super::paging::{page_cursor, page_limit};
use super::request::{instant_ms, path_id, InstantSchema};
use super::views::instant;
use crate::auth::Role;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use coffer_core::AccountId;
use coffer_history::{HistoryEntry, HistoryQuery, HISTORY_PAGE_MAX};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryParameters {
    /// Entries per page, newest first.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^h[0-9]{1,18}$")]
    cursor: Option<String>,
    /// Entries at or after this instant (UTC, RFC 3339, or milliseconds since the Unix epoch).
    #[param(value_type = Option<InstantSchema>, inline)]
    from: Option<String>,
    /// Entries at or before this instant.
    #[param(value_type = Option<InstantSchema>, inline)]
    to: Option<String>,
}

const _: () = assert!(HISTORY_PAGE_MAX == 1_000, "the maximum of HistoryParameters::limit");
const _: () = assert!(
    super::paging::CURSOR_DIGITS_MAX == 18,
    "the pattern of HistoryParameters::cursor"
);

/// One change of an account.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = HistoryEntry)]
struct EntryAnswer<'a> {
    /// The entry's id; ascending in time.
    id: String,
    /// `transaction`, or `hold_expired` (an expiry, which no transaction made).
    #[schema(value_type = String, example = "transaction")]
    kind: &'static str,
    transaction_id: Option<&'a str>,
    /// The expired hold (`hold_expired` entries).
    hold_id: Option<&'a str>,
    seq: i64,
    #[schema(format = DateTime)]
    timestamp: String,
    unit: &'a str,
    available_change: i128,
    frozen_change: i128,
    /// After this change.
    available: i128,
    frozen: i128,
    total: i128,
}

impl<'a> From<&'a HistoryEntry> for EntryAnswer<'a> {
    fn from(entry: &'a HistoryEntry) -> Self {
        EntryAnswer {
            id: entry.history_id.to_string(),
            kind: entry.kind,
            transaction_id: entry.transaction_id.as_deref(),
            hold_id: entry.hold_id.as_deref(),
            seq: entry.sequence,
            timestamp: instant(entry.timestamp_ms.max(0) as u64),
            unit: &entry.unit,
            available_change: entry.available_change,
            frozen_change: entry.frozen_change,
            available: entry.available,
            frozen: entry.frozen,
            total: entry.available + entry.frozen,
        }
    }
}

/// One page of an account's history, newest first.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = HistoryPage)]
struct HistoryPageAnswer<'a> {
    account: &'a str,
    data: Vec<EntryAnswer<'a>>,
    /// Pass as `cursor` for the next (older) page; null on the last.
    next_cursor: Option<String>,
}

/// An account's history
///
/// Every change of the account, newest first, with the balances after each. Answers once the history holds
/// every acknowledged write.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/history", tag = "history", operation_id = "getAccountHistory",
    params(("id" = AccountId, Path, description = "The account id"), HistoryParameters),
    responses((status = 200, description = "A page of entries", body = HistoryPageAnswer), ReadErrors, NotFound, HistoryUnavailable),
)]
pub async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    QueryParameters(parameters): QueryParameters<HistoryParameters>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let account = path_id(&id, AccountId::parse)?;
    state.ledger.history_kept()?;
    let limit = page_limit(parameters.limit.map(u64::from), u64::from(HISTORY_PAGE_MAX))? as u32;
    let before = page_cursor(parameters.cursor.as_deref(), 'h')?;
    let from_ms = parameters
        .from
        .as_deref()
        .map(|text| instant_ms("from", text, true))
        .transpose()?;
    let to_ms = parameters
        .to
        .as_deref()
        .map(|text| instant_ms("to", text, true))
        .transpose()?;
    state.ledger.account(account.clone()).await?;
    let query = HistoryQuery {
        account: account.to_string(),
        before,
        from_ms,
        to_ms,
        limit,
    };
    let entries = state
        .ledger
        .read_history(&account, move |reader| reader.history(&query))
        .await?;
    let next_cursor = (entries.len() == limit as usize)
        .then(|| entries.last().map(|entry| format!("h{}", entry.history_id)))
        .flatten();
    let page = HistoryPageAnswer {
        account: account.as_str(),
        data: entries.iter().map(EntryAnswer::from).collect(),
        next_cursor,
    };
    Ok(axum::Json(page).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BalanceParameters {
    /// The instant (RFC 3339, or milliseconds); now when absent.
    #[param(value_type = Option<InstantSchema>, inline)]
    at: Option<String>,
}

/// An account's balances at an instant.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = BalanceAt)]
struct BalanceAnswer<'a> {
    account: &'a str,
    unit: &'a str,
    #[schema(format = DateTime)]
    at: String,
    available: i128,
    frozen: i128,
    total: i128,
    /// The entry that set these balances (none: the account did not exist yet).
    history_id: Option<String>,
}

/// An account's balance at an instant
///
/// Now without `at`; else as the history had it at that instant (zeros before the account's first entry).
#[utoipa::path(
    get, path = "/v1/accounts/{id}/balance", tag = "history", operation_id = "getAccountBalance",
    params(("id" = AccountId, Path, description = "The account id"), BalanceParameters),
    responses((status = 200, description = "The balances", body = BalanceAnswer), ReadErrors, NotFound, HistoryUnavailable),
)]
pub async fn balance(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    QueryParameters(parameters): QueryParameters<BalanceParameters>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let account = path_id(&id, AccountId::parse)?;
    let current = state.ledger.account(account.clone()).await?;
    let Some(at) = parameters.at else {
        let body = BalanceAnswer {
            account: account.as_str(),
            unit: current.unit.as_str(),
            at: instant(current.updated_at_ms),
            available: current.available,
            frozen: current.frozen,
            total: current.total,
            history_id: None,
        };
        return Ok(axum::Json(body).into_response());
    };
    let at_ms = instant_ms("at", &at, true)?;
    let name = account.to_string();
    let entry = state
        .ledger
        .read_history(&account, move |reader| reader.balance_at(&name, at_ms))
        .await?;
    let (available, frozen) = entry.as_ref().map_or((0, 0), |entry| (entry.available, entry.frozen));
    let body = BalanceAnswer {
        account: account.as_str(),
        unit: current.unit.as_str(),
        at: instant(at_ms.max(0) as u64),
        available,
        frozen,
        total: available + frozen,
        history_id: entry.map(|entry| entry.history_id.to_string()),
    };
    Ok(axum::Json(body).into_response())
}
