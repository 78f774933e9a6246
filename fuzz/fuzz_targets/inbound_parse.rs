//! Fuzzes the single-pass parse of incoming lines (`protocol::parse_inbound`)
//! against the two-pass one it replaced (`frame::parse_message`, then
//! `protocol::classify`): both must accept exactly the same texts and
//! classify them alike, and neither may panic.
//!
//! Random bytes almost never look like a protocol message, so the input is
//! spliced into one: the first byte picks an envelope template, the second a
//! position in it, and the rest replaces one byte there (or is inserted, if
//! the position byte is odd).

#![no_main]

use ipc_request::frame::parse_message;
use ipc_request::protocol::{classify, parse_inbound};
use libfuzzer_sys::fuzz_target;

const TEMPLATES: &[&str] = &[
    r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"7","_IPC_REQUEST/PAYLOAD":[1,"x"]}"#,
    r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"7","_IPC_REQUEST/PAYLOAD":null,"_IPC_REQUEST/ERROR":{"name":"E","message":"m"}}"#,
    r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:CANCEL","_IPC_REQUEST/REQUEST_UID":"7","_IPC_REQUEST/PAYLOAD":null}"#,
    r#"{"_IPC_REQUEST/HANDSHAKE_UID":"u","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST","_IPC_REQUEST/EXTENSIONS":["error","cancel"]}"#,
    r#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"a":1}}"#,
    r#"{"a":[1,2,{"b":"\u00e9"}]}"#,
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
    let Ok(text) = std::str::from_utf8(&text) else {
        return;
    };
    let one_pass = parse_inbound(text);
    let two_pass = parse_message(text).map(classify);
    assert_eq!(one_pass.is_ok(), two_pass.is_ok(), "{text}");
    if let (Ok(one), Ok(two)) = (one_pass, two_pass) {
        assert_eq!(format!("{one:?}"), format!("{two:?}"), "{text}");
    }
});
