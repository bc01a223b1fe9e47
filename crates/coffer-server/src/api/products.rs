//! Flash-sale routes: products, purchases, orders. The rules are in
//! `flash_sale.rs`; this file turns requests into its calls and its
//! results into answers.

use super::body::{JsonBody, QueryParameters};
use super::paging::{page_cursor, page_limit};
use super::request::transaction_id;
use super::respond::answer;
use super::views::{self, instant, Page};
use crate::auth::Role;
use crate::clock::generated_id;
use crate::error::ApiError;
use crate::flash_sale::{
    checked_name, Finish, FlashSale, Placed, Price, Product, PurchaseOrder, Rules, ORDER_ID_BYTES_MAX, ORDER_STATUSES,
    PRODUCT_ID_BYTES_MAX, USER_ID_BYTES_MAX,
};
use crate::rate_limit::Decision;
use crate::sequencer::Kind;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_core::{AccountId, Amount, TransactionId, Unit};
use coffer_history::{OrderQuery, OrderRow, HISTORY_PAGE_MAX};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    id: String,
    stock: Option<Amount>,
    per_buyer_limit: Option<Amount>,
    price: Option<Amount>,
    unit: Option<Unit>,
    merchant: Option<AccountId>,
}

#[derive(Serialize)]
struct ProductAnswer<'a> {
    id: &'a str,
    /// Items left to sell.
    stock: i128,
    /// Items held by open reservations.
    reserved: i128,
    sold: i128,
    /// Every item ever stocked.
    supplied: i128,
    per_buyer_limit: Option<u128>,
    /// Per item, in `unit`'s smallest denomination.
    price: Option<u128>,
    unit: Option<String>,
    merchant: Option<String>,
}

