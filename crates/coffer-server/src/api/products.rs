//! Flash-sale routes: products, purchases, orders. The rules are in
//! `flash_sale.rs`; this file turns requests into its calls and its
//! results into answers.

use super::body::{JsonBody, QueryParameters};
use super::openapi::{NotFound, RateLimited, ReadErrors, WriteErrors, REPLAYED};
use super::paging::{page_cursor, page_limit};
use super::request::transaction_id;
use super::respond::answer;
use super::views::{self, instant, Page};
use crate::auth::Role;
use crate::clock::generated_id;
use crate::error::ApiError;
use crate::flash_sale::{
    checked_name, Finish, FlashSale, Placed, Price, Product, PurchaseOrder, Rules, ORDER_ID_BYTES_MAX,
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

/// Product, user and order names as `checked_name` takes them, for the
/// API document: the id alphabet without braces, not starting with `@`.
macro_rules! name_schema {
    ($name:ident, $bytes_max:expr, $description:literal, $example:literal) => {
        pub(super) struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some(1))
                    .max_length(Some($bytes_max))
                    .pattern(Some("^[A-Za-z0-9_.:-][A-Za-z0-9_.:@-]*$"))
                    .description(Some($description))
                    .examples([$example])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

name_schema!(
    ProductName,
    PRODUCT_ID_BYTES_MAX,
    "A product id: 1-48 bytes of A-Z a-z 0-9 _ . : @ -, not starting with @",
    "sneaker-42"
);
name_schema!(
    UserName,
    USER_ID_BYTES_MAX,
    "A buyer: 1-64 bytes of A-Z a-z 0-9 _ . : @ -, not starting with @",
    "user-7"
);
name_schema!(
    OrderName,
    ORDER_ID_BYTES_MAX,
    "An order id: 1-64 bytes of A-Z a-z 0-9 _ . : @ -, not starting with @",
    "order-19"
);

/// A product to sell.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    /// The product id.
    #[schema(value_type = ProductName)]
    id: String,
    /// Units in stock at first.
    stock: Option<Amount>,
    /// The most one buyer may hold, over all their orders.
    per_buyer_limit: Option<Amount>,
    /// The price of one unit; with `unit` and `merchant`, or none of the three (free items).
    price: Option<Amount>,
    unit: Option<Unit>,
    /// The account paid on a purchase.
    merchant: Option<AccountId>,
}

/// A product and its stock.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Product)]
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

/// Create a product
///
/// Creating the same product again with the same definition answers it (200).
#[utoipa::path(
    post, path = "/v1/products", tag = "flash sales", operation_id = "createProduct",
    request_body = CreateProductRequest,
    responses(
        (status = 201, description = "Created: the product", body = ProductAnswer,
         links(
             ("product" = (operation_id = "getProduct", parameters(("id" = "$response.body#/id")))),
             ("restock" = (operation_id = "restockProduct", parameters(("id" = "$response.body#/id")))),
             ("purchase" = (operation_id = "purchase", parameters(("id" = "$response.body#/id")))),
         )),
        (status = 200, description = REPLAYED, body = ProductAnswer),
        WriteErrors,
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateProductRequest>,
) -> Result<Response, ApiError> {
    let id = checked_name("id", &body.id, PRODUCT_ID_BYTES_MAX)?;
    let price = match (body.price, body.unit, body.merchant) {
        (Some(amount), Some(unit), Some(merchant)) => Some(Price { amount, unit, merchant }),
        (None, None, None) => None,
        _ => return Err(ApiError::unprocessable("price, unit and merchant go together")),
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

/// Read a product
#[utoipa::path(
    get, path = "/v1/products/{id}", tag = "flash sales", operation_id = "getProduct",
    params(("id" = ProductName, Path, description = "The product id")),
    responses((status = 200, description = "The product and its stock", body = ProductAnswer), ReadErrors, NotFound),
)]
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

/// Units to add to a product's stock.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    /// Units added to the stock.
    quantity: Amount,
    /// The idempotency key (or the `Idempotency-Key` header).
    id: Option<TransactionId>,
}

/// Restock a product
#[utoipa::path(
    post, path = "/v1/products/{id}/restock", tag = "flash sales", operation_id = "restockProduct",
    params(("id" = ProductName, Path, description = "The product id"),
           super::openapi::IdempotencyHeader),
    request_body = RestockRequest,
    responses(
        (status = 201, description = "Restocked: the product", body = ProductAnswer),
        (status = 200, description = REPLAYED, body = ProductAnswer),
        WriteErrors, NotFound,
    ),
)]
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

/// A purchase or reservation.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// The buyer (per-buyer limits and rate limits count per user).
    #[schema(value_type = UserName)]
    user: String,
    /// Units bought; 1 when absent.
    #[schema(value_type = Option<PurchaseQuantity>)]
    quantity: Option<Amount>,
    /// The order's id, its idempotency key; made up when absent (then a retry buys again).
    #[schema(value_type = Option<OrderName>)]
    order_id: Option<String>,
    /// Reserve for this long instead of buying (1 ms to a year): the order is `reserved` until confirmed,
    /// cancelled or expired.
    #[serde(default, deserialize_with = "coffer_core::deserialize_whole_number")]
    #[schema(minimum = 1, maximum = 31_622_400_000_u64)]
    reserve_ttl_ms: Option<u64>,
}

/// A purchase's quantity: an `Amount` of at most `PURCHASE_QUANTITY_MAX`.
struct PurchaseQuantity;

