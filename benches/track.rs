//! Durable tracking against the fake server on loopback: 10,000 quick jobs
//! (each succeeds on its second poll) through in-memory `wait_all` (the
//! baseline), through `Tracker` on a SQLite file, and through `Tracker` on
//! PostgreSQL (a throwaway cluster the benchmark starts), with each store's
//! statements per job. Same process, same timelines.
//!
//! Run: `cargo bench --bench track --features sqlite,postgres,fake`
//! (`-- --jobs N --rounds R`; the modes take turns, figures are medians).

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
    let arg = |name: &str, default: usize| {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .map_or(default, |i| args[i + 1].parse().unwrap())
    };
    let n = arg("--jobs", 10_000);
    let rounds = arg("--rounds", 3);

    let dir = std::env::temp_dir().join(format!("goenhance-bench-track-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = pg::Cluster::start("bench");

    // The three modes take turns, `rounds` times, so that a busy machine
    // weighs on each alike; each figure is the median of its rounds.
    let (mut mem, mut sql, mut pgt) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sql_statements, mut pg_statements, mut polls) = (0, 0, [0u64; 3]);
    for round in 0..rounds {
        // Baseline: one in-memory wait_all.
        let s = server(&format!("mem{round}"), n).await;
        let c = client(s.base_url());
        let t = Instant::now();
        let queries: Vec<_> = (0..n)
            .map(|i| JobQuery::new(format!("mem{round}-{i:05}")).unwrap())
            .collect();
        assert_eq!(c.wait_all(queries).count().await, n);
        mem.push(t.elapsed());
        polls[0] += s.total_requests();
        drop(s);

        // Tracker on a fresh SQLite file: track all (concurrently), run
        // until every job is delivered and recorded.
        let sqlite = SqliteStore::open(dir.join(format!("jobs{round}.db")))
            .await
            .unwrap();
        let (took, p) = tracked(sqlite.clone(), &format!("sql{round}"), n).await;
        sql.push(took);
        polls[1] += p;
        sql_statements += sqlite.statements();

        // Tracker on PostgreSQL, the table emptied first.
        let postgres = PostgresStore::connect(&cluster.url()).await.unwrap();
        let (db, conn) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        db.execute("TRUNCATE goenhance_jobs", &[]).await.unwrap();
        let (took, p) = tracked(postgres.clone(), &format!("pg{round}"), n).await;
        pgt.push(took);
        polls[2] += p;
        pg_statements += postgres.statements();
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let all = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (mem_all, sql_all, pg_all) = (all(&mem), all(&sql), all(&pgt));
    let (mem, sql, pgt) = (median(&mut mem), median(&mut sql), median(&mut pgt));
    let jobs = (n * rounds) as f64;
    println!("jobs: {n} a round, {rounds} rounds, poll interval {POLL:?}");
    println!(
        "in-memory wait_all: median {:.2} s ({mem_all}), {:.0} jobs/s, {:.2} polls a job",
        mem.as_secs_f64(),
        n as f64 / mem.as_secs_f64(),
        polls[0] as f64 / jobs
    );
    for (name, took, runs, polls, statements) in [
        ("sqlite", sql, sql_all, polls[1], sql_statements),
        ("postgres", pgt, pg_all, polls[2], pg_statements),
    ] {
        println!(
            "tracker on {name}: median {:.2} s ({runs}), {:.0} jobs/s, {:.2} polls a job, \
             throughput {:.2}x of in-memory, {:.2} statements a job",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            polls as f64 / jobs,
            mem.as_secs_f64() / took.as_secs_f64(),
            statements as f64 / jobs
        );
    }
    drop(cluster);
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
    (took, s.total_requests())
}
