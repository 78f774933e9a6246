//! The peer's UIDs, kept exactly as the peer wrote them.
//!
//! A UID is a JavaScript string: UTF-16 code units, which may hold a lone
//! surrogate (`'\ud800'`) that no Rust `String` can. The frame decoder reads
//! one as U+FFFD (see [`crate::frame`]), which is right for a payload but
//! wrong for a UID: the peer matches our answer to its request by the UID,
//! so an answer under U+FFFD is never matched, and two requests whose UIDs
//! differ only in lone surrogates would become one in our tables.
//!
//! So a UID of the peer's is kept as JSON text: what goes between its
//! quotes, in the one form `JSON.stringify` writes (the escapes `\"`, `\\`,
//! `\b`, `\f`, `\n`, `\r`, `\t`, `\u00xx` for the other control characters
//! and `\udxxx` for a lone surrogate, lower-case; every other character as
//! itself). Two UIDs are the same JavaScript string exactly when their
//! texts are equal, and the text goes back into our answer as it is.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::frame::{self, LineText};

/// A UID of the peer's (a request's or a handshake's), as JSON text: what
/// goes between its quotes, written as `JSON.stringify` writes it. Kept as
/// text because a JavaScript string may hold what a Rust `String` cannot,
/// a lone surrogate (see "Lone surrogates" in the [`frame`] module's
/// docs); it is written back as it is, and a Node peer matches its
/// answers by `===`.
///
/// Clones share the text: a UID is counted once against the session's
/// bounds on the peer's waiting requests, and held once, however many
/// places refer to it.
// A request's UID is the peer's to choose, as long as a line: the backlog,
// its index, the map of running handlers and the answer's state all hold
// it, and the backlog counts it once against its byte bound, so once is
// what it must cost (a copy each held twice the bound; see
// tests/memory_bounds.rs).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PeerUid(Arc<str>);

impl PeerUid {
    /// A UID that needs no escaping (see `is_plain_uid`).
    pub(crate) fn plain(uid: &str) -> Self {
        debug_assert!(super::is_plain_uid(uid), "{uid:?}");
        PeerUid(uid.into())
    }

    /// The UID as JSON text, without its quotes (see the type's docs).
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerUid {
    /// The JSON text, so that a log line shows a lone surrogate as its
    /// escape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerUid(\"{}\")", self.0)
    }
}

/// A UID as read from a line, in [`PeerUid`]'s form, not yet copied: a
/// response's UID is only looked at.
pub(super) struct UidText<'a>(Cow<'a, str>);

impl UidText<'_> {
    /// The text.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<UidText<'_>> for PeerUid {
    fn from(text: UidText<'_>) -> Self {
        PeerUid(text.0.into())
    }
}

/// The text of the JSON string `raw` (a part of `line`'s text) as
/// [`PeerUid`] keeps it, read from the line as sent; `None` if `raw` is not
/// a string. Borrowed when the line wrote it that way already, as
/// `JSON.stringify` does.
pub(super) fn uid_text<'a>(raw: &'a RawValue, line: LineText<'a>) -> Option<UidText<'a>> {
    let literal = raw.get();
    if !literal.starts_with('"') {
        return None;
    }
    // The line as sent holds the same string at the same bytes, with its
    // lone surrogates (see `LineText::as_sent`).
    let text = line.text();
    let literal = if text.as_bytes().as_ptr_range().contains(&literal.as_ptr()) {
        let start = literal.as_ptr() as usize - text.as_ptr() as usize;
        let as_sent = line.as_sent().get(start..start + literal.len());
        debug_assert!(as_sent.is_some(), "the line as sent is as long as its text");
        as_sent.unwrap_or(literal)
    } else {
        literal
    };
    // The parser accepted it: no unescaped quote, no control character.
    in_one_form(&literal[1..literal.len() - 1])
}

/// The UID whose JSON text (between its quotes) is `content`, from a line
/// no parser has checked (the head of a line too long to read): `None`
/// unless it is well formed, with no raw control character, which would
/// go back to the peer as it is.
pub(super) fn uid_in_unchecked_text(content: &str) -> Option<UidText<'_>> {
    // A quote in `content` is an escaped one (`string_content_len`).
    if content.bytes().any(|b| b < 0x20) {
        return None;
    }
    in_one_form(content)
}

