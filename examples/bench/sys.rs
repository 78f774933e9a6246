//! The machine the bench runs on, and this process's resident memory.

use std::process::Command;

/// The global allocator both sides of every Rust variant run with (the
/// children are this same binary).
const ALLOCATOR: &str = if cfg!(feature = "bench-mimalloc") {
    "mimalloc (--features bench-mimalloc)"
} else {
    "the system's (glibc malloc)"
};

/// One line per fact, for the top of the report and for results.json.
pub fn machine() -> Vec<(&'static str, String)> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.into());
    vec![
        ("cpus", cpus),
        ("cpu", model),
        ("kernel", kernel),
        ("rustc", version_of("rustc", "--version")),
        ("node", version_of("node", "--version")),
        ("allocator", ALLOCATOR.into()),
    ]
}

fn version_of(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "not found".into())
}

/// True if `node` runs.
pub fn have_node() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Resident set size of this process in bytes (VmRSS of /proc/self/status).
pub fn rss_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|e| format!("VmRSS line {line:?}: {e}"))?;
    Ok(kb * 1024)
}
