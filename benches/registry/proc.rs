//! Process and machine facts from `/proc`: resident memory, peak memory, CPU time, CPU model.

use std::process::Command;
use std::sync::OnceLock;

/// Bytes in a MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmRSS`, `VmHWM`) in bytes.
fn status_kb(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path} (is the server still running?): {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{path} has no {field} field"))
}

/// Resident set size now, in bytes.
pub fn rss(pid: u32) -> u64 {
    status_kb(pid, "VmRSS")
}

/// Peak resident set size since the process started, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    status_kb(pid, "VmHWM")
}

/// Clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User plus system CPU time the process used so far (all threads), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path} (is the server still running?): {e}"));
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("{path}: unexpected format"));
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based, man proc).
    let tick = |i: usize| -> f64 {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{path}: no field {i}")) as f64
    };
    (tick(14) + tick(15)) / clk_tck()
}

/// The CPU model name from `/proc/cpuinfo` (or "unknown").
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Logical CPUs available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `uname -m` (the machine architecture).
pub fn machine() -> String {
    Command::new("uname")
        .arg("-m")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// Writes every dirty page to disk (`sync(2)`), so a timed write does not pay for the
/// writeback of what the previous measurement left behind (the reference server does not
/// fsync; ours does, and its fsync would otherwise wait behind the other's data).
pub fn settle_disk() {
    rustix::fs::sync();
}

/// True while process `pid` exists.
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
