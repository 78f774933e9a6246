//! The child of the seed example: answers the parent's request, then asks
//! the parent one of its own.
//!
//! Started by `cargo run --example parent`, or by a Node parent
//! (`node examples/node/parent.js target/debug/examples/child`, which spawns
//! it with `stdio: ['inherit', 'inherit', 'inherit', 'ipc']`).

use std::process::ExitCode;
use std::sync::Arc;

use ipc_request::{Request, Responder, open_from_env, responder_fn, setup};
use tokio::sync::Notify;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[child]  {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ipc_request::Error> {
    // SAFETY: nothing in this program reads the environment from another
    // thread (open_from_env removes the channel's variables from it), and
    // nothing else here uses the channel's fd.
    let channel = unsafe { open_from_env() }?;
    let answered = Arc::new(Notify::new());
    let notify = answered.clone();
    let handler = responder_fn(move |request: Request, responder: Responder| {
        let answered = notify.clone();
        async move {
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
                answered.notify_one();
            }
        }
    });
    let session = setup(channel, handler).await?;

    // The other direction: once we have answered, we ask the parent.
    tokio::select! {
        _ = answered.notified() => {
            let request = "(REQUEST FROM child)";
            println!("[child]  Sending request:  {request}");
            let response: String = session.request(request).await?;
            println!("[child]  Got response:     {response}");
        }
        _ = session.closed() => return Ok(()),
    }
    // Serve until the parent disconnects.
    session.closed().await;
    Ok(())
}
