//! Writing: one value to exactly one line of JSON text and one `\n`, or to
//! nothing at all (see "Reading is tolerant, writing is strict" in the
//! [`frame`](super) module's docs). The serializer itself is in `json_writer.rs`; the
//! line it writes into, bounded by the maximum message length, is here.

use std::io;

use memchr::memchr3;

use super::FrameError;
use super::json_writer::JsonWriter;

/// Appends exactly one line for `value` to `out`: its JSON text and one b'\n'. Never writes an
/// empty line or a raw control character (strings are escaped; a debug_assert checks). If the
/// JSON text is longer than `max_len` bytes, or serialization fails, `out` is restored to its
/// previous length (nothing half-written) and an error is returned (TooLong / Encode).
///
/// The text is serde_json's compact text (see `json_writer.rs` for how it is written). A
/// [`RawValue`](serde_json::value::RawValue) embedded in `value` is written verbatim, and may carry whitespace such as a
/// newline between tokens (e.g. one built from pretty-printed JSON): a newline would split the
/// message in two, so tabs, carriage returns and newlines are left out. This is always safe:
/// in a valid JSON text they can only appear between tokens, never raw inside a string.
/// Serialization stops as soon as the text exceeds `max_len`, so the `len` of a
/// [`FrameError::TooLong`] is a lower bound.
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
        failed: None,
        unfinished_calls: 0,
        finished: false,
    };
    let mut result = value.serialize(&mut JsonWriter::new(&mut writer));
    let (too_long, failed, unfinished_calls) = writer.finish();
    // A refused write, or any error inside the value, fails the message even
    // if the value's own Serialize impl ignored the error and went on: what
    // is in `out` is then not the whole value, and maybe not JSON.
    if let Some(len) = too_long {
        out.truncate(start);
        return Err(FrameError::TooLong { len, max: max_len });
    }
    if let (Ok(()), Some(reason)) = (&result, failed) {
        result = Err(serde::ser::Error::custom(reason));
    }
    if result.is_ok() && unfinished_calls != 0 {
        result = Err(serde::ser::Error::custom(
            "a part of the value was left unfinished (a panic inside it, caught)",
        ));
    }
    if let Err(error) = result {
        out.truncate(start);
        return Err(FrameError::Encode {
            reason: error.to_string(),
        });
    }
    if out.len() == value_start {
        // Only a Serialize impl that serializes nothing gets here; an empty
        // text would make an empty line, which stops a Node peer.
        out.truncate(start);
        return Err(FrameError::Encode {
            reason: "the value wrote no JSON at all".into(),
        });
    }
    let len = out.len() - start + suffix.len();
    if len > max_len {
        out.truncate(start);
        return Err(FrameError::TooLong { len, max: max_len });
    }
    out.extend_from_slice(suffix);
    debug_assert!(
        out[start..].iter().all(|&byte| byte >= 0x20),
        "a raw control character in an outgoing message"
    );
    out.push(b'\n');
    Ok(())
}

/// serde_json's compact format, except that the text of an embedded
/// [`RawValue`](serde_json::value::RawValue) is written without its tabs, carriage returns and newlines
/// (see [`encode`]). Nothing else writes these bytes raw, so only raw
/// fragments need the scan: a big string is not scanned a second time.
pub(super) struct LineFormatter;

impl serde_json::ser::Formatter for LineFormatter {
    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // A raw fragment is one valid JSON value. Only an array or an object
        // has room for whitespace; a string holds no raw control character,
        // so a big string payload (echoed as it came) is not scanned.
        if !fragment.starts_with(['[', '{']) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut rest = fragment.as_bytes();
        while let Some(at) = memchr3(b'\n', b'\r', b'\t', rest) {
            writer.write_all(&rest[..at])?;
            rest = &rest[at + 1..];
        }
        writer.write_all(rest)
    }
}

/// Spare room reserved after a big write (at least this long) that grows
/// the line buffer: the closing bytes of a line (quotes, brackets, the envelope's `}`, the
/// newline) and a few small values after a big one.
pub(super) const LINE_TAIL_ROOM: usize = 4096;

/// The writer [`encode`] serializes into: appends to the output and fails once the text would
/// exceed the maximum length (so a huge value is not serialized in full only to be refused).
pub(super) struct LineWriter<'a> {
    pub(super) out: &'a mut Vec<u8>,
    /// Length of `out` before this message.
    pub(super) start: usize,
    pub(super) max_len: usize,
    /// Set when a write was refused for length: the length the text would have had.
    pub(super) too_long: Option<usize>,
    /// The first error inside the value, noted where a `Serialize` impl
    /// could ignore it and go on (see `json_writer.rs`).
    pub(super) failed: Option<String>,
    /// Calls into the value's compounds begun and not yet returned: not 0
    /// at the end only if a panic inside one was caught (`json_writer.rs`).
    pub(super) unfinished_calls: usize,
    /// Set by [`finish`](Self::finish); until then a drop (a panic in the
    /// value, unwinding through `encode`) takes the half-written line out.
    pub(super) finished: bool,
}

impl LineWriter<'_> {
    /// What the serialization left to judge: the length refused, the
    /// first error, the calls left unfinished.
    #[inline]
    fn finish(mut self) -> (Option<usize>, Option<String>, usize) {
        self.finished = true;
        (self.too_long, self.failed.take(), self.unfinished_calls)
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.out.truncate(self.start);
        }
    }
}

impl LineWriter<'_> {
    #[inline]
    pub(super) fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.make_room(bytes.len())?;
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// Fails if what was written so far is past the maximum length (for
    /// writers that append to `out` directly, then check).
    #[inline]
    pub(super) fn check_len(&mut self) -> io::Result<()> {
        self.make_room(0)
    }

    /// Checks that `more` bytes keep the text within the maximum length,
    /// and makes room for them.
    #[inline]
    pub(super) fn make_room(&mut self, more: usize) -> io::Result<()> {
        let len = self.out.len() - self.start + more;
        if len > self.max_len {
            self.too_long = Some(len);
            return Err(io::Error::other("message exceeds the maximum length"));
        }
        if more >= LINE_TAIL_ROOM && more > self.out.capacity() - self.out.len() {
            // A big write (a large string) is usually followed by a
            // few closing bytes. Left to `Vec`'s own growth, the buffer is
            // sized to fit exactly, and the closing quote then doubles it:
            // a copy of the whole line into fresh pages (measured on a
            // 16 MiB echo). Room for the rest of the line avoids that.
            self.out.reserve(more + LINE_TAIL_ROOM);
        }
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

// Byte by byte, against what Node writes and accepts.
