//! Everything here is compared with what serde_json writes for the same
//! value: the writer must be serde_json's compact output, byte for byte.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::json;
use serde_json::value::RawValue;

use crate::frame::{FrameError, encode};

fn ours(value: &(impl Serialize + ?Sized)) -> Result<String, String> {
    let mut out = Vec::new();
    encode(value, usize::MAX, &mut out).map_err(|e| match e {
        FrameError::Encode { reason } => reason,
        other => other.to_string(),
    })?;
    assert_eq!(out.pop(), Some(b'\n'));
    Ok(String::from_utf8(out).expect("UTF-8"))
}

fn theirs(value: &(impl Serialize + ?Sized)) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

#[track_caller]
fn same(value: &(impl Serialize + ?Sized)) {
    assert_eq!(ours(value), theirs(value));
}

#[test]
fn escapes_runs_of_escapes_and_returns_to_words_like_serde_json() {
    // Escapes every `gap` bytes, over lengths that fill the dense path's
    // buffer several times and leave it for the word-at-a-time search
    // (after 16 clean bytes) and come back.
    for gap in 1..40 {
        for (special, len) in [('"', 700), ('\u{1}', 700), ('\n', 90)] {
            let text: String = (0..len)
                .map(|i| if i % gap == 0 { special } else { 'a' })
                .collect();
            same(&text);
        }
    }
    same(&"\u{1f}".repeat(1000));
    same(&format!("{}\n{}", "x".repeat(1000), "y".repeat(17)));
}

#[test]
fn escapes_every_byte_like_serde_json_wherever_it_falls_in_a_word_or_block() {
    let specials: Vec<char> = (0u8..0x20)
        .map(char::from)
        .chain(['"', '\\', '/', '\u{7f}', '\u{2028}', 'é', '😀'])
        .collect();
    // Short texts, and texts around the 64-byte blocks of the first search.
    let lens: Vec<usize> = (0..20).chain([63, 64, 65, 127, 128, 129, 200]).collect();
    for special in specials {
        for &len in &lens {
            for at in 0..=len {
                let mut text: String = "a".repeat(len);
                text.insert(at, special);
                same(&text);
            }
        }
    }
    same("");
    same(&"\"\\\n".repeat(100));
}

#[test]
fn writes_every_kind_of_value_like_serde_json() {
    #[derive(Serialize)]
    struct Unit;
    #[derive(Serialize)]
    struct Newtype(String);
    #[derive(Serialize)]
    struct Tuple(u8, &'static str);
    #[derive(Serialize)]
    enum Kind {
        Unit,
        Newtype(String),
        Tuple(u8, String),
        Struct { a: i32, b: Option<String> },
    }
    #[derive(Serialize)]
    struct Everything {
        i: (i8, i16, i32, i64, i128),
        u: (u8, u16, u32, u64, u128),
        f: (f32, f64, f64, f64),
        c: (char, char, char),
        b: bool,
        none: Option<u8>,
        some: Option<&'static str>,
        unit: (),
        unit_struct: Unit,
        newtype: Newtype,
        tuple: Tuple,
        kinds: Vec<Kind>,
        empty: (Vec<u8>, BTreeMap<String, u8>, [u8; 0]),
        #[serde(rename = "we\"ird\nkey")]
        weird: u8,
    }
    same(&Everything {
        i: (i8::MIN, -300, i32::MIN, i64::MIN, i128::MIN),
        u: (u8::MAX, 300, u32::MAX, u64::MAX, u128::MAX),
        f: (1.5, 0.1, f64::NAN, f64::NEG_INFINITY),
        c: ('"', '\n', '😀'),
        b: true,
        none: None,
        some: Some("s\tt"),
        unit: (),
        unit_struct: Unit,
        newtype: Newtype("n\"t".into()),
        tuple: Tuple(7, "t\\"),
        kinds: vec![
            Kind::Unit,
            Kind::Newtype("x\u{1}".into()),
            Kind::Tuple(1, "y".into()),
            Kind::Struct { a: -1, b: None },
        ],
        empty: (vec![], BTreeMap::new(), []),
        weird: 1,
    });
    same(&json!({"nested": {"list": [1, 2.5, null, true, "é \u{2028} \u{1}"]}}));
    same(&Kind::Struct {
        a: 1,
        b: Some("z".into()),
    });
}

/// A map with keys of any type, to reach serde_json's key rules.
struct Keys<K>(Vec<K>);

impl<K: Serialize> Serialize for Keys<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for key in &self.0 {
            map.serialize_entry(key, &0)?;
        }
        map.end()
    }
}

