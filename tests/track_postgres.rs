//! A fleet on PostgreSQL: a throwaway cluster started by the test, three
//! worker processes sharing 1,000 jobs with one SIGKILLed half-way, and
//! workers that ride out a server restart.
//!
//! Needs the PostgreSQL server binaries (`initdb`, `pg_ctl`) on `PATH` or
//! in `pg_config --bindir`; as root they run as the `postgres` user.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::track::{JobState, PostgresStore, TrackStore, Tracker};
use goenhance_jobs::{Client, JobQuery, JobStatus, PollPolicy};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

mod support;

use support::pg::Cluster;

fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("track_worker");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --examples --all-features` (cargo test builds it)",
        bin.display()
    );
    bin
}

/// A worker process; its `deliver` lines come tagged with its number.
fn spawn_worker(n: usize, url: &str, base: &str, tx: mpsc::Sender<(usize, String)>) -> Child {
    let mut child = Command::new(worker_binary())
        .args([url, base])
        .args([
            "--poll-ms",
            "200",
            "--handler-ms",
            "20",
            "--lease-ms",
            "2000",
        ])
        .args(["--max-jobs", "400"])
        .args(["--worker-id", &format!("w{n}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start track_worker");
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((n, line)).is_err() {
                break;
            }
        }
    });
    child
}

fn timelines(prefix: &str, n: usize) -> Vec<(String, Timeline)> {
    (0..n)
        .map(|i| {
            let t = Timeline::new("mx-v2v").pending_for_answers(1 + (i as u64 % 3));
            let t = if i % 10 == 3 {
                t.fail()
            } else {
                t.succeed("video", "https://cdn.example/out.mp4")
            };
            (format!("{prefix}-{i:04}"), t)
        })
        .collect()
}

async fn serve(jobs: &[(String, Timeline)]) -> FakeServer {
    jobs.iter()
        .fold(FakeServer::builder(), |b, (id, t)| {
            b.job(id.clone(), t.clone())
        })
        .start()
        .await
        .unwrap()
}

fn client(base: &str, poll: Duration) -> Client {
    Client::builder()
        .api_key("fake-key")
        .base_url(base)
        .poll_policy(PollPolicy::fixed(poll))
        .build()
        .unwrap()
}

async fn until_pending(store: &PostgresStore, n: u64) {
    loop {
        if store.pending().await.ok() == Some(n) {
            return;
        }
        tokio::time::sleep(ms(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_one_killed_deliver_every_job_polling_each_once_at_a_time() {
    const N: usize = 1000;
    let cluster = Cluster::start("fleet");
    let jobs = timelines("job", N);

    // The baseline: one in-memory wait_all over the same timelines.
    let alone = serve(&jobs).await;
    let c = client(alone.base_url(), ms(200));
    let queries: Vec<_> = jobs
        .iter()
        .map(|(id, _)| JobQuery::new(id).unwrap())
        .collect();
    assert_eq!(c.wait_all(queries).count().await, N);
    let baseline = alone.total_requests();
    drop(alone);

    let server = serve(&jobs).await;
    let store = PostgresStore::connect(&cluster.url()).await.unwrap();
    let tracker = Tracker::builder(client(server.base_url(), ms(200)), store.clone()).build();
    let tracks = jobs.iter().map(|(id, _)| {
        let t = tracker.clone();
        let id = id.clone();
        async move { t.track(JobQuery::new(&id)?, serde_json::json!(id)).await }
    });
    for r in futures_util::future::join_all(tracks).await {
        r.unwrap();
    }
    assert_eq!(store.pending().await.unwrap(), N as u64);

    let (url, base) = (cluster.url(), server.base_url().to_owned());
    let (tx, rx) = mpsc::channel();
    let mut workers: Vec<Child> = (0..3)
        .map(|n| spawn_worker(n, &url, &base, tx.clone()))
        .collect();
    drop(tx);
    // Deliveries as (worker, id, deliveries, what).
    let lines = tokio::task::spawn_blocking(move || {
        let mut got: Vec<(usize, String, u32, String)> = Vec::new();
        let mut killed = false;
        let mut seen = HashSet::new();
        while seen.len() < N {
            let (w, line) = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("workers went silent");
            let parts: Vec<&str> = line.split(' ').collect();
            if parts[0] != "deliver" {
                continue;
            }
            seen.insert(parts[1].to_owned());
            got.push((
                w,
                parts[1].to_owned(),
                parts[2].parse().unwrap(),
                parts[3].to_owned(),
            ));
            if !killed && got.len() >= N / 2 {
                workers[0].kill().unwrap();
                workers[0].wait().unwrap();
                killed = true;
            }
        }
        (got, workers, rx)
    });
    let (mut got, mut workers, rx) = lines.await.unwrap();
    // The killed worker's unrecorded deliveries come again once its leases
    // lapse: wait until every delivery is recorded.
    until_pending(&store, 0).await;
    for w in workers.iter_mut().skip(1) {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    let late: Vec<(usize, String)> = tokio::task::block_in_place(|| rx.iter().collect());
    for (w, line) in late {
        let parts: Vec<&str> = line.split(' ').collect();
        if parts[0] == "deliver" {
            got.push((
                w,
                parts[1].to_owned(),
                parts[2].parse().unwrap(),
                parts[3].to_owned(),
            ));
        }
    }

    let want: HashMap<&str, &str> = jobs
        .iter()
        .enumerate()
        .map(|(i, (id, _))| {
            (
                id.as_str(),
                if i % 10 == 3 { "failed" } else { "succeeded" },
            )
        })
        .collect();
    let mut by_id: HashMap<&str, Vec<&(usize, String, u32, String)>> = HashMap::new();
    for d in &got {
        by_id.entry(d.1.as_str()).or_default().push(d);
    }
    assert_eq!(by_id.len(), N);
    for (id, ds) in &by_id {
        for d in ds {
            assert_eq!(d.3, want[id], "{id}");
        }
    }
    // Delivered twice: only jobs the killed worker was delivering.
    let killed: HashSet<&str> = got
        .iter()
        .filter(|d| d.0 == 0)
        .map(|d| d.1.as_str())
        .collect();
    let twice: Vec<&str> = by_id
        .iter()
        .filter(|(_, ds)| ds.len() > 1)
        .map(|(id, _)| *id)
        .collect();
    for id in &twice {
        assert!(killed.contains(id), "{id} delivered twice by live workers");
    }
    // The work was shared: every worker delivered some.
    for w in 0..3 {
        assert!(got.iter().any(|d| d.0 == w), "worker {w} delivered nothing");
    }
    // Each job polled by one worker at a time, and no more polls than one
    // process waiting on them all (a tenth more at most).
    assert_eq!(server.overlapping_polls(), 0);
    let total = server.total_requests();
    eprintln!(
        "fleet: {total} polls against {baseline} in memory, {} delivered twice, per worker {:?}",
        twice.len(),
        (0..3)
            .map(|w| got.iter().filter(|d| d.0 == w).count())
            .collect::<Vec<_>>()
    );
    assert!(
        total as f64 <= baseline as f64 * 1.1,
        "{total} polls against {baseline} in memory"
    );
    // A poll after a job's end happens only for a job whose end the killed
    // worker saw but had not stored: the worker that takes it over asks
    // once more, stores the end, and never asks again. So at most once a
    // job, and for at most the 400 jobs the killed worker could hold.
    let after_end: Vec<(&str, u64)> = jobs
        .iter()
        .map(|(id, _)| (id.as_str(), server.polls_after_terminal(id)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        after_end.iter().all(|(_, n)| *n == 1),
        "polled more than once after its end: {after_end:?}"
    );
    assert!(
        after_end.len() <= 400,
        "{} jobs polled after their end",
        after_end.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_a_server_restart_and_lose_nothing() {
    const N: usize = 300;
    let cluster = Cluster::start("restart");
    let jobs: Vec<(String, Timeline)> = (0..N)
        .map(|i| {
            (
                format!("r-{i:03}"),
                Timeline::new("mx-v2v")
                    .pending(ms(200 + (i as u64 % 40) * 100))
                    .succeed("video", "https://cdn.example/r.mp4"),
            )
        })
        .collect();
    let server = serve(&jobs).await;
    let store_a = PostgresStore::connect(&cluster.url()).await.unwrap();
    let store_b = PostgresStore::connect(&cluster.url()).await.unwrap();
    let a = Tracker::builder(client(server.base_url(), ms(100)), store_a.clone())
        .worker_id("a")
        .claim_interval(ms(100))
        .build();
    let b = Tracker::builder(client(server.base_url(), ms(100)), store_b.clone())
        .worker_id("b")
        .claim_interval(ms(100))
        .build();
    for (id, _) in &jobs {
        a.track(JobQuery::new(id).unwrap(), serde_json::Value::Null)
            .await
            .unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut runs = Vec::new();
    for t in [a.clone(), b.clone()] {
        let tx = tx.clone();
        runs.push(tokio::spawn(async move {
            t.run(move |c| {
                let tx = tx.clone();
                async move {
                    let ok = c.detail().map(|d| d.status() == &JobStatus::Succeeded);
                    tx.send((c.query().img_uuid().to_owned(), ok.unwrap_or(false)))?;
                    Ok(())
                }
            })
            .await
        }));
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    while seen.len() < N / 3 {
        let (id, ok) = rx.recv().await.unwrap();
        assert!(ok, "{id}");
        *seen.entry(id).or_default() += 1;
    }
    tokio::task::block_in_place(|| cluster.pg_ctl(&["-m", "fast", "restart"]));
    while seen.len() < N {
        let (id, ok) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("deliveries stopped after the restart")
            .unwrap();
        assert!(ok, "{id}");
        *seen.entry(id).or_default() += 1;
    }
    until_pending(&store_a, 0).await;
    assert!(seen.values().all(|&n| n == 1), "a job was delivered twice");
    for r in &runs {
        assert!(!r.is_finished(), "a run ended");
    }
    for r in runs {
        r.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_crate_is_refused_without_the_password() {
    let cluster = Cluster::start("schema");
    drop(PostgresStore::connect(&cluster.url()).await.unwrap());
    let client = cluster.connect().await;
    client
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (99, 'later', '2026-01-01T00:00:00Z', '0')",
            &[],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect(&cluster.url()).await.unwrap_err();
    assert!(err.is_store());
    assert_eq!(
        err.to_string(),
        format!(
            "store error: the postgres store at 127.0.0.1:{}/postgres has a schema newer than this version of goenhance-jobs",
            cluster.port
        )
    );
    // A refused connection names the server, never the password.
    let err = PostgresStore::connect("postgres://postgres:hunter2@127.0.0.1:1/postgres")
        .await
        .unwrap_err();
    assert!(err.is_store());
    assert!(
        err.to_string()
            .starts_with("store error: postgres at 127.0.0.1:1/postgres: "),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("hunter2"));
    let err = PostgresStore::connect("postgres://postgres:hunter2@[bad")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "store error: postgres: invalid connection string"
    );
}

#[cfg(feature = "test-util")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_the_contract() {
    let cluster = Cluster::start("conformance");
    let admin = cluster.connect().await;
    let admin = std::sync::Arc::new(admin);
    let n = std::sync::atomic::AtomicUsize::new(0);
    goenhance_jobs::track::testing::conformance(|| {
        let db = format!("c{}", n.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let (admin, url) = (admin.clone(), cluster.url_of(&db));
        async move {
            admin
                .execute(&format!("CREATE DATABASE {db}"), &[])
                .await
                .unwrap();
            PostgresStore::connect(&url).await.unwrap()
        }
    })
    .await;
}

/// Records the crate's PostgreSQL migrations up to `version` as applied
/// in `refinery_schema_history`, as an earlier version of the crate left
/// them.
async fn record_applied(client: &tokio_postgres::Client, version: u32) {
    mod embedded {
        refinery::embed_migrations!("src/track/migrations/postgres");
    }
    let runner = embedded::migrations::runner();
    for m in runner
        .get_migrations()
        .iter()
        .filter(|m| m.version() <= version)
    {
        client
            .execute(
                "INSERT INTO refinery_schema_history VALUES ($1, $2, $3, $4)",
                &[
                    &(m.version() as i32),
                    &m.name(),
                    &"2026-01-01T00:00:00Z",
                    &m.checksum().to_string(),
                ],
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_earlier_schema_is_moved_forward() {
    // A table as the version with per-job leases left it: a job leased to
    // a worker that is gone, one delivered, one waiting.
    let cluster = Cluster::start("forward");
    let client = cluster.connect().await;
    client
        .batch_execute(concat!(
            include_str!("../src/track/migrations/postgres/V1__jobs.sql"),
            include_str!("../src/track/migrations/postgres/V2__status.sql"),
            "CREATE TABLE refinery_schema_history (version int4 PRIMARY KEY, name varchar(255), \
               applied_on varchar(255), checksum varchar(255)); \
             INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at, state, \
               lease_owner, lease_until) VALUES \
               ('leased', '{}', 1000, 9999999999999, 5000, 0, 'gone', 5000), \
               ('waiting', '{}', 2000, 9999999999999, 2000, 0, NULL, 0); \
             INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at, state, outcome, \
               deliveries, delivered_at) VALUES \
               ('done', '{}', 500, 9999999999999, 500, 2, '{\"x\":1}', 1, 3000);"
        ))
        .await
        .unwrap();
    // Record V1 and V2 as applied, as the earlier version did.
    record_applied(&client, 2).await;
    let store = PostgresStore::connect(&cluster.url()).await.unwrap();
    assert_eq!(store.pending().await.unwrap(), 2);
    let w = store
        .register("w", ms(60_000), std::time::SystemTime::now())
        .await
        .unwrap();
    let claimed = store
        .claim(
            &w,
            goenhance_jobs::track::Claim::new(10, 10, 1),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    let mut ids: Vec<_> = claimed.jobs.iter().map(|j| j.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["leased", "waiting"], "leases of the old kind end");
    let done = store
        .list(goenhance_jobs::track::Listing::Delivered, None, 10)
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].id.as_str(), done[0].outcome.as_deref()),
        ("done", Some("{\"x\":1}"))
    );
    assert_eq!(
        done[0].ended_at,
        std::time::UNIX_EPOCH + ms(3000),
        "delivered jobs end when they were delivered"
    );
}

/// The next handler call: (id, deliveries).
async fn next_call(
    called: &mut tokio::sync::mpsc::UnboundedReceiver<(String, u32)>,
) -> (String, u32) {
    tokio::time::timeout(Duration::from_secs(30), called.recv())
        .await
        .expect("no handler call within 30 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_recorded_delivered_only_after_its_handler_returned_ok() {
    // "gate" finishes at its first poll and its handler waits for the test;
    // 30 others finish over the next polls, their handlers return at once,
    // so their completions and acknowledgements are written (together
    // when they meet) while the gate's handler runs.
    let cluster = Cluster::start("acks");
    let mut jobs = vec![(
        "gate".to_owned(),
        Timeline::new("mx-v2v").succeed("video", "https://cdn.example/g.mp4"),
    )];
    for i in 0..30u64 {
        jobs.push((
            format!("other-{i:02}"),
            Timeline::new("mx-v2v")
                .pending_for_answers(1 + i % 6)
                .succeed("video", "https://cdn.example/o.mp4"),
        ));
    }
    let server = serve(&jobs).await;
    let store = PostgresStore::connect(&cluster.url()).await.unwrap();
    let tracker = Tracker::builder(client(server.base_url(), ms(100)), store.clone())
        .claim_interval(ms(100))
        .handler_retry(ms(100), ms(100))
        .build();
    for (id, _) in &jobs {
        tracker
            .track(JobQuery::new(id).unwrap(), serde_json::Value::Null)
            .await
            .unwrap();
    }
    let (called_tx, mut called) = tokio::sync::mpsc::unbounded_channel();
    let (gate_tx, gate_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let gate_rx = std::sync::Arc::new(tokio::sync::Mutex::new(gate_rx));
    let run = tokio::spawn({
        let tracker = tracker.clone();
        async move {
            tracker
                .run(move |c| {
                    let (called_tx, gate_rx) = (called_tx.clone(), gate_rx.clone());
                    async move {
                        let id = c.query().img_uuid().to_owned();
                        called_tx.send((id.clone(), c.deliveries()))?;
                        if id == "gate" {
                            let answer = gate_rx.lock().await.recv().await.unwrap();
                            answer?;
                        }
                        Ok(())
                    }
                })
                .await
        }
    });
    let state = |id: &'static str| {
        let store = store.clone();
        async move {
            let j = store.job(id).await.unwrap().unwrap();
            (j.state, j.deliveries)
        }
    };
    let mut others = HashSet::new();
    let mut gate_calls = 0;
    // Every other job is delivered and recorded while the gate's first
    // delivery has not returned.
    while others.len() < 30 || gate_calls == 0 {
        let (id, n) = next_call(&mut called).await;
        if id == "gate" {
            gate_calls += 1;
            assert_eq!(n, 1);
        } else {
            others.insert(id);
        }
    }
    until_pending(&store, 1).await;
    assert_eq!(
        state("gate").await,
        (JobState::Finished, 1),
        "not delivered while its handler runs"
    );
    // Its handler fails: still not delivered; it is delivered again.
    gate_tx.send(Err("not yet".into())).unwrap();
    assert_eq!(next_call(&mut called).await, ("gate".to_owned(), 2));
    assert_eq!(
        state("gate").await,
        (JobState::Finished, 2),
        "not delivered after its handler failed, nor while it runs again"
    );
    gate_tx.send(Ok(())).unwrap();
    until_pending(&store, 0).await;
    assert_eq!(state("gate").await, (JobState::Delivered, 2));
    assert!(
        called.try_recv().is_err(),
        "no job was delivered more often than said"
    );
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_third_schema_is_moved_forward_and_completes_in_place() {
    // A table as the version before in-place completions left it: a job
    // finished (state 1) and held by a worker that is gone, one finished
    // and held by a live worker, one waiting, one delivered.
    let cluster = Cluster::start("forward4");
    let client = cluster.connect().await;
    client
        .batch_execute(concat!(
            include_str!("../src/track/migrations/postgres/V1__jobs.sql"),
            include_str!("../src/track/migrations/postgres/V2__status.sql"),
            include_str!("../src/track/migrations/postgres/V3__workers.sql"),
            "CREATE TABLE refinery_schema_history (version int4 PRIMARY KEY, name varchar(255), \
               applied_on varchar(255), checksum varchar(255)); \
             INSERT INTO goenhance_workers VALUES ('gone', 1, 1000), ('alive', 1, 9999999999999); \
             INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at, state, outcome, \
               deliveries, lease_owner, lease_epoch) VALUES \
               ('orphan', '{}', 1000, 9999999999999, 1000, 1, 'out-o', 1, 'gone', 1), \
               ('held', '{}', 1000, 9999999999999, 1000, 1, 'out-h', 1, 'alive', 1), \
               ('waiting', '{}', 2000, 9999999999999, 2000, 0, NULL, 0, NULL, NULL); \
             INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at, state, outcome, \
               deliveries, delivered_at, ended_at) VALUES \
               ('done', '{}', 500, 9999999999999, 500, 2, 'out-d', 1, 3000, 3000);"
        ))
        .await
        .unwrap();
    record_applied(&client, 3).await;
    let store = PostgresStore::connect(&cluster.url()).await.unwrap();
    let options: Vec<String> = client
        .query_one(
            "SELECT reloptions FROM pg_class WHERE relname = 'goenhance_jobs'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(options, ["fillfactor=70"]);
    let state = |id: &'static str| {
        let store = store.clone();
        async move {
            let j = store.job(id).await.unwrap().unwrap();
            (j.state, j.outcome, j.deliveries)
        }
    };
    assert_eq!(
        state("held").await,
        (JobState::Finished, Some("out-h".into()), 1)
    );
    assert_eq!(store.pending().await.unwrap(), 3);
    let now = std::time::SystemTime::now();
    let w = store.register("w", ms(60_000), now).await.unwrap();
    let claimed = store
        .claim(&w, goenhance_jobs::track::Claim::new(10, 10, 1), now)
        .await
        .unwrap();
    let got: Vec<_> = claimed
        .jobs
        .iter()
        .map(|j| (j.id.as_str(), j.outcome.as_deref(), j.deliveries))
        .collect();
    assert_eq!(
        got,
        [("waiting", None, 0)],
        "the waiting job is claimed as waiting; the lapsed worker's job is freed"
    );
    // The completion changes no indexed column: a HOT update.
    let done = store
        .complete(
            &w,
            vec![goenhance_jobs::track::Finished::new("waiting", "out-w")],
            now,
        )
        .await
        .unwrap();
    assert_eq!(done, [("waiting".to_owned(), 1)]);
    assert_eq!(
        state("waiting").await,
        (JobState::Finished, Some("out-w".into()), 1)
    );
    let hot = async {
        loop {
            let n: i64 = client
                .query_one(
                    "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'goenhance_jobs'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if n >= 1 {
                return n;
            }
            tokio::time::sleep(ms(100)).await;
        }
    };
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), hot)
            .await
            .expect("the completion was not a HOT update"),
        1
    );
    // Released, the finished job is claimed as finished, and so is the
    // one the lapsed worker held.
    store.release(&w, vec!["waiting".into()]).await.unwrap();
    let again = store
        .claim(&w, goenhance_jobs::track::Claim::new(0, 10, 2), now)
        .await
        .unwrap();
    let mut got: Vec<_> = again
        .jobs
        .iter()
        .map(|j| (j.id.as_str(), j.outcome.as_deref(), j.deliveries))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("orphan", Some("out-o"), 2), ("waiting", Some("out-w"), 2)]
    );
    store
        .ack(vec!["held".into(), "waiting".into(), "orphan".into()], now)
        .await
        .unwrap();
    for id in ["held", "waiting", "orphan"] {
        assert_eq!(
            store.job(id).await.unwrap().unwrap().state,
            JobState::Delivered
        );
    }
    assert_eq!(store.pending().await.unwrap(), 0);
}
