//! Reading lines: the buffer after a big line, lines too long for the limit,
//! and channels over a Unix socket pair.

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
