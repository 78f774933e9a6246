//! The peer's script: what it writes next, drawn from its own generator,
//! and the book of what it may expect back.
//!
//! The draws never depend on timing (on what our side wrote so far), so a
//! seed gives the same script every run; only which of our requests an
//! answer goes to, and whether a write went through to a session that
//! stopped reading, depend on the run. The book says which of the peer's
//! requests must be answered exactly once: every request the session could
//! know, by its UID, the peer did not cancel and whose UID it did not use
//! twice (a reused UID may be answered once or twice, by design).

use std::collections::HashSet;

use common::rng::Rng;
use serde_json::{Value, json};

use crate::common;
use crate::lines;

/// One step of the script.
pub enum Move {
    /// Bytes to write (whole lines, unless a line is meant to be broken).
    Write(Vec<u8>),
    Sleep(u64),
}

/// The peer: its script's generator and its book.
pub struct Peer {
    rng: Rng,
    max_message_len: usize,
    /// Numbers the UIDs of the peer's requests, so that they are unique.
    fresh: u64,
    handshake_answered: bool,
    /// UIDs of the peer's requests that may be running (cancel and reuse
    /// targets).
    sent_uids: Vec<String>,
    /// UIDs (JSON text) of requests that must be answered exactly once.
    expects_answer: HashSet<String>,
    /// UIDs cancelled or used twice: they may go unanswered.
    spoiled: HashSet<String>,
    /// UIDs used twice: they may be answered twice (once per request).
    pub reused: HashSet<String>,
    /// Our requests the peer answered (or broke an answer to).
    answered_ours: HashSet<String>,
    /// `NODE_HANDLE`s sent: each may be NACKed once.
    pub handles_offered: usize,
    /// The lines written, for `HOSTILE_VERBOSE`.
    pub written: Vec<String>,
}

impl Peer {
    pub fn new(seed: u64, max_message_len: usize) -> Peer {
        Peer {
            rng: Rng::new(seed ^ 0x9ee7),
            max_message_len,
            fresh: 0,
            handshake_answered: false,
            sent_uids: Vec::new(),
            expects_answer: HashSet::new(),
            spoiled: HashSet::new(),
            reused: HashSet::new(),
            answered_ours: HashSet::new(),
            handles_offered: 0,
            written: Vec::new(),
        }
    }

    /// Whether our side starts calls before this step of the main part.
    pub fn our_side_calls_now(&mut self) -> bool {
        self.rng.below(3) == 0
    }

    /// A step of the opening, around the handshake: handshake answers
    /// (some to the wrong UID), handshake requests, requests, odd UIDs,
    /// cancels, Node's messages, plain and broken lines.
    pub fn opening_step(&mut self, step: u64, our_handshake_uid: &str) -> Move {
        let line = match self.rng.below(26) {
            0..=2 if !self.handshake_answered || self.rng.below(4) == 0 => {
                self.handshake_answered = true;
                let uid = match self.rng.below(8) {
                    0 | 1 => "\"not-yours\"".into(),
                    2 => "5".into(),
                    _ => format!("\"{our_handshake_uid}\""),
                };
                lines::handshake(&uid, "RESPONSE", lines::odd_extensions(&mut self.rng).as_deref())
            }
            3 => {
                let extensions = lines::odd_extensions(&mut self.rng);
                let uid = match self.rng.below(4) {
                    0 => "7".to_string(),
                    1 => "{}".to_string(),
                    _ => format!("\"{}\"", lines::odd_uid(&mut self.rng, 9000 + step)),
                };
                lines::handshake(&uid, "REQUEST", extensions.as_deref())
            }
            4..=9 => self.request(),
            10 if !self.sent_uids.is_empty() => {
                let uid = self.pick_sent_uid();
                self.spoiled.insert(uid.clone());
                self.reused.insert(uid.clone());
                lines::request(&uid, &lines::handler_op_payload(&mut self.rng, 0))
            }
            11 => lines::request_with_uid_value(self.rng.pick(&["12", "{\"a\":1}", "null", "[\"x\"]"])),
            12 => {
                let uid = self.rng.pick(&[
                    "\"999999\"",
                    "\"01\"",
                    "\"-1\"",
                    "5",
                    "\"18446744073709551616\"",
                    "\"\\ud800\"",
                ]);
                match self.rng.below(2) {
                    0 => lines::response(uid, "1"),
                    _ => lines::error(uid, "null", &lines::odd_error(&mut self.rng)),
                }
            }
            13 => self.cancel(),
            14 => self.node_message(),
            15..=17 => self.plain_line(),
            18..=20 => return Move::Write(self.broken_line()),
            21 if self.max_message_len <= 65536 => {
                // Too long: refused (RequestTooLong), so still answered once.
                self.fresh += 1;
                let uid = format!("long{}", self.fresh);
                self.expects_answer.insert(uid.clone());
                lines::request(&uid, &format!("\"{}\"", "z".repeat(self.max_message_len + 1)))
            }
            _ => return Move::Sleep(self.rng.below(30)),
        };
        Move::Write(self.ended(line))
    }

