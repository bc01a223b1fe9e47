//! `PUT /v1/balances/batch` and the job endpoints (see `crate::jobs`).

use super::body::{JsonBody, QueryParameters};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancesRequest {
    unit: Unit,
    /// Account → new available balance. Items are taken in account order.
    balances: BTreeMap<String, Box<RawValue>>,
    #[serde(default)]
    create_missing: bool,
    /// The job id (an idempotency key: the same job again answers the
    /// existing one); generated when absent.
    id: Option<String>,
}

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

#[derive(Serialize)]
struct Totals {
    items: usize,
    completed: usize,
    failed: usize,
    pending: usize,
}

#[derive(Serialize)]
struct JobAnswer<'a> {
    job_id: &'a str,
    status: &'static str,
    unit: &'a str,
    create_missing: bool,
    totals: Totals,
    /// Finished items over all items, 0 to 1.
    progress: f64,
    created_at: String,
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

pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let job = find(&state, &id).await?;
    Ok(axum::Json(JobAnswer::of(&job)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemParameters {
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<usize>,
}

pub const ITEMS_PAGE_MAX: usize = 1_000;

#[derive(Serialize)]
struct ItemAnswer<'a> {
    index: usize,
    account: &'a str,
    amount: Option<&'a str>,
    status: &'static str,
    code: Option<String>,
}

pub async fn items(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    QueryParameters(parameters): QueryParameters<ItemParameters>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let job = find(&state, &id).await?;
    let limit = page_limit(parameters.limit.map(|limit| limit as u64), ITEMS_PAGE_MAX as u64)? as usize;
    let wanted = parameters.status.as_deref();
    if wanted.is_some_and(|status| !["completed", "failed", "pending"].contains(&status)) {
        return Err(ApiError::invalid("status must be completed, failed or pending"));
    }
    let results = job.results.lock().expect("results lock").clone();
    let mut data = Vec::new();
    let mut next_cursor = None;
    for (index, result) in results.iter().enumerate().skip(parameters.cursor.unwrap_or(0)) {
        let (status, code) = match result {
            None => ("pending", None),
            Some(Ok(())) => ("completed", None),
            Some(Err(code)) => ("failed", Some(code.clone())),
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
    Ok(axum::Json(views::Page { data, next_cursor }).into_response())
}