#[test]
fn writes_and_refuses_map_keys_like_serde_json() {
    #[derive(Serialize)]
    enum Variant {
        Unit,
        Newtype(u8),
    }
    #[derive(Serialize)]
    struct Wrapped(&'static str);
    same(&Keys(vec!["a", "b\"c", ""]));
    same(&Keys(vec![true, false]));
    same(&Keys(vec![i64::MIN, 0, 7]));
    same(&Keys(vec![u128::MAX]));
    same(&Keys(vec![-1.5f64, 1e300]));
    same(&Keys(vec![2.5f32]));
    same(&Keys(vec!['\n', 'x']));
    same(&Keys(vec![Variant::Unit]));
    same(&Keys(vec![Wrapped("w")]));
    same(&Keys(vec![Some("s")]));
    // Refused, with serde_json's message.
    for refused in [
        ours(&Keys(vec![f64::NAN])),
        ours(&Keys(vec![f32::INFINITY])),
        ours(&Keys(vec![()])),
        ours(&Keys(vec![None::<u8>])),
        ours(&Keys(vec![vec![1]])),
        ours(&Keys(vec![Variant::Newtype(1)])),
        ours(&Keys(vec![json!({})])),
    ] {
        assert!(refused.is_err(), "{refused:?}");
    }
    assert_eq!(ours(&Keys(vec![()])), theirs(&Keys(vec![()])));
    assert_eq!(ours(&Keys(vec![f64::NAN])), theirs(&Keys(vec![f64::NAN])));
}

#[test]
fn writes_bytes_and_displayed_values_like_serde_json() {
    struct Bytes(&'static [u8]);
    impl Serialize for Bytes {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }
    same(&Bytes(b"\x00\"ab"));
    same(&Bytes(b""));
    struct Shown;
    impl fmt::Display for Shown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("shown \"here\"\n")
        }
    }
    impl Serialize for Shown {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self)
        }
    }
    same(&Shown);
}

#[test]
fn writes_raw_values_as_they_are() {
    // If serde_json ever renamed the struct its RawValue serializes
    // under, these would come out as {"$serde_json...": "..."}.
    let raw = RawValue::from_string(r#"{"a":[1,"\n"]}"#.into()).unwrap();
    same(&raw);
    same(&[&raw, &raw]);
    same(&json!({"k": serde_json::value::to_raw_value(&1).unwrap()}));
    let boxed: Box<RawValue> = serde_json::from_str("  \"x\"  ").unwrap();
    assert_eq!(ours(&boxed).unwrap(), "\"x\"");
    same(&boxed);
}

/// Struct names serde_json gives its own types, used by a type that is not
/// one of them.
struct Forged(&'static str, &'static [(&'static str, &'static str)]);

impl Serialize for Forged {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut fields = serializer.serialize_struct(self.0, self.1.len())?;
        for (key, value) in self.1 {
            fields.serialize_field(key, value)?;
        }
        fields.end()
    }
}

#[test]
fn refuses_what_would_write_an_empty_or_broken_raw_value() {
    const RAW: &str = "$serde_json::private::RawValue";
    assert_eq!(ours(&Forged(RAW, &[(RAW, "[1]")])).as_deref(), Ok("[1]"));
    // serde_json writes nothing for these (an empty line), or a key with
    // no value; both would stop a Node peer.
    assert!(ours(&Forged(RAW, &[])).is_err());
    assert!(ours(&Forged(RAW, &[("other", "1")])).is_err());
    assert!(ours(&Forged(RAW, &[(RAW, "1"), (RAW, "2")])).is_err());
    assert!(ours(&("a", Forged(RAW, &[]))).is_err());
}

/// A sequence that announces no elements, then has one.
struct Lying;

impl Serialize for Lying {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(0))?;
        seq.serialize_element(&0)?;
        seq.end()
    }
}

#[test]
fn writes_json_even_for_a_length_hint_that_lies() {
    // serde_json writes `[],0]` (not JSON) and trusts the hint; the hint
    // is not used here.
    assert_eq!(theirs(&Lying).as_deref(), Ok("[],0]"));
    assert_eq!(ours(&Lying).as_deref(), Ok("[0]"));
}

/// A sequence that ignores the errors of its elements.
struct Careless;

impl Serialize for Careless {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(None)?;
        let _ = seq.serialize_element("aaaa\"bbbb");
        seq.end()
    }
}

#[test]
fn a_refused_write_fails_the_message_even_if_the_value_ignores_it() {
    let mut out = b"before\n".to_vec();
    assert!(matches!(
        encode(&Careless, 4, &mut out),
        Err(FrameError::TooLong { max: 4, .. })
    ));
    assert_eq!(out, b"before\n", "nothing half-written is left behind");
    assert_eq!(ours(&Careless).as_deref(), Ok(r#"["aaaa\"bbbb"]"#));
}

/// A struct that ignores the error of one field (a map with a key that
/// cannot be a JSON key fails after writing its `{`) and goes on.
struct Swallowing;

impl Serialize for Swallowing {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut bad = std::collections::HashMap::new();
        bad.insert(vec![1u8], 1);
        let mut st = serializer.serialize_struct("Swallowing", 2)?;
        let _ = st.serialize_field("bad", &bad);
        st.serialize_field("ok", &1)?;
        st.end()
    }
}

/// The same in a sequence, one element deep, with an error of the
/// element's own making rather than the writer's.
struct SwallowingSeq;

impl Serialize for SwallowingSeq {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(None)?;
                seq.serialize_element(&1)?;
                Err(serde::ser::Error::custom("the element's own error"))
            }
        }
        let mut seq = serializer.serialize_seq(None)?;
        let _ = seq.serialize_element(&Fails);
        seq.serialize_element(&2)?;
        seq.end()
    }
}

