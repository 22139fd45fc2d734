//! The hub's scheduler as a new user meets it: waits from several runtimes,
//! retries that wait in the queue, late joiners, ids in two cases, lying
//! iterators, cancelled waits, deadline rounding (in-memory transport; the
//! paused clock wherever one runtime is enough).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::PerSecond;
use goenhance_jobs::{ClientBuilder, JobQuery, JobStatus, PollPolicy, RetryPolicy};
use support::{mock_client, ms, q, secs};
use tokio::time::Instant;

fn builder(mock: &MockTransport) -> ClientBuilder {
    mock_client(mock).poll_policy(PollPolicy::fixed(secs(5)).jitter(Jitter::None))
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A client waited on once from runtime A, which then sits idle (alive,
/// not driven): a wait from runtime B on another thread is served on B,
/// and goes on when A is dropped.
#[test]
fn a_second_runtime_is_served_while_the_first_sits_idle_and_after_it_is_dropped() {
    let mock = MockTransport::new();
    mock.timeline("a", &["success"]);
    mock.timeline("b", &["success"]);
    mock.timeline("c", &["pending", "pending", "success"]);
    let c = builder(&mock).build().unwrap();
    let a = paused_runtime();
    assert_eq!(
        a.block_on(c.wait("a")).unwrap().status(),
        &JobStatus::Succeeded
    );

    let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let on_b = {
        let c = c.clone();
        std::thread::spawn(move || {
            let b = paused_runtime();
            b.block_on(async {
                // With A idle, a wait sent to A's scheduler would never be
                // answered: the paused clock runs the 5 s timeout out.
                let first = tokio::time::timeout(secs(5), c.wait("b")).await;
                let running = tokio::spawn({
                    let c = c.clone();
                    async move { c.wait("c").await }
                });
                tokio::task::yield_now().await;
                started_tx.send(()).unwrap();
                // Runtime A is dropped while "c" is being waited on here.
                tokio::task::spawn_blocking(move || dropped_rx.recv().unwrap())
                    .await
                    .unwrap();
                (first, running.await.unwrap())
            })
        })
    };
    started_rx.recv().unwrap();
    drop(a);
    dropped_tx.send(()).unwrap();
    let (first, second) = on_b.join().unwrap();
    assert_eq!(
        first.expect("the wait on B timed out").unwrap().status(),
        &JobStatus::Succeeded
    );
    assert_eq!(second.unwrap().status(), &JobStatus::Succeeded);
    assert_eq!(mock.count_for("b"), 1);
    assert_eq!(mock.count_for("c"), 3);
}

/// A wait made on a runtime that is then dropped ends with an error, and
/// only that wait: the other runtime's wait on the same client is answered.
#[test]
fn dropping_a_runtime_fails_only_the_waits_made_on_it() {
    let mock = MockTransport::new();
    mock.timeline("doomed", &["pending"]);
    mock.timeline("kept", &["pending", "success"]);
    let c = builder(&mock).build().unwrap();
    let doomed_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let c = c.clone();
        doomed_rt.spawn(async move {
            let _ = tx.send(c.wait("doomed").await);
        });
    }
    // The doomed wait's first poll proves its scheduler runs.
    while mock.count_for("doomed") == 0 {
        std::thread::yield_now();
    }
    let kept = paused_runtime();
    let kept_wait = kept.spawn({
        let c = c.clone();
        async move { c.wait("kept").await }
    });
    // The kept wait starts (its first poll goes out) before the drop.
    kept.block_on(async {
        while mock.count_for("kept") == 0 {
            tokio::task::yield_now().await;
        }
    });
    doomed_rt.shutdown_background();
    // The doomed wait's task was dropped with its runtime: no answer.
    assert!(rx.blocking_recv().is_err());
    let kept = kept.block_on(kept_wait).unwrap().unwrap();
    assert_eq!(kept.status(), &JobStatus::Succeeded);
}

/// Eight jobs answer 503 with `Retry-After: 60`; with one slot, the healthy
/// job listed after them is polled at once, not after their retry sleeps.
#[tokio::test(start_paused = true)]
async fn retries_wait_in_the_queue_not_in_a_slot() {
    let mock = MockTransport::new();
    for i in 0..8 {
        mock.script(
            &format!("sick-{i}"),
            [MockResponse::status(503).header("retry-after", "60")],
        );
    }
    mock.timeline("healthy", &["success"]);
    let c = builder(&mock)
        .retry_policy(RetryPolicy::default())
        .max_in_flight(1)
        .wait_timeout(secs(1800))
        .build()
        .unwrap();
    let start = Instant::now();
    let queries: Vec<JobQuery> = (0..8)
        .map(|i| q(&format!("sick-{i}")))
        .chain([q("healthy")])
        .collect();
    let mut stream = Box::pin(c.wait_all(queries));
    let (query, result) = stream.next().await.unwrap();
    assert_eq!(query.img_uuid(), "healthy");
    assert_eq!(result.unwrap().status(), &JobStatus::Succeeded);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Each sick job's retries came 60 s apart, one at a time.
    tokio::time::sleep(secs(61)).await;
    assert_eq!(mock.count_for("sick-0"), 2);
    assert_eq!(mock.max_in_flight(), 1);
}

/// A rate limit spaces retries as it spaces polls.
#[tokio::test(start_paused = true)]
async fn retries_pass_the_rate_limit() {
    let mock = MockTransport::new();
    mock.script(
        "j",
        [
            MockResponse::status(500),
            MockResponse::status(500),
            MockResponse::job("j", "success"),
        ],
    );
    let c = builder(&mock)
        .retry_policy(
            RetryPolicy::default()
                .initial_backoff(ms(10))
                .jitter(Jitter::None),
        )
        .poll_rate_limit(PerSecond::new(1.0).burst(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let d = c.wait("j").await.unwrap();
    assert_eq!(d.status(), &JobStatus::Succeeded);
    let at: Vec<Duration> = mock.requests().iter().map(|r| r.at - start).collect();
    assert_eq!(at, [secs(0), secs(1), secs(2)]);
}

/// A second wait made 8 s into another's, with its own 20 s deadline,
/// reports its own 20 s and its own polls.
#[tokio::test(start_paused = true)]
async fn a_late_joiner_reports_its_own_wait() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending"]);
    let c = builder(&mock).wait_timeout(secs(20)).build().unwrap();
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.wait("j").await }
    });
    tokio::time::sleep(secs(8)).await;
    let start = Instant::now();
    let late = c.wait("j").await.unwrap_err();
    assert!(late.is_deadline(), "{late}");
    assert_eq!(start.elapsed(), secs(20));
    assert_eq!(late.waited(), Some(secs(20)));
    // Polls at 10, 15, 20 and 25 s into the first wait are the late
    // joiner's: at 2, 7, 12 and 17 s into its own.
    let seen: Vec<Duration> = late.history().iter().map(|r| r.at).collect();
    assert_eq!(seen, [secs(2), secs(7), secs(12), secs(17)]);
    assert!(late.to_string().contains("20s"), "{late}");
    let first = first.await.unwrap().unwrap_err();
    assert_eq!(first.waited(), Some(secs(20)));
    assert_eq!(first.history().len(), 4);
}

