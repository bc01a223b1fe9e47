//! OpenAPI schemas of the types whose JSON is read by hand (numbers or
//! strings, validated ids, units, metadata), for the server's generated
//! document. Each says exactly what the parser accepts, so that a client
//! generator or a contract test can trust it: the patterns below mirror
//! `amount.rs`, `identifier.rs` and `unit.rs`, and the tests at the end check
//! them against those parsers.

use crate::amount::{Amount, Balance};
use crate::identifier::{AccountId, HoldId, TransactionId};
use crate::limits::{ID_BYTES_MAX, METADATA_BYTES_MAX, UNIT_CODE_BYTES_MAX, UNIT_SCALE_MAX};
use crate::metadata::Metadata;
use crate::operation::{LimitChange, Operation};
use crate::unit::Unit;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// A JSON number: every integer serde_json reads as one (beyond these it
/// reads a float, which is refused).
const JSON_INTEGER_MIN: i64 = i64::MIN;
const JSON_INTEGER_MAX: u64 = u64::MAX;

/// Decimal strings in canonical form. Amounts below 3.4·10^38 (all parse;
/// above `i128::MAX` the engine rejects them with `amount_overflow`);
/// balances of at most 38 digits or below 1.7·10^38 (all within i128).
pub const AMOUNT_TEXT_PATTERN: &str = "^([1-9][0-9]{0,37}|[12][0-9]{38}|3[0-3][0-9]{37})$";
pub const BALANCE_TEXT_PATTERN: &str = "^(0|-?[1-9][0-9]{0,37}|-?1[0-6][0-9]{37})$";
/// Ids: the identifier alphabet; account and hold ids may hold one
/// non-empty `{…}` pair, their shard key.
pub const ID_PATTERN: &str = "^[A-Za-z0-9_.:@-]+$";
pub const SHARDED_ID_PATTERN: &str = r"^[A-Za-z0-9_.:@-]*(\{[A-Za-z0-9_.:@-]+\})?[A-Za-z0-9_.:@-]*$";
const _: () = assert!(
    UNIT_CODE_BYTES_MAX == 16 && UNIT_SCALE_MAX == 38,
    "UNIT_PATTERN spells both out"
);
pub const UNIT_PATTERN: &str = "^[A-Za-z0-9_-]{1,16}(/([0-9]|[12][0-9]|3[0-8]))?$";

fn integer_or_text(
    minimum: Option<i64>,
    maximum: u64,
    text_pattern: &str,
    description: &str,
    example: i64,
) -> RefOr<Schema> {
    let number = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(minimum.unwrap_or(JSON_INTEGER_MIN) as isize))
        .maximum(Some(maximum as usize));
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(text_pattern));
    OneOfBuilder::new()
        .item(number)
        .item(text)
        .description(Some(description))
        .examples([example])
        .into()
}

impl PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        integer_or_text(
            Some(1),
            JSON_INTEGER_MAX,
            AMOUNT_TEXT_PATTERN,
            "A positive integer in the unit's smallest denomination: a JSON number up to 2^64-1, or a decimal \
             string (no sign, no leading zeros) for larger values. Written back as a number within 64 bits, as a \
             string beyond.",
            2_500,
        )
    }
}
impl ToSchema for Amount {}

impl PartialSchema for Balance {
    fn schema() -> RefOr<Schema> {
        integer_or_text(
            None,
            JSON_INTEGER_MAX,
            BALANCE_TEXT_PATTERN,
            "A signed integer in the unit's smallest denomination: a JSON number from -2^63 to 2^64-1, or a \
             decimal string (optional '-', no leading zeros) for larger magnitudes.",
            -500,
        )
    }
}
impl ToSchema for Balance {}

fn identifier(pattern: &str, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(ID_BYTES_MAX))
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
        .into()
}

impl PartialSchema for AccountId {
    fn schema() -> RefOr<Schema> {
        identifier(
            SHARDED_ID_PATTERN,
            "An account id: 1-128 bytes of A-Z a-z 0-9 _ . : @ -, with at most one non-empty {…} pair naming its \
             shard key (user:{42}:wallet). Ids starting with @ are system accounts; @world is the implicit source \
             and sink of every unit. In a URL path, raw or percent-encoded.",
            "user:42",
        )
    }
}
impl ToSchema for AccountId {}

impl PartialSchema for HoldId {
    fn schema() -> RefOr<Schema> {
        identifier(
            SHARDED_ID_PATTERN,
            "A hold id chosen by the client: the alphabet of account ids, with at most one {…} pair.",
            "order-7",
        )
    }
}
impl ToSchema for HoldId {}

impl PartialSchema for TransactionId {
    fn schema() -> RefOr<Schema> {
        identifier(
            ID_PATTERN,
            "A transaction id, the idempotency key: 1-128 bytes of A-Z a-z 0-9 _ . : @ -.",
            "tx-2f6c1e",
        )
    }
}
impl ToSchema for TransactionId {}

impl PartialSchema for Unit {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(UNIT_PATTERN))
            .description(Some(
                "A unit: an asset code of 1-16 A-Z a-z 0-9 _ -, and optionally / and a decimal scale 0-38 \
                 (USD/2 counts cents).",
            ))
            .examples(["USD/2"])
            .into()
    }
}
impl ToSchema for Unit {}

