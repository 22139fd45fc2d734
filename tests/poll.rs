//! Waits and watches on the paused clock with the in-memory transport.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{
    Client, JobQuery, JobStatus, JobStatusService, PollLayer, PollPolicy, PollSchedule,
};
use support::{mock_client, secs};
use tokio::time::Instant;
use tower::ServiceExt;

fn client(mock: &MockTransport, poll: PollPolicy) -> Client {
    mock_client(mock).poll_policy(poll).build().unwrap()
}

fn offsets_s(mock: &MockTransport, start: Instant) -> Vec<f64> {
    mock.requests()
        .iter()
        .map(|r| (r.at - start).as_secs_f64())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_wait_makes_exactly_the_polls_the_timeline_needs() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending", "pending", "processing", "success"]);
    let c = client(&mock, PollPolicy::fixed(secs(5)));
    let start = Instant::now();
    let d = c.wait("j").await.unwrap();
    assert_eq!(d.status(), &JobStatus::Succeeded);
    assert_eq!(d.outputs()[0].url(), "https://cdn.example/j_0.mp4");
    assert_eq!(offsets_s(&mock, start), [0.0, 5.0, 10.0, 15.0]);
    assert_eq!(start.elapsed(), secs(15));
}

#[tokio::test(start_paused = true)]
async fn completed_spelling_ends_the_wait_too() {
    let mock = MockTransport::new();
    mock.timeline("j", &["processing", "completed"]);
    let d = client(&mock, PollPolicy::fixed(secs(5)))
        .wait("j")
        .await
        .unwrap();
    assert_eq!(d.status(), &JobStatus::Succeeded);
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_is_an_answer() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending", "failed"]);
    let d = client(&mock, PollPolicy::fixed(secs(5)))
        .wait("j")
        .await
        .unwrap();
    assert_eq!(d.status(), &JobStatus::Failed);
    assert!(d.outputs().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_deadline_comes_after_exactly_the_configured_time() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending", "processing"]);
    let c = client(&mock, PollPolicy::fixed(secs(7)).timeout(secs(60)));
    let start = Instant::now();
    let err = c.wait("j").await.unwrap_err();
    assert_eq!(start.elapsed(), secs(60));
    assert!(err.is_deadline());
    assert_eq!(err.waited(), Some(secs(60)));
    assert_eq!(err.last_detail().unwrap().status(), &JobStatus::Processing);
    // 0, 7, …, 56; no poll is sent at the deadline itself, where its
    // answer could no longer be used.
    let at: Vec<u64> = err.history().iter().map(|r| r.at.as_secs()).collect();
    assert_eq!(at, [0, 7, 14, 21, 28, 35, 42, 49, 56]);
    assert_eq!(err.history()[0].status, Some(JobStatus::Pending));
    assert_eq!(err.history()[8].status, Some(JobStatus::Processing));
    assert_eq!(mock.request_count(), 9);
    assert_eq!(
        err.to_string(),
        "wait deadline reached after 60s (9 polls, last status processing)"
    );
}

#[tokio::test(start_paused = true)]
async fn client_wait_timeout_overrides_the_policy() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending"]);
    let c = Client::builder()
        .api_key("k")
        .poll_policy(PollPolicy::fixed(secs(5)))
        .wait_timeout(secs(12))
        .transport(mock.clone())
        .build()
        .unwrap();
    let start = Instant::now();
    assert!(c.wait("j").await.unwrap_err().is_deadline());
    assert_eq!(start.elapsed(), secs(12));
    assert_eq!(offsets_s(&mock, start), [0.0, 5.0, 10.0]);
}

#[tokio::test(start_paused = true)]
async fn stall_detection() {
    let mock = MockTransport::new();
    // Changes at 0 and 10 s, then stays processing.
    mock.timeline("j", &["pending", "pending", "processing"]);
    let c = client(&mock, PollPolicy::fixed(secs(5)).stall_after(secs(22)));
    let start = Instant::now();
    let err = c.wait("j").await.unwrap_err();
    assert!(err.is_stall());
    assert!(!err.is_deadline());
    assert_eq!(start.elapsed(), secs(32));
    assert_eq!(err.last_detail().unwrap().status(), &JobStatus::Processing);
    assert_eq!(
        err.to_string(),
        "job stalled: status processing unchanged for 22s (8 polls over 32s)"
    );
    assert_eq!(
        offsets_s(&mock, start),
        [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 32.0]
    );
}

#[tokio::test(start_paused = true)]
async fn watch_yields_each_status_once_and_ends() {
    let mock = MockTransport::new();
    mock.timeline(
        "j",
        &[
            "pending",
            "pending",
            "processing",
            "processing",
            "processing",
            "success",
        ],
    );
    let c = client(&mock, PollPolicy::fixed(secs(2)));
    let seen: Vec<_> = c
        .watch("j")
        .map(|r| r.unwrap().status().clone())
        .collect()
        .await;
    assert_eq!(
        seen,
        [
            JobStatus::Pending,
            JobStatus::Processing,
            JobStatus::Succeeded
        ]
    );
    assert_eq!(mock.request_count(), 6);
}

