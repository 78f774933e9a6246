//! The writer task: sends and waits once it is gone, when a line counts as
//! written, and close racing sends or a drop.

use super::Gate;

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
                Err(crate::Error::Closed(crate::CloseReason::RuntimeShutDown)) => {}
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
            Err(crate::Error::Closed(crate::CloseReason::RuntimeShutDown)) => {}
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
