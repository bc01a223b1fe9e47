//! The API's description, generated from the handlers' `#[utoipa::path]`
//! annotations and the request and answer types' derives. The router is
//! built from the same annotations (`super::documented_routes`), so a route
//! cannot exist without its description. Served at `/openapi.json`, with
//! Swagger UI at `/docs`.
//!
//! Here: what every operation shares (the document's frame, the error
//! answers, the request headers).

use crate::error::ErrorAnswer;
use coffer_core::TransactionId;
use std::sync::OnceLock;
use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "coffer",
        description = "A balance engine: accounts with available and frozen balances, atomic idempotent \
                       transactions, holds, flash sales and bulk balance jobs. Amounts are integers in the unit's \
                       smallest denomination. Every write is durable before it is acknowledged; a write retried \
                       under the same id (`Idempotency-Key`) applies once.",
        license(name = "Apache-2.0"),
    ),
    servers((url = "/")),
    // Without API keys configured the server takes every request: the
    // empty requirement says a key is optional.
    security(("bearer" = []), ()),
    modifiers(&BearerKeys),
    tags(
        (name = "accounts", description = "Accounts and their balances"),
        (name = "transactions", description = "Atomic, idempotent transactions of operations"),
        (name = "holds", description = "Reservations: money frozen until captured, released or expired"),
        (name = "history", description = "Per-account history and balances at an instant"),
        (name = "flash sales", description = "Stock that never oversells, per-buyer limits, orders"),
        (name = "jobs", description = "Bulk balance jobs with per-item status"),
        (name = "operations", description = "Health, readiness, metrics, cluster state, this document"),
    )
)]
pub(super) struct Frame;

/// `Authorization: Bearer <key>`, when the server has API keys.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key (--api-keys); its role (reader, writer, admin) decides what it may do. Without \
                 configured keys, requests need none.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as JSON, built once.
pub(super) fn document_json(build: fn() -> utoipa::openapi::OpenApi) -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = serde_json::to_value(build()).expect("the OpenAPI document serializes");
        spell_links_as_openapi_does(&mut document);
        document.to_string()
    })
}

/// utoipa 5.5 writes a link's fields in snake case (`operation_id`);
/// OpenAPI and every reader of links (schemathesis's stateful tests among
/// them) spell them `operationId`, `operationRef`, `requestBody`.
fn spell_links_as_openapi_does(document: &mut serde_json::Value) {
    const SPELLINGS: [(&str, &str); 3] = [
        ("operation_id", "operationId"),
        ("operation_ref", "operationRef"),
        ("request_body", "requestBody"),
    ];
    let Some(paths) = document.get_mut("paths").and_then(|paths| paths.as_object_mut()) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|links| links.as_object_mut()) else {
            continue;
        };
        for link in links.values_mut().filter_map(|link| link.as_object_mut()) {
            for (written, spelled) in SPELLINGS {
                if let Some(value) = link.remove(written) {
                    link.insert(spelled.to_owned(), value);
                }
            }
        }
    }
}

/// Swagger UI at `/docs`, reading `/openapi.json`.
pub(super) fn swagger_ui() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json"))
}

// Header parameters, described once. The handlers read them from the
// `HeaderMap` (request.rs); these types only describe them, so their
// fields are never read.

/// The idempotency key of a write.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(super) struct IdempotencyHeader {
    /// The write's idempotency key (same as `id` in the body, which it must equal if both are given). A retry with
    /// the same key answers the first outcome and applies nothing again; without either the server makes one up
    /// and the request is not safely retryable.
    #[param(rename = "Idempotency-Key", value_type = TransactionId, required = false)]
    idempotency_key: Option<TransactionId>,
}

/// The per-user transaction limit.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(super) struct UserHeader {
    /// The end user on whose behalf this is sent; with `--user-transactions-per-minute`, each user's transactions
    /// are limited (429 beyond). 1-128 ASCII characters.
    #[param(rename = "Coffer-User", value_type = String, required = false, min_length = 1, max_length = 128, pattern = "^[!-~]([\t -~]*[!-~])?$")]
    coffer_user: Option<String>,
}

/// `Prefer: return=minimal` (RFC 7240).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(super) struct PreferHeader {
    /// `return=minimal`: a commit is answered with its id, status and sequence only, without balances or
    /// timestamp (the answer then carries `Preference-Applied: return=minimal`). Errors are answered in full.
    #[param(rename = "Prefer", value_type = String, required = false, example = "return=minimal")]
    prefer: Option<String>,
}

// Error answers, described once per family of operations.

/// What any read may answer besides its result.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum ReadErrors {
    /// Malformed or invalid id or query; the message says which.
    #[response(status = 400)]
    Invalid(ErrorAnswer),
    /// Missing or unknown API key (`WWW-Authenticate: Bearer`).
    #[response(status = 401)]
    Unauthorized(ErrorAnswer),
}

/// What any write may answer besides its result.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum WriteErrors {
    /// Malformed or invalid input; the message names the field.
    #[response(status = 400)]
    Invalid(ErrorAnswer),
    /// Missing or unknown API key (`WWW-Authenticate: Bearer`).
    #[response(status = 401)]
    Unauthorized(ErrorAnswer),
    /// The key's role may not do this.
    #[response(status = 403)]
    Forbidden(ErrorAnswer),
    /// `id_reused`: the id was used before for a different request; `details.original` is that request's result.
    #[response(status = 409)]
    IdReused(ErrorAnswer),
    /// The body is larger than `--body-bytes-max`.
    #[response(status = 413)]
    TooLarge(ErrorAnswer),
    /// A ledger rule rejected the transaction: `code` says which (insufficient_funds, account_not_found, ...),
    /// `details.transaction` is its result. Nothing was applied.
    #[response(status = 422)]
    Rejected(ErrorAnswer),
    /// The engine's queue is full or the journal is unavailable: retry after `Retry-After` seconds.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(ErrorAnswer),
}

/// The per-user limit answered.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum RateLimited {
    /// Too many for this user (`Coffer-User`, or the buyer): retry after `Retry-After` seconds.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Limited(ErrorAnswer),
}

/// The named thing does not exist.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum NotFound {
    /// `not_found`: no such account, transaction, hold, product, order or job.
    #[response(status = 404)]
    Missing(ErrorAnswer),
}

/// The answer needs the history store, which can be busy or off.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum HistoryUnavailable {
    /// The history store is off (`--history-url off`) or cannot answer now.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(ErrorAnswer),
}

/// A schema any of whose named components an answer matches.
pub(super) fn any_of<const N: usize>(names: [std::borrow::Cow<'static, str>; N]) -> RefOr<Schema> {
    names
        .into_iter()
        .fold(AnyOfBuilder::new(), |any_of, name| {
            any_of.item(Ref::from_schema_name(name))
        })
        .into()
}

/// Adds `T`'s schema, and those it refers to, to a document's components.
pub(super) fn collect<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

/// Marks an answer to a retried write.
pub(super) const REPLAYED: &str = "Idempotent replay of an earlier commit, answered as it was (header \
                                   `Idempotent-Replayed: true`); nothing was applied again.";
