//! What `Tracker::track` answers (a new job, or one already tracked,
//! delivered or dead) and a wait timeout of one job's own
//! (`track_with`), on `MemoryStore` with tokio's paused clock and on a
//! SQLite file.

use std::time::Duration;

use goenhance_jobs::track::{
    Completion, JobState, MemoryStore, TrackOptions, TrackStore, Tracked, Tracker,
};
use goenhance_jobs::transport::mock::MockTransport;
use goenhance_jobs::{BoxError, Client, JobQuery, PollPolicy};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn q(id: &str) -> JobQuery {
    JobQuery::new(id).unwrap()
}

fn client(mock: MockTransport) -> Client {
    Client::builder()
        .api_key("k")
        .transport(mock)
        .poll_policy(PollPolicy::fixed(SECOND))
        .wait_timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap()
}

/// Each completion: its id, whether its wait hit the deadline, and when.
type Delivered = mpsc::UnboundedReceiver<(String, bool, Instant)>;
type RunTask = JoinHandle<Result<(), goenhance_jobs::Error>>;

/// A run whose handler reports each completion (and fails for ids
/// starting with `fail`), stopped gracefully by the returned sender.
fn run(tracker: &Tracker) -> (Delivered, oneshot::Sender<()>, RunTask) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let tracker = tracker.clone();
    let task = tokio::spawn(async move {
        let handler = move |done: Completion| {
            let tx = tx.clone();
            async move {
                let id = done.query().img_uuid().to_owned();
                let deadline = done.detail().is_err_and(|e| e.is_deadline());
                let _ = tx.send((id.clone(), deadline, Instant::now()));
                if id.starts_with("fail") {
                    return Err::<(), BoxError>("the handler failed".into());
                }
                Ok(())
            }
        };
        let stop = async move {
            let _ = stop_rx.await;
        };
        tracker.run_until(handler, stop).await
    });
    (rx, stop_tx, task)
}

#[tokio::test(start_paused = true)]
async fn track_tells_new_already_tracked_delivered_and_dead_jobs_apart() {
    let mock = MockTransport::new();
    mock.timeline("job-1", &["pending", "success"]);
    mock.timeline("fail-1", &["success"]);
    let tracker = Tracker::builder(client(mock), MemoryStore::new())
        .max_deliveries(1)
        .build();

    assert_eq!(
        tracker
            .track(q("job-1"), json!({ "first": true }))
            .await
            .unwrap(),
        Tracked::New
    );
    assert_eq!(
        tracker
            .track(q("job-1"), json!({ "second": true }))
            .await
            .unwrap(),
        Tracked::AlreadyTracked
    );
    assert_eq!(
        tracker.track(q("fail-1"), json!(null)).await.unwrap(),
        Tracked::New
    );
    assert!(Tracked::New.is_new());
    assert!(!Tracked::AlreadyTracked.is_new());

    let (mut done, stop, task) = run(&tracker);
    let mut seen = vec![done.recv().await.unwrap().0, done.recv().await.unwrap().0];
    seen.sort();
    assert_eq!(seen, ["fail-1", "job-1"]);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    assert_eq!(
        tracker
            .track(q("job-1"), json!({ "third": true }))
            .await
            .unwrap(),
        Tracked::AlreadyDelivered
    );
    assert_eq!(
        tracker.track(q("fail-1"), json!(null)).await.unwrap(),
        Tracked::AlreadyDead
    );
    // Tracking again changed nothing: the first meta stands.
    let job = tracker.job(&q("job-1")).await.unwrap().unwrap();
    assert_eq!(job.meta(), &json!({ "first": true }));
    assert_eq!(job.state(), JobState::Delivered);
    assert_eq!(job.deliveries(), 1);
    let dead = tracker.job(&q("fail-1")).await.unwrap().unwrap();
    assert_eq!(dead.state(), JobState::Dead);
    assert_eq!(dead.last_error(), Some("the handler failed"));
}

