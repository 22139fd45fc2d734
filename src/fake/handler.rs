//! Request handling: auth, routing, faults and job answers.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::body::FakeBody;
use super::fault::{Fault, FaultPlan, Garbage, RetryAfter};
use super::log::RequestLog;
use super::timeline::{JobState, Timeline};

const DETAIL_PATH: &str = "/api/v1/jobs/detail";
const JSON: &str = "application/json";

/// State shared by the server handle, the accept loop and every request.
pub(super) struct Shared {
    pub(super) api_key: String,
    pub(super) prefix: String,
    /// `http://<address>`, for outputs on the server itself.
    origin: String,
    pub(super) log: RequestLog,
    state: Mutex<State>,
    pub(super) total_requests: AtomicU64,
    pub(super) connections: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) max_in_flight: AtomicU64,
    request_ids: AtomicU64,
    /// Requests in flight per job id, to count overlapping polls.
    polls_in_flight: Mutex<HashMap<String, u32>>,
    pub(super) overlapping_polls: AtomicU64,
}

/// Counts a poll of one id as in flight until dropped; a poll that starts
/// while another of the same id is in flight is an overlapping one.
struct PollInFlight<'a>(&'a Shared, &'a str);

impl<'a> PollInFlight<'a> {
    fn new(shared: &'a Shared, id: &'a str) -> Self {
        let mut map = shared
            .polls_in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = map.entry(id.to_owned()).or_insert(0);
        *n += 1;
        if *n > 1 {
            shared.overlapping_polls.fetch_add(1, Ordering::SeqCst);
        }
        Self(shared, id)
    }
}

impl Drop for PollInFlight<'_> {
    fn drop(&mut self) {
        let mut map = self
            .0
            .polls_in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(self.1);
            }
        }
    }
}

struct State {
    jobs: HashMap<String, JobState>,
    job_faults: HashMap<String, FaultPlan>,
    faults: FaultPlan,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("api_key", &"[redacted]")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The service's error: makes hyper drop the connection without an answer.
#[derive(Debug)]
pub(super) struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake connection reset")
    }
}

