//! Fuzzes the JSON writer behind `frame::encode` against serde_json: for any
//! value, the line must be serde_json's compact text and a newline, byte for
//! byte; and with a maximum length, it must either fit or be refused with
//! nothing left behind.
//!
//! The value comes from the input read as JSON text (lossy UTF-8, so every
//! input reaches the string path with something), parsed into a
//! `serde_json::Value`; the first byte, when it is not part of the text, sets
//! the maximum length.

#![no_main]

use ipc_request::frame::{FrameError, encode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&max_byte, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // A text that is not JSON is fuzzed as one big string value.
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned()));

    let mut expected = serde_json::to_vec(&value).expect("serde_json writes every Value");
    expected.push(b'\n');
    let mut line = b"earlier\n".to_vec();
    encode(&value, usize::MAX, &mut line).expect("no limit, no error");
    assert_eq!(
        String::from_utf8_lossy(&line[8..]),
        String::from_utf8_lossy(&expected),
        "the writer and serde_json disagree"
    );

    let max = usize::from(max_byte) * 4;
    let mut out = b"earlier\n".to_vec();
    match encode(&value, max, &mut out) {
        Ok(()) => assert_eq!(&out[8..], &expected[..], "a line that fits is the same line"),
        Err(FrameError::TooLong { len, max: m }) => {
            assert_eq!(m, max);
            assert!(len > max, "refused at {len} <= {max}");
            assert!(expected.len() - 1 > max, "refused a line that fits");
            assert_eq!(out, b"earlier\n", "a refused message leaves nothing behind");
        }
        Err(other) => panic!("{other:?}"),
    }
});
