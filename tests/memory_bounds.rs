//! What a peer's input costs in memory, measured by a global allocator that
//! counts the bytes live: the configured bounds must hold for the memory
//! the session really keeps, not only for what it counts. The tests here
//! share the count, so they run one at a time (see `MEASURING`).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ipc_request::{Channel, ChannelConfig, RemoteError, Request, SessionBuilder, SessionConfig, handler_fn};
use tokio::io::AsyncWriteExt;

/// The system allocator, counting the bytes live, and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn count_allocated(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call goes to the system allocator unchanged; only a count
// is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocated(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as the copy it may be: both blocks live for a moment.
        count_allocated(new_size);
        // SAFETY: the caller's contract, passed on.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        moved
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Held by a test while it measures.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: usize = 1024 * 1024;

/// A peer whose requests wait for the one handler slot, each with a UID of
/// 1 MiB (the UID is the peer's to choose, as long as a line). The backlog
/// counts a request's UID and payload against `max_queued_request_bytes`;
/// it also keys its index by the UID, and so does the map of running
/// handlers, which once held a copy each: a review measured 65.9 MiB live
/// for a backlog of 32 MiB.
#[tokio::test]
async fn a_backlog_of_requests_with_long_uids_holds_what_it_counts() {
    let _measuring = MEASURING.lock().await;
    let limit = 16 * MIB;
    let builder = SessionBuilder::new()
        .config(SessionConfig {
            max_concurrent_handlers: 1,
            max_queued_request_bytes: limit,
            ..SessionConfig::default()
        })
        .handler(handler_fn(|req: Request| async move {
            req.cancelled().await;
            Ok::<_, RemoteError>(())
        }));
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let setup = tokio::spawn(builder.setup(Channel::from_unix(ours, ChannelConfig::default()).unwrap()));
    let (mut reader, mut writer) = theirs.into_split();
    common::answer_handshake(&mut reader, &mut writer, Some(&["error", "cancel"])).await;
    let session = setup.await.unwrap().unwrap();
    let mut messages = session.messages().unwrap();
    let before = LIVE.load(Ordering::Relaxed);

    // One request for the handler, then as many as the backlog takes
    // (none refused: a refusal echoes the UID, and would be counted here).
    let waiting = limit / (MIB + 64) - 1;
    let peer = tokio::spawn(async move {
        for i in 0..=waiting {
            let uid = format!("{i:08}{}", "u".repeat(MIB - 8));
            let line = format!(
                "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:REQUEST\",\"_IPC_REQUEST/REQUEST_UID\":\"{uid}\",\"_IPC_REQUEST/PAYLOAD\":null}}\n"
            );
            writer.write_all(line.as_bytes()).await.unwrap();
        }
        writer.write_all(b"\"all sent\"\n").await.unwrap();
        (reader, writer)
    });
    let marker = tokio::time::timeout(Duration::from_secs(30), messages.recv())
        .await
        .expect("the plain message after the requests never came");
    assert_eq!(marker.unwrap().unwrap(), "all sent");
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let uids = (waiting + 1) * MIB;
    // The UIDs once each, and the read buffer a 1 MiB line grew (at most
    // twice the line, doubling), and little else.
    assert!(
        held <= uids + 3 * MIB,
        "{:.1} MiB live for {} requests with 1 MiB UIDs",
        held as f64 / MIB as f64,
        waiting + 1
    );
    session.close();
    drop(peer.await.unwrap());
}

