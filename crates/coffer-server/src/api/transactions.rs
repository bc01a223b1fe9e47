use super::body::{JsonBody, QueryParameters};
use super::openapi::{
    IdempotencyHeader, NotFound, PreferHeader, RateLimited, ReadErrors, UserHeader, WriteErrors, REPLAYED,
};
use super::request::{authorize, build, detail_preferred, limit_transactions, path_id, transaction_id};
use super::respond::{answer, execute, mark_minimal, sized_json, TransactionWritten};
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
use std::sync::Arc;

/// `{id?, ops, metadata?}`: the same JSON as a Kafka command.
pub type TransactionRequest = coffer_core::Command;

/// `202 Accepted` with a write's first outcome.
fn accepted_answer(result: &serde_json::Value) -> Response {
    (StatusCode::ACCEPTED, axum::Json(result)).into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModeParameters {
    /// `sync` (default): answered with the outcome. `async`: accepted once durable, 202; with Kafka ingestion
    /// through the commands topic (`pending` until applied), else applied before the answer.
    #[param(inline)]
    mode: Option<Mode>,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Sync,
    Async,
}

fn parse(state: &AppState, headers: &HeaderMap, body: TransactionRequest) -> Result<Transaction, ApiError> {
    authorize(state, headers, &body.ops)?;
    build(transaction_id(headers, body.id)?, body.ops, body.metadata)
}

/// Apply an atomic transaction
///
/// Its operations apply all or none, in order, under one idempotency key.
#[utoipa::path(
    post, path = "/v1/transactions", tag = "transactions", operation_id = "createTransaction",
    params(ModeParameters, IdempotencyHeader, UserHeader, PreferHeader),
    request_body = TransactionRequest,
    responses(
        (status = 201, description = "Committed", body = views::TransactionAnswer,
         links(
             ("transaction" = (operation_id = "getTransaction", parameters(("id" = "$response.body#/id")))),
         )),
        (status = 200, description = REPLAYED, body = views::TransactionAnswer),
        (status = 202, description = "mode=async: accepted. With Kafka ingestion: in the commands topic, pending \
                                      until applied. Without: applied, with its outcome (committed or rejected).",
         body = views::LookupAnswer),
        WriteErrors, RateLimited,
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    QueryParameters(query): QueryParameters<ModeParameters>,
    JsonBody(body): JsonBody<TransactionRequest>,
) -> Result<Response, ApiError> {
    let transaction = parse(&state, &headers, body)?;
    limit_transactions(&state, &headers).await?;
    match query.mode {
        None | Some(Mode::Sync) => {
            let detail = detail_preferred(&headers);
            Ok(execute(&state, transaction, detail).await?.respond_in(detail))
        }
        Some(Mode::Async) => {
            if let Some(kafka) = state.kafka.as_ref().filter(|kafka| kafka.takes_async()) {
                // Through the commands topic: accepted once the broker has
                // it, applied later (`GET` says `pending` until then).
                let id = transaction.id().to_string();
                kafka.produce(&transaction).await?;
                let body = axum::Json(views::PendingAnswer::new(&id));
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
    }
}

/// Read a transaction's outcome
///
/// Within the engine's idempotency window from memory; older ones from the history store, with their
/// operations and effects.
#[utoipa::path(
    get, path = "/v1/transactions/{id}", tag = "transactions", operation_id = "getTransaction",
    params(("id" = TransactionId, Path, description = "The transaction id")),
    responses(
        (status = 200, description = "Its outcome; `pending` while a Kafka command waits to be applied, or while a \
         cluster's transaction across shards runs its steps (listed)",
         body = views::LookupAnswer),
        ReadErrors, NotFound, super::openapi::HistoryUnavailable,
    ),
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let id = path_id(&id, TransactionId::parse)?;
    let found = state.ledger.lookup(&id).await?;
    let answer = match &found {
        Some(Lookup::Pending(steps)) => {
            views::LookupAnswer::Pending(views::PendingAnswer::new(id.as_str()).with_steps(steps))
        }
        Some(Lookup::Recent(record)) => {
            views::LookupAnswer::Recent(views::TransactionAnswer::of_record(id.as_str(), record))
        }
        // Beyond the engine's window: the history store keeps every outcome.
        Some(Lookup::Stored(row, record)) => {
            views::LookupAnswer::Stored(views::StoredTransactionAnswer::new(row, record))
        }
        None => {
            return Err(ApiError::NotFound {
                what: "transaction",
                id: id.to_string(),
            })
        }
    };
    Ok(axum::Json(answer).into_response())
}

/// Many transactions in one request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// At most `--http-batch-max` (10,000 by default).
    #[schema(min_items = 1, max_items = 10_000)]
    transactions: Vec<TransactionRequest>,
    /// All items or none (see the operation's description).
    #[serde(default)]
    atomic: bool,
    /// Atomic batches of items without ids: the id of the combined transaction.
    id: Option<TransactionId>,
}

const _: () = assert!(
    crate::config::HTTP_BATCH_MAX_DEFAULT == 10_000,
    "max_items of BatchRequest::transactions"
);

/// One result per item.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct BatchAnswer<T> {
    results: Vec<T>,
}

