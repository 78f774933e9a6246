//! The ipc-request message kinds and their JSON shapes (PROTOCOL.md
//! sections 2 and 3).
//!
//! Incoming messages are classified without building a `serde_json::Value`
//! tree: the envelope keys are read from the message text and the payload is
//! kept as raw JSON text, to be deserialized once, straight into the type
//! the user asks for.

use std::borrow::Cow;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::RemoteError;
use crate::frame::{self, FrameError, LineText, Message};

mod peer_uid;
pub use peer_uid::PeerUid;

/// Extensions this implementation understands and advertises (section 3).
pub const OUR_EXTENSIONS: &[&str] = &[EXT_ERROR, EXT_CANCEL];
/// The `error` extension: failures travel back as errors.
pub const EXT_ERROR: &str = "error";
/// The `cancel` extension: a caller that stops waiting tells the peer.
pub const EXT_CANCEL: &str = "cancel";

const PREFIX: &str = "_IPC_REQUEST/";
/// Built once: building a searcher per message showed up in profiles.
static PREFIX_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(PREFIX));

fn has_prefix(json: &str) -> bool {
    PREFIX_FINDER.find(json.as_bytes()).is_some()
}
const TYPE_REQUEST: &str = "_IPC_REQUEST/MSG_TYPE:REQUEST";
const TYPE_RESPONSE: &str = "_IPC_REQUEST/MSG_TYPE:RESPONSE";
const TYPE_CANCEL: &str = "_IPC_REQUEST/MSG_TYPE:CANCEL";
const HS_REQUEST: &str = "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST";
const HS_RESPONSE: &str = "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:RESPONSE";

/// A message from the peer, classified.
#[derive(Debug)]
#[non_exhaustive]
pub enum Inbound {
    /// The peer's handshake request.
    HandshakeRequest {
        /// Its UID, to be echoed in our response.
        uid: PeerUid,
        /// Extensions it advertised; `None` for an ipc-request 1.0 peer.
        extensions: Option<Vec<String>>,
    },
    /// The peer's answer to a handshake request.
    HandshakeResponse {
        /// The UID of the request it answers.
        uid: PeerUid,
        /// Extensions it advertised; `None` for an ipc-request 1.0 peer.
        extensions: Option<Vec<String>>,
    },
    /// A request for our handler.
    Request {
        /// The peer's UID for it.
        uid: PeerUid,
        /// The request data.
        payload: Message,
    },
    /// An answer to one of our requests.
    Response {
        /// The UID of our request: `Ok` with its number when it is written
        /// as we write ours (plain decimal, no sign, no leading zero), else
        /// `Err` with its JSON text (see [`PeerUid`]), which can match no
        /// request of ours.
        uid: Result<u64, String>,
        /// The answer data (`null` when `error` is set).
        payload: Message,
        /// The handler's failure (`error` extension), as its JSON text:
        /// [`remote_error`] reads it, once the session knows a request
        /// waits for it (reading copies its fields, up to a line's worth,
        /// which an answer nobody waits for must not cost).
        error: Option<Box<RawValue>>,
    },
    /// The peer stopped waiting for one of its requests (`cancel` extension).
    Cancel {
        /// The UID of the cancelled request.
        uid: PeerUid,
    },
    /// Anything else: it belongs to the user, untouched.
    Plain(Message),
}

