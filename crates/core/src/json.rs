//! The one way a layer parses a body it decides on: JSON with duplicate
//! keys refused.
//!
//! Parsers disagree about `{"model":"evil","model":"gpt-4o"}`: serde_json
//! keeps the last value, other servers take the first. A policy that checks
//! one and an upstream that uses the other is a bypass, so a body with a
//! repeated key is refused (400) wherever a decision is made on it.
//!
//! ```
//! use switchboard_core::json::{from_slice_unique, is_duplicate_key};
//!
//! assert!(from_slice_unique(br#"{"a":{"b":1},"c":[{"b":2}]}"#).is_ok());
//! let err = from_slice_unique(br#"{"model":"evil","model":"gpt-4o"}"#).unwrap_err();
//! assert!(is_duplicate_key(&err));
//! assert!(err.to_string().contains("\"model\""));
//! ```

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

const DUPLICATE: &str = "duplicate key ";

/// Parses JSON like `serde_json::from_slice`, refusing any object with a
/// repeated key (at any depth).
pub fn from_slice_unique(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = UniqueSeed.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Whether a parse error is a repeated key.
pub fn is_duplicate_key(err: &serde_json::Error) -> bool {
    err.is_data() && err.to_string().starts_with(DUPLICATE)
}

/// The visitor [`from_slice_unique`] drives, for any serde deserializer:
/// a `serde_json::Value`, refusing repeated keys at any depth.
#[derive(Clone, Copy, Debug, Default)]
pub struct UniqueSeed;

impl<'de> DeserializeSeed<'de> for UniqueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(UniqueSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(UniqueSeed)?;
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "{DUPLICATE}{}",
                    Value::String(key)
                )));
            }
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_serde_json() {
        let text = br#"{"a":1,"b":[1.5,-2,"x",null,true,{"c":{}}],"d":18446744073709551615}"#;
        assert_eq!(
            from_slice_unique(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
    }

    #[test]
    fn nested_duplicates_and_trailing_garbage() {
        let err = from_slice_unique(br#"{"a":[{"x":1,"x":2}]}"#).unwrap_err();
        assert!(is_duplicate_key(&err), "{err}");
        let err = from_slice_unique(br#"{"a":1} x"#).unwrap_err();
        assert!(!is_duplicate_key(&err));
        // Keys that only look alike after escapes are the same key.
        let err = from_slice_unique(br#"{"model":1,"mod\u0065l":2}"#).unwrap_err();
        assert!(is_duplicate_key(&err));
    }
}
