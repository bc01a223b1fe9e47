//! Flash sales: products with stock that can never oversell, per-buyer
//! limits, reservations that expire, orders.
//!
//! Everything is made of ordinary accounts and transactions, so the
//! engine's guarantees (atomicity, idempotency, the journal) carry over:
//!
//! - `product:{id}` holds the stock (unit `ITEM`, floor 0: it cannot go
//!   negative, which is what "never oversell" means); its metadata keeps
//!   the product's rules. `supply:{id}` is where stock comes from.
//! - `holding:{id}:{user}` is what a buyer got; `quota:{id}:{user}` (unit
//!   `QUOTA`) starts at the per-buyer limit and each purchase spends from
//!   it, so the limit holds across reservations too.
//! - A purchase is one transaction: stock to the buyer, quota spent, money
//!   from the buyer's account to the merchant. A reservation is the same
//!   as holds that expire; confirming captures them, cancelling or expiry
//!   releases them (stock and quota come back).

use super::accounts::read_account;
use super::{authorize, build, generated_id, transaction_id, views, JsonBody, QueryParameters};
use crate::auth::Role;
use crate::error::ApiError;
use crate::rate_limit::Decision;
use crate::sequencer::{Answer, Detail, Kind, Query, Submitted};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_core::{AccountId, Amount, Balance, HoldId, HoldStatus, Metadata, Operation, TransactionId, Unit, Verdict};
use coffer_history::{OrderMetadata, OrderQuery, OrderRow, HISTORY_PAGE_MAX};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Id lengths chosen so that every derived account and hold id fits the
/// 128-byte id limit (`holding:{product}:{user}`).
pub const PRODUCT_ID_BYTES_MAX: usize = 48;
pub const USER_ID_BYTES_MAX: usize = 64;
pub const ORDER_ID_BYTES_MAX: usize = 64;
/// Items in one purchase at most.
pub const PURCHASE_QUANTITY_MAX: u128 = 1_000_000;
/// How far `supply:{id}` may go below zero: more stock than any product has.
const SUPPLY_FLOOR: i128 = -1_000_000_000_000_000_000_000_000_000_000;
const ITEM_UNIT: &str = "ITEM";
const QUOTA_UNIT: &str = "QUOTA";

fn account(text: String) -> AccountId {
    AccountId::parse(&text).expect("derived ids are built from validated parts within the length limit")
}

fn stock_account(product: &str) -> AccountId {
    account(format!("product:{product}"))
}

fn supply_account(product: &str) -> AccountId {
    account(format!("supply:{product}"))
}

fn holding_account(product: &str, user: &str) -> AccountId {
    account(format!("holding:{product}:{user}"))
}

fn quota_account(product: &str, user: &str) -> AccountId {
    account(format!("quota:{product}:{user}"))
}

fn order_hold(order: &str, part: &str) -> HoldId {
    HoldId::parse(&coffer_history::order_hold(order, part)).expect("order ids are validated within the length limit")
}

/// A product, user or order id: the id alphabet, within `max` bytes.
fn checked_name(field: &str, text: &str, max: usize) -> Result<String, ApiError> {
    AccountId::parse(text).map_err(|error| ApiError::invalid(format!("{field}: {error}")))?;
    if text.len() > max || text.starts_with('@') {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to {max} bytes and not start with @"
        )));
    }
    Ok(text.to_owned())
}

/// Products and buyers already seen, so that a purchase usually costs one
/// engine round trip. Both are caches of facts that never change (rules
/// are fixed at creation; an opened account stays), bounded by clearing.
#[derive(Default)]
pub struct FlashSale {
    rules: std::sync::Mutex<std::collections::HashMap<String, Rules>>,
    buyers: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Entries each cache keeps at most.
const CACHED_MAX: usize = 1_000_000;

impl FlashSale {
    fn rules(&self, product: &str) -> Option<Rules> {
        self.rules.lock().expect("rules lock").get(product).cloned()
    }

    fn remember_rules(&self, product: &str, rules: Rules) {
        let mut cached = self.rules.lock().expect("rules lock");
        if cached.len() >= CACHED_MAX {
            cached.clear();
        }
        cached.insert(product.to_owned(), rules);
    }

    fn known_buyer(&self, key: &str) -> bool {
        self.buyers.lock().expect("buyers lock").contains(key)
    }

