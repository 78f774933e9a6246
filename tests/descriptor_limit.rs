//! A channel at the process's descriptor limit. A test binary of its own:
//! it lowers a limit of the whole process and uses up every descriptor,
//! which would break any test running beside it.

use std::time::Duration;

use ipc_request::{Channel, ChannelConfig};

#[tokio::test]
async fn a_full_socket_waits_for_room_even_with_no_descriptor_left() {
    // The write half waits for room through the reactor. If it needed a new
    // descriptor for that only when the socket first filled, a process at
    // its limit (a server with many clients) would see its channel fail
    // then, for good, instead of waiting for a slow peer.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let ours = tokio::net::UnixStream::from_std(ours).unwrap();
    let channel = Channel::from_unix(ours, ChannelConfig::default()).unwrap();

    // Only the soft limit, so that it can be raised again afterwards.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    let lowered = libc::rlimit {
        rlim_cur: limit.rlim_cur.min(512),
        rlim_max: limit.rlim_max,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let mut every_descriptor = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        every_descriptor.push(file);
    }

    let line = "x".repeat(64 * 1024);
    let mut sent = 0;
    let outcome = loop {
        match tokio::time::timeout(Duration::from_millis(500), channel.sender().send(&line)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => break Err(format!("send #{sent} failed: {e}")),
            Err(_) => break Ok(sent),
        }
    };
    drop(every_descriptor);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let sent = outcome.unwrap();
    assert!(sent > 0, "the socket and the queue take lines before they fill");

    // The peer reads at last: the lines that waited are written.
    theirs.set_nonblocking(true).unwrap();
    let mut theirs = Channel::from_unix(
        tokio::net::UnixStream::from_std(theirs).unwrap(),
        ChannelConfig::default(),
    )
    .unwrap();
    for _ in 0..sent {
        let message = tokio::time::timeout(Duration::from_secs(10), theirs.recv()).await;
        assert_eq!(message.unwrap().unwrap().unwrap().get().len(), line.len() + 2);
    }
}
