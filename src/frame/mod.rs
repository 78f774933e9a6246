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
//! accepts everything a Node writer sends and Node's own reader accepts: lines split across
//! reads anywhere (even inside a UTF-8 sequence), `\r\n`, surrounding JSON whitespace
//! (space, tab, CR: not form feed, on which `JSON.parse` throws), blank lines (skipped
//! silently), any JSON value at top level. One thing Node's reader takes that
//! this one does not: bytes that are not UTF-8 (Node's reader turns them into U+FFFD, and no
//! Node writer sends them) make the line an error. A bad line (not JSON, too long) is
//! reported as an error and consumed; the lines after it decode normally, so one bad message
//! never desynchronises the stream.
//!
//! What we write goes to a Node peer, and Node exits with an uncaught `SyntaxError` on an
//! empty line, a line that is not JSON, or a raw control character inside a string. So
//! [`encode`] writes exactly one compact JSON text and one `\n`, or nothing at all.
//! A float that is NaN or infinite has no JSON form: it is written as `null`, as serde_json
//! and Node's `JSON.stringify` both write it (PROTOCOL.md 1.2); as a map key, where `null`
//! cannot stand, it is an error.
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
//! (`\ud83d\ude00`) are kept. This is lossy, but it never fails on what Node sends. It is lossy
//! in object keys too: keys that differ only in their lone surrogates (`{"\ud800":1,"\udbff":2}`)
//! become the same key, and a map-like target (`serde_json::Value`, `HashMap`) keeps the
//! last of them, as `JSON.parse` keeps the last of repeated keys. A parser
//! given to [`FrameDecoder::decode_with`] also gets the line as sent ([`LineText::as_sent`]),
//! for the strings that must go back to the peer exactly as they came (its request UIDs).
//!
//! The rewrite happens before the line is parsed, so that whatever parses it (a [`RawValue`],
//! or the protocol layer's envelope reader) only ever sees clean text. Finding out costs
//! little: the search for the newline also notes the line's first `\`, a line without one is
//! not looked at again, and the copy-and-rewrite only happens when a lone surrogate is
//! actually there.
//!
//! # Bounded memory
//!
//! A [`FrameDecoder`] has a maximum line length. Once the buffer holds more than that
//! without a newline, and at least [`BAD_LINE_HEAD_LEN`] bytes (the head by which a layer
//! above knows the line, all in), the decoder reports [`FrameError::TooLong`],
//! clears the buffer and discards bytes until the next newline (as tokio-util's `LinesCodec`
//! does with `max_length`); a line past the limit that ends, or whose stream ends, sooner is
//! reported then. So under a limit below [`BAD_LINE_HEAD_LEN`], a line that stops before its
//! newline and before that many bytes is not reported until more comes or the stream ends.
//! When `decode` returns `Ok(None)` the buffer holds at most `max_len` bytes, or fewer than
//! [`BAD_LINE_HEAD_LEN`] if that is more (the start of one unfinished line), so a reader that
//! decodes until `Ok(None)` before each read never holds more than that plus what one read
//! appended.

// This file holds the reading side; `writing.rs` the writing side, and
// `json_writer.rs` the serializer it writes with.

use bytes::{Buf, BytesMut};
use memchr::{memchr, memchr2};
use serde_json::value::RawValue;

mod json_writer;
mod writing;
pub(crate) use json_writer::{escape, needs_escape};
pub use writing::{encode, encode_wrapped};

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

/// The longest line a Node peer can read, in bytes (newline excluded): a
/// channel never writes a longer one, whatever its maximum message length.
///
/// Node gathers a line into one JavaScript string before parsing it, and V8
/// caps a string's length (`buffer.constants.MAX_STRING_LENGTH`: 2^29 - 24
/// UTF-16 units on 64-bit platforms, 2^28 - 16 on 32-bit ones). A longer line
/// throws a `RangeError` in Node's channel code, where nothing catches it: the
/// Node process exits. A line's UTF-8 bytes are never fewer than its UTF-16
/// units, so a byte count within the cap is always safe. The cap is V8's for
/// this build's pointer width, the Node of the same machine's as a rule.
pub const NODE_MAX_LINE_LEN: usize = if cfg!(target_pointer_width = "64") {
    (1 << 29) - 24
} else {
    (1 << 28) - 16
};

