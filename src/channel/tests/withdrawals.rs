//! Withdrawing queued lines, and no line longer than a Node peer reads.

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
