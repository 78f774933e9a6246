//! Our side of a round: its settings (small, random limits, so that
//! refusals, back-pressure and too-long lines happen), the handler that
//! serves the peer's requests in every way a handler may end, and the calls
//! we make of the peer meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::rng::Rng;
use ipc_request::{ChannelConfig, Error, RemoteError, Request, Responder, SessionConfig, responder_fn};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::common;

/// The message of the handler's own panics, which the panic hook lets by.
pub const HANDLER_PANIC: &str = "intended handler panic";

/// How the round is set up and how the peer ends it, all from the seed.
#[derive(Debug)]
pub struct RoundSettings {
    pub channel: ChannelConfig,
    pub session: SessionConfig,
    pub keep_plain_messages: bool,
    pub take_messages: bool,
    /// A Unix socket pair, or else `tokio::io::duplex` of this capacity.
    pub duplex_capacity: Option<usize>,
    /// The peer stops reading after this many bytes.
    pub stop_reading_after: Option<usize>,
    pub opening_steps: u64,
    pub main_steps: u64,
    /// The peer answers all of our requests and waits for its answers
    /// before it goes (if it still reads and its writes went through).
    pub waits_for_answers: bool,
    pub ending: Ending,
}

/// How the peer goes at the end of the round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ending {
    /// Shuts down its writing half and goes on reading.
    HalfClose,
    /// Shuts down its writing half, then stops reading 100 ms later.
    HalfCloseThenLeave,
    /// Drops both halves at once.
    Leave,
}

impl RoundSettings {
    pub fn from_seed(seed: u64) -> RoundSettings {
        let mut rng = Rng::new(seed ^ 0x5e77_1295);
        let max_message_len = match rng.below(3) {
            0 => 600 + rng.below(4000) as usize,
            1 => 64 * 1024,
            _ => ipc_request::frame::DEFAULT_MAX_MESSAGE_LEN,
        };
        let write_queue_bytes = match rng.below(3) {
            0 => 256 + rng.below(4096) as usize,
            _ => 1 << 20,
        };
        let session = SessionConfig {
            // Short: a round whose peer never answers our handshake costs
            // this much wall time.
            handshake_timeout: Duration::from_millis(1000),
            request_timeout: (rng.below(4) == 0).then(|| Duration::from_millis(200 + rng.below(800))),
            max_in_flight: 1 + rng.below(20) as usize,
            max_concurrent_handlers: 1 + rng.below(4) as usize,
            max_queued_requests: 1 + rng.below(8) as usize,
            max_queued_request_bytes: 64 + rng.below(10_000) as usize,
            max_unwritten_refusal_bytes: 200 + rng.below(20_000) as usize,
            exit_grace: Duration::from_millis(50),
            message_buffer: 1 + rng.below(8) as usize,
            message_buffer_bytes: 16 + rng.below(10_000) as usize,
        };
        let keep_plain_messages = rng.below(4) == 0;
        let take_messages = rng.below(if keep_plain_messages { 5 } else { 3 }) != 0;
        RoundSettings {
            channel: ChannelConfig {
                max_message_len,
                write_queue_bytes,
            },
            session,
            keep_plain_messages,
            take_messages,
            duplex_capacity: (rng.below(2) == 0).then(|| 64 + rng.below(70_000) as usize),
            stop_reading_after: (rng.below(6) == 0).then(|| rng.below(3000) as usize),
            opening_steps: 5 + rng.below(60),
            main_steps: rng.below(80),
            waits_for_answers: rng.below(2) == 0,
            ending: [Ending::HalfClose, Ending::HalfCloseThenLeave, Ending::Leave][rng.below(3) as usize],
        }
    }

    /// Plain messages kept for a stream nobody reads hold our reader up
    /// for good (documented: `SessionBuilder::keep_plain_messages`): only
    /// the peer's hang-up, seen on a Unix socket, ends such a session.
    pub fn holds_its_reader_up(&self) -> bool {
        self.keep_plain_messages && !self.take_messages
    }
}

/// How many behaviours the handler has (`op` in a request's payload).
pub const HANDLER_OPS: u64 = 11;

