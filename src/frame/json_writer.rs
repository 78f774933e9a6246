//! The serializer behind [`encode`](super::encode): serde_json's compact
//! output, byte for byte, except that strings are searched for what needs
//! escaping many bytes at a time.
//!
//! Why not serde_json's own `Serializer`: it escapes strings one byte at a
//! time (a table lookup per byte, ~1.1 GB/s here), which was the largest
//! single cost of echoing a 16 MiB string, about a quarter of the round
//! trip. Testing 64-byte blocks, then 8-byte words, for the three kinds of
//! byte JSON must escape, and copying the runs between them, cuts that
//! cost by more than half (see [`escaping`]); writing punctuation
//! straight into the line rather than through `io::Write` makes small
//! messages a little cheaper too (figures in `docs/performance.md`).
//!
//! Strings (values, map keys, struct field names), `null` and the
//! punctuation are written here. Numbers, booleans and byte arrays go
//! through serde_json's own code, so they print exactly as before; raw
//! values (and numbers, when some crate turns on serde_json's
//! `arbitrary_precision`) go through [`LineFormatter`] as serde_json sends
//! them. Tests compare the output with serde_json's, for every kind of
//! value (`json_writer/tests.rs`, also run in CI with
//! `arbitrary_precision`) and for arbitrary ones (`tests/frame_props.rs`).
//!
//! Deliberate differences, for `Serialize` impls that break serde's rules,
//! where serde_json writes text that is not JSON (a Node peer would stop
//! on it, PROTOCOL.md 1.2):
//! - an impl that announces a length of 0 and then serializes elements
//!   anyway gets `[],0]` from serde_json; here it gets `[0]`. The length
//!   hint is not used at all;
//! - an impl that ignores an error from one of its fields or elements and
//!   goes on gets half a value from serde_json (`{"bad":{,"ok":1}`); here
//!   the error sticks, and the whole message fails with it;
//! - an impl that catches a panic of one of its elements (which left half
//!   a value) and goes on: here the message fails;
//! - a map given a value without a key, or two keys in a row, or ended
//!   after a key, gets `{:1}` or `{"a","b":1}` or `{"a"}` from serde_json;
//!   here that is an error.
//!
//! Like serde_json, the writer trusts the text of a raw value (it checks
//! only that there is one): a `RawValue` made through serde_json's API is
//! always one valid JSON value. Only an impl that forges serde_json's
//! private raw-value struct name can hand it other text.

use serde::Serialize;
use serde::ser::{self, Impossible};
use serde_json::Error;

use super::writing::{LineFormatter, LineWriter};

mod escaping;

use escaping::write_escaped;
pub(crate) use escaping::{escape, needs_escape};

/// The struct name serde_json's `RawValue` serializes itself under, which
/// its own serializer recognizes to write the text as it is. It is not
/// public API, but it has not changed since raw values appeared (1.0.29);
/// a test fails if it ever does, rather than raw values being written as
/// a one-key object.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// The same for `serde_json::Number` when serde_json's `arbitrary_precision`
/// feature is on (any crate in a build can turn it on): the number's text.
/// The tests run with that feature in CI.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// A compact JSON serializer into a line (see the module docs). It writes
/// to the [`LineWriter`] itself rather than through `io::Write`: most
/// writes are a byte or two of punctuation, and a call through the trait
/// for each (as serde_json makes) cost more than the bytes.
pub(super) struct JsonWriter<'w, 'o> {
    writer: &'w mut LineWriter<'o>,
}

impl<'w, 'o> JsonWriter<'w, 'o> {
    pub(super) fn new(writer: &'w mut LineWriter<'o>) -> Self {
        JsonWriter { writer }
    }

    /// serde_json's serializer over the same line, for the values it
    /// writes (numbers, booleans, byte arrays).
    fn serde_json(&mut self) -> serde_json::Serializer<&mut LineWriter<'o>, LineFormatter> {
        serde_json::Serializer::with_formatter(&mut *self.writer, LineFormatter)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.writer.push(bytes).map_err(Error::io)
    }

    fn string(&mut self, text: &str) -> Result<(), Error> {
        write_escaped(self.writer, text).map_err(Error::io)
    }

    /// Opens `{"variant":`, as serde_json writes an enum variant with data.
    fn open_variant(&mut self, variant: &str) -> Result<(), Error> {
        self.raw(b"{")?;
        self.string(variant)?;
        self.raw(b":")
    }
}

/// Delegates a scalar to serde_json's serializer.
macro_rules! to_serde_json {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, value: $ty) -> Result<(), Error> {
            ser::Serializer::$method(&mut self.serde_json(), value)
        })*
    };
}

