//! Unit tests of the channel: writes and failed writes, reading, closing,
//! and Node's internal messages.

use super::node_internal_cmd;

/// A channel over `ours` made on a runtime that shuts down before its
/// writer task is first polled, and a second runtime to use it on.
fn whose_writer_task_is_gone(ours: tokio::io::DuplexStream) -> (super::Channel, tokio::runtime::Runtime) {
    let first = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let channel =
        first.block_on(async { super::Channel::from_stream(ours, super::ChannelConfig::default()) });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (channel, second)
}

#[test]
fn finished_resolves_when_the_writer_task_was_dropped_before_it_ran() {
    // Used on another runtime: nothing may wait for ever.
    let (ours, _theirs) = tokio::io::duplex(64);
    let (channel, second) = whose_writer_task_is_gone(ours);
    let finished = second.block_on(async {
        let waited = std::time::Duration::from_secs(5);
        tokio::time::timeout(waited, channel.sender().finished()).await
    });
    assert!(finished.is_ok(), "finished() waits for a writer that is gone");
}

#[test]
fn sends_fail_and_write_nothing_once_the_writer_task_is_gone() {
    // The writer task is dropped with its runtime. A send on another
    // runtime must not take the direct path: a line the stream takes only
    // in part would stay half-written, with nobody to write the rest.
    use tokio::io::AsyncReadExt;
    let (ours, mut theirs) = tokio::io::duplex(100);
    let (channel, second) = whose_writer_task_is_gone(ours);
    second.block_on(async {
        let sender = channel.sender();
        sender.finished().await;
        for line in ["small".to_string(), "B".repeat(300)] {
            match sender.send(&line).await {
                Err(crate::Error::Closed(crate::CloseReason::Io(e))) => {
                    assert!(e.to_string().contains("writer task was dropped"), "{e}")
                }
                other => panic!("a send past a writer that is gone: {other:?}"),
            }
        }
        assert_eq!(sender.queued_bytes(), 0, "budget held by a line nobody writes");
        let mut got = [0; 8];
        let read = tokio::time::timeout(std::time::Duration::from_millis(100), theirs.read(&mut got)).await;
        assert!(read.is_err(), "bytes were written: {:?}", read);
    });
}

#[test]
fn a_writer_task_dropped_before_its_end_ends_the_receiver_as_a_failed_write() {
    // Whatever it had queued is lost, and the peer (still there) may never
    // end its stream: the receiver must end, or a session over it waits
    // for ever with its requests pending.
    let (ours, _theirs) = tokio::io::duplex(64);
    let (channel, second) = whose_writer_task_is_gone(ours);
    let (sender, mut receiver, _) = channel.into_parts();
    second.block_on(async {
        let waited = std::time::Duration::from_secs(5);
        let ended = tokio::time::timeout(waited, receiver.recv())
            .await
            .expect("the receiver waits for ever on a writer that is gone");
        match ended {
            Err(crate::Error::Closed(crate::CloseReason::Io(e))) => {
                assert!(e.to_string().contains("writer task was dropped"), "{e}")
            }
            other => panic!("lines lost with the writer are no clean end: {other:?}"),
        }
        assert!(sender.write_error().is_some());
    });
}

#[test]
fn a_line_left_half_written_when_the_writer_task_is_dropped_gives_its_budget_back() {
    // A direct write the stream takes in part leaves the rest for the
    // writer task; the task is dropped with its runtime before it runs.
    let (ours, _theirs) = tokio::io::duplex(100);
    let first = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let channel = first.block_on(async {
        let channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
        channel.sender().send(&"B".repeat(300)).await.unwrap();
        channel
    });
    assert!(channel.sender().queued_bytes() > 0, "the rest waits for the task");
    drop(first);
    assert_eq!(
        channel.sender().queued_bytes(),
        0,
        "budget held by a line nobody writes"
    );
}

#[tokio::test]
async fn finished_resolves_at_once_after_a_failed_write_though_the_shutdown_hangs() {
    let (ours, _theirs) = tokio::io::duplex(1024);
    let fail = Gate::default();
    fail.open();
    let writer = FailsLaterNeverShutsDown { fail };
    let channel = super::Channel::new(ours, writer, super::ChannelConfig::default());
    assert!(channel.sender().send(&"lost").await.is_err(), "the write fails");
    tokio::time::timeout(std::time::Duration::from_secs(5), channel.sender().finished())
        .await
        .expect("finished() waits for a shutdown that never completes");
}

#[tokio::test]
async fn lines_left_unwritten_by_a_failed_channel_give_their_budget_back() {
    let (ours, theirs) = tokio::io::duplex(64);
    let channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
    let sender = channel.sender().clone();
    for i in 0..10 {
        sender.send(&format!("{i:0>96}")).await.unwrap();
    }
    assert!(
        sender.queued_bytes() > 0,
        "the lines should wait: the pipe holds 64 bytes"
    );
    drop(theirs);
    let drained = async {
        while sender.queued_bytes() > 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), drained)
        .await
        .expect("the budget of unwritten lines was never given back");
    assert!(sender.send(&1).await.is_err(), "the channel has failed");
}

