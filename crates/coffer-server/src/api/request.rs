//! What a request asks for beyond its body: the idempotency key, the role
//! its operations need, the per-user rate limit, the answer it prefers,
//! ids in the path. Shared by the handlers.

use crate::auth::Role;
use crate::clock::generated_id;
use crate::error::ApiError;
use crate::rate_limit::Decision;
use crate::sequencer::Detail;
use crate::state::AppState;
use axum::http::HeaderMap;
use coffer_core::{Operation, Transaction, TransactionId};

/// The idempotency key: the `Idempotency-Key` header, else `id` in the
/// body, else a fresh server-generated id (the request is then not safely
/// retryable, which the docs say).
pub(crate) fn transaction_id(headers: &HeaderMap, body_id: Option<TransactionId>) -> Result<TransactionId, ApiError> {
    let header = headers.get("idempotency-key").map(|value| {
        let text = value
            .to_str()
            .map_err(|_| ApiError::invalid("Idempotency-Key must be ASCII"))?;
        TransactionId::parse(text).map_err(|error| ApiError::invalid(format!("Idempotency-Key: {error}")))
    });
    match (header.transpose()?, body_id) {
        (Some(header), Some(body)) if header != body => Err(ApiError::unprocessable(
            "the Idempotency-Key header and the body id differ",
        )),
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => Ok(generated_id()),
    }
}

/// The optional per-user transaction limit, keyed by the `Coffer-User`
/// header; requests without it are not limited.
pub(crate) async fn limit_transactions(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(user) = headers.get("coffer-user") else {
        return Ok(());
    };
    // Checked with or without a limit: a header the server would refuse
    // under one is refused always.
    let user = user
        .to_str()
        .ok()
        .filter(|user| !user.is_empty() && user.len() <= coffer_core::limits::ID_BYTES_MAX)
        .ok_or_else(|| ApiError::invalid("Coffer-User must be 1 to 128 ASCII characters"))?;
    let Some(limiter) = &state.transaction_limiter else {
        return Ok(());
    };
    match limiter.check(user).await {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after_ms } => Err(ApiError::RateLimited {
            what: "transactions",
            retry_after_secs: retry_after_ms.div_ceil(1_000),
        }),
    }
}

/// The role an operation needs: changing limits, balances or account
/// status, opening a system account, or naming a system hold (`@`, such
/// as a cross-shard transaction's), is an administrator's act.
fn role_for(op: &Operation) -> Role {
    match op {
        Operation::SetBalance { .. }
        | Operation::SetLimits { .. }
        | Operation::Close { .. }
        | Operation::Reopen { .. } => Role::Admin,
        Operation::Open { account, .. } if account.is_system() => Role::Admin,
        Operation::Hold { hold, .. } | Operation::Capture { hold, .. } | Operation::Release { hold }
            if hold.as_str().starts_with('@') =>
        {
            Role::Admin
        }
        _ => Role::Writer,
    }
}

pub(crate) fn authorize(state: &AppState, headers: &HeaderMap, ops: &[Operation]) -> Result<(), ApiError> {
    let needed = ops.iter().map(role_for).max().unwrap_or(Role::Writer);
    let action = if needed == Role::Admin {
        "change balances, limits, status or system accounts"
    } else {
        "write"
    };
    state.auth.require(headers, needed, action).map(drop)
}

/// Parses an id from the URL path; a bad one is a 400 that says why.
pub(crate) fn path_id<T>(text: &str, parse: fn(&str) -> Result<T, coffer_core::CoreError>) -> Result<T, ApiError> {
    parse(text).map_err(|error| ApiError::invalid(error.to_string()))
}

pub(crate) fn build(
    id: TransactionId,
    ops: Vec<Operation>,
    metadata: Option<coffer_core::Metadata>,
) -> Result<Transaction, ApiError> {
    Transaction::new(id, ops, metadata).map_err(ApiError::from)
}

/// RFC 7240 `Prefer: return=minimal`, among other preferences or not.
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').any(|preference| {
                let name_and_value = preference.split(';').next().unwrap_or_default();
                let compact: String = name_and_value
                    .chars()
                    .filter(|character| !character.is_ascii_whitespace())
                    .collect();
                compact.eq_ignore_ascii_case("return=minimal")
            })
        })
    })
}

