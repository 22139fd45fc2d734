//! Durable tracking: the tracker's guarantees on the memory store (paused
//! clock) and on a real SQLite file.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goenhance_jobs::track::{MemoryStore, TrackStore, Tracker};
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{BoxError, Client, JobStatus, PollPolicy, RetryPolicy};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use support::{mock_client, q};

/// The default retries, a poll a second, a minute's deadline.
fn client(mock: &MockTransport) -> Client {
    mock_client(mock)
        .retry_policy(RetryPolicy::default())
        .poll_policy(PollPolicy::fixed(Duration::from_secs(1)))
        .wait_timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// What a handler saw of one delivery.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    id: String,
    meta: serde_json::Value,
    status: Result<JobStatus, String>,
    deliveries: u32,
    at: Instant,
}

/// Runs `tracker` in the background with a handler that reports every
/// delivery and fails a job's first `fail_first` deliveries.
fn spawn_run(
    tracker: &Tracker,
    fail_first: u32,
) -> (mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let t = tracker.clone();
    let handle = tokio::spawn(async move {
        let _ = t
            .run(move |c| {
                let tx = tx.clone();
                async move {
                    let seen = Seen {
                        id: c.query().img_uuid().to_owned(),
                        meta: c.meta().clone(),
                        status: c
                            .detail()
                            .map(|d| d.status().clone())
                            .map_err(|e| e.to_string()),
                        deliveries: c.deliveries(),
                        at: Instant::now(),
                    };
                    let _ = tx.send(seen);
                    if c.deliveries() <= fail_first {
                        return Err::<(), BoxError>("handler refused".into());
                    }
                    Ok(())
                }
            })
            .await;
    });
    (rx, handle)
}

