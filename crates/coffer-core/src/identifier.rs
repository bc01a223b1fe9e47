//! Validated identifiers. Once one of these exists, it is 1..=128 bytes of
//! `[A-Za-z0-9_.:@-]`, and an account id may also hold one balanced,
//! non-empty `{…}` pair: its shard key (`AccountId::shard_key`). Safe in
//! logs, SQL and Kafka keys without escaping; in URLs the braces of an
//! account id are percent-encoded (`%7B`, `%7D`), or sent raw.
//! Ids up to 24 bytes are stored inline (no heap allocation), which keeps
//! the engine's lookups to one cache line per account and makes remembering
//! a transaction id allocation-free in the common case.

use crate::error::CoreError;
use crate::limits::ID_BYTES_MAX;

/// Which bytes an id may hold, as a table: every id of every request is
/// checked byte by byte, and a load per byte took about 30 % fewer
/// instructions than the chain of comparisons it replaces (callgrind).
const IDENTIFIER_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let candidate = byte as u8;
        allowed[byte] = candidate.is_ascii_alphanumeric() || matches!(candidate, b'_' | b'.' | b':' | b'@' | b'-');
        byte += 1;
    }
    allowed
};

fn is_identifier_byte(byte: u8) -> bool {
    IDENTIFIER_BYTES[usize::from(byte)]
}

pub(crate) fn validate_identifier(field: &'static str, text: &str) -> Result<(), CoreError> {
    if text.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if text.len() > ID_BYTES_MAX {
        return Err(CoreError::invalid(
            field,
            format!("is {} bytes long, the limit is {ID_BYTES_MAX}", text.len()),
        ));
    }
    if let Some(position) = text.bytes().position(|byte| !is_identifier_byte(byte)) {
        let character = text[position..].chars().next().unwrap_or('?');
        return Err(CoreError::invalid(
            field,
            format!("character {character:?} at byte {position} is not allowed (use A-Z a-z 0-9 _ . : @ -)"),
        ));
    }
    Ok(())
}

/// Reads a string and parses it where it lies in the input. serde's
/// `Cow<str>` would not borrow (it does only under `#[serde(borrow)]`): it
/// allocated a `String` per id, three per transfer, only to copy it into
/// an inline id and free it again.
pub(crate) fn deserialize_parsed<'de, D, T>(
    deserializer: D,
    parse: fn(&str) -> Result<T, CoreError>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct ParsedString<T>(fn(&str) -> Result<T, CoreError>);

    impl<T> serde::de::Visitor<'_> for ParsedString<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
            (self.0)(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_str(ParsedString(parse))
}

