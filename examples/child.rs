//! The child of the seed example: answers the parent's request.
//!
//! Started by `cargo run --example parent`, or by a Node parent:
//! `spawn(path, [], {stdio: ['inherit', 'inherit', 'inherit', 'ipc']})`.

use std::process::ExitCode;

use ipc_request::{Request, Responder, open_from_env, responder_fn, setup};

#[tokio::main]
async fn main() -> ExitCode {
    let channel = match open_from_env() {
        Ok(channel) => channel,
        Err(e) => {
            eprintln!("[child]  {e}");
            return ExitCode::from(2);
        }
    };
    let handler = responder_fn(|request: Request, responder: Responder| async move {
        let text: String = match request.payload() {
            Ok(text) => text,
            Err(e) => {
                let _ = responder.fail(e.into()).await;
                return;
            }
        };
        println!("[child]  Got request:      {text}");
        let response = format!("(RESPONSE FROM child TO {text})");
        println!("[child]  Sending response: {response}");
        if responder.respond(&response).await.is_ok() {
            println!("[child]  Response sent:    {response}");
        }
    });
    let session = match setup(channel, handler).await {
        Ok(session) => session,
        Err(e) => {
            eprintln!("[child]  {e}");
            return ExitCode::FAILURE;
        }
    };
    // Serve until the parent disconnects.
    session.closed().await;
    ExitCode::SUCCESS
}