    fn remember_buyer(&self, key: String) {
        let mut buyers = self.buyers.lock().expect("buyers lock");
        if buyers.len() >= CACHED_MAX {
            buyers.clear();
        }
        buyers.insert(key);
    }
}

/// A product's rules, kept in its stock account's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_buyer_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    price: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    merchant: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct RulesEnvelope {
    product: StoredRules,
}

/// The rules, parsed.
#[derive(Debug, Clone)]
struct Rules {
    per_buyer_limit: Option<Amount>,
    /// Price per item with its unit and the merchant who is paid.
    price: Option<(Amount, Unit, AccountId)>,
}

impl Rules {
    fn stored(&self) -> StoredRules {
        StoredRules {
            per_buyer_limit: self.per_buyer_limit.map(|limit| limit.value().to_string()),
            price: self.price.as_ref().map(|(price, _, _)| price.value().to_string()),
            unit: self.price.as_ref().map(|(_, unit, _)| unit.to_string()),
            merchant: self.price.as_ref().map(|(_, _, merchant)| merchant.to_string()),
        }
    }

    fn from_metadata(metadata: Option<&Metadata>) -> Option<Rules> {
        let envelope: RulesEnvelope = serde_json::from_str(metadata?.as_str()).ok()?;
        let stored = envelope.product;
        let price = match (stored.price, stored.unit, stored.merchant) {
            (Some(price), Some(unit), Some(merchant)) => Some((
                Amount::parse(&price).ok()?,
                Unit::parse(&unit).ok()?,
                AccountId::parse(&merchant).ok()?,
            )),
            _ => None,
        };
        let per_buyer_limit = stored
            .per_buyer_limit
            .map(|limit| Amount::parse(&limit))
            .transpose()
            .ok()?;
        Some(Rules { per_buyer_limit, price })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    id: String,
    stock: Option<Amount>,
    per_buyer_limit: Option<Amount>,
    price: Option<Amount>,
    unit: Option<Unit>,
    merchant: Option<AccountId>,
}

#[derive(Serialize)]
struct ProductBody<'a> {
    id: &'a str,
    /// Items left to sell.
    stock: i128,
    /// Items held by open reservations.
    reserved: i128,
    sold: i128,
    /// Every item ever stocked.
    supplied: i128,
    per_buyer_limit: Option<String>,
    price: Option<String>,
    unit: Option<String>,
    merchant: Option<String>,
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateProduct>,
) -> Result<Response, ApiError> {
    let id = checked_name("id", &body.id, PRODUCT_ID_BYTES_MAX)?;
    let price = match (body.price, body.unit, body.merchant) {
        (Some(price), Some(unit), Some(merchant)) => Some((price, unit, merchant)),
        (None, None, None) => None,
        _ => return Err(ApiError::invalid("price, unit and merchant go together")),
    };
    let rules = Rules {
        per_buyer_limit: body.per_buyer_limit,
        price,
    };
    let metadata = serde_json::to_value(RulesEnvelope {
        product: rules.stored(),
    })
    .map_err(|error| ApiError::invalid(error.to_string()))?;
    let metadata = Metadata::from_value(&metadata).map_err(|error| ApiError::invalid(error.to_string()))?;
    let item = Unit::parse(ITEM_UNIT).expect("valid unit");
    let mut ops = vec![
        Operation::Open {
            account: supply_account(&id),
            unit: item.clone(),
            min_available: Some(Balance::new(SUPPLY_FLOOR)),
            max_total: None,
            metadata: None,
        },
        Operation::Open {
            account: stock_account(&id),
            unit: item,
            min_available: None,
            max_total: None,
            metadata: Some(metadata),
        },
    ];
    if let Some(stock) = body.stock {
        ops.push(Operation::transfer(supply_account(&id), stock_account(&id), stock));
    }
    state.auth.require(&headers, Role::Admin, "manage products")?;
    let default_id = TransactionId::parse(&format!("product:{id}")).expect("valid id");
    let transaction = build(transaction_id(&headers, Some(default_id))?, ops, None)?;
    let committed = super::execute(&state, transaction, Detail::WithEffects).await?;
    let view = read_product(&state, &id).await?;
    Ok(committed.respond(&view))
}

struct ProductView {
    id: String,
    rules: Rules,
    stock: i128,
    reserved: i128,
    supplied: i128,
}

impl Serialize for ProductView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let stored = self.rules.stored();
        ProductBody {
            id: &self.id,
            stock: self.stock,
            reserved: self.reserved,
            sold: self.supplied - self.stock - self.reserved,
            supplied: self.supplied,
            per_buyer_limit: stored.per_buyer_limit,
            price: stored.price,
            unit: stored.unit,
            merchant: stored.merchant,
        }
        .serialize(serializer)
    }
}

