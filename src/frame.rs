//! Framing of Node's JSON-mode IPC channel: bytes to messages and back.
//!
//! Pure code, no I/O: the transport reads bytes into a [`bytes::BytesMut`] and asks a
//! [`FrameDecoder`] for messages; it turns values into bytes with [`encode`] and writes them.
//! The wire format is section 1.2 of `PROTOCOL.md`: each message is the text of one JSON
//! value (`JSON.stringify(value)`) followed by one `\n`.
//!
//! # Reading is tolerant, writing is strict
//!
//! What we read comes from a Node peer (or anything else holding the fd), so the decoder
//! accepts everything Node's own reader accepts: lines split across reads anywhere (even
//! inside a UTF-8 sequence), `\r\n`, surrounding whitespace, blank lines (skipped silently),
//! any JSON value at top level. A bad line (not JSON, too long) is reported as an error and
//! consumed; the lines after it decode normally, so one bad message never desynchronises the
//! stream.
//!
//! What we write goes to a Node peer, and Node exits with an uncaught `SyntaxError` on an
//! empty line, a line that is not JSON, or a raw control character inside a string. So
//! [`encode`] writes exactly one compact JSON text and one `\n`, or nothing at all.
//!
//! # Lone surrogates
//!
//! JavaScript strings are sequences of UTF-16 code units and may hold a lone surrogate
//! (`"\ud800"`); Node sends one as that escape, and its `JSON.parse` accepts it. A Rust
//! `String` cannot hold a lone surrogate, so serde_json refuses to turn such an escape into a
//! `String` or a [`serde_json::Value`]. If the decoder passed the text through unchanged, the
//! layers above would fail on a message a Node peer may legitimately send. The decoder
//! therefore rewrites every *lone* surrogate escape to `\ufffd` (U+FFFD REPLACEMENT
//! CHARACTER), the same substitution `String::from_utf16_lossy` makes. Proper escaped pairs
//! (`\ud83d\ude00`) are kept. This is lossy, but it never fails on what Node sends.
//!
//! serde_json's [`RawValue`] parser only checks that a `\u` escape has four hex digits, so in
//! practice a lone surrogate does not make the first parse fail; the decoder looks for lone
//! surrogates after every successful parse too. That look is a `memchr` for `\` over the line,
//! and the copy-and-rewrite only happens when a lone surrogate is actually there. Should a
//! later serde_json reject lone surrogates in a [`RawValue`], the rewrite is also tried after
//! a failed parse.
//!
//! # Bounded memory
//!
//! A [`FrameDecoder`] has a maximum line length. As soon as the buffer holds more than that
//! without a newline, the decoder reports [`FrameError::TooLong`], clears the buffer and
//! discards bytes until the next newline (as tokio-util's `LinesCodec` does with
//! `max_length`). When `decode` returns `Ok(None)` the buffer holds at most `max_len` bytes
//! (the start of one unfinished line), so a reader that decodes until `Ok(None)` before each
//! read never holds more than `max_len` plus what one read appended.

use std::io;

use bytes::{Buf, BytesMut};
use memchr::{memchr, memchr3};
use serde_json::value::RawValue;

/// One message as it travels: the text of one JSON value (validated).
///
/// The decoder only returns texts without lone surrogate escapes (see the module docs), so
/// every message it returns also parses into a `String`-based type such as
/// [`serde_json::Value`], within serde_json's own limits (nesting depth, number range).
pub type Message = Box<RawValue>;

/// Default maximum length of one message line in bytes (newline excluded).
///
/// Node itself sets no limit; this one only protects the receiver's memory.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// Longest snippet of a bad line kept in [`FrameError::InvalidJson`], in characters.
const SNIPPET_CHARS: usize = 64;

/// Why one message could not be decoded or encoded.
///
/// None of these is fatal to the stream: after an error the decoder goes on with the next
/// line, and a failed [`encode`] leaves the output buffer as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A line (or an outgoing message) longer than the maximum. When reading, the decoder has
    /// discarded it up to and including its newline; the next line decodes normally.
    #[error("message of {len} bytes or more exceeds the maximum of {max} bytes")]
    TooLong {
        /// The length seen: the whole line if its end was seen, else at least this much.
        len: usize,
        /// The limit that was exceeded.
        max: usize,
    },
    /// A complete line that is not one JSON value. The line is consumed; decoding goes on.
    #[error("message is not valid JSON ({reason}): {snippet:?}")]
    InvalidJson {
        /// What the JSON parser objected to.
        reason: String,
        /// The first (at most 64) characters of the trimmed line, lossy UTF-8, for error
        /// messages.
        snippet: String,
    },
    /// A value that serde_json could not serialize (e.g. a map with non-string keys).
    #[error("cannot encode message as JSON: {reason}")]
    Encode {
        /// What the serializer objected to.
        reason: String,
    },
}

