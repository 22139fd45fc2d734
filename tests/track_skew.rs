//! Clock skew on PostgreSQL: two tracking workers share a throwaway
//! cluster, one reading the store's clock 30 s ahead and one 30 s behind
//! (the test-only clock offset). Every time that decides ownership is the
//! database's `now()`, so: every job is delivered exactly once, each job
//! is polled by one worker only (never by both in alternation), and a
//! job's deadline is measured by the database's clock, not by either
//! worker's.
//!
//! Each worker polls its own fake server (both serve the same jobs on the
//! same timelines), so the servers' request logs tell which worker polled
//! what; the handlers log what they were given and when.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::track::{Completion, JobState, PostgresStore, TrackOptions, Tracker};
use goenhance_jobs::{BoxError, Client, JobQuery, PollPolicy};

use support::pg::Cluster;

/// Jobs that finish, and jobs that hang until their deadline.
const FINISHING: usize = 36;
const HANGING: usize = 4;
/// The wait timeout of the hanging jobs.
const DEADLINE: Duration = Duration::from_secs(4);
const SKEW_MS: i64 = 30_000;

fn finishing(i: usize) -> String {
    format!("skew-{i}")
}

fn hanging(i: usize) -> String {
    format!("hang-{i}")
}

/// The same jobs on each server: pending 500 ms, processing 0 to 1.5 s,
/// then succeeded (or failed, one in five); the hanging ones pending for
/// ever.
async fn server() -> FakeServer {
    let mut b = FakeServer::builder().api_key("fake-key").log_requests();
    for i in 0..FINISHING {
        let t = Timeline::new("mx-v2v")
            .pending(Duration::from_millis(500))
            .processing(Duration::from_millis(500 * (i as u64 % 4)));
        let t = if i % 5 == 0 {
            t.fail()
        } else {
            t.succeed("video", "https://cdn.example/out.mp4")
        };
        b = b.job(finishing(i), t);
    }
    for i in 0..HANGING {
        b = b.job(
            hanging(i),
            Timeline::new("mx-v2v").pending(Duration::from_secs(3600)),
        );
    }
    b.start().await.unwrap()
}

/// A delivery as the handler saw it.
#[derive(Debug, Clone)]
struct Delivered {
    worker: &'static str,
    deliveries: u32,
    deadline: bool,
    at: SystemTime,
}

