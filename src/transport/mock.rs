//! An in-memory transport for tests: scripted answers and a log of requests.
//!
//! Answers come, in this order of precedence, from a per-job script (its
//! last answer repeats, so a job that reached `success` stays there), from
//! a shared queue, then from a handler function. Delays use tokio's clock,
//! so tests run on a paused clock.
//!
//! ```
//! use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
//! use goenhance_jobs::{Client, JobStatus};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), goenhance_jobs::Error> {
//! let mock = MockTransport::new();
//! mock.script("job-1", [
//!     MockResponse::status(503),
//!     MockResponse::job("job-1", "processing"),
//! ]);
//! let client = Client::builder()
//!     .api_key("test-key")
//!     .transport(mock.clone())
//!     .build()?;
//! let detail = client.get("job-1").await?; // the 503 is retried
//! assert_eq!(detail.status(), &JobStatus::Processing);
//! assert_eq!(mock.count_for("job-1"), 2);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use tokio::time::Instant;
use tower::Service;

type Handler = dyn Fn(&RecordedRequest) -> MockResponse + Send + Sync;

/// The in-memory transport. Clones share their script and log.
#[derive(Clone, Default)]
pub struct MockTransport {
    state: Arc<Mutex<MockState>>,
    handler: Option<Arc<Handler>>,
}

#[derive(Default)]
struct MockState {
    per_job: HashMap<String, VecDeque<MockResponse>>,
    queue: VecDeque<MockResponse>,
    log: Vec<RecordedRequest>,
    counts: HashMap<String, u64>,
    total: u64,
    in_flight: usize,
    max_in_flight: usize,
    keep_log: bool,
}

/// A request the mock received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The method.
    pub method: Method,
    /// The full URI.
    pub uri: Uri,
    /// The headers, as sent (the `Authorization` value is marked sensitive).
    pub headers: HeaderMap,
    /// The `img_uuid` query parameter, if any.
    pub img_uuid: Option<String>,
    /// When the request arrived, on tokio's clock.
    pub at: Instant,
}

/// One scripted answer: a response, or a transport error, after an optional
/// delay.
#[derive(Clone, Debug)]
pub struct MockResponse {
    answer: Answer,
    delay: Option<Duration>,
}

#[derive(Clone, Debug)]
enum Answer {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Error(String),
}

/// The transport error the mock gives for [`MockResponse::error`].
#[derive(Debug, Clone)]
pub struct MockError(String);

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MockError {}

impl MockResponse {
    /// A response with this status and body.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code (100–999).
    pub fn new(status: u16, body: impl Into<Bytes>) -> MockResponse {
        MockResponse {
            answer: Answer::Response {
                status: StatusCode::from_u16(status).expect("a valid http status code"),
                headers: HeaderMap::new(),
                body: body.into(),
            },
            delay: None,
        }
    }

    /// A 200 with this body.
    pub fn ok(body: impl Into<Bytes>) -> MockResponse {
        MockResponse::new(200, body)
    }

    /// A 200 whose envelope says the job has this raw status (`success`
    /// adds one video output and an `end_time`).
    pub fn job(img_uuid: &str, status: &str) -> MockResponse {
        MockResponse::ok(job_body(img_uuid, status, "mx-v2v"))
    }

    /// A response with this status and an empty body.
    pub fn status(status: u16) -> MockResponse {
        MockResponse::new(status, Bytes::new())
    }

    /// A transport error (as a reset connection would give).
    pub fn error(message: impl Into<String>) -> MockResponse {
        MockResponse {
            answer: Answer::Error(message.into()),
            delay: None,
        }
    }

    /// Adds a header to the response.
    ///
    /// # Panics
    ///
    /// If the name or value is not a valid header.
    pub fn header(mut self, name: &str, value: &str) -> MockResponse {
        if let Answer::Response { headers, .. } = &mut self.answer {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
                HeaderValue::from_str(value).expect("a valid header value"),
            );
        }
        self
    }

    /// Answers only after `delay` (tokio's clock).
    pub fn after(mut self, delay: Duration) -> MockResponse {
        self.delay = Some(delay);
        self
    }
}