/// Reads the envelope keys of a message. Unknown keys are ignored; a key of
/// the wrong type makes the whole message a plain one.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "_IPC_REQUEST/MSG_TYPE", borrow, default)]
    msg_type: Option<Cow<'a, str>>,
    // UIDs are read as raw text: a UID of the peer's is kept as the peer
    // wrote it (see `PeerUid`).
    #[serde(rename = "_IPC_REQUEST/REQUEST_UID", borrow, default)]
    uid: Option<&'a RawValue>,
    // `null` is a valid payload, so "present" and "null" must differ:
    // `deserialize_with` only runs when the key is there.
    #[serde(
        rename = "_IPC_REQUEST/PAYLOAD",
        borrow,
        default,
        deserialize_with = "present"
    )]
    payload: Option<&'a RawValue>,
    #[serde(rename = "_IPC_REQUEST/ERROR", borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(rename = "_IPC_REQUEST/HANDSHAKE_UID", borrow, default)]
    hs_uid: Option<&'a RawValue>,
    #[serde(rename = "_IPC_REQUEST/HANDSHAKE_MSG_TYPE", borrow, default)]
    hs_type: Option<Cow<'a, str>>,
    #[serde(rename = "_IPC_REQUEST/EXTENSIONS", borrow, default)]
    extensions: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Classifies one message (PROTOCOL.md section 2: a request or response only
/// with all three of type, UID and payload; a handshake only with both
/// handshake keys; everything else is plain).
///
/// A message holds no lone surrogate (see [`crate::frame`]), so a UID that
/// had one is not as the peer sent it: the session reads lines with
/// [`parse_inbound`] instead.
pub fn classify(msg: Message) -> Inbound {
    classify_protocol(LineText::clean(msg.get())).unwrap_or(Inbound::Plain(msg))
}

/// Parses and classifies the text of one line in a single pass: the parser
/// the session hands to the frame decoder (see
/// [`FrameDecoder::decode_with`](crate::frame::FrameDecoder::decode_with)).
/// Reading the envelope already checks the whole text, so a protocol message
/// is parsed once and only its payload is copied; a plain message is parsed
/// into a [`Message`]. Errs exactly when the text is not one JSON value.
pub fn parse_inbound(line: LineText<'_>) -> Result<Inbound, serde_json::Error> {
    parse_inbound_line(line).map(|(inbound, _)| inbound)
}

/// [`parse_inbound`], and whether `line` was in the exact form this crate
/// writes: then its top-level keys are the three of a request or response
/// and nothing else (no `cmd`, so it is not one of Node's own messages).
pub(crate) fn parse_inbound_line(line: LineText<'_>) -> Result<(Inbound, bool), serde_json::Error> {
    if let Some(exact) = classify_exact_checked(line) {
        return Ok((exact, true));
    }
    match classify_envelope(line) {
        Some(inbound) => Ok((inbound, false)),
        None => frame::parse_message(line.text()).map(|msg| (Inbound::Plain(msg), false)),
    }
}

/// The protocol message `line` is, or `None` for a plain message (or a text
/// that is not JSON).
fn classify_protocol(line: LineText<'_>) -> Option<Inbound> {
    classify_exact_checked(line).or_else(|| classify_envelope(line))
}

/// [`classify_exact`]. Tests and fuzzing run with debug assertions: there,
/// every message the byte reader takes is read by serde too.
fn classify_exact_checked(line: LineText<'_>) -> Option<Inbound> {
    let exact = classify_exact(line.text())?;
    debug_assert_eq!(
        format!("{:?}", Some(&exact)),
        format!("{:?}", classify_envelope(line).as_ref()),
        "the two envelope readers disagree on {}",
        line.text()
    );
    Some(exact)
}

/// A request or a successful response in exactly the bytes this crate
/// writes (and JSON.stringify writes for the same object): the envelope is
/// compared as bytes, and only the payload goes through serde. Reading the
/// envelope through serde's generated struct code cost more than anything
/// else per message (about 2,900 instructions for a 110-byte request; this
/// path: the payload's scan plus a few hundred). `None` for anything else,
/// which [`classify_envelope`] then reads; both give the same answer for a
/// text this one accepts (a test compares them).
fn classify_exact(text: &str) -> Option<Inbound> {
    let (is_request, rest) = match text.strip_prefix(REQUEST_HEAD) {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix(RESPONSE_HEAD)?),
    };
    // A plain UID has no quote and no backslash: it ends at the first quote.
    let uid_len = rest.find('"')?;
    let uid = &rest[..uid_len];
    if !is_plain_uid(uid) {
        return None;
    }
    let rest = rest[uid_len..].strip_prefix(UID_TO_PAYLOAD)?;
    // The payload is one JSON value (checked here, as in the envelope read),
    // and the object ends right after it: no other key, no trailing text.
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>();
    let payload = values.next()?.ok()?;
    if &rest[values.byte_offset()..] != "}" {
        return None;
    }
    let payload = payload.to_owned();
    Some(if is_request {
        Inbound::Request {
            uid: PeerUid::plain(uid),
            payload,
        }
    } else {
        Inbound::Response {
            uid: our_id(uid),
            payload,
            error: None,
        }
    })
}