impl<'a> From<&'a Product> for ProductAnswer<'a> {
    fn from(product: &'a Product) -> Self {
        let price = product.rules.price.as_ref();
        ProductAnswer {
            id: &product.id,
            stock: product.stock,
            reserved: product.reserved,
            sold: product.sold(),
            supplied: product.supplied,
            per_buyer_limit: product.rules.per_buyer_limit.map(|limit| limit.value()),
            price: price.map(|price| price.amount.value()),
            unit: price.map(|price| price.unit.to_string()),
            merchant: price.map(|price| price.merchant.to_string()),
        }
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateProductRequest>,
) -> Result<Response, ApiError> {
    let id = checked_name("id", &body.id, PRODUCT_ID_BYTES_MAX)?;
    let price = match (body.price, body.unit, body.merchant) {
        (Some(amount), Some(unit), Some(merchant)) => Some(Price { amount, unit, merchant }),
        (None, None, None) => None,
        _ => return Err(ApiError::invalid("price, unit and merchant go together")),
    };
    let rules = Rules {
        per_buyer_limit: body.per_buyer_limit,
        price,
    };
    state.auth.require(&headers, Role::Admin, "manage products")?;
    let transaction = transaction_id(&headers, Some(FlashSale::creation_id(&id)))?;
    let committed = answer(state.flash_sale.create(transaction, &id, &rules, body.stock).await?)?;
    let product = state.flash_sale.product(&id).await?;
    Ok(committed.respond(ProductAnswer::from(&product)))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let id = checked_name("product id", &id, PRODUCT_ID_BYTES_MAX)?;
    let product = state.flash_sale.product(&id).await?;
    Ok(axum::Json(ProductAnswer::from(&product)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    quantity: Amount,
    id: Option<TransactionId>,
}

pub async fn restock(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RestockRequest>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Admin, "manage products")?;
    let id = checked_name("product id", &id, PRODUCT_ID_BYTES_MAX)?;
    let transaction = transaction_id(&headers, body.id)?;
    let committed = answer(state.flash_sale.restock(transaction, &id, body.quantity).await?)?;
    let product = state.flash_sale.product(&id).await?;
    Ok(committed.respond(ProductAnswer::from(&product)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    user: String,
    quantity: Option<Amount>,
    order_id: Option<String>,
    reserve_ttl_ms: Option<u64>,
}

#[derive(Serialize)]
struct OrderAnswer<'a> {
    order_id: &'a str,
    product: &'a str,
    user: &'a str,
    quantity: u128,
    /// What the buyer paid, in `unit`'s smallest denomination.
    amount: Option<u128>,
    unit: Option<String>,
    status: &'a str,
    expires_at: Option<String>,
    seq: Option<i64>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

pub async fn purchase(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(product): Path<String>,
    JsonBody(body): JsonBody<PurchaseRequest>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Writer, "buy")?;
    let order_id = body.order_id.unwrap_or_else(|| generated_id().to_string());
    let quantity = body.quantity.unwrap_or(Amount::new(1).expect("one is positive"));
    let order = PurchaseOrder::new(&product, &body.user, order_id, quantity, body.reserve_ttl_ms)?;
    if let Decision::Limited { retry_after_ms } = state.purchase_limiter.check(order.user()).await {
        return Err(ApiError::RateLimited {
            what: "purchases",
            retry_after_secs: retry_after_ms.div_ceil(1_000),
        });
    }
    let order_id = order.order_id().to_owned();
    respond_order(&order_id, state.flash_sale.purchase(order).await?)
}

fn respond_order(order_id: &str, placed: Placed) -> Result<Response, ApiError> {
    let refusal = placed.refusal();
    let Placed {
        order,
        quantity,
        paid,
        submitted,
        ..
    } = placed;
    let replayed = submitted.kind == Kind::Replayed;
    if submitted.kind == Kind::IdReused {
        return answer(submitted).map(IntoResponse::into_response);
    }
    if let Some((refusal, op_index)) = refusal {
        // The result inside the error names the refusal as the error does.
        let mut result = views::record_value(submitted.id.as_str(), &submitted.record);
        result["code"] = refusal.code().into();
        return Err(ApiError::Rejected {
            code: refusal.code(),
            op_index,
            result,
            replayed,
        });
    }
    let body = OrderAnswer {
        order_id,
        product: &order.product,
        user: &order.user,
        quantity: quantity.value(),
        amount: paid,
        unit: order.unit.clone(),
        status: if order.reserved { "reserved" } else { "completed" },
        expires_at: order.expires_at_ms.map(instant),
        seq: Some(submitted.record.sequence as i64),
        created_at: Some(instant(submitted.record.timestamp_ms)),
        updated_at: None,
    };
    let status = if replayed { StatusCode::OK } else { StatusCode::CREATED };
    let mut response = (status, axum::Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Confirms (captures) or cancels (releases) a reservation.
async fn finish(state: &AppState, headers: &HeaderMap, order_id: &str, finish: Finish) -> Result<Response, ApiError> {
    let order_id = checked_name("order id", order_id, ORDER_ID_BYTES_MAX)?;
    state.auth.require(headers, Role::Writer, "write")?;
    let committed = answer(state.flash_sale.finish(&order_id, finish).await?)?;
    let status = match finish {
        Finish::Confirm => "confirmed",
        Finish::Cancel => "cancelled",
    };
    let record = &committed.submitted.record;
    Ok(committed.respond(serde_json::json!({
        "order_id": order_id,
        "status": status,
        "seq": record.sequence,
        "timestamp": instant(record.timestamp_ms),
    })))
}

pub async fn confirm(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    finish(&state, &headers, &id, Finish::Confirm).await
}

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    finish(&state, &headers, &id, Finish::Cancel).await
}

fn order_answer(row: &OrderRow) -> OrderAnswer<'_> {
    OrderAnswer {
        order_id: &row.order_id,
        product: &row.product,
        user: &row.user_id,
        quantity: row.quantity.unsigned_abs(),
        amount: row.amount.map(i128::unsigned_abs),
        unit: row.unit.clone(),
        status: &row.status,
        expires_at: row.expires_at_ms.map(|at| instant(at.max(0) as u64)),
        seq: Some(row.sequence),
        created_at: Some(instant(row.created_at_ms.max(0) as u64)),
        updated_at: Some(instant(row.updated_at_ms.max(0) as u64)),
    }
}

pub async fn get_order(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let id = checked_name("order id", &id, ORDER_ID_BYTES_MAX)?;
    let row = state.flash_sale.order(&id).await?;
    Ok(axum::Json(order_answer(&row)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderParameters {
    product: Option<String>,
    user: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list_orders(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    QueryParameters(parameters): QueryParameters<OrderParameters>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let limit = page_limit(parameters.limit.map(u64::from), u64::from(HISTORY_PAGE_MAX))? as u32;
    if let Some(status) = &parameters.status {
        if !ORDER_STATUSES.contains(&status.as_str()) {
            return Err(ApiError::invalid(format!("status must be one of {ORDER_STATUSES:?}")));
        }
    }
    let product = parameters
        .product
        .map(|product| checked_name("product", &product, PRODUCT_ID_BYTES_MAX))
        .transpose()?;
    let user = parameters
        .user
        .map(|user| checked_name("user", &user, USER_ID_BYTES_MAX))
        .transpose()?;
    let before = page_cursor(parameters.cursor.as_deref(), 'o')?;
    let query = OrderQuery {
        product,
        user,
        status: parameters.status,
        before,
        limit,
    };
    let (rows, next) = state.flash_sale.orders(query).await?;
    let next_cursor = next.map(|cursor| format!("o{cursor}"));
    let page = Page {
        data: rows.iter().map(order_answer).collect(),
        next_cursor,
    };
    Ok(axum::Json(page).into_response())
}
