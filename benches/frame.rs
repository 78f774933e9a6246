//! Criterion benches of the frame layer (PROTOCOL.md 1.2): encoding a
//! message as one JSON line and decoding lines back, without processes or
//! sockets, so a regression in the hot path shows up on its own.
//!
//! `cargo bench --bench frame`

use bytes::BytesMut;
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, black_box, criterion_group, criterion_main,
};
use ipc_request::frame::{DEFAULT_MAX_MESSAGE_LEN, FrameDecoder, encode};
use serde::Serialize;

/// The shape of an ipc-request 1.0 request on the wire.
#[derive(Serialize)]
struct RequestLine<'a, P: Serialize> {
    #[serde(rename = "_IPC_REQUEST/MSG_TYPE")]
    msg_type: &'a str,
    #[serde(rename = "_IPC_REQUEST/REQUEST_UID")]
    uid: &'a str,
    #[serde(rename = "_IPC_REQUEST/PAYLOAD")]
    payload: P,
}

fn small(uid: &str) -> RequestLine<'_, (u64, &'static str)> {
    RequestLine {
        msg_type: "_IPC_REQUEST/MSG_TYPE:REQUEST",
        uid,
        payload: (12345, "hello, bench"),
    }
}

fn line_of<T: Serialize>(value: &T) -> Vec<u8> {
    let mut line = Vec::new();
    encode(value, DEFAULT_MAX_MESSAGE_LEN, &mut line).expect("encodes");
    line
}

/// One encode case: `value` encoded again and again into a reused buffer.
fn encode_case<T: Serialize>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, value: &T) {
    let len = line_of(value).len();
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function(name, |b| {
        let mut out = Vec::with_capacity(len + 1024);
        b.iter(|| {
            out.clear();
            encode(black_box(value), DEFAULT_MAX_MESSAGE_LEN, &mut out).unwrap();
            black_box(out.len())
        })
    });
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    encode_case(&mut group, "small", &small("42"));
    let big_text = "x".repeat(64 * 1024);
    let big = RequestLine {
        msg_type: "_IPC_REQUEST/MSG_TYPE:REQUEST",
        uid: "42",
        payload: big_text.as_str(),
    };
    encode_case(&mut group, "64KiB", &big);
    // Text with something to escape every few dozen bytes (lines, quotes):
    // the JSON writer's slower path.
    let text: String = (0..64 * 1024)
        .map(|i| match i % 60 {
            59 => '\n',
            29 => '"',
            _ => 'x',
        })
        .collect();
    let escaped = RequestLine {
        msg_type: "_IPC_REQUEST/MSG_TYPE:REQUEST",
        uid: "42",
        payload: text.as_str(),
    };
    encode_case(&mut group, "64KiB_escaped", &escaped);
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    let small_line = line_of(&small("42"));
    group.throughput(Throughput::Bytes(small_line.len() as u64));
    group.bench_function("small", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter_batched_ref(
            || BytesMut::from(&small_line[..]),
            |buf| black_box(decoder.decode(buf).unwrap().expect("one message")),
            BatchSize::SmallInput,
        )
    });
    let big_text = "x".repeat(64 * 1024);
    let big_line = line_of(&RequestLine {
        msg_type: "_IPC_REQUEST/MSG_TYPE:REQUEST",
        uid: "42",
        payload: big_text.as_str(),
    });
    group.throughput(Throughput::Bytes(big_line.len() as u64));
    group.bench_function("64KiB", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter_batched_ref(
            || BytesMut::from(&big_line[..]),
            |buf| black_box(decoder.decode(buf).unwrap().expect("one message")),
            BatchSize::SmallInput,
        )
    });
    // A read that brought 1,000 small lines at once, as under a burst.
    let mut many = Vec::new();
    for i in 0..1_000u32 {
        many.extend_from_slice(&line_of(&small(&i.to_string())));
    }
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("1000_small_lines", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter_batched_ref(
            || BytesMut::from(&many[..]),
            |buf| {
                let mut n = 0;
                while let Some(msg) = decoder.decode(buf).unwrap() {
                    black_box(&msg);
                    n += 1;
                }
                assert_eq!(n, 1_000);
                n
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_encode, bench_decode);
criterion_main!(benches);