async fn read_product(state: &AppState, id: &str) -> Result<ProductView, ApiError> {
    let not_found = || ApiError::NotFound {
        what: "product",
        id: id.to_owned(),
    };
    let stock = read_account(state, stock_account(id)).await.map_err(|_| not_found())?;
    let rules = Rules::from_metadata(stock.metadata.as_ref()).ok_or_else(not_found)?;
    let supply = read_account(state, supply_account(id)).await.map_err(|_| not_found())?;
    Ok(ProductView {
        id: id.to_owned(),
        rules,
        stock: stock.available,
        reserved: stock.frozen,
        supplied: -supply.total,
    })
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let id = checked_name("product id", &id, PRODUCT_ID_BYTES_MAX)?;
    Ok(axum::Json(read_product(&state, &id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    quantity: Amount,
    id: Option<TransactionId>,
}

pub async fn restock(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Restock>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Admin, "manage products")?;
    let id = checked_name("product id", &id, PRODUCT_ID_BYTES_MAX)?;
    read_product(&state, &id).await?;
    let op = Operation::transfer(supply_account(&id), stock_account(&id), body.quantity);
    let transaction = build(transaction_id(&headers, body.id)?, vec![op], None)?;
    let committed = super::execute(&state, transaction, Detail::WithEffects).await?;
    let view = read_product(&state, &id).await?;
    Ok(committed.respond(&view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purchase {
    user: String,
    quantity: Option<Amount>,
    order_id: Option<String>,
    reserve_ttl_ms: Option<u64>,
}

/// What each operation of a purchase is for, to name a rejection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Stock,
    Quota,
    Payment,
}

#[derive(Serialize)]
struct OrderBody<'a> {
    order_id: &'a str,
    product: &'a str,
    user: &'a str,
    quantity: String,
    amount: Option<String>,
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
    JsonBody(body): JsonBody<Purchase>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Writer, "buy")?;
    let product = checked_name("product id", &product, PRODUCT_ID_BYTES_MAX)?;
    let user = checked_name("user", &body.user, USER_ID_BYTES_MAX)?;
    let order_id = match &body.order_id {
        Some(order_id) => checked_name("order_id", order_id, ORDER_ID_BYTES_MAX)?,
        None => generated_id().to_string(),
    };
    let quantity = body.quantity.unwrap_or(Amount::new(1).expect("one is positive"));
    if quantity.value() > PURCHASE_QUANTITY_MAX {
        return Err(ApiError::invalid(format!("quantity at most {PURCHASE_QUANTITY_MAX}")));
    }
    if let Decision::Limited { retry_after_ms } = state.purchase_limiter.check(&user).await {
        return Err(ApiError::RateLimited {
            what: "purchases",
            retry_after_secs: retry_after_ms.div_ceil(1_000),
        });
    }
    let rules = match state.flash_sale.rules(&product) {
        Some(rules) => rules,
        None => {
            let rules = read_product(&state, &product).await?.rules;
            state.flash_sale.remember_rules(&product, rules.clone());
            rules
        }
    };
    ensure_buyer(&state, &product, &user, &rules).await?;
    let (ops, parts, amount) = purchase_ops(&product, &user, &order_id, quantity, &rules, body.reserve_ttl_ms)?;
    let expires_at_ms = body.reserve_ttl_ms.map(|ttl| super::now_ms().saturating_add(ttl));
    let order = OrderMetadata {
        product: product.clone(),
        user: user.clone(),
        quantity: quantity.value().to_string(),
        amount: amount.map(|amount| amount.to_string()),
        unit: rules.price.as_ref().map(|(_, unit, _)| unit.to_string()),
        reserved: body.reserve_ttl_ms.is_some(),
        expires_at_ms,
    };
    let metadata = serde_json::json!({ "order": order });
    let metadata = Metadata::from_value(&metadata).map_err(|error| ApiError::invalid(error.to_string()))?;
    let id = TransactionId::parse(&order_id).expect("checked above");
    let transaction = build(id, ops, Some(metadata))?;
    let mut results = state.submit(vec![transaction], Detail::WithoutEffects).await?;
    let submitted = results.pop().expect("one result");
    let status = if order.reserved { "reserved" } else { "completed" };
    let body = OrderBody {
        order_id: &order_id,
        product: &product,
        user: &user,
        quantity: order.quantity.clone(),
        amount: order.amount.clone(),
        unit: order.unit.clone(),
        status,
        expires_at: expires_at_ms.map(views::instant),
        seq: Some(submitted.record.sequence as i64),
        created_at: Some(views::instant(submitted.record.timestamp_ms)),
        updated_at: None,
    };
    respond_order(submitted, &parts, body)
}

/// A purchase's ops, what each is for (to name a rejection), and the price paid.
type PurchaseOps = (Vec<Operation>, Vec<Part>, Option<u128>);

/// The ops of a purchase, what each is for, and the price paid.
fn purchase_ops(
    product: &str,
    user: &str,
    order_id: &str,
    quantity: Amount,
    rules: &Rules,
    reserve_ttl_ms: Option<u64>,
) -> Result<PurchaseOps, ApiError> {
    let mut moves = vec![(
        Part::Stock,
        stock_account(product),
        holding_account(product, user),
        quantity,
    )];
    if rules.per_buyer_limit.is_some() {
        moves.push((Part::Quota, quota_account(product, user), AccountId::world(), quantity));
    }
    let mut paid = None;
    if let Some((price, _, merchant)) = &rules.price {
        let total = price
            .value()
            .checked_mul(quantity.value())
            .and_then(|total| Amount::new(total).ok())
            .ok_or_else(|| ApiError::invalid("price × quantity is out of range"))?;
        paid = Some(total.value());
        moves.push((Part::Payment, account(user.to_owned()), merchant.clone(), total));
    }
    let parts = moves.iter().map(|(part, ..)| *part).collect();
    let ops = moves
        .into_iter()
        .map(|(part, from, to, amount)| match reserve_ttl_ms {
            None => Operation::transfer(from, to, amount),
            Some(ttl_ms) => Operation::Hold {
                hold: order_hold(order_id, part.name()),
                account: from,
                amount,
                to: Some(to),
                expires_at_ms: None,
                ttl_ms: Some(ttl_ms),
            },
        })
        .collect();
    Ok((ops, parts, paid))
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Stock => coffer_history::ORDER_STOCK_PART,
            Part::Quota => "quota",
            Part::Payment => "payment",
        }
    }

    /// The purchase's own words for an engine rejection.
    fn rejection(self, code: &'static str) -> &'static str {
        match (self, code) {
            (Part::Stock, "insufficient_funds") => "sold_out",
            (Part::Quota, "insufficient_funds") => "limit_exceeded",
            _ => code,
        }
    }
}

fn respond_order(submitted: Submitted, parts: &[Part], body: OrderBody) -> Result<Response, ApiError> {
    let replayed = submitted.kind == Kind::Replayed;
    match (submitted.kind, submitted.record.verdict) {
        (Kind::IdReused, _) => super::answer(submitted).map(IntoResponse::into_response),
        (_, Verdict::Rejected(rejection)) => {
            let part = parts.get(rejection.op_index as usize).copied().unwrap_or(Part::Stock);
            Err(ApiError::Rejected {
                code: part.rejection(rejection.code.as_str()),
                op_index: rejection.op_index,
                result: views::record_value(submitted.id.as_str(), &submitted.record),
                replayed,
            })
        }
        (_, Verdict::Committed) => {
            let status = if replayed { StatusCode::OK } else { StatusCode::CREATED };
            let mut response = (status, axum::Json(body)).into_response();
            if replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            Ok(response)
        }
    }
}

/// Opens the buyer's holding and quota accounts once. The transaction id
/// is derived from the product and user, so concurrent first purchases of
/// one buyer replay one another instead of failing.
async fn ensure_buyer(state: &AppState, product: &str, user: &str, rules: &Rules) -> Result<(), ApiError> {
    let key = format!("{product}:{user}");
    if state.flash_sale.known_buyer(&key) {
        return Ok(());
    }
    let mut ops = vec![Operation::open(
        holding_account(product, user),
        Unit::parse(ITEM_UNIT).expect("valid unit"),
    )];
    if let Some(limit) = rules.per_buyer_limit {
        let quota = quota_account(product, user);
        ops.push(Operation::open(
            quota.clone(),
            Unit::parse(QUOTA_UNIT).expect("valid unit"),
        ));
        ops.push(Operation::deposit(quota, limit));
    }
    let id = TransactionId::parse(&format!("buyer:{key}")).expect("derived id within the limit");
    let mut results = state
        .submit(vec![build(id, ops, None)?], Detail::WithoutEffects)
        .await?;
    let submitted = results.pop().expect("one result");
    match submitted.record.verdict {
        Verdict::Committed => {}
        // Opened before, under an id the window and the store no longer know.
        Verdict::Rejected(rejection) if rejection.code.as_str() == "account_exists" => {}
        Verdict::Rejected(rejection) => {
            return Err(ApiError::Rejected {
                code: rejection.code.as_str(),
                op_index: rejection.op_index,
                result: views::record_value(submitted.id.as_str(), &submitted.record),
                replayed: false,
            })
        }
    }
    state.flash_sale.remember_buyer(key);
    Ok(())
}

/// Confirms (captures) or cancels (releases) a reservation.
async fn finish_reservation(
    state: &AppState,
    headers: &HeaderMap,
    order_id: &str,
    confirm: bool,
) -> Result<Response, ApiError> {
    let order_id = checked_name("order id", order_id, ORDER_ID_BYTES_MAX)?;
    let mut ops = Vec::new();
    for part in [Part::Stock, Part::Quota, Part::Payment] {
        let hold = order_hold(&order_id, part.name());
        let Answer::Hold(view) = state.sequencer.read(Query::Hold(hold.clone())).await? else {
            unreachable!("a hold query answers with a hold")
        };
        match view {
            None if part == Part::Stock => {
                return Err(ApiError::NotFound {
                    what: "reservation",
                    id: order_id,
                })
            }
            None => {}
            Some(view) if view.status != HoldStatus::Active && part == Part::Stock => {
                return Err(ApiError::Conflict {
                    code: "order_not_reserved",
                    message: format!("order {order_id} is no longer reserved: its hold is {:?}", view.status),
                })
            }
            Some(_) if confirm => ops.push(Operation::Capture {
                hold,
                amount: None,
                to: None,
            }),
            Some(_) => ops.push(Operation::Release { hold }),
        }
    }
    authorize(state, headers, &ops)?;
    let verb = if confirm { "confirm" } else { "cancel" };
    let id = TransactionId::parse(&format!("{verb}:{order_id}")).expect("derived id within the limit");
    let committed = super::execute(state, build(id, ops, None)?, Detail::WithEffects).await?;
    let status = if confirm { "confirmed" } else { "cancelled" };
    let record = &committed.submitted.record;
    Ok(committed.respond(serde_json::json!({
        "order_id": order_id,
        "status": status,
        "seq": record.sequence,
        "timestamp": views::instant(record.timestamp_ms),
    })))
}

pub async fn confirm(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    finish_reservation(&state, &headers, &id, true).await
}

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    finish_reservation(&state, &headers, &id, false).await
}

