//! A graceful stop of a tracking worker, proven on a real child process
//! and a SQLite file: SIGTERM while a handler runs.
//!
//! - A handler that ends within the grace period: the process exits 0
//!   within it, the job is acknowledged once, and a restart delivers
//!   nothing again.
//! - A handler slower than the grace period: the process exits 0 when the
//!   grace period ends, the job is released (not left to its lease), and
//!   another worker delivers it once.
//!
//! Each worker is this test's own binary run again (its `main` picks the
//! role, hence no libtest harness). The handler writes `start`/`end`
//! lines to a log file of its own, which is what the checks read; the
//! test waits on the lines the worker prints, never on guessed sleeps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::track::{JobState, SqliteStore, Tracked, Tracker};
use goenhance_jobs::{Client, JobQuery};

#[path = "support/child.rs"]
mod child;

use child::{log_lines, say, ChildLines};

/// Set in a worker's environment: run as the worker.
const CHILD: &str = "GOENHANCE_TEST_GRACEFUL_CHILD";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        worker();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases: [(&str, fn() -> _); 2] = [
        (
            "a_handler_within_the_grace_period_is_acknowledged_once",
            || {
                Box::pin(a_handler_within_the_grace_period_is_acknowledged_once())
                    as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
            },
        ),
        ("a_handler_slower_than_the_grace_period_is_released", || {
            Box::pin(a_handler_slower_than_the_grace_period_is_released())
        }),
    ];
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        println!("test {name} ...");
        rt.block_on(case());
        println!("test {name} ... ok");
    }
}

/// The worker: tracks nothing itself, runs until SIGTERM with
/// `run_until`. Its handler appends `start <id> <delivery>` to the log,
/// sleeps `HANDLER_MS`, then appends `end <id> <delivery>`; it prints the
/// same lines (and `ready`, `stopped`) on stdout.
fn worker() {
    let var = |name: &str| std::env::var(name).unwrap();
    let ms = |name: &str| Duration::from_millis(var(name).parse().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).unwrap();
        let client = Client::builder()
            .api_key("fake-key")
            .base_url(&var("BASE_URL"))
            .build()
            .unwrap();
        let store = SqliteStore::open(var("DB")).await.unwrap();
        let tracker = Tracker::builder(client, store)
            .worker_id(var("WORKER"))
            .lease(ms("LEASE_MS"))
            .shutdown_grace(ms("GRACE_MS"))
            .claim_interval(Duration::from_millis(50))
            .build();
        let (log, handler_time) = (PathBuf::from(var("LOG")), ms("HANDLER_MS"));
        let handler = move |done: goenhance_jobs::track::Completion| {
            let log = log.clone();
            async move {
                let (id, n) = (done.query().img_uuid().to_owned(), done.deliveries());
                say(&log, &format!("start {id} {n}"));
                tokio::time::sleep(handler_time).await;
                say(&log, &format!("end {id} {n}"));
                Ok(())
            }
        };
        println!("ready");
        let stop = async move {
            term.recv().await;
        };
        tracker.run_until(handler, stop).await.unwrap();
        println!("stopped");
    });
}

/// A worker started as a child process: its stdout, line by line.
type Worker = ChildLines;

fn start_worker(dir: &Path, base_url: &str, name: &str, handler_ms: u64, grace_ms: u64) -> Worker {
    let mut w = ChildLines::spawn(
        Command::new(std::env::current_exe().unwrap())
            .env(CHILD, "1")
            .env("BASE_URL", base_url)
            .env("DB", dir.join("jobs.db"))
            .env("LOG", dir.join("handler.log"))
            .env("WORKER", name)
            .env("LEASE_MS", "60000")
            .env("GRACE_MS", grace_ms.to_string())
            .env("HANDLER_MS", handler_ms.to_string()),
        "a worker",
    );
    w.wait_line(|l| l == "ready");
    w
}

