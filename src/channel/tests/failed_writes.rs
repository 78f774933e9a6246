//! Failed writes: the budget their lines give back, the shutdown that follows
//! them, lines queued behind them, and what the receiver reads after them.

use super::Gate;

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