#[tokio::test(start_paused = true)]
async fn watch_of_an_invalid_id_yields_the_error() {
    let c = client(&MockTransport::new(), PollPolicy::default());
    let items: Vec<_> = c.watch("a b").collect().await;
    assert_eq!(items.len(), 1);
    assert!(items[0].as_ref().unwrap_err().is_invalid_input());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_wait_polls_no_more() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending"]);
    let c = client(&mock, PollPolicy::fixed(secs(5)));
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.wait("j").await }
    });
    tokio::time::sleep(secs(12)).await;
    assert_eq!(mock.request_count(), 3);
    waiting.abort();
    let _ = waiting.await;
    tokio::time::sleep(secs(3600)).await;
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_watch_polls_no_more() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending", "processing"]);
    let c = client(&mock, PollPolicy::fixed(secs(5)));
    let mut stream = Box::pin(c.watch("j"));
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        &JobStatus::Pending
    );
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        &JobStatus::Processing
    );
    let n = mock.request_count();
    drop(stream);
    tokio::time::sleep(secs(3600)).await;
    assert_eq!(mock.request_count(), n);
}

#[tokio::test(start_paused = true)]
async fn exponential_schedule_without_jitter() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending"; 7]);
    mock.script("j", [MockResponse::job("j", "success")]);
    let policy = PollPolicy::exponential(secs(1), secs(8)).jitter(Jitter::None);
    let c = client(&mock, policy);
    let start = Instant::now();
    c.wait("j").await.unwrap();
    // Intervals 1, 2, 4, 8, 8, 8, 8.
    assert_eq!(
        offsets_s(&mock, start),
        [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0, 39.0]
    );
}

#[tokio::test(start_paused = true)]
async fn an_exponential_schedule_follows_its_own_factor() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending"; 5]);
    mock.script("j", [MockResponse::job("j", "success")]);
    let policy = PollPolicy::new(PollSchedule::Exponential {
        initial: secs(1),
        factor: 3.0,
        max: secs(20),
    })
    .jitter(Jitter::None);
    let c = client(&mock, policy);
    let start = Instant::now();
    c.wait("j").await.unwrap();
    // Intervals 1, 3, 9, 20 (27 capped), 20.
    assert_eq!(offsets_s(&mock, start), [0.0, 1.0, 4.0, 13.0, 33.0, 53.0]);
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_in_bounds() {
    let mock = MockTransport::new();
    mock.timeline("j", &["pending"; 20]);
    mock.script("j", [MockResponse::job("j", "success")]);
    let c = client(
        &mock,
        PollPolicy::fixed(secs(10))
            .jitter(Jitter::Proportional(0.2))
            .min_interval(secs(8))
            .max_interval(secs(12)),
    );
    let start = Instant::now();
    c.wait("j").await.unwrap();
    let at = offsets_s(&mock, start);
    let gaps: Vec<f64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.len(), 20);
    assert!(gaps.iter().all(|g| (8.0..=12.0).contains(g)), "{gaps:?}");
    assert!(
        gaps.iter().any(|g| (g - 10.0).abs() > 0.01),
        "jitter must vary: {gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_during_a_wait_sets_the_earliest_next_poll() {
    let mock = MockTransport::new();
    mock.script(
        "j",
        [
            MockResponse::job("j", "pending"),
            MockResponse::status(429).header("retry-after", "30"),
            MockResponse::job("j", "success"),
        ],
    );
    let c = client(&mock, PollPolicy::fixed(secs(5)));
    let start = Instant::now();
    let d = c.wait("j").await.unwrap();
    assert_eq!(d.status(), &JobStatus::Succeeded);
    assert_eq!(offsets_s(&mock, start), [0.0, 5.0, 35.0]);
}

#[tokio::test(start_paused = true)]
async fn a_503_slows_the_schedule_and_success_speeds_it_up_again() {
    let mock = MockTransport::new();
    mock.script(
        "j",
        [
            MockResponse::status(503),
            MockResponse::status(503),
            MockResponse::job("j", "pending"),
            MockResponse::job("j", "pending"),
            MockResponse::job("j", "pending"),
            MockResponse::job("j", "success"),
        ],
    );
    let c = client(&mock, PollPolicy::fixed(secs(5)).max_interval(secs(60)));
    let start = Instant::now();
    c.wait("j").await.unwrap();
    // ×2 after the first 503, ×4 after the second, then halving per success.
    assert_eq!(offsets_s(&mock, start), [0.0, 10.0, 30.0, 40.0, 45.0, 50.0]);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_do_not_end_a_wait_but_others_do() {
    let mock = MockTransport::new();
    mock.script("t", (0..20).map(|_| MockResponse::error("reset")));
    mock.script("t", [MockResponse::job("t", "success")]);
    mock.script("auth", [MockResponse::status(401)]);
    mock.script(
        "api",
        [MockResponse::ok(
            r#"{"code":40004,"msg":"job not found","data":null}"#,
        )],
    );
    let c = client(&mock, PollPolicy::fixed(secs(5)));
    assert_eq!(c.wait("t").await.unwrap().status(), &JobStatus::Succeeded);
    assert_eq!(mock.count_for("t"), 21);

    let start = Instant::now();
    let err = c.wait("auth").await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_eq!(start.elapsed(), Duration::ZERO);
    let err = c.wait("api").await.unwrap_err();
    assert_eq!(err.api_code(), Some(40004));
    assert_eq!(mock.count_for("auth") + mock.count_for("api"), 2);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_can_be_capped() {
    let mock = MockTransport::new();
    mock.script("j", [MockResponse::job("j", "pending")]);
    mock.script("j", (0..5).map(|_| MockResponse::status(502)));
    let c = client(
        &mock,
        PollPolicy::fixed(secs(5)).max_consecutive_failures(3),
    );
    let err = c.wait("j").await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::BAD_GATEWAY));
    assert_eq!(mock.count_for("j"), 4);
}

