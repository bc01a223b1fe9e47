//! Flash sales: products with stock that can never oversell, per-buyer
//! limits, reservations that expire, orders. The rules live here; the HTTP
//! handlers in `api/products.rs` only translate.
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

use crate::clock::now_ms;
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::sequencer::{Detail, Kind, Submitted};
use coffer_core::{
    AccountId, Amount, Balance, HoldId, HoldStatus, Metadata, Operation, Rejection, RejectionCode, Transaction,
    TransactionId, Unit, Verdict,
};
use coffer_history::{OrderMetadata, OrderQuery, OrderRow};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Id lengths chosen so that every derived account and hold id fits the
/// 128-byte id limit (`holding:{product}:{user}`, `order{product}:{order}:payment`).
pub const PRODUCT_ID_BYTES_MAX: usize = 48;
pub const USER_ID_BYTES_MAX: usize = 64;
pub const ORDER_ID_BYTES_MAX: usize = 64;
const _: () = assert!(
    "holding:{".len() + PRODUCT_ID_BYTES_MAX + "}:".len() + USER_ID_BYTES_MAX <= coffer_core::limits::ID_BYTES_MAX
);
const _: () = assert!(
    "order{".len() + PRODUCT_ID_BYTES_MAX + "}:".len() + ORDER_ID_BYTES_MAX + ":payment".len()
        <= coffer_core::limits::ID_BYTES_MAX
);
const _: () = assert!("confirm:".len() + ORDER_ID_BYTES_MAX <= coffer_core::limits::ID_BYTES_MAX);
/// Items in one purchase at most.
pub const PURCHASE_QUANTITY_MAX: u128 = 1_000_000;
/// How far `supply:{id}` may go below zero: more stock than any product has.
const SUPPLY_FLOOR: i128 = -1_000_000_000_000_000_000_000_000_000_000;
const ITEM_UNIT: &str = "ITEM";
const QUOTA_UNIT: &str = "QUOTA";
/// Entries each cache keeps at most.
const CACHED_MAX: usize = 1_000_000;
/// Where an order page's cursor keeps its history store (`Ledger::history_stores`);
/// the order's sequence in that store lies below.
const CURSOR_STORE_SHIFT: u32 = 48;

fn account(text: String) -> AccountId {
    AccountId::parse(&text).expect("derived ids are built from validated parts within the length limit")
}

/// How a product's accounts and reservation holds are named. A single node
/// names them plainly (`product:phone`, `holding:phone:u1`); a cluster puts
/// the product id in braces, as their shard key (`product:{phone}`,
/// `holding:{phone}:u1`, `order{phone}:o1:stock`), so that everything a
/// purchase touches lies in its product's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Plain,
    Sharded,
}

impl Naming {
    /// The product id as it appears in derived ids.
    fn tag(self, product: &str) -> String {
        match self {
            Naming::Plain => product.to_owned(),
            Naming::Sharded => format!("{{{product}}}"),
        }
    }

    fn stock_account(self, product: &str) -> AccountId {
        account(format!("product:{}", self.tag(product)))
    }

    fn supply_account(self, product: &str) -> AccountId {
        account(format!("supply:{}", self.tag(product)))
    }

    fn holding_account(self, product: &str, user: &str) -> AccountId {
        account(format!("holding:{}:{user}", self.tag(product)))
    }

    fn quota_account(self, product: &str, user: &str) -> AccountId {
        account(format!("quota:{}:{user}", self.tag(product)))
    }

    fn order_hold(self, product: &str, order: &str, part: Part) -> HoldId {
        let shard_key = (self == Naming::Sharded).then_some(product);
        HoldId::parse(&coffer_history::order_hold(order, part.name(), shard_key))
            .expect("order ids are validated within the length limit")
    }
}

fn unit(name: &str) -> Unit {
    Unit::parse(name).expect("valid unit")
}

/// A product, user or order id: the plain id alphabet (no `{…}`: these
/// names become parts of transaction and hold ids), within `max` bytes.
pub fn checked_name(field: &str, text: &str, max: usize) -> Result<String, ApiError> {
    if text.contains(['{', '}']) {
        return Err(ApiError::invalid(format!("{field} must not contain {{ or }}")));
    }
    AccountId::parse(text).map_err(|error| ApiError::invalid(format!("{field}: {error}")))?;
    if text.len() > max || text.starts_with('@') {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to {max} bytes and not start with @"
        )));
    }
    Ok(text.to_owned())
}

