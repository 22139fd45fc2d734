//! Faults on `release`, the call a run makes when it stops holding jobs
//! (a graceful stop): whether it fails, commits and loses its answer, or
//! hangs, the stopping run still ends, and every job is delivered once,
//! by another worker when the first could not free it (after its
//! heartbeat lapsed), with no two handler runs of a job at once. On the
//! memory store, whose clock is tokio's, paused.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goenhance_jobs::track::testing::{Fault, FaultyStore, Operation};
use goenhance_jobs::track::{Completion, JobState, MemoryStore, Tracker};
use goenhance_jobs::transport::mock::MockTransport;
use goenhance_jobs::{BoxError, Client, PollPolicy};
use serde_json::json;
use tokio::time::Instant;

use support::{mock_client, q, secs};

const LEASE: Duration = Duration::from_secs(3);

/// One handler run: the job, the worker, when it started and ended.
#[derive(Clone, Debug)]
struct RunLog {
    id: String,
    worker: &'static str,
    deliveries: u32,
    start: Instant,
    end: Instant,
}

fn client(mock: &MockTransport) -> Client {
    mock_client(mock)
        .poll_policy(PollPolicy::fixed(secs(1)))
        .wait_timeout(secs(600))
        .build()
        .unwrap()
}

fn tracker(mock: &MockTransport, store: &FaultyStore<MemoryStore>, name: &str) -> Tracker {
    Tracker::builder(client(mock), store.clone())
        .worker_id(name)
        .lease(LEASE)
        .store_timeout(secs(1))
        .shutdown_grace(secs(5))
        .claim_interval(Duration::from_millis(100))
        .build()
}

/// A handler that takes 2 s and logs its run.
fn handler(
    worker: &'static str,
    log: &Arc<Mutex<Vec<RunLog>>>,
) -> impl Fn(Completion) -> futures_util::future::BoxFuture<'static, Result<(), BoxError>>
       + Send
       + Sync
       + 'static {
    let log = Arc::clone(log);
    move |c: Completion| {
        let log = Arc::clone(&log);
        Box::pin(async move {
            let start = Instant::now();
            tokio::time::sleep(secs(2)).await;
            log.lock().unwrap().push(RunLog {
                id: c.query().img_uuid().to_owned(),
                worker,
                deliveries: c.deliveries(),
                start,
                end: Instant::now(),
            });
            Ok(())
        })
    }
}

/// Worker `a` holds six jobs: three finished at once (their handlers run
/// 2 s), three still pending (done on their third poll). It is asked to
/// stop at 1 s while every `release` meets `fault`; worker `b` starts
/// then. Returns the handler runs, and when `a`'s run ended.
async fn stop_with_release_fault(fault: Fault) -> (Vec<RunLog>, Instant, u64) {
    let mock = MockTransport::new();
    for id in ["f0", "f1", "f2"] {
        mock.timeline(id, &["success"]);
    }
    for id in ["w0", "w1", "w2"] {
        mock.timeline(id, &["pending", "processing", "success"]);
    }
    let store = FaultyStore::new(MemoryStore::new());
    let a = tracker(&mock, &store, "a");
    let b = tracker(&mock, &store, "b");
    for id in ["f0", "f1", "f2", "w0", "w1", "w2"] {
        a.track(q(id), json!({})).await.unwrap();
    }
    store.inject(Operation::Release, fault, 100);
    let log = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let stopping = tokio::spawn({
        let (a, h) = (a.clone(), handler("a", &log));
        async move {
            let r = a.run_until(h, tokio::time::sleep(secs(1))).await;
            (r, Instant::now())
        }
    });
    tokio::time::sleep(secs(1)).await;
    let b_run = tokio::spawn({
        let (b, h) = (b.clone(), handler("b", &log));
        async move { b.run(h).await }
    });
    let (stopped, ended) = tokio::time::timeout(secs(60), stopping)
        .await
        .expect("the stopping run ends")
        .unwrap();
    stopped.unwrap();
    // Its handlers had 5 s of grace; the last store pass tries 3 times.
    assert!(ended - t0 <= secs(10), "{:?}", ended - t0);
    tokio::time::timeout(secs(120), async {
        while a.pending().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every job delivered");
    // A little longer: nothing is delivered again.
    tokio::time::sleep(LEASE * 4).await;
    b_run.abort();
    for id in ["f0", "f1", "f2", "w0", "w1", "w2"] {
        let job = a.job(&q(id)).await.unwrap().unwrap();
        assert_eq!(
            (job.state(), job.deliveries()),
            (JobState::Delivered, 1),
            "{id}"
        );
    }
    let runs = log.lock().unwrap().clone();
    (runs, ended, store.injected())
}

/// Each job ran once, the finished ones on `a` (within its grace), the
/// pending ones on `b`; no two runs of a job overlap.
fn check(runs: &[RunLog]) {
    let mut by_job: BTreeMap<&str, Vec<&RunLog>> = BTreeMap::new();
    for r in runs {
        by_job.entry(r.id.as_str()).or_default().push(r);
    }
    for (id, rs) in &mut by_job {
        rs.sort_by_key(|r| r.start);
        for pair in rs.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{id} overlaps: {pair:#?}");
        }
    }
    let who: Vec<(&str, &str, u32)> = by_job
        .iter()
        .flat_map(|(id, rs)| rs.iter().map(move |r| (*id, r.worker, r.deliveries)))
        .collect();
    assert_eq!(
        who,
        [
            ("f0", "a", 1),
            ("f1", "a", 1),
            ("f2", "a", 1),
            ("w0", "b", 1),
            ("w1", "b", 1),
            ("w2", "b", 1),
        ]
    );
}

/// Every release fails: the pending jobs stay pointed at `a` until its
/// heartbeat lapses, then `b` takes them.
#[tokio::test(start_paused = true)]
async fn a_release_that_fails_leaves_the_jobs_to_the_next_worker_after_the_lease() {
    let (runs, ended, injected) = stop_with_release_fault(Fault::Error).await;
    check(&runs);
    assert!(injected >= 1);
    // Not freed by `a`: `b` could claim them only once `a`'s last
    // heartbeat lapsed, after `a` ended.
    for r in runs.iter().filter(|r| r.worker == "b") {
        assert!(r.start >= ended, "{r:?} started before {ended:?}");
    }
}

/// Every release is done and its answer lost: the jobs are free at once.
#[tokio::test(start_paused = true)]
async fn a_release_that_commits_then_errors_frees_the_jobs() {
    let (runs, _, injected) = stop_with_release_fault(Fault::CommitThenError).await;
    check(&runs);
    assert!(injected >= 1);
}

/// Every release hangs past the store timeout: given up on, the stop
/// still ends, and the jobs are taken over after the lease.
#[tokio::test(start_paused = true)]
async fn a_release_that_hangs_is_given_up_and_the_jobs_taken_over() {
    let (runs, ended, injected) = stop_with_release_fault(Fault::Hang(secs(600))).await;
    check(&runs);
    assert!(injected >= 1);
    for r in runs.iter().filter(|r| r.worker == "b") {
        assert!(r.start >= ended, "{r:?} started before {ended:?}");
    }
}
