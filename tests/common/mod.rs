//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod breaks_when_armed;
pub mod hand_played;
pub mod rng;
pub mod watched_reader;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use ipc_request::{
    Channel, ChannelConfig, Handler, RemoteError, Request, Session, SessionBuilder, handler_fn,
};
use serde_json::{Value, json};

/// A handler for in-process tests: `{"op":"echo","data":X}` -> X,
/// `{"op":"sleep","ms":N,"data":X}` -> X after N ms, `{"op":"repeat",
/// "n":N}` -> N times "x", `{"op":"fail",...}` fails, anything else is
/// echoed back.
pub fn ops_handler() -> Handler {
    handler_fn(|req: Request| async move {
        let payload: Value = req.payload()?;
        match payload.get("op").and_then(Value::as_str) {
            Some("sleep") => {
                tokio::time::sleep(Duration::from_millis(payload["ms"].as_u64().unwrap_or(0))).await;
                Ok(payload["data"].clone())
            }
            Some("echo") => Ok(payload["data"].clone()),
            Some("repeat") => Ok(json!("x".repeat(payload["n"].as_u64().unwrap_or(0) as usize))),
            Some("fail") => Err(RemoteError::new(
                payload["name"].as_str().unwrap_or("Error"),
                payload["message"].as_str().unwrap_or(""),
            )),
            _ => Ok(json!({ "echo": payload })),
        }
    })
}

/// Two sessions over an in-memory pair, both with `ops_handler`.
pub async fn connected() -> (Session, Session) {
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (sa, sb) = tokio::join!(
        SessionBuilder::new().handler(ops_handler()).setup(a),
        SessionBuilder::new().handler(ops_handler()).setup(b),
    );
    (sa.expect("side a"), sb.expect("side b"))
}

/// An example binary, built first unless it is newer than every source it
/// was built from. A plain `cargo test` builds the examples; a run of one
/// test target (`cargo test --test processes`) does not, and would otherwise
/// run whatever binary an earlier build left.
///
/// The check reads the dep-info file cargo writes beside the binary, so a
/// fresh binary costs no cargo process: a nested `cargo build` waits for
/// the target directory's lock, and another cargo command holding it (a
/// `cargo build` in another terminal) would stall the test. When a build is
/// needed, it says so on stderr and lets cargo's own messages through
/// ("Blocking waiting for file lock ..."), so such a wait is never silent.
pub fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("examples").join(name);
    // Held during the build: tests running in parallel wait for one build.
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if built.iter().any(|b| b == name) {
        return path;
    }
    if !is_fresh(&path) {
        // Past the test harness's capture, which would hold it back until
        // the test ends.
        let _ = writeln!(
            std::io::stderr(),
            "tests: building example {name} (cargo build --example {name})"
        );
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--example", name, "--manifest-path"]);
        build.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success() && path.exists(),
            "could not build example {name}"
        );
    }
    built.push(name.to_string());
    path
}

/// Whether the example binary at `binary` is newer than every file its
/// dep-info (`<binary>.d`) lists, and was built from this checkout (a target directory shared with another
/// checkout lists that checkout's files).
fn is_fresh(binary: &std::path::Path) -> bool {
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(built_at) = modified(binary) else {
        return false;
    };
    let Ok(dep_info) = std::fs::read_to_string(binary.with_extension("d")) else {
        return false;
    };
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // "<binary>: <source> <source> ...", spaces in paths escaped as "\ ".
    let Some((_, sources)) = dep_info.lines().next().and_then(|line| line.split_once(": ")) else {
        return false;
    };
    let sources: Vec<PathBuf> = sources
        .replace("\\ ", "\0")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| PathBuf::from(s.replace('\0', " ")))
        .collect();
    let ours = sources
        .iter()
        .any(|s| s.starts_with(manifest_dir.join("examples")));
    // Not the manifest or the lock file: cargo rebuilds for what they say,
    // not for their times, and a touched one would otherwise make every
    // test process run cargo. (An edit saved while the build ran passes
    // as built: cargo compares with when its build began.)
    ours && sources
        .iter()
        .all(|source| modified(source).is_some_and(|at| at <= built_at))
}

/// The JS test peer.
pub fn js_peer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/peer.js")
}