/// An account id: the identifier alphabet, plus at most one balanced,
/// non-empty `{…}` pair. Ids without braces take the table's fast path.
fn validate_sharded_identifier(field: &'static str, text: &str) -> Result<(), CoreError> {
    let plain = validate_identifier(field, text);
    if plain.is_ok() || text.len() > ID_BYTES_MAX || !text.contains(['{', '}']) {
        return plain;
    }
    let without_braces: String = text
        .chars()
        .filter(|character| !matches!(character, '{' | '}'))
        .collect();
    if without_braces.is_empty() {
        return Err(CoreError::invalid(field, "must not be only braces"));
    }
    validate_identifier(field, &without_braces)?;
    match (text.find('{'), text.rfind('{'), text.find('}'), text.rfind('}')) {
        (Some(open), Some(last_open), Some(close), Some(last_close))
            if open == last_open && close == last_close && open + 1 < close =>
        {
            Ok(())
        }
        _ => Err(CoreError::invalid(
            field,
            "may hold one non-empty {…} pair (its shard key), with { before }",
        )),
    }
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        identifier!($(#[$doc])* $name, $field, validate_identifier);
    };
    ($(#[$doc:meta])* $name:ident, $field:literal, $validate:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(compact_str::CompactString);

        impl $name {
            pub const FIELD: &'static str = $field;

            pub fn parse(text: &str) -> Result<Self, CoreError> {
                $validate($field, text)?;
                Ok($name(compact_str::CompactString::new(text)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(formatter, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = CoreError;
            fn from_str(text: &str) -> Result<Self, CoreError> {
                Self::parse(text)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_parsed(deserializer, Self::parse)
            }
        }
    };
}

identifier!(
    /// An account id. Ids starting with `@` are system accounts; `@world`
    /// exists implicitly in every unit. One `{…}` pair names the shard key:
    /// `user:{42}:wallet` and `user:{42}:savings` share one.
    AccountId,
    "account id",
    validate_sharded_identifier
);
identifier!(
    /// A hold (reservation) id, chosen by the client. Like an account id it
    /// may hold one `{…}` pair: in a cluster the hold lives in that shard.
    HoldId,
    "hold id",
    validate_sharded_identifier
);
identifier!(
    /// A transaction id: the idempotency key.
    TransactionId,
    "transaction id"
);

/// The id of the implicit per-unit source and sink of money.
pub const WORLD: &str = "@world";

impl AccountId {
    pub fn world() -> Self {
        AccountId(compact_str::CompactString::const_new(WORLD))
    }

    pub fn is_world(&self) -> bool {
        &*self.0 == WORLD
    }

    pub fn is_system(&self) -> bool {
        self.0.starts_with('@')
    }

    /// What places the account in a shard (`shard_key_of`).
    pub fn shard_key(&self) -> &str {
        shard_key_of(&self.0)
    }

    /// The shard of `shards` that holds this account (`shard_of`).
    pub fn shard(&self, shards: u32) -> u32 {
        shard_of(&self.0, shards)
    }
}

impl HoldId {
    /// The shard of `shards` that keeps this hold (`shard_of`).
    pub fn shard(&self, shards: u32) -> u32 {
        shard_of(&self.0, shards)
    }
}

/// The text inside an id's `{…}` pair, else the whole id (the hash-tag
/// convention of Redis Cluster).
fn shard_key_of(id: &str) -> &str {
    match (id.find('{'), id.find('}')) {
        (Some(open), Some(close)) => &id[open + 1..close],
        _ => id,
    }
}

/// xxh3-64 of the shard key, modulo the count. Fixed forever: changing it
/// would move every account of an existing cluster (a test pins it).
fn shard_of(id: &str, shards: u32) -> u32 {
    assert!(shards >= 1, "a cluster has at least one shard");
    (xxhash_rust::xxh3::xxh3_64(shard_key_of(id).as_bytes()) % u64::from(shards)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_may_hold_one_non_empty_brace_pair() {
        for good in [
            "user:{42}:wallet",
            "{a}",
            "product:{phone}:buyer:u1",
            "x{y}",
            "@fees:{eu}",
        ] {
            assert!(AccountId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "{}", "a{b", "a}b", "a}b{c", "{a}{b}", "a{{b}}", "}{", "{", "}", "{a b}", "{a}}", "{é}",
        ] {
            assert!(AccountId::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{{{}}}", "k".repeat(ID_BYTES_MAX - 1));
        assert!(AccountId::parse(&long).is_err(), "braces count toward the length limit");
        assert!(AccountId::parse(&long[1..long.len() - 1]).is_ok());
    }

    #[test]
    fn other_ids_keep_the_plain_alphabet() {
        assert!(TransactionId::parse("user:{42}").is_err());
        assert!(
            HoldId::parse("order:{42}:h1").is_ok(),
            "a hold names its shard as an account does"
        );
        assert_eq!(
            HoldId::parse("order:{42}:h1").unwrap().shard(6),
            AccountId::parse("user:{42}:wallet").unwrap().shard(6)
        );
    }

    #[test]
    fn the_shard_key_is_the_text_inside_the_braces_else_the_whole_id() {
        let shard_key = |text: &str| AccountId::parse(text).unwrap().shard_key().to_owned();
        assert_eq!(shard_key("user:{42}:wallet"), "42");
        assert_eq!(shard_key("product:{phone}:buyer:u1"), "phone");
        assert_eq!(shard_key("plain"), "plain");
        let shard = |text: &str| AccountId::parse(text).unwrap().shard(6);
        assert_eq!(shard("user:{42}:wallet"), shard("user:{42}:savings"));
        assert_eq!(shard("product:{phone}"), shard("product:{phone}:buyer:u1"));
        assert_eq!(shard("user:{42}:wallet"), shard("42"));
    }

    /// Pinned: a different function would move the accounts of every
    /// existing cluster to other shards.
    #[test]
    fn the_shard_function_never_changes() {
        let shards: Vec<u32> = ["42", "alice", "user:{42}:wallet", "product:{phone}", "@world"]
            .iter()
            .map(|text| AccountId::parse(text).unwrap().shard(6))
            .collect();
        assert_eq!(shards, PINNED_SHARDS_OF_6);
        assert_eq!(AccountId::parse("alice").unwrap().shard(1), 0);
    }

    const PINNED_SHARDS_OF_6: [u32; 5] = [5, 0, 5, 1, 3];
}
