use crate::amount::whole_number;
use crate::amount::{Amount, Balance};
use crate::error::CoreError;
use crate::identifier::{AccountId, HoldId};
use crate::limits::{HOLD_TTL_MS_MAX, INSTANT_MS_MAX};
use crate::metadata::Metadata;
use crate::unit::Unit;
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
const _: () = assert!(
    HOLD_TTL_MS_MAX == 31_622_400_000 && INSTANT_MS_MAX == 253_402_300_799_999,
    "the maxima of Hold::ttl_ms and Hold::expires_at_ms"
);

/// One step of a transaction. JSON form: a tagged object,
/// `{"type": "transfer", "from": "a", "to": "b", "amount": 5}`.
///
/// `remote = "Self"`: the derived code becomes `Operation::serialize` and
/// `Operation::deserialize_tagged`'s body; `Deserialize` itself reads
/// transfers without buffering first (operation_json.rs).
// The API document refers to `openapi::OperationSchema`, which closes the
// derived variants.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = OperationVariants))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Opens an account.
    Open {
        account: AccountId,
        unit: Unit,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_available: Option<Balance>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_total: Option<Balance>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Metadata>,
    },
    /// `from.available -= amount; to.available += amount`; `@world` is the implicit source and sink.
    Transfer {
        from: AccountId,
        to: AccountId,
        amount: Amount,
    },
    /// Moves `amount` from available to frozen under a named hold.
    Hold {
        hold: HoldId,
        account: AccountId,
        amount: Amount,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<AccountId>,
        /// Absolute expiry, milliseconds since the Unix epoch (at most the end of the year 9999).
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
        #[cfg_attr(feature = "openapi", schema(maximum = 253_402_300_799_999_u64))]
        expires_at_ms: Option<u64>,
        /// Expiry relative to the transaction's batch timestamp (1 ms to a year). Not with `expires_at_ms`.
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31_622_400_000_u64))]
        ttl_ms: Option<u64>,
    },
    /// Settles (part of) a hold to `to`, else the hold's `to`, else `@world`.
    Capture {
        hold: HoldId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<Amount>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<AccountId>,
    },
    /// Returns what remains of a hold to available.
    Release { hold: HoldId },
    /// Sets available, moving the difference from or to `@world` (administrators).
    SetBalance { account: AccountId, available: Balance },
    /// Changes the floor and the ceiling (administrators).
    SetLimits {
        account: AccountId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_available: Option<Balance>,
        /// Absent: unchanged; `null`: no ceiling; a number: the new ceiling.
        #[serde(default, skip_serializing_if = "LimitChange::is_unchanged")]
        max_total: LimitChange,
    },
    /// A closed account takes no new debits, credits or holds (administrators).
    Close { account: AccountId },
    /// Reopens a closed account (administrators).
    Reopen { account: AccountId },
}

impl Serialize for Operation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The inherent (derived) function, not this one.
        Operation::serialize(self, serializer)
    }
}

impl Operation {
    /// The derived reading, which buffers every field before it knows the
    /// variant; what every input not on the fast path gets.
    pub(crate) fn deserialize_tagged<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Operation::deserialize(deserializer)
    }
}

/// A ceiling update that can tell "leave it" from "remove it".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitChange {
    #[default]
    Unchanged,
    Remove,
    Set(Balance),
}

impl LimitChange {
    pub fn is_unchanged(&self) -> bool {
        matches!(self, LimitChange::Unchanged)
    }
}

impl Serialize for LimitChange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LimitChange::Set(value) => value.serialize(serializer),
            LimitChange::Unchanged | LimitChange::Remove => serializer.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for LimitChange {
    // Only called when the field is present: absence is `Default`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<Balance>::deserialize(deserializer)? {
            Some(value) => LimitChange::Set(value),
            None => LimitChange::Remove,
        })
    }
}

impl Operation {
    /// Opens an account with the default limits (floor 0, no ceiling).
    pub fn open(account: AccountId, unit: Unit) -> Self {
        Operation::Open {
            account,
            unit,
            min_available: None,
            max_total: None,
            metadata: None,
        }
    }

    pub fn transfer(from: AccountId, to: AccountId, amount: Amount) -> Self {
        Operation::Transfer { from, to, amount }
    }

    /// A transfer from `@world`.
    pub fn deposit(to: AccountId, amount: Amount) -> Self {
        Operation::Transfer {
            from: AccountId::world(),
            to,
            amount,
        }
    }

    /// Checks the rules that need no engine state.
    pub fn validate(&self) -> Result<(), CoreError> {
        if let Operation::Hold {
            expires_at_ms, ttl_ms, ..
        } = self
        {
            if expires_at_ms.is_some() && ttl_ms.is_some() {
                return Err(CoreError::unprocessable("give expires_at or ttl_ms, not both"));
            }
            if expires_at_ms.is_some_and(|at| at > INSTANT_MS_MAX) {
                return Err(CoreError::invalid(
                    "expires_at_ms",
                    format!("must be at most {INSTANT_MS_MAX} (the end of the year 9999)"),
                ));
            }
            if let Some(ttl) = ttl_ms {
                if *ttl == 0 || *ttl > HOLD_TTL_MS_MAX {
                    return Err(CoreError::invalid(
                        "ttl_ms",
                        format!("must be 1 to {HOLD_TTL_MS_MAX} milliseconds"),
                    ));
                }
            }
        }
        if let Operation::Open { account, .. } = self {
            if account.is_world() {
                return Err(CoreError::unprocessable(
                    "@world exists implicitly and cannot be opened",
                ));
            }
        }
        Ok(())
    }

    /// The accounts this operation names directly (holds name theirs in the
    /// hold record instead). Used to prefetch, so it may be incomplete.
    pub fn accounts(&self) -> [Option<&AccountId>; 2] {
        match self {
            Operation::Transfer { from, to, .. } => [Some(from), Some(to)],
            Operation::Hold { account, to, .. } => [Some(account), to.as_ref()],
            Operation::Open { account, .. }
            | Operation::SetBalance { account, .. }
            | Operation::SetLimits { account, .. }
            | Operation::Close { account }
            | Operation::Reopen { account } => [Some(account), None],
            Operation::Capture { to, .. } => [to.as_ref(), None],
            Operation::Release { .. } => [None, None],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Open { .. } => "open",
            Operation::Transfer { .. } => "transfer",
            Operation::Hold { .. } => "hold",
            Operation::Capture { .. } => "capture",
            Operation::Release { .. } => "release",
            Operation::SetBalance { .. } => "set_balance",
            Operation::SetLimits { .. } => "set_limits",
            Operation::Close { .. } => "close",
            Operation::Reopen { .. } => "reopen",
        }
    }
}
