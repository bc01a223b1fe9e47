//! Pages of lists: the `limit` parameter and opaque cursors.

use crate::error::ApiError;

/// Items per page: `limit`, 100 by default, at most `max`.
pub(crate) fn page_limit(limit: Option<u64>, max: u64) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(ApiError::invalid(format!("limit must be 1 to {max}")));
    }
    Ok(limit)
}

/// How a cursor of `page_cursor` looks, for the API document: its tag,
/// then up to 18 digits (any such number is an `i64`).
pub(crate) const CURSOR_DIGITS_MAX: usize = 18;
const _: () = assert!(10_i64.checked_pow(CURSOR_DIGITS_MAX as u32).is_some());

/// A page cursor this server issued: `{tag}{number}` (opaque to clients).
pub(crate) fn page_cursor(cursor: Option<&str>, tag: char) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|cursor| {
            cursor
                .strip_prefix(tag)
                .filter(|digits| digits.len() <= CURSOR_DIGITS_MAX && digits.bytes().all(|byte| byte.is_ascii_digit()))
                .and_then(|digits| digits.parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("cursor is not one this server issued"))
        })
        .transpose()
}
