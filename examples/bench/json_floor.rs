//! The JSON floor: the floor's blocking echo with this crate's JSON work
//! added on both sides, and nothing else. The parent encodes each request
//! and parses each answer; the child (`json-child`) parses each request and
//! encodes its answer. Both use the crate's public `frame` and `protocol`
//! layers, the code the session runs for every message, on one thread per
//! process: no async runtime, no session, no task, no table of pending
//! requests.
//!
//! It splits the gap between the floor and ours in two: floor to JSON floor
//! is what the JSON costs, JSON floor to ours is what the runtime and the
//! session cost. No session over these JSON layers can beat it, so its
//! ratio to the floor bounds the ratio ours can reach.

use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ExitCode};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ipc_request::ChannelConfig;
use ipc_request::frame::{FrameDecoder, Message};
use ipc_request::protocol::{self, Inbound};

use crate::floor::{FloorPeer, ReadStep, channel_from_env, report_child, write_while_reading};
use crate::ours::{TEXT, check_small};

/// Bytes each read may fill at least: what a Unix socket holds by default.
const READ_ROOM: usize = 256 * 1024;

/// Requests a burst encodes before it writes them: about 56 KiB of lines,
/// near what one write of ours carries in a burst.
const BATCH: usize = 512;

/// `json-child`: answers every request with its own payload, as the
/// `rust-child` does, until end of stream.
pub fn child() -> ExitCode {
    report_child("json-child", answer_requests())
}

