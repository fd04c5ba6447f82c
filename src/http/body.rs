//! The JSON bodies the API reads: keys as one string or a list, values as a string or
//! `{"base64": "..."}`. Unknown fields are refused, and serde_json's errors carry the line and
//! column of the problem, which `bad_request` passes on.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// `{"keys": "k"}` or `{"keys": ["k1", "k2"]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest<'a> {
    #[serde(borrow)]
    pub keys: Keys<'a>,
}

/// One key or a list of keys, borrowed from the body where they hold no escapes: a 1000-key
/// delete then allocates no string per key.
#[derive(Debug)]
pub struct Keys<'a>(pub Vec<Cow<'a, str>>);

/// One key as a borrowed string where it can be.
#[derive(Debug, Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Keys<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeysVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeysVisitor<'a> {
            type Value = Keys<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key (a string) or a list of keys")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Keys<'a>, E> {
                Ok(Keys(vec![Cow::Borrowed(v)]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Keys<'a>, E> {
                Ok(Keys(vec![Cow::Owned(v.to_string())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Keys<'a>, A::Error> {
                let mut keys = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(Key(key)) = seq.next_element::<Key<'a>>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_any(KeysVisitor(std::marker::PhantomData))
    }
}

/// A value: a string, or `{"base64": "..."}` for bytes that are not UTF-8.
#[derive(Debug)]
pub struct Value(pub Vec<u8>);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or {\"base64\": \"...\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value(v.as_bytes().to_vec()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut bytes = None;
                while let Some(field) = map.next_key::<String>()? {
                    if field != "base64" || bytes.is_some() {
                        return Err(de::Error::custom(format!(
                            "unexpected field `{field}` in a value: expected only `base64`"
                        )));
                    }
                    let text: String = map.next_value()?;
                    let decoded = STANDARD
                        .decode(text.as_bytes())
                        .map_err(|e| de::Error::custom(format!("invalid base64: {e}")))?;
                    bytes = Some(decoded);
                }
                bytes
                    .map(Value)
                    .ok_or_else(|| de::Error::custom("a value object needs `base64`"))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// A value for a JSON answer: the string when it is UTF-8, else `{"base64": "..."}`.
pub fn value_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::String(text.to_string()),
        Err(_) => serde_json::json!({ "base64": STANDARD.encode(bytes) }),
    }
}

/// One entry of `/v1/keys/set`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    pub ttl_ms: Option<u64>,
}

/// `/v1/keys/set`: one entry inline, or `entries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    pub key: Option<String>,
    pub value: Option<Value>,
    pub ttl_ms: Option<u64>,
    pub entries: Option<Vec<Entry>>,
}

impl SetRequest {
    /// The entries, or why the body is not one of the two shapes.
    pub fn into_entries(self) -> Result<Vec<Entry>, String> {
        match (self.key, self.value, self.ttl_ms, self.entries) {
            (Some(key), Some(value), ttl_ms, None) => Ok(vec![Entry { key, value, ttl_ms }]),
            (None, None, None, Some(entries)) if !entries.is_empty() => Ok(entries),
            (None, None, None, Some(_)) => Err("`entries` is empty".into()),
            (None, None, None, None) => {
                Err("expected {\"key\", \"value\"[, \"ttl_ms\"]} or {\"entries\": [...]}".into())
            }
            (Some(_), None, _, None) => Err("`value` is missing".into()),
            (None, Some(_), _, None) => Err("`key` is missing".into()),
            _ => Err("give either `key` and `value` or `entries`, not both".into()),
        }
    }
}

/// `/v1/hooks/{name}`: `{"params": {"id": "42"}}`; numbers and booleans are taken as their
/// JSON text.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookRequest {
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
}

/// A hook parameter's value.
#[derive(Debug)]
pub struct Param(pub String);

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => Ok(Param(s)),
            v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                Ok(Param(v.to_string()))
            }
            other => Err(de::Error::custom(format!(
                "a parameter is a string or a number, got {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_string_or_a_list() {
        let one: KeysRequest = serde_json::from_str(r#"{"keys": "a"}"#).unwrap();
        assert_eq!(one.keys.0, vec!["a"]);
        let many: KeysRequest = serde_json::from_str(r#"{"keys": ["a", "b"]}"#).unwrap();
        assert_eq!(many.keys.0, vec!["a", "b"]);
        let error = serde_json::from_str::<KeysRequest>(r#"{"keys": 5}"#).unwrap_err();
        assert!(error.to_string().contains("column"), "{error}");
        assert!(serde_json::from_str::<KeysRequest>(r#"{"keys": [], "x": 1}"#).is_err());
    }

    #[test]
    fn values_round_trip_as_text_or_base64() {
        let entry: Entry =
            serde_json::from_str(r#"{"key": "k", "value": {"base64": "/wA="}}"#).unwrap();
        assert_eq!(entry.value.0, vec![0xff, 0x00]);
        assert_eq!(
            value_json(&[0xff, 0x00]),
            serde_json::json!({"base64": "/wA="})
        );
        assert_eq!(value_json(b"text"), serde_json::json!("text"));
    }

    #[test]
    fn set_takes_one_of_two_shapes() {
        let parse = |s: &str| {
            serde_json::from_str::<SetRequest>(s)
                .unwrap()
                .into_entries()
        };
        assert_eq!(parse(r#"{"key": "k", "value": "v"}"#).unwrap().len(), 1);
        assert_eq!(
            parse(r#"{"entries": [{"key": "a", "value": "1", "ttl_ms": 5}]}"#)
                .unwrap()
                .len(),
            1
        );
        assert!(parse(r#"{"key": "k"}"#).is_err());
        assert!(parse(r#"{"entries": []}"#).is_err());
        assert!(parse(r#"{"key": "k", "value": "v", "entries": []}"#).is_err());
    }
}