/// Why a purchase was refused, in the sale's own words where it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The stock is short.
    SoldOut,
    /// The buyer's quota is short.
    LimitExceeded,
    /// Any other ledger rule (the buyer's money, a closed account, ...).
    Ledger(RejectionCode),
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::SoldOut => "sold_out",
            Refusal::LimitExceeded => "limit_exceeded",
            Refusal::Ledger(code) => code.as_str(),
        }
    }
}

/// What each operation of a purchase is for, to name a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Stock,
    Quota,
    Payment,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Stock => coffer_history::ORDER_STOCK_PART,
            Part::Quota => "quota",
            Part::Payment => "payment",
        }
    }

    fn refusal(self, code: RejectionCode) -> Refusal {
        match (self, code) {
            (Part::Stock, RejectionCode::InsufficientFunds) => Refusal::SoldOut,
            (Part::Quota, RejectionCode::InsufficientFunds) => Refusal::LimitExceeded,
            _ => Refusal::Ledger(code),
        }
    }
}

/// The price per item, its unit, and the merchant who is paid.
#[derive(Debug, Clone)]
pub struct Price {
    pub amount: Amount,
    pub unit: Unit,
    pub merchant: AccountId,
}

/// A product's rules, fixed at creation and kept in its stock account's
/// metadata.
#[derive(Debug, Clone)]
pub struct Rules {
    pub per_buyer_limit: Option<Amount>,
    pub price: Option<Price>,
}

/// The rules as stored: decimal text, so that any amount round-trips.
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

impl Rules {
    fn stored(&self) -> StoredRules {
        StoredRules {
            per_buyer_limit: self.per_buyer_limit.map(|limit| limit.value().to_string()),
            price: self.price.as_ref().map(|price| price.amount.value().to_string()),
            unit: self.price.as_ref().map(|price| price.unit.to_string()),
            merchant: self.price.as_ref().map(|price| price.merchant.to_string()),
        }
    }

    fn metadata(&self) -> Result<Metadata, ApiError> {
        let value = serde_json::to_value(RulesEnvelope { product: self.stored() })
            .map_err(|error| ApiError::invalid(error.to_string()))?;
        Metadata::from_value(&value).map_err(|error| ApiError::invalid(error.to_string()))
    }

