//! The HTTP API: the router, and one module per resource. Handlers are
//! thin: parse the request, check the role, call the ledger or a domain
//! module, shape the answer. Bodies read are `*Request`, query strings
//! `*Parameters`, bodies written `*Answer`.

mod accounts;
mod body;
mod history;
mod holds;
mod jobs;
mod openapi;
mod operations;
mod paging;
mod products;
mod request;
mod respond;
mod transactions;
mod views;

use crate::error::ApiError;
use crate::state::AppState;
use axum::routing::{get, post, put};
use axum::Router;
use std::sync::Arc;

pub use body::{JsonBody, QueryParameters};
pub use openapi::OPENAPI_JSON;

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.body_bytes_max;
    Router::new()
        .route("/v1/accounts", post(accounts::open).get(accounts::list))
        .route("/v1/accounts/{id}", get(accounts::get))
        .route("/v1/accounts/{id}/history", get(history::history))
        .route("/v1/accounts/{id}/balance", get(history::balance))
        .route("/v1/transactions", post(transactions::create))
        .route("/v1/transactions/batch", post(transactions::batch))
        .route("/v1/transactions/{id}", get(transactions::get))
        .route("/v1/deposits", post(transactions::deposit))
        .route("/v1/withdrawals", post(transactions::withdrawal))
        .route("/v1/transfers", post(transactions::transfer))
        .route("/v1/products", post(products::create))
        .route("/v1/products/{id}", get(products::get))
        .route("/v1/products/{id}/restock", post(products::restock))
        .route("/v1/products/{id}/purchase", post(products::purchase))
        .route("/v1/orders", get(products::list_orders))
        .route("/v1/orders/{id}", get(products::get_order))
        .route("/v1/orders/{id}/confirm", post(products::confirm))
        .route("/v1/orders/{id}/cancel", post(products::cancel))
        .route("/v1/balances/batch", put(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/items", get(jobs::items))
        .route("/v1/holds", post(holds::create))
        .route("/v1/holds/{id}", get(holds::get))
        .route("/v1/holds/{id}/capture", post(holds::capture))
        .route("/v1/holds/{id}/release", post(holds::release))
        .route("/v1/cluster", get(operations::cluster))
        .route("/healthz", get(operations::health))
        .route("/readyz", get(operations::ready))
        .route("/metrics", get(operations::metrics))
        .merge(openapi::documentation())
        .fallback(|| async { ApiError::NoRoute })
        .layer(axum::middleware::from_fn(operations::record_request))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
