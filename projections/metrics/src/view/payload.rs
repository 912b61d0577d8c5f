//! Payloads as a view keeps them: each kept event's payload (cut to the fields the metrics
//! read) as compact binary JSON in one byte arena, field names interned.
//!
//! A `serde_json::Value` object costs a map allocation, a `String` per key and per text
//! value (several hundred bytes for a handful of fields); the same payload here is a few
//! dozen bytes. [`Node`] reads a value in place: an object's field, an array's items, a
//! scalar as the expression language sees it. What compares or prints whole objects and
//! arrays (rare) converts them to a `serde_json::Value` with [`Node::to_value`], which gives
//! back exactly the value serde_json would have parsed (same numbers, same key order), so
//! equality and text are serde_json's own.
//!
//! Encoding of one value: a tag byte, then
//! - `null`, `false`, `true`: nothing;
//! - a non-negative integer: LEB128; a negative one: 8 bytes (little-endian `i64`);
//!   a float: 8 bytes (little-endian `f64`);
//! - a string: its length (LEB128) and UTF-8 bytes;
//! - an array or object: the length of its body (LEB128, at most `u32::MAX`; one byte for
//!   the body of a payload cut to a few fields), then the body: the items, or for an object
//!   each member's key id (LEB128) and value. Duplicate keys are kept in order; a lookup
//!   finds the last, as serde_json's map insert does.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::hashing::FnvBuild;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const UINT: u8 = 3;
const NEG: u8 = 4;
const FLOAT: u8 = 5;
const STR: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// The encoding of `null`: the payload of an event that could not be decoded.
pub(crate) static NULL_NODE: [u8; 1] = [NULL];

/// Field names, interned: a payload stores a key's id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keys {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32, FnvBuild>,
}

impl Keys {
    fn intern(&mut self, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let id = u32::try_from(self.names.len()).ok()?;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        Some(id)
    }

    fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    fn name(&self, id: u64) -> &str {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.names.get(i))
            .map_or("", |n| n)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let low = u8::try_from(v & 0x7f).unwrap_or(0);
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Reads a LEB128 number at `*at`, moving `*at` past it.
#[inline]
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    // Key ids and most lengths and numbers take one byte.
    let first = *bytes.get(*at)?;
    if first & 0x80 == 0 {
        *at += 1;
        return Some(u64::from(first));
    }
    varint_long(bytes, at)
}

/// [`varint`] of more than one byte.
fn varint_long(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

fn fixed8(bytes: &[u8], at: usize) -> Option<[u8; 8]> {
    bytes.get(at..at.checked_add(8)?)?.try_into().ok()
}

/// Writes a container: tag, the body by `body`, then its length put before it (the body
/// moves by the length's size, one byte for most: a payload is cut to a few fields, and a
/// fixed 4-byte length was 3 bytes an object more, millions of times over a long log).
/// `None` (and nothing written) when the body is longer than `u32::MAX` bytes.
fn container<E>(
    out: &mut Vec<u8>,
    tag: u8,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    too_long: impl FnOnce() -> E,
) -> Result<(), E> {
    let start = out.len();
    out.push(tag);
    let body_start = out.len();
    body(out)?;
    let Ok(len) = u32::try_from(out.len() - body_start) else {
        out.truncate(start);
        return Err(too_long());
    };
    let mut prefix = Vec::with_capacity(5);
    put_varint(&mut prefix, u64::from(len));
    out.splice(body_start..body_start, prefix);
    Ok(())
}

/// A container or the field names past what the encoding holds.
struct TooLong;

/// Appends `v` to `out`, interning its keys; `None` when it is too large to encode.
pub(crate) fn encode_value(v: &Value, keys: &mut Keys, out: &mut Vec<u8>) -> Option<()> {
    match v {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(UINT);
                put_varint(out, u);
            } else if let Some(i) = n.as_i64() {
                out.push(NEG);
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                out.push(FLOAT);
                out.extend_from_slice(&n.as_f64()?.to_le_bytes());
            }
        }
        Value::String(s) => put_str(out, s),
        Value::Array(items) => container(
            out,
            ARRAY,
            |out| {
                items
                    .iter()
                    .try_for_each(|i| encode_value(i, keys, out).ok_or(TooLong))
            },
            || TooLong,
        )
        .ok()?,
        Value::Object(map) => container(
            out,
            OBJECT,
            |out| {
                for (k, v) in map {
                    put_varint(out, u64::from(keys.intern(k).ok_or(TooLong)?));
                    encode_value(v, keys, out).ok_or(TooLong)?;
                }
                Ok(())
            },
            || TooLong,
        )
        .ok()?,
    }
    Some(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.push(STR);
    put_varint(out, u64::try_from(s.len()).unwrap_or(u64::MAX));
    out.extend_from_slice(s.as_bytes());
}