/// The number in the environment variable `name`, or `default` if it is
/// unset or not a number: the settings of the seeded tests.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `node`, or `None` with a message when it is missing. In CI (`CI` set)
/// a missing node is a failure, never a skip.
pub fn node() -> Option<PathBuf> {
    let found = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return Some(PathBuf::from("node"));
    }
    if std::env::var_os("CI").is_some() {
        panic!("node is not installed, and CI must run the Node tests");
    }
    // Straight to the process's stderr: the test harness captures what
    // `eprintln!` writes, and a skipped test then shows only as passed.
    let _ = std::io::stderr()
        .write_all(b"SKIPPED: node is not on PATH; install Node.js (v18 or later; tested with 18, 20, 22, 24 and 26) to run the Node interop tests\n");
    None
}

/// How many TCP sockets this process holds (Linux): what a Node handle
/// passes in our tests is one, and no test opens one of its own, so tests
/// running alongside cannot change the count (a count of all descriptors
/// could, as they open and close pipes and sockets).
pub fn open_tcp_sockets() -> usize {
    let mut tcp_inodes = std::collections::HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        // Column 10 of each entry (after the header line) is the inode.
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                tcp_inodes.insert(inode.to_string());
            }
        }
    }
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_string();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?.to_string();
            Some(inode)
        })
        .filter(|inode| tcp_inodes.contains(inode))
        .count()
}

/// Reads one line (without its newline) byte by byte, so that nothing after
/// it is taken off the stream.
pub async fn read_line<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) -> String {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    loop {
        let byte = reader.read_u8().await.unwrap();
        if byte == b'\n' {
            return String::from_utf8(line).unwrap();
        }
        line.push(byte);
    }
}

/// Plays an ipc-request 1.0 peer's part of the handshake by hand: reads the
/// session's handshake request and answers it (no extensions key).
pub async fn answer_handshake_as_one_dot_zero<R, W>(reader: &mut R, writer: &mut W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    answer_handshake(reader, writer, None).await
}

/// Plays a peer's part of the handshake by hand: reads the session's
/// handshake request and answers it, advertising `extensions` (PROTOCOL.md
/// section 3) or, with `None`, as ipc-request 1.0 (no extensions key).
pub async fn answer_handshake<R, W>(reader: &mut R, writer: &mut W, extensions: Option<&[&str]>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let answer = handshake_answer(&read_line(reader).await, extensions);
    writer.write_all(answer.as_bytes()).await.unwrap();
}

/// The line (newline included) that answers the handshake request `hello`
/// (its text), advertising `extensions` or, with `None`, as ipc-request 1.0.
pub fn handshake_answer(hello: &str, extensions: Option<&[&str]>) -> String {
    let hello: Value = serde_json::from_str(hello).unwrap();
    let mut answer = json!({
        "_IPC_REQUEST/HANDSHAKE_UID": hello["_IPC_REQUEST/HANDSHAKE_UID"],
        "_IPC_REQUEST/HANDSHAKE_MSG_TYPE": "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:RESPONSE"
    });
    if let Some(extensions) = extensions {
        answer["_IPC_REQUEST/EXTENSIONS"] = json!(extensions);
    }
    format!("{answer}\n")
}

/// An async session over one end of a Unix socket pair, set up with
/// `handler` on a multi-thread runtime of its own (one worker), which the
/// caller may drop under it; returns once the peer has shaken hands.
pub fn session_on_a_runtime_of_its_own(
    ours: std::os::unix::net::UnixStream,
    handler: impl Into<Option<Handler>>,
) -> (tokio::runtime::Runtime, Session) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let session = runtime
        .block_on(async {
            ours.set_nonblocking(true).unwrap();
            let stream = tokio::net::UnixStream::from_std(ours).unwrap();
            ipc_request::setup(Channel::from_unix(stream, ChannelConfig::default())?, handler).await
        })
        .unwrap();
    (runtime, session)
}

/// A blocking session (`ipc_request::blocking`) over one end of a Unix
/// socket pair, with `builder`'s settings and handler and a 16 MiB write
/// queue; returns once the peer at the other end has shaken hands.
pub fn blocking_session_over(
    socket: std::os::unix::net::UnixStream,
    builder: SessionBuilder,
) -> ipc_request::blocking::Session {
    let config = ChannelConfig {
        write_queue_bytes: 16 << 20,
        ..ChannelConfig::default()
    };
    ipc_request::blocking::setup_with(builder, move || {
        socket.set_nonblocking(true).unwrap();
        Channel::from_unix(tokio::net::UnixStream::from_std(socket).unwrap(), config)
    })
    .unwrap()
}

