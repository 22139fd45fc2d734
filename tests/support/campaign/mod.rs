//! Fault campaigns of durable tracking: many jobs on the fake server,
//! three worker processes (this test binary started again as a worker),
//! faults between them and their store, one worker SIGKILLed and
//! restarted, one with its clock 30 s ahead; then an independent check of
//! what happened, from the handlers' own logs, the fault logs and the fake
//! server's request log ([`check`]).
//!
//! Seeded: the seed is printed (`campaign seed: N`) and `CAMPAIGN_SEED=N`
//! replays the plan (the jobs, the fault plans, which worker is killed;
//! the timing of processes is the machine's). `CAMPAIGN_SCALE=k` runs `k`
//! times as many jobs and faults over a window `k` times as long;
//! `CAMPAIGN_MAX_HANDLERS=n` gives each worker `n` handlers at once
//! instead of the tracker's default; `CAMPAIGN_KEEP_LOGS=1` keeps the logs
//! of a run that passed.
#![allow(dead_code)]

pub mod check;
pub mod faulty;
pub mod fleet;
pub mod worker;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goenhance_jobs::fake::{FakeServer, Timeline};

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The size and timing of a campaign.
#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    pub jobs: usize,
    /// Faults to inject of every kind, at least.
    pub faults_per_kind: usize,
    /// How long faults are injected, from the workers' start.
    pub fault_window: Duration,
    pub lease: Duration,
    /// The wait timeout: a job's deadline runs this long from its `track`.
    pub deadline: Duration,
    pub poll: Duration,
    /// The clock offset of the skewed worker.
    pub skew_ms: i64,
    pub workers: usize,
    /// Handlers at once per worker: the tracker's default, or
    /// `CAMPAIGN_MAX_HANDLERS`.
    pub max_handlers: usize,
}

impl Settings {
    /// The default size (1,000 jobs, 100 faults of every kind), scaled by
    /// `CAMPAIGN_SCALE`, seeded by `CAMPAIGN_SEED` or at random; prints the
    /// seed.
    pub fn from_env() -> Settings {
        let seed = match std::env::var("CAMPAIGN_SEED") {
            Ok(s) => s.trim().parse().expect("CAMPAIGN_SEED is a number"),
            Err(_) => fastrand::u64(..1_000_000_000),
        };
        let scale: f64 = std::env::var("CAMPAIGN_SCALE")
            .ok()
            .map(|s| s.trim().parse().expect("CAMPAIGN_SCALE is a number"))
            .unwrap_or(1.0);
        println!("campaign seed: {seed}");
        let scaled = |n: f64| (n * scale).round().max(1.0);
        Settings {
            seed,
            jobs: scaled(1000.0) as usize,
            faults_per_kind: scaled(100.0) as usize,
            fault_window: Duration::from_secs_f64(scaled(55.0)),
            lease: Duration::from_secs(3),
            deadline: Duration::from_secs_f64(scaled(50.0)),
            poll: Duration::from_secs(3),
            skew_ms: 30_000,
            workers: 3,
            max_handlers: std::env::var("CAMPAIGN_MAX_HANDLERS")
                .ok()
                .map(|s| s.trim().parse().expect("CAMPAIGN_MAX_HANDLERS is a number"))
                .unwrap_or(goenhance_jobs::track::DEFAULT_MAX_HANDLERS),
        }
    }
}

/// How a job of the campaign ends on the fake server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Succeed,
    Fail,
    /// Never: its wait ends at its deadline.
    Hang,
}

/// One job of the campaign.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub end: End,
    /// Pending, then processing, for these times.
    pub pending: Duration,
    pub processing: Duration,
    /// How long its handler takes.
    pub handler_ms: u64,
}

/// The jobs drawn from `seed`: 4 % never end, 12 % fail, the others
/// succeed; each ends at least 12 s before its deadline; handlers take
/// 20 ms to 1.5 s, one in twenty 1.5 to 2 leases.
pub fn draw_jobs(s: &Settings) -> Vec<Job> {
    let mut rng = fastrand::Rng::with_seed(s.seed ^ 0x6a6f_6273);
    let longest = s.deadline.as_millis() as u64 - 12_000;
    (0..s.jobs)
        .map(|i| {
            let roll = rng.f64();
            let end = if roll < 0.04 {
                End::Hang
            } else if roll < 0.16 {
                End::Fail
            } else {
                End::Succeed
            };
            let total = rng.u64(500..=longest);
            let pending = rng.u64(0..=total);
            Job {
                id: format!("cj-{i:05}"),
                end,
                pending: Duration::from_millis(pending),
                processing: Duration::from_millis(total - pending),
                // One in twenty handlers outlasts a lease: a worker that
                // loses its leases meanwhile must not let another start.
                handler_ms: if rng.f64() < 0.05 {
                    let lease = s.lease.as_millis() as u64;
                    rng.u64(lease * 3 / 2..=lease * 2)
                } else {
                    rng.u64(20..=1500)
                },
            }
        })
        .collect()
}

/// The fake server following `jobs`, with its request log on; a job that
/// succeeds has one video it serves itself.
pub async fn fake_server(jobs: &[Job]) -> FakeServer {
    let mut b = FakeServer::builder().log_requests();
    for j in jobs {
        let t = Timeline::new("mx-v2v")
            .pending(j.pending)
            .processing(j.processing);
        let t = match j.end {
            End::Succeed => t.succeed_with_file("video", format!("/out/{}_0.mp4", j.id)),
            End::Fail => t.fail(),
            End::Hang => t,
        };
        b = b.job(j.id.clone(), t);
    }
    b.start().await.unwrap()
}