/// Decodes one JSON value straight into the encoding (no `Value` in between). At the top
/// level of an object, `keep` (when given) says which members to keep; the others are
/// skipped unread. Non-finite floats become `null`, as in a `Value`.
pub(crate) struct Encode<'k, 'o> {
    pub keys: &'k mut Keys,
    pub out: &'o mut Vec<u8>,
    pub keep: Option<&'k dyn Fn(&str) -> bool>,
}

/// A map key, borrowed from the input when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> DeserializeSeed<'de> for Encode<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.keep.is_some() {
            d.deserialize_map(self)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Encode<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.out.push(if b { TRUE } else { FALSE });
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<(), E> {
        match u64::try_from(i) {
            Ok(u) => self.visit_u64(u),
            Err(_) => {
                self.out.push(NEG);
                self.out.extend_from_slice(&i.to_le_bytes());
                Ok(())
            }
        }
    }

    fn visit_u64<E>(self, u: u64) -> Result<(), E> {
        self.out.push(UINT);
        put_varint(self.out, u);
        Ok(())
    }

    fn visit_f64<E>(self, f: f64) -> Result<(), E> {
        if f.is_finite() {
            self.out.push(FLOAT);
            self.out.extend_from_slice(&f.to_le_bytes());
        } else {
            self.out.push(NULL);
        }
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        put_str(self.out, s);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.push(NULL);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.out.push(NULL);
        Ok(())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Encode { keys, out, .. } = self;
        container(
            out,
            ARRAY,
            |out| {
                while seq
                    .next_element_seed(Encode {
                        keys: &mut *keys,
                        out: &mut *out,
                        keep: None,
                    })?
                    .is_some()
                {}
                Ok(())
            },
            || serde::de::Error::custom("an array too long to keep"),
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Encode { keys, out, keep } = self;
        container(
            out,
            OBJECT,
            |out| {
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if keep.is_some_and(|k| !k(&key)) {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let id = keys
                        .intern(&key)
                        .ok_or_else(|| serde::de::Error::custom("too many field names"))?;
                    put_varint(out, u64::from(id));
                    map.next_value_seed(Encode {
                        keys: &mut *keys,
                        out: &mut *out,
                        keep: None,
                    })?;
                }
                Ok(())
            },
            || serde::de::Error::custom("an object too long to keep"),
        )
    }
}

/// One encoded value, read in place.
#[derive(Clone, Copy)]
pub(crate) struct Node<'a> {
    /// Starts at the value's tag; may run past its end.
    bytes: &'a [u8],
    keys: &'a Keys,
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

impl PartialEq for Node<'_> {
    /// serde_json's equality of the two values.
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

/// A scalar or container as [`Node::kind`] reads it.
pub(crate) enum Kind<'a> {
    Null,
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Neg(i64),
    Float(f64),
    Str(&'a str),
    Array,
    Object,
}