/// Awaits every call, each within `limit`, and checks that each failed
/// because the child was killed by SIGKILL (`context` names the case).
pub async fn expect_all_failed_by_sigkill<T: std::fmt::Debug>(
    calls: Vec<tokio::task::JoinHandle<Result<T, ipc_request::Error>>>,
    limit: Duration,
    context: &str,
) {
    use std::os::unix::process::ExitStatusExt;
    for call in calls {
        let result = tokio::time::timeout(limit, call)
            .await
            .expect("a request hung after the child died")
            .unwrap();
        match result {
            Err(ipc_request::Error::Closed(ipc_request::CloseReason::ChildExited(status))) => {
                assert_eq!(status.signal(), Some(9), "{context}")
            }
            other => panic!("{context}: {other:?}"),
        }
    }
}

/// Set in the copy of a test binary that [`run_in_a_child_process`]
/// starts.
const CHILD_PROCESS_VAR: &str = "IPC_REQUEST_TEST_IN_A_CHILD_PROCESS";

/// Whether this process is the copy of a test binary that
/// [`run_in_a_child_process`] started: the test then plays its child's part.
pub fn in_a_child_process() -> bool {
    std::env::var_os(CHILD_PROCESS_VAR).is_some()
}

/// Runs the test `name` of this binary again in a child process, set up by
/// `configure` (its stdin, its environment), and asserts that it ran and
/// succeeded. For what a test binary's threads must not share: the
/// environment `open_from_env` changes, a process exit, the runtimes of
/// other tests (Tokio reaps an orphaned child in whichever runtime of the
/// process handles `SIGCHLD` next).
pub fn run_in_a_child_process(name: &str, configure: impl FnOnce(&mut Command)) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD_PROCESS_VAR, "1")
        .stdout(std::process::Stdio::piped());
    configure(&mut command);
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // A name that matched no test would pass with nothing run.
    assert!(
        output.status.success() && stdout.contains("running 1 test"),
        "the child run of {name} failed ({:?}): {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `f` with descriptors `fds` closed, as a process that closed its
/// stdio has them, and puts them back (from copies kept at 10 and up
/// meanwhile) before returning what `f` returned: look at the result
/// after, when stderr takes a panic's message again. Only in a process of
/// its own ([`run_in_a_child_process`]), whose one thread nothing else
/// shares these numbers with.
pub fn with_descriptors_closed<R>(fds: &[i32], f: impl FnOnce() -> R) -> R {
    // SAFETY: fcntl, close and dup2 on descriptors of this process that no
    // other thread uses meanwhile (see above); the copies are new and ours.
    let saved: Vec<i32> = fds
        .iter()
        .map(|&fd| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) })
        .collect();
    assert!(saved.iter().all(|&copy| copy >= 10), "{fds:?} saved as {saved:?}");
    for &fd in fds {
        unsafe { libc::close(fd) };
    }
    let result = f();
    for (&fd, copy) in fds.iter().zip(saved) {
        unsafe {
            libc::dup2(copy, fd);
            libc::close(copy);
        }
    }
    result
}

/// The state letter of process `pid` (`R`, `S`, `Z` for a zombie, ...),
/// `None` once it is gone (reaped).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the name may hold spaces and parentheses.
    stat.rsplit_once(") ")?.1.chars().next()
}

/// `pid`'s state as soon as `settled` accepts it, looked at every 10 ms;
/// after 10 s, whatever it is then.
pub fn process_state_once(pid: u32, settled: impl Fn(Option<char>) -> bool) -> Option<char> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut state = process_state(pid);
    while !settled(state) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        state = process_state(pid);
    }
    state
}

/// Where `f` panicked (`file:line`) and with what message, as the panic
/// hook sees it: what a user reads first. Panics of other threads meanwhile
/// go to the hook that was there before, which is put back after.
#[allow(dead_code)] // not every test binary looks at panics
pub fn panic_site_of(f: impl FnOnce()) -> Option<(String, String)> {
    type Hook = dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync;
    let here = std::thread::current().id();
    let seen = std::sync::Arc::new(Mutex::new(None));
    let previous: std::sync::Arc<Hook> = std::sync::Arc::from(std::panic::take_hook());
    {
        let seen = seen.clone();
        let previous = previous.clone();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() != here {
                return previous(info);
            }
            let site = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let message = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            *seen.lock().unwrap() = Some((site, message));
        }));
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    seen.lock().unwrap().take()
}