    /// A step of the main part, our side calling meanwhile: answers to our
    /// requests (some failures, some broken), requests, cancels, late
    /// handshakes, handles.
    pub fn main_step(&mut self, our_requests: &[(String, Value)]) -> Move {
        let line = match self.rng.below(12) {
            0..=4 => {
                // Drawn whether or not there is a request of ours to
                // answer, so that the draws stay the same run to run.
                let (pick, how) = (self.rng.next(), self.rng.below(6));
                let error = lines::odd_error(&mut self.rng);
                let end = self.line_end();
                let Some(ours) = pick_from(our_requests, pick) else {
                    return Move::Sleep(0);
                };
                let mut line = self.answer_to_ours(ours, how, error).into_bytes();
                line.extend_from_slice(end);
                return Move::Write(line);
            }
            5..=7 => self.request(),
            8 => self.cancel(),
            9 => lines::handshake(
                "\"late\"",
                "REQUEST",
                lines::odd_extensions(&mut self.rng).as_deref(),
            ),
            10 => {
                self.handles_offered += 1;
                "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":1}".into()
            }
            _ => return Move::Sleep(self.rng.below(20)),
        };
        Move::Write(self.ended(line))
    }

    /// Answers to every request of ours not answered yet, as the peer's
    /// last lines before it waits for its own answers.
    pub fn answers_to_the_rest(&mut self, our_requests: &[(String, Value)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (uid, payload) in our_requests {
            if self.answered_ours.insert(uid.clone()) {
                let line = lines::response(
                    &format!("\"{uid}\""),
                    &json!({ "answer_to": payload }).to_string(),
                );
                bytes.extend_from_slice(line.as_bytes());
                bytes.push(b'\n');
            }
        }
        bytes
    }

    /// The peer's requests that must have been answered once.
    pub fn must_be_answered(&self) -> impl Iterator<Item = &String> {
        self.expects_answer
            .iter()
            .filter(|uid| !self.spoiled.contains(*uid))
    }

    /// `line` with its end: `\n`, one time in ten `\r\n`.
    fn ended(&mut self, line: String) -> Vec<u8> {
        let mut bytes = line.into_bytes();
        bytes.extend_from_slice(self.line_end());
        bytes
    }

    fn line_end(&mut self) -> &'static [u8] {
        if self.rng.below(10) == 0 { b"\r\n" } else { b"\n" }
    }

    fn pick_sent_uid(&mut self) -> String {
        let pick = self.rng.next();
        pick_from(&self.sent_uids, pick).unwrap().clone()
    }

    /// A request with a fresh odd UID, for an op of our handler.
    fn request(&mut self) -> String {
        self.fresh += 1;
        let uid = lines::odd_uid(&mut self.rng, self.fresh);
        let line = lines::request(&uid, &lines::handler_op_payload(&mut self.rng, self.fresh));
        // A line past the longest is refused unread: answered only if its
        // UID is in the first 4 KiB, where the session looks for it
        // (README, "max message length"). +2: the end may be "\r\n".
        if line.len() + 2 <= self.max_message_len || uid.len() < 3500 {
            self.expects_answer.insert(uid.clone());
        }
        if line.len() < self.max_message_len {
            self.sent_uids.push(uid);
        }
        line
    }

    /// A cancel: of a request sent (no longer expected to be answered), or
    /// of a UID never used.
    fn cancel(&mut self) -> String {
        if !self.sent_uids.is_empty() && self.rng.below(2) == 0 {
            let uid = self.pick_sent_uid();
            self.spoiled.insert(uid.clone());
            lines::cancel(&uid)
        } else {
            lines::cancel("unknown-uid")
        }
    }

    /// One of Node's own messages: handles (plain and with the key escaped,
    /// which Node's parser reads alike), and others, which need no answer.
    fn node_message(&mut self) -> String {
        let (line, is_a_handle) = match self.rng.below(6) {
            0 | 1 => (
                "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{\"x\":1}}",
                true,
            ),
            2 => ("{\"cmd\":\"NODE_HANDLE_ACK\"}", false),
            3 => ("{\"cmd\":\"NODE_HANDLE_NACK\"}", false),
            4 => ("{\"cmd\":\"NODE_\"}", false),
            _ => ("{\"type\":\"x\",\"\\u0063md\":\"NODE_HANDLE\"}", true),
        };
        self.handles_offered += usize::from(is_a_handle);
        line.into()
    }

    /// A plain message, odd or not, or a line that looks like a request
    /// but is not one.
    fn plain_line(&mut self) -> String {
        match self.rng.below(8) {
            0 => "\"plain\"".into(),
            1 => "123".into(),
            2 => lines::nested(self.rng.below(300) as usize),
            3 => "{\"a\":\"\\ud800\u{2028}\"}".into(),
            4 => "null".into(),
            5 => {
                let len = self.rng.below(self.max_message_len.min(100_000) as u64 + 100) as usize;
                format!("\"{}\"", "y".repeat(len))
            }
            6 => "{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:REQUEST\"}".into(),
            _ => {
                "{\"_IPC_REQUEST/MSG_TYPE\":5,\"_IPC_REQUEST/REQUEST_UID\":\"z\",\"_IPC_REQUEST/PAYLOAD\":1}"
                    .into()
            }
        }
    }

    /// Lines no JSON reader takes: empty, `\r` only, invalid UTF-8, control
    /// characters, a request whose payload does not parse (which is still
    /// answered: its UID was read).
    fn broken_line(&mut self) -> Vec<u8> {
        match self.rng.below(8) {
            0 => b"\n".to_vec(),
            1 => b"   \r\n".to_vec(),
            2 => b"{\"a\":1}\r\n".to_vec(),
            3 => b"\xff\xfe{\n".to_vec(),
            4 => b"not json\n".to_vec(),
            5 => b"{\"a\":\"x\x01y\"}\n".to_vec(),
            6 => b"  \"\xe2\x80\xa8\"  \n".to_vec(),
            _ => {
                self.fresh += 1;
                let uid = format!("bad{}", self.fresh);
                self.expects_answer.insert(uid.clone());
                let line = lines::request(&uid, "[1,");
                format!("{line}\n").into_bytes()
            }
        }
    }

    /// An answer to our request `ours`: its payload echoed (what our calls
    /// check), a failure, or (`how` 1) a line that is too long or does not
    /// parse, which our call must see fail.
    fn answer_to_ours(&mut self, ours: &(String, Value), how: u64, error: String) -> String {
        let (uid, payload) = ours;
        self.answered_ours.insert(uid.clone());
        let uid = format!("\"{uid}\"");
        let echo = json!({ "answer_to": payload }).to_string();
        match how {
            0 => lines::error(&uid, &echo, &error),
            1 if self.max_message_len <= 65536 => {
                lines::response(&uid, &format!("\"{}", "x".repeat(self.max_message_len + 5)))
            }
            1 => lines::response(&uid, "[}"),
            _ => lines::response(&uid, &echo),
        }
    }
}

fn pick_from<T>(xs: &[T], pick: u64) -> Option<&T> {
    (!xs.is_empty()).then(|| &xs[(pick % xs.len() as u64) as usize])
}
