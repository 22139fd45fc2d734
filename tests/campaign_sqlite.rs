//! A fault campaign of durable tracking on one SQLite file: 1,000 jobs on
//! the fake server, three worker processes on the same file, each with
//! store faults injected by a seeded plan (a write done and its reply
//! lost, a write refused, a write that hangs), one worker SIGKILLed and
//! restarted mid-run. (No worker has its clock ahead: processes on one
//! file share one host's clock.) Checked from the
//! handlers' own logs, the fault logs and the fake server's request log:
//! every job delivered, none handled twice at once, each in time, each
//! with the outcome the server gave.
//!
//! `CAMPAIGN_SEED=N` replays a plan; `CAMPAIGN_SCALE=k` runs a larger one.

mod support;

#[path = "support/campaign/mod.rs"]
mod campaign;

use std::time::Duration;

use goenhance_jobs::fake::DEFAULT_API_KEY;
use goenhance_jobs::track::{SqliteStore, TrackStore, Tracker};
use goenhance_jobs::{Client, JobQuery};

use campaign::faulty::{self, Faulty};
use campaign::{fleet, Settings, WorkerEnv};

/// The test that runs a worker process.
const ENTRY: &str = "campaign_worker";

/// The worker process of the campaign; the campaign starts it.
#[test]
#[ignore = "the worker process of the campaign, started by it: not a test on its own"]
fn campaign_worker() {
    let env = WorkerEnv::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = SqliteStore::open(&env.store).await.unwrap();
        let store = Faulty::new(store, &env, Duration::from_millis(env.lease_ms));
        campaign::worker::run(store, env).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_campaign_on_sqlite_delivers_every_job_once_at_a_time_and_in_time() {
    let s = Settings::from_env();
    let dir = campaign::campaign_dir("campaign-sqlite");
    let jobs = campaign::draw_jobs(&s);
    let server = campaign::fake_server(&jobs).await;
    let db = dir.join("jobs.db");

    // Track every job before any worker opens the file.
    let direct = SqliteStore::open(&db).await.unwrap();
    let client = Client::builder()
        .base_url(server.base_url())
        .api_key(DEFAULT_API_KEY)
        .wait_timeout(s.deadline)
        .build()
        .unwrap();
    let tracker = Tracker::builder(client, direct.clone()).build();
    let tracked_from = campaign::now_ms();
    let tracks = jobs.iter().map(|j| {
        let t = tracker.clone();
        let meta = serde_json::json!({ "handler_ms": j.handler_ms });
        async move { t.track(JobQuery::new(&j.id)?, meta).await }
    });
    for r in futures_util::future::join_all(tracks).await {
        r.unwrap();
    }
    let tracked = (tracked_from, campaign::now_ms());
    assert_eq!(tracker.pending().await.unwrap(), jobs.len() as u64);

    let per_worker = s.faults_per_kind * 3 * 3 / 2 / s.workers;
    let faults_until_ms = campaign::now_ms() + s.fault_window.as_millis() as u64;
    let env = |i: usize| WorkerEnv {
        name: format!("w{i}"),
        store: db.display().to_string(),
        base_url: server.base_url().to_owned(),
        dir: dir.clone(),
        lease_ms: s.lease.as_millis() as u64,
        // No clock ahead here: processes on one file share one host's
        // clock, which SQLite trusts (each worker reads it fresh).
        offset_ms: 0,
        poll_ms: s.poll.as_millis() as u64,
        deadline_ms: s.deadline.as_millis() as u64,
        seed: s.seed,
        faults_until_ms,
        faults: per_worker,
        // Writes come every quarter second or so: gaps shorter than that
        // put a fault on nearly every write while the plan lasts.
        mean_gap_ms: s.fault_window.as_millis() as u64 * 2 / 5 / per_worker as u64,
        max_handlers: s.max_handlers,
    };
    let out = fleet::run(
        fleet::Run {
            settings: &s,
            dir: &dir,
            jobs: &jobs,
            server: &server,
            entry: ENTRY,
            env: &env,
            tracked,
        },
        || {
            let direct = direct.clone();
            async move { direct.pending().await.ok() }
        },
        &|| {},
    )
    .await;
    fleet::assert_clean(&s, &out, &faulty::KINDS, s.faults_per_kind, &dir);
    campaign::remove_dir(&dir);
}