/// A write half that fails every write, after taking nothing the first
/// time if `waits_first` (the line then goes on to the writer task);
/// its shutdown is `inner`'s.
struct BrokenWriter<W> {
    inner: W,
    waits_first: bool,
}

fn broken() -> BrokenWriter<tokio::io::Sink> {
    BrokenWriter {
        inner: tokio::io::sink(),
        waits_first: false,
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for BrokenWriter<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if std::mem::take(&mut self.waits_first) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Err(std::io::Error::other("broken")))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_failed_write_shuts_the_write_half_down_on_either_path() {
    // The direct path (nothing queued: the sender writes, and fails) and
    // the writer task's (the line waits first): either way a peer still
    // there sees the channel end at once, though our handles live.
    use tokio::io::AsyncReadExt;
    for waits_first in [false, true] {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let (read_half, write_half) = tokio::io::split(ours);
        let writer = BrokenWriter {
            inner: write_half,
            waits_first,
        };
        let channel = super::Channel::new(read_half, writer, super::ChannelConfig::default());
        let _ = channel.sender().send(&1).await;
        let mut byte = [0u8; 1];
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), theirs.read(&mut byte)).await;
        assert_eq!(
            seen.expect("the peer never saw the channel end").unwrap(),
            0,
            "waits_first {waits_first}"
        );
        drop(channel);
    }
}

/// A flag a test opens once, and the waker of the last poll that found it
/// shut, woken as it opens: what the scripted writers below wait on.
#[derive(Clone, Default)]
struct Gate {
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    waker: std::sync::Arc<std::sync::Mutex<Option<std::task::Waker>>>,
}

impl Gate {
    /// Whether it is open; if not, `cx` is woken once it opens.
    fn poll_open(&self, cx: &mut std::task::Context<'_>) -> bool {
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether anything has waited on it yet.
    fn waited_on(&self) -> bool {
        self.waker.lock().unwrap().is_some()
    }

    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(waker) = self.waker.lock().unwrap().take() {
            waker.wake();
        }
    }
}

/// Takes nothing until `fail` opens, then fails; its shutdown never
/// completes.
struct FailsLaterNeverShutsDown {
    fail: Gate,
}

impl tokio::io::AsyncWrite for FailsLaterNeverShutsDown {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.fail.poll_open(cx) {
            return std::task::Poll::Ready(Err(std::io::Error::other("broken")));
        }
        std::task::Poll::Pending
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn lines_lost_to_a_failed_write_give_their_budget_back_though_the_shutdown_hangs() {
    let (ours, _theirs) = tokio::io::duplex(1024);
    let fail = Gate::default();
    let writer = FailsLaterNeverShutsDown { fail: fail.clone() };
    let channel = super::Channel::new(ours, writer, super::ChannelConfig::default());
    let sender = channel.sender().clone();
    // The first line waits in the writer task, which holds the stream;
    // the next two queue behind it.
    sender.send(&"first").await.unwrap();
    while !fail.waited_on() {
        tokio::task::yield_now().await;
    }
    sender.send(&"second").await.unwrap();
    let written = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send_line_written(b"\"third\"\n".to_vec()).await }
    });
    tokio::task::yield_now().await;
    fail.open();
    let written = tokio::time::timeout(std::time::Duration::from_secs(5), written)
        .await
        .expect("a sender waiting for its lost line to be written waits for ever")
        .unwrap();
    assert!(written.is_err(), "the line was never written");
    let released = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while sender.queued_bytes() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        released.is_ok(),
        "{} bytes of budget never came back",
        sender.queued_bytes()
    );
}

/// Buffers every write, and holds it until `released` opens, which lets
/// its flush go through (as a `BufWriter` over a full pipe would).
#[derive(Clone, Default)]
struct FlushesWhenReleased {
    released: Gate,
}

