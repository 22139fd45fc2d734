//! Hostile answers and extreme settings: nothing overflows, one job's data
//! never stops the other waits, deadlines are hard, and what the server
//! says neither misleads nor leaks (paused clock with the in-memory
//! transport; a loopback server writing exact bytes where the wire matters).

mod support;

use std::error::Error as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::transport::mock::{MockResponse, MockTransport, RecordedRequest};
use goenhance_jobs::{
    AuthLayer, Client, ClientBuilder, ErrorKind, HyperTransport, JobStatus, JobStatusService,
    PollPolicy, RetryPolicy,
};
use support::{mock_client, q, secs, KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

const HUGE: &str = "9223372036854775807";

/// A transport that answers every job `pending`, an hour late.
fn hanging() -> MockTransport {
    MockTransport::from_fn(|req: &RecordedRequest| {
        MockResponse::job(req.img_uuid.as_deref().unwrap(), "pending").after(secs(3600))
    })
}

/// The default retries, a fixed 5 s between polls.
fn builder(mock: &MockTransport) -> ClientBuilder {
    mock_client(mock)
        .retry_policy(RetryPolicy::default())
        .poll_policy(PollPolicy::fixed(secs(5)).jitter(Jitter::None))
}

/// Healthy jobs go pending → success over two polls; `poison` always
/// answers 503 with an absurd `Retry-After`.
fn poisoned() -> MockTransport {
    let polls: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>> = Default::default();
    MockTransport::from_fn(move |req: &RecordedRequest| {
        let id = req.img_uuid.clone().unwrap_or_default();
        if id == "poison" {
            return MockResponse::status(503).header("retry-after", HUGE);
        }
        let mut polls = polls.lock().unwrap();
        let n = polls.entry(id.clone()).or_default();
        *n += 1;
        MockResponse::job(&id, if *n < 2 { "pending" } else { "success" })
    })
}

#[tokio::test(start_paused = true)]
async fn an_absurd_retry_after_ends_only_its_own_wait() {
    let mock = poisoned();
    let client = builder(&mock).wait_timeout(secs(60)).build().unwrap();
    let mut ids: Vec<String> = (0..100).map(|i| format!("ok-{i}")).collect();
    ids.insert(50, "poison".into());
    let results: Vec<_> = client.wait_all(ids.iter().map(|id| q(id))).collect().await;
    assert_eq!(results.len(), 101);
    for (query, result) in &results {
        if query.img_uuid() == "poison" {
            let err = result.as_ref().unwrap_err();
            assert!(err.is_deadline(), "{err}");
            assert_eq!(
                err.to_string(),
                "wait deadline reached after 60s (1 polls, last status none, last poll failed: http)"
            );
            let last = err
                .source()
                .unwrap()
                .downcast_ref::<goenhance_jobs::Error>()
                .unwrap();
            assert_eq!(last.status().map(|s| s.as_u16()), Some(503));
            assert_eq!(last.retry_after(), Some(secs(9_223_372_036_854_775_807)));
            assert_eq!(
                last.to_string(),
                "server asked to retry after 9223372036854775807s, longer than allowed: http status 503 service unavailable"
            );
        } else {
            assert_eq!(result.as_ref().unwrap().status(), &JobStatus::Succeeded);
        }
    }
    // The scheduler is still there for the next wait.
    let detail = client.wait("ok-late").await.unwrap();
    assert_eq!(detail.status(), &JobStatus::Succeeded);
    // The poisoned job was asked once: the absurd delay ran into the deadline.
    assert_eq!(mock.count_for("poison"), 1);
}

#[tokio::test(start_paused = true)]
async fn watch_of_a_poisoned_job_ends_with_an_error_instead_of_a_panic() {
    let mock = poisoned();
    let client = builder(&mock).wait_timeout(secs(30)).build().unwrap();
    let items: Vec<_> = client.watch("poison").collect().await;
    assert_eq!(items.len(), 1);
    assert!(items[0].as_ref().unwrap_err().is_deadline());
}

#[tokio::test(start_paused = true)]
async fn the_longest_settings_do_not_overflow() {
    let mock = poisoned();
    let client = builder(&mock)
        .wait_timeout(Duration::MAX)
        .attempt_timeout(Duration::MAX)
        .poll_policy(
            PollPolicy::exponential(secs(1), Duration::MAX)
                .stall_after(Duration::MAX)
                .jitter(Jitter::Proportional(f64::NAN)),
        )
        .retry_policy(
            RetryPolicy::default()
                .max_retry_after(Duration::MAX)
                .max_backoff(Duration::MAX)
                .jitter(Jitter::Proportional(f64::NAN)),
        )
        .build()
        .unwrap();
    // A job that ends on its second poll, a second after the first.
    let start = Instant::now();
    let detail = client.wait("ok-1").await.unwrap();
    assert_eq!(detail.status(), &JobStatus::Succeeded);
    assert_eq!(start.elapsed(), secs(1));
    // Honouring an absurd Retry-After when told to is a long sleep, not a
    // panic: five attempts, four sleeps of thirty years each.
    let err = client.get("poison").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(mock.count_for("poison"), 5);
}

#[tokio::test(start_paused = true)]
async fn a_wait_with_a_short_deadline_cuts_the_attempt_in_flight() {
    let mock = hanging();
    let client = builder(&mock).wait_timeout(secs(3)).build().unwrap();
    let start = Instant::now();
    let err = client.wait("hangs").await.unwrap_err();
    assert_eq!(start.elapsed(), secs(3));
    assert!(err.is_deadline(), "{err}");
    assert_eq!(
        err.source().unwrap().to_string(),
        "attempt timed out after 3s"
    );
    assert_eq!(mock.request_count(), 1);

    // `watch` and a hand-built stack of the same layers keep the deadline too.
    let start = Instant::now();
    let items: Vec<_> = client.watch("hangs").collect().await;
    assert_eq!(start.elapsed(), secs(3));
    assert!(items[0].as_ref().unwrap_err().is_deadline());
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn jobs_queued_behind_the_cap_end_at_their_deadline_without_a_request() {
    let mock = hanging();
    let client = builder(&mock)
        .max_in_flight(2)
        .wait_timeout(secs(3))
        .build()
        .unwrap();
    let start = Instant::now();
    let ids: Vec<String> = (0..6).map(|i| format!("job-{i}")).collect();
    let mut ended = Vec::new();
    let mut stream = client.wait_all(ids.iter().map(|id| q(id)));
    while let Some((query, result)) = stream.next().await {
        assert!(result.unwrap_err().is_deadline());
        ended.push((query.img_uuid().to_owned(), start.elapsed()));
    }
    assert_eq!(ended.len(), 6);
    assert!(ended.iter().all(|(_, at)| *at == secs(3)), "{ended:?}");
    // Two polls went out (the cap); the other four never did.
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_with_an_earlier_deadline_is_answered_at_it_while_the_job_queues() {
    let mock = hanging();
    let short = builder(&mock)
        .max_in_flight(1)
        .wait_timeout(secs(2))
        .build()
        .unwrap();
    let start = Instant::now();
    let (a, b) = tokio::join!(short.wait("first"), short.wait("second"));
    assert!(a.unwrap_err().is_deadline());
    assert!(b.unwrap_err().is_deadline());
    assert_eq!(start.elapsed(), secs(2));
    assert_eq!(mock.request_count(), 1);
}

#[test]
fn waits_whose_runtime_shut_down_all_get_an_error() {
    let mock = MockTransport::from_fn(|req: &RecordedRequest| {
        MockResponse::job(req.img_uuid.as_deref().unwrap(), "pending")
    });
    let client = builder(&mock).build().unwrap();
    let ids: Vec<String> = (0..100).map(|i| format!("job-{i}")).collect();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The scheduler starts on the first runtime, then that runtime goes away
    // with every job still pending.
    let stream = first.block_on(async {
        let mut stream = Box::pin(client.wait_all(ids.iter().map(|id| q(id))));
        tokio::time::timeout(Duration::from_millis(50), stream.next())
            .await
            .unwrap_err();
        stream
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results: Vec<_> = second.block_on(stream.collect());
    assert_eq!(results.len(), 100);
    for (_, result) in &results {
        let err = result.as_ref().unwrap_err();
        assert!(err.is_closed(), "{err}");
        assert_eq!(err.kind(), ErrorKind::Closed);
    }
}

#[test]
fn wait_all_made_outside_a_runtime_answers_each_query_with_an_error() {
    let mock = MockTransport::new();
    let client = builder(&mock).build().unwrap();
    let stream = client.wait_all(["a", "b", "a"].map(q));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let results: Vec<_> = runtime.block_on(stream.collect());
    let ids: Vec<_> = results
        .iter()
        .map(|(q, _)| q.img_uuid().to_owned())
        .collect();
    assert_eq!(ids, ["a", "b", "a"]);
    for (_, result) in results {
        let err = result.unwrap_err();
        assert!(err.is_closed());
        assert_eq!(
            err.to_string(),
            "waits need a tokio runtime and none is running on this thread"
        );
    }
    assert_eq!(mock.request_count(), 0);
}

// ---------------------------------------------------------------------
// Exact bytes over loopback.

/// A server that answers every request on every connection with `answer`
/// (a whole HTTP/1.1 response), then closes. Counts requests.
async fn raw_server(answer: String) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut read = 0;
                // Read the request head, then answer.
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), count)
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head + std::str::from_utf8(body).unwrap()
}

async fn get_from(
    answer: String,
) -> (
    Result<goenhance_jobs::JobDetail, goenhance_jobs::Error>,
    u64,
) {
    let (url, count) = raw_server(answer).await;
    let client = Client::builder()
        .api_key(KEY)
        .base_url(&url)
        .retry_policy(RetryPolicy::never())
        .build()
        .unwrap();
    let result = client.get("5334c57d-8443-4b79-ba24-8539c2163c74").await;
    (result, count.load(Ordering::SeqCst))
}

const ID: &str = "5334c57d-8443-4b79-ba24-8539c2163c74";

fn detail_json(extra_output: &str) -> String {
    format!(
        r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{ID}","status":"success","json":[{{"type":"video","value":"https://cdn.example/a.mp4"}}{extra_output}]}}}}"#
    )
}

#[tokio::test]
async fn tolerable_oddities_are_accepted() {
    // A byte order mark before the JSON.
    let body = format!("\u{feff}{}", detail_json(""));
    let (result, _) = get_from(response("200 OK", &[], body.as_bytes())).await;
    assert_eq!(result.unwrap().outputs().len(), 1);

    // An output whose value is null is left out; the others stay.
    let body = detail_json(r#",{"type":"image","value":null}"#);
    let (result, _) = get_from(response("200 OK", &[], body.as_bytes())).await;
    let detail = result.unwrap();
    assert_eq!(detail.outputs().len(), 1);
    assert_eq!(detail.outputs()[0].url(), "https://cdn.example/a.mp4");

    // The code as a string.
    let body = detail_json("").replacen(r#""code":0"#, r#""code":"0""#, 1);
    let (result, _) = get_from(response("200 OK", &[], body.as_bytes())).await;
    assert_eq!(result.unwrap().status(), &JobStatus::Succeeded);

    // A UUID answered in upper case is the one asked about.
    let body = detail_json("").replace(ID, &ID.to_ascii_uppercase());
    let (result, _) = get_from(response("200 OK", &[], body.as_bytes())).await;
    assert_eq!(result.unwrap().img_uuid(), ID.to_ascii_uppercase());
}

#[tokio::test]
async fn intolerable_answers_are_decode_errors_that_say_why() {
    let (result, _) = get_from(response(
        "200 OK",
        &[("content-type", "text/html; charset=utf-8")],
        b"<html><body>gateway</body></html>",
    ))
    .await;
    let err = result.unwrap_err();
    assert!(err.is_decode());
    assert_eq!(
        err.to_string(),
        "cannot decode the job detail: body is text/html; charset=utf-8, not json"
    );

    let (result, _) = get_from(response(
        "200 OK",
        &[("content-type", "application/json")],
        br#"{"code":0,"msg":"Success","data":[]}"#,
    ))
    .await;
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot decode the job detail: invalid body"
    );
    assert!(err
        .source()
        .unwrap()
        .to_string()
        .contains("expected a job detail object"));

    // An id that is not a UUID must match exactly.
    let body = br#"{"code":0,"data":{"img_uuid":"JOB-1","status":"success"}}"#;
    let (url, _) = raw_server(response("200 OK", &[], body)).await;
    let client = Client::builder()
        .api_key(KEY)
        .base_url(&url)
        .retry_policy(RetryPolicy::never())
        .build()
        .unwrap();
    assert!(client.get("job-1").await.unwrap_err().is_decode());
}

#[tokio::test]
async fn a_deadline_after_undecodable_answers_names_the_last_error() {
    let (url, count) = raw_server(response("200 OK", &[], br#"{"code":0,"data":[]}"#)).await;
    let client = Client::builder()
        .api_key(KEY)
        .base_url(&url)
        .retry_policy(RetryPolicy::never())
        .poll_policy(PollPolicy::fixed(Duration::from_millis(100)).jitter(Jitter::None))
        .wait_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let err = client.wait(ID).await.unwrap_err();
    assert!(err.is_deadline());
    let polls = count.load(Ordering::SeqCst);
    assert_eq!(
        err.to_string(),
        format!(
            "wait deadline reached after {} ({polls} polls, last status none, last poll failed: decode)",
            err.waited().map(|w| format!("{:?}", Duration::from_millis(w.as_millis() as u64))).unwrap()
        )
    );
    assert_eq!(
        err.source().unwrap().to_string(),
        "cannot decode the job detail: invalid body"
    );
}

#[tokio::test]
async fn a_key_echoed_by_the_server_is_redacted() {
    let body = format!(r#"{{"code":40100,"msg":"invalid token {KEY}"}}"#);
    let (result, count) = get_from(response("401 Unauthorized", &[], body.as_bytes())).await;
    let err = result.unwrap_err();
    assert_eq!(count, 1);
    assert_eq!(
        err.to_string(),
        "http status 401 unauthorized: invalid token [redacted]"
    );
    assert!(!format!("{err:?}").contains(KEY));

    // The same in a 200 whose envelope refuses.
    let (result, _) = get_from(response("200 OK", &[], body.as_bytes())).await;
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "api error code 40100: invalid token [redacted]"
    );
}

/// A stack built by hand has no key given to its service: the auth layer
/// marks each answer with the key it was sent with, and that is what is cut
/// out.
#[tokio::test]
async fn a_key_echoed_to_a_hand_built_stack_is_redacted() {
    use tower::{Layer, ServiceExt};
    let body = format!(r#"{{"code":40100,"msg":"invalid token {KEY}"}}"#);
    for status in ["401 Unauthorized", "200 OK"] {
        let (url, count) = raw_server(response(status, &[], body.as_bytes())).await;
        let transport = AuthLayer::bearer(KEY).layer(HyperTransport::new());
        let service = JobStatusService::new(&url, transport).unwrap();
        let err = service.oneshot(q(ID)).await.unwrap_err();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let shown = err.to_string();
        assert!(shown.ends_with(": invalid token [redacted]"), "{shown}");
        assert!(!format!("{err:?}").contains(KEY));
    }
}

#[tokio::test]
async fn odd_statuses_are_described_as_they_are() {
    let (result, _) = get_from(response("304 Not Modified", &[], b"")).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "http status 304 not modified"
    );

    let (result, _) = get_from(response(
        "999 Whatever",
        &[],
        br#"{"code":0,"msg":"Success","data":null}"#,
    ))
    .await;
    assert_eq!(result.unwrap_err().to_string(), "http status 999");

    // With the default retries: the call gives up at once.
    let (url, count) = raw_server(response(
        "503 Service Unavailable",
        &[("retry-after", HUGE)],
        b"",
    ))
    .await;
    let client = Client::builder()
        .api_key(KEY)
        .base_url(&url)
        .build()
        .unwrap();
    let err = client.get(ID).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(
        err.to_string(),
        "server asked to retry after 9223372036854775807s, longer than allowed: http status 503 service unavailable"
    );
}

#[test]
fn a_port_out_of_range_is_refused_at_build_time() {
    for url in [
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "https://[::1]:65536/x",
    ] {
        let err = Client::builder()
            .api_key(KEY)
            .base_url(url)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: base url port must be a number from 1 to 65535",
            "{url}"
        );
    }
    assert!(Client::builder()
        .api_key(KEY)
        .base_url("http://[::1]:65535")
        .build()
        .is_ok());
}
