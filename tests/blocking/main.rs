//! The blocking API (`ipc_request::blocking`) with real children: a Node
//! child, and a child written with the blocking API itself; what its drop
//! writes; where it may and may not wait.

#[path = "../common/mod.rs"]
mod common;

mod drops;
mod serving;
mod spawning;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::mpsc;
use std::time::Duration;

use ipc_request::blocking;

/// `child` has exited (the session's end reached it) within a few seconds.
pub(crate) fn assert_exits(child: &blocking::ChildProcess) {
    let status = child.wait_timeout(Duration::from_secs(10)).expect("wait");
    let status = status.expect("the child did not exit after its channel closed");
    assert!(status.success(), "{status}");
}

/// A peer played by hand on a blocking socket: answers the handshake, then
/// reads nothing until told to go (so that what the session sends piles up
/// in its queue), then reads lines until the end of the stream and returns
/// them.
pub(crate) fn hand_played_peer(
    socket: StdUnixStream,
) -> (std::thread::JoinHandle<Vec<String>>, mpsc::Sender<()>) {
    hand_played_peer_then(socket, String::new())
}

/// [`hand_played_peer`], writing `text` right after its handshake answer.
pub(crate) fn hand_played_peer_then(
    socket: StdUnixStream,
    text: String,
) -> (std::thread::JoinHandle<Vec<String>>, mpsc::Sender<()>) {
    let (go, wait_for_go) = mpsc::channel();
    let peer = std::thread::spawn(move || {
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let answer = common::handshake_answer(&line, None);
        (&socket).write_all(format!("{answer}{text}").as_bytes()).unwrap();
        let _ = wait_for_go.recv();
        reader.lines().map(Result::unwrap).collect()
    });
    (peer, go)
}