/// Longest snippet of a bad line kept in [`FrameError::InvalidJson`], in characters.
const SNIPPET_CHARS: usize = 64;

/// Why one message could not be decoded or encoded.
///
/// None of these is fatal to the stream: after an error the decoder goes on with the next
/// line, and a failed [`encode`] leaves the output buffer as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// A value that cannot be written as JSON (e.g. a map with non-string keys).
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
    /// Between calls: `scanned` while the unfinished line holds no backslash, else the
    /// position of its first backslash. The search for the newline notes the first backslash
    /// on the way, so the search for lone surrogate escapes starts there, and a line without
    /// escapes is scanned once, not twice. Like `scanned`, this relies on the caller only
    /// appending to the buffer.
    clean: usize,
    /// An over-long line was reported before its newline arrived: drop bytes up to and
    /// including the next newline.
    discarding: bool,
    /// The first bytes of the line last reported as an error (see
    /// [`FrameDecoder::bad_line_head`]).
    bad_line_head: Vec<u8>,
}

/// How many bytes of a line it could not read [`FrameDecoder::bad_line_head`] keeps: enough
/// for the envelope of a request or response up to its payload, with a UID of up to about
/// 4,000 bytes (as sent: a lone surrogate takes six).
pub const BAD_LINE_HEAD_LEN: usize = 4096;

impl FrameDecoder {
    /// A decoder that accepts lines of at most `max_len` bytes (newline excluded, surrounding
    /// whitespace included).
    pub fn new(max_len: usize) -> Self {
        FrameDecoder {
            max_len,
            scanned: 0,
            clean: 0,
            discarding: false,
            bad_line_head: Vec::new(),
        }
    }

    /// The first bytes (the first [`BAD_LINE_HEAD_LEN`], leading whitespace then skipped) of the line
    /// most recently reported as [`FrameError::TooLong`] or [`FrameError::InvalidJson`], so that
    /// a layer above can say what it was (the protocol layer finds the request it answered, or
    /// asked, by an envelope that comes before what could not be read). Empty before any.
    pub fn bad_line_head(&self) -> &[u8] {
        &self.bad_line_head
    }

    /// Keeps the line's first [`BAD_LINE_HEAD_LEN`] bytes, then without
    /// leading whitespace: cut before trimming, so that a line reported
    /// before its newline (once that many bytes are in) and one reported
    /// whole keep the same head.
    fn keep_bad_line_head(&mut self, line: &[u8]) {
        let head = trim_json_whitespace_start(&line[..line.len().min(BAD_LINE_HEAD_LEN)]);
        self.bad_line_head.clear();
        self.bad_line_head.extend_from_slice(head);
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
    /// bytes, or fewer than [`BAD_LINE_HEAD_LEN`] if that is more; call it until then after
    /// each read to keep memory bounded.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        self.decode_with(buf, |line| parse_message(line.text()))
    }

