//! Downloading a large output over loopback against `curl -o` on the same
//! file in the same run: CPU time per MiB of each, wall-clock throughput,
//! and the client's peak resident memory against the file's size.
//!
//! The fake server (in this process) serves a file of `--size-mib` MiB
//! (default 1024) and one of 64 MiB. Each download runs in a child process
//! of its own:
//!
//! - **curl**: `curl -sS -o FILE URL`, then `sync FILE DIR` (an `fsync` of
//!   the file and of its folder), since the client syncs both too
//!   (`--curl-nosync` leaves the sync out);
//! - **client**: this bench re-run with `--child`, which calls
//!   `Client::download` once (default client, multi-thread tokio runtime)
//!   and prints its peak resident set (`VmHWM`).
//!
//! Wall time runs from the spawn of the first process to the exit of the
//! last; CPU time is user + system time of the processes, as the kernel
//! counts it for their parent (`cutime + cstime`, 10 ms ticks). Rounds
//! alternate (curl first in even rounds); each figure is the median of the
//! rounds' ratios.
//!
//! Run: `cargo bench --bench download --features fake`
//! (`-- --size-mib N --rounds N --dir DIR --curl-nosync`; the default
//! folder is the system's temporary folder, `--dir /dev/shm` is tmpfs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use goenhance_jobs::fake::{FakeFile, FakeServer};
use goenhance_jobs::{Client, JobOutput, OutputKind};

const MIB: u64 = 1 << 20;

#[path = "common/proc.rs"]
mod proc;

#[path = "common/children.rs"]
mod children;

use children::{children_cpu, clock_ticks};
use proc::status_kib;

/// The child: one download, then `bytes secs vmhwm_kib` on stdout.
fn child(url: &str, path: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::builder().api_key("bench").build().unwrap();
        let output = JobOutput::new(OutputKind::Video, url);
        let started = Instant::now();
        let got = client.download(&output, path).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!("{} {secs} {}", got.bytes(), status_kib("VmHWM:"));
    });
}

/// What one download cost.
struct Run {
    wall: Duration,
    cpu: Duration,
    vmhwm_kib: Option<u64>,
}

struct Bench {
    exe: PathBuf,
    ticks: u64,
    curl_sync: bool,
}

