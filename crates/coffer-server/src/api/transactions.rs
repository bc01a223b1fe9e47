use super::body::{JsonBody, QueryParameters};
use super::request::{authorize, build, detail_preferred, limit_transactions, path_id, transaction_id};
use super::respond::{answer, execute, mark_minimal, sized_json};
use super::views;
use crate::auth::Role;
use crate::clock::generated_id;
use crate::error::ApiError;
use crate::ledger::Lookup;
use crate::sequencer::{Detail, Kind, Submitted};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_core::{AccountId, Amount, Metadata, Operation, RejectionCode, Transaction, TransactionId, Verdict};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// `{id?, ops, metadata?}`: the same JSON as a Kafka command.
pub type TransactionRequest = coffer_core::Command;

/// `202 Accepted` with a write's first outcome.
fn accepted_answer(result: &serde_json::Value) -> Response {
    (StatusCode::ACCEPTED, axum::Json(result)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeParameters {
    mode: Option<String>,
}

fn parse(state: &AppState, headers: &HeaderMap, body: TransactionRequest) -> Result<Transaction, ApiError> {
    authorize(state, headers, &body.ops)?;
    build(transaction_id(headers, body.id)?, body.ops, body.metadata)
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    QueryParameters(query): QueryParameters<ModeParameters>,
    JsonBody(body): JsonBody<TransactionRequest>,
) -> Result<Response, ApiError> {
    let transaction = parse(&state, &headers, body)?;
    limit_transactions(&state, &headers).await?;
    match query.mode.as_deref() {
        None | Some("sync") => {
            let detail = detail_preferred(&headers);
            Ok(execute(&state, transaction, detail).await?.respond_in(detail))
        }
        Some("async") => {
            if let Some(kafka) = state.kafka.as_ref().filter(|kafka| kafka.takes_async()) {
                // Through the commands topic: accepted once the broker has
                // it, applied later (`GET` says `pending` until then).
                let id = transaction.id().to_string();
                kafka.produce(&transaction).await?;
                let body = axum::Json(json!({ "id": id, "status": "pending" }));
                return Ok((StatusCode::ACCEPTED, body).into_response());
            }
            // Without Kafka a command becomes durable in the journal, which
            // records applied batches: the 202 comes after the same fsync
            // as a synchronous answer, and says how the write ended.
            match execute(&state, transaction, Detail::WithoutEffects).await {
                // A retry answers as in sync mode: the original outcome, marked.
                Ok(committed) if committed.replayed => Ok(committed.into_response()),
                Err(error @ ApiError::Rejected { replayed: true, .. }) => Err(error),
                Ok(committed) => {
                    let result = views::TransactionAnswer::minimal(&committed.submitted, false);
                    Ok(accepted_answer(&serde_json::to_value(result).unwrap_or_default()))
                }
                // A rejection is an outcome too: accepted, and rejected.
                Err(ApiError::Rejected { result, .. }) => Ok(accepted_answer(&result)),
                Err(error) => Err(error),
            }
        }
        Some(other) => Err(ApiError::invalid(format!("mode must be sync or async, not {other:?}"))),
    }
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let id = path_id(&id, TransactionId::parse)?;
    let answer = match state.ledger.lookup(&id).await? {
        Some(Lookup::Pending) => axum::Json(json!({ "id": id.as_str(), "status": "pending" })).into_response(),
        Some(Lookup::Recent(record)) => {
            axum::Json(views::TransactionAnswer::of_record(id.as_str(), &record)).into_response()
        }
        // Beyond the engine's window: the history store keeps every outcome.
        Some(Lookup::Stored(row, record)) => {
            axum::Json(views::StoredTransactionAnswer::new(&row, &record)).into_response()
        }
        None => {
            return Err(ApiError::NotFound {
                what: "transaction",
                id: id.to_string(),
            })
        }
    };
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    transactions: Vec<TransactionRequest>,
    #[serde(default)]
    atomic: bool,
    /// With `atomic`, the id of the combined transaction.
    id: Option<TransactionId>,
}

/// Many transactions in one request and one engine batch. Independent
/// (default): one result per item, each applied or rejected on its own.
/// Atomic: all items as one transaction, all or nothing.
pub async fn batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BatchRequest>,
) -> Result<Response, ApiError> {
    limit_transactions(&state, &headers).await?;
    let count = body.transactions.len();
    if count == 0 || count > state.config.http_batch_max {
        return Err(ApiError::invalid(format!(
            "a batch has 1 to {} transactions, got {count}",
            state.config.http_batch_max
        )));
    }
    if body.atomic {
        return atomic_batch(&state, &headers, body).await;
    }
    if body.id.is_some() {
        return Err(ApiError::invalid(
            "id applies to atomic batches only; give each transaction its own id",
        ));
    }
    let mut transactions = Vec::with_capacity(count);
    for (index, item) in body.transactions.into_iter().enumerate() {
        authorize(&state, &headers, &item.ops)?;
        let id = item.id.unwrap_or_else(generated_id);
        let transaction = build(id, item.ops, item.metadata)
            .map_err(|error| ApiError::invalid(format!("transactions[{index}]: {error}")))?;
        transactions.push(transaction);
    }
    let detail = detail_preferred(&headers);
    let results = state.ledger.submit(transactions, detail).await?;
    if detail == Detail::WithoutEffects {
        let answer = BatchAnswer {
            results: results
                .iter()
                .map(|submitted| views::TransactionAnswer::minimal(submitted, true))
                .collect(),
        };
        let mut response = sized_json(StatusCode::OK, &answer, results.len() * MINIMAL_RESULT_BYTES);
        mark_minimal(&mut response);
        return Ok(response);
    }
    Ok(sized_json(
        StatusCode::OK,
        &full_results(&results),
        results.len() * RESULT_BYTES,
    ))
}

/// About what one batch result takes as JSON (an id of 20-odd characters;
/// two balances in a full one), to size the answer's buffer once.
const MINIMAL_RESULT_BYTES: usize = 96;
const RESULT_BYTES: usize = 384;

/// Serialized directly: no JSON tree for thousands of results.
#[derive(serde::Serialize)]
struct BatchAnswer<T> {
    results: Vec<T>,
}

/// Every item's full result, each marked replayed or not.
fn full_results(results: &[Submitted]) -> BatchAnswer<views::TransactionAnswer<'_>> {
    BatchAnswer {
        results: results
            .iter()
            .map(|submitted| views::TransactionAnswer::of_submitted(submitted, true))
            .collect(),
    }
}

