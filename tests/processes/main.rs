//! Real processes: Rust parent with Rust child, Rust parent with a Node
//! child, Node parent with the Rust child; and children that die, exit
//! early, or never answer.

#[path = "../common/mod.rs"]
mod common;

mod interop;
mod js_session;
mod node_parents_and_examples;
mod spawn_and_death;

use std::process::Command;
use std::time::Duration;

use common::{example, js_peer};
use ipc_request::{ChildProcess, Request, Session, SessionBuilder, handler_fn, spawn};
use serde_json::{Value, json};

/// The parent's handler in these tests: answers `{"from":"rust-parent",
/// "data":X}`, and fails when asked to with `{"fail": true}`.
pub(crate) fn parent_handler() -> ipc_request::Handler {
    handler_fn(|req: Request| async move {
        let data: Value = req.payload()?;
        if data.get("fail") == Some(&json!(true)) {
            return Err(ipc_request::RemoteError::new("RangeError", "parent refused").with_code(42));
        }
        Ok(json!({"from": "rust-parent", "data": data}))
    })
}

pub(crate) async fn start(command: Command) -> (Session, ChildProcess) {
    let (channel, child) = spawn(command).expect("spawn");
    let session = SessionBuilder::new()
        .handler(parent_handler())
        .setup(channel)
        .await
        .expect("handshake with the child");
    (session, child)
}

pub(crate) fn rust_child(args: &[&str]) -> Command {
    let mut command = Command::new(example("rust_peer"));
    command.args(args);
    command
}

pub(crate) fn node_child(node: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(node);
    command.arg(js_peer()).arg("child").args(args);
    command
}

pub(crate) async fn finish(session: Session, child: ChildProcess) {
    session.close();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the child exits once its channel closes")
        .unwrap();
    assert!(status.success(), "child ended with {status}");
}
