//! A child opening the channel its parent gave it (PROTOCOL.md 1.1), when
//! the variables or the descriptor are wrong: a clear error naming the
//! variable, never a descriptor taken that is not the channel, and nothing
//! left for the child's own children. The child is the `rust_peer`
//! example, or this test binary run again for one test (see
//! `common::run_in_a_child_process`).

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::example;

/// `rust_peer` with exactly the channel variables given (values as bytes).
fn rust_peer_with(env: &[(&str, &[u8])]) -> Command {
    let mut command = Command::new(example("rust_peer"));
    command
        .env_remove("NODE_CHANNEL_FD")
        .env_remove("NODE_CHANNEL_SERIALIZATION_MODE")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(
            k,
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(v),
        );
    }
    command
}

/// Runs `command` and returns what it wrote to stderr, after checking that
/// it failed as `rust_peer` does when it cannot open the channel (exit code
/// 2: no abort, no crash).
fn refused(mut command: Command) -> String {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{command:?}: {:?}: {stderr}",
        output.status
    );
    stderr
}

#[test]
fn a_rust_child_without_a_usable_channel_says_which_variable_is_wrong() {
    type Case<'a> = (&'a [(&'a str, &'a [u8])], &'a str);
    let cases: &[Case] = &[
        (&[], "NODE_CHANNEL_FD=(unset)"),
        (
            &[("NODE_CHANNEL_FD", b"abc")],
            "NODE_CHANNEL_FD=\"abc\": not a file descriptor number",
        ),
        (
            &[("NODE_CHANNEL_FD", b"97")],
            "NODE_CHANNEL_FD=\"97\": that file descriptor is not open",
        ),
        (
            &[("NODE_CHANNEL_FD", b"0")],
            "NODE_CHANNEL_FD=\"0\": that file descriptor is not a stream socket",
        ),
        // Values that are not UTF-8: wrong values, not missing ones.
        (
            &[("NODE_CHANNEL_FD", b"3\xff")],
            "NODE_CHANNEL_FD=\"3\u{fffd}\": not a file descriptor number",
        ),
    ];
    for (env, expected) in cases {
        let stderr = refused(rust_peer_with(env));
        assert!(
            stderr.contains(expected),
            "{env:?}: expected {expected:?} in {stderr:?}"
        );
    }
}

/// A real channel at fd 0 (the child's stdin, where a Node parent may put
/// it too) with a mode we do not speak: the mode is named.
#[test]
fn a_serialization_mode_we_do_not_speak_is_named() {
    type Case<'a> = (&'a [u8], &'a str);
    let cases: &[Case] = &[
        (b"advanced", "NODE_CHANNEL_SERIALIZATION_MODE=\"advanced\""),
        (
            b"xml",
            "NODE_CHANNEL_SERIALIZATION_MODE=\"xml\": unknown serialization mode",
        ),
        (
            b"json\xff",
            "NODE_CHANNEL_SERIALIZATION_MODE=\"json\u{fffd}\": unknown serialization mode",
        ),
    ];
    for (mode, expected) in cases {
        let (_ours, theirs) = UnixStream::pair().unwrap();
        let mut command = rust_peer_with(&[
            ("NODE_CHANNEL_FD", b"0"),
            ("NODE_CHANNEL_SERIALIZATION_MODE", mode),
        ]);
        command.stdin(OwnedFd::from(theirs));
        let stderr = refused(command);
        assert!(
            stderr.contains(expected),
            "{mode:?}: expected {expected:?} in {stderr:?}"
        );
    }
}

