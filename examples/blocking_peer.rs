//! A child written with the blocking API (`ipc_request::blocking`): no
//! async code, handlers that are plain functions. It answers the ops of the
//! test peers (`tests/js/peer.js`, `examples/rust_peer.rs`) that a parent's
//! conformance run asks for, so `node tests/js/peer.js parent --
//! target/debug/examples/blocking_peer` checks it:
//!
//! - `{"op":"echo","data":X}` -> X
//! - `{"op":"sleep","ms":N,"data":X}` -> X after N ms (the thread sleeps)
//! - `{"op":"fail","name":S,"message":S,"code":C,"data":D}` -> fails with that error
//! - `{"op":"panic"}` -> the handler panics
//! - `{"op":"wait_cancel","key":K}` -> never answers; remembers K once cancelled
//! - `{"op":"cancelled","key":K}` -> true once K was cancelled (waits up to 2 s), else false
//! - `{"op":"call","data":X}` -> requests X from the parent, from the
//!   handler's thread: `{"got":..}` or `{"error":..}`
//! - `{"op":"plain","messages":[..]}` -> sends each as a plain message, answers the count
//! - anything else -> `{"unknown": payload}`

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use ipc_request::{Error, RemoteError, Request, blocking};
use serde_json::{Value, json};

/// Any JSON value as a request whose answer is any JSON value: a typed
/// call (`Call`) at its loosest.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct AnyValue<'a>(&'a Value);

impl ipc_request::Call for AnyValue<'_> {
    type Answer = Value;
}

/// The keys of `wait_cancel` requests the parent cancelled.
static CANCELLED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static CANCELLED_CHANGED: Condvar = Condvar::new();

fn main() -> ExitCode {
    // The "panic" op panics on purpose: one line on stderr, no backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("blocking_peer: {info}")));
    // SAFETY: this program has no other thread yet that could read the
    // environment, and nothing else here uses the channel's fd.
    let session = match unsafe { blocking::open_from_env(blocking::handler_fn(handle)) } {
        Ok(session) => session,
        Err(e) => {
            eprintln!("blocking_peer: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Serve until the parent disconnects.
    session.closed();
    ExitCode::SUCCESS
}

fn handle(request: Request) -> Result<Value, RemoteError> {
    let payload: Value = request.payload()?;
    match payload.get("op").and_then(Value::as_str).unwrap_or("") {
        "echo" => Ok(payload["data"].clone()),
        "sleep" => {
            std::thread::sleep(Duration::from_millis(payload["ms"].as_u64().unwrap_or(0)));
            Ok(payload["data"].clone())
        }
        // The op's other fields are the error's: name, message, code, data.
        "fail" => Err(serde_json::from_value(payload.clone())
            .unwrap_or_else(|e| RemoteError::new("BadFailOp", e.to_string()))),
        "panic" => panic!("asked to panic"),
        "wait_cancel" => {
            // Wait, as for work of our own, until the parent cancels (or
            // the session closes): the wait ends as the cancel comes.
            blocking::wait_for_cancel(&request, Duration::MAX);
            let key = payload["key"].as_str().unwrap_or("").to_string();
            CANCELLED.lock().unwrap().get_or_insert_default().insert(key);
            CANCELLED_CHANGED.notify_all();
            Err(RemoteError::new("Cancelled", "not sent: the parent cancelled"))
        }
        "cancelled" => {
            let key = payload["key"].as_str().unwrap_or("");
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut cancelled = CANCELLED.lock().unwrap();
            loop {
                if cancelled.as_ref().is_some_and(|keys| keys.contains(key)) {
                    return Ok(json!(true));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(json!(false));
                }
                cancelled = CANCELLED_CHANGED.wait_timeout(cancelled, left).unwrap().0;
            }
        }
        "call" => match blocking::Peer::of(&request).call(&AnyValue(&payload["data"])) {
            Ok(got) => Ok(json!({ "got": got })),
            Err(Error::Remote(e)) => Ok(json!({ "error": *e })),
            Err(e) => Ok(json!({ "error": { "name": "LocalError", "message": e.to_string() } })),
        },
        "plain" => {
            let messages = payload["messages"].as_array().cloned().unwrap_or_default();
            for message in &messages {
                blocking::Peer::of(&request).send(message)?;
            }
            Ok(json!(messages.len()))
        }
        _ => Ok(json!({ "unknown": payload })),
    }
}
