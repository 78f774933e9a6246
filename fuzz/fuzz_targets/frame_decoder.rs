//! Fuzzes `FrameDecoder` with arbitrary bytes cut into arbitrary reads.
//!
//! Input layout: the first byte says how many of the following bytes are chunk sizes (0 to
//! 15); each size byte `s` gives a read of `s + 1` bytes, cycling through the sizes. With no
//! size byte the whole rest arrives in one read. Checks:
//! - no panic;
//! - after every `decode` call the buffer holds at most `MAX_LEN` plus the bytes just
//!   appended, and at most `MAX_LEN` once the decoder asks for more;
//! - every decoded message is one trimmed line within `MAX_LEN`, without lone surrogates
//!   (it parses as a `serde_json::Value` unless it hits serde_json's own depth or number
//!   limits), and `encode` then `decode` gives back the same text (minus tabs and carriage
//!   returns between tokens, which `encode` drops).

#![no_main]

use bytes::BytesMut;
use ipc_request::frame::{FrameDecoder, FrameError, Message, encode};
use libfuzzer_sys::fuzz_target;

const MAX_LEN: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 16).min(rest.len());
    let (sizes, mut stream) = rest.split_at(count);

    let mut decoder = FrameDecoder::new(MAX_LEN);
    let mut buf = BytesMut::new();
    let mut next_size = sizes.iter().cycle();
    while !stream.is_empty() {
        let size = next_size
            .next()
            .map_or(stream.len(), |&s| usize::from(s) + 1)
            .min(stream.len());
        let (chunk, tail) = stream.split_at(size);
        stream = tail;
        buf.extend_from_slice(chunk);
        loop {
            let result = decoder.decode(&mut buf);
            assert!(
                buf.len() <= MAX_LEN + chunk.len(),
                "buffer of {} bytes after a read of {}",
                buf.len(),
                chunk.len()
            );
            match result {
                Ok(Some(message)) => check(&message),
                Ok(None) => break,
                Err(error) => check_error(&error),
            }
        }
        assert!(buf.len() <= MAX_LEN, "{} bytes left between reads", buf.len());
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(message)) => check(&message),
            Ok(None) => break,
            Err(error) => check_error(&error),
        }
    }
    assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
});

fn check_error(error: &FrameError) {
    match error {
        FrameError::TooLong { len, max } => assert!(*max == MAX_LEN && *len > MAX_LEN),
        FrameError::InvalidJson { snippet, .. } => assert!(snippet.chars().count() <= 64),
        _ => panic!("the decoder returned {error:?}"),
    }
}

fn check(message: &Message) {
    let text = message.get();
    assert!(!text.is_empty() && text.len() <= MAX_LEN);
    assert_eq!(text.trim_ascii(), text);
    assert!(!text.contains('\n'));
    if let Err(error) = serde_json::from_str::<serde_json::Value>(text) {
        let reason = error.to_string();
        assert!(
            reason.contains("recursion limit") || reason.contains("number out of range"),
            "decoded message does not parse as a Value: {reason}: {text:?}"
        );
    }

    let mut line = Vec::new();
    encode(message, MAX_LEN, &mut line).expect("a decoded message re-encodes");
    assert_eq!(line.last(), Some(&b'\n'));
    let mut again = BytesMut::from(&line[..]);
    let mut decoder = FrameDecoder::new(MAX_LEN);
    let decoded = decoder
        .decode(&mut again)
        .expect("a re-encoded message decodes")
        .expect("a re-encoded message is complete");
    let squeezed: String = text.chars().filter(|c| !matches!(c, '\t' | '\r')).collect();
    assert_eq!(decoded.get(), squeezed);
    assert!(again.is_empty());
    assert!(decoder.decode_eof(&mut again).unwrap().is_none());
}
