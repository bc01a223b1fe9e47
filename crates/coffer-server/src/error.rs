//! The server's one error type, mapped to HTTP once, here. Every error is
//! JSON: `{"error": {"code", "message", "details"}}`; never a stack trace.

use crate::cluster::ClusterError;
use crate::sequencer::SequencerError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    /// Malformed JSON, wrong types, unknown fields, invalid values.
    #[error("{message}")]
    Invalid { message: String },
    #[error("request body larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("this API key's role ({role}) may not {action}")]
    Forbidden { role: &'static str, action: &'static str },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("no such route")]
    NoRoute,
    /// The id was used before with a different payload.
    #[error("transaction id {id} was already used for a different request")]
    IdReused { id: String, original: Value },
    /// A ledger rule said no; the body carries the transaction result.
    #[error("{code} at operation {op_index}")]
    Rejected {
        code: &'static str,
        op_index: u16,
        result: Value,
        replayed: bool,
    },
    /// Each field is well formed, but together (or by a fixed rule) they
    /// cannot be processed: what no schema of the fields can say.
    #[error("{message}")]
    Unprocessable { message: String },
    #[error("the engine queue is full; retry shortly")]
    Overloaded,
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("journal failure: {0}")]
    Journal(String),
    #[error("history unavailable: {0}")]
    HistoryUnavailable(String),
    /// The request conflicts with the resource's state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("too many {what} for this user; retry in {retry_after_secs} s")]
    RateLimited { what: &'static str, retry_after_secs: u64 },
    /// In a cluster: the accounts of one transaction (or linked chain) lie
    /// in more than one shard.
    #[error("{message}")]
    CrossShard { message: String, shards: Vec<u32> },
    /// In a cluster: a shard cannot answer now.
    #[error("{0}")]
    ShardUnavailable(String),
    /// On a single node: there is no cluster to show.
    #[error("{0}")]
    NoCluster(&'static str),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: message.into(),
        }
    }

    /// The same error, naming the batch item it is about.
    pub fn of_item(self, index: usize) -> Self {
        match self {
            ApiError::Invalid { message } => ApiError::invalid(format!("transactions[{index}]: {message}")),
            ApiError::Unprocessable { message } => ApiError::unprocessable(format!("transactions[{index}]: {message}")),
            other => other,
        }
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } | ApiError::NoRoute | ApiError::NoCluster(_) => StatusCode::NOT_FOUND,
            ApiError::IdReused { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Rejected { .. } | ApiError::CrossShard { .. } | ApiError::Unprocessable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Overloaded
            | ApiError::NotReady(_)
            | ApiError::Journal(_)
            | ApiError::HistoryUnavailable(_)
            | ApiError::ShardUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid_request",
            ApiError::TooLarge { .. } => "body_too_large",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::NoRoute => "no_route",
            ApiError::IdReused { .. } => "id_reused",
            ApiError::Rejected { code, .. } => code,
            ApiError::Unprocessable { .. } => "unprocessable_request",
            ApiError::Overloaded => "overloaded",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Journal(_) => "journal_unavailable",
            ApiError::HistoryUnavailable(_) => "history_unavailable",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Conflict { code, .. } => code,
            ApiError::CrossShard { .. } => "cross_shard",
            ApiError::ShardUnavailable(_) => "shard_unavailable",
            ApiError::NoCluster(_) => "no_cluster",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::TooLarge { limit_bytes } => json!({ "limit_bytes": limit_bytes }),
            ApiError::Rejected { op_index, result, .. } => json!({ "op_index": op_index, "transaction": result }),
            ApiError::IdReused { original, .. } => json!({ "original": original }),
            ApiError::RateLimited { retry_after_secs, .. } => json!({ "retry_after_seconds": retry_after_secs }),
            ApiError::CrossShard { shards, .. } => json!({ "shards": shards }),
            _ => json!({}),
        }
    }
}

/// A value that cannot be a domain value is invalid (400); values that
/// cannot go together are unprocessable (422).
impl From<coffer_core::CoreError> for ApiError {
    fn from(error: coffer_core::CoreError) -> Self {
        match error {
            coffer_core::CoreError::Unprocessable { reason } => ApiError::unprocessable(reason),
            other => ApiError::invalid(other.to_string()),
        }
    }
}

impl From<SequencerError> for ApiError {
    fn from(error: SequencerError) -> Self {
        match error {
            SequencerError::Overloaded => ApiError::Overloaded,
            SequencerError::Stopped => ApiError::NotReady("the engine is stopping".into()),
            SequencerError::Journal(message) => ApiError::Journal(message),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::CrossShard { shards, reason } => ApiError::CrossShard {
                message: format!("the transaction touches accounts in shards {shards:?}: {reason}"),
                shards,
            },
            ClusterError::Stopped => ApiError::NotReady("the node is stopping".into()),
            reused @ ClusterError::IdReusedInFlight(_) => ApiError::Conflict {
                code: "id_reused",
                message: reused.to_string(),
            },
            other => ApiError::ShardUnavailable(other.to_string()),
        }
    }
}

/// Every error's body: `{"error": {"code", "message", "details"}}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code: invalid_request, body_too_large, unauthorized, forbidden, not_found, no_route,
    /// id_reused, job_exists, not_applied, unprocessable_request, overloaded, not_ready, journal_unavailable, history_unavailable,
    /// rate_limited, cross_shard, shard_unavailable, no_cluster, or a ledger rejection code
    /// (insufficient_funds, account_not_found, ...).
    #[schema(example = "insufficient_funds")]
    code: &'static str,
    /// For people: what is wrong, naming the field.
    message: String,
    /// For programs: the rejected transaction's result, the original of a reused id, the limit passed, ...
    #[schema(value_type = Object)]
    details: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorAnswer {
            error: ErrorBody {
                code: self.code(),
                message: self.to_string(),
                details: self.details(),
            },
        };
        let replayed = matches!(self, ApiError::Rejected { replayed: true, .. });
        let mut response = (status, axum::Json(body)).into_response();
        if replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        if let ApiError::RateLimited { retry_after_secs, .. } = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, (*retry_after_secs).into());
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