impl std::error::Error for DropConnection {}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn new(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    pub(super) fn new(
        api_key: String,
        prefix: String,
        origin: String,
        log: RequestLog,
        jobs: Vec<(String, Timeline)>,
        job_faults: HashMap<String, FaultPlan>,
        faults: FaultPlan,
    ) -> Self {
        let now = Instant::now();
        let jobs = jobs
            .into_iter()
            .map(|(id, tl)| (id, new_job(&origin, tl, now)))
            .collect();
        Self {
            api_key,
            prefix,
            origin,
            log,
            state: Mutex::new(State {
                jobs,
                job_faults,
                faults,
            }),
            total_requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            polls_in_flight: Mutex::new(HashMap::new()),
            overlapping_polls: AtomicU64::new(0),
            request_ids: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn add_job(&self, id: String, timeline: Timeline) {
        let job = new_job(&self.origin, timeline, Instant::now());
        self.state().jobs.insert(id, job);
    }

    pub(super) fn set_faults(&self, plan: FaultPlan) {
        self.state().faults = plan;
    }

    pub(super) fn set_job_faults(&self, id: String, plan: FaultPlan) {
        self.state().job_faults.insert(id, plan);
    }

    pub(super) fn with_job<T>(&self, id: &str, f: impl FnOnce(&JobState) -> T) -> Option<T> {
        self.state().jobs.get(id).map(f)
    }

    pub(super) fn job_count(&self) -> usize {
        self.state().jobs.len()
    }

    fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed) + 1;
        format!("req-{n:08x}")
    }

    /// Answers one request.
    pub(super) async fn handle<B>(
        self: Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<FakeBody>, DropConnection> {
        self.total_requests.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight::new(&self);

        let authorized = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|key| key == self.api_key);
        if !authorized {
            return Ok(envelope(StatusCode::UNAUTHORIZED, 401, "unauthorized"));
        }
        let path = req.uri().path();
        let on_detail = path
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest == DETAIL_PATH);
        if !on_detail {
            return Ok(envelope(StatusCode::NOT_FOUND, 404, "not found"));
        }
        if req.method() != Method::GET {
            return Ok(envelope(
                StatusCode::METHOD_NOT_ALLOWED,
                405,
                "method not allowed",
            ));
        }
        let Some(id) =
            query_param(req.uri().query().unwrap_or(""), "img_uuid").filter(|id| !id.is_empty())
        else {
            return Ok(envelope(StatusCode::BAD_REQUEST, 400, "missing img_uuid"));
        };
        drop(req);
        let _poll = PollInFlight::new(&self, &id);

        let fault = {
            let mut state = self.state();
            let state = &mut *state;
            if let Some(job) = state.jobs.get_mut(&id) {
                job.hits += 1;
                if job.terminal_served {
                    job.polls_after_terminal += 1;
                }
            }
            match state.job_faults.get_mut(&id) {
                Some(plan) => plan.next_fault(),
                None => state.faults.next_fault(),
            }
        };

        match fault {
            None => Ok(self.answer(&id, true)),
            Some(fault) => self.faulted(&id, fault).await,
        }
    }

    /// The right answer for `id` now; `good` counts it as a served answer.
    fn answer(&self, id: &str, good: bool) -> Response<FakeBody> {
        let now = Instant::now();
        let data = {
            let mut state = self.state();
            let Some(job) = state.jobs.get_mut(id) else {
                drop(state);
                return json_response(
                    StatusCode::OK,
                    &json!({
                        "code": 40004,
                        "msg": "job not found",
                        "request_id": self.request_id(),
                        "data": null,
                    }),
                );
            };
            let snap = if good {
                job.answer(id, now)
            } else {
                job.snapshot(id, now)
            };
            if let Some(status) = snap.data["status"].as_str() {
                self.log.record(id, status, snap.terminal, !good);
            }
            snap.data
        };
        json_response(
            StatusCode::OK,
            &json!({
                "code": 0,
                "msg": "Success",
                "request_id": self.request_id(),
                "data": data,
            }),
        )
    }

    async fn faulted(&self, id: &str, fault: Fault) -> Result<Response<FakeBody>, DropConnection> {
        Ok(match fault {
            Fault::Status { status, json } => {
                if json {
                    envelope(status, i64::from(status.as_u16()), &reason(status))
                } else {
                    let mut res = Response::new(FakeBody::empty());
                    *res.status_mut() = status;
                    res
                }
            }
            Fault::RetryAfter {
                status,
                retry_after,
            } => {
                let mut res = envelope(status, i64::from(status.as_u16()), &reason(status));
                let value = match retry_after {
                    RetryAfter::Seconds(s) => s.to_string(),
                    RetryAfter::Date(at) => httpdate::fmt_http_date(at),
                    RetryAfter::DateIn(d) => httpdate::fmt_http_date(SystemTime::now() + d),
                };
                res.headers_mut().insert(
                    RETRY_AFTER,
                    HeaderValue::from_str(&value).expect("retry-after is ascii"),
                );
                res
            }
            Fault::ApiError { code, msg } => envelope(StatusCode::OK, code, &msg),
            Fault::Reset => return Err(DropConnection),
            Fault::NoAnswer => std::future::pending().await,
            Fault::Late(delay) => {
                tokio::time::sleep(delay).await;
                self.answer(id, false)
            }
            Fault::Truncated => {
                let (parts, body) = self.answer(id, false).into_parts();
                let full = body.into_bytes();
                let len = full.len();
                let half = full.slice(..len / 2);
                let mut res =
                    Response::from_parts(parts, FakeBody::cut(half, Duration::from_millis(20)));
                res.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(len as u64));
                res
            }
            Fault::Garbage(kind) => {
                let (body, ctype): (&'static str, _) = match kind {
                    Garbage::TruncatedJson => (r#"{"code":0,"da"#, JSON),
                    Garbage::Html => (
                        "<html><head><title>502 Bad Gateway</title></head>\
                         <body><h1>502 Bad Gateway</h1></body></html>\n",
                        "text/html",
                    ),
                };
                let mut res = Response::new(FakeBody::full(body));
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
                res
            }
            Fault::Dribble { chunk, delay } => {
                let (parts, body) = self.answer(id, false).into_parts();
                Response::from_parts(parts, FakeBody::dribble(body.into_bytes(), chunk, delay))
            }
        })
    }
}

/// A job of the server at `origin`, its timeline starting at `now`.
fn new_job(origin: &str, timeline: Timeline, now: Instant) -> JobState {
    let mut job = JobState::new(timeline, now);
    job.origin = origin.to_owned();
    job
}

/// The lowercase reason phrase: `internal server error`.
fn reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
}

/// `{"code": code, "msg": msg, "data": null}` with this HTTP status.
fn envelope(status: StatusCode, code: i64, msg: &str) -> Response<FakeBody> {
    json_response(status, &json!({"code": code, "msg": msg, "data": null}))
}

fn json_response(status: StatusCode, body: &Value) -> Response<FakeBody> {
    let bytes = serde_json::to_vec(body).expect("json values serialise");
    let mut res = Response::new(FakeBody::full(bytes));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    res
}

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_query_params() {
        assert_eq!(
            query_param("a=1&img_uuid=x-1", "img_uuid").as_deref(),
            Some("x-1")
        );
        assert_eq!(
            query_param("img_uuid=a%2Db%41", "img_uuid").as_deref(),
            Some("a-bA")
        );
        assert_eq!(query_param("img_uuid", "img_uuid").as_deref(), Some(""));
        assert_eq!(
            query_param("img_uuid=%4", "img_uuid").as_deref(),
            Some("%4")
        );
        assert_eq!(query_param("", "img_uuid"), None);
    }
}
