//! Blocking handlers that call the peer back, many at once: a test binary
//! of its own, since it runs 520 threads that would load the timing of
//! the other blocking tests.

mod common;

use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ipc_request::{Channel, ChannelConfig, Error, Request, SessionBuilder, blocking};
use serde_json::{Value, json};

#[test]
fn handlers_that_call_back_get_a_thread_for_every_handler_slot() {
    // 520 requests whose handlers each wait for all the others, then ask
    // the peer, whose handler asks us again: 520 of our handlers waiting at
    // once, past the 512 threads of Tokio's default blocking pool, within
    // the 1,024 handler slots. Were the pool full of handlers that wait,
    // the handlers their answers need would wait for a thread for ever.
    const CALLS: usize = 520;
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let peer_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let peer_handler = ipc_request::handler_fn(|req: Request| async move {
        let data: Value = req.payload()?;
        req.session()
            .request::<_, Value>(&json!({"op": "echo", "data": data}))
            .await
    });
    let peer_setup = peer_runtime.spawn(async move {
        theirs.set_nonblocking(true).unwrap();
        let channel = Channel::from_unix(
            tokio::net::UnixStream::from_std(theirs).unwrap(),
            ChannelConfig::default(),
        );
        ipc_request::setup(channel.unwrap(), peer_handler).await
    });
    // Each handler counts itself in and waits (for at most 10 s) until all
    // are there.
    let arrived = Arc::new((Mutex::new(0usize), Condvar::new()));
    let our_handler = {
        let arrived = arrived.clone();
        blocking::handler_fn(move |req: Request| {
            let payload: Value = req.payload()?;
            if payload["op"] == "echo" {
                return Ok::<_, Error>(payload["data"].clone());
            }
            let (count, all_there) = &*arrived;
            let mut count = count.lock().unwrap();
            *count += 1;
            all_there.notify_all();
            let wait = Duration::from_secs(10);
            drop(all_there.wait_timeout_while(count, wait, |n| *n < CALLS).unwrap());
            blocking::Peer::of(&req).request(&payload["data"])
        })
    };
    let session = common::blocking_session_over(ours, SessionBuilder::new().handler(our_handler));
    let peer = peer_runtime.block_on(peer_setup).unwrap().unwrap();
    let answers = peer_runtime.block_on(async {
        let calls = (0..CALLS).map(|i| {
            let peer = peer.clone();
            async move {
                peer.request_timeout::<_, Value>(&json!({"op": "call", "data": i}), Duration::from_secs(20))
                    .await
            }
        });
        futures_util::future::join_all(calls).await
    });
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), json!(i));
    }
    session.close();
    peer.close();
}
