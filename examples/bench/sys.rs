//! The machine the bench runs on, and this process's resident memory.

use std::process::Command;

/// The global allocator both sides of every Rust variant run with (the
/// children are this same binary).
const ALLOCATOR: &str = if cfg!(feature = "bench-mimalloc") {
    "mimalloc (--features bench-mimalloc)"
} else {
    SYSTEM_ALLOCATOR
};

/// What the system allocator is where this was built (what the report
/// names, not a probe: a musl or other libc on Linux is named by `cfg`).
const SYSTEM_ALLOCATOR: &str = if cfg!(all(target_os = "linux", target_env = "gnu")) {
    "the system's (glibc malloc)"
} else if cfg!(all(target_os = "linux", target_env = "musl")) {
    "the system's (musl malloc)"
} else {
    "the system's"
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
        // macOS has no /proc; sysctl names its CPU.
        .or_else(|| output_of("sysctl", &["-n", "machdep.cpu.brand_string"]))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.into());
    vec![
        ("cpus", cpus),
        ("cpu", model),
        ("kernel", kernel),
        ("rustc", version_of("rustc")),
        ("node", version_of("node")),
        ("allocator", ALLOCATOR.into()),
    ]
}

/// What `program --version` prints, or "not found".
fn version_of(program: &str) -> String {
    output_of(program, &["--version"]).unwrap_or_else(|| "not found".into())
}

/// What `program args` prints, trimmed; `None` if it does not run or fails.
fn output_of(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// True if `node` runs.
pub fn have_node() -> bool {
    output_of("node", &["--version"]).is_some()
}

/// Whether [`rss_bytes`] can work here: it reads /proc, which macOS has
/// not (there the memory rows are skipped with a note).
pub const READS_RSS: bool = cfg!(target_os = "linux");

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

/// Where the sequential rows run. A round trip with one message in flight
/// is mostly two wake-ups, and what a wake-up costs depends on where the
/// kernel runs the woken thread: on this kind of shared VM, waking it on
/// the other CPU costs over 10 µs (an interrupt through the hypervisor),
/// on the waker's own CPU a few. Left free, the scheduler decides that
/// from moment to moment, by which CPU is idle; measured, the floor alone
/// read about 10 µs or 35–55 µs by the draw, and ours 15 µs or 52–67 µs.
/// So the bench also runs the sequential rows with the placement fixed
/// (docs/performance.md).
#[derive(Clone, Copy)]
pub enum Placement {
    /// As the kernel schedules them.
    Free,
    /// Every thread of the parent and of its children on one CPU.
    OneCpu,
    /// The parent on one CPU, every child on another.
    TwoCpus,
}

impl Placement {
    /// Every placement, in the order the bench runs them.
    pub const ALL: [Placement; 3] = [Placement::Free, Placement::OneCpu, Placement::TwoCpus];

    /// The sample key of a sequential row of variant `name` in this
    /// placement (`floor_seq_rtt_one_cpu`).
    pub fn key(self, name: &str) -> String {
        let suffix = match self {
            Placement::Free => "",
            Placement::OneCpu => "_one_cpu",
            Placement::TwoCpus => "_two_cpus",
        };
        format!("{name}_seq_rtt{suffix}")
    }

    /// The end of the table's row labels.
    pub fn label_suffix(self) -> &'static str {
        match self {
            Placement::Free => "",
            Placement::OneCpu => ", both processes on one CPU",
            Placement::TwoCpus => ", parent and child on two CPUs",
        }
    }
}

/// The CPUs this process may run on (its affinity when the bench started).
/// Only Linux has `sched_getaffinity`; elsewhere this is an error, and the
/// sequential rows run as scheduled only.
#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "pinning to CPUs is implemented on Linux only",
    ))
}

/// The CPUs this process may run on (its affinity when the bench started).
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the size passed into `set`.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads one bit of a valid set, index < CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Sets the affinity of every thread of a process to `cpus`: of this one
/// (`None`, through /proc/self, right in any PID namespace) or of a child
/// of the bench. A thread that ends meanwhile is skipped; threads started
/// later inherit the affinity of the thread that starts them.
#[cfg(target_os = "linux")]
pub fn pin_process(pid: Option<u32>, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET writes one bit inside the set (it checks the
        // index; these come from `allowed_cpus`, below CPU_SETSIZE).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let tasks = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_string(),
    };
    for entry in std::fs::read_dir(tasks)? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Not called where [`allowed_cpus`] fails, as it does off Linux.
#[cfg(not(target_os = "linux"))]
pub fn pin_process(_pid: Option<u32>, _cpus: &[usize]) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}
