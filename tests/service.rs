//! The request a query becomes, and what is refused before anything is sent
//! (in-memory transport: only the logic is under test here).

mod support;

use std::time::Duration;

use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, JobQuery, JobStatus, JobStatusService, RetryPolicy};
use http::header::{ACCEPT, AUTHORIZATION, USER_AGENT};
use http::Method;
use support::{mock_client, KEY};
use tower::ServiceExt;

fn client(mock: &MockTransport, base: &str) -> Client {
    mock_client(mock).base_url(base).build().unwrap()
}

#[tokio::test]
async fn request_shape() {
    let mock = MockTransport::new();
    mock.timeline("5334c57d-8443-4b79-ba24-8539c2163c74", &["pending"]);
    let c = client(&mock, "https://api.goenhance.ai");
    let d = c.get("5334c57d-8443-4b79-ba24-8539c2163c74").await.unwrap();
    assert_eq!(d.status(), &JobStatus::Pending);

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, Method::GET);
    assert_eq!(
        r.uri.to_string(),
        "https://api.goenhance.ai/api/v1/jobs/detail?img_uuid=5334c57d-8443-4b79-ba24-8539c2163c74"
    );
    assert_eq!(r.headers[ACCEPT], "application/json");
    assert_eq!(
        r.headers[USER_AGENT],
        concat!("goenhance-jobs/", env!("CARGO_PKG_VERSION"))
    );
    let auth = &r.headers[AUTHORIZATION];
    assert_eq!(auth, &format!("Bearer {KEY}"));
    assert!(auth.is_sensitive());
    assert_eq!(r.headers.len(), 3, "{:?}", r.headers);
}

#[tokio::test]
async fn refused_ids_make_no_request() {
    let mock = MockTransport::new();
    let c = client(&mock, "https://api.goenhance.ai");
    let long = "x".repeat(129);
    for bad in [
        "",
        "a b",
        "x\r\nHost: evil",
        "../x",
        "a&b=c",
        "é",
        long.as_str(),
    ] {
        let err = c.get(bad).await.unwrap_err();
        assert!(err.is_invalid_input(), "{bad:?}: {err}");
        let err = c.wait(bad).await.unwrap_err();
        assert!(err.is_invalid_input(), "{bad:?}: {err}");
    }
    assert_eq!(mock.request_count(), 0);
}

#[test]
fn base_url_rules() {
    let mock = MockTransport::new();
    let build = |url: &str| {
        Client::builder()
            .base_url(url)
            .api_key(KEY)
            .transport(mock.clone())
            .build()
    };
    for ok in [
        "https://api.goenhance.ai",
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:9",
    ] {
        assert!(build(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://api.goenhance.ai",
        "http://10.0.0.1",
        "ftp://x",
        "https://u:p@x",
    ] {
        let err = build(bad).unwrap_err();
        assert!(err.is_invalid_input(), "{bad}");
    }
    let insecure = Client::builder()
        .base_url("http://gateway.internal")
        .allow_insecure_http(true)
        .api_key(KEY)
        .transport(mock.clone())
        .build();
    assert!(insecure.is_ok());
}

#[tokio::test]
async fn a_path_prefix_is_kept() {
    let mock = MockTransport::new();
    mock.timeline("j1", &["processing"]);
    let c = client(&mock, "https://gw.example/goenhance/");
    c.get("j1").await.unwrap();
    assert_eq!(
        mock.requests()[0].uri.to_string(),
        "https://gw.example/goenhance/api/v1/jobs/detail?img_uuid=j1"
    );
}

#[tokio::test]
async fn api_error_and_401_surface_details_without_the_key() {
    let mock = MockTransport::new();
    mock.script(
        "j1",
        [MockResponse::ok(
            r#"{"code":40001,"msg":"invalid token","data":null}"#,
        )],
    );
    mock.script(
        "j2",
        [MockResponse::new(
            401,
            r#"{"code":401,"msg":"unauthorized","data":null}"#,
        )],
    );
    mock.script("j3", [MockResponse::status(401)]);
    let c = client(&mock, "https://api.goenhance.ai");

    let err = c.get("j1").await.unwrap_err();
    assert!(err.is_api());
    assert_eq!(err.api_code(), Some(40001));
    assert_eq!(err.to_string(), "api error code 40001: invalid token");

    let err = c.get("j2").await.unwrap_err();
    assert!(err.is_http());
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_eq!(err.api_code(), Some(401));
    assert_eq!(err.to_string(), "http status 401 unauthorized");

    let err = c.get("j3").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "http status 401 unauthorized: the api key was refused"
    );

    for e in [c.get("j1").await, c.get("j2").await, c.get("j3").await] {
        let e = e.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(KEY), "{shown}");
    }
    assert!(!format!("{c:?}").contains(KEY));
}

