//! A handler that crashes its process on every delivery of one job, on a
//! real SQLite file with real child processes: each crash counts as a
//! delivery (the count is taken when the job is claimed), so with
//! `max_deliveries(3)` the worker started a fourth time finds the job
//! dead, with the reason, and delivers the other jobs.
//!
//! Each worker is this test's own binary run again (its `main` picks the
//! role, hence no libtest harness). The handler writes `start <id> <n>`
//! (and `end <id> <n>` when it returns) to a log file of its own, synced
//! before it goes on: the checks read that log and the store; the test
//! waits on the lines the worker prints, never on guessed sleeps.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::track::{JobState, SqliteStore, Tracker};
use goenhance_jobs::{Client, JobQuery, PollPolicy};

#[path = "support/child.rs"]
mod child;

use child::{log_lines, say, ChildLines};

/// Set in a worker's environment: run as the worker.
const CHILD: &str = "GOENHANCE_TEST_CRASHLOOP_CHILD";
/// The job whose handler aborts the process.
const BOOM: &str = "boom";
const OTHERS: [&str; 3] = ["ok-1", "ok-2", "ok-3"];
const MAX_DELIVERIES: u32 = 3;

fn main() {
    if std::env::var_os(CHILD).is_some() {
        worker();
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let name = "a_handler_that_crashes_its_process_every_time_makes_the_job_dead";
    if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("test {name} ...");
    rt.block_on(a_handler_that_crashes_its_process_every_time_makes_the_job_dead());
    println!("test {name} ... ok");
}

/// The worker: runs until killed, the same worker name each time (so a
/// restart takes its earlier jobs back at once). Its handler logs
/// `start`, then aborts the process for [`BOOM`], or logs `end` and
/// returns `Ok` for the others.
fn worker() {
    let var = |name: &str| std::env::var(name).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::builder()
            .api_key("fake-key")
            .base_url(&var("BASE_URL"))
            .poll_policy(PollPolicy::fixed(Duration::from_millis(100)))
            .build()
            .unwrap();
        let store = SqliteStore::open(var("DB")).await.unwrap();
        let tracker = Tracker::builder(client, store)
            .worker_id("crashy")
            .max_deliveries(MAX_DELIVERIES)
            .claim_interval(Duration::from_millis(50))
            .build();
        let log = PathBuf::from(var("LOG"));
        let handler = move |done: goenhance_jobs::track::Completion| {
            let log = log.clone();
            async move {
                let (id, n) = (done.query().img_uuid().to_owned(), done.deliveries());
                say(&log, &format!("start {id} {n}"));
                if id == BOOM {
                    std::process::abort();
                }
                say(&log, &format!("end {id} {n}"));
                Ok(())
            }
        };
        println!("ready");
        tracker.run(handler).await.unwrap();
    });
}

fn start_worker(dir: &Path, base_url: &str) -> ChildLines {
    let mut w = ChildLines::spawn(
        Command::new(std::env::current_exe().unwrap())
            .env(CHILD, "1")
            .env("BASE_URL", base_url)
            .env("DB", dir.join("jobs.db"))
            .env("LOG", dir.join("handler.log"))
            .stderr(std::process::Stdio::null()),
        "a worker",
    );
    w.wait_line(|l| l == "ready");
    w
}

async fn a_handler_that_crashes_its_process_every_time_makes_the_job_dead() {
    // BOOM is done at once; the others after six answers, so that they
    // are still being waited on while BOOM crashes the first workers.
    let mut builder = FakeServer::builder().api_key("fake-key");
    builder = builder.job(BOOM, Timeline::new("mx-v2v").fail());
    for id in OTHERS {
        builder = builder.job(id, Timeline::new("mx-v2v").pending_for_answers(6).fail());
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
    for id in [BOOM].into_iter().chain(OTHERS) {
        tracker
            .track(JobQuery::new(id).unwrap(), serde_json::json!({}))
            .await
            .unwrap();
    }

    // Three workers in turn, each killed by the handler of its delivery.
    for n in 1..=MAX_DELIVERIES {
        let (path, base) = (dir.path().to_owned(), server.base_url().to_owned());
        let (status, said) = tokio::task::spawn_blocking(move || {
            let mut w = start_worker(&path, &base);
            w.wait_line(|l| l == format!("start {BOOM} {n}"));
            (w.wait_exit(), w.seen.clone())
        })
        .await
        .unwrap();
        assert_eq!(
            status.signal(),
            Some(6),
            "SIGABRT: {status}; said {said:#?}"
        );
        let job = tracker.job(&JobQuery::new(BOOM).unwrap()).await.unwrap();
        let job = job.unwrap();
        assert_eq!((job.state(), job.deliveries()), (JobState::Finished, n));
    }

    // The fourth: BOOM is dead without its handler being called again,
    // and the others are delivered.
    let mut undelivered = Vec::new();
    for id in OTHERS {
        let job = tracker.job(&JobQuery::new(id).unwrap()).await.unwrap();
        if job.unwrap().state() != JobState::Delivered {
            undelivered.push(id);
        }
    }
    let (path, base) = (dir.path().to_owned(), server.base_url().to_owned());
    let w = tokio::task::spawn_blocking(move || {
        let mut w = start_worker(&path, &base);
        for id in undelivered {
            w.wait_line(|l| l.starts_with(&format!("end {id} ")));
        }
        w
    })
    .await
    .unwrap();
    // The acknowledgements and the burial are written by the run's next
    // store passes: wait for the store to say so.
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while tracker.pending().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < until, "still pending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(w);

    let dead = tracker.dead(10, None).await.unwrap();
    let dead: Vec<(&str, &str)> = dead.items().iter().map(|d| (d.id(), d.error())).collect();
    assert_eq!(
        dead,
        [(
            BOOM,
            "delivery 3 of 3 did not end: the worker died or stopped while its handler ran"
        )]
    );
    for id in OTHERS {
        let job = tracker.job(&JobQuery::new(id).unwrap()).await.unwrap();
        assert_eq!(job.unwrap().state(), JobState::Delivered, "{id}");
    }
    let log = log_lines(dir.path());
    let boom: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|l| l.split(' ').nth(1) == Some(BOOM))
        .collect();
    assert_eq!(boom, ["start boom 1", "start boom 2", "start boom 3"]);
    for id in OTHERS {
        let ends = log
            .iter()
            .filter(|l| l.starts_with(&format!("end {id} ")))
            .count();
        assert!(ends >= 1, "{id} never handled: {log:#?}");
    }
    server.shutdown().await;
}