impl Bench {
    fn client(&self, url: &str, path: &Path) -> Run {
        let _ = std::fs::remove_file(path);
        let cpu_before = children_cpu(self.ticks);
        let started = Instant::now();
        let out = Command::new(&self.exe)
            .args(["--child", url, path.to_str().unwrap()])
            .output()
            .unwrap();
        let wall = started.elapsed();
        let cpu = children_cpu(self.ticks) - cpu_before;
        assert!(
            out.status.success(),
            "the client child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let mut parts = line.split_whitespace();
        let _bytes: u64 = parts.next().unwrap().parse().unwrap();
        let _secs: f64 = parts.next().unwrap().parse().unwrap();
        let vmhwm_kib = parts.next().unwrap().parse().unwrap();
        Run {
            wall,
            cpu,
            vmhwm_kib: Some(vmhwm_kib),
        }
    }

    fn curl(&self, url: &str, path: &Path) -> Run {
        let _ = std::fs::remove_file(path);
        let cpu_before = children_cpu(self.ticks);
        let started = Instant::now();
        let status = Command::new("curl")
            .args(["-sS", "-o", path.to_str().unwrap(), url])
            .status()
            .unwrap_or_else(|e| {
                panic!("curl is needed for this bench (apt-get install curl): {e}")
            });
        assert!(status.success(), "curl failed");
        if self.curl_sync {
            // coreutils `sync FILE...` fsyncs each file named.
            let status = Command::new("sync")
                .arg(path)
                .arg(path.parent().unwrap())
                .status()
                .unwrap();
            assert!(status.success(), "sync failed");
        }
        let wall = started.elapsed();
        let cpu = children_cpu(self.ticks) - cpu_before;
        Run {
            wall,
            cpu,
            vmhwm_kib: None,
        }
    }
}

/// Checks size and a few slices of a downloaded file against the served
/// bytes.
fn check(path: &Path, file: &FakeFile) {
    use std::io::{Read, Seek, SeekFrom};
    let len = std::fs::metadata(path).unwrap().len();
    assert_eq!(len, file.len(), "{} has the wrong size", path.display());
    let mut f = std::fs::File::open(path).unwrap();
    for at in [0, len / 3, len - MIB.min(len)] {
        let n = MIB.min(len - at) as usize;
        let mut got = vec![0u8; n];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut got).unwrap();
        let mut want = vec![0u8; n];
        file.fill(at, &mut want);
        assert!(got == want, "{} differs at {at}", path.display());
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// CPU milliseconds per MiB.
fn cpu_ms_per_mib(bytes: u64, d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0 / (bytes as f64 / MIB as f64)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], &args[i + 2]);
        return;
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let size_mib: u64 = arg("--size-mib").map_or(1024, |v| v.parse().unwrap());
    let rounds: usize = arg("--rounds").map_or(7, |v| v.parse().unwrap());
    let dir = PathBuf::from(
        arg("--dir").unwrap_or_else(|| std::env::temp_dir().to_string_lossy().into_owned()),
    )
    .join(format!("goenhance-download-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bench = Bench {
        exe: std::env::current_exe().unwrap(),
        ticks: clock_ticks(),
        curl_sync: !args.iter().any(|a| a == "--curl-nosync"),
    };

    let big = FakeFile::new(size_mib * MIB).content_type("video/mp4");
    let small = FakeFile::new(64 * MIB).content_type("video/mp4");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        FakeServer::builder()
            .file("/big.mp4", big.clone())
            .file("/small.mp4", small.clone())
            .start()
            .await
            .unwrap()
    });
    let big_url = server.file_url("/big.mp4");
    let small_url = server.file_url("/small.mp4");
    let ours = dir.join("client.mp4");
    let theirs = dir.join("curl.mp4");
    println!(
        "download bench: {size_mib} MiB over loopback into {}, {rounds} rounds, curl {}; load average {}",
        dir.display(),
        if bench.curl_sync {
            "then sync FILE DIR"
        } else {
            "without sync"
        },
        load_average()
    );

    // Warm-up: the server's pattern, the page cache, the binaries.
    bench.curl(&small_url, &theirs);
    bench.client(&small_url, &ours);

    let bytes = big.len();
    let mut speed = Vec::new();
    let mut cpu = Vec::new();
    let mut big_hwm = Vec::new();
    for round in 0..rounds {
        let (c, o) = if round % 2 == 0 {
            let c = bench.curl(&big_url, &theirs);
            let o = bench.client(&big_url, &ours);
            (c, o)
        } else {
            let o = bench.client(&big_url, &ours);
            let c = bench.curl(&big_url, &theirs);
            (c, o)
        };
        check(&ours, &big);
        check(&theirs, &big);
        let speed_ratio = mib_s(bytes, o.wall) / mib_s(bytes, c.wall);
        let cpu_ratio = o.cpu.as_secs_f64() / c.cpu.as_secs_f64().max(1e-3);
        println!(
            "round {round}: curl {:6.1} MiB/s {:5.2} ms CPU/MiB | client {:6.1} MiB/s {:5.2} ms CPU/MiB | \
             client/curl: throughput {speed_ratio:.3} CPU {cpu_ratio:.3} | client VmHWM {} KiB",
            mib_s(bytes, c.wall),
            cpu_ms_per_mib(bytes, c.cpu),
            mib_s(bytes, o.wall),
            cpu_ms_per_mib(bytes, o.cpu),
            o.vmhwm_kib.unwrap()
        );
        speed.push(speed_ratio);
        cpu.push(cpu_ratio);
        big_hwm.push(o.vmhwm_kib.unwrap() as f64);
        let _ = std::fs::remove_file(&theirs);
        let _ = std::fs::remove_file(&ours);
    }
    let mut small_hwm = Vec::new();
    for _ in 0..rounds {
        let o = bench.client(&small_url, &ours);
        check(&ours, &small);
        small_hwm.push(o.vmhwm_kib.unwrap() as f64);
        let _ = std::fs::remove_file(&ours);
    }
    let (big_m, small_m) = (median(big_hwm), median(small_hwm));
    println!(
        "client/curl (median of {rounds} rounds): CPU per MiB {:.3}, throughput {:.3}",
        median(cpu),
        median(speed)
    );
    println!(
        "peak RSS: 64 MiB file {small_m:.0} KiB, {size_mib} MiB file {big_m:.0} KiB, ratio {:.3}",
        big_m / small_m
    );
    println!("load average at the end: {}", load_average());
    let _ = std::fs::remove_dir_all(&dir);
    drop(server);
}
