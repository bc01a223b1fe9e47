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
use axum::response::IntoResponse;
use axum::Router;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use body::{JsonBody, QueryParameters};

/// Every route, each from its handler's `#[utoipa::path]`: the router and
/// the OpenAPI document come from the same annotations, so they cannot
/// disagree. A route added with plain `.route` would be served without a
/// description; the API tests fail on one (every served path is
/// documented, with every method it answers).
fn documented_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::Frame::openapi())
        .routes(routes!(accounts::open, accounts::list))
        .routes(routes!(accounts::get))
        .routes(routes!(history::history))
        .routes(routes!(history::balance))
        .routes(routes!(transactions::create))
        .routes(routes!(transactions::batch))
        .routes(routes!(transactions::get))
        .routes(routes!(transactions::deposit))
        .routes(routes!(transactions::withdrawal))
        .routes(routes!(transactions::transfer))
        .routes(routes!(products::create))
        .routes(routes!(products::get))
        .routes(routes!(products::restock))
        .routes(routes!(products::purchase))
        .routes(routes!(products::list_orders))
        .routes(routes!(products::get_order))
        .routes(routes!(products::confirm))
        .routes(routes!(products::cancel))
        .routes(routes!(jobs::create))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::items))
        .routes(routes!(holds::create))
        .routes(routes!(holds::get))
        .routes(routes!(holds::capture))
        .routes(routes!(holds::release))
        .routes(routes!(operations::cluster))
        .routes(routes!(operations::health))
        .routes(routes!(operations::ready))
        .routes(routes!(operations::metrics))
        .routes(routes!(document))
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes().into_openapi()
}

/// This document
///
/// The OpenAPI 3.1 description of the API; Swagger UI shows it at `/docs`.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", operation_id = "openapi", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
)]
async fn document() -> axum::response::Response {
    let json = openapi::document_json(openapi);
    ([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response()
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.body_bytes_max;
    let (routes, _) = documented_routes().split_for_parts();
    routes
        .merge(openapi::swagger_ui())
        .fallback(|| async { ApiError::NoRoute })
        .layer(axum::middleware::from_fn(operations::record_request))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
