//! CPU time of child processes, as the kernel counts it for the parent:
//! `cutime + cstime` of `/proc/self/stat`, the user and system time of the
//! children this process has waited for (and their own waited children).
//! Read before and after one child runs and is waited for, the difference
//! is that child's CPU time.

use std::time::Duration;

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`, 100 when it
/// cannot be asked).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// User plus system time of every child waited for so far.
pub fn children_cpu(ticks_per_sec: u64) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name may hold spaces: fields are counted after its `)`.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 16 and 17 of stat(5) (cutime, cstime); `rest` starts at 3.
    let cutime: u64 = fields[16 - 3].parse().unwrap();
    let cstime: u64 = fields[17 - 3].parse().unwrap();
    Duration::from_millis((cutime + cstime) * 1000 / ticks_per_sec)
}
