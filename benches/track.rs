//! Durable tracking against the fake server on loopback: 10,000 quick jobs
//! (each succeeds on its second poll) through in-memory `wait_all` (the
//! baseline), through `Tracker` on a SQLite file, and through `Tracker` on
//! PostgreSQL (a throwaway cluster the benchmark starts), with each store's
//! statements per job. Same process, same timelines.
//!
//! Run: `cargo bench --bench track --features sqlite,postgres,fake`
//! (`-- --jobs N`).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::track::{PostgresStore, SqliteStore, TrackStore, Tracker};

#[path = "../tests/support/pg.rs"]
mod pg;
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

    // Tracker on SQLite, then on PostgreSQL: track all (concurrently), run
    // until every job is delivered and recorded.
    let dir = std::env::temp_dir().join(format!("goenhance-bench-track-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = SqliteStore::open(dir.join("jobs.db")).await.unwrap();
    let (sql, sql_polls) = tracked(sqlite.clone(), "sql", n).await;
    let sql_statements = sqlite.statements();

    let cluster = pg::Cluster::start("bench");
    let postgres = PostgresStore::connect(&cluster.url()).await.unwrap();
    let (pgt, pg_polls) = tracked(postgres.clone(), "pg", n).await;
    let pg_statements = postgres.statements();

    println!("jobs: {n}, poll interval {POLL:?}");
    println!(
        "in-memory wait_all: {:.2} s, {:.0} jobs/s, {mem_polls} polls",
        mem.as_secs_f64(),
        n as f64 / mem.as_secs_f64()
    );
    for (name, took, polls, statements) in [
        ("sqlite", sql, sql_polls, sql_statements),
        ("postgres", pgt, pg_polls, pg_statements),
    ] {
        println!(
            "tracker on {name}: {:.2} s, {:.0} jobs/s, {polls} polls, throughput {:.2}x of in-memory, \
             {statements} statements ({:.2} per job)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            mem.as_secs_f64() / took.as_secs_f64(),
            statements as f64 / n as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tracks `n` jobs in `store` and runs a tracker until all are delivered:
/// the time taken and the polls the server saw.
async fn tracked<S: TrackStore + Clone>(store: S, prefix: &str, n: usize) -> (Duration, u64) {
    let s = server(prefix, n).await;
    let tracker = Tracker::builder(client(s.base_url()), store.clone())
        .max_handlers(256)
        .claim_interval(Duration::from_millis(20))
        .build();
    let t = Instant::now();
    let tracks = (0..n).map(|i| {
        let t = tracker.clone();
        async move {
            t.track(
                JobQuery::new(format!("{prefix}-{i:05}")).unwrap(),
                serde_json::Value::Null,
            )
            .await
        }
    });
    for r in futures_util::future::join_all(tracks).await {
        r.unwrap();
    }
    println!(
        "  {prefix}: {n} tracked in {:.2} s",
        t.elapsed().as_secs_f64()
    );
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
    while store.pending().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t.elapsed();
    run.abort();
    let t = Instant::now();
    for _ in 0..100 {
        store.pending().await.unwrap();
    }
    println!(
        "  {prefix}: one pending() takes {:.2} ms",
        t.elapsed().as_secs_f64() * 10.0
    );
    (took, s.total_requests())
}