/// A `watch_all` that joins a job another wait follows hears where the job
/// stands (the next answer, though its status did not change), then the
/// end.
#[tokio::test(start_paused = true)]
async fn a_late_watch_all_hears_where_the_job_stands() {
    let mock = MockTransport::new();
    mock.timeline("j", &["processing", "processing", "processing", "success"]);
    let c = builder(&mock).build().unwrap();
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.wait("j").await }
    });
    tokio::time::sleep(secs(6)).await;
    let heard: Vec<String> = c
        .watch_all([q("j")])
        .map(|(_, r)| r.unwrap().status().to_string())
        .collect()
        .await;
    assert_eq!(heard, ["processing", "succeeded"]);
    first.await.unwrap().unwrap();
    assert_eq!(mock.count_for("j"), 4);
}

/// A UUID in lower and upper case is one job: its polls serve both, and a
/// `wait_all` answers each under its own spelling.
#[tokio::test(start_paused = true)]
async fn one_uuid_in_two_cases_is_one_job() {
    const LOWER: &str = "5334c57d-8443-4b79-ba24-8539c2163c74";
    let upper = LOWER.to_ascii_uppercase();
    let start = Instant::now();
    let mock = MockTransport::from_fn(move |req| {
        let id = req.img_uuid.as_deref().unwrap();
        let status = if req.at - start >= secs(15) {
            "success"
        } else {
            "pending"
        };
        MockResponse::job(id, status)
    });
    let c = builder(&mock).build().unwrap();
    let (a, b) = tokio::join!(c.wait(LOWER), c.wait(&upper));
    assert_eq!(a.unwrap().status(), &JobStatus::Succeeded);
    assert_eq!(b.unwrap().status(), &JobStatus::Succeeded);
    assert_eq!(mock.request_count(), 4);

    let mut answered: Vec<String> = c
        .wait_all([q(LOWER), q(&upper)])
        .map(|(query, r)| {
            assert!(r.is_ok());
            query.img_uuid().to_owned()
        })
        .collect()
        .await;
    answered.sort();
    assert_eq!(answered, [upper.clone(), LOWER.to_owned()]);
    assert_eq!(mock.request_count(), 5);
}