/// Splits a byte stream into [`Message`]s, one per `\n`-terminated line.
///
/// Use one decoder per stream and always pass it the same buffer, to which the caller only
/// appends: the decoder remembers how far it has already looked for a newline.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Maximum line length in bytes, newline excluded, before trimming.
    max_len: usize,
    /// Length of the buffer prefix already scanned without finding a newline; the next call
    /// starts its search there, so no byte is scanned twice.
    scanned: usize,
    /// An over-long line was reported before its newline arrived: drop bytes up to and
    /// including the next newline.
    discarding: bool,
}

impl FrameDecoder {
    /// A decoder that accepts lines of at most `max_len` bytes (newline excluded, surrounding
    /// whitespace included).
    pub fn new(max_len: usize) -> Self {
        FrameDecoder {
            max_len,
            scanned: 0,
            discarding: false,
        }
    }

    /// The maximum line length this decoder accepts, in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Takes the next complete message out of `buf` (the caller appends bytes read from the
    /// stream to `buf`). Ok(None): no complete message yet, read more. Err: see FrameError;
    /// after an Err, calling decode again goes on with the rest of the buffer.
    ///
    /// Blank lines are skipped. When this returns `Ok(None)`, `buf` holds at most `max_len`
    /// bytes; call it until then after each read to keep memory bounded.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        loop {
            if self.discarding {
                // The over-long line was already reported; its bytes are worthless.
                match memchr(b'\n', buf) {
                    Some(newline) => {
                        buf.advance(newline + 1);
                        self.discarding = false;
                        self.scanned = 0;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
            }

            // `min` only matters if the caller broke the contract and shrank the buffer.
            let from = self.scanned.min(buf.len());
            let Some(offset) = memchr(b'\n', &buf[from..]) else {
                if buf.len() > self.max_len {
                    // The line is already too long; report it now rather than buffering it.
                    let len = buf.len();
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Err(FrameError::TooLong {
                        len,
                        max: self.max_len,
                    });
                }
                self.scanned = buf.len();
                return Ok(None);
            };

            let newline = from + offset;
            self.scanned = 0;
            if newline > self.max_len {
                buf.advance(newline + 1);
                return Err(FrameError::TooLong {
                    len: newline,
                    max: self.max_len,
                });
            }
            let line = buf[..newline].trim_ascii();
            if line.is_empty() {
                buf.advance(newline + 1);
                continue;
            }
            let message = parse_line(line);
            buf.advance(newline + 1);
            return message.map(Some);
        }
    }

    /// Same, at end of stream: complete lines still decode; once none is left, an unfinished
    /// trailing message (bytes after the last newline) is dropped, buf is cleared, Ok(None).
    ///
    /// Node drops such bytes too: they are a message whose sender exited mid-write.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match self.decode(buf)? {
            Some(message) => Ok(Some(message)),
            None => {
                buf.clear();
                self.scanned = 0;
                self.discarding = false;
                Ok(None)
            }
        }
    }
}

impl Default for FrameDecoder {
    /// A decoder with [`DEFAULT_MAX_MESSAGE_LEN`].
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN)
    }
}

/// Parses one trimmed, non-empty line into a message.
fn parse_line(line: &[u8]) -> Result<Message, FrameError> {
    match serde_json::from_slice::<Message>(line) {
        Ok(message) => match replace_lone_surrogates(message.get().as_bytes()) {
            None => Ok(message),
            // The rewrite swaps one valid escape for another, so this parse cannot fail; the
            // error path is only there to avoid a panic.
            Some(fixed) => serde_json::from_slice(&fixed).map_err(|e| invalid_json(&e, line)),
        },
        Err(error) => match replace_lone_surrogates(line) {
            Some(fixed) => serde_json::from_slice(&fixed).map_err(|_| invalid_json(&error, line)),
            None => Err(invalid_json(&error, line)),
        },
    }
}

