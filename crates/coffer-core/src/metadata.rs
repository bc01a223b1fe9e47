use crate::error::CoreError;
use crate::limits::METADATA_BYTES_MAX;

/// A small JSON object attached to an account or transaction, kept as its
/// compact text with sorted keys so that equal objects have equal bytes (the
/// idempotency fingerprint depends on it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Metadata(Box<str>);

impl Metadata {
    pub const FIELD: &'static str = "metadata";

    pub fn from_value(value: &serde_json::Value) -> Result<Self, CoreError> {
        let serde_json::Value::Object(object) = value else {
            return Err(CoreError::invalid(Self::FIELD, "must be a JSON object"));
        };
        // serde_json's Map is a BTreeMap (no preserve_order feature), so this
        // text is canonical.
        let text = serde_json::to_string(object).map_err(|error| CoreError::invalid(Self::FIELD, error.to_string()))?;
        if text.len() > METADATA_BYTES_MAX {
            return Err(CoreError::invalid(
                Self::FIELD,
                format!(
                    "is {} bytes as compact JSON, the limit is {METADATA_BYTES_MAX}",
                    text.len()
                ),
            ));
        }
        Ok(Metadata(text.into()))
    }

    pub fn parse(text: &str) -> Result<Self, CoreError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| CoreError::invalid(Self::FIELD, error.to_string()))?;
        Self::from_value(&value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).expect("metadata text is valid JSON by construction")
    }
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Metadata({})", &*self.0)
    }
}

impl serde::Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.to_value(), serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Metadata::from_value(&value).map_err(serde::de::Error::custom)
    }
}