#[tokio::test(start_paused = true)]
async fn a_job_of_its_own_wait_timeout_ends_then_and_the_others_keep_the_clients() {
    let mock = MockTransport::new();
    mock.timeline("short", &["pending"]);
    mock.timeline("long", &["pending"]);
    let store = MemoryStore::new();
    let tracker = Tracker::builder(client(mock), store.clone()).build();
    let start = Instant::now();
    let ten = TrackOptions::new().wait_timeout(10 * SECOND);
    assert_eq!(
        tracker
            .track_with(q("short"), json!(1), ten.clone())
            .await
            .unwrap(),
        Tracked::New
    );
    assert_eq!(
        tracker.track(q("long"), json!(2)).await.unwrap(),
        Tracked::New
    );
    // Tracked again with other settings: the first deadline stands.
    let other = TrackOptions::new().wait_timeout(SECOND);
    assert_eq!(
        tracker
            .track_with(q("short"), json!(1), other)
            .await
            .unwrap(),
        Tracked::AlreadyTracked
    );

    let short = tracker.job(&q("short")).await.unwrap().unwrap();
    assert_eq!(
        short.deadline().duration_since(short.tracked_at()).unwrap(),
        10 * SECOND
    );
    let long = tracker.job(&q("long")).await.unwrap().unwrap();
    assert_eq!(
        long.deadline().duration_since(long.tracked_at()).unwrap(),
        CLIENT_TIMEOUT
    );

    let (mut done, stop, task) = run(&tracker);
    let (id, deadline, at) = done.recv().await.unwrap();
    assert_eq!((id.as_str(), deadline), ("short", true));
    let after = at - start;
    assert!(
        after >= 10 * SECOND && after < 11 * SECOND,
        "delivered {after:?} after the track"
    );
    // The other job is still waited on.
    assert_eq!(
        tracker.job(&q("long")).await.unwrap().unwrap().state(),
        JobState::Waiting
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(store.pending().await.unwrap(), 1);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_track_tells_jobs_apart_and_keeps_a_jobs_own_deadline() {
    use goenhance_jobs::track::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let mock = MockTransport::new();
    mock.timeline("job-1", &["success"]);
    mock.timeline("job-2", &["pending"]);
    let tracker = Tracker::builder(
        client(mock.clone()),
        SqliteStore::open(&path).await.unwrap(),
    )
    .build();
    let two_hours = TrackOptions::new().wait_timeout(2 * 3600 * SECOND);
    assert_eq!(
        tracker
            .track_with(q("job-1"), json!(1), two_hours)
            .await
            .unwrap(),
        Tracked::New
    );
    assert_eq!(
        tracker.track(q("job-1"), json!(1)).await.unwrap(),
        Tracked::AlreadyTracked
    );
    let (mut done, stop, task) = run(&tracker);
    assert_eq!(done.recv().await.unwrap().0, "job-1");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // A second store on the same file sees the same.
    let again = Tracker::builder(client(mock), SqliteStore::open(&path).await.unwrap()).build();
    assert_eq!(
        again.track(q("job-1"), json!(1)).await.unwrap(),
        Tracked::AlreadyDelivered
    );
    assert_eq!(
        again.track(q("job-2"), json!(2)).await.unwrap(),
        Tracked::New
    );
    let job = again.job(&q("job-1")).await.unwrap().unwrap();
    assert_eq!(
        job.deadline().duration_since(job.tracked_at()).unwrap(),
        2 * 3600 * SECOND
    );
    assert_eq!(
        job.detail().unwrap().unwrap().status(),
        &goenhance_jobs::JobStatus::Succeeded
    );
    let job = again.job(&q("job-2")).await.unwrap().unwrap();
    assert_eq!(
        job.deadline().duration_since(job.tracked_at()).unwrap(),
        CLIENT_TIMEOUT
    );
}
