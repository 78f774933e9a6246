//! The benchmark of this crate against the floor (a raw line echo between
//! two processes) and against Node, in one run with the variants
//! interleaved.
//!
//! ```sh
//! cargo run --release --example bench -- --quick   # ~20 s of measuring; CI smoke test
//! cargo run --release --example bench              # more repetitions, Node at 100,000 too
//! ```
//!
//! Options: `--quick`, `--reps N` (measured repetitions), `--no-files` (do
//! not write `bench/results.json` and `docs/throughput.svg`), `--no-pin`
//! (sequential rows as scheduled only).
//!
//! The binary is also its own children, selected by the first argument:
//! `floor-child` (blocking line echo, see `floor.rs`), `json-child` (the
//! same with this crate's JSON work, see `json_floor.rs`), `tokio-echo-child`
//! (the same echo written the usual Tokio way), `rust-child` (this
//! crate, echoing each payload as raw JSON), `hold-child` and `mem-parent`
//! (the memory measurement, see `ours.rs`). `profile-burst N [REPS]` runs
//! only our burst of N against a `rust-child` and prints requests/s, to
//! look at under `perf record` (`seq`, `big`, `join` and `floor-seq` as a
//! third argument: see `ours::profile_burst`). `count [burst|seq|big]`
//! runs a fixed workload between two sessions in one process, for
//! instruction counts:
//! `valgrind --tool=callgrind target/release/examples/bench count burst`.
//!
//! The sequential rows run three ways in each repetition: as the kernel
//! places the processes, then with every thread of the parent and its
//! children pinned to one CPU, then with the parent on one CPU and the
//! children on another (see `sys::Placement` for why); `seq_rtt_ratio` is
//! taken on one CPU.
//!
//! Each repetition runs every variant once, in a fixed order; the first
//! repetition is a warm-up and is not recorded. The table shows medians over
//! repetitions; the `RESULT` ratios are medians of the per-repetition ratios.
//! The exit status is non-zero only if a variant fails (an error, a wrong
//! answer, a child that dies), never because of a slow number.

// With `--features bench-mimalloc`: how much of a burst is the allocator.
// The parent and every Rust child are this binary, so both sides use it.
#[cfg(feature = "bench-mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod floor;
mod json_floor;
mod nodejs;
mod ours;
mod report;
mod sys;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ours::{BenchResult, Fanout, OursPeer};
use report::{Samples, Series, row};
use sys::Placement;

const BURSTS: [usize; 3] = [1_000, 10_000, 100_000];
/// Bursts also measured as futures of one task (see `Fanout::JoinAll`).
const JOIN_ALL_BURSTS: [usize; 3] = [1_000, 10_000, 100_000];
const BIG: usize = 16 * 1024 * 1024;
const MEM_IN_FLIGHT: usize = 100_000;
/// How the table names the JSON floor (see `json_floor.rs`).
const JSON_FLOOR: &str = "JSON floor (our frame + protocol code, blocking, no runtime)";

