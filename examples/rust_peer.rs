//! A scriptable peer for the integration tests (the Rust twin of
//! `tests/js/peer.js`, with the same request ops), and a handy echo child.
//!
//! `rust_peer [--no-session] [--exit-before-handshake N] [--handshake-delay MS]`
//!
//! Request payloads it answers:
//! - `{"op":"echo","data":X}` -> X
//! - `{"op":"sleep","ms":N,"data":X}` -> X after N ms
//! - `{"op":"fail","name":S,"message":S,"code":C,"data":D}` -> fails with that error
//! - `{"op":"panic"}` -> the handler panics
//! - `{"op":"drop"}` -> the handler drops its responder without answering
//! - `{"op":"wait_cancel","key":K}` -> never answers; remembers K once cancelled
//! - `{"op":"cancelled","key":K}` -> true once K was cancelled (waits up to 2 s), else false
//! - `{"op":"call","data":X}` -> requests X from the other side: `{"got":..}` or `{"error":..}`
//! - `{"op":"plain","messages":[..]}` -> sends each as a plain message, answers the count
//! - `{"op":"exit","code":N}` -> exits at once
//! - `{"op":"pid"}` -> the process id
//! - `{"op":"env","names":[S..]}` -> `{S: value or null}` for each variable named
//! - anything else -> `{"unknown": payload}`

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_request::{Error, RemoteError, Request, Responder, open_from_env, responder_fn, setup};
use serde_json::{Value, json};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    cancelled: Mutex<HashSet<String>>,
    cancelled_changed: Notify,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(code) = flag("--exit-before-handshake") {
        return ExitCode::from(code.parse::<u8>().unwrap_or(1));
    }
    // SAFETY: nothing in this program reads the environment from another
    // thread (open_from_env removes the channel's variables from it), and
    // nothing else here uses the channel's fd.
    let channel = match unsafe { open_from_env() } {
        Ok(channel) => channel,
        Err(e) => {
            eprintln!("rust_peer: {e}");
            return ExitCode::from(2);
        }
    };
    if args.iter().any(|a| a == "--no-session") {
        // Hold the channel open and never answer anything.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(channel);
        return ExitCode::SUCCESS;
    }
    if let Some(ms) = flag("--handshake-delay") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    // The "panic" op panics on purpose: one line on stderr, no backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("rust_peer: {info}")));
    let state = Arc::new(State::default());
    let handler_state = state.clone();
    let handler = responder_fn(move |request: Request, responder: Responder| {
        let state = handler_state.clone();
        async move { handle(state, request, responder).await }
    });
    let session = match setup(channel, handler).await {
        Ok(session) => session,
        Err(e) => {
            eprintln!("rust_peer: {e}");
            return ExitCode::FAILURE;
        }
    };
    session.closed().await;
    ExitCode::SUCCESS
}

async fn handle(state: Arc<State>, request: Request, responder: Responder) {
    // A payload serde_json cannot read into a `Value` (nested past its
    // depth limit, say) is answered with that error, not taken for null.
    let payload: Value = match request.payload() {
        Ok(payload) => payload,
        Err(e) => {
            let _ = responder.fail(RemoteError::from(e)).await;
            return;
        }
    };
    let op = payload.get("op").and_then(Value::as_str).unwrap_or("");
    let answer: Result<Value, RemoteError> = match op {
        "echo" => Ok(payload["data"].clone()),
        "sleep" => {
            let ms = payload["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(payload["data"].clone())
        }
        // The op's other fields are the error's: name, message, code, data.
        "fail" => Err(serde_json::from_value(payload.clone())
            .unwrap_or_else(|e| RemoteError::new("BadFailOp", e.to_string()))),
        "panic" => panic!("asked to panic"),
        "drop" => {
            drop(responder);
            return;
        }
        "wait_cancel" => {
            let key = payload["key"].as_str().unwrap_or("").to_string();
            request.cancelled().await;
            state.cancelled.lock().unwrap().insert(key);
            state.cancelled_changed.notify_waiters();
            // Answering now must be refused: the peer stopped waiting, or
            // went (the session's end wakes `cancelled` too).
            let refused = responder.respond(&"too late").await;
            assert!(
                matches!(refused, Err(Error::Cancelled | Error::Closed(_))),
                "{refused:?}"
            );
            return;
        }
        "cancelled" => {
            let key = payload["key"].as_str().unwrap_or("").to_string();
            let wait = async {
                loop {
                    let changed = state.cancelled_changed.notified();
                    if state.cancelled.lock().unwrap().contains(&key) {
                        return;
                    }
                    changed.await;
                }
            };
            Ok(json!(
                tokio::time::timeout(Duration::from_secs(2), wait).await.is_ok()
            ))
        }
        "call" => {
            // The handler calls the peer back on the request's own session.
            let session = request.session();
            match session.request::<Value, Value>(&payload["data"]).await {
                Ok(got) => Ok(json!({ "got": got })),
                Err(Error::Remote(e)) => Ok(json!({ "error": *e })),
                Err(e) => Ok(json!({ "error": { "name": "LocalError", "message": e.to_string() } })),
            }
        }
        "plain" => {
            let session = request.session();
            let messages = payload["messages"].as_array().cloned().unwrap_or_default();
            for m in &messages {
                if let Err(e) = session.send(m).await {
                    let _ = responder.fail(e.into()).await;
                    return;
                }
            }
            Ok(json!(messages.len()))
        }
        "exit" => std::process::exit(payload["code"].as_i64().unwrap_or(0) as i32),
        "pid" => Ok(json!(std::process::id())),
        "env" => {
            let names = payload["names"].as_array().cloned().unwrap_or_default();
            let names = names.iter().filter_map(Value::as_str);
            Ok(Value::Object(
                names
                    .map(|n| (n.to_string(), std::env::var(n).map_or(Value::Null, Value::String)))
                    .collect(),
            ))
        }
        _ => Ok(json!({ "unknown": payload })),
    };
    let _ = match answer {
        Ok(value) => responder.respond(&value).await,
        Err(error) => responder.fail(error).await,
    };
}
