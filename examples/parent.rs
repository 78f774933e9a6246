//! The seed example: fork a child, shake hands, send one request, then
//! answer the child's request and disconnect.
//!
//! `cargo run --example parent` forks the `child` example;
//! `cargo run --example parent -- PROGRAM [ARGS...]` forks PROGRAM instead,
//! e.g. `node examples/node/child.js`. On any failure it prints the error
//! (with the child's exit code or signal when the child died) and exits
//! non-zero.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use std::time::Duration;

use ipc_request::{
    Error, RemoteError, Request, Responder, SessionBuilder, SpawnOptions, responder_fn, spawn_session_with,
};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[parent] {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let command = match args.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
        None => Command::new(child_example()?),
    };
    // Capacity 1: we wait for one request from the child, and then stop.
    let (served_tx, mut served) = mpsc::channel::<()>(1);
    let handler = responder_fn(move |request: Request, responder: Responder| {
        let served = served_tx.clone();
        async move {
            let Ok(text) = request.payload::<String>() else {
                let _ = responder
                    .fail(RemoteError::new("TypeError", "expected a string"))
                    .await;
                return;
            };
            println!("[parent] Got request:      {text}");
            let response = format!("(RESPONSE FROM parent TO {text})");
            println!("[parent] Sending response: {response}");
            // Only once the answer is on its way may main() disconnect.
            if responder.respond(&response).await.is_ok() {
                let _ = served.try_send(());
            }
        }
    });
    // Returns once the child listens; a child that exits first, or never
    // sets up a session, is killed and the error returned.
    let builder = SessionBuilder::new().handler(handler);
    let (session, child) = spawn_session_with(command, SpawnOptions::default(), builder).await?;
    println!("[parent] Hands have been shaken! Now I know that the child process listens to my requests");

    let request = "(REQUEST FROM parent)";
    println!("[parent] Sending request:  {request}");
    let response: String = session.request(request).await?;
    println!("[parent] Got response:     {response}");

    // The child asks us something in return; answer it, then disconnect.
    tokio::time::timeout(Duration::from_secs(10), served.recv())
        .await
        .map_err(|_| "the child sent no request within 10 s")?;
    // Disconnect once the answer is written; the child sees its channel
    // close and exits.
    session.close();
    let status = child.wait().await?;
    if !status.success() {
        return Err(format!("the child ended badly: {status}").into());
    }
    Ok(())
}

/// The `child` example binary, next to this one; built first if it is not
/// there yet (`cargo run --example parent` builds only `parent`).
fn child_example() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let child = me.with_file_name("child");
    if !child.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "--example", "child", "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        if me.components().any(|c| c.as_os_str() == "release") {
            build.arg("--release");
        }
        let status = build.status()?;
        if !status.success() {
            return Err(
                Error::InvalidArgument(format!("building the child example failed: {status}")).into(),
            );
        }
    }
    Ok(child)
}