/// [`classify_protocol`] through serde: any key order, escapes, other keys.
fn classify_envelope(line: LineText<'_>) -> Option<Inbound> {
    // Fast path: a message without the prefix anywhere is plain. Only
    // objects qualify (serde would also read a struct from an array). The
    // frame decoder hands over trimmed lines; this is for other callers.
    let text = line.text().trim_start_matches([' ', '\t', '\n', '\r']);
    if !text.starts_with('{') || !has_prefix(text) {
        return None;
    }
    // Duplicate envelope keys or a key of the wrong type fail this parse;
    // such a message is plain.
    let env = serde_json::from_str::<Envelope<'_>>(text).ok()?;
    // A UID that is not a string is a key of the wrong type too.
    let uid = env.uid.map(|raw| peer_uid::uid_text(raw, line).ok_or(()));
    let hs_uid = env.hs_uid.map(|raw| peer_uid::uid_text(raw, line).ok_or(()));
    let (uid, hs_uid) = (uid.transpose().ok()?, hs_uid.transpose().ok()?);
    if let (Some(ty), Some(uid), Some(payload)) = (&env.msg_type, uid, env.payload) {
        return match ty.as_ref() {
            TYPE_REQUEST => Some(Inbound::Request {
                uid: uid.into(),
                payload: payload.to_owned(),
            }),
            TYPE_RESPONSE => Some(Inbound::Response {
                // No copy of the UIDs we issue: this runs once per answer.
                uid: our_id(uid.as_str()),
                payload: payload.to_owned(),
                error: env.error.map(RawValue::to_owned),
            }),
            TYPE_CANCEL => Some(Inbound::Cancel { uid: uid.into() }),
            _ => None,
        };
    }
    if let (Some(ty), Some(uid)) = (&env.hs_type, hs_uid) {
        let extensions = || env.extensions.map(parse_extensions);
        match ty.as_ref() {
            HS_REQUEST => {
                return Some(Inbound::HandshakeRequest {
                    uid: uid.into(),
                    extensions: extensions(),
                });
            }
            HS_RESPONSE => {
                return Some(Inbound::HandshakeResponse {
                    uid: uid.into(),
                    extensions: extensions(),
                });
            }
            _ => {}
        }
    }
    None
}