/// A fake server with `ids` finishing at once, and a tracker on the
/// folder's store to track them and read them back.
async fn setup(ids: &[&str]) -> (FakeServer, tempfile::TempDir, Tracker) {
    let mut builder = FakeServer::builder().api_key("fake-key");
    for id in ids {
        builder = builder.job(*id, Timeline::new("mx-v2v").fail());
    }
    let server = builder.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .api_key("fake-key")
        .base_url(server.base_url())
        .build()
        .unwrap();
    let store = SqliteStore::open(dir.path().join("jobs.db")).await.unwrap();
    let tracker = Tracker::builder(client, store).build();
    (server, dir, tracker)
}

async fn track(tracker: &Tracker, id: &str) {
    let tracked = tracker
        .track(JobQuery::new(id).unwrap(), serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(tracked, Tracked::New);
}

async fn state(tracker: &Tracker, id: &str) -> (JobState, u32) {
    let job = tracker.job(&JobQuery::new(id).unwrap()).await.unwrap();
    let job = job.expect("the job is in the store");
    (job.state(), job.deliveries())
}

async fn a_handler_within_the_grace_period_is_acknowledged_once() {
    let (server, dir, tracker) = setup(&["g-1", "g-2"]).await;
    let (path, base) = (dir.path().to_owned(), server.base_url().to_owned());
    track(&tracker, "g-1").await;

    // SIGTERM while the handler runs (it takes 1.5 s; the grace is 20 s).
    let (status, took, said) = tokio::task::spawn_blocking(move || {
        let mut w = start_worker(&path, &base, "replica-a", 1500, 20_000);
        w.wait_line(|l| l == "start g-1 1");
        let (status, took) = w.terminate();
        (status, took, w.seen.clone())
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}; said {said:#?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(
        said.last().map(String::as_str),
        Some("stopped"),
        "{said:#?}"
    );
    assert_eq!(log_lines(dir.path()), ["start g-1 1", "end g-1 1"]);
    assert_eq!(state(&tracker, "g-1").await, (JobState::Delivered, 1));

    // A restart delivers a job tracked now, and never the first again.
    track(&tracker, "g-2").await;
    let (path, base) = (dir.path().to_owned(), server.base_url().to_owned());
    let status = tokio::task::spawn_blocking(move || {
        let mut w = start_worker(&path, &base, "replica-a", 0, 20_000);
        w.wait_line(|l| l == "end g-2 1");
        w.terminate().0
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        log_lines(dir.path()),
        ["start g-1 1", "end g-1 1", "start g-2 1", "end g-2 1"]
    );
    assert_eq!(state(&tracker, "g-1").await, (JobState::Delivered, 1));
    assert_eq!(state(&tracker, "g-2").await, (JobState::Delivered, 1));
    assert_eq!(tracker.pending().await.unwrap(), 0);
    server.shutdown().await;
}

async fn a_handler_slower_than_the_grace_period_is_released() {
    let (server, dir, tracker) = setup(&["s-1"]).await;
    let (path, base) = (dir.path().to_owned(), server.base_url().to_owned());
    track(&tracker, "s-1").await;

    // The handler would take 10 minutes; the grace period is 1 s.
    let (status, took, said) = tokio::task::spawn_blocking(move || {
        let mut w = start_worker(&path, &base, "replica-a", 600_000, 1000);
        w.wait_line(|l| l == "start s-1 1");
        let (status, took) = w.terminate();
        (status, took, w.seen.clone())
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}; said {said:#?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(log_lines(dir.path()), ["start s-1 1"]);
    // Released: finished, not delivered, held by nobody.
    assert_eq!(state(&tracker, "s-1").await, (JobState::Finished, 1));

    // Another worker (so no registration of the same name frees it) takes
    // it at once, not when the 60 s lease of the first would have ended,
    // and delivers it once.
    let (path, base) = (dir.path().to_owned(), server.base_url().to_owned());
    let (status, took) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut w = start_worker(&path, &base, "replica-b", 0, 1000);
        w.wait_line(|l| l == "end s-1 2");
        let took = started.elapsed();
        (w.terminate().0, took)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(30), "taken over after {took:?}");
    assert_eq!(
        log_lines(dir.path()),
        ["start s-1 1", "start s-1 2", "end s-1 2"]
    );
    assert_eq!(state(&tracker, "s-1").await, (JobState::Delivered, 2));
    server.shutdown().await;
}
