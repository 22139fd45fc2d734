//! The API key never shows: not in any log line at TRACE level, not in any
//! error's `Display` or `Debug`, not in the `Debug` of the client, its
//! builder, the auth layer or the request as sent.
//!
//! Real loopback I/O on the fake server, with short timelines: a wait
//! through retries and faults, a refused key, a deadline, and failing gets.
#![cfg(feature = "fake")]

mod support;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goenhance_jobs::fake::{FakeServer, Fault, FaultPlan, Garbage, Timeline};
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{
    ApiKey, AuthLayer, Client, ClientBuilder, HyperTransport, JobStatus, PollPolicy, RetryPolicy,
};
use support::server_client;
use tower::Layer;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::MakeWriter;

const KEY: &str = "sk-audit-7f3a9c-SECRET";
/// The distinctive core of the key: a leak of part of it counts too.
const CORE: &str = "7f3a9c";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Everything shown to a person or a log: appended here, checked at the end.
#[derive(Default)]
struct Shown(String);

impl Shown {
    fn debug(&mut self, what: &str, v: &dyn std::fmt::Debug) {
        self.0 += &format!("--- {what}\n{v:?}\n{v:#?}\n");
    }

    fn error(&mut self, what: &str, e: &goenhance_jobs::Error) {
        self.0 += &format!("--- {what}\n{e}\n{e:?}\n{e:#?}\n");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            self.0 += &format!("caused by: {s} / {s:?}\n");
            source = s.source();
        }
    }
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .max_retry_after(Duration::from_secs(1))
}

fn client(base: &str) -> ClientBuilder {
    server_client(base)
        .api_key(KEY)
        .attempt_timeout(Duration::from_millis(500))
        .retry_policy(fast_retries())
        .poll_policy(PollPolicy::fixed(Duration::from_millis(40)))
        .wait_timeout(Duration::from_secs(5))
}

async fn scenarios(shown: &mut Shown) {
    // A wait through 503s, a Retry-After, a reset, garbage and a cut body.
    let server = FakeServer::builder()
        .api_key(KEY)
        .job(
            "job-ok",
            Timeline::new("mx-v2v")
                .pending(Duration::from_millis(150))
                .processing(Duration::from_millis(150))
                .succeed("video", "https://cdn.example/job-ok_0.mp4"),
        )
        .job(
            "job-slow",
            Timeline::new("mx-v2v").pending(Duration::from_secs(3600)),
        )
        .job_faults(
            "job-ok",
            FaultPlan::script([
                Some(Fault::status(503)),
                Some(Fault::unavailable(0)),
                Some(Fault::Reset),
                None,
                Some(Fault::Garbage(Garbage::Html)),
                Some(Fault::Garbage(Garbage::TruncatedJson)),
                Some(Fault::Truncated),
                Some(Fault::status_empty(502)),
            ]),
        )
        .job_faults(
            "job-broken",
            FaultPlan::script([
                Some(Fault::status(500)),
                Some(Fault::status(500)),
                Some(Fault::status(500)),
            ]),
        )
        .start()
        .await
        .unwrap();
    let base = server.base_url().to_owned();

    let builder = client(&base);
    shown.debug("ClientBuilder", &builder);
    let c = builder.build().unwrap();
    shown.debug("Client", &c);
    shown.debug("Client::service", &c.service());

    let done = c.wait("job-ok").await.unwrap();
    assert_eq!(done.status(), &JobStatus::Succeeded);
    shown.debug("JobDetail", &done);
    assert!(server.hits("job-ok") >= 9, "the faults were served");

    // The deadline: the job stays pending.
    let short = client(&base)
        .wait_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = short.wait("job-slow").await.unwrap_err();
    assert!(err.is_deadline(), "{err:?}");
    shown.error("deadline", &err);

    // Gets that fail: retries exhausted, an unknown job (code != 0), an
    // attempt timeout, a bad id.
    let few = client(&base)
        .retry_policy(fast_retries().max_attempts(2))
        .build()
        .unwrap();
    let err = few.get("job-broken").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(500), "{err:?}");
    shown.error("get 500", &err);
    let err = c.get("no-such-job").await.unwrap_err();
    assert!(err.is_api(), "{err:?}");
    shown.error("get unknown", &err);
    server.set_job_faults("job-slow", FaultPlan::script([Some(Fault::NoAnswer)]));
    let once = client(&base)
        .retry_policy(RetryPolicy::never())
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = once.get("job-slow").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    shown.error("get timeout", &err);
    let err = c.get("bad id\r\nAuthorization: x").await.unwrap_err();
    assert!(err.is_invalid_input());
    shown.error("get bad id", &err);
    server.shutdown().await;

    // The key is refused: wait and get end at once with the 401.
    let strict = FakeServer::builder()
        .api_key("another-key")
        .job(
            "job-ok",
            Timeline::new("mx-v2v").succeed("image", "https://cdn.example/x.jpg"),
        )
        .start()
        .await
        .unwrap();
    let refused = client(strict.base_url()).build().unwrap();
    let err = refused.wait("job-ok").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err:?}");
    shown.error("wait 401", &err);
    let err = refused.get("job-ok").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err:?}");
    shown.error("get 401", &err);
    strict.shutdown().await;

    // Nobody listens: a connect error.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gone = client(&format!("http://127.0.0.1:{port}"))
        .retry_policy(fast_retries().max_attempts(2))
        .build()
        .unwrap();
    let err = gone.get("job-ok").await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    shown.error("get refused connection", &err);

    // Bad keys are refused without echo.
    for bad in [format!(" {KEY}"), format!("{KEY}\r\nX: y")] {
        let err = Client::builder().api_key(bad).build().unwrap_err();
        shown.error("bad key", &err);
    }
}

