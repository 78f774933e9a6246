//! A child's edges the other process tests do not reach: requests that
//! meet the broken pipe of a child that stopped reading and died.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use common::node;
use ipc_request::{ChannelConfig, CloseReason, Error, SpawnOptions, setup, spawn_with};
use serde_json::Value;

/// A Node child that answers the handshake, then reads nothing for a while
/// (busy, as a stuck event loop is) and dies of SIGKILL.
const STALL_THEN_DIE: &str = r#"
const P = '_IPC_REQUEST/';
process.on('message', (m) => {
  if (m && m[P + 'HANDSHAKE_MSG_TYPE'] === P + 'HANDSHAKE_MSG_TYPE:REQUEST') {
    process.send({
      [P + 'HANDSHAKE_UID']: m[P + 'HANDSHAKE_UID'],
      [P + 'HANDSHAKE_MSG_TYPE']: P + 'HANDSHAKE_MSG_TYPE:RESPONSE',
    }, () => {
      const until = Date.now() + 600;
      while (Date.now() < until) {}
      process.kill(process.pid, 'SIGKILL');
    });
  }
});
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_meet_the_broken_pipe_of_a_killed_child_say_it_was_killed() {
    let Some(node) = node() else { return };
    // Three rounds: before the fix, the request whose write met the broken
    // pipe said so in 4 of 5 rounds, while the others said SIGKILL.
    for round in 0..3 {
        let mut command = Command::new(&node);
        command.args(["-e", STALL_THEN_DIE]);
        let options = SpawnOptions {
            // Small, so that writes wait for a child that reads nothing.
            channel: ChannelConfig {
                write_queue_bytes: 64 * 1024,
                ..ChannelConfig::default()
            },
            ..SpawnOptions::default()
        };
        let (channel, _child) = spawn_with(command, options).unwrap();
        let session = setup(channel, None).await.unwrap();
        let payload = "x".repeat(20_000);
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let (session, payload) = (session.clone(), payload.clone());
                tokio::spawn(async move { session.request::<_, Value>(&payload).await })
            })
            .collect();
        for call in calls {
            let result = tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .expect("a request hung after the child died")
                .unwrap();
            match result {
                Err(Error::Closed(CloseReason::ChildExited(status))) => {
                    assert_eq!(status.signal(), Some(9), "round {round}")
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert!(
            matches!(session.close_reason(), Some(CloseReason::ChildExited(_))),
            "round {round}: {:?}",
            session.close_reason()
        );
    }
}
