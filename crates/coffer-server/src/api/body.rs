use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// A JSON body whose errors say exactly what is wrong (the serde message
/// names unknown fields, wrong types and the position), and that answers 413
/// past the body limit. Unlike axum's `Json`, it also accepts a missing
/// Content-Type: curl users forget it, and there is only one format.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge {
                    limit_bytes: state.config.body_bytes_max,
                }
            } else {
                ApiError::invalid(rejection.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| ApiError::invalid(format!("invalid JSON body: {error}")))
    }
}

/// Query-string parameters whose errors are JSON like every other error
/// (axum's `Query` answers in plain text), naming the parameter.
pub struct QueryParameters<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParameters<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| QueryParameters(value))
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))
    }
}
