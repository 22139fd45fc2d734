//! Durable tracking at scale, against the fake server on loopback.
//!
//! PostgreSQL — a throwaway cluster on this machine (`pg_stat_statements`
//! loaded), N jobs (default 100,000) stored, then 4 worker processes
//! (this binary started again with `--worker`) run a `Tracker` each until
//! every job is delivered. Each job answers `pending` once, then
//! `success`; polls are 100 ms apart. Reported:
//! - throughput (jobs delivered a second, from the workers' start to the
//!   last delivery recorded in the store; progress is read from a log the
//!   handlers append a byte to, so the bench does not load the database
//!   while it measures it) against one in-memory `Client::wait_all` of as many
//!   jobs of the same timeline on the same server, in the same run
//!   (target: at least 0.5×);
//! - statements a job at steady state (between 10 % and 90 % delivered),
//!   as PostgreSQL counts them in `pg_stat_statements` (every statement,
//!   `BEGIN`/`COMMIT` included), with the most called ones, and the
//!   commits of `pg_stat_database` (target: at most 0.05);
//! - heartbeat writes a second per worker while one worker holds 1,000
//!   jobs and while it holds N (lease 3 s: one heartbeat a second), with
//!   every statement and every job row written in that window (target:
//!   the same for both).
//!
//! SQLite — N jobs in one process, a `Tracker` on a file: throughput
//! against an in-memory `wait_all` of as many jobs (target: at least
//! 0.5×), statements a job (the store's own counter), and the file's size
//! before and after pruning every delivered job.
//!
//! Run: `cargo bench --bench track --features sqlite,postgres,fake,test-util`
//! (`-- --jobs N` to change N, `--hold-secs S` the heartbeat window,
//! `--workers W`, `--skip-pg`, `--skip-sqlite`). A quick run:
//! `-- --jobs 5000 --hold-secs 5`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::track::{NewJob, PostgresStore, SqliteStore, TrackStore, Tracker};
use goenhance_jobs::{Client, JobQuery, PollPolicy};

#[path = "../tests/support/pg.rs"]
mod pg;

#[path = "common/children.rs"]
mod children;

#[path = "common/pgstats.rs"]
mod pgstats;

const POLL: Duration = Duration::from_millis(100);
/// The database the workers use (the bench's reads go to `postgres`).
const DB: &str = "bench";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .map(|i| args[i + 1].clone())
}

fn num(name: &str, default: u64) -> u64 {
    arg(name).map_or(default, |v| v.parse().unwrap())
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn client(base: &str, poll: Duration) -> Client {
    Client::builder()
        .api_key("fake-key")
        .base_url(base)
        .poll_policy(PollPolicy::fixed(poll))
        .build()
        .unwrap()
}

/// A job that answers `pending` once, then `success`.
fn quick() -> Timeline {
    Timeline::new("mx-v2v")
        .pending_for_answers(1)
        .succeed("video", "https://cdn.example/x.mp4")
}

/// A job that stays `pending` for an hour.
fn slow() -> Timeline {
    Timeline::new("mx-v2v")
        .pending(Duration::from_secs(3600))
        .succeed("video", "https://cdn.example/x.mp4")
}

fn ids(prefix: &str, n: u64) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
}

/// Stores `ids` in `store`, 1,000 a statement.
async fn insert(store: &dyn TrackStore, ids: &[String]) {
    for chunk in ids.chunks(1000) {
        let jobs = chunk
            .iter()
            .map(|id| NewJob::new(id.clone(), "null", Duration::from_secs(3600)))
            .collect();
        store.insert(jobs, store.now()).await.unwrap();
    }
}

/// One in-memory `wait_all` of `n` quick jobs: the time it took.
async fn baseline(server: &FakeServer, prefix: &str, n: u64) -> Duration {
    let ids = ids(prefix, n);
    for id in &ids {
        server.add_job(id.clone(), quick());
    }
    let c = client(server.base_url(), POLL);
    let queries: Vec<_> = ids.iter().map(|id| JobQuery::new(id).unwrap()).collect();
    let t = Instant::now();
    assert_eq!(c.wait_all(queries).count().await, n as usize);
    t.elapsed()
}

