//! `PUT /v1/balances/batch` and the job endpoints (see `crate::jobs`).

use super::body::{JsonBody, QueryParameters};
use super::openapi::{NotFound, ReadErrors, WriteErrors, REPLAYED};
use super::paging::page_limit;
use super::views;
use crate::auth::Role;
use crate::clock::{generated_id, now_ms};
use crate::error::ApiError;
use crate::jobs::{Item, Job, JobError, JobSpec, JOB_ID_BYTES_MAX, JOB_ITEMS_MAX};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_core::{AccountId, Balance, TransactionId, Unit};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Balances to set as one job.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BalancesRequest {
    unit: Unit,
    /// Account → new available balance (a `Balance`), 1 to 200,000 of them. Items are taken in account order. An
    /// invalid account or
    /// amount does not refuse the job: the item fails (`invalid_account`, `invalid_amount`) and the job says so.
    #[schema(value_type = BalanceItems)]
    balances: BTreeMap<String, Box<RawValue>>,
    /// Open the accounts that do not exist yet (else their items fail with `account_not_found`).
    #[serde(default)]
    create_missing: bool,
    /// The job id (an idempotency key: the same job again answers the
    /// existing one); generated when absent.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-][A-Za-z0-9_.:@-]*$")]
    id: Option<String>,
}

const _: () = assert!(
    JOB_ITEMS_MAX == 200_000 && JOB_ID_BYTES_MAX == 64,
    "the bounds of BalancesRequest"
);

fn job_id(given: Option<String>) -> Result<String, ApiError> {
    match given {
        Some(id) => {
            // The plain alphabet: the id becomes part of each item's transaction id.
            let valid = TransactionId::parse(&id).is_ok() && id.len() <= JOB_ID_BYTES_MAX && !id.starts_with('@');
            match valid {
                true => Ok(id),
                false => Err(ApiError::invalid(format!(
                    "id: 1 to {JOB_ID_BYTES_MAX} of A-Z a-z 0-9 _ . : - @, not starting with @"
                ))),
            }
        }
        None => Ok(generated_id().to_string()),
    }
}

/// `BalancesRequest::balances` for the API document: 1 to `JOB_ITEMS_MAX`
/// accounts, any value each (an invalid one fails as its item).
struct BalanceItems;

impl utoipa::PartialSchema for BalanceItems {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut items = utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .examples([serde_json::json!({"user:1": 500, "user:2": "0"})])
            .build();
        items.min_properties = Some(1);
        items.max_properties = Some(JOB_ITEMS_MAX);
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(items))
    }
}

impl utoipa::ToSchema for BalanceItems {}

/// Invalid items are kept, as failed items (`invalid_account`,
/// `invalid_amount`), so the job reports them.
fn item(account: String, amount: &RawValue) -> Item {
    if AccountId::parse(&account).is_err() || account.starts_with('@') {
        return Item {
            account,
            amount: None,
            invalid: Some("invalid_account".into()),
        };
    }
    match serde_json::from_str::<Balance>(amount.get()) {
        Ok(balance) => Item {
            account,
            amount: Some(balance.value().to_string()),
            invalid: None,
        },
        Err(_) => Item {
            account,
            amount: None,
            invalid: Some("invalid_amount".into()),
        },
    }
}

/// Set many balances as one job
///
/// Up to 200,000 accounts of one unit set to new available balances (the difference moves from or to
/// `@world`), applied in the background; the job and each item have a queryable status. The same job again
/// (same id and definition) answers the existing one (200); the same id with another definition is 409.
#[utoipa::path(
    put, path = "/v1/balances/batch", tag = "jobs", operation_id = "createBalancesJob",
    request_body = BalancesRequest,
    responses(
        (status = 202, description = "Accepted: the job, running", body = JobAnswer,
         links(
             ("job" = (operation_id = "getJob", parameters(("id" = "$response.body#/job_id")))),
             ("items" = (operation_id = "listJobItems", parameters(("id" = "$response.body#/job_id")))),
         )),
        (status = 200, description = REPLAYED, body = JobAnswer),
        WriteErrors,
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BalancesRequest>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Admin, "set balances")?;
    let count = body.balances.len();
    if count == 0 || count > JOB_ITEMS_MAX {
        return Err(ApiError::invalid(format!(
            "balances has 1 to {JOB_ITEMS_MAX} items, got {count}"
        )));
    }
    let spec = JobSpec {
        id: job_id(body.id)?,
        unit: body.unit.to_string(),
        create_missing: body.create_missing,
        created_at_ms: now_ms(),
        items: body
            .balances
            .into_iter()
            .map(|(account, amount)| item(account, &amount))
            .collect(),
    };
    let jobs = Arc::clone(&state);
    let created = tokio::task::spawn_blocking(move || jobs.jobs.create(spec))
        .await
        .map_err(|error| ApiError::Journal(error.to_string()))?;
    let (job, new) = created.map_err(|error| match error {
        JobError::Conflict(id) => ApiError::Conflict {
            code: "job_exists",
            message: format!("job {id} exists with a different definition"),
        },
        JobError::Busy => ApiError::Overloaded,
        JobError::Io(error) => ApiError::Journal(format!("storing the job: {error}")),
        JobError::Database(error) => ApiError::Journal(format!("storing the job: {error}")),
    })?;
    if new {
        state.jobs.start(Arc::clone(&job));
    }
    let status = if new { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, axum::Json(JobAnswer::of(&job))).into_response())
}