#[tokio::test(start_paused = true)]
async fn deadline_error_keeps_the_last_failure_as_source() {
    let mock = MockTransport::new();
    mock.script("j", [MockResponse::status(500)]);
    let c = client(&mock, PollPolicy::fixed(secs(5)).timeout(secs(20)));
    let err = c.wait("j").await.unwrap_err();
    assert!(err.is_deadline());
    assert!(err.last_detail().is_none());
    assert!(err.history().iter().all(|r| r.status.is_none()));
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "http status 500 internal server error");
}

#[tokio::test(start_paused = true)]
async fn poll_layer_by_hand_with_its_own_stack() {
    let mock = MockTransport::new();
    mock.timeline("j", &["queued", "processing", "success"]);
    let svc = tower::ServiceBuilder::new()
        .layer(PollLayer::new(PollPolicy::fixed(secs(3))))
        .service(JobStatusService::new("https://api.goenhance.ai", mock.clone()).unwrap());
    let start = Instant::now();
    let d = svc.oneshot(JobQuery::new("j").unwrap()).await.unwrap();
    assert_eq!(d.status(), &JobStatus::Succeeded);
    assert_eq!(start.elapsed(), secs(6));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_status_is_waited_through() {
    let mock = MockTransport::new();
    mock.timeline("j", &["Rendering", "Rendering", "success"]);
    let c = client(&mock, PollPolicy::fixed(secs(1)));
    assert_eq!(c.wait("j").await.unwrap().status(), &JobStatus::Succeeded);
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn adaptive_learns_and_polls_sparsely_while_a_job_is_young() {
    // Jobs of one type take 90 s (server start/end times say so).
    let body = |id: &str, status: &str| {
        let end = if status == "success" {
            r#","end_time":"2024-07-12T12:50:42.541Z""#
        } else {
            ""
        };
        MockResponse::ok(format!(
            r#"{{"code":0,"data":{{"img_uuid":"{id}","status":"{status}","job_type":"slow","start_time":"2024-07-12T12:49:12.541Z"{end}}}}}"#
        ))
    };
    let mock = MockTransport::from_fn(move |req| {
        // Each job succeeds 90 s after its first poll (tracked by id).
        let id = req.img_uuid.clone().unwrap();
        let n: u64 = id.trim_start_matches('j').parse().unwrap();
        let start = START.with(|s| s.get().unwrap());
        let age = req.at.duration_since(start).as_secs() - n * 1000;
        if age >= 90 {
            body(&id, "success")
        } else {
            body(&id, "processing")
        }
    });
    thread_local!(static START: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) });
    START.with(|s| s.set(Some(Instant::now())));
    let c = Client::builder()
        .api_key("k")
        .poll_policy(PollPolicy::adaptive().jitter(Jitter::None))
        .transport(mock.clone())
        .build()
        .unwrap();
    let mut polls = Vec::new();
    for n in 0..8u64 {
        // Job n starts at n × 1000 s.
        let begin = START.with(|s| s.get().unwrap()) + secs(n * 1000);
        tokio::time::sleep_until(begin).await;
        let before = mock.request_count();
        let d = c.wait(&format!("j{n}")).await.unwrap();
        assert_eq!(d.status(), &JobStatus::Succeeded);
        assert!(Instant::now() - begin >= secs(90));
        polls.push(mock.request_count() - before);
    }
    // Before five jobs finished: the fallback exponential (1 s × 1.5ⁿ up to
    // 15 s): 0, 1, 2.5, 4.75, 8.1, 13.2, 20.8, 32.2, 47.2, 62.2, 77.2, 92.2
    // s, 12 polls to see a 90 s job end.
    assert_eq!(polls[..5], [12, 12, 12, 12, 12]);
    // Then the learned model skips the young part of the job and polls
    // densely around 90 s.
    assert_eq!(polls[5..], [9, 9, 9]);
    let last: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.img_uuid.as_deref() == Some("j7"))
        .map(|r| r.at)
        .collect();
    assert!(last[1] - last[0] >= secs(45), "{:?}", last[1] - last[0]);
    assert!(*last.last().unwrap() - last[0] <= secs(93));
}
