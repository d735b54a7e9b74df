//! Refusing JSON objects that give a key twice. serde_json keeps the last
//! value of a repeated key, so `{"type": "CREATE_NODE", "type":
//! "DELETE_NODE"}` reads as a delete here, while a proxy, a log reader or
//! any parser that keeps the first value reads a create: one text, two
//! meanings. [`check`] reads text that already parsed as JSON once more,
//! without building anything, and names the first key given twice by its
//! dotted path (`payload.operations.1.payload.id`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Rejection, reject};

/// Refuses `text` (valid JSON) when an object in it gives a key twice:
/// `DUPLICATE_KEY`, the field being the key's dotted path.
pub fn check(text: &[u8]) -> Result<(), Rejection> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(text);
    // An error is a repeated key (then `found` says which) or text that is
    // not JSON, which callers have refused before asking.
    let _ = Scan { found: &mut found }.deserialize(&mut de);
    match found {
        None => Ok(()),
        Some(Found { mut path }) => {
            // Segments were pushed on the way out, innermost first.
            path.reverse();
            let path = path.join(".");
            let message =
                format!("the key `{path}` is given twice; a key may appear once per object");
            Err(reject("DUPLICATE_KEY", path, message))
        }
    }
}

/// The repeated key, and the keys and indexes that lead to it, innermost first.
struct Found {
    path: Vec<String>,
}

/// Walks one JSON value, checking every object in it.
struct Scan<'a> {
    found: &'a mut Option<Found>,
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let found = self.found;
        let mut index = 0usize;
        loop {
            match seq.next_element_seed(Scan { found: &mut *found }) {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if let Some(f) = found.as_mut() {
                        f.path.push(index.to_string());
                    }
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let found = self.found;
        let mut keys = Keys::Few(Vec::new());
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if !keys.insert(key.clone()) {
                *found = Some(Found {
                    path: vec![key.into_owned()],
                });
                return Err(de::Error::custom("a key is given twice"));
            }
            if let Err(e) = map.next_value_seed(Scan { found: &mut *found }) {
                if let Some(f) = found.as_mut() {
                    f.path.push(key.into_owned());
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// The keys of one object so far: a list while short (most objects have a
/// handful of keys), a hash set beyond that, so that a `data` object with
/// thousands of keys costs one look-up per key, not a scan of all before it.
enum Keys<'de> {
    Few(Vec<Cow<'de, str>>),
    Many(HashSet<Cow<'de, str>>),
}

/// Keys up to which a list is searched instead of hashed.
const FEW_KEYS: usize = 16;

impl<'de> Keys<'de> {
    /// Adds `key`; false when it was there already.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        match self {
            Keys::Few(list) if list.contains(&key) => false,
            Keys::Few(list) if list.len() < FEW_KEYS => {
                list.push(key);
                true
            }
            Keys::Few(list) => {
                let mut set: HashSet<_> = list.drain(..).collect();
                set.insert(key);
                *self = Keys::Many(set);
                true
            }
            Keys::Many(set) => set.insert(key),
        }
    }
}

/// Reads a key, borrowed from the text unless it has escapes (then `"a"`
/// and `"\u0061"` are the same key, as they are to every parser).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &str) -> Option<String> {
        assert!(
            serde_json::from_str::<serde_json::Value>(text).is_ok(),
            "the cases are valid JSON: {text}"
        );
        check(text.as_bytes()).err().map(|r| {
            assert_eq!(r.code, "DUPLICATE_KEY");
            assert!(
                r.message.contains(&format!("`{}`", r.field)),
                "{}",
                r.message
            );
            r.field
        })
    }

    #[test]
    fn a_key_given_twice_is_named_by_its_path() {
        assert_eq!(field(r#"{"type":"A","type":"B"}"#).as_deref(), Some("type"));
        assert_eq!(
            field(r#"{"a":1,"payload":{"id":"x","id":"y"}}"#).as_deref(),
            Some("payload.id")
        );
        assert_eq!(
            field(r#"{"payload":{"operations":[{"k":1},{"p":{"id":1,"id":2}}]}}"#).as_deref(),
            Some("payload.operations.1.p.id")
        );
        assert_eq!(field(r#"[0,[{"a":1,"a":1}]]"#).as_deref(), Some("1.0.a"));
        // An escape spells the same key.
        assert_eq!(field(r#"{"a":1,"\u0061":2}"#).as_deref(), Some("a"));
        // The first repeat found is named.
        assert_eq!(
            field(r#"{"x":{"b":1,"b":2},"x":3}"#).as_deref(),
            Some("x.b")
        );
    }

    #[test]
    fn keys_that_repeat_only_across_objects_are_fine() {
        for text in [
            r#"{}"#,
            r#"[]"#,
            r#""just a string""#,
            r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#,
            r#"{"a":1,"A":2,"a ":3,"":4}"#,
            r#"{"n":-1.5e300,"t":true,"f":false,"z":null,"u":18446744073709551615}"#,
        ] {
            assert_eq!(field(text), None, "{text}");
        }
    }

    #[test]
    fn large_objects_are_checked_past_the_list() {
        let keys: Vec<String> = (0..5_000).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let unique = format!("{{{}}}", keys.join(","));
        assert_eq!(field(&unique), None);
        let repeated = format!("{{{},\"k4321\":0}}", keys.join(","));
        assert_eq!(field(&repeated).as_deref(), Some("k4321"));
        let early = format!("{{\"k3\":0,{}}}", keys.join(","));
        assert_eq!(field(&early).as_deref(), Some("k3"));
    }
}
