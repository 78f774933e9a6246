//! Fuzzes the single-pass parse of incoming lines (`protocol::parse_inbound`,
//! given to the frame decoder) against the two-pass one it replaced (the
//! decoder's `Message`, then `protocol::classify`): both must accept exactly
//! the same lines and classify them alike, and neither may panic. Alike
//! means the same `Debug` text, unless the line holds a lone surrogate
//! escape: then only the single pass keeps the peer's UIDs as sent (the
//! `Message` has them as U+FFFD), and the two must agree on the kind.
//!
//! Random bytes almost never look like a protocol message, so the input is
//! spliced into one: the first byte picks an envelope template, the second a
//! position in it, and the rest replaces one byte there (or is inserted, if
//! the position byte is odd).

#![no_main]

use bytes::BytesMut;
use ipc_request::frame::FrameDecoder;
use ipc_request::protocol::{Inbound, classify, parse_inbound, remote_error};
use libfuzzer_sys::fuzz_target;

const TEMPLATES: &[&str] = &[
    r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"7","_IPC_REQUEST/PAYLOAD":[1,"x"]}"#,
    r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"7","_IPC_REQUEST/PAYLOAD":null,"_IPC_REQUEST/ERROR":{"name":"E","message":"m"}}"#,
    r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:CANCEL","_IPC_REQUEST/REQUEST_UID":"7","_IPC_REQUEST/PAYLOAD":null}"#,
    r#"{"_IPC_REQUEST/HANDSHAKE_UID":"u","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST","_IPC_REQUEST/EXTENSIONS":["error","cancel"]}"#,
    r#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"a":1}}"#,
    r#"{"a":[1,2,{"b":"\u00e9"}]}"#,
    r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"\ud800\u0041","_IPC_REQUEST/PAYLOAD":"\udc00"}"#,
];

fuzz_target!(|data: &[u8]| {
    let (Some(&pick), Some(&at)) = (data.first(), data.get(1)) else {
        return;
    };
    let mut text = TEMPLATES[usize::from(pick) % TEMPLATES.len()].as_bytes().to_vec();
    let at = usize::from(at) * text.len() / 256;
    let splice = &data[2..];
    if data[1] % 2 == 1 || text.is_empty() {
        text.splice(at..at, splice.iter().copied());
    } else {
        text.splice(at..(at + 1).min(text.len()), splice.iter().copied());
    }
    text.push(b'\n');
    let mut rewritten = false;
    let one_pass = FrameDecoder::default().decode_with(&mut BytesMut::from(&text[..]), |line| {
        rewritten = line.text() != line.as_sent();
        parse_inbound(line)
    });
    let two_pass = FrameDecoder::default()
        .decode(&mut BytesMut::from(&text[..]))
        .map(|message| message.map(classify));
    let text = String::from_utf8_lossy(&text);
    assert_eq!(one_pass.is_ok(), two_pass.is_ok(), "{text}");
    if let (Ok(Some(one)), Ok(Some(two))) = (one_pass, two_pass) {
        // An answer's error is carried as its text, and read only when a
        // request waits for it: read it here, so that its reading is
        // fuzzed too (it must not panic).
        if let Inbound::Response { error: Some(error), .. } = &one {
            let _ = remote_error(error);
        }
        if rewritten {
            assert_eq!(std::mem::discriminant(&one), std::mem::discriminant(&two), "{text}");
        } else {
            assert_eq!(format!("{one:?}"), format!("{two:?}"), "{text}");
        }
    }
});
