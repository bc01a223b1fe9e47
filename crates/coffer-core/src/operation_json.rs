//! Reading an `Operation` from JSON without buffering it first.
//!
//! serde reads an internally tagged enum (`{"type": "transfer", ...}`) by
//! buffering every field into a generic tree, because the tag may come
//! last; then it reads the variant from the tree. For the batch endpoint
//! that was a quarter of the parse (450-530 ns per transfer item against
//! 335 ns for a plain struct). Clients put `type` first, and transfers are
//! most operations, so when `type` comes first and names a transfer, the
//! fields are read straight into the variant. Anything else is buffered as
//! before and read by the derived code (`Operation::deserialize_tagged`),
//! which defines the behaviour: the fast path must give the same result,
//! which a test checks over generated inputs.

use crate::amount::Amount;
use crate::identifier::AccountId;
use crate::operation::Operation;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OperationVisitor)
    }
}

/// The transfer variant's fields, for the fast path.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferFields {
    from: AccountId,
    to: AccountId,
    amount: Amount,
}

/// A map key: `type`, or any other name (kept for buffering).
enum Key {
    Type,
    Other(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(if key == "type" {
                    Key::Type
                } else {
                    Key::Other(key.to_owned())
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

impl Key {
    fn into_name(self) -> String {
        match self {
            Key::Type => "type".to_owned(),
            Key::Other(name) => name,
        }
    }
}

struct OperationVisitor;

impl<'de> Visitor<'de> for OperationVisitor {
    type Value = Operation;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("internally tagged enum Operation")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Operation, A::Error> {
        // In order, duplicates kept: the derived code decides what they mean.
        let mut buffered: Vec<(String, Value)> = Vec::new();
        match map.next_key::<Key>()? {
            Some(Key::Type) => {
                let tag: Value = map.next_value()?;
                if tag.as_str() == Some("transfer") {
                    return read_transfer(map);
                }
                buffered.push(("type".to_owned(), tag));
            }
            Some(Key::Other(name)) => buffered.push((name, map.next_value()?)),
            None => {}
        }
        while let Some(key) = map.next_key::<Key>()? {
            buffered.push((key.into_name(), map.next_value()?));
        }
        let fields = de::value::MapDeserializer::<_, serde_json::Error>::new(buffered.into_iter());
        Operation::deserialize_tagged(fields).map_err(de::Error::custom)
    }

    /// The derived code also reads `[tag, fields...]`; keep that as it was.
    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Operation, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = sequence.next_element::<Value>()? {
            elements.push(element);
        }
        Operation::deserialize_tagged(Value::Array(elements)).map_err(de::Error::custom)
    }
}

impl Operation {
    /// The reference reading: serde's derived code for the tagged enum,
    /// which buffers the object before it knows the variant. `Deserialize`
    /// answers the same, faster; a property test and the `operation_json`
    /// fuzz target hold it to this.
    pub fn from_json_reference(text: &str) -> Result<Operation, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let operation = Operation::deserialize_tagged(&mut deserializer)?;
        // As `serde_json::from_str`: nothing but white space may follow.
        deserializer.end()?;
        Ok(operation)
    }
}

/// The rest of a transfer's fields, straight from the input. One input
/// reads differently: a second `type` is "unknown field" here and
/// "duplicate field" in the derived code; both reject it.
fn read_transfer<'de, A: MapAccess<'de>>(map: A) -> Result<Operation, A::Error> {
    let fields = TransferFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
    Ok(Operation::Transfer {
        from: fields.from,
        to: fields.to,
        amount: fields.amount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "type",
        "from",
        "to",
        "amount",
        "account",
        "unit",
        "hold",
        "memo",
        "min_available",
        "max_total",
        "metadata",
        "ttl_ms",
        "available",
    ];
    const VALUES: &[&str] = &[
        r#""transfer""#,
        r#""open""#,
        r#""hold""#,
        r#""release""#,
        r#""set_limits""#,
        r#""close""#,
        r#""bogus""#,
        r#""acct-1""#,
        r#""acct:2""#,
        r#""""#,
        r#""@world""#,
        r#""USD/2""#,
        "5",
        "0",
        "-3",
        "1e3",
        "18446744073709551616",
        r#""340282366920938463463374607431768211455""#,
        "null",
        "true",
        "{}",
        "[]",
        r#"{"k": "v"}"#,
    ];

    /// serde_json appends where an error happened; the two readings stop
    /// at different places, which is not a different answer.
    fn without_position(message: String) -> String {
        match message.find(" at line ") {
            Some(at) => message[..at].to_owned(),
            None => message,
        }
    }

    fn derived(text: &str) -> Result<Operation, String> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        Operation::deserialize_tagged(&mut deserializer).map_err(|error| without_position(error.to_string()))
    }

    fn fast(text: &str) -> Result<Operation, String> {
        serde_json::from_str::<Operation>(text).map_err(|error| without_position(error.to_string()))
    }

    fn object(pairs: &[(usize, usize)], transfer_first: bool) -> String {
        let mut fields: Vec<String> = Vec::new();
        if transfer_first {
            fields.push(r#""type": "transfer""#.to_owned());
        }
        for (key, value) in pairs {
            fields.push(format!(r#""{}": {}"#, KEYS[*key], VALUES[*value]));
        }
        format!("{{{}}}", fields.join(", "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]
        #[test]
        fn the_fast_reading_answers_as_the_derived_one(
            pairs in prop::collection::vec((0..KEYS.len(), 0..VALUES.len()), 0..6),
            transfer_first: bool,
        ) {
            let text = object(&pairs, transfer_first);
            // The one known difference (read_transfer): `type: transfer`
            // first and `type` again later.
            let types = pairs.iter().filter(|(key, _)| KEYS[*key] == "type").count() + usize::from(transfer_first);
            let second_type = types > 1 && text.starts_with(r#"{"type": "transfer""#);
            match (fast(&text), derived(&text)) {
                (Ok(fast), Ok(derived)) => prop_assert_eq!(fast, derived, "{}", text),
                (Err(_), Err(_)) if second_type => {}
                (fast, derived) => prop_assert_eq!(fast, derived, "{}", text),
            }
        }
    }

    /// Found by the `operation_json` fuzz target: trailing bytes after a
    /// valid operation are refused by both readers.
    #[test]
    fn trailing_bytes_are_refused_by_both_readers() {
        let text = r#"{"type":"transfer","from":"b","to":"a","amount":1000000}=""#;
        assert!(serde_json::from_str::<Operation>(text).is_err());
        assert!(Operation::from_json_reference(text).is_err());
        let spaced = r#" {"type":"transfer","from":"b","to":"a","amount":1} "#;
        assert_eq!(
            serde_json::from_str::<Operation>(spaced).ok(),
            Operation::from_json_reference(spaced).ok()
        );
    }

    #[test]
    fn transfers_and_other_operations_read_the_same_either_way() {
        for text in [
            r#"{"type": "transfer", "from": "a", "to": "b", "amount": 5}"#,
            r#"{"from": "a", "amount": "5", "type": "transfer", "to": "b"}"#,
            r#"{"type": "open", "account": "a", "unit": "USD/2", "max_total": 10}"#,
            r#"{"type": "set_limits", "account": "a", "max_total": null}"#,
            r#"{"type": "transfer", "from": "a", "to": "b", "amount": 5, "memo": 1}"#,
            r#"{"type": "transfer", "from": "a", "to": "b"}"#,
            r#"{"type": "transfer", "from": "a", "from": "a", "to": "b", "amount": 5}"#,
            r#"{"from": "a", "from": "a", "to": "b", "amount": 5, "type": "transfer"}"#,
            r#"{"type": "teleport"}"#,
            r#"["transfer", "a", "b", 5]"#,
            r#""transfer""#,
            "{}",
        ] {
            assert_eq!(fast(text), derived(text), "{text}");
        }
        assert_eq!(
            fast(r#"{"type": "transfer", "from": "a", "to": "b", "amount": 5}"#),
            Ok(Operation::transfer(
                AccountId::parse("a").unwrap(),
                AccountId::parse("b").unwrap(),
                Amount::new(5).unwrap()
            ))
        );
    }
}