fn worker(
    name: &'static str,
    offset_ms: i64,
    server: &FakeServer,
    store: &PostgresStore,
) -> Tracker {
    let client = Client::builder()
        .api_key("fake-key")
        .base_url(server.base_url())
        .poll_policy(PollPolicy::fixed(Duration::from_millis(250)))
        .wait_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    Tracker::builder(client, store.clone())
        .worker_id(name)
        .clock_offset(offset_ms)
        // Long enough that a busy machine does not fence a worker.
        .lease(Duration::from_secs(6))
        // Half the jobs each: both workers must hold some.
        .max_jobs((FINISHING + HANGING) / 2)
        .claim_interval(Duration::from_millis(100))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_workers_on_postgres_deliver_once_poll_alone_and_keep_the_databases_deadlines() {
    let cluster = Cluster::start("skew");
    let (server_ahead, server_behind) = (server().await, server().await);
    let store = PostgresStore::connect(&cluster.url()).await.unwrap();
    let ahead = worker("ahead", SKEW_MS, &server_ahead, &store);
    let behind = worker("behind", -SKEW_MS, &server_behind, &store);

    // Tracked through both skewed workers in turn: the database sets the
    // times all the same.
    let mut tracked_at = BTreeMap::new();
    for i in 0..FINISHING.max(HANGING) {
        let by = if i % 2 == 0 { &ahead } else { &behind };
        if i < FINISHING {
            by.track(JobQuery::new(finishing(i)).unwrap(), serde_json::json!({}))
                .await
                .unwrap();
        }
        if i < HANGING {
            tracked_at.insert(hanging(i), SystemTime::now());
            let options = TrackOptions::new().wait_timeout(DEADLINE);
            by.track_with(
                JobQuery::new(hanging(i)).unwrap(),
                serde_json::json!({}),
                options,
            )
            .await
            .unwrap();
        }
    }
    for i in 0..HANGING {
        let job = ahead
            .job(&JobQuery::new(hanging(i)).unwrap())
            .await
            .unwrap();
        let job = job.unwrap();
        assert_eq!(
            job.deadline().duration_since(job.tracked_at()).unwrap(),
            DEADLINE
        );
    }

    let log: Arc<Mutex<BTreeMap<String, Vec<Delivered>>>> = Arc::default();
    let handler = |name: &'static str| {
        let log = Arc::clone(&log);
        move |c: Completion| {
            let entry = Delivered {
                worker: name,
                deliveries: c.deliveries(),
                deadline: c.detail().is_err_and(|e| e.is_deadline()),
                at: SystemTime::now(),
            };
            log.lock()
                .unwrap()
                .entry(c.query().img_uuid().to_owned())
                .or_default()
                .push(entry);
            async { Ok::<(), BoxError>(()) }
        }
    };
    let runs = [
        tokio::spawn({
            let (t, h) = (ahead.clone(), handler("ahead"));
            async move { t.run(h).await }
        }),
        tokio::spawn({
            let (t, h) = (behind.clone(), handler("behind"));
            async move { t.run(h).await }
        }),
    ];
    // Until every job is delivered (a minute at most: the slowest takes
    // its 4 s deadline).
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while ahead.pending().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < until, "jobs still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two heartbeats more: nothing is delivered or polled again.
    let polls_then = server_ahead.requests().len() + server_behind.requests().len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for run in &runs {
        assert!(!run.is_finished(), "a run ended");
    }
    runs.iter().for_each(|r| r.abort());

    // Delivered exactly once each, as the store also says.
    let log = log.lock().unwrap().clone();
    let ids: Vec<String> = (0..FINISHING)
        .map(finishing)
        .chain((0..HANGING).map(hanging))
        .collect();
    assert_eq!(
        log.keys().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect()
    );
    for (id, ds) in &log {
        assert_eq!(ds.len(), 1, "{id} delivered {ds:#?}");
        assert_eq!(ds[0].deliveries, 1, "{id}");
        assert_eq!(ds[0].deadline, id.starts_with("hang-"), "{id}: {ds:?}");
        let job = ahead
            .job(&JobQuery::new(id.as_str()).unwrap())
            .await
            .unwrap();
        assert_eq!(job.unwrap().state(), JobState::Delivered, "{id}");
    }

    // Polled by one worker each, the one that delivered it.
    let mut polled_by: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (server, name) in [(&server_ahead, "ahead"), (&server_behind, "behind")] {
        for r in server.requests() {
            polled_by
                .entry(r.img_uuid.clone())
                .or_default()
                .insert(name);
        }
    }
    for id in &ids {
        let by: Vec<&str> = polled_by
            .get(id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        assert_eq!(by, [log[id][0].worker], "{id} polled by {by:?}");
    }
    let per_worker = |name: &str| log.values().filter(|ds| ds[0].worker == name).count();
    assert_eq!(per_worker("ahead") + per_worker("behind"), ids.len());
    assert!(
        per_worker("ahead") > 0 && per_worker("behind") > 0,
        "{log:#?}"
    );
    assert_eq!(
        server_ahead.requests().len() + server_behind.requests().len(),
        polls_then,
        "polls after every job was delivered"
    );

    // Neither worker was ever fenced (a lease measured by a worker's clock
    // would lapse at once for the one behind): each kept its first epoch.
    let db = cluster.connect().await;
    let epochs: Vec<(String, i64)> = db
        .query(
            "SELECT name, epoch FROM goenhance_workers ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(epochs, [("ahead".to_owned(), 1), ("behind".to_owned(), 1)]);

    // The deadlines by the database's clock: neither 30 s early (the
    // worker ahead) nor 30 s late (the one behind).
    for i in 0..HANGING {
        let id = hanging(i);
        let took = log[&id][0].at.duration_since(tracked_at[&id]).unwrap();
        assert!(
            took >= DEADLINE - Duration::from_millis(100)
                && took < DEADLINE + Duration::from_secs(3),
            "{id} delivered {took:?} after it was tracked, by {}",
            log[&id][0].worker
        );
    }
    server_ahead.shutdown().await;
    server_behind.shutdown().await;
}
