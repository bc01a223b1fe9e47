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

/// A page cursor this server issued: `{tag}{number}` (opaque to clients).
pub(crate) fn page_cursor(cursor: Option<&str>, tag: char) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|cursor| {
            cursor
                .strip_prefix(tag)
                .and_then(|digits| digits.parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("cursor is not one this server issued"))
        })
        .transpose()
}
