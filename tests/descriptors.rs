//! Tests that depend on which descriptors the whole process has open. A
//! test binary of their own, one test at a time (`alone`): other tests
//! opening and closing descriptors beside them would change what they look
//! at. Each builds its runtime only once it runs alone, since a runtime
//! needs descriptors too (one test uses them all up).

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use ipc_request::{Channel, ChannelConfig, Error, SpawnOptions, spawn_with};

/// Runs `test` on a runtime of `workers` threads, with no other test of
/// this binary running.
fn alone<F: std::future::Future<Output = ()>>(workers: usize, test: impl FnOnce() -> F) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(test());
}

#[test]
fn a_full_socket_waits_for_room_even_with_no_descriptor_left() {
    alone(1, a_full_socket_waits_for_room);
}

async fn a_full_socket_waits_for_room() {
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

#[test]
fn concurrent_spawns_of_a_missing_program_all_fail_to_start() {
    alone(2, concurrent_spawns_of_a_missing_program);
}

async fn concurrent_spawns_of_a_missing_program() {
    // Two threads spawn a program that does not exist, with the channel at
    // a descriptor number that is free, at once, a thousand times. Each
    // spawn keeps the number from std's exec-error pipe while it runs;
    // when one spawn freed it in the middle of the other, that pipe could
    // land on it, the child's dup2 replaced it, and the failed exec looked
    // like a started child that exited with code 1.
    let runtime = tokio::runtime::Handle::current();
    let mut started = Vec::new();
    for round in 0..1_000 {
        let free = std::fs::File::open("/dev/null").unwrap().as_raw_fd();
        let target = free + 4;
        let both = std::sync::Arc::new(std::sync::Barrier::new(2));
        let spawns: Vec<_> = (0..2)
            .map(|_| {
                let (both, runtime) = (both.clone(), runtime.clone());
                std::thread::spawn(move || {
                    let _runtime = runtime.enter();
                    both.wait();
                    let options = SpawnOptions {
                        fd: target,
                        ..SpawnOptions::default()
                    };
                    match spawn_with(Command::new("/nonexistent/program"), options) {
                        Err(Error::Spawn { .. }) => None,
                        Err(other) => Some(format!("round {round}: {other}")),
                        Ok((_, child)) => Some(format!("round {round}: started as pid {}", child.id())),
                    }
                })
            })
            .collect();
        started.extend(spawns.into_iter().filter_map(|spawn| spawn.join().unwrap()));
    }
    assert!(started.is_empty(), "{} of 2,000: {started:?}", started.len());
}