/// True if a message the user wants to send would be taken for a protocol
/// message by the peer. Read as Node's `JSON.parse` reads it (decoded keys,
/// the last of duplicate keys wins), and conservatively: having the keys is
/// enough, whatever their values.
pub fn is_protocol_message(json: &str) -> bool {
    if !json.starts_with('{') || (!has_prefix(json) && memchr::memchr(b'\\', json.as_bytes()).is_none()) {
        return false;
    }
    // Only the top-level keys are read; every value is skipped over, not
    // built: a value tree would refuse a message nested deeper than its
    // limit, and that refusal must not let a look-alike through.
    const KEYS: [&str; 5] = [
        "_IPC_REQUEST/MSG_TYPE",
        "_IPC_REQUEST/REQUEST_UID",
        "_IPC_REQUEST/PAYLOAD",
        "_IPC_REQUEST/HANDSHAKE_UID",
        "_IPC_REQUEST/HANDSHAKE_MSG_TYPE",
    ];
    struct KeysPresent;
    impl<'de> serde::de::Visitor<'de> for KeysPresent {
        type Value = u8;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<u8, A::Error> {
            let mut present = 0u8;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if let Some(at) = KEYS.iter().position(|k| *k == key) {
                    present |= 1 << at;
                }
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(present)
        }
    }
    // A key with a lone surrogate escape, which Node keeps and serde_json
    // refuses, is read as U+FFFD (as the frame decoder does), so that it
    // cannot hide the rest of the object.
    let fixed = frame::replace_lone_surrogates(json.as_bytes());
    let text = match &fixed {
        Some(fixed) => std::str::from_utf8(fixed).unwrap_or(json),
        None => json,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let Ok(present) = serde::Deserializer::deserialize_map(&mut de, KeysPresent) else {
        return false;
    };
    let all = |bits: u8| present & bits == bits;
    all(0b00111) || all(0b11000)
}

/// The most extension names kept from a peer's handshake message: the first
/// this many that are strings of at most [`MAX_EXTENSION_NAME_LEN`] bytes.
pub const MAX_EXTENSION_NAMES: usize = 64;
/// The longest extension name kept, in bytes.
pub const MAX_EXTENSION_NAME_LEN: usize = 256;

/// Extension names; anything that is not a string is ignored, as unknown
/// names are, and so is a name past the bounds above. Every element is
/// read, but only the names kept are built: a `Vec<Value>` of the list
/// took 32 bytes for each `0,` of a peer's line (a 16 MiB line, 512 MiB),
/// and the names were kept for the session's life.
fn parse_extensions(raw: &RawValue) -> Vec<String> {
    use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
    use std::fmt;

    /// One element of the list: a name, if it is a string short enough.
    struct Name(Option<String>);
    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
            d.deserialize_any(NameVisitor)
        }
    }
    struct NameVisitor;
    impl<'de> Visitor<'de> for NameVisitor {
        type Value = Name;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_str<E: de::Error>(self, name: &str) -> Result<Name, E> {
            Ok(Name(
                (name.len() <= MAX_EXTENSION_NAME_LEN).then(|| name.to_owned()),
            ))
        }
        // Anything else is skipped over without being built.
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Name, E> {
            Ok(Name(None))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Name, E> {
            Ok(Name(None))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Name, E> {
            Ok(Name(None))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Name, E> {
            Ok(Name(None))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Name, E> {
            Ok(Name(None))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Name, A::Error> {
            IgnoredAny.visit_seq(seq).map(|_| Name(None))
        }
        // An object; also a number under serde_json's `arbitrary_precision`.
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Name, A::Error> {
            IgnoredAny.visit_map(map).map(|_| Name(None))
        }
    }
    struct Names;
    impl<'de> Visitor<'de> for Names {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut names = Vec::new();
            while let Some(Name(name)) = seq.next_element()? {
                if let Some(name) = name.filter(|_| names.len() < MAX_EXTENSION_NAMES) {
                    names.push(name);
                }
            }
            Ok(names)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde::Deserializer::deserialize_seq(&mut de, Names).unwrap_or_default()
}

/// An `_IPC_REQUEST/ERROR` object (the text [`Inbound::Response`] carries).
/// A malformed one still fails the request: the caller learns that the
/// peer reported a failure, with its raw text.
///
/// Each field is taken as raw text first, so that one a `Value` cannot
/// hold (nested past serde_json's 128 levels, which Node allows) costs
/// only itself, and the name and message still come through. The `data`
/// stays that text; a `code` other than a string or a number is kept as
/// its JSON text, as sent, in a string. Neither is built as a value tree.
pub fn remote_error(raw: &RawValue) -> RemoteError {
    #[derive(Deserialize)]
    struct Loose<'a> {
        #[serde(borrow)]
        name: Option<&'a RawValue>,
        #[serde(borrow)]
        message: Option<&'a RawValue>,
        #[serde(borrow)]
        code: Option<&'a RawValue>,
        #[serde(borrow)]
        stack: Option<&'a RawValue>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    // A string as itself, anything else as its JSON text.
    let text = |v: Option<&RawValue>| {
        v.map(|raw| serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned()))
    };
    let as_text = |raw: &RawValue| serde_json::Value::String(raw.get().to_owned());
    // (A `null` code is no code: serde reads it as `None` already.)
    let code = |raw: &RawValue| match raw.get().as_bytes().first() {
        // A string (kept as its text if serde_json refuses it: a lone
        // surrogate) or a number.
        Some(b'"' | b'-' | b'0'..=b'9') => serde_json::from_str(raw.get()).unwrap_or_else(|_| as_text(raw)),
        _ => as_text(raw),
    };
    match serde_json::from_str::<Loose>(raw.get()) {
        Ok(l) => RemoteError {
            name: text(l.name).unwrap_or_else(|| "Error".into()),
            message: text(l.message).unwrap_or_default(),
            code: l.code.map(code),
            stack: text(l.stack),
            data: l.data.map(RawValue::to_owned),
        },
        Err(_) => RemoteError::new("Error", raw.get().to_string()),
    }
}

// The envelope of requests and responses, written as bytes: these keys
// never need escaping, and escaping them anew for every message showed in
// profiles. `MessageOut` below writes the same object through serde.
// Incoming lines in exactly this form are read without serde's struct
// machinery too (see `classify_exact`).
const REQUEST_HEAD: &str =
    r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":""#;
const RESPONSE_HEAD: &str =
    r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":""#;
const UID_TO_PAYLOAD: &str = r#"","_IPC_REQUEST/PAYLOAD":"#;
const UID_TO_ERROR: &str = r#"","_IPC_REQUEST/PAYLOAD":null,"_IPC_REQUEST/ERROR":"#;
const HANDSHAKE_HEAD: &str = r#"{"_IPC_REQUEST/HANDSHAKE_UID":""#;
const HANDSHAKE_UID_TO_RESPONSE_EXTENSIONS: &str = r#"","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:RESPONSE","_IPC_REQUEST/EXTENSIONS":"#;

/// What a line that could not be read (too long, or not JSON) was, by its
/// first bytes (see
/// [`FrameDecoder::bad_line_head`](crate::frame::FrameDecoder::bad_line_head)).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UnreadableLine {
    /// A request, with its UID.
    Request(PeerUid),
    /// A response, with its UID read as [`our_id`] reads it.
    Response(Result<u64, String>),
}

/// The request or response a line that could not be read was, if its
/// envelope is all within `head`, before its payload (or, in an error
/// answer, its error), and is itself well formed: the message type and the
/// UID, in either order (this crate and
/// `JSON.stringify` of a 1.0 object write the type first; nothing in the
/// protocol says so), with JSON whitespace anywhere between tokens. The
/// caller can then fail that request rather than leave it waiting for
/// ever; anything else (`None`: another key before the payload, a key
/// repeated, which the reader of whole lines takes for a plain message, a
/// string cut off by the head's end) is only reported. What comes after
/// the envelope is not looked at: it is what could not be read.
pub(crate) fn unreadable_line(head: &[u8]) -> Option<UnreadableLine> {
    let mut rest = frame::trim_json_whitespace_start(head).strip_prefix(b"{")?;
    let (mut is_request, mut uid) = (None, None);
    loop {
        let (key, after) = json_string_at(rest)?;
        rest =
            frame::trim_json_whitespace_start(frame::trim_json_whitespace_start(after).strip_prefix(b":")?);
        if key == b"_IPC_REQUEST/PAYLOAD" || key == b"_IPC_REQUEST/ERROR" {
            break;
        }
        let (value, after) = json_string_at(rest)?;
        match key {
            b"_IPC_REQUEST/MSG_TYPE" if is_request.is_none() => {
                is_request = Some(match value {
                    v if v == TYPE_REQUEST.as_bytes() => true,
                    v if v == TYPE_RESPONSE.as_bytes() => false,
                    _ => return None,
                })
            }
            b"_IPC_REQUEST/REQUEST_UID" if uid.is_none() => uid = Some(value),
            _ => return None,
        }
        rest = frame::trim_json_whitespace_start(after).strip_prefix(b",")?;
    }
    // No parser has seen this line: the UID is checked here.
    let uid = peer_uid::uid_in_unchecked_text(std::str::from_utf8(uid?).ok()?)?;
    Some(if is_request? {
        UnreadableLine::Request(uid.into())
    } else {
        UnreadableLine::Response(our_id(uid.as_str()))
    })
}

/// The content of the JSON string `text` starts with (after whitespace),
/// between its quotes, and what follows its closing quote; `None` if
/// `text` starts with no string, or its end is not in `text`.
fn json_string_at(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let content = frame::trim_json_whitespace_start(text).strip_prefix(b"\"")?;
    let len = peer_uid::string_content_len(content)?;
    Some((&content[..len], &content[len + 1..]))
}

/// The number of one of our requests, if `uid` is written exactly as we
/// write those (plain decimal, from 1: no sign, no leading zero); else
/// `Err` with the text, which can match none of ours. A parse alone would
/// take "01" or "+1" for request 1 and hand it another request's answer.
pub(crate) fn our_id(uid: &str) -> Result<u64, String> {
    let digits = uid.as_bytes();
    let mut id: u64 = 0;
    let ours = digits.first().is_some_and(|&first| first != b'0')
        && digits.iter().all(|&digit| {
            let next = digit
                .is_ascii_digit()
                .then(|| id.checked_mul(10)?.checked_add(u64::from(digit - b'0')))
                .flatten();
            next.map(|n| id = n).is_some()
        });
    if ours { Ok(id) } else { Err(uid.to_string()) }
}

/// True if `uid` can go between quotes as it is: no escaping needed.
fn is_plain_uid(uid: &str) -> bool {
    uid.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Appends the line of a request (`uid` from our counter) to `out`.
pub fn encode_request<T: Serialize + ?Sized>(
    uid: &str,
    payload: &T,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    if !is_plain_uid(uid) {
        return frame::encode(&MessageOut::request(uid, payload), max_len, out);
    }
    let head = [REQUEST_HEAD.as_bytes(), uid.as_bytes(), UID_TO_PAYLOAD.as_bytes()];
    frame::encode_wrapped(&head, payload, b"}", max_len, out)
}

// The answers below write the peer's UID as it is: a `PeerUid` is JSON
// text already, in the form JSON.stringify writes.

/// Appends the line of a successful response to the peer's request `uid`.
pub fn encode_response<T: Serialize + ?Sized>(
    uid: &PeerUid,
    payload: &T,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_answer(uid, UID_TO_PAYLOAD, payload, max_len, out)
}

/// Appends the line of a failed response to the peer's request `uid`, for
/// a peer that speaks `error`: payload `null` and the error under its own
/// key. (A 1.0 peer gets [`encode_response`] with the error object as
/// payload instead.)
pub fn encode_error_response(
    uid: &PeerUid,
    error: &RemoteError,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_answer(uid, UID_TO_ERROR, error, max_len, out)
}

/// A response to `uid`: its envelope up to and including the key of
/// `value` (`uid_to_value`), then `value`.
fn encode_answer<T: Serialize + ?Sized>(
    uid: &PeerUid,
    uid_to_value: &str,
    value: &T,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let head = [
        RESPONSE_HEAD.as_bytes(),
        uid.as_json().as_bytes(),
        uid_to_value.as_bytes(),
    ];
    frame::encode_wrapped(&head, value, b"}", max_len, out)
}

/// Appends our answer to the peer's handshake request `uid`.
pub fn encode_handshake_response(uid: &PeerUid, max_len: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let head = [
        HANDSHAKE_HEAD.as_bytes(),
        uid.as_json().as_bytes(),
        HANDSHAKE_UID_TO_RESPONSE_EXTENSIONS.as_bytes(),
    ];
    frame::encode_wrapped(&head, OUR_EXTENSIONS, b"}", max_len, out)
}

/// Our handshake request (the response is [`encode_handshake_response`]).
#[derive(Debug, Serialize)]
pub struct HandshakeOut<'a> {
    #[serde(rename = "_IPC_REQUEST/HANDSHAKE_UID")]
    uid: &'a str,
    #[serde(rename = "_IPC_REQUEST/HANDSHAKE_MSG_TYPE")]
    msg_type: &'static str,
    #[serde(rename = "_IPC_REQUEST/EXTENSIONS")]
    extensions: &'static [&'static str],
}

impl<'a> HandshakeOut<'a> {
    /// Our handshake request with a fresh UID.
    pub fn request(uid: &'a str) -> Self {
        HandshakeOut {
            uid,
            msg_type: HS_REQUEST,
            extensions: OUR_EXTENSIONS,
        }
    }
}

/// One of our requests or cancels (answers are written by
/// [`encode_response`] and [`encode_error_response`]).
#[derive(Debug, Serialize)]
pub struct MessageOut<'a, T: ?Sized> {
    #[serde(rename = "_IPC_REQUEST/MSG_TYPE")]
    msg_type: &'static str,
    #[serde(rename = "_IPC_REQUEST/REQUEST_UID")]
    uid: &'a str,
    #[serde(rename = "_IPC_REQUEST/PAYLOAD")]
    payload: &'a T,
}

impl<'a, T: Serialize + ?Sized> MessageOut<'a, T> {
    /// A request.
    pub fn request(uid: &'a str, payload: &'a T) -> Self {
        MessageOut {
            msg_type: TYPE_REQUEST,
            uid,
            payload,
        }
    }
}

impl<'a> MessageOut<'a, ()> {
    /// A cancel of our request `uid`.
    pub fn cancel(uid: &'a str) -> Self {
        MessageOut {
            msg_type: TYPE_CANCEL,
            uid,
            payload: &(),
        }
    }
}

#[cfg(test)]
mod tests;