/// Node reads an empty mode as json (`|| 'json'`): the child opens the
/// channel and starts its handshake.
#[test]
fn an_empty_serialization_mode_is_json() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut command = rust_peer_with(&[
        ("NODE_CHANNEL_FD", b"0"),
        ("NODE_CHANNEL_SERIALIZATION_MODE", b""),
    ]);
    command.stdin(OwnedFd::from(theirs)).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    // Our copy of the child's end, or a child that refused would leave
    // the read below waiting for ever.
    drop(command);
    let mut first_line = String::new();
    BufReader::new(&ours).read_line(&mut first_line).unwrap();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(
        first_line.contains("_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST"),
        "no handshake from the child: {first_line:?}, stderr {:?}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `NODE_CHANNEL_FD` that came without its descriptor (a program in
/// between closed it, as Python's subprocess does by default) names a
/// number the child's own runtime may use (its epoll, its signal socket):
/// that descriptor must be refused, never taken, written to and closed.
/// Each number the child may hold is tried; it once said "not a stream
/// socket" (epoll), timed out its handshake on Tokio's signal socket, or
/// aborted ("IO Safety violation").
#[test]
fn a_variable_that_came_without_its_descriptor_is_refused() {
    let mut saw_ours = false;
    // Numbers this process would pass on (open here, not close-on-exec: a
    // harness's pipes) are no test of this.
    let inherited = |fd: i32| {
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC == 0
    };
    for fd in (3..=16).filter(|fd| !inherited(*fd)) {
        let stderr = refused(rust_peer_with(&[("NODE_CHANNEL_FD", fd.to_string().as_bytes())]));
        let said = |problem: &str| stderr.contains(&format!("NODE_CHANNEL_FD=\"{fd}\": {problem}"));
        // Not open, or the runtime's own.
        assert!(
            said("that file descriptor is not open") || said("that file descriptor was not inherited"),
            "fd {fd}: {stderr}"
        );
        saw_ours |= said("that file descriptor was not inherited");
    }
    assert!(
        saw_ours,
        "no number named one of the child's own descriptors: the test proves nothing"
    );
}

/// A socket that is no channel: listening, or never connected.
#[test]
fn a_socket_without_a_peer_is_refused() {
    let dir = std::env::temp_dir().join(format!("ipc-request-channel-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.join("listening")).unwrap();
    let mut command = rust_peer_with(&[("NODE_CHANNEL_FD", b"0")]);
    command.stdin(OwnedFd::from(listener));
    let stderr = refused(command);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        stderr.contains("NODE_CHANNEL_FD=\"0\": that socket is not connected"),
        "{stderr}"
    );
}

/// Opening fails (a mode we do not speak), and the program goes on
/// without the channel: its own children must not get the channel, by the
/// variables or by the descriptor (a Node grandchild would open it, and
/// talk to its grandparent). Node itself deletes both variables first.
#[test]
fn a_failed_open_leaves_nothing_for_the_childs_own_children() {
    if !common::in_a_child_process() {
        let (_ours, theirs) = UnixStream::pair().unwrap();
        common::run_in_a_child_process(
            "a_failed_open_leaves_nothing_for_the_childs_own_children",
            |child| {
                child
                    .stdin(OwnedFd::from(theirs))
                    .env("NODE_CHANNEL_FD", "0")
                    .env("NODE_CHANNEL_SERIALIZATION_MODE", "advanced");
            },
        );
        return;
    }
    // In the child: one test thread, nothing else reads the environment.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opened = runtime.block_on(async { unsafe { ipc_request::open_from_env() } });
    assert!(
        matches!(opened, Err(ipc_request::Error::ChannelEnv { .. })),
        "{opened:?}"
    );
    assert_eq!(std::env::var_os("NODE_CHANNEL_FD"), None);
    assert_eq!(std::env::var_os("NODE_CHANNEL_SERIALIZATION_MODE"), None);
    // A second try is told why there is no variable: not that this
    // process never had a channel.
    let again = runtime.block_on(async { unsafe { ipc_request::open_from_env() } });
    let said = again.map(drop).unwrap_err().to_string();
    assert!(said.contains("an earlier open_from_env"), "{said}");
    // The channel was at stdin: our children must get a stdin, not the
    // channel and not a hole. /dev/null took its place, inheritable...
    let is_null = |fd: i32| unsafe {
        let (mut got, mut null): (libc::stat, libc::stat) = (std::mem::zeroed(), std::mem::zeroed());
        libc::fstat(fd, &mut got) == 0
            && libc::stat(c"/dev/null".as_ptr(), &mut null) == 0
            && (got.st_mode & libc::S_IFMT) == libc::S_IFCHR
            && got.st_rdev == null.st_rdev
    };
    assert!(is_null(0), "stdin is not /dev/null");
    let flags = unsafe { libc::fcntl(0, libc::F_GETFD) };
    assert!(
        flags >= 0 && flags & libc::FD_CLOEXEC == 0,
        "stdin would not pass to our children"
    );
    // ...and no socket passes to our children; the channel is still open
    // (refused, not closed), close-on-exec, at a number of its own.
    let mut channel_still_open = false;
    for fd in 0..256 {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFSOCK {
            continue;
        }
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "socket {fd} would pass to our children"
        );
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let unix_stream = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&raw mut ty).cast(),
                &mut len,
            ) == 0
        } && ty == libc::SOCK_STREAM;
        let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let unix = unsafe { libc::getsockname(fd, (&raw mut address).cast(), &mut len) } == 0
            && i32::from(address.ss_family) == libc::AF_UNIX;
        channel_still_open |= unix_stream && unix;
    }
    assert!(channel_still_open, "the channel was closed");
}