/// The body of a job-detail answer with this raw status: terminal statuses
/// get an `end_time`, `success` and `completed` one video output.
pub fn job_body(img_uuid: &str, status: &str, job_type: &str) -> String {
    let lower = status.to_ascii_lowercase();
    let (end, json) = match lower.as_str() {
        "success" | "completed" => (
            r#","end_time":"2024-07-12T12:54:40.002Z""#,
            format!(r#"[{{"type":"video","value":"https://cdn.example/{img_uuid}_0.mp4"}}]"#),
        ),
        "failed" | "error" => (
            r#","end_time":"2024-07-12T12:54:40.002Z""#,
            "null".to_owned(),
        ),
        _ => ("", "null".to_owned()),
    };
    format!(
        r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{img_uuid}","status":"{status}","type":"{job_type}","job_type":"{job_type}","start_time":"2024-07-12T12:49:12.541Z"{end},"model_id":"7","json":{json}}}}}"#
    )
}

impl MockTransport {
    /// An empty mock: every request is a transport error until something is
    /// scripted.
    pub fn new() -> MockTransport {
        let mock = MockTransport::default();
        mock.state.lock().unwrap().keep_log = true;
        mock
    }

    /// A mock whose answers come from `handler` (after any script).
    pub fn from_fn<F>(handler: F) -> MockTransport
    where
        F: Fn(&RecordedRequest) -> MockResponse + Send + Sync + 'static,
    {
        MockTransport {
            handler: Some(Arc::new(handler)),
            ..MockTransport::new()
        }
    }

    /// Stops keeping the request log (counts are still kept), for benchmarks
    /// with many requests.
    pub fn without_log(self) -> MockTransport {
        self.state.lock().unwrap().keep_log = false;
        self
    }

    /// Appends answers for one job; the last one repeats.
    pub fn script(&self, img_uuid: &str, answers: impl IntoIterator<Item = MockResponse>) {
        self.state
            .lock()
            .unwrap()
            .per_job
            .entry(img_uuid.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Appends answers for one job from raw statuses (`pending`, …,
    /// `success`); the last one repeats.
    pub fn timeline(&self, img_uuid: &str, statuses: &[&str]) {
        self.script(
            img_uuid,
            statuses.iter().map(|s| MockResponse::job(img_uuid, s)),
        );
    }

    /// Appends answers to the shared queue, used once each by any request
    /// without a per-job script.
    pub fn push(&self, answer: MockResponse) {
        self.state.lock().unwrap().queue.push_back(answer);
    }

    /// The requests received so far (empty after [`without_log`](Self::without_log)).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().log.clone()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> u64 {
        self.state.lock().unwrap().total
    }

    /// How many requests asked about this job.
    pub fn count_for(&self, img_uuid: &str) -> u64 {
        let state = self.state.lock().unwrap();
        state.counts.get(img_uuid).copied().unwrap_or(0)
    }

    /// The most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    fn answer(&self, req: &RecordedRequest) -> MockResponse {
        let mut state = self.state.lock().unwrap();
        state.total += 1;
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        if let Some(id) = &req.img_uuid {
            *state.counts.entry(id.clone()).or_default() += 1;
        }
        if state.keep_log {
            state.log.push(req.clone());
        }
        if let Some(script) = req
            .img_uuid
            .as_ref()
            .and_then(|id| state.per_job.get_mut(id))
        {
            if script.len() > 1 {
                return script.pop_front().expect("non-empty");
            } else if let Some(last) = script.front() {
                return last.clone();
            }
        }
        if let Some(next) = state.queue.pop_front() {
            return next;
        }
        drop(state);
        match &self.handler {
            Some(handler) => handler(req),
            None => MockResponse::error("mock transport: nothing scripted for this request"),
        }
    }
}

impl fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockTransport")
            .field("requests", &self.request_count())
            .field("handler", &self.handler.is_some())
            .finish()
    }
}

struct InFlight(Arc<Mutex<MockState>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.lock() {
            state.in_flight -= 1;
        }
    }
}

impl<B> Service<Request<B>> for MockTransport {
    type Response = Response<Full<Bytes>>;
    type Error = MockError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, MockError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), MockError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, _body) = req.into_parts();
        let img_uuid = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("img_uuid="))
                .map(str::to_owned)
        });
        let recorded = RecordedRequest {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            img_uuid,
            at: Instant::now(),
        };
        let answer = self.answer(&recorded);
        let guard = InFlight(self.state.clone());
        Box::pin(async move {
            let _guard = guard;
            if let Some(delay) = answer.delay {
                tokio::time::sleep(delay).await;
            }
            match answer.answer {
                Answer::Error(msg) => Err(MockError(msg)),
                Answer::Response {
                    status,
                    headers,
                    body,
                } => {
                    let mut resp = Response::new(Full::new(body));
                    *resp.status_mut() = status;
                    *resp.headers_mut() = headers;
                    Ok(resp)
                }
            }
        })
    }
}
