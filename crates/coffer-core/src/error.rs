use thiserror::Error;

/// Errors of the core layer: input that cannot become a domain value, and
/// bytes that cannot become engine state. Ledger-rule violations are not
/// errors: they are [`crate::Rejection`]s, recorded like commits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    /// A value failed validation; `field` names what was being parsed.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Each value is valid, but together (or by a fixed rule) they cannot
    /// make a transaction: no schema of the fields can say so.
    #[error("{reason}")]
    Unprocessable { reason: String },
    /// A snapshot or journal payload is malformed.
    #[error("corrupt encoding at byte {offset}: {reason}")]
    Decode { offset: usize, reason: String },
}

impl CoreError {
    pub(crate) fn unprocessable(reason: impl Into<String>) -> Self {
        CoreError::Unprocessable { reason: reason.into() }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