fn parts(shown: &mut Shown) {
    let key = ApiKey::new(KEY);
    shown.debug("ApiKey", &key);
    shown.0 += &format!("{key}\n");
    let layer = AuthLayer::bearer(KEY);
    shown.debug("AuthLayer", &layer);
    shown.debug("AddAuthorization", &layer.layer(HyperTransport::new()));

    // The request as it leaves the stack, printed as hyper's and http's
    // `Debug` would print it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mock = MockTransport::new();
    mock.script("job-1", [MockResponse::job("job-1", "processing")]);
    let c = Client::builder()
        .api_key(KEY)
        .transport(mock.clone())
        .build()
        .unwrap();
    rt.block_on(c.get("job-1")).unwrap();
    let sent = &mock.requests()[0];
    let auth = sent.headers.get("authorization").unwrap();
    assert_eq!(auth, &*format!("Bearer {KEY}"), "the key was sent");
    assert!(auth.is_sensitive());
    shown.debug("request headers", &sent.headers);
    shown.debug("recorded request", sent);
    let mut req = http::Request::new(());
    *req.uri_mut() = sent.uri.clone();
    *req.headers_mut() = sent.headers.clone();
    shown.debug("http::Request", &req);
}

#[test]
fn the_key_never_shows() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    // Global, so that events from any thread are captured.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mut shown = Shown::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), scenarios(&mut shown))
            .await
            .expect("the scenarios finish")
    });
    drop(rt);
    parts(&mut shown);

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The capture works: the faults above were retried, and the spans of
    // waits and attempts were logged with their job ids.
    assert!(log.contains("retrying"), "no retry was logged:\n{log}");
    assert!(log.contains("job-ok"), "{log}");
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    assert!(shown.0.contains("Bearer [redacted]") || shown.0.contains("Sensitive"));

    for (what, text) in [("log", &log), ("shown", &shown.0)] {
        for needle in [KEY, CORE] {
            if let Some(at) = text.find(needle) {
                let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let to = text[at..].find('\n').map_or(text.len(), |i| at + i);
                panic!("the key shows in the {what}: {}", &text[from..to]);
            }
        }
    }
}

/// A key the server echoes after 0 to 260 bytes of filler, across the
/// 200-byte cut of the message: no 8-byte piece of it shows in the error,
/// in `Display`, alternate `Display` or `Debug`. The 401 goes through the
/// error-status path, the 200 with `code != 0` through the envelope.
#[tokio::test]
async fn a_key_across_the_cut_of_a_server_message_shows_no_piece() {
    const LONG_KEY: &str = "sk-live-Q7f3a9cW2mZx8KpL4nRt6VbY1dHs0JeU";
    assert_eq!(LONG_KEY.len(), 40);
    let pieces: Vec<&str> = (0..=LONG_KEY.len() - 8)
        .map(|i| &LONG_KEY[i..i + 8])
        .collect();
    let mock = MockTransport::new();
    let client = Client::builder()
        .api_key(LONG_KEY)
        .retry_policy(RetryPolicy::never())
        .transport(mock.clone())
        .build()
        .unwrap();
    let mut checked = 0;
    for offset in 0..=260 {
        let msg = format!("{}{LONG_KEY} is not a valid token", "x".repeat(offset));
        let body = serde_json::json!({"code": 401, "msg": msg, "data": null}).to_string();
        for answer in [MockResponse::new(401, body.clone()), MockResponse::ok(body)] {
            mock.push(answer);
            let err = client.get("job-1").await.unwrap_err();
            assert_eq!(err.api_code(), Some(401), "{err:?}");
            for shown in [format!("{err}"), format!("{err:#}"), format!("{err:?}")] {
                for piece in &pieces {
                    assert!(
                        !shown.contains(piece),
                        "offset {offset}: {piece:?} shows in {shown:?}"
                    );
                }
            }
            // What is kept is the message with the key cut out, then cut
            // at 200 bytes.
            let redacted = format!("{}[redacted] is not a valid token", "x".repeat(offset));
            let kept = if redacted.len() <= 200 {
                redacted
            } else {
                format!("{}…", &redacted[..200])
            };
            assert!(err.to_string().ends_with(&format!(": {kept}")), "{err}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 261);
}
