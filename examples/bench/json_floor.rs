//! The JSON floor: the floor's blocking echo with this crate's JSON work
//! added on both sides, and nothing else. The parent encodes each request
//! and parses each answer; the child (`json-child`) parses each request and
//! encodes its answer. Both use the crate's public `frame` and `protocol`
//! layers, the code the session runs for every message, on one thread per
//! process: no async runtime, no session, no task, no table of pending
//! requests.
//!
//! It splits the gap between the floor and ours in two: floor to JSON floor
//! is roughly what the JSON costs, JSON floor to ours what the runtime and
//! the session cost. It is a reference point, not a proven bound: its I/O is
//! chosen to match ours (reads into 64 KiB of free buffer like the
//! channel's, a child that writes the answers to one read at once, bursts
//! sent 512 requests at a time), but with other choices, or a parent on two threads, it
//! would measure somewhat differently.

use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ipc_request::ChannelConfig;
use ipc_request::frame::{FrameDecoder, Message};
use ipc_request::protocol::{self, Inbound};

use crate::floor::{ChildChannel, ReadStep, channel_from_env, report_child, write_while_reading};
use crate::ours::{TEXT, check_big, check_small};

/// Free room each read asks for: the channel's read size (`READ_CHUNK` in
/// `src/channel/mod.rs`).
const READ_ROOM: usize = 64 * 1024;

/// Requests a burst encodes before it writes them: about 68 KiB of lines,
/// near what one write of ours carries in a burst.
const BATCH: usize = 512;

/// `json-child`: answers every request with its own payload, as the
/// `rust-child` does, until end of stream.
pub fn child() -> ExitCode {
    report_child("json-child", answer_requests())
}

/// The child's loop: reads, answers every complete request in one write,
/// until end of stream.
fn answer_requests() -> io::Result<()> {
    let mut stream = channel_from_env()?;
    stream.set_nonblocking(false)?;
    let mut reader = FrameReader::new();
    let mut out = Vec::with_capacity(READ_ROOM);
    loop {
        match reader.read(&stream) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        }
        while let Some(inbound) = reader.next_inbound()? {
            let Inbound::Request { uid, payload } = inbound else {
                return Err(io::Error::other(format!(
                    "json child: not a request: {inbound:?}"
                )));
            };
            protocol::encode_response(&uid, &*payload, reader.max_len(), &mut out)
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

/// A blocking reader of the crate's frames: bytes read from the stream and
/// the crate's frame decoder over them.
struct FrameReader {
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FrameReader {
    fn new() -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(READ_ROOM),
            decoder: FrameDecoder::new(ChannelConfig::default().max_message_len),
        }
    }

    fn max_len(&self) -> usize {
        self.decoder.max_len()
    }

    /// One read(2) into the buffer's spare room, as the crate's channel
    /// reads: no zeroing of memory the kernel is about to fill. 0 means end
    /// of stream: the room asked for is never empty.
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
        debug_assert!(n <= spare.len());
        // SAFETY: the kernel initialized these `n` bytes, and `n` is at
        // most the spare capacity, so the length stays within capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Ok(n)
    }

    /// The next complete message read so far, parsed and classified.
    fn next_inbound(&mut self) -> io::Result<Option<Inbound>> {
        self.decoder
            .decode_with(&mut self.buf, protocol::parse_inbound)
            .map_err(io::Error::other)
    }
}

/// The parent's side, over a `json-child`.
pub struct JsonFloorPeer {
    channel: ChildChannel,
    reader: FrameReader,
    /// Encoded requests not yet written.
    out: Vec<u8>,
}

impl JsonFloorPeer {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.channel.pid()
    }

    /// Starts a `json-child`.
    pub fn spawn(exe: &Path) -> io::Result<JsonFloorPeer> {
        Ok(JsonFloorPeer {
            channel: ChildChannel::spawn(exe, "json-child")?,
            reader: FrameReader::new(),
            out: Vec::new(),
        })
    }

    /// Appends request `id` with `payload` to the lines to send.
    fn encode<T: serde::Serialize + ?Sized>(&mut self, id: u64, payload: &T) -> io::Result<()> {
        let mut uid = itoa::Buffer::new();
        protocol::encode_request(uid.format(id), payload, self.reader.max_len(), &mut self.out)
            .map_err(io::Error::other)
    }

    /// Sequential round trips with blocking I/O, each answer parsed and
    /// checked as ours are. Returns the mean round trip.
    pub fn sequential(&mut self, iters: usize) -> io::Result<Duration> {
        self.channel.stream.set_nonblocking(false)?;
        let mut scratch = String::new();
        let start = Instant::now();
        for i in 0..iters as u64 {
            self.out.clear();
            self.encode(i + 1, &(i, TEXT))?;
            self.channel.stream.write_all(&self.out)?;
            let answer = loop {
                if let Some(inbound) = self.reader.next_inbound()? {
                    break answer_to(inbound, i + 1)?;
                }
                match self.reader.read(&self.channel.stream) {
                    Ok(0) => return Err(io::Error::other("json child closed the channel")),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
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
        self.channel.stream.set_nonblocking(true)?;
        let start = Instant::now();
        let mut answers = Vec::with_capacity(n);
        for first in (0..n as u64).step_by(BATCH) {
            self.out.clear();
            for i in first..(first + BATCH as u64).min(n as u64) {
                self.encode(i + 1, &(i, TEXT))?;
            }
            self.send_and_collect(&mut answers, 0)?;
        }
        self.out.clear();
        self.send_and_collect(&mut answers, n)?;
        let elapsed = start.elapsed();
        if answers.len() != n {
            return Err(io::Error::other(format!(
                "json floor: {} answers to {n} requests",
                answers.len()
            )));
        }
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
        self.channel.stream.set_nonblocking(true)?;
        let start = Instant::now();
        self.out.clear();
        self.encode(1, text)?;
        let mut answers = Vec::with_capacity(1);
        self.send_and_collect(&mut answers, 1)?;
        let elapsed = start.elapsed();
        if answers.len() != 1 {
            return Err(io::Error::other(
                "json floor: more than one answer to one request",
            ));
        }
        let answer = answer_to(answers.remove(0), 1)?;
        check_big(&answer, text).map_err(io::Error::other)?;
        Ok(elapsed)
    }

    /// Writes all the encoded requests in `out` while reading and parsing
    /// the answers that come, into `answers`; returns once `out` is written
    /// and `answers` holds at least `at_least` (0: as soon as `out` is
    /// written).
    fn send_and_collect(&mut self, answers: &mut Vec<Inbound>, at_least: usize) -> io::Result<()> {
        let reader = &mut self.reader;
        write_while_reading(&self.channel.stream, &self.out, |stream| {
            let progressed = match reader.read(stream) {
                Ok(0) => return Err(io::Error::other("json child closed the channel")),
                Ok(_) => true,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
                Err(e) => return Err(e),
            };
            while let Some(inbound) = reader.next_inbound()? {
                answers.push(inbound);
            }
            Ok(ReadStep {
                progressed,
                done: answers.len() >= at_least,
            })
        })
    }

    /// Closes the channel and waits for the child.
    pub fn finish(self) -> io::Result<()> {
        self.channel.finish()
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