    fn from_metadata(metadata: Option<&Metadata>) -> Option<Rules> {
        let envelope: RulesEnvelope = serde_json::from_str(metadata?.as_str()).ok()?;
        let stored = envelope.product;
        let price = match (stored.price, stored.unit, stored.merchant) {
            (Some(price), Some(unit), Some(merchant)) => Some(Price {
                amount: Amount::parse(&price).ok()?,
                unit: Unit::parse(&unit).ok()?,
                merchant: AccountId::parse(&merchant).ok()?,
            }),
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

/// A product as it stands.
pub struct Product {
    pub id: String,
    pub rules: Rules,
    /// Items left to sell.
    pub stock: i128,
    /// Items held by open reservations.
    pub reserved: i128,
    /// Every item ever stocked.
    pub supplied: i128,
}

impl Product {
    pub fn sold(&self) -> i128 {
        self.supplied - self.stock - self.reserved
    }
}

/// A purchase as asked for; `new` checks it.
pub struct PurchaseOrder {
    product: String,
    user: String,
    order_id: String,
    quantity: Amount,
    /// A reservation that expires after this long, else a completed sale.
    reserve_ttl_ms: Option<u64>,
}

impl PurchaseOrder {
    pub fn new(
        product: &str,
        user: &str,
        order_id: String,
        quantity: Amount,
        reserve_ttl_ms: Option<u64>,
    ) -> Result<Self, ApiError> {
        let product = checked_name("product id", product, PRODUCT_ID_BYTES_MAX)?;
        let user = checked_name("user", user, USER_ID_BYTES_MAX)?;
        let order_id = checked_name("order_id", &order_id, ORDER_ID_BYTES_MAX)?;
        if quantity.value() > PURCHASE_QUANTITY_MAX {
            return Err(ApiError::invalid(format!("quantity at most {PURCHASE_QUANTITY_MAX}")));
        }
        Ok(PurchaseOrder {
            product,
            user,
            order_id,
            quantity,
            reserve_ttl_ms,
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn order_id(&self) -> &str {
        &self.order_id
    }
}

/// How a purchase ended: committed, replayed, or refused.
pub struct Placed {
    /// What the transaction's metadata keeps of the order.
    pub order: OrderMetadata,
    pub quantity: Amount,
    /// The price of the whole order, for a priced product.
    pub paid: Option<u128>,
    pub submitted: Submitted,
    parts: Vec<Part>,
}

impl Placed {
    /// The refusal and the failing operation, when the purchase was refused.
    pub fn refusal(&self) -> Option<(Refusal, u16)> {
        let Verdict::Rejected(rejection) = self.submitted.record.verdict else {
            return None;
        };
        let part = self.parts.get(usize::from(rejection.op_index)).copied();
        let refusal = part.map_or(Refusal::Ledger(rejection.code), |part| part.refusal(rejection.code));
        Some((refusal, rejection.op_index))
    }
}

/// Whether a reservation is paid for or given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Confirm,
    Cancel,
}

/// The sale: products, purchases and orders, over the ledger. It caches
/// products' rules and the buyers already set up, so that a purchase
/// usually costs one engine round trip. Both are facts that never change
/// (rules are fixed at creation; an opened account stays), bounded by
/// clearing.
pub struct FlashSale {
    ledger: Arc<Ledger>,
    naming: Naming,
    rules: Mutex<HashMap<String, Rules>>,
    buyers: Mutex<HashSet<String>>,
}

impl FlashSale {
    pub fn new(ledger: Arc<Ledger>, naming: Naming) -> Self {
        FlashSale {
            ledger,
            naming,
            rules: Mutex::new(HashMap::new()),
            buyers: Mutex::new(HashSet::new()),
        }
    }

    /// Opens the product's accounts and stocks it, as one transaction
    /// (default id `product:{id}`).
    pub async fn create(
        &self,
        id: TransactionId,
        product: &str,
        rules: &Rules,
        stock: Option<Amount>,
    ) -> Result<Submitted, ApiError> {
        let mut ops = vec![
            Operation::Open {
                account: self.naming.supply_account(product),
                unit: unit(ITEM_UNIT),
                min_available: Some(Balance::new(SUPPLY_FLOOR)),
                max_total: None,
                metadata: None,
            },
            Operation::Open {
                account: self.naming.stock_account(product),
                unit: unit(ITEM_UNIT),
                min_available: None,
                max_total: None,
                metadata: Some(rules.metadata()?),
            },
        ];
        if let Some(stock) = stock {
            ops.push(Operation::transfer(
                self.naming.supply_account(product),
                self.naming.stock_account(product),
                stock,
            ));
        }
        self.submit_one(id, ops, None, Detail::WithEffects).await
    }

    /// The default id of the transaction that creates `product`.
    pub fn creation_id(product: &str) -> TransactionId {
        TransactionId::parse(&format!("product:{product}")).expect("valid id")
    }

    pub async fn product(&self, id: &str) -> Result<Product, ApiError> {
        let not_found = || ApiError::NotFound {
            what: "product",
            id: id.to_owned(),
        };
        let stock = self
            .ledger
            .account(self.naming.stock_account(id))
            .await
            .map_err(|_| not_found())?;
        let rules = Rules::from_metadata(stock.metadata.as_ref()).ok_or_else(not_found)?;
        let supply = self
            .ledger
            .account(self.naming.supply_account(id))
            .await
            .map_err(|_| not_found())?;
        Ok(Product {
            id: id.to_owned(),
            rules,
            stock: stock.available,
            reserved: stock.frozen,
            supplied: -supply.total,
        })
    }

    /// Adds stock to an existing product.
    pub async fn restock(&self, id: TransactionId, product: &str, quantity: Amount) -> Result<Submitted, ApiError> {
        self.product(product).await?;
        let op = Operation::transfer(
            self.naming.supply_account(product),
            self.naming.stock_account(product),
            quantity,
        );
        self.submit_one(id, vec![op], None, Detail::WithEffects).await
    }

    /// A purchase or reservation, as one transaction under the order id.
    pub async fn purchase(&self, request: PurchaseOrder) -> Result<Placed, ApiError> {
        let rules = self.rules_of(&request.product).await?;
        let expires_at_ms = request.reserve_ttl_ms.map(|ttl| now_ms().saturating_add(ttl));
        let order = OrderMetadata {
            product: request.product.clone(),
            user: request.user.clone(),
            quantity: request.quantity.value().to_string(),
            amount: None,
            unit: rules.price.as_ref().map(|price| price.unit.to_string()),
            reserved: request.reserve_ttl_ms.is_some(),
            expires_at_ms,
        };
        if let Some(refused) = self.ensure_buyer(&request.product, &request.user, &rules).await? {
            return Ok(Placed {
                order,
                quantity: request.quantity,
                paid: None,
                submitted: refused,
                parts: Vec::new(),
            });
        }
        let (ops, parts, paid) = purchase_ops(self.naming, &request, &rules)?;
        let order = OrderMetadata {
            amount: paid.map(|amount| amount.to_string()),
            ..order
        };
        let metadata = Metadata::from_value(&serde_json::json!({ "order": order }))
            .map_err(|error| ApiError::invalid(error.to_string()))?;
        let id = TransactionId::parse(&request.order_id).expect("checked order id");
        let submitted = self.submit_one(id, ops, Some(metadata), Detail::WithoutEffects).await?;
        Ok(Placed {
            order,
            quantity: request.quantity,
            paid,
            submitted,
            parts,
        })
    }

    /// Confirms (captures) or cancels (releases) a reservation, as one
    /// transaction with the id `{confirm|cancel}:{order}`.
    pub async fn finish(&self, order_id: &str, finish: Finish) -> Result<Submitted, ApiError> {
        // Sharded hold ids name the product, which only the order knows.
        let product = match self.naming {
            Naming::Plain => String::new(),
            Naming::Sharded => self.order(order_id).await?.product,
        };
        let mut ops = Vec::new();
        for part in [Part::Stock, Part::Quota, Part::Payment] {
            let hold = self.naming.order_hold(&product, order_id, part);
            match self.ledger.hold(hold.clone()).await? {
                None if part == Part::Stock => {
                    return Err(ApiError::NotFound {
                        what: "reservation",
                        id: order_id.to_owned(),
                    })
                }
                None => {}
                Some(view) if view.status != HoldStatus::Active && part == Part::Stock => {
                    return Err(ApiError::Conflict {
                        code: "order_not_reserved",
                        message: format!("order {order_id} is no longer reserved: its hold is {:?}", view.status),
                    })
                }
                Some(_) if finish == Finish::Confirm => ops.push(Operation::Capture {
                    hold,
                    amount: None,
                    to: None,
                }),
                Some(_) => ops.push(Operation::Release { hold }),
            }
        }
        let verb = match finish {
            Finish::Confirm => "confirm",
            Finish::Cancel => "cancel",
        };
        let id = TransactionId::parse(&format!("{verb}:{order_id}")).expect("derived id within the limit");
        self.submit_one(id, ops, None, Detail::WithEffects).await
    }

    /// An order as the history keeps it, once the history holds every
    /// write acknowledged before the call. An order id names no shard: in a
    /// cluster every shard's history is asked.
    pub async fn order(&self, id: &str) -> Result<OrderRow, ApiError> {
        let name = id.to_owned();
        let found = self.ledger.read_every_store(move |reader| reader.order(&name)).await?;
        found.into_iter().flatten().next().ok_or_else(|| ApiError::NotFound {
            what: "order",
            id: id.to_owned(),
        })
    }

    /// A page of orders and the cursor of the next page, if there may be
    /// one. A product's orders lie in one history store and come newest
    /// first; without a product the stores (a cluster's shards) come one
    /// after the other, each newest first. `query.before` is a cursor this
    /// returned: the store in its high bits, a sequence in that store below.
    pub async fn orders(&self, query: OrderQuery) -> Result<(Vec<OrderRow>, Option<i64>), ApiError> {
        self.ledger.history_kept()?;
        let stores = match &query.product {
            Some(product) => {
                let store = self.ledger.history_store_of(&self.naming.stock_account(product));
                store..store + 1
            }
            None => 0..self.ledger.history_stores(),
        };
        let (first, mut before) = match query.before {
            None => (stores.start, None),
            Some(cursor) => (
                u32::try_from(cursor >> CURSOR_STORE_SHIFT).unwrap_or(u32::MAX),
                Some(cursor & ((1 << CURSOR_STORE_SHIFT) - 1)),
            ),
        };
        // Well formed (the document's pattern) yet not one issued for these
        // filters: only the server can tell, so unprocessable, not malformed.
        if !stores.contains(&first) {
            return Err(ApiError::unprocessable(
                "cursor is not one this server issued for these filters",
            ));
        }
        let limit = query.limit as usize;
        let (mut rows, mut last) = (Vec::with_capacity(limit), None);
        for store in first..stores.end {
            let asked = OrderQuery {
                before,
                limit: (limit - rows.len()) as u32,
                ..query.clone()
            };
            let page = self
                .ledger
                .read_store(store, move |reader| reader.orders(&asked))
                .await?;
            for row in page {
                assert_eq!(row.sequence >> CURSOR_STORE_SHIFT, 0, "a sequence fits below the store");
                last = Some((i64::from(store) << CURSOR_STORE_SHIFT) | row.sequence);
                rows.push(row);
            }
            if rows.len() == limit {
                break;
            }
            before = None;
        }
        let next = if rows.len() == limit { last } else { None };
        Ok((rows, next))
    }

    async fn submit_one(
        &self,
        id: TransactionId,
        ops: Vec<Operation>,
        metadata: Option<Metadata>,
        detail: Detail,
    ) -> Result<Submitted, ApiError> {
        let transaction = Transaction::new(id, ops, metadata).map_err(|error| ApiError::invalid(error.to_string()))?;
        let mut results = self.ledger.submit(vec![transaction], detail).await?;
        Ok(results.pop().expect("one result per transaction"))
    }

    async fn rules_of(&self, product: &str) -> Result<Rules, ApiError> {
        if let Some(rules) = self.rules.lock().expect("rules lock").get(product).cloned() {
            return Ok(rules);
        }
        let rules = self.product(product).await?.rules;
        let mut cached = self.rules.lock().expect("rules lock");
        if cached.len() >= CACHED_MAX {
            cached.clear();
        }
        cached.insert(product.to_owned(), rules.clone());
        Ok(rules)
    }

    /// Opens the buyer's holding and quota accounts once. The transaction
    /// id is derived from the product and user, so concurrent first
    /// purchases of one buyer replay one another instead of failing.
    /// `Some` with the outcome when the ledger refused.
    async fn ensure_buyer(&self, product: &str, user: &str, rules: &Rules) -> Result<Option<Submitted>, ApiError> {
        let key = format!("{product}:{user}");
        if self.buyers.lock().expect("buyers lock").contains(&key) {
            return Ok(None);
        }
        let mut ops = vec![Operation::open(
            self.naming.holding_account(product, user),
            unit(ITEM_UNIT),
        )];
        if let Some(limit) = rules.per_buyer_limit {
            let quota = self.naming.quota_account(product, user);
            ops.push(Operation::open(quota.clone(), unit(QUOTA_UNIT)));
            ops.push(Operation::deposit(quota, limit));
        }
        let id = TransactionId::parse(&format!("buyer:{key}")).expect("derived id within the limit");
        let submitted = self.submit_one(id, ops, None, Detail::WithoutEffects).await?;
        match submitted.record.verdict {
            Verdict::Committed => {}
            // Opened before, under an id the window and the store no longer know.
            Verdict::Rejected(Rejection {
                code: RejectionCode::AccountExists,
                ..
            }) => {}
            // The buyer's refusal is the purchase's, answered as new.
            Verdict::Rejected(_) => {
                return Ok(Some(Submitted {
                    kind: Kind::New,
                    ..submitted
                }))
            }
        }
        let mut buyers = self.buyers.lock().expect("buyers lock");
        if buyers.len() >= CACHED_MAX {
            buyers.clear();
        }
        buyers.insert(key);
        Ok(None)
    }
}

/// A purchase's ops, what each is for (to name a rejection), and the price paid.
type PurchaseOps = (Vec<Operation>, Vec<Part>, Option<u128>);

fn purchase_ops(naming: Naming, request: &PurchaseOrder, rules: &Rules) -> Result<PurchaseOps, ApiError> {
    let (product, user, quantity) = (&request.product, &request.user, request.quantity);
    let mut moves = vec![(
        Part::Stock,
        naming.stock_account(product),
        naming.holding_account(product, user),
        quantity,
    )];
    if rules.per_buyer_limit.is_some() {
        moves.push((
            Part::Quota,
            naming.quota_account(product, user),
            AccountId::world(),
            quantity,
        ));
    }
    let mut paid = None;
    if let Some(price) = &rules.price {
        let total = price
            .amount
            .value()
            .checked_mul(quantity.value())
            .and_then(|total| Amount::new(total).ok())
            .ok_or_else(|| ApiError::invalid("price × quantity is out of range"))?;
        paid = Some(total.value());
        moves.push((Part::Payment, account(user.clone()), price.merchant.clone(), total));
    }
    let parts = moves.iter().map(|(part, ..)| *part).collect();
    let ops = moves
        .into_iter()
        .map(|(part, from, to, amount)| match request.reserve_ttl_ms {
            None => Operation::transfer(from, to, amount),
            Some(ttl_ms) => Operation::Hold {
                hold: naming.order_hold(product, &request.order_id, part),
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