/// A fresh folder for a campaign's logs and files.
pub fn campaign_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("goenhance-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes a campaign's folder once it passed, unless `CAMPAIGN_KEEP_LOGS`
/// is set (to study the timing of a run that passed).
pub fn remove_dir(dir: &Path) {
    if std::env::var_os("CAMPAIGN_KEEP_LOGS").is_some() {
        println!("logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// What a worker process is told, through its environment.
#[derive(Clone, Debug)]
pub struct WorkerEnv {
    pub name: String,
    /// A connection string or a file path.
    pub store: String,
    pub base_url: String,
    pub dir: PathBuf,
    pub lease_ms: u64,
    pub offset_ms: i64,
    pub poll_ms: u64,
    pub deadline_ms: u64,
    /// For faults a worker injects itself: the seed of its plan and when
    /// they stop (wall-clock ms).
    pub seed: u64,
    pub faults_until_ms: u64,
    /// Faults of its plan, and the mean gap between them.
    pub faults: usize,
    pub mean_gap_ms: u64,
    pub max_handlers: usize,
}

const ENV: &str = "GOENHANCE_CAMPAIGN_WORKER";

impl WorkerEnv {
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (ENV, self.name.clone()),
            ("GOENHANCE_CAMPAIGN_STORE", self.store.clone()),
            ("GOENHANCE_CAMPAIGN_BASE", self.base_url.clone()),
            ("GOENHANCE_CAMPAIGN_DIR", self.dir.display().to_string()),
            ("GOENHANCE_CAMPAIGN_LEASE_MS", self.lease_ms.to_string()),
            ("GOENHANCE_CAMPAIGN_OFFSET_MS", self.offset_ms.to_string()),
            ("GOENHANCE_CAMPAIGN_POLL_MS", self.poll_ms.to_string()),
            (
                "GOENHANCE_CAMPAIGN_DEADLINE_MS",
                self.deadline_ms.to_string(),
            ),
            ("GOENHANCE_CAMPAIGN_SEED", self.seed.to_string()),
            (
                "GOENHANCE_CAMPAIGN_FAULTS_UNTIL_MS",
                self.faults_until_ms.to_string(),
            ),
            ("GOENHANCE_CAMPAIGN_FAULTS", self.faults.to_string()),
            ("GOENHANCE_CAMPAIGN_GAP_MS", self.mean_gap_ms.to_string()),
            ("GOENHANCE_CAMPAIGN_HANDLERS", self.max_handlers.to_string()),
        ]
    }

    /// This process's settings, when it was started as a worker.
    ///
    /// # Panics
    ///
    /// When it was not: the worker entry is not a test on its own.
    pub fn from_env() -> WorkerEnv {
        let get = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("{k} is not set: this entry is the worker of a campaign and runs only when the campaign starts it")
            })
        };
        WorkerEnv {
            name: get(ENV),
            store: get("GOENHANCE_CAMPAIGN_STORE"),
            base_url: get("GOENHANCE_CAMPAIGN_BASE"),
            dir: PathBuf::from(get("GOENHANCE_CAMPAIGN_DIR")),
            lease_ms: get("GOENHANCE_CAMPAIGN_LEASE_MS").parse().unwrap(),
            offset_ms: get("GOENHANCE_CAMPAIGN_OFFSET_MS").parse().unwrap(),
            poll_ms: get("GOENHANCE_CAMPAIGN_POLL_MS").parse().unwrap(),
            deadline_ms: get("GOENHANCE_CAMPAIGN_DEADLINE_MS").parse().unwrap(),
            seed: get("GOENHANCE_CAMPAIGN_SEED").parse().unwrap(),
            faults_until_ms: get("GOENHANCE_CAMPAIGN_FAULTS_UNTIL_MS").parse().unwrap(),
            faults: get("GOENHANCE_CAMPAIGN_FAULTS").parse().unwrap(),
            mean_gap_ms: get("GOENHANCE_CAMPAIGN_GAP_MS").parse().unwrap(),
            max_handlers: get("GOENHANCE_CAMPAIGN_HANDLERS").parse().unwrap(),
        }
    }
}

/// A worker process: this test binary running only `entry`.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub started_ms: u64,
}

impl Proc {
    /// Starts this test binary again, running only the test `entry` (an
    /// ignored one) as the worker `env` describes; its stderr goes to a
    /// file in the campaign's folder.
    pub fn start(entry: &str, env: &WorkerEnv) -> Proc {
        let exe = std::env::current_exe().unwrap();
        let started_ms = now_ms();
        let err = std::fs::File::create(
            env.dir
                .join(format!("stderr-{}-{started_ms}.txt", env.name)),
        )
        .unwrap();
        let mut cmd = Command::new(exe);
        cmd.args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
        for (k, v) in env.vars() {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start a worker process");
        Proc {
            name: env.name.clone(),
            child,
            started_ms,
        }
    }

    /// SIGKILL; returns when the process is gone, with the time of the
    /// kill.
    pub fn kill(&mut self) -> u64 {
        let at = now_ms();
        let _ = self.child.kill();
        let _ = self.child.wait();
        at
    }

    /// Whether it has ended on its own (a worker never should).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ids of jobs whose handler ended, from the handler logs in `dir`.
pub fn delivered(dir: &Path) -> HashSet<String> {
    check::read_handler_logs(dir)
        .into_iter()
        .filter(|r| r.end_ms.is_some())
        .map(|r| r.job)
        .collect()
}