impl PartialSchema for Metadata {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(format!(
                "A JSON object of at most {METADATA_BYTES_MAX} bytes as compact JSON, kept with the account or \
                 transaction."
            )))
            .examples([serde_json::json!({"order": "A-17"})])
            .into()
    }
}
impl ToSchema for Metadata {}

/// `max_total` of `set_limits`: absent leaves the ceiling, `null` removes it.
impl PartialSchema for LimitChange {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Balance::schema())
            .item(ObjectBuilder::new().schema_type(SchemaType::Type(Type::Null)))
            .description(Some("The new ceiling; null removes it; absent leaves it as it is."))
            .into()
    }
}
impl ToSchema for LimitChange {}

/// `Operation` as the API reads it: the derived schema with each variant
/// closed to unknown fields, as serde reads them (`deny_unknown_fields`,
/// which the derive applies to structs only).
pub struct OperationSchema;

impl PartialSchema for OperationSchema {
    fn schema() -> RefOr<Schema> {
        let mut schema = <Operation as PartialSchema>::schema();
        let RefOr::T(Schema::OneOf(variants)) = &mut schema else {
            unreachable!("a tagged enum's schema is a oneOf")
        };
        for variant in &mut variants.items {
            if let RefOr::T(Schema::Object(object)) = variant {
                object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
        variants.description = Some("One step of a transaction, by its `type`".into());
        schema
    }
}

impl ToSchema for OperationSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "Operation".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <Operation as ToSchema>::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full_match(pattern: &str, text: &str) -> bool {
        regex::Regex::new(pattern).expect("a valid pattern").is_match(text)
    }

    /// Strings a schema allows, generated from its pattern (anchors off:
    /// the generator makes whole strings).
    fn allowed(pattern: &'static str) -> impl Strategy<Value = String> {
        let body = pattern.trim_start_matches('^').trim_end_matches('$');
        proptest::string::string_regex(body).expect("a pattern proptest can generate from")
    }

    /// Near-misses of every kind: digits, signs, zeros, the id alphabet,
    /// braces, slashes.
    fn candidates() -> impl Strategy<Value = String> {
        "[-0-9]{0,41}|[0-9a-z{}:@/_.-]{0,12}|[A-Z]{1,18}/[0-9]{0,3}"
    }

    proptest! {
        #[test]
        fn what_a_schema_allows_parses(
            amount in allowed(AMOUNT_TEXT_PATTERN),
            balance in allowed(BALANCE_TEXT_PATTERN),
            id in allowed(ID_PATTERN),
            sharded in allowed(SHARDED_ID_PATTERN),
            unit in allowed(UNIT_PATTERN),
        ) {
            prop_assert!(Amount::parse(&amount).is_ok(), "{}", amount);
            prop_assert!(Balance::parse(&balance).is_ok(), "{}", balance);
            if id.len() <= ID_BYTES_MAX {
                prop_assert!(TransactionId::parse(&id).is_ok(), "{}", id);
            }
            if (1..=ID_BYTES_MAX).contains(&sharded.len()) {
                prop_assert!(AccountId::parse(&sharded).is_ok(), "{}", sharded);
                prop_assert!(HoldId::parse(&sharded).is_ok(), "{}", sharded);
            }
            prop_assert!(Unit::parse(&unit).is_ok(), "{}", unit);
        }

        #[test]
        fn what_parses_the_schema_allows(text in candidates()) {
            if Balance::parse(&text).is_ok_and(|balance| balance.value().unsigned_abs() < 17 * 10_u128.pow(37)) {
                prop_assert!(full_match(BALANCE_TEXT_PATTERN, &text), "{}", text);
            }
            if Amount::parse(&text).is_ok_and(|amount| amount.value() < 34 * 10_u128.pow(37)) {
                prop_assert!(full_match(AMOUNT_TEXT_PATTERN, &text), "{}", text);
            }
            prop_assert_eq!(TransactionId::parse(&text).is_ok(), full_match(ID_PATTERN, &text) && text.len() <= ID_BYTES_MAX, "{}", text);
            prop_assert_eq!(AccountId::parse(&text).is_ok(), full_match(SHARDED_ID_PATTERN, &text) && (1..=ID_BYTES_MAX).contains(&text.len()), "{}", text);
            prop_assert_eq!(Unit::parse(&text).is_ok(), full_match(UNIT_PATTERN, &text), "{}", text);
        }
    }

    #[test]
    fn the_edges_of_the_integer_patterns() {
        for text in [
            "1",
            "9",
            "10",
            "99999999999999999999999999999999999999",
            "339999999999999999999999999999999999999",
        ] {
            assert!(
                full_match(AMOUNT_TEXT_PATTERN, text) && Amount::parse(text).is_ok(),
                "{text}"
            );
        }
        for text in [
            "0",
            "01",
            "-1",
            "+1",
            "1.0",
            "340000000000000000000000000000000000000",
            "",
        ] {
            assert!(!full_match(AMOUNT_TEXT_PATTERN, text), "{text}");
        }
        for text in [
            "0",
            "-1",
            "-169999999999999999999999999999999999999",
            "169999999999999999999999999999999999999",
        ] {
            assert!(
                full_match(BALANCE_TEXT_PATTERN, text) && Balance::parse(text).is_ok(),
                "{text}"
            );
        }
        for text in ["-0", "00", "-01", "+1", "170000000000000000000000000000000000000"] {
            assert!(!full_match(BALANCE_TEXT_PATTERN, text), "{text}");
        }
    }
}
