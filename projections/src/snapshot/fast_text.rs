//! A serializer adapter for snapshot bodies: every value is serialized exactly as by the
//! wrapped serializer, except that text written through `collect_str` (timestamps, which
//! `chrono` formats one character at a time) is formatted into a buffer first and written
//! as one string. With `serde_json`, whose `collect_str` escapes each written piece on its
//! own, the output bytes are the same and the state's many timestamps cost a fraction.

use std::fmt::{self, Display, Write as _};

use serde::ser::{
    Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

/// Bytes of text formatted on the stack before falling back to a `String`.
const INLINE_TEXT_BYTES: usize = 64;

/// Serializes `value` with `serializer`, formatting `collect_str` text in one piece.
#[cfg(test)]
pub(super) fn serialize<T: ?Sized + Serialize, S: Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    value.serialize(Fast(serializer))
}

/// Text formatted on the stack, or in a `String` once it outgrows it.
struct Text {
    inline: [u8; INLINE_TEXT_BYTES],
    len: usize,
    spilled: Option<String>,
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(spilled) = self.spilled.as_mut() {
            spilled.push_str(s);
            return Ok(());
        }
        let end = self.len + s.len();
        match self.inline.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(s.as_bytes());
                self.len = end;
            }
            None => {
                let mut spilled = String::with_capacity(end * 2);
                spilled.push_str(self.as_str());
                spilled.push_str(s);
                self.spilled = Some(spilled);
            }
        }
        Ok(())
    }
}

impl Text {
    fn as_str(&self) -> &str {
        if let Some(spilled) = &self.spilled {
            return spilled;
        }
        // Only whole `&str`s were copied in, so the bytes are UTF-8.
        std::str::from_utf8(self.inline.get(..self.len).unwrap_or_default()).unwrap_or("")
    }
}

struct Fast<S>(S);

/// A borrowed value serialized through [`Fast`].
pub(super) struct Wrap<'a, T: ?Sized>(pub(super) &'a T);

impl<T: ?Sized + Serialize> Serialize for Wrap<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Fast(serializer))
    }
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
            self.0.$method($($arg),*)
        })*
    };
}

impl<S: Serializer> Serializer for Fast<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Fast<S::SerializeSeq>;
    type SerializeTuple = Fast<S::SerializeTuple>;
    type SerializeTupleStruct = Fast<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Fast<S::SerializeTupleVariant>;
    type SerializeMap = Fast<S::SerializeMap>;
    type SerializeStruct = Fast<S::SerializeStruct>;
    type SerializeStructVariant = Fast<S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Wrap(value))
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Wrap(value))
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Wrap(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Fast)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Fast)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Fast)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Fast)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Fast)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Fast)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Fast)
    }

    fn collect_str<T: ?Sized + Display>(self, value: &T) -> Result<S::Ok, S::Error> {
        let mut text = Text {
            inline: [0; INLINE_TEXT_BYTES],
            len: 0,
            spilled: None,
        };
        // Writing to `Text` cannot fail; a `Display` that reports an error is passed on.
        if write!(text, "{value}").is_err() {
            return self.0.collect_str(value);
        }
        self.0.serialize_str(text.as_str())
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Forwards a compound serializer whose items are unnamed (elements or tuple fields),
/// wrapping each item.
macro_rules! forward_unnamed {
    ($trait:ident, $method:ident) => {
        impl<S: $trait> $trait for Fast<S> {
            type Ok = S::Ok;
            type Error = S::Error;
            fn $method<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), S::Error> {
                self.0.$method(&Wrap(v))
            }
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    };
}

forward_unnamed!(SerializeSeq, serialize_element);
forward_unnamed!(SerializeTuple, serialize_element);
forward_unnamed!(SerializeTupleStruct, serialize_field);
forward_unnamed!(SerializeTupleVariant, serialize_field);

impl<S: SerializeMap> SerializeMap for Fast<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), S::Error> {
        self.0.serialize_key(&Wrap(key))
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), S::Error> {
        self.0.serialize_value(&Wrap(v))
    }
    fn serialize_entry<K: ?Sized + Serialize, V: ?Sized + Serialize>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), S::Error> {
        self.0.serialize_entry(&Wrap(key), &Wrap(value))
    }
    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

/// Forwards a compound serializer with named fields (structs, struct variants), wrapping
/// each field.
macro_rules! forward_named {
    ($trait:ident) => {
        impl<S: $trait> $trait for Fast<S> {
            type Ok = S::Ok;
            type Error = S::Error;
            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), S::Error> {
                self.0.serialize_field(key, &Wrap(v))
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
                self.0.skip_field(key)
            }
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    };
}

forward_named!(SerializeStruct);
forward_named!(SerializeStructVariant);
