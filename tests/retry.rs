//! Retry: classification, backoff schedule, Retry-After, budget (in-memory
//! transport on the paused clock for schedules).

mod support;

use std::time::{Duration, SystemTime};

use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::retry::TokenBucket;
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, JobStatus, RetryPolicy};
use support::mock_client;
use tokio::time::Instant;

fn client(mock: &MockTransport, policy: RetryPolicy) -> Client {
    mock_client(mock).retry_policy(policy).build().unwrap()
}

fn offsets(mock: &MockTransport, start: Instant) -> Vec<u128> {
    mock.requests()
        .iter()
        .map(|r| (r.at - start).as_millis())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn backoff_schedule_without_jitter() {
    let mock = MockTransport::new();
    mock.script("j", (0..4).map(|_| MockResponse::status(503)));
    mock.timeline("j", &["processing"]);
    let c = client(&mock, RetryPolicy::default().jitter(Jitter::None));
    let start = Instant::now();
    let d = c.get("j").await.unwrap();
    assert_eq!(d.status(), &JobStatus::Processing);
    // 200 ms, then × 2: 400, 800, 1600.
    assert_eq!(offsets(&mock, start), [0, 200, 600, 1400, 3000]);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_and_attempts_are_limited() {
    let mock = MockTransport::new();
    mock.script("j", [MockResponse::status(500)]);
    let policy = RetryPolicy::default()
        .jitter(Jitter::None)
        .max_attempts(6)
        .initial_backoff(Duration::from_secs(3))
        .max_backoff(Duration::from_secs(10));
    let c = client(&mock, policy);
    let start = Instant::now();
    let err = c.get("j").await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        err.to_string(),
        "gave up after 6 attempts: http status 500 internal server error"
    );
    // 3, 6, 10 (capped), 10, 10.
    assert_eq!(offsets(&mock, start), [0, 3000, 9000, 19000, 29000, 39000]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_stays_within_the_exponential_envelope_and_is_seedable() {
    let run = |seed| async move {
        let mock = MockTransport::new();
        mock.script("j", (0..4).map(|_| MockResponse::status(502)));
        mock.timeline("j", &["pending"]);
        let c = client(&mock, RetryPolicy::default().seed(seed));
        let start = Instant::now();
        c.get("j").await.unwrap();
        let at = offsets(&mock, start);
        at.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    };
    let a = run(7).await;
    let b = run(7).await;
    let c = run(8).await;
    assert_eq!(a, b, "the same seed gives the same delays");
    assert_ne!(a, c, "another seed gives other delays");
    for (n, d) in a.iter().enumerate() {
        assert!(*d <= 200 << n, "delay {n} = {d} ms is over its cap");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_the_next_delay() {
    let mock = MockTransport::new();
    mock.script(
        "j",
        [
            MockResponse::status(429).header("retry-after", "7"),
            MockResponse::job("j", "processing"),
        ],
    );
    let c = client(&mock, RetryPolicy::default().jitter(Jitter::None));
    let start = Instant::now();
    c.get("j").await.unwrap();
    assert_eq!(offsets(&mock, start), [0, 7000]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date() {
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mock = MockTransport::new();
    mock.script(
        "j",
        [
            MockResponse::status(503)
                .header("date", &httpdate::fmt_http_date(date))
                .header(
                    "retry-after",
                    &httpdate::fmt_http_date(date + Duration::from_secs(12)),
                ),
            MockResponse::job("j", "processing"),
        ],
    );
    let c = client(&mock, RetryPolicy::default());
    let start = Instant::now();
    c.get("j").await.unwrap();
    assert_eq!(offsets(&mock, start), [0, 12000]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_over_the_cap_gives_up_at_once() {
    let mock = MockTransport::new();
    mock.script(
        "j",
        [MockResponse::status(429).header("retry-after", "120")],
    );
    let c = client(
        &mock,
        RetryPolicy::default().max_retry_after(Duration::from_secs(60)),
    );
    let start = Instant::now();
    let err = c.get("j").await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(mock.request_count(), 1);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(
        err.to_string(),
        "server asked to retry after 120s, longer than allowed: http status 429 too many requests"
    );
}

#[tokio::test(start_paused = true)]
async fn non_transient_errors_are_sent_exactly_once() {
    let cases = [
        MockResponse::status(400),
        MockResponse::status(401),
        MockResponse::status(403),
        MockResponse::status(404),
        MockResponse::status(409),
        MockResponse::status(422),
        MockResponse::status(501),
        MockResponse::ok(r#"{"code":40001,"msg":"invalid token","data":null}"#),
        MockResponse::ok(vec![b' '; 2 * 1024 * 1024]),
    ];
    for (i, answer) in cases.into_iter().enumerate() {
        let mock = MockTransport::new();
        let id = format!("job-{i}");
        mock.script(&id, [answer]);
        let c = client(&mock, RetryPolicy::default());
        let err = c.get(&id).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert_eq!(mock.count_for(&id), 1, "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_transient_class_is_retried() {
    let cases = [
        MockResponse::status(408),
        MockResponse::status(429),
        MockResponse::status(500),
        MockResponse::status(502),
        MockResponse::status(503),
        MockResponse::status(504),
        MockResponse::error("connection reset"),
        MockResponse::ok("<html>bad gateway</html>"),
        MockResponse::job("j", "pending").after(Duration::from_secs(60)),
    ];
    for answer in cases {
        let mock = MockTransport::new();
        mock.script("j", [answer, MockResponse::job("j", "success")]);
        let c = Client::builder()
            .api_key("k")
            .attempt_timeout(Duration::from_secs(1))
            .transport(mock.clone())
            .build()
            .unwrap();
        let d = c.get("j").await.unwrap();
        assert_eq!(d.status(), &JobStatus::Succeeded);
        assert_eq!(mock.count_for("j"), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_overrides_the_default() {
    let mock = MockTransport::new();
    mock.script(
        "j",
        [MockResponse::status(404), MockResponse::job("j", "pending")],
    );
    let policy = RetryPolicy::default()
        .classify_with(|e| e.is_transient() || e.status() == Some(http::StatusCode::NOT_FOUND));
    let c = client(&mock, policy);
    assert_eq!(c.get("j").await.unwrap().status(), &JobStatus::Pending);
    assert_eq!(mock.count_for("j"), 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_retries_of_all_callers_together() {
    // Always 503: without a budget 50 callers × 5 attempts = 250 requests.
    // With a bucket of 500 tokens at 5 a retry: 50 first attempts + 100
    // retries = 150, however the callers interleave.
    let mock = MockTransport::from_fn(|_| MockResponse::status(503));
    let c = client(&mock, RetryPolicy::default());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        tasks.push(tokio::spawn(
            async move { c.get(&format!("job-{i}")).await },
        ));
    }
    let mut exhausted = 0;
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        if err.is_budget_exhausted() {
            exhausted += 1;
            assert!(
                err.to_string().starts_with("retry budget exhausted after "),
                "{err}"
            );
        }
    }
    assert_eq!(mock.request_count(), 150);
    assert!(exhausted > 0);

    let unlimited = MockTransport::from_fn(|_| MockResponse::status(503));
    let c = client(&unlimited, RetryPolicy::default().no_budget());
    for i in 0..50 {
        c.get(&format!("job-{i}")).await.unwrap_err();
    }
    assert_eq!(unlimited.request_count(), 250);
}

#[tokio::test(start_paused = true)]
async fn successes_refill_the_budget() {
    // A bucket with room for one retry: a retry that succeeds gives its cost
    // back, so the next caller may retry too.
    let mock = MockTransport::new();
    for id in ["j0", "j1"] {
        mock.script(
            id,
            [MockResponse::status(503), MockResponse::job(id, "pending")],
        );
    }
    mock.script("j2", [MockResponse::status(503)]);
    let c = client(
        &mock,
        RetryPolicy::default().budget(TokenBucket::new(5, 5, 10)),
    );
    assert_eq!(c.get("j0").await.unwrap().status(), &JobStatus::Pending);
    assert_eq!(c.get("j1").await.unwrap().status(), &JobStatus::Pending);
    // j2 fails twice in a row: the first retry is paid, the second is not.
    let err = c.get("j2").await.unwrap_err();
    assert!(err.is_budget_exhausted(), "{err}");
    assert_eq!(
        err.to_string(),
        "retry budget exhausted after 2 attempts: http status 503 service unavailable"
    );
    assert_eq!(mock.count_for("j2"), 2);
}