struct Options {
    quick: bool,
    reps: usize,
    seq_iters: usize,
    node_sizes: Vec<usize>,
    write_files: bool,
    /// Run the sequential rows pinned too (`--no-pin`: not).
    pin: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut opts = Options {
            quick,
            reps: if quick { 5 } else { 15 },
            seq_iters: if quick { 2_000 } else { 10_000 },
            node_sizes: if quick {
                vec![1, 1_000, 10_000]
            } else {
                vec![1, 1_000, 10_000, 100_000]
            },
            write_files: true,
            pin: true,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => {}
                "--no-files" => opts.write_files = false,
                "--no-pin" => opts.pin = false,
                "--reps" => {
                    opts.reps = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&n| n > 0)
                        .ok_or("--reps needs a positive number")?
                }
                "--bench" => {} // passed by `cargo bench --all-targets`-style runners
                other => {
                    return Err(format!(
                        "unknown option {other:?} (try --quick, --reps N, --no-files, --no-pin)"
                    ));
                }
            }
        }
        Ok(opts)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("floor-child") => return floor::child(),
        Some("tokio-echo-child") => return floor::tokio_child(),
        Some("json-child") => return json_floor::child(),
        Some("rust-child" | "hold-child") => return ours::child(&args),
        Some("mem-parent") => return ours::mem_parent(&args),
        Some("profile-burst") => return ours::profile_burst(&args),
        Some("count") => return ours::count(&args),
        _ => {}
    }
    let opts = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    // A hung variant must not hang CI: give up well past any normal run.
    let limit = Duration::from_secs(if opts.quick { 600 } else { 3_600 });
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("bench: FAILED: still running after {limit:?}");
        std::process::exit(3);
    });
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn run(opts: &Options) -> BenchResult<()> {
    let started = Instant::now();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let exe_str = exe
        .to_str()
        .ok_or("bench executable path is not UTF-8")?
        .to_string();
    let machine = sys::machine();
    println!(
        "# ipc-request benchmark{}\n",
        if opts.quick { " (--quick)" } else { "" }
    );
    for (k, v) in &machine {
        println!("- {k}: {v}");
    }
    println!(
        "- repetitions: {} measured (+1 warm-up), sequential round trips per repetition: {}\n",
        opts.reps, opts.seq_iters
    );
    let node = sys::have_node();
    if !node {
        println!("note: `node` not found: the Node variants are skipped\n");
    }
    if !sys::READS_RSS {
        println!("note: the resident size is read from /proc (Linux): the memory rows are skipped\n");
    }

    // The exact bytes our crate writes, for the floor to send.
    let seq_line = ours::request_line(1_000, 1_000).into_bytes();
    let burst_bytes: Vec<Vec<u8>> = BURSTS
        .iter()
        .map(|&n| {
            (0..n as u64)
                .flat_map(|i| ours::request_line(i + 1, i).into_bytes())
                .collect()
        })
        .collect();
    let big_text = Arc::new("x".repeat(BIG));
    let big_line = ours::big_request_line(1, &big_text).into_bytes();
    let mut echo = Vec::new();

    let rt = ours::runtime();
    let mut floor = floor::FloorPeer::spawn(&exe).map_err(|e| format!("floor child: {e}"))?;
    let mut tokio_echo = {
        let _runtime = rt.enter();
        floor::TokioEchoPeer::spawn(&exe).map_err(|e| format!("tokio echo child: {e}"))?
    };
    let mut json_floor =
        json_floor::JsonFloorPeer::spawn(&exe).map_err(|e| format!("json floor child: {e}"))?;
    let ours = rt.block_on(OursPeer::spawn(&exe, "rust-child", &[]))?;
    // The blocking API, from this (non-async) thread, with a child of its own.
    let ours_blocking = ours::BlockingPeer::spawn(&exe)?;
    let mut samples = Samples::default();

    // The sequential rows run three times per repetition: placed as the
    // kernel likes, then pinned (see `sys::Placement`). Pinned runs need
    // two CPUs this process may use and the right to set affinities;
    // without them, or with `--no-pin`, only the first runs.
    let child_pids = [
        floor.pid(),
        json_floor.pid(),
        tokio_echo.pid(),
        ours.pid(),
        ours_blocking.pid(),
    ];
    let cpus = if opts.pin {
        sys::allowed_cpus().map_err(|e| format!("reading the CPU affinity: {e}"))
    } else {
        Err("--no-pin".to_string())
    };
    let place = |placement: Placement| -> BenchResult<()> {
        let Ok(cpus) = &cpus else {
            return Ok(());
        };
        let (parent, children) = match placement {
            Placement::Free => (&cpus[..], &cpus[..]),
            Placement::OneCpu => (&cpus[..1], &cpus[..1]),
            Placement::TwoCpus => (&cpus[..1], &cpus[1..2]),
        };
        let pin = |pid: Option<u32>, set: &[usize]| {
            sys::pin_process(pid, set).map_err(|e| {
                let who = pid.map_or("this process".to_string(), |pid| format!("child {pid}"));
                format!("setting the CPU affinity of {who}: {e}")
            })
        };
        pin(None, parent)?;
        child_pids.iter().try_for_each(|&pid| pin(Some(pid), children))
    };
    let placements = match (cpus.as_ref(), place(Placement::Free).as_ref()) {
        (Ok(cpus), Ok(())) if cpus.len() >= 2 => Placement::ALL.to_vec(),
        (Ok(_), Ok(())) => {
            println!("note: one CPU available: the sequential rows run as scheduled only\n");
            vec![Placement::Free]
        }
        (Err(e), _) | (_, Err(e)) => {
            println!("note: {e}: the sequential rows run as scheduled only\n");
            vec![Placement::Free]
        }
    };

    for rep in 0..=opts.reps {
        let rep_start = Instant::now();
        let warmup = rep == 0;
        let mut s = |key: &str, v: f64| {
            if !warmup {
                samples.push(key, v)
            }
        };
        let floor_err = |e: std::io::Error| format!("floor: {e}");
        let json_err = |e: std::io::Error| format!("json floor: {e}");

        for &placement in &placements {
            place(placement)?;
            let key = |name: &str| placement.key(name);
            let d = floor.sequential(&seq_line, opts.seq_iters).map_err(floor_err)?;
            s(&key("floor"), secs(d) * 1e6);
            let d = json_floor.sequential(opts.seq_iters).map_err(json_err)?;
            s(&key("json_floor"), secs(d) * 1e6);
            // On a worker thread, as our own requests run (see ours.rs).
            let (peer, d) = rt
                .block_on(rt.spawn(tokio_echo.sequential(seq_line.clone(), opts.seq_iters)))
                .map_err(|e| e.to_string())?;
            tokio_echo = peer;
            s(&key("tokio_echo"), secs(d.map_err(floor_err)?) * 1e6);
            let d = rt.block_on(ours.sequential(opts.seq_iters))?;
            s(&key("ours"), secs(d) * 1e6);
            let d = ours_blocking.sequential(opts.seq_iters)?;
            s(&key("ours_blocking"), secs(d) * 1e6);
        }
        place(Placement::Free)?;

        for (i, &n) in BURSTS.iter().enumerate() {
            let d = floor.exchange(&burst_bytes[i], &mut echo).map_err(floor_err)?;
            s(&format!("floor_burst_{n}"), n as f64 / secs(d));
            let d = json_floor.burst(n).map_err(json_err)?;
            s(&format!("json_floor_burst_{n}"), n as f64 / secs(d));
            let d = rt.block_on(ours.burst(n, Fanout::Tasks))?;
            s(&format!("ours_burst_{n}"), n as f64 / secs(d));
            if JOIN_ALL_BURSTS.contains(&n) {
                let d = rt.block_on(ours.burst(n, Fanout::JoinAll))?;
                s(&format!("ours_join_all_{n}"), n as f64 / secs(d));
            }
        }

        let mb = BIG as f64 / 1e6;
        let d = floor.exchange(&big_line, &mut echo).map_err(floor_err)?;
        s("floor_big", mb / secs(d));
        let d = json_floor.big(&big_text).map_err(json_err)?;
        s("json_floor_big", mb / secs(d));
        let d = rt.block_on(ours.big(big_text.clone()))?;
        s("ours_big", mb / secs(d));

        // Node and memory start fresh processes, which warm themselves up:
        // they are not run in the warm-up repetition.
        if !warmup {
            if node {
                let child_js = root.join("bench/node/child.js");
                let child_js = child_js.to_str().ok_or("path is not UTF-8")?;
                let with_node = nodejs::run(&root, &opts.node_sizes, opts.seq_iters, &["node", child_js])?;
                let with_rust =
                    nodejs::run(&root, &opts.node_sizes, opts.seq_iters, &[&exe_str, "rust-child"])?;
                for (prefix, run) in [("node_node", with_node), ("node_rust", with_rust)] {
                    for (n, rps) in run.rps {
                        s(&format!("{prefix}_{n}"), rps);
                    }
                }
            }
            if sys::READS_RSS {
                let (before, during, future_size) = memory(&exe)?;
                s("request_future_size", future_size as f64);
                s(
                    "mem_rss_growth",
                    (during as f64 - before as f64) / (1024.0 * 1024.0),
                );
                s(
                    "bytes_per_inflight",
                    (during as f64 - before as f64) / MEM_IN_FLIGHT as f64,
                );
            }
        }
        eprintln!(
            "[bench] repetition {rep}/{}{} done in {:.1} s",
            opts.reps,
            if warmup { " (warm-up)" } else { "" },
            secs(rep_start.elapsed())
        );
    }
    rt.block_on(ours.finish())?;
    ours_blocking.finish()?;
    floor.finish().map_err(|e| format!("floor: {e}"))?;
    json_floor.finish().map_err(|e| format!("json floor: {e}"))?;
    tokio_echo.finish().map_err(|e| format!("tokio echo: {e}"))?;
    drop(rt);

    print_report(opts, &root, &machine, &samples, node, started)
}

