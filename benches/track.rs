//! Durable tracking against the fake server on loopback: 10,000 quick jobs
//! (each succeeds on its second poll) through in-memory `wait_all` (the
//! baseline), through `Tracker` on a SQLite file, and the SQLite store's
//! statements per job. Same process, same timelines.
//!
//! Run: `cargo bench --bench track --features sqlite,fake` (`-- --jobs N`).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::track::{SqliteStore, Tracker};
use goenhance_jobs::{Client, JobQuery, PollPolicy};

const POLL: Duration = Duration::from_millis(100);

fn client(base: &str) -> Client {
    Client::builder()
        .api_key("fake-key")
        .base_url(base)
        .poll_policy(PollPolicy::fixed(POLL))
        .build()
        .unwrap()
}

async fn server(prefix: &str, n: usize) -> FakeServer {
    let mut b = FakeServer::builder();
    for i in 0..n {
        b = b.job(
            format!("{prefix}-{i:05}"),
            Timeline::new("mx-v2v")
                .pending_for_answers(1)
                .succeed("video", "https://cdn.example/x.mp4"),
        );
    }
    b.start().await.unwrap()
}

#[tokio::main]
async fn main() {
    let mut n = 10_000usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--jobs") {
        n = args[i + 1].parse().unwrap();
    }

    // Baseline: one in-memory wait_all.
    let s = server("mem", n).await;
    let c = client(s.base_url());
    let t = Instant::now();
    let queries: Vec<_> = (0..n)
        .map(|i| JobQuery::new(format!("mem-{i:05}")).unwrap())
        .collect();
    let done = c.wait_all(queries).count().await;
    assert_eq!(done, n);
    let mem = t.elapsed();
    let mem_polls = s.total_requests();
    drop(s);

    // Tracker on SQLite: track all (concurrently), run until delivered.
    let dir = std::env::temp_dir().join(format!("goenhance-bench-track-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let s = server("sql", n).await;
    let store = SqliteStore::open(dir.join("jobs.db")).await.unwrap();
    let tracker = Tracker::builder(client(s.base_url()), store.clone())
        .max_handlers(256)
        .claim_interval(Duration::from_millis(20))
        .build();
    let t = Instant::now();
    let tracks = (0..n).map(|i| {
        let t = tracker.clone();
        async move {
            t.track(JobQuery::new(format!("sql-{i:05}")).unwrap(), serde_json::Value::Null)
                .await
        }
    });
    for r in futures_util::future::join_all(tracks).await {
        r.unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn({
        let tracker = tracker.clone();
        async move {
            tracker
                .run(move |_| {
                    let tx = tx.clone();
                    async move {
                        tx.send(())?;
                        Ok(())
                    }
                })
                .await
        }
    });
    for _ in 0..n {
        rx.recv().await.unwrap();
    }
    while tracker.pending().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sql = t.elapsed();
    run.abort();
    let statements = store.statements();
    let sql_polls = s.total_requests();

    println!("jobs: {n}, poll interval {POLL:?}");
    println!(
        "in-memory wait_all: {:.2} s, {:.0} jobs/s, {mem_polls} polls",
        mem.as_secs_f64(),
        n as f64 / mem.as_secs_f64()
    );
    println!(
        "tracker on sqlite: {:.2} s, {:.0} jobs/s, {sql_polls} polls, ratio {:.2}x of in-memory",
        sql.as_secs_f64(),
        n as f64 / sql.as_secs_f64(),
        mem.as_secs_f64() / sql.as_secs_f64()
    );
    println!(
        "sqlite statements: {statements} ({:.2} per job, transaction control included)",
        statements as f64 / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