fn invalid_json(error: &serde_json::Error, line: &[u8]) -> FrameError {
    // 64 characters take at most 4 bytes each, even when lossy decoding replaces bytes.
    let prefix = &line[..line.len().min(SNIPPET_CHARS * 4)];
    FrameError::InvalidJson {
        reason: error.to_string(),
        snippet: String::from_utf8_lossy(prefix)
            .chars()
            .take(SNIPPET_CHARS)
            .collect(),
    }
}

/// Rewrites each lone surrogate escape (`\uD800`..`\uDFFF` not part of a high-low pair) in a
/// JSON text to `\ufffd`. Returns `None`, without allocating, when there is none.
///
/// Escape sequences are read left to right from each backslash, so `\\ud800` (an escaped
/// backslash, then the text `ud800`) is left alone. A backslash outside a string is invalid
/// JSON anyway, so there is no need to track whether we are inside one.
fn replace_lone_surrogates(text: &[u8]) -> Option<Vec<u8>> {
    const REPLACEMENT: &[u8; 6] = b"\\ufffd";
    let mut fixed: Option<Vec<u8>> = None;
    // Bytes of `text` already copied into `fixed`.
    let mut copied = 0;
    let mut pos = 0;
    // `pos` may point one past the end after a backslash that ends the text.
    while let Some(offset) = text.get(pos..).and_then(|rest| memchr(b'\\', rest)) {
        let escape = pos + offset;
        // Any escape other than `\u` is two bytes long; neither byte starts a new escape.
        pos = escape + 2;
        if text.get(escape + 1) != Some(&b'u') {
            continue;
        }
        let Some(unit) = hex4(text, escape + 2) else {
            continue;
        };
        let lone = match unit {
            0xD800..=0xDBFF => {
                let paired = text.get(escape + 6) == Some(&b'\\')
                    && text.get(escape + 7) == Some(&b'u')
                    && hex4(text, escape + 8).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
                if paired {
                    pos = escape + 12;
                }
                !paired
            }
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            let out = fixed.get_or_insert_with(|| Vec::with_capacity(text.len()));
            out.extend_from_slice(&text[copied..escape]);
            out.extend_from_slice(REPLACEMENT);
            copied = escape + 6;
            pos = escape + 6;
        }
    }
    fixed.map(|mut out| {
        out.extend_from_slice(&text[copied..]);
        out
    })
}

/// The value of the four hex digits at `text[at..at + 4]`, if they are there.
fn hex4(text: &[u8], at: usize) -> Option<u16> {
    let digits = text.get(at..at + 4)?;
    digits.iter().try_fold(0u16, |acc, &digit| {
        let value = (digit as char).to_digit(16)?;
        Some((acc << 4) | value as u16)
    })
}

/// Appends exactly one line for `value` to `out`: its JSON text and one b'\n'. Never writes an
/// empty line or a raw control character (serde_json escapes them; keep a debug_assert). If the
/// JSON text is longer than `max_len` bytes, or serialization fails, `out` is restored to its
/// previous length (nothing half-written) and an error is returned (TooLong / Encode).
///
/// The text is compact. A [`RawValue`] embedded in `value` is written verbatim by serde_json,
/// and may carry whitespace such as a newline between tokens (e.g. one built from
/// pretty-printed JSON): a newline would split the message in two, so tabs, carriage returns
/// and newlines are left out. This is always safe: in a valid JSON text they can only appear
/// between tokens, never raw inside a string. Serialization stops as soon as the text exceeds
/// `max_len`, so the `len` of a [`FrameError::TooLong`] is a lower bound; that check counts
/// the whitespace of an embedded RawValue before it is left out.
pub fn encode<T: serde::Serialize + ?Sized>(
    value: &T,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_wrapped(&[], value, b"", max_len, out)
}

