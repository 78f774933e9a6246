//! Byte-level tests of the frame layer.

mod against_a_full_scan;
mod decoding;
mod encoding;
mod limits_and_bad_lines;
mod long_lines_small_limits;

use serde_json::Value;

use super::*;

/// For the reference models of the proptests: a result, with the length of
/// a TooLong left out (it depends on where the reads fall).
fn show(result: Result<Message, FrameError>) -> Result<String, String> {
    result.map(|m| m.get().to_owned()).map_err(|e| match e {
        FrameError::TooLong { .. } => "too long".to_owned(),
        e => e.to_string(),
    })
}

/// For the reference models: `line` without the JSON whitespace at its
/// start, as `JSON.parse` skips it (not form feed). Written apart from the
/// decoder's own trimming, which it checks.
fn reference_trim_start(mut line: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = line {
        line = rest;
    }
    line
}

/// [`reference_trim_start`], at the end.
fn reference_trim_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t' | b'\r'] = line {
        line = rest;
    }
    line
}

/// For the proptests: where a stream of `len` bytes is cut into reads, in
/// order, from 0 to `len`.
fn cut_points(points: &[proptest::sample::Index], len: usize) -> Vec<usize> {
    let mut at: Vec<usize> = points.iter().map(|i| i.index(len + 1)).chain([0, len]).collect();
    at.sort();
    at
}

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
fn feed<'a>(max_len: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Result<String, FrameError>> {
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