/// Names the item of an atomic batch that failed, and its operation.
fn mark_failed_item(response: &mut Response, item: usize, op_in_item: usize) {
    response.headers_mut().insert("coffer-failed-item", item.into());
    response
        .headers_mut()
        .insert("coffer-failed-item-op", op_in_item.into());
}

/// All items or none. Items with ids are a linked chain: each is its own
/// transaction under its own id (its own idempotency key, found by
/// `GET /v1/transactions/{id}`). Items without ids are combined into one
/// transaction under the batch's id.
async fn atomic_batch(state: &AppState, headers: &HeaderMap, body: BatchRequest) -> Result<Response, ApiError> {
    let with_ids = body.transactions.iter().filter(|item| item.id.is_some()).count();
    if with_ids > 0 {
        return linked_batch(state, headers, body, with_ids).await;
    }
    let mut ops = Vec::new();
    let mut first_op_of_item = Vec::with_capacity(body.transactions.len());
    for item in body.transactions {
        if item.metadata.is_some() {
            return Err(ApiError::invalid(
                "in an atomic batch, an item carries metadata only with its own id (give every item one)",
            ));
        }
        first_op_of_item.push(ops.len());
        ops.extend(item.ops);
    }
    authorize(state, headers, &ops)?;
    let transaction = build(transaction_id(headers, body.id)?, ops, None)?;
    let mut results = state.ledger.submit(vec![transaction], Detail::WithEffects).await?;
    let submitted = results.pop().expect("one result");
    // Say which item failed, not only which op of the combined transaction.
    let item_of = |op_index: usize| {
        first_op_of_item
            .iter()
            .rposition(|first| *first <= op_index)
            .unwrap_or(0)
    };
    if let Verdict::Rejected(rejection) = submitted.record.verdict {
        let item = item_of(rejection.op_index as usize);
        let op_in_item = rejection.op_index as usize - first_op_of_item[item];
        let mut response = match answer(submitted) {
            Err(error) => error.into_response(),
            Ok(answered) => answered.into_response(),
        };
        mark_failed_item(&mut response, item, op_in_item);
        return Ok(response);
    }
    Ok(answer(submitted)?.into_response())
}