/// One fresh `mem-parent` process; returns its VmRSS before and during,
/// and the size of one request task's future.
fn memory(exe: &Path) -> BenchResult<(u64, u64, u64)> {
    let out = Command::new(exe)
        .args(["mem-parent", &MEM_IN_FLIGHT.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("mem-parent: {e}"))?;
    if !out.status.success() {
        return Err(format!("mem-parent failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("mem-parent output: {e}"))?;
    match (
        v["rss_before"].as_u64(),
        v["rss_during"].as_u64(),
        v["future_size"].as_u64(),
    ) {
        (Some(b), Some(d), Some(f)) => Ok((b, d, f)),
        _ => Err(format!("mem-parent output {text:?}")),
    }
}

fn print_report(
    opts: &Options,
    root: &Path,
    machine: &[(&'static str, String)],
    samples: &Samples,
    node: bool,
    started: Instant,
) -> BenchResult<()> {
    let floor_of = |k: &str| Some(k.to_string());
    // Rows of a placement that did not run have no samples and are left out.
    let mut rows = Vec::new();
    for placement in Placement::ALL {
        let key = |name: &str| placement.key(name);
        let label = |what: &str| format!("{what}: sequential round trip{}", placement.label_suffix());
        let floor = Some(key("floor"));
        rows.push(row(key("floor"), label("floor"), "µs", None));
        rows.push(row(key("json_floor"), label(JSON_FLOOR), "µs", floor.clone()));
        rows.push(row(
            key("tokio_echo"),
            label("raw echo with tokio::net::UnixStream (no JSON)"),
            "µs",
            floor.clone(),
        ));
        rows.push(row(key("ours"), label("ours Rust↔Rust"), "µs", floor.clone()));
        rows.push(row(
            key("ours_blocking"),
            label("ours Rust↔Rust, blocking API (ipc_request::blocking)"),
            "µs",
            floor,
        ));
    }
    for n in BURSTS {
        let nn = report::fmt_value(n as f64);
        rows.push(row(
            format!("floor_burst_{n}"),
            format!("floor: burst of {nn}"),
            "req/s",
            None,
        ));
        rows.push(row(
            format!("json_floor_burst_{n}"),
            format!("{JSON_FLOOR}: burst of {nn}"),
            "req/s",
            floor_of(&format!("floor_burst_{n}")),
        ));
        rows.push(row(
            format!("ours_burst_{n}"),
            format!("ours Rust↔Rust: burst of {nn}"),
            "req/s",
            floor_of(&format!("floor_burst_{n}")),
        ));
    }
    for n in JOIN_ALL_BURSTS {
        rows.push(row(
            format!("ours_join_all_{n}"),
            format!(
                "ours Rust↔Rust: burst of {}, join_all in one task",
                report::fmt_value(n as f64)
            ),
            "req/s",
            floor_of(&format!("floor_burst_{n}")),
        ));
    }
    rows.push(row("floor_big", "floor: 16 MiB line echoed", "MB/s", None));
    rows.push(row(
        "json_floor_big",
        format!("{JSON_FLOOR}: 16 MiB string echoed"),
        "MB/s",
        floor_of("floor_big"),
    ));
    rows.push(row(
        "ours_big",
        "ours Rust↔Rust: 16 MiB string echoed",
        "MB/s",
        floor_of("floor_big"),
    ));
    for (prefix, name) in [
        ("node_node", "Node parent ↔ Node child"),
        ("node_rust", "Node parent ↔ our Rust child"),
    ] {
        for &n in &opts.node_sizes {
            let what = if n == 1 {
                "sequential".to_string()
            } else {
                format!("burst of {}", report::fmt_value(n as f64))
            };
            rows.push(row(
                format!("{prefix}_{n}"),
                format!("{name}: {what}"),
                "req/s",
                None,
            ));
        }
    }
    rows.push(row(
        "mem_rss_growth",
        "ours: parent RSS growth, 100,000 in flight",
        "MiB",
        None,
    ));
    rows.push(row(
        "bytes_per_inflight",
        "ours: parent RSS per request in flight",
        "B",
        None,
    ));
    rows.push(row(
        "request_future_size",
        "… of which the caller's request future (one tokio task each)",
        "B",
        None,
    ));

    println!("{}", report::table(samples, &rows));
    println!(
        "Medians of {} repetitions; \"vs floor\" is the ratio of medians (for the round trip, higher is slower; \
         for req/s and MB/s, higher is faster).\n",
        opts.reps
    );

    // The chart: requests/s at 1 (sequential), 1k, 10k, 100k in flight.
    let in_flight = [1usize, 1_000, 10_000, 100_000];
    let at = |prefix: &str, n: usize| samples.median(&format!("{prefix}_{n}"));
    // A sequential round trip (`{prefix}_seq_rtt`, in µs) as requests/s at
    // 1 in flight, then the bursts (`{prefix}_burst_{n}`).
    let echo_series = |name: &str, color: &'static str, prefix: &str| Series {
        name: name.into(),
        color,
        points: std::iter::once(samples.median(&format!("{prefix}_seq_rtt")).map(|us| 1e6 / us))
            .chain(BURSTS.iter().map(|&n| at(&format!("{prefix}_burst"), n)))
            .collect(),
    };
    let mut series = vec![
        echo_series("floor (raw line echo)", "#888888", "floor"),
        echo_series("JSON floor (no runtime)", "#9c36b5", "json_floor"),
        echo_series("ours Rust↔Rust", "#d9480f", "ours"),
    ];
    if node {
        series.push(Series {
            name: "Node↔Node (raw send)".into(),
            color: "#2b8a3e",
            points: in_flight.iter().map(|&n| at("node_node", n)).collect(),
        });
        series.push(Series {
            name: "Node parent↔our child".into(),
            color: "#1971c2",
            points: in_flight.iter().map(|&n| at("node_rust", n)).collect(),
        });
    }

    let cpu = machine
        .iter()
        .find(|(k, _)| *k == "cpu")
        .map(|(_, v)| v.as_str())
        .unwrap_or("?");
    let cpus = machine
        .iter()
        .find(|(k, _)| *k == "cpus")
        .map(|(_, v)| v.as_str())
        .unwrap_or("?");
    if opts.write_files {
        let subtitle = format!(
            "medians of {} runs{}, {cpus} CPUs, {cpu}",
            opts.reps,
            if opts.quick { " (--quick)" } else { "" }
        );
        let svg = report::svg(&in_flight, &series, &subtitle);
        let json = serde_json::json!({
            "quick": opts.quick,
            "reps": opts.reps,
            "machine": machine.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "medians": rows.iter().filter_map(|r| samples.median(&r.key).map(|m| (r.key.clone(), serde_json::json!(m)))).collect::<serde_json::Map<_, _>>(),
            "samples": samples.to_json(),
            "chart": {
                "in_flight": in_flight,
                "series": series.iter().map(|s| serde_json::json!({"name": s.name, "rps": s.points})).collect::<Vec<_>>(),
            },
        });
        let write = |path: PathBuf, text: String| -> BenchResult<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {}", path.display());
            Ok(())
        };
        write(root.join("bench/results.json"), format!("{json:#}\n"))?;
        write(root.join("docs/throughput.svg"), svg)?;
    }
    println!("\nwall time: {:.1} s\n", secs(started.elapsed()));

    // seq_rtt_ratio is taken with both processes on one CPU when that ran:
    // there a round trip costs what the two processes compute plus two
    // context switches, repetition after repetition, while the placement
    // left free decides between about 10 µs and 35-55 µs for the floor
    // alone (see `sys::Placement`). It measures the software, not the
    // latency on an idle multi-core machine: the two-CPU rows are that.
    let seq_placement = match samples.get(&Placement::OneCpu.key("ours")) {
        Some(_) => Placement::OneCpu,
        None => Placement::Free,
    };
    let seq_key = |name: &str| seq_placement.key(name);
    println!(
        "seq_rtt_ratio: sequential round trips{}\n",
        match seq_placement {
            Placement::Free => " as scheduled (pinning did not run)",
            _ => seq_placement.label_suffix(),
        }
    );
    let results: [(&str, Option<f64>); 7] = [
        (
            "seq_rtt_ratio",
            samples.paired(&seq_key("ours"), &seq_key("floor"), |a, b| a / b),
        ),
        (
            "burst_ratio_vs_raw",
            samples.paired("ours_burst_10000", "floor_burst_10000", |a, b| a / b),
        ),
        (
            "burst_vs_node_raw",
            samples.paired("ours_burst_10000", "node_node_10000", |a, b| a / b),
        ),
        (
            // time per request at 100k / at 1k = rps at 1k / rps at 100k
            "scaling_100k_over_1k",
            samples.paired("ours_burst_1000", "ours_burst_100000", |a, b| a / b),
        ),
        (
            "node_parent_rust_child_vs_node_child",
            samples.paired("node_rust_10000", "node_node_10000", |a, b| a / b),
        ),
        ("bytes_per_inflight", samples.median("bytes_per_inflight")),
        (
            "big_payload_ratio",
            samples.paired("ours_big", "floor_big", |a, b| a / b),
        ),
    ];
    for (name, value) in results {
        match value {
            Some(v) if name == "bytes_per_inflight" => println!("RESULT {name} {v:.0}"),
            Some(v) => println!("RESULT {name} {}", report::fmt_ratio(v)),
            None => println!("RESULT {name} nan"),
        }
    }
    Ok(())
}