#[tokio::test]
async fn a_redirect_is_an_error_and_not_followed() {
    let mock = MockTransport::new();
    mock.script(
        "j1",
        [MockResponse::status(302).header("location", "https://evil.example/steal")],
    );
    let c = client(&mock, "https://api.goenhance.ai");
    let err = c.get("j1").await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::FOUND));
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "http status 302 found: redirects are not followed"
    );
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn a_5_mib_body_is_refused() {
    let mock = MockTransport::new();
    let big = vec![b' '; 5 * 1024 * 1024];
    mock.script("j1", [MockResponse::ok(big)]);
    let c = client(&mock, "https://api.goenhance.ai");
    let err = c.get("j1").await.unwrap_err();
    assert!(err.is_body_too_large());
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "response body exceeds the 1048576 byte limit"
    );
    // Not retried, even with retries on.
    let retrying = Client::builder()
        .api_key(KEY)
        .transport(mock.clone())
        .build()
        .unwrap();
    assert!(retrying.get("j1").await.unwrap_err().is_body_too_large());
    assert_eq!(mock.count_for("j1"), 2);
}

#[tokio::test]
async fn the_body_cap_is_configurable() {
    let mock = MockTransport::new();
    mock.timeline("j1", &["pending"]);
    let svc = JobStatusService::new("https://api.goenhance.ai", mock.clone())
        .unwrap()
        .max_body_size(64);
    let err = svc.oneshot(JobQuery::new("j1").unwrap()).await.unwrap_err();
    assert!(err.is_body_too_large());
    assert_eq!(err.to_string(), "response body exceeds the 64 byte limit");
}

#[tokio::test]
async fn an_answer_for_another_job_is_not_taken() {
    let mock = MockTransport::new();
    mock.script("j1", [MockResponse::job("j2", "success")]);
    let c = client(&mock, "https://api.goenhance.ai");
    let err = c.get("j1").await.unwrap_err();
    assert!(err.is_decode());
    assert_eq!(
        err.to_string(),
        "cannot decode the job detail: answer is for job j2, not the one asked for"
    );
}

#[tokio::test]
async fn a_transport_error_is_classified() {
    let mock = MockTransport::new();
    mock.script("j1", [MockResponse::error("connection reset by peer")]);
    let c = client(&mock, "https://api.goenhance.ai");
    let err = c.get("j1").await.unwrap_err();
    assert!(err.is_transport());
    assert!(err.is_transient());
    assert_eq!(err.to_string(), "transport error");
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "connection reset by peer"
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_covers_the_answer() {
    let mock = MockTransport::new();
    mock.script(
        "j1",
        [MockResponse::job("j1", "pending").after(Duration::from_secs(30))],
    );
    let c = Client::builder()
        .api_key(KEY)
        .attempt_timeout(Duration::from_secs(2))
        .retry_policy(RetryPolicy::never())
        .transport(mock.clone())
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = c.get("j1").await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(err.to_string(), "attempt timed out after 2s");
}

// The client is Send + Sync + Clone and its futures and streams are Send:
// checked by the compiler (the closure is never run).
const _: fn() = || {
    fn send<T: Send>(_: &T) {}
    fn send_sync_clone<T: Send + Sync + Clone + 'static>(_: &T) {}
    let c = client(&MockTransport::new(), "https://api.goenhance.ai");
    send_sync_clone(&c);
    send(&c.get("a"));
    send(&c.wait("a"));
    send(&c.watch("a"));
    send(&c.wait_all([JobQuery::new("a").unwrap()]));
    send(&c.watch_all([JobQuery::new("a").unwrap()]));
};