fn order_body(row: &OrderRow) -> OrderBody<'_> {
    OrderBody {
        order_id: &row.order_id,
        product: &row.product,
        user: &row.user_id,
        quantity: row.quantity.to_string(),
        amount: row.amount.map(|amount| amount.to_string()),
        unit: row.unit.clone(),
        status: &row.status,
        expires_at: row.expires_at_ms.map(|at| views::instant(at.max(0) as u64)),
        seq: Some(row.sequence),
        created_at: Some(views::instant(row.created_at_ms.max(0) as u64)),
        updated_at: Some(views::instant(row.updated_at_ms.max(0) as u64)),
    }
}

pub async fn get_order(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let id = checked_name("order id", &id, ORDER_ID_BYTES_MAX)?;
    let history = super::history::history_of(&state)?;
    history.caught_up().await?;
    let name = id.clone();
    let row = history.read(move |reader| reader.order(&name)).await?;
    let row = row.ok_or(ApiError::NotFound { what: "order", id })?;
    Ok(axum::Json(order_body(&row)).into_response())
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

const ORDER_STATUSES: [&str; 5] = ["completed", "reserved", "confirmed", "cancelled", "expired"];

pub async fn list_orders(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    QueryParameters(parameters): QueryParameters<OrderParameters>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Role::Reader, "read")?;
    let limit = super::page_limit(parameters.limit.map(u64::from), u64::from(HISTORY_PAGE_MAX))? as u32;
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
    let before = super::page_cursor(parameters.cursor.as_deref(), 'o')?;
    let history = super::history::history_of(&state)?;
    history.caught_up().await?;
    let query = OrderQuery {
        product,
        user,
        status: parameters.status,
        before,
        limit,
    };
    let rows = history.read(move |reader| reader.orders(&query)).await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|row| format!("o{}", row.sequence)))
        .flatten();
    let page = views::Page {
        data: rows.iter().map(order_body).collect(),
        next_cursor,
    };
    Ok(axum::Json(page).into_response())
}