/// Queries from an iterator whose `size_hint` lies.
struct Liar(std::vec::IntoIter<JobQuery>);

impl Iterator for Liar {
    type Item = JobQuery;

    fn next(&mut self) -> Option<JobQuery> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

#[tokio::test(start_paused = true)]
async fn a_lying_size_hint_is_not_trusted() {
    let mock = MockTransport::new();
    for id in ["a", "b", "c"] {
        mock.timeline(id, &["pending", "success"]);
    }
    let c = builder(&mock).build().unwrap();
    let items: Vec<_> = c
        .wait_all(Liar(vec![q("a"), q("b"), q("c")].into_iter()))
        .collect()
        .await;
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|(_, r)| r.is_ok()));
}

/// `wait_all` reads its iterator as the scheduler takes the queries in,
/// not all at once.
#[tokio::test(start_paused = true)]
async fn wait_all_reads_its_queries_lazily() {
    let mock = MockTransport::from_fn(|req| {
        MockResponse::job(req.img_uuid.as_deref().unwrap(), "success")
    })
    .without_log();
    let c = builder(&mock).build().unwrap();
    let read = Arc::new(AtomicUsize::new(0));
    let queries = {
        let read = Arc::clone(&read);
        (0..1_000_000).map(move |i| {
            read.fetch_add(1, Ordering::Relaxed);
            q(&format!("j{i}"))
        })
    };
    let first: Vec<_> = c.wait_all(queries).take(5).collect().await;
    assert_eq!(first.len(), 5);
    // A few chunks of 4096 (as many as the scheduler took in while five
    // answers were read), far from the million.
    let read = read.load(Ordering::Relaxed);
    assert!((4096..=10 * 4096).contains(&read), "{read}");
}

/// A transport that panics on one job ends that job with an error; the
/// other jobs of the stream are answered, and the stream has one item per
/// query.
#[tokio::test(start_paused = true)]
async fn a_panic_on_one_job_ends_only_that_job() {
    let mock = MockTransport::from_fn(|req| {
        let id = req.img_uuid.as_deref().unwrap();
        if id == "boom" {
            panic!("a transport bug");
        }
        MockResponse::job(id, "success")
    });
    let c = builder(&mock).build().unwrap();
    let items: Vec<(String, bool)> = c
        .wait_all([q("ok-1"), q("boom"), q("ok-2")])
        .map(|(q, r)| (q.img_uuid().to_owned(), r.is_ok()))
        .collect()
        .await;
    assert_eq!(items.len(), 3);
    for (id, ok) in items {
        assert_eq!(ok, id != "boom", "{id}");
    }
    // The scheduler still serves later waits.
    assert!(c.wait("ok-3").await.is_ok());
}

/// A deadline that falls between two milliseconds is kept to the
/// microsecond: the poll due 0.5 ms before it is not sent (too late to be
/// of use), and the deadline error comes at the deadline, not before.
#[tokio::test(start_paused = true)]
async fn no_request_starts_too_close_to_the_deadline() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending"]);
    let c = mock_client(&mock)
        .poll_policy(PollPolicy::fixed(secs(1)).jitter(Jitter::None))
        .wait_timeout(Duration::from_micros(1_000_500))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = c.wait("j").await.unwrap_err();
    assert!(err.is_deadline(), "{err}");
    assert!(start.elapsed() >= Duration::from_micros(1_000_500));
    assert_eq!(mock.request_count(), 1);
    assert_eq!(err.history().len(), 1);
}

/// A job whose last poll was not sent (too close to its waiters'
/// deadline) is polled again for a waiter that joins it then.
#[tokio::test(start_paused = true)]
async fn a_waiter_joining_a_job_with_no_poll_ahead_gets_polled() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending", "pending", "success"]);
    let c = builder(&mock).wait_timeout(ms(10_005)).build().unwrap();
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.wait("j").await }
    });
    tokio::time::sleep(ms(10_002)).await;
    // The poll due at 10 s was 5 ms before the first wait's deadline: not
    // sent.
    assert_eq!(mock.count_for("j"), 2);
    let late = c.wait("j").await.unwrap();
    assert_eq!(late.status(), &JobStatus::Succeeded);
    assert_eq!(mock.count_for("j"), 3);
    // Its answer came before the first wait's deadline too.
    assert_eq!(
        first.await.unwrap().unwrap().status(),
        &JobStatus::Succeeded
    );
}