fn main() {
    if flag("--worker") {
        return worker();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

/// A worker process: a `Tracker` on PostgreSQL whose handler takes every
/// job, until its stdin is closed; then prints its statement counter.
fn worker() {
    let db = arg("--db").unwrap();
    let base = arg("--base").unwrap();
    let name = arg("--name").unwrap();
    let max_jobs = num("--max-jobs", 10_000) as usize;
    let lease = Duration::from_millis(num("--lease-ms", 30_000));
    let poll = Duration::from_millis(num("--poll-ms", 100));
    let claim = Duration::from_millis(num("--claim-ms", 1000));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let store = PostgresStore::connect(&db).await.unwrap();
            let tracker = Tracker::builder(client(&base, poll), store.clone())
                .worker_id(name)
                .max_jobs(max_jobs)
                .max_handlers(256)
                .lease(lease)
                .claim_interval(claim)
                .build();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let mut rest = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut rest);
                let _ = tx.send(());
            });
            // One byte appended to the shared log per handler call (one
            // write with O_APPEND: the bench reads the file's length).
            let log = arg("--log").map(|p| {
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .unwrap()
            });
            tracker
                .run_until(
                    move |_| {
                        if let Some(mut f) = log.as_ref() {
                            f.write_all(b".").unwrap();
                        }
                        std::future::ready(Ok(()))
                    },
                    async move {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
            println!("statements {}", store.statements());
        });
}