#[test]
fn an_error_inside_the_value_fails_the_message_even_if_the_value_ignores_it() {
    // serde_json writes what the impls leave: not JSON, which stops a Node
    // peer (PROTOCOL.md 1.2).
    assert_eq!(theirs(&Swallowing).as_deref(), Ok(r#"{"bad":{,"ok":1}"#));
    assert_eq!(theirs(&SwallowingSeq).as_deref(), Ok("[[1,2]"));
    let mut out = b"before\n".to_vec();
    match encode(&Swallowing, usize::MAX, &mut out) {
        Err(FrameError::Encode { reason }) => assert_eq!(reason, "key must be a string"),
        other => panic!("{other:?}"),
    }
    assert_eq!(out, b"before\n", "nothing half-written is left behind");
    assert_eq!(ours(&SwallowingSeq), Err("the element's own error".to_string()));
}

/// A value whose serialization panics halfway through a map.
struct PanicsInAMap;

impl Serialize for PanicsInAMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_key("a")?;
        panic!("a panic halfway through a value (expected by the test)");
    }
}

/// A sequence that catches the panic of its first element and goes on.
struct CatchesAPanic;

impl Serialize for CatchesAPanic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        use std::panic::{AssertUnwindSafe, catch_unwind};
        let mut seq = serializer.serialize_seq(None)?;
        let _ = catch_unwind(AssertUnwindSafe(|| seq.serialize_element(&PanicsInAMap)));
        seq.serialize_element(&1)?;
        seq.end()
    }
}

#[test]
fn a_panic_inside_the_value_leaves_nothing_written() {
    assert_eq!(theirs(&CatchesAPanic).as_deref(), Ok(r#"[{"a",1]"#));
    assert!(ours(&CatchesAPanic).is_err(), "{:?}", ours(&CatchesAPanic));
    // A panic that goes through encode takes the half line out with it.
    let mut out = b"before\n".to_vec();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        encode(&[PanicsInAMap], usize::MAX, &mut out)
    }));
    assert!(unwound.is_err());
    assert_eq!(out, b"before\n");
}

/// A map driven by hand, in an order serde's rules forbid.
struct MapCalls(&'static [&'static str]);

impl Serialize for MapCalls {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for call in self.0 {
            // Errors ignored: what is written then is what matters.
            let _ = match *call {
                "key" => map.serialize_key("k"),
                _ => map.serialize_value(&1),
            };
        }
        map.end()
    }
}

#[test]
fn a_map_refuses_keys_and_values_out_of_turn() {
    for (calls, theirs_text) in [
        (&["value"][..], "{:1}"),
        (&["key", "key", "value"][..], r#"{"k","k":1}"#),
        (&["key"][..], r#"{"k"}"#),
        (&["key", "value", "value"][..], r#"{"k":1:1}"#),
    ] {
        assert_eq!(theirs(&MapCalls(calls)).as_deref(), Ok(theirs_text), "{calls:?}");
        assert!(
            ours(&MapCalls(calls)).is_err(),
            "{calls:?} gave {:?}",
            ours(&MapCalls(calls))
        );
    }
    assert_eq!(
        ours(&MapCalls(&["key", "value", "key", "value"])).as_deref(),
        Ok(r#"{"k":1,"k":1}"#)
    );
}

#[test]
fn a_string_of_escapes_stops_at_the_maximum_length() {
    // Each byte escapes to six: the writer must stop near the limit, not
    // write the whole escaped text first.
    let text = "\u{1}".repeat(900);
    let mut out = Vec::new();
    match encode(&text, 1_000, &mut out) {
        Err(FrameError::TooLong { len, max: 1_000 }) => {
            assert!((1_001..=1_010).contains(&len), "stopped at {len}")
        }
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty());
    // Just fits / just does not, escapes included.
    let text = "\n".repeat(10);
    for (max, fits) in [(22, true), (21, false)] {
        let mut out = Vec::new();
        assert_eq!(encode(&text, max, &mut out).is_ok(), fits, "max {max}");
    }
}

#[test]
fn a_string_that_reaches_the_limit_at_an_escape_is_refused_not_cut() {
    // The line is full just as an escape is due: the string is too long,
    // and must not go out cut off there (`"\n\n…`, no closing quote,
    // which a Node peer cannot parse).
    // `"` and `a` escapes fill `max`; the next escape is due there.
    for a in [2, 10, 100] {
        let max = 1 + 2 * a;
        let text = "\n".repeat(a + 1);
        let mut out = b"kept".to_vec();
        let err = encode(&text, max, &mut out).unwrap_err();
        assert!(matches!(err, FrameError::TooLong { .. }), "{a}: {err}");
        assert_eq!(out, b"kept");
    }
}