impl tokio::io::AsyncWrite for FlushesWhenReleased {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(bytes.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.released.poll_open(cx) {
            return std::task::Poll::Ready(Ok(()));
        }
        std::task::Poll::Pending
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[tokio::test]
async fn a_line_is_told_written_only_once_the_stream_has_flushed_it() {
    let stream = FlushesWhenReleased::default();
    let channel = super::Channel::new(
        tokio::io::empty(),
        stream.clone(),
        super::ChannelConfig::default(),
    );
    // The first line takes the direct path, whose flush does not finish;
    // the second queues behind it and goes out in the writer task's batch.
    let mut waiting = Vec::new();
    for line in [b"1\n", b"2\n"] {
        let sender = channel.sender().clone();
        waiting.push(tokio::spawn(async move {
            sender.send_line_written(line.to_vec()).await
        }));
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }
    for (i, task) in waiting.iter().enumerate() {
        assert!(
            !task.is_finished(),
            "line {} told written before the flush",
            i + 1
        );
    }
    stream.released.open();
    for task in waiting {
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("told written once flushed")
            .unwrap()
            .unwrap();
    }
}

/// Takes the first 5 bytes of its first write; fails its second with an
/// error that does not repeat, once told to go on (until then it holds the
/// thread, and with it the channel's stream); takes every write after.
struct FailsOnceMidLine {
    calls: usize,
    /// Set as the second write starts.
    in_second: std::sync::Arc<std::sync::atomic::AtomicBool>,
    go_on: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncWrite for FailsOnceMidLine {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.calls += 1;
        let taken = match self.calls {
            1 => 5.min(bytes.len()),
            2 => {
                self.in_second.store(true, std::sync::atomic::Ordering::SeqCst);
                let (go_on, told) = &*self.go_on;
                let mut go = go_on.lock().unwrap();
                while !*go {
                    go = told.wait(go).unwrap();
                }
                return std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
            }
            _ => bytes.len(),
        };
        self.written.lock().unwrap().extend_from_slice(&bytes[..taken]);
        std::task::Poll::Ready(Ok(taken))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_line_queued_behind_a_direct_write_that_fails_is_not_written() {
    // A's direct write puts 5 bytes out, then fails; B's large line was
    // queued meanwhile (A held the stream). Nothing may follow A's torn
    // start (B's line would be lost in it), and B must not hear "written".
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let in_second = Arc::new(AtomicBool::new(false));
    let go_on = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stream = FailsOnceMidLine {
        calls: 0,
        in_second: in_second.clone(),
        go_on: go_on.clone(),
        written: written.clone(),
    };
    let channel = super::Channel::new(tokio::io::empty(), stream, super::ChannelConfig::default());
    let sender = channel.sender().clone();
    let a = tokio::spawn({
        let sender = sender.clone();
        async move {
            sender
                .send_line(format!("[\"{}\"]\n", "a".repeat(100)).into_bytes())
                .await
        }
    });
    while !in_second.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    let b = tokio::spawn({
        let sender = sender.clone();
        async move {
            let line = format!("[\"{}\"]\n", "b".repeat(70 * 1024)).into_bytes();
            sender.send_line_written(line).await
        }
    });
    while !sender.has_unwritten() {
        tokio::task::yield_now().await;
    }
    *go_on.0.lock().unwrap() = true;
    go_on.1.notify_all();
    assert!(a.await.unwrap().is_err());
    let b = tokio::time::timeout(std::time::Duration::from_secs(10), b).await;
    assert!(b.expect("B's send ends").unwrap().is_err(), "B told written");
    tokio::time::timeout(std::time::Duration::from_secs(10), sender.finished())
        .await
        .expect("the channel finishes");
    assert_eq!(
        written.lock().unwrap().as_slice(),
        b"[\"aaa",
        "written after the failure"
    );
    assert!(
        !sender.has_unwritten(),
        "lost lines reported as waiting to be written"
    );
}

#[tokio::test]
async fn after_a_failed_write_the_receiver_hands_out_what_came_then_ends() {
    use tokio::io::AsyncWriteExt;
    let (ours, mut theirs) = tokio::io::duplex(1024);
    let mut channel = super::Channel::new(ours, broken(), super::ChannelConfig::default());
    theirs.write_all(b"1\n2\n").await.unwrap();
    assert!(channel.sender().send(&0).await.is_err(), "the write fails");
    let mut next = async || tokio::time::timeout(std::time::Duration::from_secs(5), channel.recv()).await;
    assert_eq!(next().await.unwrap().unwrap().unwrap().get(), "1");
    assert_eq!(next().await.unwrap().unwrap().unwrap().get(), "2");
    // The peer's end is still open: only the failed write can end this.
    match next()
        .await
        .expect("the receiver waited for more after the channel failed")
    {
        Err(crate::Error::Closed(crate::CloseReason::Io(e))) => assert_eq!(e.to_string(), "broken"),
        other => panic!("{other:?}"),
    }
    drop(theirs);
}

#[tokio::test]
async fn what_a_gone_peer_wrote_is_read_though_a_write_to_it_failed_first() {
    // The peer writes its last line and goes; our next write fails
    // (a broken pipe) before the reactor has reported the line.
    use std::io::Write;
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut channel = super::Channel::from_unix_socket(ours.into(), super::ChannelConfig::default()).unwrap();
    theirs.write_all(b"\"the last line\"\n").unwrap();
    drop(theirs);
    assert!(channel.sender().send(&0).await.is_err(), "the peer is gone");
    let mut next = async || tokio::time::timeout(std::time::Duration::from_secs(5), channel.recv()).await;
    assert_eq!(next().await.unwrap().unwrap().unwrap().get(), "\"the last line\"");
    assert!(next().await.unwrap().unwrap().is_none(), "then its end of stream");
}

#[tokio::test]
async fn a_closed_pipe_to_a_peer_whose_other_pipe_stays_open_still_ends_the_receiver() {
    // Pipes, as a child's stdin and stdout: the peer closes the one we
    // write to (a broken pipe) and keeps the one we read.
    let (our_tx, their_rx) = tokio::net::unix::pipe::pipe().unwrap();
    let (their_tx, our_rx) = tokio::net::unix::pipe::pipe().unwrap();
    let mut channel = super::Channel::new(our_rx, our_tx, super::ChannelConfig::default());
    drop(their_rx);
    // Refused or accepted (then lost): either way the write fails.
    let _ = channel.sender().send(&0).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), channel.recv())
        .await
        .expect("the receiver waits for ever after the failure");
    assert!(
        matches!(ended, Err(crate::Error::Closed(crate::CloseReason::Io(_)))),
        "{ended:?}"
    );
    drop(their_tx);
}

#[tokio::test]
async fn a_write_failing_while_close_drains_is_reported_as_the_failure() {
    let (ours, _theirs) = tokio::io::duplex(1024);
    let channel = super::Channel::new(
        ours,
        BrokenWriter {
            inner: tokio::io::sink(),
            waits_first: true,
        },
        super::ChannelConfig::default(),
    );
    let (sender, mut receiver, _) = channel.into_parts();
    sender
        .send(&1)
        .await
        .expect("accepted: the writer task writes it");
    sender.close();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), receiver.recv()).await;
    match ended.expect("the receiver waits for ever after the failure") {
        Err(crate::Error::Closed(crate::CloseReason::Io(e))) => assert_eq!(e.to_string(), "broken"),
        other => panic!("a lost line is no clean close: {other:?}"),
    }
}