/// An atomic batch of items with ids: one linked chain, answered per item
/// (201 on a first commit, 200 on a retry of the whole batch); a rejection
/// is 422 naming the item and its operation; a batch that reuses an id of
/// another request is 409 and changes nothing.
async fn linked_batch(
    state: &AppState,
    headers: &HeaderMap,
    body: BatchRequest,
    with_ids: usize,
) -> Result<Response, ApiError> {
    if with_ids < body.transactions.len() {
        return Err(ApiError::invalid(
            "in an atomic batch, give every item an id (a linked batch) or none (one transaction)",
        ));
    }
    if body.id.is_some() || headers.contains_key("idempotency-key") {
        return Err(ApiError::invalid(
            "in a linked batch each item's id is its idempotency key: the batch takes none",
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(body.transactions.len());
    let mut transactions = Vec::with_capacity(body.transactions.len());
    for (index, item) in body.transactions.into_iter().enumerate() {
        let id = item.id.expect("every item has an id");
        if !seen.insert(id.clone()) {
            return Err(ApiError::invalid(format!(
                "transactions[{index}]: id {id} is used twice"
            )));
        }
        authorize(state, headers, &item.ops)?;
        let transaction = build(id, item.ops, item.metadata)
            .map_err(|error| ApiError::invalid(format!("transactions[{index}]: {error}")))?;
        transactions.push(transaction);
    }
    let results = state
        .ledger
        .submit(Transaction::chain(transactions), Detail::WithEffects)
        .await?;
    let conflict = results
        .iter()
        .find(|submitted| submitted.kind == Kind::IdReused)
        .or_else(|| {
            // Ids of an earlier batch in a different one: a reuse too.
            let partial = results.iter().any(|submitted| submitted.kind == Kind::NotApplied);
            partial
                .then(|| results.iter().find(|submitted| submitted.kind == Kind::Replayed))
                .flatten()
        });
    if let Some(conflict) = conflict {
        return Err(ApiError::IdReused {
            id: conflict.id.to_string(),
            original: views::record_value(conflict.id.as_str(), &conflict.record),
        });
    }
    let replayed = results.iter().all(|submitted| submitted.kind == Kind::Replayed);
    let failed = results
        .iter()
        .enumerate()
        .find_map(|(item, submitted)| match submitted.record.verdict {
            Verdict::Rejected(rejection) if rejection.code != RejectionCode::LinkedEventFailed => {
                Some((item, rejection))
            }
            _ => None,
        });
    if let Some((item, rejection)) = failed {
        let mut result = views::record_value(results[item].id.as_str(), &results[item].record);
        result["item"] = item.into();
        let mut response = ApiError::Rejected {
            code: rejection.code.as_str(),
            op_index: rejection.op_index,
            result,
            replayed,
        }
        .into_response();
        mark_failed_item(&mut response, item, rejection.op_index.into());
        return Ok(response);
    }
    let answer = full_results(&results);
    let status = if replayed { StatusCode::OK } else { StatusCode::CREATED };
    let mut response = sized_json(status, &answer, results.len() * RESULT_BYTES);
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    id: Option<TransactionId>,
    account: AccountId,
    amount: Amount,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    id: Option<TransactionId>,
    from: AccountId,
    to: AccountId,
    amount: Amount,
    metadata: Option<Metadata>,
}

enum Direction {
    FromWorld,
    ToWorld,
}

impl DepositRequest {
    /// Deposits and withdrawals are transfers with `@world` on one side.
    fn into_transfer(self, direction: Direction) -> TransferRequest {
        let (from, to) = match direction {
            Direction::FromWorld => (AccountId::world(), self.account),
            Direction::ToWorld => (self.account, AccountId::world()),
        };
        TransferRequest {
            id: self.id,
            from,
            to,
            amount: self.amount,
            metadata: self.metadata,
        }
    }
}

async fn one_transfer(state: &AppState, headers: &HeaderMap, body: TransferRequest) -> Result<Response, ApiError> {
    let op = Operation::Transfer {
        from: body.from,
        to: body.to,
        amount: body.amount,
    };
    authorize(state, headers, std::slice::from_ref(&op))?;
    limit_transactions(state, headers).await?;
    let transaction = build(transaction_id(headers, body.id)?, vec![op], body.metadata)?;
    let detail = detail_preferred(headers);
    Ok(execute(state, transaction, detail).await?.respond_in(detail))
}

/// A deposit is a transfer from `@world`.
pub async fn deposit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DepositRequest>,
) -> Result<Response, ApiError> {
    one_transfer(&state, &headers, body.into_transfer(Direction::FromWorld)).await
}

/// A withdrawal is a transfer to `@world`.
pub async fn withdrawal(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DepositRequest>,
) -> Result<Response, ApiError> {
    one_transfer(&state, &headers, body.into_transfer(Direction::ToWorld)).await
}

pub async fn transfer(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<TransferRequest>,
) -> Result<Response, ApiError> {
    one_transfer(&state, &headers, body).await
}
