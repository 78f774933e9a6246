//! The peer's reader: takes what our session writes, line by line, and
//! checks each line as a Node peer would read it. Node splits its channel
//! on `\n` and `JSON.parse`s each piece; a piece that does not parse kills
//! the channel, and an object whose `cmd` starts with `NODE_` is taken as
//! Node's own message and never reaches the program. So every line we
//! write must be one UTF-8 JSON text ended by `\n`, and the only `NODE_`
//! message we may write is the `NODE_HANDLE_NACK` that refuses a handle.
//!
//! It also keeps what the round's end checks need: our requests (for the
//! peer to answer), how many times each UID of the peer's was answered,
//! how many NACKs came.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::UnboundedSender;

/// What the peer's reader saw us write, and what was wrong with it.
#[derive(Default)]
pub struct WhatWeWrote {
    pub lines: usize,
    /// Our requests, in order: their UIDs and payloads.
    pub our_requests: Vec<(String, Value)>,
    /// Our answers (and failures), by the peer's UID as JSON text.
    pub answers: HashMap<String, usize>,
    pub nacks: usize,
    /// The UID of our handshake request, once it came.
    pub handshake_uid: Option<String>,
    pub problems: Vec<String>,
}

impl WhatWeWrote {
    /// Takes one line (without its `\n`) we wrote.
    fn take_line(&mut self, line: &[u8]) {
        self.lines += 1;
        let Ok(text) = std::str::from_utf8(line) else {
            let text = String::from_utf8_lossy(line);
            return self.problems.push(format!("we wrote invalid UTF-8: {text:.300}"));
        };
        if text.trim().is_empty() {
            return self.problems.push("we wrote an empty line".into());
        }
        let message: Value = match serde_json::from_str(&lone_surrogates_replaced(text)) {
            Ok(message) => message,
            Err(e) => {
                return self
                    .problems
                    .push(format!("we wrote a line that is not JSON ({e}): {text:.300}"));
            }
        };
        self.take_message(text, &message);
    }

    fn take_message(&mut self, text: &str, message: &Value) {
        // Node's test (lib/internal/child_process.js): a string `cmd`
        // longer than the prefix, starting with it.
        let cmd = message.get("cmd").and_then(Value::as_str);
        if let Some(cmd) = cmd.filter(|c| c.len() > 5 && c.starts_with("NODE_")) {
            if cmd == "NODE_HANDLE_NACK" {
                self.nacks += 1;
            } else {
                self.problems
                    .push(format!("we wrote Node's own message: {text:.300}"));
            }
        }
        if message["_IPC_REQUEST/HANDSHAKE_MSG_TYPE"] == "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST" {
            if self.handshake_uid.is_some() {
                self.problems.push("we sent a second handshake request".into());
            }
            self.handshake_uid = message["_IPC_REQUEST/HANDSHAKE_UID"].as_str().map(str::to_string);
        }
        let kind = message.get("_IPC_REQUEST/MSG_TYPE").and_then(Value::as_str);
        match (kind, message.get("_IPC_REQUEST/REQUEST_UID")) {
            (Some("_IPC_REQUEST/MSG_TYPE:REQUEST"), Some(Value::String(uid))) => {
                let payload = message["_IPC_REQUEST/PAYLOAD"].clone();
                self.our_requests.push((uid.clone(), payload));
            }
            (Some("_IPC_REQUEST/MSG_TYPE:RESPONSE"), Some(_)) => match uid_text(text) {
                Some(uid) => *self.answers.entry(uid).or_default() += 1,
                None => self
                    .problems
                    .push(format!("an answer of ours without a string UID: {text:.300}")),
            },
            _ => {}
        }
    }
}

/// Reads what we write until the stream ends, checking each line into
/// `seen` and saying so on `news`. With `stop_after`, stops reading once
/// that many bytes came, holding its end open: a peer that reads no more.
pub async fn read_what_we_write(
    mut ours: impl AsyncRead + Unpin,
    seen: Arc<Mutex<WhatWeWrote>>,
    stop_after: Option<usize>,
    news: UnboundedSender<()>,
) {
    let mut unread = Vec::new();
    let mut chunk = vec![0u8; 8192];
    let mut total = 0usize;
    loop {
        if stop_after.is_some_and(|n| total >= n) {
            std::future::pending::<()>().await;
        }
        let n = match ours.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n;
        unread.extend_from_slice(&chunk[..n]);
        while let Some(at) = memchr_newline(&unread) {
            let line: Vec<u8> = unread.drain(..=at).collect();
            seen.lock().unwrap().take_line(&line[..line.len() - 1]);
            let _ = news.send(());
        }
    }
    if !unread.is_empty() {
        let text = String::from_utf8_lossy(&unread);
        seen.lock()
            .unwrap()
            .problems
            .push(format!("our last line has no newline: {text:.200}"));
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// `text` with each lone surrogate escape (`\ud800` alone) replaced by
/// `\ufffd`: `JSON.parse` takes lone surrogates, serde_json does not, and
/// our session writes back a peer's UID as it came, lone surrogates too.
fn lone_surrogates_replaced(text: &str) -> String {
    let bytes = text.as_bytes();
    let code_unit = |at: usize| -> Option<u32> {
        let hex = bytes.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let is_escape_at = |at: usize| bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'u');
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        // An escape: `\` and one more byte, or `\uXXXX` (and a pair).
        let unit = is_escape_at(i).then(|| code_unit(i + 2)).flatten();
        match unit {
            Some(0xD800..=0xDBFF) => {
                let low = is_escape_at(i + 6).then(|| code_unit(i + 8)).flatten();
                if matches!(low, Some(0xDC00..=0xDFFF)) {
                    out.push_str(&text[i..i + 12]);
                    i += 12;
                } else {
                    out.push_str("\\ufffd");
                    i += 6;
                }
            }
            Some(0xDC00..=0xDFFF) => {
                out.push_str("\\ufffd");
                i += 6;
            }
            _ => {
                out.push_str(&text[i..i + 2]);
                i += 2;
            }
        }
    }
    out
}

/// The text between the quotes of the answer's REQUEST_UID, as written.
fn uid_text(line: &str) -> Option<String> {
    let key = "\"_IPC_REQUEST/REQUEST_UID\":\"";
    let rest = &line[line.find(key)? + key.len()..];
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(rest[..i].to_string()),
            _ => i += 1,
        }
    }
    None
}