impl<'a> Node<'a> {
    pub(crate) fn new(bytes: &'a [u8], keys: &'a Keys) -> Node<'a> {
        Node { bytes, keys }
    }

    fn tag(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(NULL)
    }

    /// Length of the encoded value.
    fn len(&self) -> Option<usize> {
        len_at(self.bytes, 0)
    }

    /// The value's kind, with scalars read.
    pub(crate) fn kind(&self) -> Kind<'a> {
        let mut at = 1usize;
        match self.tag() {
            FALSE => Kind::Bool(false),
            TRUE => Kind::Bool(true),
            UINT => varint(self.bytes, &mut at).map_or(Kind::Null, Kind::UInt),
            NEG => fixed8(self.bytes, 1).map_or(Kind::Null, |b| Kind::Neg(i64::from_le_bytes(b))),
            FLOAT => {
                fixed8(self.bytes, 1).map_or(Kind::Null, |b| Kind::Float(f64::from_le_bytes(b)))
            }
            STR => self.text().map_or(Kind::Null, Kind::Str),
            ARRAY => Kind::Array,
            OBJECT => Kind::Object,
            _ => Kind::Null,
        }
    }

    fn text(&self) -> Option<&'a str> {
        let mut at = 1usize;
        let n = usize::try_from(varint(self.bytes, &mut at)?).ok()?;
        std::str::from_utf8(self.bytes.get(at..at.checked_add(n)?)?).ok()
    }

    pub(crate) fn is_null(&self) -> bool {
        self.tag() == NULL
    }

    pub(crate) fn is_true(&self) -> bool {
        self.tag() == TRUE
    }

    /// The text of a string value.
    pub(crate) fn as_str(&self) -> Option<&'a str> {
        match self.kind() {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The members of an object or items of an array: `(key id, value)`, the key id
    /// `None` for items.
    fn members(&self) -> Members<'a> {
        let tag = self.tag();
        // The body starts after the tag and its length.
        let mut at = 1;
        let end = if matches!(tag, ARRAY | OBJECT) && varint(self.bytes, &mut at).is_some() {
            self.len().unwrap_or(0)
        } else {
            0
        };
        Members {
            node: *self,
            object: tag == OBJECT,
            at,
            end,
        }
    }

    /// Field `name` of an object (the last one when repeated).
    pub(crate) fn get(&self, name: &str) -> Option<Node<'a>> {
        if self.tag() != OBJECT {
            return None;
        }
        let id = u64::from(self.keys.id(name)?);
        // The members as [`Members`] reads them, without making a node of each: a key, then
        // the value skipped by its length. A member that cannot be read ends the scan.
        let end = self.len().unwrap_or(0);
        let bytes = self.bytes;
        // The body starts after the tag and its length.
        let mut at = 1usize;
        varint(bytes, &mut at)?;
        let mut found = None;
        while at < end {
            let Some(key) = varint(bytes, &mut at) else {
                break;
            };
            let Some(next) = len_at(bytes, at).and_then(|n| at.checked_add(n)) else {
                break;
            };
            if key == id {
                found = Some(at);
            }
            at = next;
        }
        Some(Node {
            bytes: bytes.get(found?..)?,
            keys: self.keys,
        })
    }

    /// The items of an array (none for any other value).
    pub(crate) fn items(&self) -> impl Iterator<Item = Node<'a>> {
        let array = self.tag() == ARRAY;
        self.members().filter(move |_| array).map(|(_, v)| v)
    }

    /// Number of items of an array.
    pub(crate) fn array_len(&self) -> Option<usize> {
        (self.tag() == ARRAY).then(|| self.members().count())
    }

    pub(crate) fn is_array(&self) -> bool {
        self.tag() == ARRAY
    }

    /// The value as serde_json parses it.
    pub(crate) fn to_value(self) -> Value {
        match self.kind() {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(b),
            Kind::UInt(u) => Value::Number(u.into()),
            Kind::Neg(i) => Value::Number(i.into()),
            Kind::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.to_owned()),
            Kind::Array => Value::Array(self.items().map(|i| i.to_value()).collect()),
            Kind::Object => {
                let mut map = serde_json::Map::new();
                for (k, v) in self.members() {
                    let name = k.map_or("", |k| self.keys.name(k));
                    map.insert(name.to_owned(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }
}

/// Length of the encoded value starting at `bytes[start]`.
#[inline]
fn len_at(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start.checked_add(1)?;
    match bytes.get(start).copied().unwrap_or(NULL) {
        UINT => {
            varint(bytes, &mut at)?;
            Some(at - start)
        }
        NEG | FLOAT => Some(9),
        STR => {
            let n = usize::try_from(varint(bytes, &mut at)?).ok()?;
            (at - start).checked_add(n)
        }
        ARRAY | OBJECT => {
            let body = usize::try_from(varint(bytes, &mut at)?).ok()?;
            (at - start).checked_add(body)
        }
        _ => Some(1),
    }
}

/// Iterator over a container's members.
struct Members<'a> {
    node: Node<'a>,
    object: bool,
    at: usize,
    /// Where the container's body ends.
    end: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (Option<u64>, Node<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end {
            return None;
        }
        let bytes = self.node.bytes;
        let key = if self.object {
            Some(varint(bytes, &mut self.at)?)
        } else {
            None
        };
        let value = Node {
            bytes: bytes.get(self.at..)?,
            keys: self.node.keys,
        };
        self.at = self.at.checked_add(value.len()?)?;
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_text(text: &str, keep: Option<&dyn Fn(&str) -> bool>) -> (Vec<u8>, Keys) {
        let mut keys = Keys::default();
        let mut out = Vec::new();
        let mut de = serde_json::Deserializer::from_str(text);
        Encode {
            keys: &mut keys,
            out: &mut out,
            keep,
        }
        .deserialize(&mut de)
        .unwrap();
        (out, keys)
    }

    /// Every kind of value comes back as serde_json parses it, text and equality included.
    #[test]
    fn round_trips_as_serde_json_parses() {
        let text = r#"{"a":1,"b":-7,"c":1.5,"d":"x\"y","e":null,"f":[true,false,{"g":[]}],"h":{"minor_units":12345678901,"currency":"USD"},"i":18446744073709551615,"j":-9223372036854775808,"k":1e300,"l":""}"#;
        let (bytes, keys) = encode_text(text, None);
        let node = Node::new(&bytes, &keys);
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(node.to_value(), value);
        assert_eq!(node.to_value().to_string(), value.to_string());
        assert_eq!(node.get("d").and_then(|n| n.as_str()), Some("x\"y"));
        assert!(node.get("e").unwrap().is_null());
        assert_eq!(node.get("f").unwrap().array_len(), Some(3));
        assert!(node.get("zz").is_none());
        let from_value = {
            let mut keys = Keys::default();
            let mut out = Vec::new();
            encode_value(&value, &mut keys, &mut out).unwrap();
            Node::new(&out, &keys).to_value()
        };
        assert_eq!(from_value, value);
    }

    /// At the top level only the kept members are stored; a repeated key reads as its last.
    #[test]
    fn keeps_only_named_members_and_the_last_repeat() {
        let keep = |k: &str| k != "skip";
        let (bytes, keys) = encode_text(
            r#"{"a":1,"skip":{"deep":[1,2,3]},"a":2,"b":"t"}"#,
            Some(&keep),
        );
        let node = Node::new(&bytes, &keys);
        assert!(node.get("skip").is_none());
        assert!(matches!(node.get("a").unwrap().kind(), Kind::UInt(2)));
        let value: Value = serde_json::from_str(r#"{"a":1,"a":2,"b":"t"}"#).unwrap();
        assert_eq!(node.to_value(), value);
    }

    /// Keys past 127 names (two-byte ids), long texts and nested objects are skipped
    /// correctly; a repeated key reads as its last; an unknown name and a non-object give
    /// nothing.
    #[test]
    fn get_skips_every_kind_of_member() {
        let mut text = String::from("{");
        for i in 0..200 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        let long = "x".repeat(300);
        text.push_str(&format!(
            "\"k150\":\"{long}\",\"nested\":{{\"k3\":[1,2,{{\"k4\":5}}]}},\"neg\":-5,\"f\":2.5,\"k150\":-1,\"last\":true}}"
        ));
        let (bytes, keys) = encode_text(&text, None);
        let node = Node::new(&bytes, &keys);
        assert!(matches!(node.get("k0").unwrap().kind(), Kind::UInt(0)));
        assert!(matches!(node.get("k199").unwrap().kind(), Kind::UInt(199)));
        assert!(matches!(node.get("k150").unwrap().kind(), Kind::Neg(-1)));
        assert!(node.get("last").unwrap().is_true());
        assert!(matches!(node.get("f").unwrap().kind(), Kind::Float(f) if f == 2.5));
        let nested = node.get("nested").unwrap();
        assert_eq!(nested.get("k3").unwrap().array_len(), Some(3));
        // `k4` is a known name, but not a member of `nested`.
        assert!(nested.get("k4").is_none());
        assert!(node.get("k3").is_some());
        assert!(node.get("k4").is_some());
        assert!(node.get("absent").is_none());
        assert!(node.get("k1").unwrap().get("k1").is_none());
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(node.to_value(), value);
    }

    #[test]
    fn null_node_is_null() {
        let keys = Keys::default();
        let n = Node::new(&NULL_NODE, &keys);
        assert!(n.is_null());
        assert!(n.get("x").is_none());
        assert_eq!(n.to_value(), Value::Null);
    }
}