/// Like [`encode`], for a line made of raw JSON fragments around one value: `prefix` (its
/// pieces in order), the JSON text of `value`, then `suffix`. The caller vouches that the
/// fragments are compact JSON without raw control characters and that together they make one
/// JSON text; the protocol layer uses this to write its constant envelope keys without
/// escaping them anew for every message. `max_len` counts the whole text.
pub fn encode_wrapped<T: serde::Serialize + ?Sized>(
    prefix: &[&[u8]],
    value: &T,
    suffix: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    for piece in prefix {
        out.extend_from_slice(piece);
    }
    let value_start = out.len();
    if value_start - start > max_len {
        let len = value_start - start;
        out.truncate(start);
        return Err(FrameError::TooLong { len, max: max_len });
    }
    let mut writer = LineWriter {
        out,
        start,
        max_len,
        too_long: None,
    };
    if let Err(error) = serde_json::to_writer(&mut writer, value) {
        let too_long = writer.too_long;
        out.truncate(start);
        return Err(match too_long {
            Some(len) => FrameError::TooLong { len, max: max_len },
            None => FrameError::Encode {
                reason: error.to_string(),
            },
        });
    }
    // One scan over the value's text rather than one per fragment serde_json
    // writes (measured: the per-fragment scan was ~7% of a request burst).
    // Only an embedded RawValue can bring these bytes, so the common case
    // is a single SIMD pass that finds nothing.
    if memchr3(b'\n', b'\r', b'\t', &out[value_start..]).is_some() {
        let mut keep = value_start;
        for i in value_start..out.len() {
            let byte = out[i];
            if !matches!(byte, b'\n' | b'\r' | b'\t') {
                out[keep] = byte;
                keep += 1;
            }
        }
        out.truncate(keep);
    }
    let len = out.len() - start + suffix.len();
    if len > max_len {
        out.truncate(start);
        return Err(FrameError::TooLong { len, max: max_len });
    }
    out.extend_from_slice(suffix);
    debug_assert!(out.len() > start, "serde_json wrote an empty JSON text");
    debug_assert!(
        out[start..].iter().all(|&byte| byte >= 0x20),
        "a raw control character in an outgoing message"
    );
    out.push(b'\n');
    Ok(())
}

/// The writer [`encode`] serializes into: appends to the output and fails once the text would
/// exceed the maximum length (so a huge value is not serialized in full only to be refused).
struct LineWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Length of `out` before this message.
    start: usize,
    max_len: usize,
    /// Set when a write was refused for length: the length the text would have had.
    too_long: Option<usize>,
}