/// `content`, the text between the quotes of a JSON string with no raw
/// control character nor unescaped quote, in [`PeerUid`]'s form: as it is
/// without an escape, else written anew by [`canonical`].
fn in_one_form(content: &str) -> Option<UidText<'_>> {
    if !content.contains('\\') {
        return Some(UidText(Cow::Borrowed(content)));
    }
    canonical(content).map(|text| UidText(Cow::Owned(text)))
}

/// The length of the JSON string text that `text` starts with (the bytes
/// after its opening quote), up to its closing quote; `None` if that quote
/// is not in `text`.
pub(super) fn string_content_len(text: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        at += memchr::memchr2(b'"', b'\\', text.get(at..)?)?;
        if text[at] == b'"' {
            return Some(at);
        }
        // The escaped byte cannot end the string.
        at += 2;
    }
}

/// `content`, the text between a JSON string's quotes (well formed: the
/// line parsed, or `uid_in_unchecked_text` checked it), in the form
/// `JSON.stringify` writes: escapes decoded to UTF-16 code units, a high
/// surrogate followed by a low one made one character (as the frame
/// decoder pairs them), then written again.
fn canonical(content: &str) -> Option<String> {
    let mut out = Vec::with_capacity(content.len());
    let mut rest = content;
    while let Some(at) = rest.find('\\') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let escape = *rest.as_bytes().get(at + 1)?;
        // Both bytes are ASCII: the slice stays on a character boundary.
        rest = rest.get(at + 2..)?;
        let ch = match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = frame::hex4(rest.as_bytes(), 0)?;
                rest = &rest[4..];
                let low = rest
                    .strip_prefix("\\u")
                    .and_then(|after| frame::hex4(after.as_bytes(), 0))
                    .filter(|low| (0xDC00..=0xDFFF).contains(low));
                match (unit, low) {
                    (0xD800..=0xDBFF, Some(low)) => {
                        rest = &rest[6..];
                        let code = 0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
                        char::from_u32(code)?
                    }
                    (0xD800..=0xDFFF, _) => {
                        write!(out, "\\u{unit:04x}").ok()?;
                        continue;
                    }
                    _ => char::from_u32(u32::from(unit))?,
                }
            }
            _ => return None,
        };
        // As the JSON writer escapes what it writes, JSON.stringify's way.
        match u8::try_from(ch) {
            Ok(byte) if frame::needs_escape(byte) => frame::escape(byte, &mut out),
            _ => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out.extend_from_slice(rest.as_bytes());
    // Pieces of `content` and whole characters: UTF-8.
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The UID of the JSON string `literal` (quotes included), sent in a
    /// line and read through the frame decoder (which rewrites lone
    /// surrogates in the text it parses).
    fn read(literal: &str) -> Option<String> {
        let mut buf = bytes::BytesMut::from(format!("[{literal}]\n").as_bytes());
        let parse = |line: LineText<'_>| {
            let raw: Vec<&RawValue> = serde_json::from_str(line.text())?;
            Ok(uid_text(raw[0], line).map(|uid| uid.as_str().to_owned()))
        };
        crate::frame::FrameDecoder::default()
            .decode_with(&mut buf, parse)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn lone_surrogates_stay_as_the_peer_wrote_them() {
        for (sent, kept) in [
            (r#""\ud800""#, r"\ud800"),
            (r#""\uD800""#, r"\ud800"),
            (r#""\ud801""#, r"\ud801"),
            (r#""\udc00\ud800""#, r"\udc00\ud800"),
            (r#""\ud800\ud800\udc00""#, r"\ud800𐀀"),
            (r#""a\ud83d\ude00b""#, "a😀b"),
            (r#""\ud83d\u0041""#, r"\ud83dA"),
            (r#""\ud83d\n""#, r"\ud83d\n"),
            (r#""x\ud800""#, r"x\ud800"),
        ] {
            assert_eq!(read(sent).as_deref(), Some(kept), "{sent}");
        }
        // Different strings stay different; the rewrite alone made them one.
        assert_ne!(read(r#""\ud800""#), read(r#""\ud801""#));
        assert_ne!(read(r#""\ud800""#), read(r#""\ufffd""#));
    }

    #[test]
    fn other_escapes_take_the_one_form() {
        for (sent, kept) in [
            (r#""plain-1""#, "plain-1"),
            (r#""\u0061\/""#, "a/"),
            (r#""\"\\\b\f\n\r\t""#, r#"\"\\\b\f\n\r\t"#),
            (r#""\u0008\u000C\u001f\u007f""#, "\\b\\f\\u001f\u{7f}"),
            (r#""\u2028é""#, "\u{2028}é"),
            (r#""\ufffd""#, "\u{fffd}"),
        ] {
            assert_eq!(read(sent).as_deref(), Some(kept), "{sent}");
        }
        assert_eq!(read("5"), None);
        assert_eq!(read("null"), None);
    }

    /// What `JSON.stringify` writes between the quotes for a string of
    /// UTF-16 code units: a lone surrogate as a lower-case escape, every
    /// character as serde_json writes it (the same escapes).
    fn js_stringify(units: &[u16]) -> String {
        char::decode_utf16(units.iter().copied())
            .map(|unit| match unit {
                Ok(ch) => {
                    let quoted = serde_json::to_string(&ch.to_string()).unwrap();
                    quoted[1..quoted.len() - 1].to_owned()
                }
                Err(lone) => format!("\\u{:04x}", lone.unpaired_surrogate()),
            })
            .collect()
    }

    /// The same units written as a peer may write them: each character raw
    /// where JSON allows, by its short escape, or as `\u` escapes in either
    /// case, as `ways` picks.
    fn written_any_way(units: &[u16], ways: &[u8]) -> String {
        let mut out = String::new();
        let mut ways = ways.iter().copied().cycle();
        let escape = |out: &mut String, unit: u16, upper: bool| match upper {
            true => out.push_str(&format!("\\u{unit:04X}")),
            false => out.push_str(&format!("\\u{unit:04x}")),
        };
        for unit in char::decode_utf16(units.iter().copied()) {
            let way = ways.next().unwrap_or(0);
            match unit {
                Ok(ch) if way % 3 == 0 && ch >= ' ' && ch != '"' && ch != '\\' => out.push(ch),
                Ok(ch) if way % 3 == 1 && "\"\\/\u{8}\u{c}\n\r\t".contains(ch) => {
                    let short = match ch {
                        '\u{8}' => 'b',
                        '\u{c}' => 'f',
                        '\n' => 'n',
                        '\r' => 'r',
                        '\t' => 't',
                        other => other,
                    };
                    out.push('\\');
                    out.push(short);
                }
                Ok(ch) => {
                    for unit in ch.encode_utf16(&mut [0; 2]) {
                        escape(&mut out, *unit, way & 4 != 0);
                    }
                }
                Err(lone) => escape(&mut out, lone.unpaired_surrogate(), way & 4 != 0),
            }
        }
        out
    }

    proptest! {
        /// Any JS string, lone surrogates included, written any way: read
        /// as `JSON.stringify` writes it.
        #[test]
        fn any_js_string_written_any_way_reads_as_its_one_form(
            units in prop::collection::vec(
                prop_oneof![0u16..0x80, 0xD800u16..0xE000, any::<u16>()],
                0..16,
            ),
            ways in prop::collection::vec(any::<u8>(), 1..16),
        ) {
            let literal = format!("\"{}\"", written_any_way(&units, &ways));
            prop_assert_eq!(read(&literal), Some(js_stringify(&units)), "{}", literal);
            // The same UID in the head of a request too long to read, which
            // no parser sees: read alike.
            let head = format!("{}{}{}", super::super::REQUEST_HEAD, &literal[1..], &super::super::UID_TO_PAYLOAD[1..]);
            let uid = match super::super::unreadable_line(head.as_bytes()) {
                Some(super::super::UnreadableLine::Request(uid)) => Some(uid.as_json().to_owned()),
                _ => None,
            };
            prop_assert_eq!(uid, Some(js_stringify(&units)), "{}", head);
        }

        /// Any string, with each character escaped or not: the one form is
        /// what serde_json writes for it (as JSON.stringify does).
        #[test]
        fn any_escaping_of_a_string_reads_as_its_one_form(
            chars in prop::collection::vec((any::<char>(), any::<bool>()), 0..16),
        ) {
            let mut literal = String::from("\"");
            for &(ch, escape) in &chars {
                if escape || ch < ' ' || ch == '"' || ch == '\\' {
                    let mut units = [0u16; 2];
                    for unit in ch.encode_utf16(&mut units) {
                        literal.push_str(&format!("\\u{unit:04X}"));
                    }
                } else {
                    literal.push(ch);
                }
            }
            literal.push('"');
            let string: String = chars.iter().map(|&(ch, _)| ch).collect();
            let written = serde_json::to_string(&string).unwrap();
            prop_assert_eq!(read(&literal), Some(written[1..written.len() - 1].to_owned()));
        }
    }
}