/// Many transactions in one request
///
/// One engine batch. Independent (default): each item applies or is rejected on its own. Atomic, items
/// without ids: one transaction of all their operations, under the batch's id. Atomic, every item with its own
/// id (and metadata): a linked batch, all or none, each item its own idempotency key found by
/// `GET /v1/transactions/{id}`; a rejection is 422 naming the item (`Coffer-Failed-Item`,
/// `Coffer-Failed-Item-Op`, `details.transaction.item`); the whole batch retried answers the same; a batch that
/// reuses an id of another request is 409 and changes nothing.
#[utoipa::path(
    post, path = "/v1/transactions/batch", tag = "transactions", operation_id = "createTransactionBatch",
    params(IdempotencyHeader, UserHeader, PreferHeader),
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Independent: one result per item (`replayed` says which answer an earlier \
                                      submission); atomic and retried: as first answered", body = BatchAnswer<views::TransactionAnswer>),
        (status = 201, description = "Atomic, committed: the combined transaction, or one result per item of a \
                                      linked batch", body = BatchAnswer<views::TransactionAnswer>),
        WriteErrors, RateLimited,
    ),
)]
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
    if body.id.is_some() || headers.contains_key("idempotency-key") {
        return Err(ApiError::unprocessable(
            "an id (or Idempotency-Key) applies to atomic batches only; give each transaction its own id",
        ));
    }
    let mut transactions = Vec::with_capacity(count);
    for (index, item) in body.transactions.into_iter().enumerate() {
        authorize(&state, &headers, &item.ops)?;
        let id = item.id.unwrap_or_else(generated_id);
        let transaction = build(id, item.ops, item.metadata).map_err(|error| error.of_item(index))?;
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
            return Err(ApiError::unprocessable(
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
        return Err(ApiError::unprocessable(
            "in an atomic batch, give every item an id (a linked batch) or none (one transaction)",
        ));
    }
    if body.id.is_some() || headers.contains_key("idempotency-key") {
        return Err(ApiError::unprocessable(
            "in a linked batch each item's id is its idempotency key: the batch takes none",
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(body.transactions.len());
    let mut transactions = Vec::with_capacity(body.transactions.len());
    for (index, item) in body.transactions.into_iter().enumerate() {
        let id = item.id.expect("every item has an id");
        if !seen.insert(id.clone()) {
            return Err(ApiError::unprocessable(format!(
                "transactions[{index}]: id {id} is used twice"
            )));
        }
        authorize(state, headers, &item.ops)?;
        let transaction = build(id, item.ops, item.metadata).map_err(|error| error.of_item(index))?;
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

/// Money in from (deposit) or out to (withdrawal) `@world`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// The idempotency key (or the `Idempotency-Key` header).
    id: Option<TransactionId>,
    account: AccountId,
    amount: Amount,
    metadata: Option<Metadata>,
}

/// Money from one account to another.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The idempotency key (or the `Idempotency-Key` header).
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

/// Deposit
///
/// A transfer from `@world`, the unit's implicit source.
#[utoipa::path(
    post, path = "/v1/deposits", tag = "transactions", operation_id = "deposit",
    params(IdempotencyHeader, UserHeader, PreferHeader),
    request_body = DepositRequest,
    responses(TransactionWritten, WriteErrors, RateLimited),
)]
pub async fn deposit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DepositRequest>,
) -> Result<Response, ApiError> {
    one_transfer(&state, &headers, body.into_transfer(Direction::FromWorld)).await
}

/// Withdraw
///
/// A transfer to `@world`, the unit's implicit sink.
#[utoipa::path(
    post, path = "/v1/withdrawals", tag = "transactions", operation_id = "withdraw",
    params(IdempotencyHeader, UserHeader, PreferHeader),
    request_body = DepositRequest,
    responses(TransactionWritten, WriteErrors, RateLimited),
)]
pub async fn withdrawal(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DepositRequest>,
) -> Result<Response, ApiError> {
    one_transfer(&state, &headers, body.into_transfer(Direction::ToWorld)).await
}

/// Transfer
///
/// `from.available -= amount; to.available += amount`, within the floors and ceilings.
#[utoipa::path(
    post, path = "/v1/transfers", tag = "transactions", operation_id = "transfer",
    params(IdempotencyHeader, UserHeader, PreferHeader),
    request_body = TransferRequest,
    responses(TransactionWritten, WriteErrors, RateLimited),
)]
pub async fn transfer(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<TransferRequest>,
) -> Result<Response, ApiError> {
    one_transfer(&state, &headers, body).await
}