/// Our handler. By the payload's `op`: 0 echoes; 1 fails with control
/// characters and U+2028 in its error; 2 panics; 3 drops its responder; 4
/// sleeps `ms`, then echoes; 5 answers or drops its responder from a task
/// of its own after `ms`; 6 answers twice (the second must fail); 7 calls
/// the peer back first; 8 races its cancel against a sleep; 9 answers past
/// the channel's longest line; 10 drops its request, then fails with empty
/// name and message.
pub fn handler(max_message_len: usize) -> ipc_request::Handler {
    responder_fn(move |req: Request, responder: Responder| async move {
        let p: Value = req.payload().unwrap_or(Value::Null);
        let ms = p["ms"].as_u64().unwrap_or(0);
        match p["op"].as_u64().unwrap_or(0) {
            0 => drop(responder.respond(&p).await),
            1 => {
                let error = RemoteError::new("Bad\u{2028}", "failed \u{0}\u{1f}")
                    .with_code(json!({"x": 1}))
                    .with_data(json!([p]));
                drop(responder.fail(error).await)
            }
            2 => panic!("{HANDLER_PANIC}"),
            3 => drop(responder),
            4 => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                drop(responder.respond(&p).await)
            }
            5 => drop(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if ms % 2 == 0 {
                    let _ = responder.respond(&json!("later")).await;
                }
            })),
            6 => {
                let _ = responder.respond(&1).await;
                match responder.respond(&2).await {
                    Err(Error::AlreadyAnswered | Error::Closed(_) | Error::Cancelled) => {}
                    // Not HANDLER_PANIC: the hook counts it as a failure.
                    other => panic!("a second answer was taken: {other:?}"),
                }
            }
            7 => {
                let (session, callback) = (req.session(), json!({ "callback": p["id"] }));
                let back = session
                    .request_raw_timeout(&callback, Duration::from_millis(300))
                    .await;
                let back = back.map(|answer| answer.get().len());
                drop(responder.respond(&format!("{back:?}")).await)
            }
            8 => tokio::select! {
                _ = req.cancelled() => drop(responder.respond(&"cancelled").await),
                _ = tokio::time::sleep(Duration::from_millis(ms * 3)) => drop(responder.respond(&"slept").await),
            },
            9 => {
                let len = if max_message_len <= 65536 {
                    max_message_len + 10
                } else {
                    1000
                };
                drop(responder.respond(&"x".repeat(len)).await)
            }
            _ => {
                drop(req);
                drop(responder.fail(RemoteError::new("", "")).await)
            }
        }
    })
}

/// Our calls of the peer, each ending with how it ended: "ok", a kind of
/// error, or a problem (starting with "PROBLEM").
pub type OurCalls = Arc<Mutex<Vec<JoinHandle<String>>>>;

/// Starts 1 to 4 calls of the peer: requests (with or without a deadline,
/// some given up by their caller) and plain messages.
pub fn start_our_calls(session: &ipc_request::Session, rng: &mut Rng, calls: &OurCalls) {
    for _ in 0..1 + rng.below(4) {
        let session = session.clone();
        let (how, ms, k) = (rng.below(5), rng.below(300), rng.below(1_000_000));
        let call = tokio::spawn(async move {
            let payload = json!({ "k": k });
            let result = match how {
                0 | 1 => session.request_raw(&payload).await,
                2 => {
                    session
                        .request_raw_timeout(&payload, Duration::from_millis(ms + 1))
                        .await
                }
                3 => match tokio::time::timeout(Duration::from_millis(ms), session.request_raw(&payload))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => return "given up".into(),
                },
                _ => {
                    return session
                        .send(&json!({ "plain": k }))
                        .await
                        .map_or_else(error_kind, |()| "sent".into());
                }
            };
            match result {
                // The peer answers our requests with {"answer_to": payload},
                // its failures too (what they mean to a 1.0 session).
                Ok(answer) => match serde_json::from_str::<Value>(answer.get()) {
                    Ok(v) if v["answer_to"] == payload => "ok".into(),
                    _ => format!("PROBLEM: asked {payload}, got the answer {}", answer.get()),
                },
                Err(e) => error_kind(e),
            }
        });
        calls.lock().unwrap().push(call);
    }
}

/// The name of a typed error a call of ours may end with, or a problem.
fn error_kind(e: Error) -> String {
    match e {
        Error::Remote(_) => "remote".into(),
        Error::Closed(_) => "closed".into(),
        Error::Timeout(_) => "timeout".into(),
        // The peer's answer was too long, or not JSON.
        Error::Frame(_) => "broken answer".into(),
        other => format!("PROBLEM: a call of ours ended with {other:?}"),
    }
}