impl<'a, 'w, 'o> ser::Serializer for &'a mut JsonWriter<'w, 'o> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a, 'w, 'o>;
    type SerializeTuple = Compound<'a, 'w, 'o>;
    type SerializeTupleStruct = Compound<'a, 'w, 'o>;
    type SerializeTupleVariant = Compound<'a, 'w, 'o>;
    type SerializeMap = Compound<'a, 'w, 'o>;
    type SerializeStruct = Compound<'a, 'w, 'o>;
    type SerializeStructVariant = Compound<'a, 'w, 'o>;

    to_serde_json! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_bytes(&[u8]),
    }

    fn serialize_char(self, value: char) -> Result<(), Error> {
        self.string(value.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, value: &str) -> Result<(), Error> {
        self.string(value)
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.raw(b"null")
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.raw(b"null")
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.raw(b"null")
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.string(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.open_variant(variant)?;
        value.serialize(&mut *self)?;
        self.raw(b"}")
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, 'w, 'o>, Error> {
        Compound::open(self, b"[", b"]")
    }

    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a, 'w, 'o>, Error> {
        Compound::open(self, b"[", b"]")
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Compound<'a, 'w, 'o>, Error> {
        Compound::open(self, b"[", b"]")
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'w, 'o>, Error> {
        self.open_variant(variant)?;
        Compound::open(self, b"[", b"]}")
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a, 'w, 'o>, Error> {
        Compound::open(self, b"{", b"}")
    }

    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Compound<'a, 'w, 'o>, Error> {
        if name == RAW_VALUE_TOKEN || name == NUMBER_TOKEN {
            return Ok(Compound {
                ser: self,
                first: true,
                key_pending: false,
                close: b"",
                raw_text_of: Some(name),
            });
        }
        Compound::open(self, b"{", b"}")
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'w, 'o>, Error> {
        self.open_variant(variant)?;
        Compound::open(self, b"{", b"}}")
    }
}

/// An array, an object, or a raw value being written.
pub(super) struct Compound<'a, 'w, 'o> {
    ser: &'a mut JsonWriter<'w, 'o>,
    /// No element written yet: no comma before the next one.
    first: bool,
    /// A map's key was written and its value has not been: the next call
    /// must be `serialize_value`.
    key_pending: bool,
    /// What `end` writes.
    close: &'static [u8],
    /// A serde_json `RawValue` (or `Number`), by its struct name: its one
    /// field, of that same name, is the JSON text to write as it is.
    raw_text_of: Option<&'static str>,
}

impl<'a, 'w, 'o> Compound<'a, 'w, 'o> {
    fn open(ser: &'a mut JsonWriter<'w, 'o>, open: &[u8], close: &'static [u8]) -> Result<Self, Error> {
        ser.raw(open)?;
        Ok(Compound {
            ser,
            first: true,
            key_pending: false,
            close,
            raw_text_of: None,
        })
    }

    /// The comma before every element but the first.
    fn separate(&mut self) -> Result<(), Error> {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.ser.raw(b",")
        }
    }

    /// `result`, noting an error in the line: these methods take `&mut
    /// self`, so an impl may ignore their error and go on with the next
    /// element, over the half value the failed one left. The noted error
    /// fails the whole message (see the module docs).
    ///
    /// Each of them calls [`enter`](Self::enter) first and this last: a
    /// call that never got here (a panic in the value, caught by an impl
    /// above it that then went on) leaves the count up, which fails the
    /// message too.
    #[inline]
    fn noted(&mut self, result: Result<(), Error>) -> Result<(), Error> {
        self.ser.writer.unfinished_calls -= 1;
        if let Err(error) = &result {
            self.note(error);
        }
        result
    }

    #[inline]
    fn enter(&mut self) {
        self.ser.writer.unfinished_calls += 1;
    }

    #[cold]
    #[inline(never)]
    fn note(&mut self, error: &Error) {
        self.ser.writer.failed.get_or_insert_with(|| error.to_string());
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.enter();
        let result = self.separate().and_then(|()| value.serialize(&mut *self.ser));
        self.noted(result)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        self.enter();
        let result = self.field_unnoted(key, value);
        self.noted(result)
    }

    fn field_unnoted<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        if let Some(token) = self.raw_text_of {
            // One field, of the struct's own name, as serde_json's types
            // write it; anything else is refused with serde_json's message.
            if key != token || !self.first {
                return Err(ser::Error::custom("expected value"));
            }
            self.first = false;
            return value.serialize(RawText(&mut *self.ser.writer));
        }
        self.separate()?;
        self.ser.string(key)?;
        self.ser.raw(b":")?;
        value.serialize(&mut *self.ser)
    }

    #[inline]
    fn close(mut self) -> Result<(), Error> {
        self.enter();
        if self.key_pending || (self.raw_text_of.is_some() && self.first) {
            return self.refuse_close();
        }
        let result = self.ser.raw(self.close);
        self.noted(result)
    }

    #[cold]
    #[inline(never)]
    fn refuse_close(&mut self) -> Result<(), Error> {
        let error = if self.key_pending {
            ser::Error::custom("a map ended after a key, without its value")
        } else {
            // serde_json would write nothing here: an empty line, or a key
            // with no value, which a Node peer cannot parse.
            ser::Error::custom("expected value")
        };
        self.noted(Err(error))
    }
}

/// The compound traits that take elements, and those that take named
/// fields: one body each, whatever the trait.
macro_rules! compound {
    ($($trait:ident::$method:ident),*) => {
        $(impl ser::$trait for Compound<'_, '_, '_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }
            fn end(self) -> Result<(), Error> {
                self.close()
            }
        })*
    };
    ($($trait:ident),* with names) => {
        $(impl ser::$trait for Compound<'_, '_, '_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
                self.field(key, value)
            }
            fn end(self) -> Result<(), Error> {
                self.close()
            }
        })*
    };
}

compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);
compound!(SerializeStruct, SerializeStructVariant with names);

impl ser::SerializeMap for Compound<'_, '_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.enter();
        let result = if self.key_pending {
            Err(ser::Error::custom(
                "a map key after a key, without a value between",
            ))
        } else {
            self.key_pending = true;
            self.separate()
                .and_then(|()| key.serialize(MapKey(&mut *self.ser)))
        };
        self.noted(result)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.enter();
        let result = if !self.key_pending {
            Err(ser::Error::custom("a map value without a key before it"))
        } else {
            self.key_pending = false;
            self.ser.raw(b":").and_then(|()| value.serialize(&mut *self.ser))
        };
        self.noted(result)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

fn key_must_be_a_string() -> Error {
    ser::Error::custom("key must be a string")
}

/// Refuses every kind of value but the ones listed, with `$error`.
macro_rules! refuse {
    ($error:expr; $($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), Error> {
            Err($error)
        })*
    };
}

/// Refuses every compound kind of value, with `$error`.
macro_rules! refuse_compounds {
    ($error:expr) => {
        type SerializeSeq = Impossible<(), Error>;
        type SerializeTuple = Impossible<(), Error>;
        type SerializeTupleStruct = Impossible<(), Error>;
        type SerializeTupleVariant = Impossible<(), Error>;
        type SerializeMap = Impossible<(), Error>;
        type SerializeStruct = Impossible<(), Error>;
        type SerializeStructVariant = Impossible<(), Error>;

        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Error> {
            Err($error)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
            Err($error)
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
            Err($error)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Error> {
            Err($error)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Error> {
            Err($error)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
            Err($error)
        }
        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
            Err($error)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Error> {
            Err($error)
        }
    };
}

/// An object key, as serde_json writes one: strings (and chars, unit
/// variants) as strings; booleans and numbers quoted; anything else is
/// refused.
struct MapKey<'a, 'w, 'o>(&'a mut JsonWriter<'w, 'o>);

impl<'o> MapKey<'_, '_, 'o> {
    /// A quoted scalar, printed by serde_json.
    fn quoted(
        self,
        write: impl FnOnce(&mut serde_json::Serializer<&mut LineWriter<'o>, LineFormatter>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.0.raw(b"\"")?;
        write(&mut self.0.serde_json())?;
        self.0.raw(b"\"")
    }
}

/// Writes a key that serde_json writes as a quoted scalar.
macro_rules! quoted_key {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, value: $ty) -> Result<(), Error> {
            self.quoted(|json| ser::Serializer::$method(json, value))
        })*
    };
}

impl ser::Serializer for MapKey<'_, '_, '_> {
    type Ok = ();
    type Error = Error;

    refuse_compounds!(key_must_be_a_string());
    refuse!(key_must_be_a_string(); serialize_bytes(&[u8]), serialize_unit(), serialize_unit_struct(&'static str), serialize_none());

    quoted_key! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128),
    }

    fn serialize_f32(self, value: f32) -> Result<(), Error> {
        if !value.is_finite() {
            return Err(float_key_must_be_finite());
        }
        self.quoted(|json| ser::Serializer::serialize_f32(json, value))
    }

    fn serialize_f64(self, value: f64) -> Result<(), Error> {
        if !value.is_finite() {
            return Err(float_key_must_be_finite());
        }
        self.quoted(|json| ser::Serializer::serialize_f64(json, value))
    }

    fn serialize_char(self, value: char) -> Result<(), Error> {
        self.0.string(value.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, value: &str) -> Result<(), Error> {
        self.0.string(value)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.0.string(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
}

fn float_key_must_be_finite() -> Error {
    ser::Error::custom("float key must be finite (got NaN or +/-inf)")
}

fn expected_raw_value() -> Error {
    ser::Error::custom("expected RawValue")
}

/// The one field of a raw value: its JSON text, written as it is (through
/// [`LineFormatter`], which keeps newlines out of the line).
struct RawText<'a, 'o>(&'a mut LineWriter<'o>);

impl ser::Serializer for RawText<'_, '_> {
    type Ok = ();
    type Error = Error;

    refuse_compounds!(expected_raw_value());
    refuse!(expected_raw_value();
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_bytes(&[u8]), serialize_unit(),
        serialize_unit_struct(&'static str), serialize_none(),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_str(self, text: &str) -> Result<(), Error> {
        use serde_json::ser::Formatter;
        LineFormatter.write_raw_fragment(self.0, text).map_err(Error::io)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(expected_raw_value())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Error> {
        Err(expected_raw_value())
    }
}

#[cfg(test)]
mod tests;