/// Lets the tracker write what it has queued (acknowledgements).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(start_paused = true)]
async fn every_job_is_delivered_once_with_its_meta_then_acknowledged() {
    let mock = MockTransport::new();
    mock.timeline("a", &["pending", "success"]);
    mock.timeline("b", &["processing", "failed"]);
    mock.timeline("c", &["success"]);
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(&mock), store.clone()).build();
    for (id, n) in [("a", 1), ("b", 2), ("c", 3)] {
        tracker.track(q(id), json!({ "n": n })).await.unwrap();
    }
    assert_eq!(tracker.pending().await.unwrap(), 3);
    let (mut rx, run) = spawn_run(&tracker, 0);
    let mut got = HashMap::new();
    for _ in 0..3 {
        let s = rx.recv().await.unwrap();
        got.insert(s.id.clone(), (s.meta, s.status, s.deliveries));
    }
    settle().await;
    assert_eq!(
        got,
        HashMap::from([
            (
                "a".to_owned(),
                (json!({"n": 1}), Ok(JobStatus::Succeeded), 1)
            ),
            ("b".to_owned(), (json!({"n": 2}), Ok(JobStatus::Failed), 1)),
            (
                "c".to_owned(),
                (json!({"n": 3}), Ok(JobStatus::Succeeded), 1)
            ),
        ])
    );
    assert_eq!(tracker.pending().await.unwrap(), 0);
    assert!(store.is_delivered("a") && store.is_delivered("b") && store.is_delivered("c"));
    // Polls: a twice, b twice, c once; nothing after the end.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        (
            mock.count_for("a"),
            mock.count_for("b"),
            mock.count_for("c")
        ),
        (2, 2, 1)
    );
    assert!(rx.try_recv().is_err(), "delivered twice");
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn the_outcome_is_stored_before_the_handler_runs_and_acked_after_ok() {
    let mock = MockTransport::new();
    mock.timeline("a", &["success"]);
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(&mock), store.clone()).build();
    tracker.track(q("a"), json!(null)).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let s = store.clone();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let t = tracker.clone();
    let run = tokio::spawn(async move {
        t.run(move |c| {
            let (s, tx, release) = (s.clone(), tx.clone(), release.clone());
            async move {
                // Stored (one delivery counted), not yet delivered.
                let _ = tx.send((s.deliveries(c.query().img_uuid()), s.is_delivered("a")));
                let rx = release.lock().unwrap().take();
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                Ok(())
            }
        })
        .await
    });
    assert_eq!(rx.recv().await.unwrap(), (Some(1), false));
    settle().await;
    assert!(
        !store.is_delivered("a"),
        "acked before the handler returned"
    );
    release_tx.send(()).unwrap();
    settle().await;
    assert!(store.is_delivered("a"));
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn tracking_an_id_again_keeps_the_first_meta_and_deadline() {
    let mock = MockTransport::new();
    mock.timeline("slow", &["pending"]);
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(&mock), store.clone()).build();
    let t0 = Instant::now();
    tracker.track(q("slow"), json!("first")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    tracker.track(q("slow"), json!("second")).await.unwrap();
    assert_eq!(tracker.pending().await.unwrap(), 1);
    let (mut rx, run) = spawn_run(&tracker, 0);
    let s = rx.recv().await.unwrap();
    assert_eq!(s.meta, json!("first"));
    // The deadline is 60 s from the first track, not from the second.
    let err = s.status.unwrap_err();
    assert!(err.starts_with("wait deadline reached after 60s"), "{err}");
    assert_eq!(s.at - t0, Duration::from_secs(60));
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_time_before_the_run_started() {
    // Tracked, then nothing runs for 50 s (a process that was down): the
    // wait has 10 s left, and its history counts from the track.
    let mock = MockTransport::new();
    mock.timeline("slow", &["pending"]);
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(&mock), store.clone()).build();
    let t0 = Instant::now();
    tracker.track(q("slow"), json!(null)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(50)).await;
    let later = Tracker::builder(client(&mock), store.clone()).build();
    let (mut rx, run) = spawn_run(&later, 0);
    let s = rx.recv().await.unwrap();
    assert_eq!(s.at - t0, Duration::from_secs(60));
    let err = s.status.unwrap_err();
    assert!(
        // Polls at 50, 51, … 59 s: none is sent at the deadline itself.
        err.starts_with("wait deadline reached after 60s (10 polls"),
        "{err}"
    );
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_resumed_wait_counts_a_stall_from_the_last_change_before_the_crash() {
    // Pending for 5 polls (1 s apart), then processing for ever; a stall is
    // 10 s without a change. The worker dies at 8.5 s, another takes over
    // at once: the stall comes 10 s after the change at 5 s, not 10 s
    // after the restart.
    let mock = MockTransport::new();
    mock.timeline(
        "s",
        &[
            "pending",
            "pending",
            "pending",
            "pending",
            "pending",
            "processing",
        ],
    );
    // A client each, as two processes have: nothing shared but the store.
    let client = || {
        Client::builder()
            .api_key("k")
            .transport(mock.clone())
            .poll_policy(
                PollPolicy::fixed(Duration::from_secs(1)).stall_after(Duration::from_secs(10)),
            )
            .wait_timeout(Duration::from_secs(600))
            .build()
            .unwrap()
    };
    let store = MemoryStore::new();
    let first = Tracker::builder(client(), store.clone())
        .worker_id("w")
        .lease(Duration::from_secs(3))
        .build();
    let t0 = Instant::now();
    first.track(q("s"), json!(null)).await.unwrap();
    let (_rx, run) = spawn_run(&first, 0);
    tokio::time::sleep(Duration::from_millis(8500)).await;
    run.abort();
    assert_eq!(mock.count_for("s"), 9);
    let second = Tracker::builder(client(), store.clone())
        .worker_id("w")
        .lease(Duration::from_secs(3))
        .build();
    let (mut rx, run) = spawn_run(&second, 0);
    let s = rx.recv().await.unwrap();
    assert_eq!(s.at - t0, Duration::from_secs(15));
    // 6 polls until the change (kept), 8 after the restart.
    assert_eq!(
        s.status.unwrap_err(),
        "job stalled: status processing unchanged for 10s (14 polls over 15s)"
    );
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_is_delivered_as_an_error() {
    let mock = MockTransport::new();
    mock.script("a", [MockResponse::status(401)]);
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(&mock), store.clone()).build();
    tracker.track(q("a"), json!(null)).await.unwrap();
    let (mut rx, run) = spawn_run(&tracker, 0);
    let s = rx.recv().await.unwrap();
    assert_eq!(
        s.status,
        Err("http status 401 unauthorized: the api key was refused".to_owned())
    );
    assert_eq!(s.deliveries, 1);
    settle().await;
    assert!(store.is_delivered("a"));
    assert_eq!(mock.count_for("a"), 1);
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_failing_handler_is_retried_with_backoff_and_counts_deliveries() {
    let mock = MockTransport::new();
    mock.timeline("a", &["success"]);
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(&mock), store.clone())
        .claim_interval(Duration::from_millis(100))
        .handler_retry(Duration::from_secs(1), Duration::from_secs(60))
        .build();
    tracker.track(q("a"), json!(null)).await.unwrap();
    let (mut rx, run) = spawn_run(&tracker, 2);
    let first = rx.recv().await.unwrap();
    let second = rx.recv().await.unwrap();
    let third = rx.recv().await.unwrap();
    assert_eq!(
        [first.deliveries, second.deliveries, third.deliveries],
        [1, 2, 3]
    );
    // 1 s then 2 s, found by the next claim (every 100 ms).
    let gap1 = second.at - first.at;
    let gap2 = third.at - second.at;
    assert!(
        gap1 >= Duration::from_secs(1) && gap1 <= Duration::from_millis(1100),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_secs(2) && gap2 <= Duration::from_millis(2100),
        "{gap2:?}"
    );
    settle().await;
    assert!(store.is_delivered("a"));
    assert_eq!(store.deliveries("a"), Some(3));
    // The job was polled once: deliveries again do not poll.
    assert_eq!(mock.count_for("a"), 1);
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_store_that_is_down_only_delays_the_run() {
    let mock = MockTransport::new();
    for i in 0..5 {
        mock.timeline(&format!("j{i}"), &["pending", "success"]);
    }
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(&mock), store.clone()).build();
    for i in 0..5 {
        tracker.track(q(&format!("j{i}")), json!(i)).await.unwrap();
    }
    store.set_down(true);
    assert!(tracker.pending().await.unwrap_err().is_store());
    let (mut rx, run) = spawn_run(&tracker, 0);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(rx.try_recv().is_err());
    assert_eq!(mock.request_count(), 0);
    store.set_down(false);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(rx.recv().await.unwrap().id);
    }
    ids.sort();
    assert_eq!(ids, ["j0", "j1", "j2", "j3", "j4"]);
    settle().await;
    assert_eq!(tracker.pending().await.unwrap(), 0);
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_store_that_fails_between_outcome_and_handler_loses_nothing() {
    // The outcome is in hand but the store is down: the handler waits for
    // it to be stored.
    let mock = MockTransport::new();
    mock.timeline("a", &["pending", "success"]);
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(&mock), store.clone()).build();
    tracker.track(q("a"), json!(null)).await.unwrap();
    let (mut rx, run) = spawn_run(&tracker, 0);
    // First poll at once, then after 1 s: go down in between.
    tokio::time::sleep(Duration::from_millis(500)).await;
    store.set_down(true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(mock.count_for("a"), 2);
    assert!(
        rx.try_recv().is_err(),
        "handler ran before the outcome was stored"
    );
    store.set_down(false);
    let s = rx.recv().await.unwrap();
    assert_eq!((s.status, s.deliveries), (Ok(JobStatus::Succeeded), 1));
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn handlers_of_different_jobs_run_concurrently_up_to_the_cap() {
    let mock = MockTransport::new();
    for i in 0..12 {
        mock.timeline(&format!("j{i}"), &["success"]);
    }
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(&mock), store.clone())
        .max_handlers(4)
        .build();
    for i in 0..12 {
        tracker.track(q(&format!("j{i}")), json!(i)).await.unwrap();
    }
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (r, p, d) = (running.clone(), peak.clone(), done.clone());
    let t = tracker.clone();
    let run = tokio::spawn(async move {
        t.run(move |_| {
            let (r, p, d) = (r.clone(), p.clone(), d.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
    });
    let t0 = Instant::now();
    while done.load(Ordering::SeqCst) < 12 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    // 12 handlers of 1 s, 4 at a time: 3 s.
    let took = Instant::now() - t0;
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
        "{took:?}"
    );
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn two_workers_on_one_store_deliver_each_job_once() {
    let mock = MockTransport::new();
    let n = 60;
    for i in 0..n {
        mock.timeline(&format!("j{i}"), &["pending", "processing", "success"]);
    }
    let store = MemoryStore::new();
    let a = Tracker::builder(client(&mock), store.clone())
        .worker_id("a")
        .claim_interval(Duration::from_millis(50))
        .build();
    let b = Tracker::builder(client(&mock), store.clone())
        .worker_id("b")
        .claim_interval(Duration::from_millis(50))
        .build();
    for i in 0..n {
        a.track(q(&format!("j{i}")), json!(i)).await.unwrap();
    }
    let (mut rx_a, run_a) = spawn_run(&a, 0);
    let (mut rx_b, run_b) = spawn_run(&b, 0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut ids = Vec::new();
    while let Ok(s) = rx_a.try_recv() {
        ids.push(s.id);
    }
    while let Ok(s) = rx_b.try_recv() {
        ids.push(s.id);
    }
    ids.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
    // Each job polled by one worker: three polls each.
    assert_eq!(mock.request_count(), 3 * n as u64);
    run_a.abort();
    run_b.abort();
}

#[tokio::test(start_paused = true)]
async fn a_dead_workers_jobs_are_taken_over_when_its_lease_lapses() {
    let mock = MockTransport::new();
    mock.timeline("a", &["pending", "pending", "pending", "success"]);
    let store = MemoryStore::new();
    let dead = Tracker::builder(client(&mock), store.clone())
        .worker_id("dead")
        .lease(Duration::from_secs(6))
        .build();
    dead.track(q("a"), json!(null)).await.unwrap();
    let (_rx, run) = spawn_run(&dead, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.abort(); // dies holding the lease
    let polls_before = mock.count_for("a");
    assert_eq!(polls_before, 2);
    let t_dead = Instant::now();
    let heir = Tracker::builder(client(&mock), store.clone())
        .worker_id("heir")
        .claim_interval(Duration::from_millis(100))
        .build();
    let (mut rx, run) = spawn_run(&heir, 0);
    let s = rx.recv().await.unwrap();
    assert_eq!(s.status, Ok(JobStatus::Succeeded));
    // Not before the lease (taken at t=0 for 6 s) lapsed.
    assert!(
        s.at - t_dead >= Duration::from_millis(4500),
        "{:?}",
        s.at - t_dead
    );
    run.abort();
}

/// Stored outcomes that waited a whole heartbeat for one of their
/// worker's handlers go back to the store at the next heartbeat: a worker
/// with free handlers delivers them, instead of them queueing behind the
/// first worker's handlers.
/// Twelve jobs claimed by `a` before `b` starts, each handler taking 1 s,
/// two handlers a worker: when each delivery started (tenths of a second
/// from the start) and by whom, sorted, and the jobs delivered and dead.
async fn hand_over(max_deliveries: u32) -> (Vec<(u128, &'static str)>, Vec<String>, u64) {
    let mock = MockTransport::new();
    for i in 0..12 {
        mock.timeline(&format!("j{i}"), &["success"]);
    }
    let store = MemoryStore::new();
    let worker = |name: &str| {
        Tracker::builder(client(&mock), store.clone())
            .worker_id(name)
            .lease(Duration::from_secs(3))
            .claim_interval(Duration::from_millis(100))
            .max_handlers(2)
            .max_deliveries(max_deliveries)
            .build()
    };
    let (a, b) = (worker("a"), worker("b"));
    for i in 0..12 {
        a.track(q(&format!("j{i}")), json!(i)).await.unwrap();
    }
    let t0 = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let run = |t: &Tracker, name: &'static str| {
        let (t, tx) = (t.clone(), tx.clone());
        tokio::spawn(async move {
            t.run(move |c| {
                let tx = tx.clone();
                async move {
                    let at = Instant::now() - t0;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = tx.send((at.as_millis() / 100, name, c.query().img_uuid().to_owned()));
                    Ok(())
                }
            })
            .await
        })
    };
    let run_a = run(&a, "a");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let run_b = run(&b, "b");
    let mut seen = Vec::new();
    // Twelve deliveries by a minute on the paused clock, or the test fails
    // (a job made dead is never delivered).
    while let Ok(Some(started)) =
        tokio::time::timeout_at(t0 + Duration::from_secs(60), rx.recv()).await
    {
        seen.push(started);
        if seen.len() == 12 {
            break;
        }
    }
    seen.sort();
    let got = seen.iter().map(|(at, w, _)| (*at, *w)).collect();
    let mut ids: Vec<String> = seen.into_iter().map(|(_, _, id)| id).collect();
    ids.sort();
    let dead = a.dead(10, None).await.unwrap().items().len() as u64;
    run_a.abort();
    run_b.abort();
    (got, ids, dead)
}

const TWELVE: [&str; 12] = [
    "j0", "j1", "j10", "j11", "j2", "j3", "j4", "j5", "j6", "j7", "j8", "j9",
];

#[tokio::test(start_paused = true)]
async fn outcomes_that_wait_a_heartbeat_for_a_handler_go_to_a_worker_with_free_handlers() {
    let (got, ids, dead) = hand_over(25).await;
    // `a`'s heartbeats come every second; the eight outcomes still queued
    // at the one at 1 s are still six at 2 s, and go back then: `b` takes
    // two at once, and as handlers end at 3 s `a` and `b` take two each.
    // All twelve have started by 3 s, not 5 s as through `a`'s two
    // handlers alone.
    assert_eq!(
        got,
        [
            (0, "a"),
            (0, "a"),
            (10, "a"),
            (10, "a"),
            (20, "a"),
            (20, "a"),
            (20, "b"),
            (20, "b"),
            (30, "a"),
            (30, "a"),
            (30, "b"),
            (30, "b")
        ]
    );
    assert_eq!((ids, dead), (TWELVE.map(String::from).to_vec(), 0));
}

#[tokio::test(start_paused = true)]
async fn an_outcome_on_its_last_allowed_delivery_is_not_handed_over() {
    // Claimed again, a handed-over job would count a second delivery, past
    // a limit of one: it would be dead with its handler never started. So
    // `a` keeps its queue and delivers all twelve itself, two a second.
    let (got, ids, dead) = hand_over(1).await;
    let alone: Vec<(u128, &str)> = (0..12).map(|i| ((i / 2) * 10, "a")).collect();
    assert_eq!(got, alone);
    assert_eq!((ids, dead), (TWELVE.map(String::from).to_vec(), 0));
}

#[tokio::test(start_paused = true)]
async fn what_the_schedule_learned_is_saved_in_the_store() {
    let mock = MockTransport::new();
    for i in 0..3 {
        mock.timeline(&format!("j{i}"), &["pending", "success"]);
    }
    let store = MemoryStore::new();
    let client = Client::builder()
        .api_key("k")
        .transport(mock.clone())
        .build()
        .unwrap();
    let tracker = Tracker::builder(client, store.clone())
        .lease(Duration::from_secs(3))
        .build();
    for i in 0..3 {
        tracker.track(q(&format!("j{i}")), json!(i)).await.unwrap();
    }
    let (mut rx, run) = spawn_run(&tracker, 0);
    for _ in 0..3 {
        rx.recv().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let learned = store.load_learned().await.unwrap();
    assert_eq!(learned.len(), 1);
    assert_eq!(learned[0].job_type(), "mx-v2v");
    assert_eq!(serde_json::to_value(&learned[0]).unwrap()["samples"], 3);
    run.abort();
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use goenhance_jobs::track::SqliteStore;

    /// Waits until the store has `n` jobs pending: SQLite answers from its
    /// own thread, which a paused clock does not wait for.
    async fn until_pending(store: &SqliteStore, n: u64) {
        while store.pending().await.unwrap() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn temp_db(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "goenhance-track-{}-{name}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("jobs.db")
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_survive_closing_the_file_and_are_delivered_once() {
        let path = temp_db("survive");
        let mock = MockTransport::new();
        for i in 0..20 {
            mock.timeline(&format!("j{i}"), &["pending", "success"]);
        }
        {
            let store = SqliteStore::open(&path).await.unwrap();
            let tracker = Tracker::builder(client(&mock), store).build();
            let tracks = (0..20).map(|i| {
                let t = tracker.clone();
                async move { t.track(q(&format!("j{i}")), json!({ "i": i })).await }
            });
            for r in futures_util::future::join_all(tracks).await {
                r.unwrap();
            }
        }
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.pending().await.unwrap(), 20);
        let tracker = Tracker::builder(client(&mock), store.clone()).build();
        let (mut rx, run) = spawn_run(&tracker, 0);
        let mut seen: Vec<(String, serde_json::Value)> = Vec::new();
        for _ in 0..20 {
            let s = rx.recv().await.unwrap();
            assert_eq!((s.status, s.deliveries), (Ok(JobStatus::Succeeded), 1));
            seen.push((s.id, s.meta));
        }
        seen.sort_by_key(|(id, _)| id[1..].parse::<u32>().unwrap());
        let want: Vec<_> = (0..20)
            .map(|i| (format!("j{i}"), json!({ "i": i })))
            .collect();
        assert_eq!(seen, want);
        until_pending(&store, 0).await;
        run.abort();
        drop(tracker);
        drop(store);
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.pending().await.unwrap(), 0);
        // Tracked again: still one job, already delivered.
        let tracker = Tracker::builder(client(&mock), store.clone()).build();
        tracker.track(q("j3"), json!("again")).await.unwrap();
        assert_eq!(tracker.pending().await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_stored_but_not_acknowledged_is_delivered_again_as_stored() {
        let path = temp_db("redeliver");
        let mock = MockTransport::new();
        mock.script("a", [MockResponse::status(401)]);
        let store = SqliteStore::open(&path).await.unwrap();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .worker_id("w")
            .build();
        tracker.track(q("a"), json!(1)).await.unwrap();
        // A handler that never returns: the process "dies" during it.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t = tracker.clone();
        let run = tokio::spawn(async move {
            t.run(move |c| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((c.deliveries(), c.detail().unwrap_err().to_string()));
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
            .await
        });
        assert_eq!(
            rx.recv().await.unwrap(),
            (
                1,
                "http status 401 unauthorized: the api key was refused".to_owned()
            )
        );
        run.abort();
        drop(tracker);
        drop(store);
        let store = SqliteStore::open(&path).await.unwrap();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .worker_id("w")
            .build();
        let (mut rx, run) = spawn_run(&tracker, 0);
        let s = rx.recv().await.unwrap();
        assert_eq!(s.deliveries, 2);
        assert_eq!(
            s.status,
            Err("http status 401 unauthorized: the api key was refused".to_owned())
        );
        // Not polled again: the outcome came from the file.
        assert_eq!(mock.count_for("a"), 1);
        until_pending(&store, 0).await;
        run.abort();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A file as the version with per-job leases left it (schema 2): a
    /// job leased to a worker that is gone, one delivered, one waiting.
    fn old_file(path: &std::path::Path) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(concat!(
            include_str!("../src/track/migrations/sqlite/V1__jobs.sql"),
            include_str!("../src/track/migrations/sqlite/V2__status.sql"),
            "INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at, state, \
               lease_owner, lease_until) VALUES \
               ('leased', '{}', 1000, 9999999999999, 5000, 0, 'gone', 5000), \
               ('waiting', '{}', 2000, 9999999999999, 2000, 0, NULL, 0); \
             INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at, state, outcome, \
               deliveries, delivered_at) VALUES \
               ('done', '{}', 500, 9999999999999, 500, 2, '{\"x\":1}', 1, 3000); \
             PRAGMA user_version = 2;"
        ))
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_file_of_the_earlier_schema_is_moved_forward() {
        use goenhance_jobs::track::{Claim, Listing};
        let path = temp_db("forward");
        old_file(&path);
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.pending().await.unwrap(), 2);
        let now = std::time::SystemTime::now();
        let w = store
            .register("w", Duration::from_secs(60), now)
            .await
            .unwrap();
        let claimed = store.claim(&w, Claim::new(10, 10, 1), now).await.unwrap();
        let mut ids: Vec<_> = claimed.jobs.iter().map(|j| j.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["leased", "waiting"], "leases of the old kind end");
        let done = store.list(Listing::Delivered, None, 10).await.unwrap();
        assert_eq!(
            (
                done[0].id.as_str(),
                done[0].outcome.as_deref(),
                done[0].ended_at
            ),
            (
                "done",
                Some("{\"x\":1}"),
                std::time::UNIX_EPOCH + Duration::from_millis(3000)
            )
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_opens_of_a_new_or_old_file_at_once_all_succeed() {
        for round in 0..30 {
            let n = 2 + round % 3;
            for old in [false, true] {
                let path = temp_db("opens");
                if old {
                    old_file(&path);
                }
                let opens = (0..n).map(|_| {
                    let p = path.clone();
                    tokio::spawn(async move { SqliteStore::open(p).await })
                });
                for r in futures_util::future::join_all(opens).await {
                    if let Err(e) = r.unwrap() {
                        panic!("round {round}, {n} opens, old file {old}: {e:#}");
                    }
                }
                let conn = rusqlite::Connection::open(&path).unwrap();
                let v: i64 = conn
                    .query_row("PRAGMA user_version", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(v, 3, "each migration applied once");
                let jobs: i64 = conn
                    .query_row("SELECT count(*) FROM goenhance_jobs", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(jobs, if old { 3 } else { 0 });
                let _ = std::fs::remove_dir_all(path.parent().unwrap());
            }
        }
    }

    #[tokio::test]
    async fn a_missing_folder_is_created() {
        let path = temp_db("folder");
        let deep = path.parent().unwrap().join("a").join("b").join("jobs.db");
        let store = SqliteStore::open(&deep).await.unwrap();
        assert_eq!(store.pending().await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn rows_that_cannot_be_read_are_dead_with_the_reason() {
        let path = temp_db("corrupt");
        let mock = MockTransport::new();
        mock.timeline("good", &["success"]);
        let store = SqliteStore::open(&path).await.unwrap();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .claim_interval(Duration::from_millis(100))
            .build();
        tracker.track(q("good"), json!(null)).await.unwrap();
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at, state) \
                   VALUES ('bad id', '{}', 0, 9999999999999, 0, 0); \
                 INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at, state, \
                   outcome, deliveries) VALUES ('torn', '{}', 0, 9999999999999, 0, 1, '{\"det', 1);",
            )
            .unwrap();
        }
        let (mut rx, run) = spawn_run(&tracker, 0);
        let s = rx.recv().await.unwrap();
        assert_eq!(
            (s.id.as_str(), s.status),
            ("good", Ok(JobStatus::Succeeded))
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(rx.try_recv().is_err(), "nothing else delivered");
        let dead = tracker.dead(10, None).await.unwrap();
        let dead: Vec<(String, String)> = dead
            .items()
            .iter()
            .map(|d| (d.id().to_owned(), d.error().to_owned()))
            .collect();
        assert_eq!(
            dead,
            [
                (
                    "bad id".to_owned(),
                    "the stored id cannot be read: invalid input: \
                     job id has a character outside [A-Za-z0-9._~-] at byte 3"
                        .to_owned()
                ),
                (
                    "torn".to_owned(),
                    "the stored outcome is not valid json: \
                     EOF while parsing a string at line 1 column 5"
                        .to_owned()
                ),
            ]
        );
        assert_eq!(tracker.pending().await.unwrap(), 0);
        run.abort();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn one_job_is_looked_up_while_waiting_and_after_a_restart() {
        use goenhance_jobs::track::JobState;
        let path = temp_db("lookup");
        let mock = MockTransport::new();
        mock.timeline("a", &["pending", "processing", "processing", "success"]);
        let store = SqliteStore::open(&path).await.unwrap();
        let tracker = Tracker::builder(client(&mock), store)
            .lease(Duration::from_secs(3))
            .build();
        tracker.track(q("a"), json!({"user": 7})).await.unwrap();
        assert!(tracker.job(&q("nope")).await.unwrap().is_none());
        let (mut rx, run) = spawn_run(&tracker, 0);
        // Polled at 0, 1 s and 2 s; the status is saved with the heartbeat
        // at 2 s.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let a = tracker.job(&q("a")).await.unwrap().unwrap();
        assert_eq!(
            (
                a.state(),
                a.last_status().map(|(s, _)| s.clone()),
                a.polls(),
                a.meta().clone(),
                a.detail().is_none()
            ),
            (
                JobState::Waiting,
                Some(JobStatus::Processing),
                2,
                json!({"user": 7}),
                true
            )
        );
        rx.recv().await.unwrap();
        settle().await;
        run.abort();
        drop(tracker);
        let store = SqliteStore::open(&path).await.unwrap();
        let tracker = Tracker::builder(client(&mock), store).build();
        let a = tracker.job(&q("a")).await.unwrap().unwrap();
        assert_eq!(
            (
                a.state(),
                a.deliveries(),
                a.detail().map(|d| d.map(|d| d.status().clone()).ok()),
                a.ended_at().is_some()
            ),
            (
                JobState::Delivered,
                1,
                Some(Some(JobStatus::Succeeded)),
                true
            )
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test]
    async fn a_schema_newer_than_the_crate_is_refused() {
        let path = temp_db("newer");
        drop(SqliteStore::open(&path).await.unwrap());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = SqliteStore::open(&path).await.unwrap_err();
        assert!(err.is_store());
        assert_eq!(
            err.to_string(),
            "store error: the sqlite store has a schema newer than this version of goenhance-jobs"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}

mod partial_failures {
    //! Whatever a store operation answers, every job is delivered and no
    //! two handlers run for one job at once.
    use super::*;
    use goenhance_jobs::track::testing::{Fault, FaultyStore, Operation};

    /// Handlers' own log: who ran what, and whether two ever overlapped.
    #[derive(Clone, Default)]
    struct Log {
        running: Arc<Mutex<HashMap<String, u32>>>,
        overlaps: Arc<AtomicUsize>,
        done: Arc<Mutex<Vec<(String, String, u32)>>>,
    }

    struct Running(Log, String);

    impl Drop for Running {
        fn drop(&mut self) {
            let mut r = self.0.running.lock().unwrap();
            *r.get_mut(&self.1).unwrap() -= 1;
        }
    }

    impl Log {
        fn start(&self, id: &str) -> Running {
            let mut r = self.running.lock().unwrap();
            let n = r.entry(id.to_owned()).or_insert(0);
            *n += 1;
            if *n > 1 {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            Running(self.clone(), id.to_owned())
        }

        fn finished(&self) -> Vec<(String, String, u32)> {
            self.done.lock().unwrap().clone()
        }
    }

    fn run_logged(
        tracker: &Tracker,
        log: &Log,
        work: Duration,
    ) -> tokio::task::JoinHandle<Result<(), goenhance_jobs::Error>> {
        run_logged_failing(tracker, log, work, 0)
    }

    /// As `run_logged`, each job's first `fail_first` deliveries failing.
    fn run_logged_failing(
        tracker: &Tracker,
        log: &Log,
        work: Duration,
        fail_first: u32,
    ) -> tokio::task::JoinHandle<Result<(), goenhance_jobs::Error>> {
        let (t, log) = (tracker.clone(), log.clone());
        let worker = tracker.worker_id().to_owned();
        tokio::spawn(async move {
            t.run(move |c| {
                let (log, worker) = (log.clone(), worker.clone());
                async move {
                    let id = c.query().img_uuid().to_owned();
                    let _running = log.start(&id);
                    tokio::time::sleep(work).await;
                    if c.deliveries() <= fail_first {
                        return Err::<(), BoxError>("not yet".into());
                    }
                    log.done.lock().unwrap().push((id, worker, c.deliveries()));
                    Ok(())
                }
            })
            .await
        })
    }

    async fn until_all_delivered(store: &MemoryStore, ids: &[String], within: Duration) {
        let end = Instant::now() + within;
        while !ids.iter().all(|id| store.is_delivered(id)) {
            assert!(
                Instant::now() < end,
                "not every job delivered within {within:?}: {:?}",
                ids.iter()
                    .filter(|id| !store.is_delivered(id))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_fault_of_every_write_delays_but_loses_no_job() {
        let faults = [
            Fault::Error,
            Fault::CommitThenError,
            Fault::Hang(Duration::from_secs(10)),
        ];
        for op in Operation::WRITES {
            for fault in faults {
                let mock = MockTransport::new();
                let ids: Vec<String> = (0..5).map(|i| format!("j{i}")).collect();
                for id in &ids {
                    mock.timeline(id, &["pending", "processing", "success"]);
                }
                let memory = MemoryStore::new();
                let store = FaultyStore::new(memory.clone());
                let tracker = Tracker::builder(client(&mock), store.clone())
                    .worker_id("w")
                    .lease(Duration::from_secs(3))
                    .store_timeout(Duration::from_secs(2))
                    .build();
                // Three in a row, so that retries meet it too.
                store.inject(op, fault, 3);
                for id in &ids {
                    while tracker.track(q(id), json!(id)).await.is_err() {}
                }
                let log = Log::default();
                // Each first delivery fails, so that retries are written.
                let run = run_logged_failing(&tracker, &log, Duration::from_millis(500), 1);
                until_all_delivered(&memory, &ids, Duration::from_secs(120)).await;
                assert_eq!(
                    log.overlaps.load(Ordering::SeqCst),
                    0,
                    "{op:?} {fault:?}: two handlers at once"
                );
                let mut got: Vec<String> = log.finished().into_iter().map(|d| d.0).collect();
                got.sort();
                got.dedup();
                assert_eq!(got, ids, "{op:?} {fault:?}");
                // (Releases are written only when the scheduler stops.)
                if op != Operation::Release {
                    assert!(store.injected() >= 1, "{op:?} {fault:?}: no fault met");
                }
                run.abort();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_completion_whose_answer_is_lost_is_delivered_by_the_same_worker() {
        // A store that commits `complete` and then answers an error, five
        // times: the run asks again and gets the same answer.
        let mock = MockTransport::new();
        let ids: Vec<String> = (0..5).map(|i| format!("j{i}")).collect();
        for id in &ids {
            mock.timeline(id, &["pending", "success"]);
        }
        let memory = MemoryStore::new();
        let store = FaultyStore::new(memory.clone());
        store.inject(Operation::Complete, Fault::CommitThenError, 5);
        let tracker = Tracker::builder(client(&mock), store.clone())
            .lease(Duration::from_secs(3))
            .build();
        for id in &ids {
            tracker.track(q(id), json!(null)).await.unwrap();
        }
        let log = Log::default();
        let run = run_logged(&tracker, &log, Duration::ZERO);
        until_all_delivered(&memory, &ids, Duration::from_secs(10)).await;
        let firsts: Vec<u32> = log.finished().iter().map(|d| d.2).collect();
        assert_eq!(firsts, [1, 1, 1, 1, 1], "each delivered once, counted once");
        run.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_cannot_heartbeat_stops_before_another_takes_over() {
        // A's heartbeats fail from the start; once its handler runs it
        // cannot register or claim either. It must cancel its handler and
        // stop polling before its heartbeat lapses in the store, so that
        // B's handler never runs beside A's.
        let (mock_a, mock_b) = (MockTransport::new(), MockTransport::new());
        mock_a.timeline("quick", &["success"]);
        mock_b.timeline("quick", &["success"]);
        mock_a.timeline("slow", &["pending"; 200]);
        mock_b.timeline("slow", &["pending"; 200]);
        let memory = MemoryStore::new();
        let store_a = FaultyStore::new(memory.clone());
        let a = Tracker::builder(client(&mock_a), store_a.clone())
            .worker_id("a")
            .lease(Duration::from_secs(3))
            .build();
        a.track(q("quick"), json!(null)).await.unwrap();
        a.track(q("slow"), json!(null)).await.unwrap();
        store_a.inject(Operation::Heartbeat, Fault::Error, 1000);
        let log = Log::default();
        let run_a = run_logged(&a, &log, Duration::from_secs(8));
        while log.running.lock().unwrap().get("quick").copied() != Some(1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        store_a.inject(Operation::Register, Fault::Error, 1000);
        store_a.inject(Operation::Claim, Fault::Error, 1000);
        let b = Tracker::builder(client(&mock_b), memory.clone())
            .worker_id("b")
            .lease(Duration::from_secs(3))
            .claim_interval(Duration::from_millis(100))
            .build();
        let run_b = run_logged(&b, &log, Duration::from_secs(8));
        // A's last heartbeat was its registration, at the start: by 2.5 s
        // it has stopped.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let polls_a = mock_a.count_for("slow");
        until_all_delivered(&memory, &["quick".to_owned()], Duration::from_secs(30)).await;
        assert_eq!(
            log.overlaps.load(Ordering::SeqCst),
            0,
            "two handlers at once"
        );
        assert_eq!(
            log.finished(),
            [("quick".to_owned(), "b".to_owned(), 2)],
            "A's handler was cancelled; B's is the second delivery"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(
            mock_a.count_for("slow"),
            polls_a,
            "A polled after it stopped"
        );
        assert!(mock_b.count_for("slow") >= 20, "B follows the slow job");
        assert!(Instant::now() - started < Duration::from_secs(60));
        run_a.abort();
        run_b.abort();
    }
}

mod lifecycle {
    //! Handler timeouts, dead jobs, retention and listings, on the paused
    //! clock.
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_run_that_was_full_claims_again_once_half_its_room_is_free() {
        // 12 jobs already ended, room for 4, a claim interval of 10 min:
        // each batch of 4 is delivered at once, and the next one is
        // claimed as soon as room frees, not 10 min later.
        let mock = MockTransport::new();
        let ids: Vec<String> = (0..12).map(|n| format!("j{n:02}")).collect();
        for id in &ids {
            mock.timeline(id, &["success"]);
        }
        let store = MemoryStore::new();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .max_jobs(4)
            .claim_interval(Duration::from_secs(600))
            .build();
        for id in &ids {
            tracker.track(q(id), json!(null)).await.unwrap();
        }
        let t0 = Instant::now();
        let (mut rx, run) = spawn_run(&tracker, 0);
        let mut got = Vec::new();
        for _ in 0..12 {
            let s = rx.recv().await.unwrap();
            assert!(
                s.at - t0 < Duration::from_secs(10),
                "{} delivered after {:?}",
                s.id,
                s.at - t0
            );
            got.push(s.id);
        }
        got.sort();
        assert_eq!(got, ids);
        assert_eq!(mock.request_count(), 12);
        settle().await;
        assert_eq!(tracker.pending().await.unwrap(), 0);
        run.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_never_returns_times_out_and_counts_as_failed() {
        let mock = MockTransport::new();
        mock.timeline("a", &["success"]);
        let store = MemoryStore::new();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .handler_timeout(Duration::from_secs(10))
            .handler_retry(Duration::from_secs(1), Duration::from_secs(1))
            .claim_interval(Duration::from_millis(100))
            .build();
        tracker.track(q("a"), json!(null)).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t = tracker.clone();
        let run = tokio::spawn(async move {
            t.run(move |c| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((c.deliveries(), Instant::now()));
                    if c.deliveries() == 1 {
                        std::future::pending::<()>().await;
                    }
                    Ok(())
                }
            })
            .await
        });
        let (d1, t1) = rx.recv().await.unwrap();
        let (d2, t2) = rx.recv().await.unwrap();
        assert_eq!((d1, d2), (1, 2));
        // 10 s of timeout, then due 1 s later, claimed within 100 ms.
        let gap = t2 - t1;
        assert!(
            gap >= Duration::from_secs(11) && gap <= Duration::from_millis(11_100),
            "{gap:?}"
        );
        settle().await;
        assert!(store.is_delivered("a"));
        run.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn after_max_deliveries_a_job_is_dead_until_retried() {
        let mock = MockTransport::new();
        mock.timeline("a", &["success"]);
        mock.timeline("b", &["success"]);
        let store = MemoryStore::new();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .max_deliveries(3)
            .handler_retry(Duration::from_secs(1), Duration::from_secs(4))
            .claim_interval(Duration::from_millis(100))
            .build();
        tracker.track(q("a"), json!(null)).await.unwrap();
        tracker.track(q("b"), json!(null)).await.unwrap();
        let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (t, r) = (tracker.clone(), refuse.clone());
        let run = tokio::spawn(async move {
            t.run(move |c| {
                let (tx, r) = (tx.clone(), r.clone());
                async move {
                    let id = c.query().img_uuid().to_owned();
                    let _ = tx.send((id.clone(), c.deliveries()));
                    if id == "a" && r.load(Ordering::SeqCst) {
                        return Err::<(), BoxError>(format!("nope #{}", c.deliveries()).into());
                    }
                    Ok(())
                }
            })
            .await
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        let mut seen = Vec::new();
        while let Ok(s) = rx.try_recv() {
            seen.push(s);
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                ("a".to_owned(), 1),
                ("a".to_owned(), 2),
                ("a".to_owned(), 3),
                ("b".to_owned(), 1)
            ],
            "three deliveries of the failing job, then none"
        );
        assert_eq!(
            tracker.pending().await.unwrap(),
            0,
            "a dead job is not pending"
        );
        let dead = tracker.dead(10, None).await.unwrap();
        let dead: Vec<_> = dead
            .items()
            .iter()
            .map(|d| (d.id().to_owned(), d.error().to_owned(), d.deliveries()))
            .collect();
        assert_eq!(dead, [("a".to_owned(), "nope #3".to_owned(), 3)]);
        refuse.store(false, Ordering::SeqCst);
        assert_eq!(tracker.retry_dead(["a", "b"]).await.unwrap(), 1);
        assert_eq!(rx.recv().await.unwrap(), ("a".to_owned(), 1));
        settle().await;
        assert!(store.is_delivered("a"));
        assert!(tracker.dead(10, None).await.unwrap().items().is_empty());
        assert_eq!(
            mock.count_for("a"),
            1,
            "delivered again from the stored outcome"
        );
        run.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn delivered_jobs_are_listed_in_pages_then_pruned_after_the_retention() {
        let mock = MockTransport::new();
        let ids: Vec<String> = (0..5).map(|i| format!("j{i}")).collect();
        for id in &ids {
            mock.timeline(id, &["success"]);
        }
        let store = MemoryStore::new();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .retention(Some(Duration::from_secs(3600)))
            .build();
        for id in &ids {
            tracker.track(q(id), json!(null)).await.unwrap();
        }
        let (_rx, run) = spawn_run(&tracker, 0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = tracker.delivered(2, cursor).await.unwrap();
            pages.push(
                page.items()
                    .iter()
                    .map(|d| d.query().img_uuid().to_owned())
                    .collect::<Vec<_>>(),
            );
            match page.next() {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(
            pages,
            [vec!["j0", "j1"], vec!["j2", "j3"], vec!["j4"]],
            "pages of two in the order tracked"
        );
        // Pruned every quarter of the retention: still there at 59 min,
        // gone by 1 h 15 min.
        tokio::time::sleep(Duration::from_secs(59 * 60)).await;
        assert_eq!(tracker.delivered(10, None).await.unwrap().items().len(), 5);
        tokio::time::sleep(Duration::from_secs(16 * 60)).await;
        assert!(tracker
            .delivered(10, None)
            .await
            .unwrap()
            .items()
            .is_empty());
        run.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn claims_take_no_more_finished_jobs_than_free_handler_slots() {
        // Three outcomes stored by a worker that died before delivering.
        let mock = MockTransport::new();
        for id in ["a", "b", "c"] {
            mock.timeline(id, &["success"]);
        }
        let store = MemoryStore::new();
        let first = Tracker::builder(client(&mock), store.clone())
            .worker_id("first")
            .lease(Duration::from_secs(3))
            .build();
        for id in ["a", "b", "c"] {
            first.track(q(id), json!(null)).await.unwrap();
        }
        let f = first.clone();
        let run = tokio::spawn(async move {
            f.run(|_| std::future::pending::<Result<(), BoxError>>())
                .await
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        run.abort();
        tokio::time::sleep(Duration::from_secs(5)).await;
        // One slot, taken by a handler that never returns: it claims one.
        let busy = Tracker::builder(client(&mock), store.clone())
            .worker_id("busy")
            .max_handlers(1)
            .build();
        let b = busy.clone();
        let run_busy = tokio::spawn(async move {
            b.run(|_| std::future::pending::<Result<(), BoxError>>())
                .await
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let other = Tracker::builder(client(&mock), store.clone())
            .worker_id("other")
            .build();
        let (mut rx, run_other) = spawn_run(&other, 0);
        let mut got = tokio::time::timeout(Duration::from_secs(10), async {
            [rx.recv().await.unwrap().id, rx.recv().await.unwrap().id]
        })
        .await
        .expect("the other worker delivers the two left within 10 s");
        got.sort();
        assert!(got[0] != got[1], "{got:?}");
        assert_eq!(mock.request_count(), 3, "outcomes were not polled again");
        run_busy.abort();
        run_other.abort();
    }
}

mod conformance {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_keeps_the_contract() {
        goenhance_jobs::track::testing::conformance(|| async { MemoryStore::new() }).await;
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sqlite_store_keeps_the_contract() {
        let dir = std::env::temp_dir().join(format!("goenhance-conf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let n = AtomicUsize::new(0);
        let d = dir.clone();
        goenhance_jobs::track::testing::conformance(|| {
            let path = d.join(format!("{}.db", n.fetch_add(1, Ordering::SeqCst)));
            async move {
                goenhance_jobs::track::SqliteStore::open(path)
                    .await
                    .unwrap()
            }
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

mod heartbeats {
    use super::*;

    /// Store operations in a minute of steady waiting with `n` jobs held.
    async fn statements_per_minute_holding(n: usize) -> u64 {
        let mock = MockTransport::new();
        let store = MemoryStore::new();
        let client = mock_client(&mock)
            .poll_policy(PollPolicy::fixed(Duration::from_secs(1)))
            .wait_timeout(Duration::from_secs(3600))
            .build()
            .unwrap();
        let tracker = Tracker::builder(client, store.clone())
            .lease(Duration::from_secs(30))
            .build();
        for i in 0..n {
            let id = format!("j{i}");
            mock.timeline(&id, &["pending"; 100]);
            tracker.track(q(&id), json!(null)).await.unwrap();
        }
        let (_rx, run) = spawn_run(&tracker, 0);
        // Claimed and polled; every status saved once.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let before = store.statements();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let during = store.statements() - before;
        run.abort();
        during
    }

    #[tokio::test(start_paused = true)]
    async fn store_writes_do_not_grow_with_the_jobs_held() {
        // A heartbeat every 10 s and a claim every second, whether the
        // worker holds 10 jobs or 2,000.
        let few = statements_per_minute_holding(10).await;
        let many = statements_per_minute_holding(2_000).await;
        assert_eq!(few, many);
        assert_eq!(few, 6 + 60, "six heartbeats and sixty claims a minute");
    }
}

mod graceful_stop {
    use super::*;

    /// A run that stops when told, with handlers taking `work`; reports
    /// each handler's start and end.
    type Stoppable = (
        mpsc::UnboundedReceiver<(String, &'static str)>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), goenhance_jobs::Error>>,
    );

    fn run_stoppable(tracker: &Tracker, work: Duration) -> Stoppable {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let t = tracker.clone();
        let run = tokio::spawn(async move {
            let stop = async move {
                let _ = stop_rx.await;
            };
            t.run_until(
                move |c| {
                    let tx = tx.clone();
                    async move {
                        let id = c.query().img_uuid().to_owned();
                        let _ = tx.send((id.clone(), "start"));
                        tokio::time::sleep(work).await;
                        let _ = tx.send((id, "end"));
                        Ok(())
                    }
                },
                stop,
            )
            .await
        });
        (rx, stop_tx, run)
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_running_at_the_stop_finishes_and_is_acknowledged() {
        let mock = MockTransport::new();
        mock.timeline("a", &["success"]);
        mock.timeline("w", &["pending"; 100]);
        let store = MemoryStore::new();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .shutdown_grace(Duration::from_secs(5))
            .build();
        tracker.track(q("a"), json!(null)).await.unwrap();
        tracker.track(q("w"), json!(null)).await.unwrap();
        let (mut rx, stop, run) = run_stoppable(&tracker, Duration::from_secs(2));
        assert_eq!(rx.recv().await.unwrap(), ("a".to_owned(), "start"));
        let asked = Instant::now();
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(
            Instant::now() - asked,
            Duration::from_secs(2),
            "returns once it finished"
        );
        assert_eq!(rx.recv().await.unwrap(), ("a".to_owned(), "end"));
        assert!(store.is_delivered("a"), "its acknowledgement recorded");
        // The waiting job was released: another worker takes it at once.
        let heir = Tracker::builder(client(&mock), store.clone())
            .worker_id("heir")
            .build();
        let polls = mock.count_for("w");
        let (_rx, run) = spawn_run(&heir, 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(mock.count_for("w"), polls + 1, "polled at once by the heir");
        run.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_slower_than_the_grace_is_cancelled_and_its_job_released() {
        let mock = MockTransport::new();
        mock.timeline("a", &["success"]);
        let store = MemoryStore::new();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .shutdown_grace(Duration::from_secs(1))
            .build();
        tracker.track(q("a"), json!(null)).await.unwrap();
        let (mut rx, stop, run) = run_stoppable(&tracker, Duration::from_secs(60));
        assert_eq!(rx.recv().await.unwrap(), ("a".to_owned(), "start"));
        let asked = Instant::now();
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(
            Instant::now() - asked,
            Duration::from_secs(1),
            "the grace period"
        );
        assert!(rx.recv().await.is_none(), "the handler was cancelled");
        assert!(!store.is_delivered("a"));
        let heir = Tracker::builder(client(&mock), store.clone())
            .worker_id("heir")
            .build();
        let (mut rx, run) = spawn_run(&heir, 0);
        let s = rx.recv().await.unwrap();
        assert_eq!((s.id.as_str(), s.deliveries), ("a", 2));
        assert!(
            s.at - asked < Duration::from_millis(1100),
            "taken over at once"
        );
        run.abort();
    }
}