fn answer_requests() -> io::Result<()> {
    let mut stream = channel_from_env()?;
    stream.set_nonblocking(false)?;
    let mut lines = Lines::new();
    let mut out = Vec::with_capacity(READ_ROOM);
    loop {
        match lines.read(&stream) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        }
        while let Some(inbound) = lines.next()? {
            let Inbound::Request { uid, payload } = inbound else {
                return Err(io::Error::other(format!(
                    "json child: not a request: {inbound:?}"
                )));
            };
            protocol::encode_response(&uid, &*payload, lines.max_len(), &mut out)
                .map_err(io::Error::other)?;
        }
        if !out.is_empty() {
            match stream.write_all(&out) {
                Ok(()) => out.clear(),
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Bytes read from the stream and the crate's frame decoder over them.
struct Lines {
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Lines {
    fn new() -> Self {
        Lines {
            buf: BytesMut::with_capacity(READ_ROOM),
            decoder: FrameDecoder::new(ChannelConfig::default().max_message_len),
        }
    }

    fn max_len(&self) -> usize {
        self.decoder.max_len()
    }

    /// One read(2) into the buffer's spare room, as the crate's channel
    /// reads: no zeroing of memory the kernel is about to fill.
    fn read(&mut self, stream: &UnixStream) -> io::Result<usize> {
        self.buf.reserve(READ_ROOM);
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: read(2) writes at most `spare.len()` bytes into the spare
        // capacity, which this borrow owns; it reads none of it.
        let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: the kernel initialized these `n` bytes.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Ok(n)
    }

    /// The next complete message read so far, parsed and classified.
    fn next(&mut self) -> io::Result<Option<Inbound>> {
        self.decoder
            .decode_with(&mut self.buf, protocol::parse_inbound)
            .map_err(io::Error::other)
    }
}

/// The parent's side, over a `json-child`.
pub struct JsonFloorPeer {
    stream: UnixStream,
    child: Child,
    lines: Lines,
    out: Vec<u8>,
}

impl JsonFloorPeer {
    pub fn spawn(exe: &Path) -> io::Result<JsonFloorPeer> {
        let FloorPeer { stream, child, .. } = FloorPeer::spawn_mode(exe, "json-child")?;
        Ok(JsonFloorPeer {
            stream,
            child,
            lines: Lines::new(),
            out: Vec::new(),
        })
    }

    /// Appends request `id` with `payload` to the lines to send.
    fn encode<T: serde::Serialize + ?Sized>(&mut self, id: u64, payload: &T) -> io::Result<()> {
        let mut uid = itoa::Buffer::new();
        protocol::encode_request(uid.format(id), payload, self.lines.max_len(), &mut self.out)
            .map_err(io::Error::other)
    }

    /// Sequential round trips with blocking I/O, each answer parsed and
    /// checked as ours are. Returns the mean round trip.
    pub fn sequential(&mut self, iters: usize) -> io::Result<Duration> {
        self.stream.set_nonblocking(false)?;
        let mut scratch = String::new();
        let start = Instant::now();
        for i in 0..iters as u64 {
            self.out.clear();
            self.encode(i + 1, &(i, TEXT))?;
            self.stream.write_all(&self.out)?;
            let answer = loop {
                if let Some(inbound) = self.lines.next()? {
                    break answer_to(inbound, i + 1)?;
                }
                if self.lines.read(&self.stream)? == 0 {
                    return Err(io::Error::other("json child closed the channel"));
                }
            };
            check_small(&answer, i, &mut scratch).map_err(io::Error::other)?;
        }
        Ok(start.elapsed() / iters as u32)
    }

    /// `n` requests, encoded a batch at a time, each batch written while
    /// the answers that have come are read and parsed (so the two
    /// processes work at once, as ours do); returns the time until the last
    /// answer. Answers are checked after the clock stops, as ours are.
    pub fn burst(&mut self, n: usize) -> io::Result<Duration> {
        self.stream.set_nonblocking(true)?;
        let start = Instant::now();
        let mut answers = Vec::with_capacity(n);
        for first in (0..n as u64).step_by(BATCH) {
            self.out.clear();
            for i in first..(first + BATCH as u64).min(n as u64) {
                self.encode(i + 1, &(i, TEXT))?;
            }
            self.exchange(&mut answers, None)?;
        }
        self.out.clear();
        self.exchange(&mut answers, Some(n))?;
        let elapsed = start.elapsed();
        let mut scratch = String::new();
        for (i, inbound) in answers.into_iter().enumerate() {
            let i = i as u64;
            check_small(&answer_to(inbound, i + 1)?, i, &mut scratch).map_err(io::Error::other)?;
        }
        Ok(elapsed)
    }

    /// One string payload echoed (escaped on the way out, as ours is);
    /// returns the round-trip time.
    pub fn big(&mut self, text: &str) -> io::Result<Duration> {
        self.stream.set_nonblocking(true)?;
        let start = Instant::now();
        self.out.clear();
        self.encode(1, text)?;
        let mut answers = Vec::with_capacity(1);
        self.exchange(&mut answers, Some(1))?;
        let elapsed = start.elapsed();
        let answer = answer_to(answers.remove(0), 1)?;
        let got = answer.get().as_bytes();
        if got.len() != text.len() + 2 || &got[1..got.len() - 1] != text.as_bytes() {
            return Err(io::Error::other(
                "json floor: the big answer does not echo the request",
            ));
        }
        Ok(elapsed)
    }

    /// Writes the encoded requests in `out` while reading and parsing the
    /// answers that come, into `answers`; then, with `until`, goes on
    /// reading until there are that many.
    fn exchange(&mut self, answers: &mut Vec<Inbound>, until: Option<usize>) -> io::Result<()> {
        let lines = &mut self.lines;
        write_while_reading(&self.stream, &self.out, |stream| {
            let progressed = match lines.read(stream) {
                Ok(0) => return Err(io::Error::other("json child closed the channel")),
                Ok(_) => true,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
                Err(e) => return Err(e),
            };
            while let Some(inbound) = lines.next()? {
                answers.push(inbound);
            }
            Ok(ReadStep {
                progressed,
                done: until.is_none_or(|n| answers.len() == n),
            })
        })
    }

    /// Closes the channel and waits for the child.
    pub fn finish(mut self) -> io::Result<()> {
        drop(self.stream);
        let status = self.child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!("json child ended with {status}")));
        }
        Ok(())
    }
}

/// The payload of `inbound` if it is the successful answer to request `id`.
fn answer_to(inbound: Inbound, id: u64) -> io::Result<Message> {
    match inbound {
        Inbound::Response {
            uid: Ok(uid),
            payload,
            error: None,
        } if uid == id => Ok(payload),
        other => Err(io::Error::other(format!(
            "json floor: expected the answer to {id}, got {other:?}"
        ))),
    }
}