/// Lines of the peer's whose parts the session once built as
/// `serde_json::Value` trees before it knew whether they concerned
/// anything: a tree takes 32 bytes for each `0,` of the text. A review
/// measured a peak of 384 to 512 MiB for a line of 16 MiB (the error data
/// of an answer nobody waits for, the extensions of a late handshake
/// request or of a handshake answer not for us; a 60 MiB line, 2 GiB).
/// Now the peak is the read buffer's and a copy or two of the line.
#[tokio::test]
async fn a_line_the_session_has_no_use_for_costs_no_more_than_a_few_times_itself() {
    let _measuring = MEASURING.lock().await;
    let zeros = |bytes: usize| format!("[0{}]", ",0".repeat(bytes / 2));
    let shapes = [
        (
            "the error data of an answer nobody waits for",
            r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"424242","_IPC_REQUEST/PAYLOAD":null,"_IPC_REQUEST/ERROR":{"name":"E","message":"m","code":ZEROS,"data":ZEROS}}"#,
        ),
        (
            "the extensions of a late handshake request",
            r#"{"_IPC_REQUEST/HANDSHAKE_UID":"h","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST","_IPC_REQUEST/EXTENSIONS":ZEROS}"#,
        ),
        (
            "the extensions of a handshake answer not for us",
            r#"{"_IPC_REQUEST/HANDSHAKE_UID":"not ours","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:RESPONSE","_IPC_REQUEST/EXTENSIONS":ZEROS}"#,
        ),
    ];
    let (session, mut reader, mut writer) = serve_a_hand_played_peer().await;
    let mut messages = session.messages().unwrap();
    // What the session writes (the answer to the late handshake) is read
    // and dropped.
    let drain = tokio::spawn(async move { tokio::io::copy(&mut reader, &mut tokio::io::sink()).await });
    for (what, shape) in shapes {
        let line = format!("{}\n\"after it\"\n", shape.replace("ZEROS", &zeros(4 * MIB)));
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        writer.write_all(line.as_bytes()).await.unwrap();
        let marker = tokio::time::timeout(Duration::from_secs(30), messages.recv())
            .await
            .expect("the plain message after the line never came");
        assert_eq!(marker.unwrap().unwrap(), "after it");
        // The line was built here before the count began: only the
        // session's copies are counted.
        assert_peak_within(what, before, 5 * line.len());
    }
    session.close();
    drain.abort();
}

/// The error of an answer to a request that waits for it: its `data`
/// stays the text that came (`RemoteError::data`). Built as a `Value`, a
/// review measured a peak of 204 MiB for a line of 4 MiB, 136 MiB of it
/// still held by the error the caller got.
#[tokio::test]
async fn the_error_data_of_an_answer_we_wait_for_costs_its_text() {
    let _measuring = MEASURING.lock().await;
    let (session, mut reader, mut writer) = serve_a_hand_played_peer().await;
    let asking = session.clone();
    let request = tokio::spawn(async move { asking.request_raw(&"q").await });
    let sent: serde_json::Value = serde_json::from_str(&common::read_line(&mut reader).await).unwrap();
    let uid = sent["_IPC_REQUEST/REQUEST_UID"].as_str().unwrap().to_owned();
    let zeros = format!("[0{}]", ",0".repeat(2 * MIB));
    let line = format!(
        "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:RESPONSE\",\"_IPC_REQUEST/REQUEST_UID\":\"{uid}\",\"_IPC_REQUEST/PAYLOAD\":null,\"_IPC_REQUEST/ERROR\":{{\"name\":\"E\",\"message\":\"m\",\"code\":{zeros},\"data\":{zeros}}}}}\n"
    );
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    writer.write_all(line.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("the answer never came")
        .unwrap();
    assert_peak_within("an error answer we wait for", before, 5 * line.len());
    match answer {
        Err(ipc_request::Error::Remote(e)) => assert_eq!(e.data.map(|d| d.get().len()), Some(zeros.len())),
        other => panic!("{other:?}"),
    }
    session.close();
}

/// A session with no handler, serving a peer played by hand over an
/// in-memory pipe, which speaks `error` and `cancel`.
async fn serve_a_hand_played_peer() -> (
    ipc_request::Session,
    common::hand_played::PeerReader,
    common::hand_played::PeerWriter,
) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let extensions = Some(&["error", "cancel"][..]);
    let channel = ChannelConfig::default();
    common::hand_played::serve_over(ours, theirs, SessionBuilder::new(), channel, extensions).await
}

/// Asserts that the bytes live rose at most `most` above `before` at any
/// moment since `PEAK` was set to `before`.
fn assert_peak_within(what: &str, before: usize, most: usize) {
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        peak <= most,
        "{what}: a peak of {:.1} MiB, past {:.1} MiB",
        peak as f64 / MIB as f64,
        most as f64 / MIB as f64
    );
}