/// Balances in the answer unless the client prefers it minimal.
pub(crate) fn detail_preferred(headers: &HeaderMap) -> Detail {
    match prefers_minimal(headers) {
        true => Detail::WithoutEffects,
        false => Detail::WithEffects,
    }
}

/// The RFC 3339 instants `instant_ms` reads, as the API document states
/// them: UTC, from 1970 on, days 1-28 of any month (a subset: the later
/// days of a month parse too, but no pattern says which month has them).
pub(crate) const INSTANT_PATTERN: &str = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])\
                                          T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z$";

/// An RFC 3339 instant in UTC, for the API document.
pub(crate) struct Rfc3339Schema;

impl utoipa::PartialSchema for Rfc3339Schema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(INSTANT_PATTERN))
            .description(Some("An instant: RFC 3339 in UTC"))
            .examples(["2026-11-25T12:00:00Z"])
            .into()
    }
}

impl utoipa::ToSchema for Rfc3339Schema {
    fn name() -> std::borrow::Cow<'static, str> {
        "Rfc3339".into()
    }
}

/// How a query parameter's instant is written, for the API document: RFC
/// 3339 in UTC, or milliseconds since the Unix epoch.
pub(crate) struct InstantSchema;

impl utoipa::PartialSchema for InstantSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let milliseconds = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(i64::MIN as isize))
            .maximum(Some(INSTANT_MS_MAX as isize));
        OneOfBuilder::new()
            .item(milliseconds)
            .item(Rfc3339Schema::schema())
            .description(Some(
                "An instant: RFC 3339 in UTC, or milliseconds since the Unix epoch",
            ))
            .into()
    }
}

impl utoipa::ToSchema for InstantSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "Instant".into()
    }
}

/// An instant given as RFC 3339 (or, where `millis_too`, as milliseconds
/// since the Unix epoch), in milliseconds since the epoch.
pub(crate) fn instant_ms(field: &str, text: &str, millis_too: bool) -> Result<i64, ApiError> {
    let within_range = |milliseconds: i64| match milliseconds <= INSTANT_MS_MAX {
        true => Ok(milliseconds),
        false => Err(ApiError::invalid(format!("{field} is after the year 9999"))),
    };
    if millis_too {
        if let Ok(milliseconds) = text.parse::<i64>() {
            return within_range(milliseconds);
        }
    }
    let expected = match millis_too {
        true => "an RFC 3339 instant or milliseconds",
        false => "an RFC 3339 instant, e.g. 2026-11-25T12:00:00Z",
    };
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|_| ApiError::invalid(format!("{field} must be {expected}, got {text:?}")))?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::invalid(format!("{field} is before 1970")))?;
    i64::try_from(since_epoch.as_millis())
        .map_err(|_| ApiError::invalid(format!("{field} is too far in the future")))
        .and_then(within_range)
}

/// The last instant RFC 3339 can write, and so the last an answer can echo.
pub(crate) const INSTANT_MS_MAX: i64 = coffer_core::limits::INSTANT_MS_MAX as i64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What the API document allows as an instant, the server reads.
        #[test]
        fn every_documented_instant_parses(
            text in proptest::string::string_regex(INSTANT_PATTERN.trim_start_matches('^').trim_end_matches('$')).unwrap(),
        ) {
            let milliseconds = instant_ms("at", &text, false);
            prop_assert!(milliseconds.is_ok_and(|milliseconds| milliseconds >= 0), "{}", text);
        }
    }

    #[test]
    fn the_last_instant_is_the_last_rfc_3339_writes() {
        let last = INSTANT_MS_MAX.to_string();
        assert_eq!(instant_ms("at", &last, true).unwrap(), INSTANT_MS_MAX);
        assert_eq!(
            super::super::views::instant(INSTANT_MS_MAX as u64),
            "9999-12-31T23:59:59.999Z"
        );
        assert!(instant_ms("at", &(INSTANT_MS_MAX + 1).to_string(), true).is_err());
        assert!(instant_ms("at", "7578079022076802", true).is_err());
    }

    #[test]
    fn instants_outside_the_pattern_that_are_refused() {
        for text in [
            "1969-12-31T23:59:59Z",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "yesterday",
        ] {
            assert!(instant_ms("at", text, false).is_err(), "{text}");
        }
    }
}
