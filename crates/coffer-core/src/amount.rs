//! Integer quantities. JSON accepts a number or a decimal string (JavaScript
//! clients cannot hold 2^53 and above as numbers) and writes numbers within
//! 64 bits, decimal strings beyond. Numbers with a fraction are refused:
//! money is never approximate. A whole number written with a fraction or
//! exponent (`2.0`, `2e3`) reads as that integer up to 2^53, where every
//! integer is exactly a double (JSON Schema counts `2.0` as an integer).

use crate::error::CoreError;
use serde::de::{self, Visitor};

/// A positive quantity moved by an operation, in the unit's smallest
/// denomination. Zero is refused: a zero transfer is always a client bug.
/// Amounts above `i128::MAX` parse, but no balance can hold them, so the
/// engine rejects them with `amount_overflow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(u128);

/// A signed balance or limit: available balances may be negative down to
/// their floor, and `@world` is negative without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Balance(i128);

impl Amount {
    pub const FIELD: &'static str = "amount";

    pub fn new(value: u128) -> Result<Self, CoreError> {
        if value == 0 {
            return Err(CoreError::invalid(Self::FIELD, "must be greater than 0"));
        }
        Ok(Amount(value))
    }

    pub fn value(self) -> u128 {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, CoreError> {
        Amount::new(parse_integer(Self::FIELD, text)?.unsigned(Self::FIELD)?)
    }
}

impl Balance {
    pub const FIELD: &'static str = "balance";

    pub fn new(value: i128) -> Self {
        Balance(value)
    }

    pub fn value(self) -> i128 {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, CoreError> {
        parse_integer(Self::FIELD, text)?.signed(Self::FIELD).map(Balance)
    }
}

/// An integer read from JSON before its sign and range are checked.
enum Integer {
    Negative(i128),
    NonNegative(u128),
}

impl Integer {
    fn unsigned(self, field: &'static str) -> Result<u128, CoreError> {
        match self {
            Integer::NonNegative(value) => Ok(value),
            Integer::Negative(_) => Err(CoreError::invalid(field, "must not be negative")),
        }
    }

    fn signed(self, field: &'static str) -> Result<i128, CoreError> {
        match self {
            Integer::Negative(value) => Ok(value),
            Integer::NonNegative(value) => i128::try_from(value)
                .map_err(|_| CoreError::invalid(field, format!("exceeds the largest balance {}", i128::MAX))),
        }
    }
}

fn parse_integer(field: &'static str, text: &str) -> Result<Integer, CoreError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 40 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(CoreError::invalid(
            field,
            format!("{text:?} is not an integer (digits only, optional leading '-', no decimal point)"),
        ));
    }
    // One spelling per value: the API document can then say exactly which
    // strings are numbers (and equal payloads have equal bytes).
    if (digits.len() > 1 && digits.starts_with('0')) || text == "-0" {
        return Err(CoreError::invalid(
            field,
            format!("{text:?} is not in canonical form (no leading zeros, no \"-0\")"),
        ));
    }
    let out_of_range = || CoreError::invalid(field, format!("{text:?} is out of range"));
    if text.starts_with('-') {
        text.parse::<i128>().map(Integer::Negative).map_err(|_| out_of_range())
    } else {
        digits
            .parse::<u128>()
            .map(Integer::NonNegative)
            .map_err(|_| out_of_range())
    }
}

struct IntegerVisitor(&'static str);

impl<'de> Visitor<'de> for IntegerVisitor {
    type Value = Integer;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(formatter, "an integer {} as a JSON number or a decimal string", self.0)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Integer, E> {
        Ok(Integer::NonNegative(u128::from(value)))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Integer, E> {
        Ok(Integer::NonNegative(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Integer, E> {
        self.visit_i128(i128::from(value))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Integer, E> {
        Ok(if value < 0 {
            Integer::Negative(value)
        } else {
            Integer::NonNegative(value as u128)
        })
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Integer, E> {
        if let Some(whole) = whole(value) {
            return self.visit_i64(whole);
        }
        Err(E::custom(format!(
            "invalid {}: {value} is not a whole number (or beyond 2^53 written as a float); amounts are integers in the smallest denomination",
            self.0
        )))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Integer, E> {
        parse_integer(self.0, text).map_err(E::custom)
    }
}

/// The largest magnitude up to which every integer is a double: JSON
/// numbers written with a fraction or exponent (`2.0`, `2e3`, which JSON
/// Schema calls integers) are read as whole numbers up to it, never beyond.
const WHOLE_FLOAT_MAX: f64 = 9_007_199_254_740_992.0; // 2^53

fn whole(value: f64) -> Option<i64> {
    (value.fract() == 0.0 && value.abs() <= WHOLE_FLOAT_MAX).then_some(value as i64)
}

/// An optional count (milliseconds, a time to live) as an integer or a
/// whole-valued JSON number, for `deserialize_with`.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct WholeNumber;

    impl Visitor<'_> for WholeNumber {
        type Value = Option<u64>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a non-negative integer")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<u64>, E> {
            Ok(Some(value))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<u64>, E> {
            u64::try_from(value)
                .map(Some)
                .map_err(|_| E::custom(format!("{value} is negative")))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<u64>, E> {
            match whole(value) {
                Some(whole) => self.visit_i64(whole),
                None => Err(E::custom(format!("{value} is not an integer"))),
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(WholeNumber)
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let integer = deserializer.deserialize_any(IntegerVisitor(Amount::FIELD))?;
        integer
            .unsigned(Amount::FIELD)
            .and_then(Amount::new)
            .map_err(de::Error::custom)
    }
}

impl<'de> serde::Deserialize<'de> for Balance {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let integer = deserializer.deserialize_any(IntegerVisitor(Balance::FIELD))?;
        integer.signed(Balance::FIELD).map(Balance).map_err(de::Error::custom)
    }
}

// Beyond 64 bits as decimal strings: JSON readers (serde_json's
// self-describing path included, which the visitor above is read through)
// take larger numbers as floats, so a number written here would not read
// back. Commands written by coffer (async HTTP through Kafka) and by its
// client round-trip exactly.
impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match u64::try_from(self.0) {
            Ok(small) => serializer.serialize_u64(small),
            Err(_) => serializer.collect_str(&self.0),
        }
    }
}

impl serde::Serialize for Balance {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(self.0) {
            Ok(small) => serializer.serialize_i64(small),
            Err(_) => serializer.collect_str(&self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_amount_and_balance_reads_back_what_it_writes() {
        let amounts = [
            1,
            u128::from(u64::MAX),
            u128::from(u64::MAX) + 1,
            10_u128.pow(30),
            u128::MAX,
        ];
        for value in amounts {
            let text = serde_json::to_string(&Amount::new(value).unwrap()).unwrap();
            assert_eq!(serde_json::from_str::<Amount>(&text).unwrap().value(), value, "{text}");
        }
        let balances = [
            0,
            -1,
            i128::from(i64::MIN),
            i128::from(i64::MIN) - 1,
            i128::from(i64::MAX) + 1,
            i128::MIN,
            i128::MAX,
        ];
        for value in balances {
            let text = serde_json::to_string(&Balance::new(value)).unwrap();
            assert_eq!(serde_json::from_str::<Balance>(&text).unwrap().value(), value, "{text}");
        }
        assert_eq!(serde_json::to_string(&Amount::new(250).unwrap()).unwrap(), "250");
    }
}