    /// Like [`decode`](Self::decode), with the line parsed by `parse`
    /// instead of into a [`Message`]: a layer above that reads what it needs
    /// straight from the text (the protocol layer reads the envelope) then
    /// parses each line once, not twice. A `parse` error is reported as
    /// [`FrameError::InvalidJson`], so `parse` must accept exactly the
    /// lines whose [`LineText::text`] is one JSON value (serde_json's
    /// `from_str` does).
    pub fn decode_with<T>(
        &mut self,
        buf: &mut BytesMut,
        parse: impl FnOnce(LineText<'_>) -> Result<T, serde_json::Error>,
    ) -> Result<Option<T>, FrameError> {
        loop {
            if self.discarding {
                // The over-long line was already reported; its bytes are worthless.
                match memchr(b'\n', buf) {
                    Some(newline) => {
                        buf.advance(newline + 1);
                        self.discarding = false;
                        self.scanned = 0;
                        self.clean = 0;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
            }

            // `min` only matters if the caller broke the contract and shrank the buffer.
            let from = self.scanned.min(buf.len());
            let Some(newline) = self.find_newline(&buf[..], from) else {
                // The line is already too long: report it now rather than
                // buffer it, but not before its head is in. A layer above
                // finds whom to answer by the envelope there, and under a
                // limit below BAD_LINE_HEAD_LEN a UID may end past what the
                // first read brought.
                if buf.len() > self.max_len && buf.len() >= BAD_LINE_HEAD_LEN {
                    let len = buf.len();
                    self.keep_bad_line_head(buf);
                    buf.clear();
                    self.scanned = 0;
                    self.clean = 0;
                    self.discarding = true;
                    return Err(FrameError::TooLong {
                        len,
                        max: self.max_len,
                    });
                }
                self.scanned = buf.len();
                return Ok(None);
            };

            let clean = std::mem::take(&mut self.clean);
            self.scanned = 0;
            if newline > self.max_len {
                self.keep_bad_line_head(&buf[..newline]);
                buf.advance(newline + 1);
                return Err(FrameError::TooLong {
                    len: newline,
                    max: self.max_len,
                });
            }
            let untrimmed = trim_json_whitespace_end(&buf[..newline]);
            let line = trim_json_whitespace_start(untrimmed);
            if line.is_empty() {
                buf.advance(newline + 1);
                continue;
            }
            let clean = clean.saturating_sub(untrimmed.len() - line.len());
            let message = parse_line(line, clean, parse);
            if message.is_err() {
                // Only on a bad line: a line read costs no copy.
                self.keep_bad_line_head(untrimmed);
            }
            buf.advance(newline + 1);
            return message.map(Some);
        }
    }

    /// The position of the first newline in `buf` at or after `from`, noting in `clean` how
    /// far the line is known to hold no backslash.
    fn find_newline(&mut self, buf: &[u8], from: usize) -> Option<usize> {
        let clean_so_far = self.clean >= from;
        if !clean_so_far {
            return memchr(b'\n', &buf[from..]).map(|at| from + at);
        }
        match memchr2(b'\n', b'\\', &buf[from..]).map(|at| from + at) {
            Some(at) if buf[at] == b'\\' => {
                self.clean = at;
                memchr(b'\n', &buf[at + 1..]).map(|rest| at + 1 + rest)
            }
            found => {
                self.clean = found.unwrap_or(buf.len());
                found
            }
        }
    }

    /// Same, at end of stream: complete lines still decode; once none is left, an unfinished
    /// trailing message (bytes after the last newline) is dropped, buf is cleared, Ok(None);
    /// or `Err(TooLong)` if it was already longer than the limit, as `decode` would have
    /// said had more of it come.
    ///
    /// Node drops such bytes too: they are a message whose sender exited mid-write.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        self.decode_eof_with(buf, |line| parse_message(line.text()))
    }

    /// [`decode_eof`](Self::decode_eof) with a parser, as in
    /// [`decode_with`](Self::decode_with).
    pub fn decode_eof_with<T>(
        &mut self,
        buf: &mut BytesMut,
        parse: impl FnOnce(LineText<'_>) -> Result<T, serde_json::Error>,
    ) -> Result<Option<T>, FrameError> {
        match self.decode_with(buf, parse)? {
            Some(message) => Ok(Some(message)),
            None => {
                // An unfinished line already past the limit is reported as
                // it would have been had more come (`decode_with` waits for
                // a head of BAD_LINE_HEAD_LEN bytes first); a shorter one is
                // dropped, as said.
                let too_long = (buf.len() > self.max_len).then(|| {
                    self.keep_bad_line_head(buf);
                    FrameError::TooLong {
                        len: buf.len(),
                        max: self.max_len,
                    }
                });
                buf.clear();
                self.scanned = 0;
                self.clean = 0;
                self.discarding = false;
                too_long.map_or(Ok(None), Err)
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

/// Parses a line's text into a [`Message`]: the parser of
/// [`FrameDecoder::decode`].
pub fn parse_message(text: &str) -> Result<Message, serde_json::Error> {
    serde_json::from_str(text)
}

/// One line as [`FrameDecoder::decode_with`] hands it to its parser:
/// trimmed, valid UTF-8, in two versions that differ only where the line
/// holds a lone surrogate escape.
#[derive(Debug, Clone, Copy)]
pub struct LineText<'a> {
    text: &'a str,
    as_sent: &'a str,
}

impl<'a> LineText<'a> {
    /// A text with no lone surrogate escape (a [`Message`]'s, say): both
    /// versions are the text.
    pub(crate) fn clean(text: &'a str) -> Self {
        LineText { text, as_sent: text }
    }

    /// The line with each lone surrogate escape rewritten to `\ufffd` (see
    /// the module docs): it parses into `String`-based types.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The line as it came, lone surrogate escapes and all. Both versions
    /// have the same length and differ only inside those escapes, six bytes
    /// either way (`\ud800` and `\ufffd`), so a JSON string found at some
    /// bytes of [`text`](Self::text) is at the same bytes here, as sent: for
    /// a reader that must give a string back exactly as the peer wrote it
    /// (the protocol layer, for the peer's UIDs).
    pub fn as_sent(&self) -> &'a str {
        self.as_sent
    }
}

/// Whether `byte` is JSON whitespace (RFC 8259: space, tab, CR, LF), what
/// `JSON.parse` skips around a value. Not `u8::is_ascii_whitespace`, which also
/// takes form feed: Node's reader throws on a line such as `\x0c1`, so this one
/// must not read it as `1`.
fn is_json_whitespace(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// `line` past the JSON whitespace it starts with (the protocol layer
/// reads the head of a too-long line with it too).
pub(crate) fn trim_json_whitespace_start(mut line: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = line {
        if !is_json_whitespace(first) {
            break;
        }
        line = rest;
    }
    line
}

fn trim_json_whitespace_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., last] = line {
        if !is_json_whitespace(last) {
            break;
        }
        line = rest;
    }
    line
}

/// Parses one trimmed, non-empty line with `parse`, after rewriting its lone
/// surrogate escapes (see the module docs); its first `clean` bytes are
/// known to hold no backslash. Rewriting before the parse is safe on any
/// line: a backslash outside a string makes the line invalid anyway, and the
/// rewrite swaps one well-formed escape for another.
fn parse_line<T>(
    line: &[u8],
    clean: usize,
    parse: impl FnOnce(LineText<'_>) -> Result<T, serde_json::Error>,
) -> Result<T, FrameError> {
    let fixed = replace_lone_surrogates_after(line, clean);
    let bytes = fixed.as_deref().unwrap_or(line);
    // One SIMD pass here lets every parser above read a `&str` (serde_json's
    // string reader then skips its own UTF-8 checks).
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(utf8) => {
            // A line that is not UTF-8 is not JSON. serde_json's RawValue
            // reader checks UTF-8 inside strings too, and says where (the
            // bad byte may also come first as a JSON syntax error).
            let error = serde_json::from_slice::<Message>(bytes).err().unwrap_or_else(|| {
                serde::de::Error::custom(format_args!("invalid UTF-8 at byte {}", utf8.valid_up_to()))
            });
            return Err(invalid_json(&error, line));
        }
    };
    // The rewrite swaps ASCII for ASCII: the line as sent is UTF-8 too (a
    // second look only on the rare line that was rewritten).
    let as_sent = match fixed {
        Some(_) => std::str::from_utf8(line).unwrap_or(text),
        None => text,
    };
    parse(LineText { text, as_sent }).map_err(|error| invalid_json(&error, line))
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
pub(crate) fn replace_lone_surrogates(text: &[u8]) -> Option<Vec<u8>> {
    replace_lone_surrogates_after(text, 0)
}

/// [`replace_lone_surrogates`] for a text whose first `clean` bytes hold no
/// backslash.
fn replace_lone_surrogates_after(text: &[u8], clean: usize) -> Option<Vec<u8>> {
    const REPLACEMENT: &[u8; 6] = b"\\ufffd";
    let mut fixed: Option<Vec<u8>> = None;
    // Bytes of `text` already copied into `fixed`.
    let mut copied = 0;
    let mut pos = clean;
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
pub(crate) fn hex4(text: &[u8], at: usize) -> Option<u16> {
    let digits = text.get(at..at + 4)?;
    digits.iter().try_fold(0u16, |acc, &digit| {
        let value = (digit as char).to_digit(16)?;
        Some((acc << 4) | value as u16)
    })
}

#[cfg(test)]
mod tests;