/// Items by state.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = JobTotals)]
struct Totals {
    items: usize,
    completed: usize,
    failed: usize,
    pending: usize,
}

/// A bulk balance job and its progress.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
struct JobAnswer<'a> {
    job_id: &'a str,
    /// `running`, then `completed` once every item has finished (failed items included).
    #[schema(value_type = String, example = "running")]
    status: &'static str,
    unit: &'a str,
    create_missing: bool,
    totals: Totals,
    /// Finished items over all items, 0 to 1.
    progress: f64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
}

impl<'a> JobAnswer<'a> {
    fn of(job: &'a Job) -> Self {
        let (completed, failed, pending) = job.totals();
        let items = job.spec.items.len();
        let finished_at = *job.finished_at_ms.lock().expect("lock");
        JobAnswer {
            job_id: &job.spec.id,
            status: if pending == 0 { "completed" } else { "running" },
            unit: &job.spec.unit,
            create_missing: job.spec.create_missing,
            totals: Totals {
                items,
                completed,
                failed,
                pending,
            },
            progress: (completed + failed) as f64 / items.max(1) as f64,
            created_at: views::instant(job.spec.created_at_ms),
            finished_at: finished_at.map(views::instant),
        }
    }
}

async fn find(state: &AppState, id: &str) -> Result<Arc<Job>, ApiError> {
    let found = state
        .jobs
        .get(id)
        .await
        .map_err(|error| ApiError::Journal(format!("reading the job: {error}")))?;
    found.ok_or_else(|| ApiError::NotFound {
        what: "job",
        id: id.to_owned(),
    })
}

/// Read a job
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "getJob",
    params(("id" = String, Path, description = "The job id", max_length = 64)),
    responses((status = 200, description = "The job and its totals", body = JobAnswer), ReadErrors, NotFound),
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let job = find(&state, &id).await?;
    Ok(axum::Json(JobAnswer::of(&job)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ItemParameters {
    /// Only items in this state.
    status: Option<ItemStatus>,
    /// Items per page, in account order.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(minimum = 0, maximum = 200_000)]
    cursor: Option<usize>,
}

/// An item's state.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Completed,
    /// `code` says why.
    Failed,
    Pending,
}

pub const ITEMS_PAGE_MAX: usize = 1_000;
const _: () = assert!(
    ITEMS_PAGE_MAX == 1_000 && JOB_ITEMS_MAX == 200_000,
    "the bounds of ItemParameters"
);

/// One page of a job's items.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = JobItemPage)]
struct ItemsPage<'a> {
    data: Vec<ItemAnswer<'a>>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<usize>,
}

/// One item of a job.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = JobItem)]
struct ItemAnswer<'a> {
    /// The item's place in account order, from 0.
    index: usize,
    account: &'a str,
    /// The balance to set, as a decimal string (absent from invalid items).
    amount: Option<&'a str>,
    status: ItemStatus,
    /// Why it failed: `invalid_account`, `invalid_amount`, or a ledger rejection code.
    code: Option<String>,
}

/// A job's items
#[utoipa::path(
    get, path = "/v1/jobs/{id}/items", tag = "jobs", operation_id = "listJobItems",
    params(("id" = String, Path, description = "The job id", max_length = 64), ItemParameters),
    responses((status = 200, description = "A page of items", body = ItemsPage), ReadErrors, NotFound),
)]
pub async fn items(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    QueryParameters(parameters): QueryParameters<ItemParameters>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let job = find(&state, &id).await?;
    let limit = page_limit(parameters.limit.map(|limit| limit as u64), ITEMS_PAGE_MAX as u64)? as usize;
    let wanted = parameters.status;
    if parameters.cursor.is_some_and(|cursor| cursor > JOB_ITEMS_MAX) {
        return Err(ApiError::invalid(format!("cursor must be 0 to {JOB_ITEMS_MAX}")));
    }
    let results = job.results.lock().expect("results lock").clone();
    let mut data = Vec::new();
    let mut next_cursor = None;
    for (index, result) in results.iter().enumerate().skip(parameters.cursor.unwrap_or(0)) {
        let (status, code) = match result {
            None => (ItemStatus::Pending, None),
            Some(Ok(())) => (ItemStatus::Completed, None),
            Some(Err(code)) => (ItemStatus::Failed, Some(code.clone())),
        };
        if wanted.is_some_and(|wanted| wanted != status) {
            continue;
        }
        if data.len() == limit {
            next_cursor = Some(index);
            break;
        }
        let item = &job.spec.items[index];
        data.push(ItemAnswer {
            index,
            account: &item.account,
            amount: item.amount.as_deref(),
            status,
            code,
        });
    }
    Ok(axum::Json(ItemsPage { data, next_cursor }).into_response())
}