fn spawn_worker(cluster: &pg::Cluster, base: &str, name: &str, extra: &[String]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--worker", "--db", &cluster.url_of(DB), "--base", base])
        .args(["--name", name])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Closes the worker's stdin (a graceful stop) and reads its statement
/// counter.
fn stop_worker(mut child: Child) -> u64 {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "worker failed: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("statements "))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Jobs of `prefix` in the bench database: (delivered or dead, held by a
/// worker and waiting).
async fn probe(db: &tokio_postgres::Client, prefix: &str) -> (i64, i64) {
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE state >= 2) AS bench_probe, \
                    count(*) FILTER (WHERE state = 0 AND lease_owner IS NOT NULL) \
             FROM goenhance_jobs WHERE id LIKE $1",
            &[&format!("{prefix}-%")],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Job rows updated so far and how many of those were HOT updates
/// (`pg_stat_user_tables.n_tup_upd`, `n_tup_hot_upd`), once the statistics
/// of the workers' last transactions are in.
async fn updates(db: &tokio_postgres::Client) -> (i64, i64) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let row = db
        .query_one(
            "SELECT n_tup_upd AS bench_probe, n_tup_hot_upd FROM pg_stat_user_tables \
             WHERE relname = 'goenhance_jobs'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Job rows updated so far (`pg_stat_user_tables.n_tup_upd`).
async fn rows_updated(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT n_tup_upd AS bench_probe FROM pg_stat_user_tables \
         WHERE relname = 'goenhance_jobs'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn bench() {
    let n = num("--jobs", 100_000);
    let workers = num("--workers", 4);
    let hold_secs = num("--hold-secs", 10);
    let started = Instant::now();
    let server = FakeServer::builder().start().await.unwrap();
    println!(
        "jobs: {n}; each answers pending once, then success; polls {POLL:?} apart; \
         machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if !flag("--skip-pg") {
        postgres(&server, n, workers, hold_secs).await;
    }
    if !flag("--skip-sqlite") {
        sqlite(&server, n).await;
    }
    println!(
        "whole run: {:.0} s, {} requests to the fake server",
        started.elapsed().as_secs_f64(),
        server.total_requests()
    );
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

async fn postgres(server: &FakeServer, n: u64, workers: u64, hold_secs: u64) {
    let cluster = pg::Cluster::start("trackbench");
    let admin = connect(&cluster.url()).await;
    assert!(
        pgstats::enable(&admin).await,
        "pg_stat_statements could not be set up"
    );
    drop(admin);
    cluster.pg_ctl(&["restart"]);
    let admin = connect(&cluster.url()).await;
    admin
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .expect("pg_stat_statements is not installed (postgresql-contrib)");
    admin
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .await
        .unwrap();
    let store = PostgresStore::connect(&cluster.url_of(DB)).await.unwrap();
    let db = connect(&cluster.url_of(DB)).await;

    // Baseline first, on the same server.
    let mem = baseline(server, "pgmem", n).await;

    // Throughput: n jobs stored, then the workers start.
    let jobs = ids("pg", n);
    for id in &jobs {
        server.add_job(id.clone(), quick());
    }
    let t = Instant::now();
    insert(&store, &jobs).await;
    let inserting = t.elapsed();
    let before = pgstats::calls(&admin, DB).await;
    let commits_before = pgstats::commits(&admin, DB).await;
    let log = std::env::temp_dir().join(format!("goenhance-trackbench-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let claim_arg = vec![
        "--claim-ms".to_owned(),
        num("--claim-ms", 1000).to_string(),
        "--log".to_owned(),
        log.display().to_string(),
    ];
    let handled = || std::fs::metadata(&log).map_or(0, |m| m.len() as i64);
    let ticks = children::clock_ticks();
    let cpu_before = children::children_cpu(ticks);
    let probe_before = pgstats::probe_ms(&admin, DB).await;
    let updates_before = updates(&db).await;
    let t = Instant::now();
    let children: Vec<Child> = (0..workers)
        .map(|w| spawn_worker(&cluster, server.base_url(), &format!("w{w}"), &claim_arg))
        .collect();
    let (mut low, mut high) = (None, None);
    let mut curve = Vec::new();
    // Progress from the handlers' log while they work (a count over the
    // table every 200 ms took a sixth of the database's time); the run
    // ends when every job is recorded delivered in the store, checked once
    // the handlers have seen them all.
    loop {
        let mut done = handled();
        if done >= n as i64 {
            done = probe(&db, "pg").await.0;
        }
        let at = t.elapsed();
        curve.push((at, done));
        if low.is_none() && done * 10 >= n as i64 {
            low = Some((
                at,
                done,
                pgstats::calls(&admin, DB).await,
                pgstats::commits(&admin, DB).await,
            ));
        }
        if high.is_none() && done * 10 >= 9 * n as i64 {
            high = Some((
                at,
                done,
                pgstats::calls(&admin, DB).await,
                pgstats::commits(&admin, DB).await,
            ));
        }
        if done == n as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = t.elapsed();
    let counted: u64 = children.into_iter().map(stop_worker).sum();
    let calls = handled();
    let _ = std::fs::remove_file(&log);
    let cpu = children::children_cpu(ticks) - cpu_before;
    let updates_after = updates(&db).await;
    let probing = pgstats::probe_ms(&admin, DB).await - probe_before;
    let after = pgstats::calls(&admin, DB).await;
    let commits_after = pgstats::commits(&admin, DB).await;
    let (low, high) = (low.unwrap(), high.unwrap());
    let steady_jobs = (high.1 - low.1) as f64;
    let steady_calls = (pgstats::total(&high.2) - pgstats::total(&low.2)) as f64;
    println!("\n## PostgreSQL, {workers} worker processes");
    println!(
        "in-memory wait_all: {:.2} s, {:.0} jobs/s",
        mem.as_secs_f64(),
        n as f64 / mem.as_secs_f64()
    );
    println!(
        "stored {n} jobs in {:.2} s (1,000 a statement); workers delivered them in {:.2} s: \
         {:.0} jobs/s, {:.2}x of in-memory",
        inserting.as_secs_f64(),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        mem.as_secs_f64() / took.as_secs_f64()
    );
    println!(
        "steady state ({} to {} delivered, {:.1} s): {:.4} statements a job \
         (pg_stat_statements), {:.4} commits a job (pg_stat_database)",
        low.1,
        high.1,
        (high.0 - low.0).as_secs_f64(),
        steady_calls / steady_jobs,
        (high.3 - low.3) as f64 / steady_jobs,
    );
    println!(
        "whole run (start to stop of the workers): {:.4} statements a job \
         (pg_stat_statements), {:.4} (the stores' counters), {:.4} commits a job",
        (pgstats::total(&after) - pgstats::total(&before)) as f64 / n as f64,
        counted as f64 / n as f64,
        (commits_after - commits_before) as f64 / n as f64
    );
    println!(
        "workers' CPU: {:.2} s in all ({:.0} µs a job); claim interval {} ms",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64,
        num("--claim-ms", 1000)
    );
    println!("delivered each second: {}", per_second(&curve));
    let (upd, hot) = (
        updates_after.0 - updates_before.0,
        updates_after.1 - updates_before.1,
    );
    println!(
        "job rows updated: {:.2} a job, {:.1} % of them HOT (pg_stat_user_tables)",
        upd as f64 / n as f64,
        100.0 * hot as f64 / upd.max(1) as f64
    );
    println!(
        "handler calls: {calls} for {n} jobs; the bench's own counting reads: {:.0} ms \
         executing in all, {:.1} % of the delivery time",
        probing,
        probing / took.as_secs_f64() / 10.0
    );
    println!(
        "statements at steady state, most called first \
         (calls a job, mean ms executing, share of the window executing, buffers a call, text):"
    );
    let window_ms = (high.0 - low.0).as_secs_f64() * 1000.0;
    for (calls, ms, blocks, q) in pgstats::delta(&low.2, &high.2).into_iter().take(10) {
        println!(
            "  {:>8.4}  {:>8.2} ms  {:>5.1} %  {:>8.0}  {}",
            calls as f64 / steady_jobs,
            ms / calls as f64,
            100.0 * ms / window_ms,
            blocks as f64 / calls as f64,
            pgstats::short(&q, 90)
        );
    }

    // Heartbeats while one worker holds few and many jobs.
    for (i, hold) in [1_000, n].into_iter().enumerate() {
        let prefix = format!("hold{i}");
        let jobs = ids(&prefix, hold);
        for id in &jobs {
            server.add_job(id.clone(), slow());
        }
        insert(&store, &jobs).await;
        let polls_before = server.total_requests();
        let extra: Vec<String> = [
            "--max-jobs",
            &hold.to_string(),
            "--lease-ms",
            "3000",
            "--poll-ms",
            "600000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = Instant::now();
        let child = spawn_worker(&cluster, server.base_url(), &format!("holder{i}"), &extra);
        // Held, polled once, and the first statuses saved (one heartbeat
        // later): from then on nothing changes but the heartbeats.
        while probe(&db, &prefix).await.1 < hold as i64 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let claimed = t.elapsed();
        while server.total_requests() - polls_before < hold {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let polled = t.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (c0, r0) = (pgstats::calls(&admin, DB).await, rows_updated(&db).await);
        let w = Instant::now();
        tokio::time::sleep(Duration::from_secs(hold_secs)).await;
        let (c1, r1) = (pgstats::calls(&admin, DB).await, rows_updated(&db).await);
        let secs = w.elapsed().as_secs_f64();
        let beats = pgstats::calls_of(&c1, "UPDATE goenhance_workers SET alive_until")
            - pgstats::calls_of(&c0, "UPDATE goenhance_workers SET alive_until");
        let t_stop = Instant::now();
        stop_worker(child);
        println!(
            "one worker holding {hold} jobs (claimed in {:.1} s, each polled once by {:.1} s), \
             over {secs:.1} s: {:.2} heartbeat writes/s, {:.2} statements/s in all, \
             {:.1} job rows updated/s; stopped (jobs released) in {:.1} s",
            claimed.as_secs_f64(),
            polled.as_secs_f64(),
            beats as f64 / secs,
            (pgstats::total(&c1) - pgstats::total(&c0)) as f64 / secs,
            (r1 - r0) as f64 / secs,
            t_stop.elapsed().as_secs_f64()
        );
        for (calls, _, _, q) in pgstats::delta(&c0, &c1).into_iter().take(5) {
            println!(
                "  {:>8.2}/s  {}",
                calls as f64 / secs,
                pgstats::short(&q, 100)
            );
        }
        db.batch_execute("DELETE FROM goenhance_jobs WHERE id LIKE 'hold%'")
            .await
            .unwrap();
    }
    drop(cluster);
}

async fn sqlite(server: &FakeServer, n: u64) {
    let dir = std::env::temp_dir().join(format!("goenhance-bench-track-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jobs.db");

    let mem = baseline(server, "sqlmem", n).await;

    let jobs = ids("sql", n);
    for id in &jobs {
        server.add_job(id.clone(), quick());
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let t = Instant::now();
    insert(&store, &jobs).await;
    let inserting = t.elapsed();
    let statements_before = store.statements();
    let tracker = Tracker::builder(client(server.base_url(), POLL), store.clone())
        .max_handlers(256)
        .max_jobs(10_000)
        .claim_interval(Duration::from_millis(num("--claim-ms", 1000)))
        .build();
    let t = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn({
        let tracker = tracker.clone();
        async move {
            tracker
                .run_until(|_| std::future::ready(Ok(())), async move {
                    let _ = stop_rx.await;
                })
                .await
        }
    });
    let mut reads = 0;
    let mut curve = Vec::new();
    loop {
        let left = store.pending().await.unwrap();
        curve.push((t.elapsed(), (n - left) as i64));
        if left == 0 {
            break;
        }
        reads += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reads += 1;
    let took = t.elapsed();
    let curve = per_second(&curve);
    stop_tx.send(()).unwrap();
    run.await.unwrap().unwrap();
    // The pending() reads of the loop above are left out.
    let statements = store.statements() - statements_before - reads;
    let full = files_size(&path);
    let pruned = store
        .prune(Duration::ZERO, SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(pruned, n);
    let after_prune = files_size(&path);
    drop(tracker);
    drop(store);
    // The store's connection closes on its own thread: wait for the WAL
    // to be checkpointed away.
    let closing = Instant::now();
    while files_size(&path).1 > 0 && closing.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed = files_size(&path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let pages: (i64, i64, i64) = conn
        .query_row(
            "SELECT page_count, freelist_count, page_size \
             FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    conn.execute_batch("VACUUM").unwrap();
    drop(conn);
    let vacuumed = files_size(&path);

    println!("\n## SQLite, one process");
    println!(
        "in-memory wait_all: {:.2} s, {:.0} jobs/s",
        mem.as_secs_f64(),
        n as f64 / mem.as_secs_f64()
    );
    println!(
        "stored {n} jobs in {:.2} s (1,000 a statement); the tracker delivered them in \
         {:.2} s: {:.0} jobs/s, {:.2}x of in-memory; {:.4} statements a job \
         (the store's counter)",
        inserting.as_secs_f64(),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        mem.as_secs_f64() / took.as_secs_f64(),
        statements as f64 / n as f64
    );
    println!("delivered each second: {curve}");
    println!(
        "file with {n} delivered jobs: {}; after pruning them: {}; \
         closed (WAL checkpointed): {} ({} pages of {} bytes, {} free); after VACUUM: {}",
        kib(full),
        kib(after_prune),
        kib(closed),
        pages.0,
        pages.2,
        pages.1,
        kib(vacuumed)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sizes of the database file and of its `-wal` file, in bytes.
fn files_size(path: &Path) -> (u64, u64) {
    let size = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::fs::metadata(p).map_or(0, |m| m.len())
    };
    (size(""), size("-wal"))
}

fn kib((db, wal): (u64, u64)) -> String {
    format!(
        "{:.0} KiB + WAL {:.0} KiB",
        db as f64 / 1024.0,
        wal as f64 / 1024.0
    )
}

/// Jobs delivered in each whole second, from samples `(elapsed, delivered)`.
fn per_second(samples: &[(Duration, i64)]) -> String {
    let mut out = Vec::new();
    let mut last = 0;
    for sec in 1.. {
        let Some(&(_, done)) = samples
            .iter()
            .rev()
            .find(|(at, _)| at.as_secs_f64() <= sec as f64)
        else {
            break;
        };
        out.push((done - last).to_string());
        last = done;
        if samples
            .last()
            .is_none_or(|(at, _)| at.as_secs_f64() <= sec as f64)
        {
            break;
        }
    }
    out.join(" ")
}