#[tokio::test]
async fn a_write_failing_while_the_receiver_waits_wakes_it() {
    let (ours, _theirs) = tokio::io::duplex(1024);
    let channel = super::Channel::new(ours, broken(), super::ChannelConfig::default());
    let (sender, mut receiver, _) = channel.into_parts();
    let waiting = tokio::spawn(async move { receiver.recv().await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "nothing to read yet");
    assert!(sender.send(&0).await.is_err());
    let received = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("the waiting receiver was not woken by the failure")
        .unwrap();
    assert!(
        matches!(received, Err(crate::Error::Closed(crate::CloseReason::Io(_)))),
        "{received:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_send_reported_queued_is_written_when_close_races_it() {
    // Three tasks send as fast as the pipe allows while a fourth closes
    // the channel: each line whose send said Ok must reach the peer
    // before its end of stream, each later send must fail.
    for round in 0..100u64 {
        let (ours, theirs) = tokio::io::duplex(256);
        let ours = super::Channel::from_stream(ours, super::ChannelConfig::default());
        let mut theirs = super::Channel::from_stream(theirs, super::ChannelConfig::default());
        let reader = tokio::spawn(async move {
            let mut lines = 0u64;
            while theirs.recv().await.unwrap().is_some() {
                lines += 1;
            }
            lines
        });
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let sender = ours.sender().clone();
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    while sender.send(&sent).await.is_ok() {
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_micros(round % 64)).await;
        ours.sender().close();
        let mut sent = 0;
        for task in senders {
            sent += task.await.unwrap();
        }
        let lines = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the stream never ended")
            .unwrap();
        assert_eq!(lines, sent, "round {round}: lines read / sends that said Ok");
    }
}

#[tokio::test]
async fn a_channel_dropped_without_close_ends_the_stream_after_its_lines() {
    // Over a real socket pair, as a spawned child's channel is: the
    // peer must see what was sent, then end of stream, not wait for ever.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    for s in [&ours, &theirs] {
        s.set_nonblocking(true).unwrap();
    }
    let config = super::ChannelConfig::default();
    let ours = super::Channel::from_unix_socket(ours.into(), config.clone()).unwrap();
    let mut theirs = super::Channel::from_unix_socket(theirs.into(), config).unwrap();
    ours.sender().send(&"last words").await.unwrap();
    drop(ours);
    let within = std::time::Duration::from_secs(5);
    let got = tokio::time::timeout(within, theirs.recv()).await.expect("a line");
    assert_eq!(got.unwrap().unwrap().get(), "\"last words\"");
    let end = tokio::time::timeout(within, theirs.recv())
        .await
        .expect("the stream never ended");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn the_line_after_a_big_one_is_read_into_the_front_of_the_buffer() {
    use tokio::io::AsyncWriteExt;
    let (ours, mut theirs) = tokio::io::duplex(1 << 20);
    let mut channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
    let big = format!("\"{}\"\n", "x".repeat(150_000));
    theirs.write_all(big.as_bytes()).await.unwrap();
    assert_eq!(channel.recv().await.unwrap().unwrap().get().len(), 150_002);
    theirs.write_all(b"[1]\n").await.unwrap();
    assert_eq!(channel.recv().await.unwrap().unwrap().get(), "[1]");
    // Read after the big line, the small one would leave the buffer
    // with only the space behind both (under 150,000 bytes); read at
    // the front, it leaves all of it but its own 4 bytes.
    let room = channel.receiver.buf.capacity();
    assert!(room > 150_000, "{room} bytes of room after the small line");
}

#[tokio::test]
async fn node_messages_are_taken_out_unless_the_parser_rules_them_out() {
    use super::Parsed;
    use tokio::io::AsyncWriteExt;
    let (ours, mut theirs) = tokio::io::duplex(4096);
    let mut channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
    theirs
        .write_all(b"{\"cmd\":\"NODE_A\"}\n[1]\n{\"cmd\":\"NODE_B\"}\n[2]\n{\"cmd\":\"NODE_C\"}\n")
        .await
        .unwrap();
    drop(theirs);
    // NODE_A: unchecked, so searched and taken out. NODE_B: refused by
    // the parser, still Node's. NODE_C: ruled out, so it is a message.
    let parse = |line: crate::frame::LineText<'_>| -> Result<Parsed<String>, serde_json::Error> {
        let text = line.text();
        if text.contains("NODE_B") {
            return Err(serde::de::Error::custom("refused"));
        }
        let text = text.to_string();
        Ok(if text.contains("NODE_C") {
            Parsed::NotNodes(text)
        } else {
            Parsed::Unchecked(text)
        })
    };
    let mut got = Vec::new();
    while let Some(text) = channel.receiver.recv_with(parse).await.unwrap() {
        got.push(text);
    }
    assert_eq!(got, ["[1]", "[2]", r#"{"cmd":"NODE_C"}"#]);
}

#[tokio::test]
async fn a_message_a_node_peer_would_take_for_its_own_is_refused_unsent() {
    // PROTOCOL.md 1.3: Node handles such a line itself, and an
    // unexpected NODE_ command makes it fail an internal assertion.
    let (a, mut b) = super::Channel::pair(super::ChannelConfig::default());
    for reserved in [
        serde_json::json!({"cmd": "NODE_HANDLE_ACK"}),
        serde_json::json!({"x": 1, "cmd": "NODE_anything"}),
    ] {
        let refused = a.sender().send(&reserved).await;
        assert!(
            matches!(refused, Err(crate::Error::ReservedMessage(_))),
            "{reserved}: {refused:?}"
        );
    }
    a.sender()
        .send(&serde_json::json!({"cmd": "mine"}))
        .await
        .unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap().get(), r#"{"cmd":"mine"}"#);
}

#[tokio::test]
async fn a_nack_still_goes_when_the_recv_that_read_the_handle_is_dropped() {
    // The NACK waits for queue space; a caller's timeout around `recv`
    // drops it there. The next `recv` must send it: a Node peer holds
    // back everything after a handle until it is answered.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64);
    let (mut their_reader, mut their_writer) = tokio::io::split(theirs);
    let config = super::ChannelConfig {
        write_queue_bytes: 64,
        ..super::ChannelConfig::default()
    };
    let mut channel = super::Channel::from_stream(ours, config);
    // Fills the pipe and takes the whole queue budget.
    channel.sender().send(&"x".repeat(200)).await.unwrap();
    their_writer
        .write_all(b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\"}\n[1]\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_millis(200), channel.recv()).await;
    assert!(waited.is_err(), "the NACK should wait for queue space");
    let reading = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut chunk = [0; 256];
        while !String::from_utf8_lossy(&seen).contains("NODE_HANDLE_NACK") {
            let n = their_reader.read(&mut chunk).await.unwrap();
            assert!(n > 0, "end of stream before the NACK");
            seen.extend_from_slice(&chunk[..n]);
        }
    });
    let next = channel.recv().await.unwrap().unwrap();
    assert_eq!(next.get(), "[1]");
    tokio::time::timeout(std::time::Duration::from_secs(5), reading)
        .await
        .expect("the NACK of the dropped recv never went")
        .unwrap();
}

#[tokio::test]
async fn channels_over_a_unix_socket_pair_talk_both_ways() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let mut a = super::Channel::from_unix(a, super::ChannelConfig::default()).unwrap();
    let mut b = super::Channel::from_unix(b, super::ChannelConfig::default()).unwrap();
    a.sender().send(&serde_json::json!({"to": "b"})).await.unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap().get(), r#"{"to":"b"}"#);
    b.sender().send(&[1, 2]).await.unwrap();
    assert_eq!(a.recv().await.unwrap().unwrap().get(), "[1,2]");
    a.sender().close();
    assert!(
        b.recv().await.unwrap().is_none(),
        "a closed: b sees end of stream"
    );
}

#[test]
fn node_internal_commands_are_read_as_json_parse_reads_them() {
    let internal = [
        r#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"with":"handle"}}"#,
        r#"{"cmd":"x","cmd":"NODE_HANDLE_ACK"}"#,
        r#"{"\u0063md":"NODE_HANDLE_ACK"}"#,
        r#"{"a":"\n","cmd":"NODE_CLUSTER"}"#,
        // An earlier duplicate no value tree takes does not hide the
        // last one (Node: 1e400 is Infinity, depth has no limit).
        r#"{"cmd":1e400,"cmd":"NODE_HANDLE"}"#,
        &format!(
            r#"{{"cmd":{}{},"cmd":"NODE_HANDLE"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        ),
        // A lone surrogate in the name is still a name Node reads.
        r#"{"cmd":"NODE_HANDLE\ud800"}"#,
    ];
    for json in internal {
        assert!(node_internal_cmd(json).is_some(), "{json:.80}");
    }
    let plain = [
        r#"{"cmd":"NODE_"}"#,
        r#"{"cmd":"NODE_HANDLE_ACK","cmd":"x"}"#,
        r#"{"cmd":5}"#,
        r#"["NODE_\"cmd"]"#,
        r#""{\"cmd\":\"NODE_HANDLE\"}""#,
        r#"{"nested":{"cmd":"NODE_HANDLE"}}"#,
        r#"{"cmd":"NODE_HANDLE"} trailing"#,
        r#"{"cmd":"NODE_HANDLE"}{}"#,
        r#"{"cmd":"NODE_HANDLE","cmd":1e400}"#,
    ];
    for json in plain {
        assert!(node_internal_cmd(json).is_none(), "{json}");
    }
}

#[tokio::test]
async fn a_handle_too_long_to_read_is_refused_not_reported() {
    // Node holds back everything after a handle until it is answered; a
    // handle's message past our maximum length must be answered too.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut their_reader, mut their_writer) = tokio::io::split(theirs);
    let config = super::ChannelConfig {
        max_message_len: 64,
        ..super::ChannelConfig::default()
    };
    let mut channel = super::Channel::from_stream(ours, config);
    let pad = "p".repeat(200);
    let handle =
        format!("{{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{{\"pad\":\"{pad}\"}}}}\n");
    their_writer.write_all(handle.as_bytes()).await.unwrap();
    their_writer.write_all(b"[1]\n").await.unwrap();
    let next = channel
        .recv()
        .await
        .expect("the handle was reported as a bad line");
    assert_eq!(next.unwrap().get(), "[1]");
    let mut seen = Vec::new();
    let mut chunk = [0; 256];
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains("NODE_HANDLE_NACK") {
            let n = their_reader.read(&mut chunk).await.unwrap();
            assert!(n > 0, "end of stream before the NACK");
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no NACK for the handle");
    assert_eq!(String::from_utf8_lossy(&seen), "{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
}

/// Serves `line` bytes of `x`, then `tail`, filling all the room each read
/// offers; notes the largest room a read offered.
struct LongLine {
    line: usize,
    tail: &'static [u8],
    largest_read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl LongLine {
    fn new(line: usize, tail: &'static [u8]) -> Self {
        LongLine {
            line,
            tail,
            largest_read: Default::default(),
        }
    }
}

impl tokio::io::AsyncRead for LongLine {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.largest_read
            .fetch_max(buf.remaining(), std::sync::atomic::Ordering::Relaxed);
        let xs = [b'x'; 4096];
        while self.line > 0 && buf.remaining() > 0 {
            let n = self.line.min(buf.remaining()).min(xs.len());
            buf.put_slice(&xs[..n]);
            self.line -= n;
        }
        let n = self.tail.len().min(buf.remaining());
        buf.put_slice(&self.tail[..n]);
        self.tail = &self.tail[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

/// A receiver with a maximum message length of `max`, reading `reader`.
fn receiving(reader: LongLine, max: usize) -> super::ChannelReceiver {
    let config = super::ChannelConfig {
        max_message_len: max,
        ..super::ChannelConfig::default()
    };
    super::Channel::new(reader, tokio::io::sink(), config)
        .into_parts()
        .1
}

async fn expect_too_long(receiver: &mut super::ChannelReceiver) {
    match receiver.recv().await {
        Err(crate::Error::Frame(crate::FrameError::TooLong { .. })) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_line_too_long_holds_its_limit_plus_one_read_and_not_after() {
    let max = 8 << 20;
    let reader = LongLine::new(40 << 20, b"\n1\n");
    let largest_read = reader.largest_read.clone();
    let mut receiver = receiving(reader, max);
    expect_too_long(&mut receiver).await;
    let largest = largest_read.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        largest <= super::READ_LIMIT,
        "one read offered {largest} bytes of room"
    );
    assert!(
        receiver.largest_buffer <= max + super::READ_LIMIT,
        "a buffer of {} bytes for a limit of {max}",
        receiver.largest_buffer
    );
    assert!(
        receiver.buf.capacity() <= super::KEEP_AFTER_TOO_LONG,
        "the buffer kept {} bytes after the line",
        receiver.buf.capacity()
    );
    assert_eq!(receiver.recv().await.unwrap().unwrap().get(), "1");
}

/// The read that passes the limit brings the line's end and the lines
/// after it: the decoder skips the line whole, and the buffer's capacity
/// (counted from where reading resumes) no longer shows how large it grew.
/// It is given back all the same, with the lines after the long one.
#[tokio::test]
async fn a_line_too_long_skipped_whole_gives_its_buffer_back_and_keeps_what_followed() {
    // Just under the 8 MiB the buffer doubles to: the 1 MiB read from
    // 7 MiB holds the line's end and the next two lines.
    let max = (8 << 20) - (100 << 10);
    let mut receiver = receiving(LongLine::new(max + 1, b"\n1\n2\n"), max);
    expect_too_long(&mut receiver).await;
    assert_eq!(receiver.recv().await.unwrap().unwrap().get(), "1");
    assert_eq!(receiver.recv().await.unwrap().unwrap().get(), "2");
    assert!(receiver.recv().await.unwrap().is_none(), "more than was sent");
    // Empty now, and so counted from the front of its allocation.
    assert!(
        receiver.buf.capacity() <= super::KEEP_AFTER_TOO_LONG,
        "the buffer kept {} bytes after the line",
        receiver.buf.capacity()
    );
}

#[test]
fn a_node_command_is_known_by_the_head_of_its_line() {
    use super::node_internal_cmd_at_head as cmd;
    assert_eq!(
        cmd(br#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"#).as_deref(),
        Some("NODE_HANDLE")
    );
    assert_eq!(
        cmd(b" {\r\n\"cmd\" :\t\"NODE_CLUSTER\",").as_deref(),
        Some("NODE_CLUSTER")
    );
    assert_eq!(cmd(br#"{"cmd":"NODE_\u0058","#).as_deref(), Some("NODE_X"));
    assert_eq!(cmd(br#"{"cmd":"NODE_\ud800","#).as_deref(), Some("NODE_\u{fffd}"));
    for not_node in [
        &br#"{"cmd":"NODE_"#[..], // the string does not end in the head
        br#"{"cmd":"NODE_","#,    // not longer than 5 characters
        br#"{"cmd":"node_handle","#,
        br#"{"cmd":1,"#,
        br#"{"msg":{},"cmd":"NODE_HANDLE""#, // not first: not how Node writes its own
        br#"["cmd","NODE_HANDLE"]"#,
        br#"{"cmd":"NODE_H\"#,
        b"",
    ] {
        assert_eq!(cmd(not_node), None, "{}", String::from_utf8_lossy(not_node));
    }
}

/// The lines the peer end reads until the stream ends, as texts.
async fn read_to_end_lines(mut theirs: impl tokio::io::AsyncRead + Unpin) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), theirs.read_to_end(&mut bytes))
        .await
        .expect("the stream never ended")
        .unwrap();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_withdrawn_line_is_never_written_and_the_others_keep_their_order() {
    // A 64-byte pipe nobody reads yet: every line waits in the queue.
    let (ours, theirs) = tokio::io::duplex(64);
    let channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
    let sender = channel.sender().clone();
    let mut tickets: Vec<Option<super::LineTicket>> = Vec::new();
    for i in 0..10 {
        // Both paths: the direct one queues too while others wait.
        let line = format!("\"{i:0>96}\"\n").into_bytes();
        let ticket = sender.send_withdrawable_line(line, i % 2 == 0).await.unwrap();
        assert!(ticket.is_some(), "a queued line comes with a ticket");
        tickets.push(ticket);
    }
    for i in [0, 3, 6, 9] {
        let ticket = tickets[i].take().unwrap();
        assert!(sender.withdraw(ticket), "line {i} was still queued");
    }
    sender.close();
    let lines = read_to_end_lines(theirs).await;
    let expected: Vec<String> = [1, 2, 4, 5, 7, 8]
        .iter()
        .map(|i| format!("\"{i:0>96}\""))
        .collect();
    assert_eq!(lines, expected);
    // Written lines can no longer be taken back; every byte of budget is back.
    assert!(!sender.withdraw(tickets[1].take().unwrap()));
    tokio::time::timeout(std::time::Duration::from_secs(5), sender.finished())
        .await
        .expect("the writer task never ended: a withdrawn line still counted as queued?");
    assert_eq!(sender.queued_bytes(), 0);
}

#[tokio::test]
async fn a_large_line_behind_a_batch_the_peer_has_not_read_can_still_be_withdrawn() {
    // The writer task is stuck writing a 60 KiB batch into a 64-byte pipe
    // nobody reads; the 512 KiB line behind it has not gone anywhere yet.
    let (ours, theirs) = tokio::io::duplex(64);
    let channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
    let sender = channel.sender().clone();
    let small = format!("\"{}\"\n", "s".repeat(60 * 1024)).into_bytes();
    // Both within the default 1 MiB queue: neither send waits for room.
    let large = format!("\"{}\"\n", "l".repeat(512 * 1024)).into_bytes();
    let sends = async {
        let _small = sender.send_withdrawable_line(small.clone(), true).await.unwrap();
        sender.send_withdrawable_line(large, true).await.unwrap().unwrap()
    };
    let large_ticket = tokio::time::timeout(std::time::Duration::from_secs(5), sends)
        .await
        .expect("a send waited for room");
    // Let the writer task take what it will.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        sender.withdraw(large_ticket),
        "the large line was taken before its turn"
    );
    sender.close();
    let lines = read_to_end_lines(theirs).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].len(), small.len() - 1);
    tokio::time::timeout(std::time::Duration::from_secs(5), sender.finished())
        .await
        .expect("the writer task never ended: the withdrawn line still counted as queued?");
    assert_eq!(sender.queued_bytes(), 0, "the withdrawn line's budget is back");
}

#[tokio::test]
async fn a_line_written_at_once_has_no_ticket() {
    let (ours, _theirs) = tokio::io::duplex(4096);
    let channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
    let ticket = channel
        .sender()
        .send_withdrawable_line(b"\"now\"\n".to_vec(), false)
        .await
        .unwrap();
    assert!(ticket.is_none(), "nothing waited: the line is written already");
}

#[tokio::test]
async fn a_direct_write_the_stream_takes_nothing_of_can_still_be_withdrawn() {
    // A 64-byte pipe nobody reads, filled exactly: nothing is queued, so
    // the next line takes the direct path, and the stream takes none of
    // it. Nothing of it is written: it must come with a ticket, and be
    // withdrawable, not wait as written in the partial slot. (On this
    // runtime the writer task does not run between the send and the
    // withdrawal: nothing here waits.)
    let (ours, theirs) = tokio::io::duplex(64);
    let channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
    let sender = channel.sender().clone();
    let fills = format!("\"{}\"\n", "f".repeat(61)).into_bytes();
    assert_eq!(fills.len(), 64);
    let none = sender.send_withdrawable_line(fills, false).await.unwrap();
    assert!(none.is_none(), "the first line is written whole");
    assert!(!sender.has_unwritten());
    let line = b"\"withdrawn\"\n".to_vec();
    let ticket = sender.send_withdrawable_line(line, false).await.unwrap();
    let ticket = ticket.expect("a line the stream took nothing of is queued, with a ticket");
    assert!(
        sender.withdraw(ticket),
        "nothing of it was written: it can be taken back"
    );
    // A later line keeps its place behind it, and is written.
    let after = sender
        .send_withdrawable_line(b"\"after\"\n".to_vec(), false)
        .await;
    assert!(after.unwrap().is_some(), "queued behind the withdrawn one");
    sender.close();
    let lines = read_to_end_lines(theirs).await;
    assert_eq!(
        lines,
        [format!("\"{}\"", "f".repeat(61)), "\"after\"".to_string()]
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), sender.finished())
        .await
        .expect("the writer task never ended: the withdrawn line still counted as queued?");
    assert_eq!(sender.queued_bytes(), 0, "every line's budget is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_line_is_written_exactly_when_its_withdrawal_fails() {
    // Withdrawals race the writer task taking lines over a real socket
    // pair with a reader: the peer must get exactly the lines whose
    // withdrawal failed, whole and in order.
    let mut withdrawn_in_all = 0;
    for round in 0..20 {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        for s in [&ours, &theirs] {
            s.set_nonblocking(true).unwrap();
            // A small socket buffer, so that lines wait in the queue.
            let size: libc::c_int = 4096;
            // SAFETY: a valid socket and an int option of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(s),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
        }
        let channel = super::Channel::from_unix_socket(ours.into(), super::ChannelConfig::default()).unwrap();
        let theirs = tokio::net::UnixStream::from_std(theirs).unwrap();
        // And a peer that reads in small bites.
        let peer = tokio::spawn(read_to_end_lines(SlowReader(theirs)));
        let sender = channel.sender().clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let withdrawing = sender.clone();
        let withdrawer = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut n = 0u32;
            while let Some((i, ticket)) = rx.recv().await {
                let ticket: Option<super::LineTicket> = ticket;
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345 + i);
                let withdrawn = n % 3 == 0 && ticket.is_some_and(|t| withdrawing.withdraw(t));
                if !withdrawn {
                    kept.push(i);
                }
                if n % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            kept
        });
        for i in 0..2_000u32 {
            let line = format!("[{round},{i},\"{}\"]\n", "x".repeat((i % 50) as usize)).into_bytes();
            let ticket = sender.send_withdrawable_line(line, i % 3 != 0).await.unwrap();
            tx.send((i, ticket)).unwrap();
        }
        drop(tx);
        let kept = withdrawer.await.unwrap();
        sender.close();
        let got: Vec<u32> = peer
            .await
            .unwrap()
            .iter()
            .map(|line| {
                let v: (u32, u32, String) = serde_json::from_str(line).expect("a whole line");
                assert_eq!(v.0, round);
                v.1
            })
            .collect();
        withdrawn_in_all += 2_000 - kept.len();
        assert_eq!(got, kept, "round {round}");
    }
    // Not a check of the code: that the race above was run at all.
    assert!(withdrawn_in_all > 0, "no line was withdrawn in any round");
}

/// Reads at most 256 bytes at a time.
struct SlowReader<R>(R);

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for SlowReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut small = [0u8; 256];
        let mut bite = tokio::io::ReadBuf::new(&mut small[..buf.remaining().min(256)]);
        match std::pin::Pin::new(&mut self.0).poll_read(cx, &mut bite) {
            std::task::Poll::Ready(Ok(())) => {
                buf.put_slice(bite.filled());
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[tokio::test]
async fn no_line_longer_than_a_node_peer_reads_is_written_whatever_the_maximum() {
    use crate::frame::NODE_MAX_LINE_LEN;
    let config = super::ChannelConfig {
        max_message_len: usize::MAX,
        ..super::ChannelConfig::default()
    };
    let channel = super::Channel::new(tokio::io::empty(), tokio::io::sink(), config);
    // A string whose JSON text, quotes included, is one byte past the cap.
    let text = "x".repeat(NODE_MAX_LINE_LEN - 1);
    match channel.sender().send(text.as_str()).await {
        Err(crate::Error::Frame(crate::FrameError::TooLong { len, max })) => {
            assert_eq!(max, NODE_MAX_LINE_LEN);
            assert!(len > NODE_MAX_LINE_LEN, "{len}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(channel.sender().queued_bytes(), 0, "nothing of it was queued");
    // The cap is Node's: a maximum below it is the one that counts.
    let config = super::ChannelConfig {
        max_message_len: 10,
        ..super::ChannelConfig::default()
    };
    let channel = super::Channel::new(tokio::io::empty(), tokio::io::sink(), config);
    match channel.sender().send("0123456789").await {
        Err(crate::Error::Frame(crate::FrameError::TooLong { max: 10, .. })) => {}
        other => panic!("{other:?}"),
    }
}