const _: () = assert!(
    crate::flash_sale::PURCHASE_QUANTITY_MAX == 1_000_000,
    "PurchaseQuantity spells it out"
);

impl utoipa::PartialSchema for PurchaseQuantity {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let number = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(1_000_000));
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^([1-9][0-9]{0,5}|1000000)$"));
        OneOfBuilder::new()
            .item(number)
            .item(text)
            .description(Some("1 to 1,000,000 units, as a number or a decimal string"))
            .into()
    }
}

impl utoipa::ToSchema for PurchaseQuantity {}

/// An order's state.
#[derive(Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Bought outright.
    Completed,
    /// Reserved until confirmed, cancelled or expired.
    Reserved,
    Confirmed,
    Cancelled,
    Expired,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Completed => "completed",
            OrderStatus::Reserved => "reserved",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }
}

/// An order: a purchase or a reservation.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Order)]
struct OrderAnswer<'a> {
    order_id: &'a str,
    product: &'a str,
    user: &'a str,
    quantity: u128,
    /// What the buyer paid, in `unit`'s smallest denomination.
    amount: Option<u128>,
    unit: Option<String>,
    #[schema(value_type = OrderStatus)]
    status: &'a str,
    /// When a reservation lapses.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    seq: Option<i64>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    updated_at: Option<String>,
}

/// Buy (or reserve) units of a product
///
/// Never oversells: a purchase beyond the stock is refused (`sold_out`, 422), beyond the buyer's limit too
/// (`limit_exceeded`). Retried under its `order_id` it answers the order again (200).
#[utoipa::path(
    post, path = "/v1/products/{id}/purchase", tag = "flash sales", operation_id = "purchase",
    params(("id" = ProductName, Path, description = "The product id")),
    request_body = PurchaseRequest,
    responses(
        (status = 201, description = "Bought or reserved: the order", body = OrderAnswer,
         links(
             ("order" = (operation_id = "getOrder", parameters(("id" = "$response.body#/order_id")))),
             ("confirm" = (operation_id = "confirmOrder", parameters(("id" = "$response.body#/order_id")))),
             ("cancel" = (operation_id = "cancelOrder", parameters(("id" = "$response.body#/order_id")))),
         )),
        (status = 200, description = REPLAYED, body = OrderAnswer),
        WriteErrors, NotFound, RateLimited,
    ),
)]
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
    Ok(committed.respond(FinishAnswer {
        order_id: &order_id,
        status,
        seq: record.sequence,
        timestamp: instant(record.timestamp_ms),
    }))
}

/// A reservation confirmed or cancelled.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = OrderFinished)]
struct FinishAnswer<'a> {
    order_id: &'a str,
    /// `confirmed` or `cancelled`.
    #[schema(value_type = OrderStatus)]
    status: &'static str,
    seq: u64,
    #[schema(format = DateTime)]
    timestamp: String,
}

/// Confirm a reservation
///
/// The reserved units are sold (and paid, for priced products). Confirming again answers the same (200).
#[utoipa::path(
    post, path = "/v1/orders/{id}/confirm", tag = "flash sales", operation_id = "confirmOrder",
    params(("id" = OrderName, Path, description = "The order id")),
    responses(
        (status = 201, description = "Confirmed", body = FinishAnswer),
        (status = 200, description = REPLAYED, body = FinishAnswer),
        WriteErrors, NotFound,
    ),
)]
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    finish(&state, &headers, &id, Finish::Confirm).await
}

/// Cancel a reservation
///
/// The reserved units return to the stock. Cancelling again answers the same (200).
#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "flash sales", operation_id = "cancelOrder",
    params(("id" = OrderName, Path, description = "The order id")),
    responses(
        (status = 201, description = "Cancelled", body = FinishAnswer),
        (status = 200, description = REPLAYED, body = FinishAnswer),
        WriteErrors, NotFound,
    ),
)]
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

/// Read an order
#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "flash sales", operation_id = "getOrder",
    params(("id" = OrderName, Path, description = "The order id")),
    responses((status = 200, description = "The order", body = OrderAnswer), ReadErrors, NotFound, super::openapi::HistoryUnavailable),
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrderParameters {
    /// Orders of this product.
    #[param(value_type = Option<ProductName>)]
    product: Option<String>,
    /// Orders of this buyer.
    #[param(value_type = Option<UserName>)]
    user: Option<String>,
    status: Option<OrderStatus>,
    /// Orders per page, newest first.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^o[0-9]{1,18}$")]
    cursor: Option<String>,
}

const _: () = assert!(HISTORY_PAGE_MAX == 1_000, "the maximum of OrderParameters::limit");

/// List orders
///
/// Newest first, from the history store; filtered by product, buyer and status.
#[utoipa::path(
    get, path = "/v1/orders", tag = "flash sales", operation_id = "listOrders",
    params(OrderParameters),
    responses(
        (status = 200, description = "A page of orders", body = Page<OrderAnswer>),
        (status = 422, description = "`unprocessable_request`: a well-formed cursor not issued for these filters",
         body = crate::error::ErrorAnswer),
        ReadErrors, super::openapi::HistoryUnavailable,
    ),
)]
pub async fn list_orders(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    QueryParameters(parameters): QueryParameters<OrderParameters>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let limit = page_limit(parameters.limit.map(u64::from), u64::from(HISTORY_PAGE_MAX))? as u32;
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
        status: parameters.status.map(|status| status.as_str().to_owned()),
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
