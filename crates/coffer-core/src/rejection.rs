use serde::Serialize;

/// Why a transaction was not applied. Rejections are results, not errors:
/// they are journaled under the transaction id and replayed like commits.
/// The snake_case names are part of the public API and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum RejectionCode {
    /// A debit or hold would take available below the account's floor.
    InsufficientFunds = 1,
    /// A credit would take total above the account's ceiling.
    LimitExceeded = 2,
    AccountNotFound = 3,
    AccountExists = 4,
    /// A closed account takes no new debits, credits or holds.
    AccountClosed = 5,
    /// The account is already open (reopen of an open account).
    AccountNotClosed = 6,
    UnitMismatch = 7,
    HoldNotFound = 8,
    HoldExists = 9,
    /// The hold was already captured, released or expired.
    HoldNotActive = 10,
    CaptureExceedsHold = 11,
    /// A balance computation would leave the i128 range.
    AmountOverflow = 12,
    SameAccount = 13,
    /// The operation is not allowed on `@world` (holds, limits, closing…).
    WorldAccount = 14,
    /// New limits would put the current balances outside them.
    LimitsViolated = 15,
    /// The hold's expiry is not after the transaction's timestamp.
    InvalidExpiry = 16,
    /// The engine's configured account or hold capacity is full.
    CapacityExceeded = 17,
    /// Another transaction of the same linked chain was rejected, so this
    /// one was not applied either (all or none).
    LinkedEventFailed = 18,
    /// The batch ended inside a linked chain: its last transaction was
    /// linked to a next one that never came.
    LinkedEventChainOpen = 19,
}

impl RejectionCode {
    pub const ALL: [RejectionCode; 19] = [
        RejectionCode::InsufficientFunds,
        RejectionCode::LimitExceeded,
        RejectionCode::AccountNotFound,
        RejectionCode::AccountExists,
        RejectionCode::AccountClosed,
        RejectionCode::AccountNotClosed,
        RejectionCode::UnitMismatch,
        RejectionCode::HoldNotFound,
        RejectionCode::HoldExists,
        RejectionCode::HoldNotActive,
        RejectionCode::CaptureExceedsHold,
        RejectionCode::AmountOverflow,
        RejectionCode::SameAccount,
        RejectionCode::WorldAccount,
        RejectionCode::LimitsViolated,
        RejectionCode::InvalidExpiry,
        RejectionCode::CapacityExceeded,
        RejectionCode::LinkedEventFailed,
        RejectionCode::LinkedEventChainOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::InsufficientFunds => "insufficient_funds",
            RejectionCode::LimitExceeded => "limit_exceeded",
            RejectionCode::AccountNotFound => "account_not_found",
            RejectionCode::AccountExists => "account_exists",
            RejectionCode::AccountClosed => "account_closed",
            RejectionCode::AccountNotClosed => "account_not_closed",
            RejectionCode::UnitMismatch => "unit_mismatch",
            RejectionCode::HoldNotFound => "hold_not_found",
            RejectionCode::HoldExists => "hold_exists",
            RejectionCode::HoldNotActive => "hold_not_active",
            RejectionCode::CaptureExceedsHold => "capture_exceeds_hold",
            RejectionCode::AmountOverflow => "amount_overflow",
            RejectionCode::SameAccount => "same_account",
            RejectionCode::WorldAccount => "world_account",
            RejectionCode::LimitsViolated => "limits_violated",
            RejectionCode::InvalidExpiry => "invalid_expiry",
            RejectionCode::CapacityExceeded => "capacity_exceeded",
            RejectionCode::LinkedEventFailed => "linked_event_failed",
            RejectionCode::LinkedEventChainOpen => "linked_event_chain_open",
        }
    }

    /// The code named by `as_str`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|code| code.as_str() == text)
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|code| *code as u8 == value)
    }
}

impl std::fmt::Display for RejectionCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A rejection and the index of the operation that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Rejection {
    pub code: RejectionCode,
    pub op_index: u16,
}
