//! Escaping strings as serde_json does, found many bytes at a time: the
//! part of the writer that echoing a large string spends its time in (see
//! the parent module's docs).

use std::io;

use crate::frame::writing::LineWriter;

/// `"text"` with what JSON requires escaped, as serde_json escapes it: `"`,
/// `\` and the control characters below U+0020 (`\b \t \n \f \r` by name,
/// the others as `\u00XX` in lower case). Nothing else is escaped: U+2028,
/// U+007F and non-ASCII text travel raw, as JSON.stringify writes them
/// (PROTOCOL.md 1.2). A Rust `str` holds no lone surrogate, so none can be
/// written.
pub(super) fn write_escaped(writer: &mut LineWriter<'_>, text: &str) -> io::Result<()> {
    let bytes = text.as_bytes();
    // Room for the text as it is, quoted; its escapes may grow it. Made
    // first, so that a text too long is refused before it is scanned.
    writer.make_room(bytes.len() + 2)?;
    // The common case, nothing to escape: that one length check, three
    // copies.
    let Some(mut at) = find_escape(bytes, 0) else {
        let out = &mut *writer.out;
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return Ok(());
    };
    // The pieces go straight into the line, and only a comparison per
    // escape watches the maximum length: a check and a call per piece made
    // text with an escape every few dozen bytes slower than serde_json.
    let limit = writer.start.saturating_add(writer.max_len);
    let out = &mut *writer.out;
    out.push(b'"');
    // Written up to `run`; `at` is the next byte to escape.
    let mut run = 0;
    loop {
        out.extend_from_slice(&bytes[run..at]);
        run = at;
        while let Some(&byte) = bytes.get(run).filter(|&&byte| needs_escape(byte)) {
            if out.len() > limit {
                // Too long already: stop here, check_len says so.
                return writer.check_len();
            }
            escape(byte, out);
            run += 1;
        }
        match find_escape(bytes, run) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
    writer.check_len()
}

pub(crate) fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Appends the escape of `byte` (one that [`needs_escape`]).
pub(crate) fn escape(byte: u8, out: &mut Vec<u8>) {
    let named = match byte {
        b'"' | b'\\' => byte,
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let (high, low) = (HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]);
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', named]);
}

/// Where the first byte at or after `from` that needs escaping is.
fn find_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    // First a block at a time, in a loop the compiler turns into vector
    // compares (SSE2 on any x86_64): a long text without escapes costs 0.8
    // instructions per byte, where the word test below costs 2.5
    // (callgrind, `bench count big`). The word test then finds the byte in
    // the block that has one.
    const BLOCK: usize = 64;
    while let Some(block) = bytes.get(at..at + BLOCK) {
        let block: &[u8; BLOCK] = block.try_into().expect("a block");
        let needs = block.iter().fold(0u8, |any, &b| any | u8::from(needs_escape(b)));
        if needs != 0 {
            break;
        }
        at += BLOCK;
    }
    // Eight bytes at a time while there are eight.
    while let Some(word) = bytes.get(at..at + 8) {
        let flags = escape_flags(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        if flags != 0 {
            // Little-endian: the lowest flag is the first byte in the text.
            return Some(at + flags.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    // The last few: padded with spaces, which need no escaping.
    let tail = &bytes[at..];
    if tail.is_empty() {
        return None;
    }
    let mut word = [b' '; 8];
    word[..tail.len()].copy_from_slice(tail);
    let flags = escape_flags(u64::from_le_bytes(word));
    (flags != 0).then(|| at + flags.trailing_zeros() as usize / 8)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that is below 0x20, a `"` or a `\`
/// (and maybe of bytes after one that is). The classic "has a byte less
/// than n" and "has a zero byte" tests: a borrow can only carry upwards,
/// into bytes that come later in the text, so the lowest flag always marks
/// a byte that really matches.
fn escape_flags(word: u64) -> u64 {
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    (below_space | quote | backslash) & HIGHS
}