impl LineWriter<'_> {
    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = self.out.len() - self.start + bytes.len();
        if len > self.max_len {
            self.too_long = Some(len);
            return Err(io::Error::other("message exceeds the maximum length"));
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

impl io::Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.push(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{Value, json};

    use super::*;

    /// Decodes everything `buf` holds now, until `decode` returns `Ok(None)`.
    fn drain(decoder: &mut FrameDecoder, buf: &mut BytesMut) -> Vec<Result<String, FrameError>> {
        let mut results = Vec::new();
        loop {
            match decoder.decode(buf) {
                Ok(Some(message)) => results.push(Ok(message.get().to_owned())),
                Ok(None) => return results,
                Err(error) => results.push(Err(error)),
            }
        }
    }

    /// Feeds `chunks` one after the other, draining after each, then decodes at end of stream.
    fn feed<'a>(
        max_len: usize,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Result<String, FrameError>> {
        let mut decoder = FrameDecoder::new(max_len);
        let mut buf = BytesMut::new();
        let mut results = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            results.extend(drain(&mut decoder, &mut buf));
        }
        while let Some(message) = decoder.decode_eof(&mut buf).transpose() {
            results.push(message.map(|m| m.get().to_owned()));
        }
        assert!(buf.is_empty(), "decode_eof left {buf:?}");
        results
    }

    /// A decode result with the message as text, for comparisons.
    fn text(result: Result<Option<Message>, FrameError>) -> Result<Option<String>, FrameError> {
        result.map(|m| m.map(|m| m.get().to_owned()))
    }

    fn feed_all(bytes: &[u8]) -> Vec<Result<String, FrameError>> {
        feed(DEFAULT_MAX_MESSAGE_LEN, [bytes])
    }

    fn ok(texts: &[&str]) -> Vec<Result<String, FrameError>> {
        texts.iter().map(|t| Ok(t.to_string())).collect()
    }

    /// The one message in `line`, parsed as a `Value` (which a lone surrogate would break).
    fn value_of(line: &[u8]) -> Value {
        let results = feed_all(line);
        assert_eq!(results.len(), 1, "{results:?}");
        let text = results[0].as_ref().expect("a message");
        serde_json::from_str(text).expect("the message parses as a Value")
    }

    fn encoded(value: &(impl serde::Serialize + ?Sized)) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, DEFAULT_MAX_MESSAGE_LEN, &mut out).expect("encodes");
        out
    }

    #[test]
    fn decodes_the_exact_bytes_node_writes_for_an_object() {
        let bytes = [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d, 0x0a];
        assert_eq!(feed_all(&bytes), ok(&[r#"{"a":1}"#]));
        assert_eq!(value_of(&bytes), json!({"a": 1}));
    }

    #[test]
    fn decodes_the_exact_bytes_node_writes_for_a_string() {
        assert_eq!(feed_all(b"\"x\"\n"), ok(&[r#""x""#]));
        assert_eq!(value_of(b"\"x\"\n"), json!("x"));
    }

    #[test]
    fn decodes_a_raw_u2028_inside_a_string() {
        let bytes = b"\"a\xe2\x80\xa8b\"\n";
        assert_eq!(value_of(bytes), json!("a\u{2028}b"));
    }

    /// Several messages, with multi-byte characters, CRLF, blanks and padding.
    const STREAM: &[u8] =
        "{\"a\":1}\n\"x\"\n\"é😀\u{2028}\"\r\n\n  [1,\"\\ud800\"] \n{\"k\":\"é\"}\n".as_bytes();

    fn stream_expected() -> Vec<Result<String, FrameError>> {
        ok(&[
            r#"{"a":1}"#,
            r#""x""#,
            "\"é😀\u{2028}\"",
            r#"[1,"\ufffd"]"#,
            r#"{"k":"é"}"#,
        ])
    }

    #[test]
    fn decodes_a_stream_split_in_two_at_every_offset() {
        assert_eq!(feed_all(STREAM), stream_expected());
        for at in 0..=STREAM.len() {
            let (head, tail) = STREAM.split_at(at);
            assert_eq!(feed(1024, [head, tail]), stream_expected(), "split at {at}");
        }
    }

    #[test]
    fn decodes_a_stream_fed_one_byte_at_a_time() {
        let chunks = STREAM.chunks(1);
        assert_eq!(feed(1024, chunks), stream_expected());
    }

    #[test]
    fn waits_for_the_rest_of_a_split_multibyte_character() {
        for line in ["\"é\"\n", "\"😀\"\n", "\"\u{2028}\"\n"] {
            let bytes = line.as_bytes();
            // Cut after the first byte of the character (just after the opening quote).
            let mut decoder = FrameDecoder::default();
            let mut buf = BytesMut::from(&bytes[..2]);
            assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
            assert_eq!(decoder.scanned, 2, "scanned bytes are remembered");
            buf.extend_from_slice(&bytes[2..]);
            let message = decoder.decode(&mut buf).unwrap().unwrap();
            assert_eq!(message.get(), line.trim_end());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn replaces_lone_surrogates_and_keeps_pairs() {
        let cases: &[(&str, &str)] = &[
            (r#""\ud800""#, "\u{fffd}"),
            (r#""\uD800""#, "\u{fffd}"),
            (r#""a\udc00b""#, "a\u{fffd}b"),
            (r#""ab\udbff""#, "ab\u{fffd}"),
            (r#""\ud800\n""#, "\u{fffd}\n"),
            (r#""\ud800\u0041""#, "\u{fffd}A"),
            (r#""\ud800x\udc00""#, "\u{fffd}x\u{fffd}"),
            (r#""\udc00\ud800""#, "\u{fffd}\u{fffd}"),
            (r#""\ud800\ud800\udc00""#, "\u{fffd}\u{10000}"),
            (r#""\ud83d\ude00""#, "😀"),
            (r#""\\ud800""#, "\\ud800"),
            (r#""\\\ud800""#, "\\\u{fffd}"),
            (r#""\\\\ud800""#, "\\\\ud800"),
        ];
        for (line, expected) in cases {
            let bytes = format!("{line}\n");
            assert_eq!(value_of(bytes.as_bytes()), json!(expected), "{line}");
        }
        // In a key and nested, too.
        assert_eq!(
            value_of(b"{\"\\ud800\":[{\"x\":\"\\udfff\"}]}\n"),
            json!({"\u{fffd}": [{"x": "\u{fffd}"}]})
        );
    }

    #[test]
    fn leaves_texts_without_lone_surrogates_untouched() {
        for text in [
            r#""\ud83d\ude00""#,
            r#""\\ud800""#,
            r#""\u00e9\n\"\\""#,
            r#"[1,{"a":null}]"#,
        ] {
            assert_eq!(replace_lone_surrogates(text.as_bytes()), None, "{text}");
            let line = format!("{text}\n");
            assert_eq!(feed_all(line.as_bytes()), ok(&[text]));
        }
        // A replacement keeps the length and everything around it.
        assert_eq!(
            replace_lone_surrogates(br#"["\ud800",1]"#).unwrap(),
            br#"["\ufffd",1]"#
        );
    }

    #[test]
    fn strips_crlf_and_surrounding_whitespace() {
        assert_eq!(feed_all(b"{\"a\":1}\r\n"), ok(&[r#"{"a":1}"#]));
        assert_eq!(feed_all(b"  \t{\"a\":1} \t \r\n"), ok(&[r#"{"a":1}"#]));
        assert_eq!(feed_all(b"\r 12 \r\n"), ok(&["12"]));
    }

    #[test]
    fn skips_blank_lines_without_error() {
        assert_eq!(feed_all(b"\n\r\n   \n\t\n1\n\n"), ok(&["1"]));
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::from(&b"\n \r\n\n"[..]);
        assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn decodes_several_messages_from_one_buffer() {
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::from(&b"1\n\"two\"\n[3]\n{\"fo"[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "1");
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), r#""two""#);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "[3]");
        assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
        assert_eq!(&buf[..], b"{\"fo");
        buf.extend_from_slice(b"ur\":4}\n");
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), r#"{"four":4}"#);
    }

    #[test]
    fn decodes_every_kind_of_top_level_value() {
        let texts = [
            r#"{"a":{"b":[]}}"#,
            "{}",
            "[1,2,[]]",
            "[]",
            r#""str""#,
            "0",
            "-17",
            "3.25",
            "-1.5e-7",
            "true",
            "false",
            "null",
        ];
        let stream: String = texts.iter().map(|t| format!("{t}\n")).collect();
        assert_eq!(feed_all(stream.as_bytes()), ok(&texts));
    }

    #[test]
    fn accepts_a_line_of_exactly_max_len_and_rejects_one_more() {
        // 8 bytes: "[1,2,34]"; with padding it is 9 bytes before trimming.
        assert_eq!(feed(8, [&b"[1,2,34]\n"[..]]), ok(&["[1,2,34]"]));
        assert_eq!(
            feed(8, [&b"[1,2,34]\r\n"[..]]),
            vec![Err(FrameError::TooLong { len: 9, max: 8 })]
        );
    }

    #[test]
    fn over_long_line_with_its_newline_is_consumed_and_the_next_decodes() {
        let results = feed(8, [&b"[1,2,3,4,5,6]\n7\n"[..]]);
        assert_eq!(
            results,
            vec![Err(FrameError::TooLong { len: 13, max: 8 }), Ok("7".into())]
        );
    }

    #[test]
    fn over_long_line_without_its_newline_is_reported_at_once_and_discarded() {
        let mut decoder = FrameDecoder::new(8);
        let mut buf = BytesMut::from(&b"[1,2,3"[..]);
        assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
        buf.extend_from_slice(b",4,5");
        assert_eq!(
            text(decoder.decode(&mut buf)),
            Err(FrameError::TooLong { len: 10, max: 8 })
        );
        assert!(buf.is_empty(), "the buffer is cleared at once");
        // The rest of the line, in pieces, is dropped without another error.
        buf.extend_from_slice(b",6,7,8,9,10,11,12");
        assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
        assert!(buf.is_empty());
        buf.extend_from_slice(b",13]\ntrue\n[2]");
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "true");
        assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
        assert_eq!(&buf[..], b"[2]");
        buf.extend_from_slice(b"\n");
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "[2]");
    }

    #[test]
    fn over_long_blank_line_is_too_long() {
        assert_eq!(
            feed(4, [&b"      \n1\n"[..]]),
            vec![Err(FrameError::TooLong { len: 6, max: 4 }), Ok("1".into())]
        );
    }

    #[test]
    fn invalid_line_is_reported_and_the_next_decodes() {
        let results = feed_all(b"nope\n{\"a\":1}\n");
        assert_eq!(results.len(), 2);
        match &results[0] {
            Err(FrameError::InvalidJson { reason, snippet }) => {
                assert_eq!(snippet, "nope");
                assert!(!reason.is_empty());
            }
            other => panic!("expected InvalidJson, got {other:?}"),
        }
        assert_eq!(results[1], Ok(r#"{"a":1}"#.to_string()));
    }

    #[test]
    fn rejects_what_is_not_exactly_one_json_value() {
        for line in [
            &b"1 2\n"[..],
            b"{\"a\":1}{\"b\":2}\n",
            b"\"a\x01b\"\n",
            b"\"a\tb\"\n",
            b"{\"a\":}\n",
            b"\"unterminated\n",
            b"\"bad escape \\x\"\n",
            b"\"\xff\xfe\"\n",
            b"\"\xe2\x80\"\n",
            b"NaN\n",
            b"\\\n",
            b"\"a\\\n",
            b"\"\\u\n",
            b"\"\\ud800\\\n",
            b"\"\\ud800\\u12\n",
        ] {
            let results = feed_all(line);
            assert!(
                matches!(results.as_slice(), [Err(FrameError::InvalidJson { .. })]),
                "{line:?}: {results:?}"
            );
        }
    }

    #[test]
    fn invalid_json_snippet_is_short_and_lossy() {
        let mut line = vec![b'x'; 200];
        line.push(b'\n');
        match feed_all(&line).as_slice() {
            [Err(FrameError::InvalidJson { snippet, .. })] => assert_eq!(snippet, &"x".repeat(64)),
            other => panic!("{other:?}"),
        }
        match feed_all(b"  \"\xff\"  \n").as_slice() {
            [Err(FrameError::InvalidJson { snippet, .. })] => assert_eq!(snippet, "\"\u{fffd}\""),
            other => panic!("{other:?}"),
        }
        let wide = "😀".repeat(100) + "\n";
        match feed_all(wide.as_bytes()).as_slice() {
            [Err(FrameError::InvalidJson { snippet, .. })] => assert_eq!(snippet, &"😀".repeat(64)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decode_eof_returns_complete_lines_and_drops_the_unfinished_one() {
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::from(&b"1\n\n2\r\n{\"unfinished\":"[..]);
        assert_eq!(decoder.decode_eof(&mut buf).unwrap().unwrap().get(), "1");
        assert_eq!(decoder.decode_eof(&mut buf).unwrap().unwrap().get(), "2");
        assert_eq!(text(decoder.decode_eof(&mut buf)), Ok(None));
        assert!(buf.is_empty());
        // A complete-looking value without its newline is unfinished too.
        let mut buf = BytesMut::from(&b"true"[..]);
        assert_eq!(text(decoder.decode_eof(&mut buf)), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn decode_eof_reports_errors_of_complete_lines_and_resets() {
        let mut decoder = FrameDecoder::new(4);
        let mut buf = BytesMut::from(&b"oops\n123456"[..]);
        assert!(matches!(
            decoder.decode_eof(&mut buf),
            Err(FrameError::InvalidJson { .. })
        ));
        assert_eq!(
            text(decoder.decode_eof(&mut buf)),
            Err(FrameError::TooLong { len: 6, max: 4 })
        );
        assert_eq!(text(decoder.decode_eof(&mut buf)), Ok(None));
        assert!(!decoder.discarding);
        // A new stream through the same decoder starts clean.
        buf.extend_from_slice(b"7\n");
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "7");
    }

    #[test]
    fn default_decoder_uses_the_default_limit() {
        assert_eq!(FrameDecoder::default().max_len(), DEFAULT_MAX_MESSAGE_LEN);
        assert_eq!(FrameDecoder::new(10).max_len(), 10);
    }

    #[test]
    fn encode_writes_the_bytes_node_writes() {
        assert_eq!(
            encoded(&json!({"a": 1})),
            [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d, 0x0a]
        );
        assert_eq!(encoded("x"), b"\"x\"\n");
        assert_eq!(encoded(&()), b"null\n");
        assert_eq!(encoded("a\u{2028}b"), "\"a\u{2028}b\"\n".as_bytes());
    }

    #[test]
    fn encode_appends_after_existing_content() {
        let mut out = b"1\n".to_vec();
        encode(&[2, 3], 100, &mut out).unwrap();
        encode("four", 100, &mut out).unwrap();
        assert_eq!(out, b"1\n[2,3]\n\"four\"\n");
    }

    #[test]
    fn encode_never_writes_raw_control_characters() {
        let every_control: String = (0u8..0x20).chain([0x7f]).map(char::from).collect();
        let value = json!({ every_control.clone(): [every_control.clone(), "\u{2028}\u{2029}"] });
        let out = encoded(&value);
        assert_eq!(out.last(), Some(&b'\n'));
        assert!(
            out[..out.len() - 1].iter().all(|&b| b >= 0x20),
            "raw control byte in {out:?}"
        );
        assert_eq!(value_of(&out), value);
    }

    #[test]
    fn encode_removes_newlines_from_embedded_raw_json() {
        let raw = RawValue::from_string("{\n  \"a\": [1,\r\n\t2],\n  \"b\": \"x y\"\n}".into()).unwrap();
        let out = encoded(&("p", &raw));
        let line = std::str::from_utf8(&out).unwrap();
        assert_eq!(line, "[\"p\",{  \"a\": [1,2],  \"b\": \"x y\"}]\n");
        assert_eq!(value_of(&out), json!(["p", {"a": [1, 2], "b": "x y"}]));
    }

    #[test]
    fn encode_too_long_restores_out() {
        let mut out = b"earlier\n".to_vec();
        assert_eq!(encode("abcd", 6, &mut out), Ok(()));
        assert_eq!(out, b"earlier\n\"abcd\"\n");
        let before = out.clone();
        let error = encode("abcde", 6, &mut out).unwrap_err();
        assert!(
            matches!(error, FrameError::TooLong { len, max: 6 } if len > 6),
            "{error:?}"
        );
        assert_eq!(out, before);
        let big = vec!["some text"; 1000];
        assert!(matches!(
            encode(&big, 100, &mut out),
            Err(FrameError::TooLong { max: 100, .. })
        ));
        assert_eq!(out, before);
    }

    #[test]
    fn encode_error_restores_out() {
        let mut map = HashMap::new();
        map.insert(vec![1u8, 2], "value");
        let mut out = b"earlier\n".to_vec();
        let error = encode(&map, 1000, &mut out).unwrap_err();
        match error {
            FrameError::Encode { reason } => assert!(reason.contains("key"), "{reason}"),
            other => panic!("expected Encode, got {other:?}"),
        }
        assert_eq!(out, b"earlier\n");
        // A nested failure, after much has been written, is undone too.
        let nested = json!([1, 2, "three"]);
        let mut out = Vec::new();
        assert!(matches!(
            encode(&(nested, &map), 1000, &mut out),
            Err(FrameError::Encode { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn encode_then_decode_roundtrips() {
        let values = [
            json!({"_IPC_REQUEST/PAYLOAD": {"x": [1, 2.5, null, true]}, "s": "a\nb\"c\\"}),
            json!("é😀\u{2028}\u{0}"),
            json!([]),
            json!(-0.0),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(null),
        ];
        let mut out = Vec::new();
        for value in &values {
            encode(value, 1024, &mut out).unwrap();
        }
        let decoded: Vec<Value> = feed(1024, [out.as_slice()])
            .into_iter()
            .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
            .collect();
        assert_eq!(decoded, values);
        // And a decoded message re-encodes to the same text.
        let message: Message = serde_json::from_str(r#"{"a":[1,"\ufffd"]}"#).unwrap();
        assert_eq!(encoded(&message), b"{\"a\":[1,\"\\ufffd\"]}\n");
    }

    #[test]
    fn error_messages_name_the_numbers() {
        let too_long = FrameError::TooLong { len: 70, max: 64 }.to_string();
        assert!(too_long.contains("70") && too_long.contains("64"), "{too_long}");
        let invalid = FrameError::InvalidJson {
            reason: "expected value".into(),
            snippet: "nope".into(),
        }
        .to_string();
        assert!(
            invalid.contains("expected value") && invalid.contains("nope"),
            "{invalid}"
        );
    }
}
