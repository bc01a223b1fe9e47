use crate::error::CoreError;
use crate::limits::{UNIT_CODE_BYTES_MAX, UNIT_SCALE_MAX};

/// A unit of account: an asset code and an optional decimal scale, such as
/// `USD/2` (cents), `BTC/8` (satoshis) or `ITEM`. Amounts are integers in the
/// smallest denomination; the scale only tells clients where the point goes.
/// Money only moves between accounts of the same unit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Unit(Box<str>);

impl Unit {
    pub const FIELD: &'static str = "unit";

    pub fn parse(text: &str) -> Result<Self, CoreError> {
        let (code, scale) = match text.split_once('/') {
            Some((code, scale)) => (code, Some(scale)),
            None => (text, None),
        };
        if code.is_empty() || code.len() > UNIT_CODE_BYTES_MAX {
            return Err(CoreError::invalid(
                Self::FIELD,
                format!("asset code must be 1 to {UNIT_CODE_BYTES_MAX} bytes, in {text:?}"),
            ));
        }
        let code_ok = code
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if !code_ok {
            return Err(CoreError::invalid(
                Self::FIELD,
                format!("asset code may use A-Z a-z 0-9 _ -, in {text:?}"),
            ));
        }
        if let Some(scale) = scale {
            let canonical = scale.len() == 1 || !scale.starts_with('0');
            match scale.parse::<u8>() {
                Ok(value) if canonical && value <= UNIT_SCALE_MAX && scale.bytes().all(|b| b.is_ascii_digit()) => {}
                _ => {
                    return Err(CoreError::invalid(
                        Self::FIELD,
                        format!("scale must be an integer 0 to {UNIT_SCALE_MAX} without leading zeros, in {text:?}"),
                    ))
                }
            }
        }
        Ok(Unit(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Unit({:?})", &*self.0)
    }
}

impl serde::Serialize for Unit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Unit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::identifier::deserialize_parsed(deserializer, Unit::parse)
    }
}