/// A runtime without I/O or without timers makes opening panic (as
/// Tokio's constructors do): the panic must leave the channel and its
/// variables as they came, for a second try. It once came after both were
/// taken, and the unwind closed the channel.
#[test]
fn a_panic_for_a_runtime_without_io_leaves_the_channel_for_a_second_try() {
    if !common::in_a_child_process() {
        let (_ours, theirs) = UnixStream::pair().unwrap();
        common::run_in_a_child_process(
            "a_panic_for_a_runtime_without_io_leaves_the_channel_for_a_second_try",
            |child| {
                child.stdin(OwnedFd::from(theirs)).env("NODE_CHANNEL_FD", "0");
            },
        );
        return;
    }
    // In the child: one test thread, nothing else reads the environment.
    let without_io = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let without_timers = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    for (runtime, lacking) in [(without_io, "I/O"), (without_timers, "timers")] {
        let opened =
            std::panic::catch_unwind(|| runtime.block_on(async { unsafe { ipc_request::open_from_env() } }));
        assert!(
            opened.is_err(),
            "opened without {lacking}: {:?}",
            opened.map(|o| o.is_ok())
        );
        assert_eq!(std::env::var_os("NODE_CHANNEL_FD").as_deref(), Some("0".as_ref()));
        let flags = unsafe { libc::fcntl(0, libc::F_GETFD) };
        assert!(
            flags >= 0 && flags & libc::FD_CLOEXEC == 0,
            "without {lacking}, the channel was closed or changed: {flags}"
        );
        let status = unsafe { libc::fcntl(0, libc::F_GETFL) };
        assert_eq!(
            status & libc::O_NONBLOCK,
            0,
            "without {lacking}, the channel was left non-blocking"
        );
    }
    let with_io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opened = with_io.block_on(async { unsafe { ipc_request::open_from_env() } });
    assert!(opened.is_ok(), "{opened:?}");
    assert_eq!(std::env::var_os("NODE_CHANNEL_FD"), None);
    // The channel moved to a descriptor of its own, and stdin, where it
    // was, is /dev/null: a number left free would go to the next file the
    // program opens.
    assert_eq!(
        std::fs::read_link("/proc/self/fd/0").unwrap(),
        std::path::Path::new("/dev/null")
    );
}

/// A child that closed its stderr (Rust's runtime puts `/dev/null` at
/// any of 0 to 2 that a program starts without, but a program may close
/// them later) got the channel's copy at fd 2, the lowest free number:
/// what it then wrote to stderr went into the channel, bytes that a Node
/// parent cannot parse. The copy goes to 3 or above, as the socket pair
/// of `spawn` does.
#[test]
fn the_channel_takes_no_stdio_number_that_the_child_has_closed() {
    let name = "the_channel_takes_no_stdio_number_that_the_child_has_closed";
    if !common::in_a_child_process() {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let (_ours, theirs) = UnixStream::pair().unwrap();
        let theirs_fd = theirs.as_raw_fd();
        common::run_in_a_child_process(name, |child| {
            // Not at stdin, where /dev/null opened to replace it would
            // take the free number first.
            child.env("NODE_CHANNEL_FD", "3");
            // SAFETY: dup2 alone, async-signal-safe, between fork and
            // exec; `theirs` outlives the spawn.
            unsafe {
                child.pre_exec(move || match libc::dup2(theirs_fd, 3) {
                    -1 => Err(std::io::Error::last_os_error()),
                    _ => Ok(()),
                });
            }
        });
        drop(theirs);
        return;
    }
    // In the child: one test thread, nothing else reads the environment
    // or uses stderr while it is closed; it is put back before asserting.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (opened, fd_2_now, fd_2_was) = common::with_descriptors_closed(&[2], || {
        let opened = runtime.block_on(async { unsafe { ipc_request::open_from_env() } });
        let fd_2_now = unsafe { libc::fcntl(2, libc::F_GETFD) };
        (opened, fd_2_now, std::fs::read_link("/proc/self/fd/2"))
    });
    assert!(opened.is_ok(), "{opened:?}");
    assert_eq!(fd_2_now, -1, "the channel took stderr's number: {fd_2_was:?}");
}
