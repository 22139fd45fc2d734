//! Telemetry: OpenTelemetry-named spans, and metrics through the `metrics`
//! facade (feature `metrics`).
//!
//! ```
//! use goenhance_jobs::telemetry;
//!
//! // The names are plain constants, so dashboards and tests can share them.
//! assert_eq!(telemetry::ATTEMPT_SPAN, "GET");
//! assert_eq!(telemetry::WAIT_SPAN, "goenhance.wait");
//! assert_eq!(telemetry::HTTP_CLIENT_REQUEST_DURATION, "http.client.request.duration");
//! assert_eq!(telemetry::TRACK_STORE_ERRORS, "goenhance.track.store.errors");
//! ```
//!
//! # Spans
//!
//! Every span is at level `INFO` and follows the OpenTelemetry semantic
//! conventions, so a `tracing-opentelemetry` layer turns them into client
//! spans as they are.
//!
//! - **`GET`**, one per attempt (a retry is a new span): `otel.kind =
//!   "client"`, `http.request.method`, `server.address`, `server.port`,
//!   `url.full` (the detail URL holds only the job id, never the key),
//!   `http.response.status_code` once an answer came, `error.type` when the
//!   attempt failed (the HTTP status for a non-2xx answer, else the
//!   [`ErrorKind`] name: `timeout`, `transport`, `api`, …;
//!   `cancelled` when the attempt was dropped before it ended, `timeout` when
//!   the timeout layer cut it), and `http.request.resend_count` on retries
//!   only (1 for the first retry).
//! - **`goenhance.wait`**, one per wait, with `goenhance.job.id`, and when
//!   the wait ends `goenhance.wait.polls` (status requests sent) and
//!   `goenhance.wait.outcome` (see below). The `GET` spans of its polls are
//!   its children. A `Poller` (`PollLayer`) or `Client::watch` has
//!   the span current where it was called as parent. The hub behind
//!   `Client::wait`/`wait_all` opens one per *job* it follows (waits on the
//!   same id share one poll loop and so one span), its parent the span
//!   current where the first of those waits was asked for.
//!
//! Spans are made for `tracing` subscribers only. With none installed, or
//! one whose level is below `INFO`, no span is made at all: a check of one
//! atomic. (Without that check, `tracing`'s `log` fallback — on in any build
//! where a dependency enables `tracing/log`, as axum's default features do
//! — would build every span's fields for the `log` crate on every request,
//! whether or not a logger listens.) Under a subscriber, a span it filters
//! out costs a check of the callsite's interest, and field values are only
//! formatted for a subscriber that wants them.
//!
//! # Metrics
//!
//! With the `metrics` feature, the crate records through the
//! [`metrics`](https://docs.rs/metrics/0.24) facade into whatever recorder
//! the program installed (none: nothing is kept). [`describe`][describe-fn] registers
//! the units and descriptions below with it. Job ids are never a label.
//!
//! | name | kind | unit | labels |
//! |---|---|---|---|
//! | `http.client.request.duration` | histogram | seconds | `http.request.method`; `http.response.status_code` when an answer came; `error.type` when the attempt failed |
//! | `goenhance.polls` | counter | polls | `outcome`: the status seen (`pending`, `processing`, `succeeded`, `failed`, `unknown`) or `error`, then also `error.type` |
//! | `goenhance.retries` | counter | retries | `error.type` of the failure retried after |
//! | `goenhance.waits.active` | gauge | waits | none |
//! | `goenhance.polls.in_flight` | gauge | polls | none |
//! | `goenhance.retry.budget.tokens` | gauge | tokens | none |
//! | `goenhance.wait.duration` | histogram | seconds | `outcome`: `succeeded`, `failed`, an error kind (`deadline`, `stall`, `api`, …) or `cancelled` |
//! | `goenhance.download.bytes` | counter | bytes | none |
//! | `goenhance.downloads` | counter | downloads | `outcome`: `ok` or an error kind (`expired`, `http`, …) |
//! | `goenhance.track.store.errors` | counter | errors | `operation`: the store operation that failed or got no answer within the store timeout (`register`, `heartbeat`, `claim`, `complete`, `save_status`, `save_learned`, `load_learned`, `ack`, `retry`, `release`, `prune`, `insert`, `job`, `pending`, `list`, `retry_dead`) |
//! | `goenhance.track.heartbeats` | counter | heartbeats | `outcome`: `alive`, or `fenced` when the store said the worker holds nothing any more |
//! | `goenhance.track.fencings` | counter | fencings | `reason`: `lapsed` (no heartbeat landed within the lease), `unanswered` (the store did not answer before the lease ran out), `refused` (the store said another run holds the worker's jobs, or that it is not alive) |
//! | `goenhance.track.registrations` | counter | registrations | none |
//! | `goenhance.track.deliveries` | counter | deliveries | `outcome`: `ok`, `failed` (an error or a panic; delivered again later), `timed_out` (longer than the handler timeout; delivered again later), `dead` (failed or timed out on the last delivery allowed) |
//! | `goenhance.track.jobs.held` | gauge | jobs | none |
//!
//! - A *poll* is one status request of a wait, retries included; a retry is
//!   counted in `goenhance.retries` and timed as its own request.
//!   `goenhance.retries` counts retried status requests (`Client::get`,
//!   polls, a `RetryLayer`); a download resumed after a cut is counted in
//!   its bytes and its one outcome, not there, though it pays the same
//!   retry budget.
//! - `goenhance.waits.active` counts what callers wait on: each
//!   `Client::wait`, each query of a `wait_all`/`watch_all` stream not
//!   answered yet, each `Client::watch` stream and `Poller` (`PollLayer`)
//!   future. A wait leaves it when it ends however it ends: answered, an
//!   error (deadline, stall, …), its future or stream dropped, or the hub's
//!   scheduler stopped. A wait dropped before its end is timed with the
//!   outcome `cancelled`.
//! - `goenhance.retry.budget.tokens` is the token count of the last
//!   `retry::TokenBucket` that changed (its creation included). One budget
//!   per process is the common case: clients made from one `RetryPolicy`
//!   share it; the gauge has no label to tell separate budgets apart.
//! - Durations are measured on tokio's clock.
//! - The `goenhance.track.*` metrics tell what tracking runs
//!   ([`Tracker::run`][run]) met. A store error is counted once per
//!   failed operation, whoever called it (a run, or `Tracker::track` and
//!   the other look-ups); each failed pass of a run is also logged at
//!   `WARN` (`tracking store failed; retrying`) with the fields `store`
//!   (where it is: a SQLite path, `postgres://user@host:port/db`, never a
//!   password), `operation` and `error`. A worker registers when its run
//!   starts and again after each fencing, so registrations beyond the
//!   first of each run are re-registrations. Deliveries are counted when
//!   their handler ends; one cut short by a graceful stop or a fencing is
//!   not counted. `goenhance.track.jobs.held` is the sum over the runs of
//!   the process of the jobs each holds (waited on, delivered, or waiting
//!   for the store to hear of them); a run that ends takes its share out.
//!
//! Without the feature the crate does not depend on `metrics` and the
//! recording calls compile to nothing.
//!
//! [run]: crate::track::Tracker::run
#![cfg_attr(feature = "metrics", doc = "[describe-fn]: describe")]
#![cfg_attr(
    not(feature = "metrics"),
    doc = "[describe-fn]: https://docs.rs/goenhance-jobs/latest/goenhance_jobs/telemetry/fn.describe.html"
)]

mod attempt;
mod track;
mod wait;

use std::borrow::Cow;

use http::StatusCode;
use tracing::level_filters::LevelFilter;
use tracing::Level;

pub(crate) use self::attempt::{cut_by_timeout, AttemptTrace};
pub(crate) use self::track::{
    delivery_ended, fenced, heartbeat, registered, store_failed, DeliveryOutcome, FenceReason,
    HeldGauge,
};
pub(crate) use self::wait::{InFlight, WaitMeter, WaitSpan};
use crate::error::{Error, ErrorKind};
use crate::model::JobDetail;
#[cfg(any(feature = "metrics", test))]
use crate::model::JobStatus;

/// The name of the span of one HTTP attempt.
pub const ATTEMPT_SPAN: &str = "GET";
/// The name of the span of one wait.
pub const WAIT_SPAN: &str = "goenhance.wait";

/// Histogram, seconds: the duration of each HTTP attempt.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
/// Counter: polls (status requests of waits) by outcome.
pub const POLLS: &str = "goenhance.polls";
/// Counter: retries sent, by the error type retried after.
pub const RETRIES: &str = "goenhance.retries";
/// Gauge: waits in progress.
pub const WAITS_ACTIVE: &str = "goenhance.waits.active";
/// Gauge: polls sent and not answered yet.
pub const POLLS_IN_FLIGHT: &str = "goenhance.polls.in_flight";
/// Gauge: tokens left in the retry budget.
pub const RETRY_BUDGET_TOKENS: &str = "goenhance.retry.budget.tokens";
/// Histogram, seconds: how long waits took, by outcome.
pub const WAIT_DURATION: &str = "goenhance.wait.duration";
/// Counter, bytes: output bytes written by downloads.
pub const DOWNLOAD_BYTES: &str = "goenhance.download.bytes";
/// Counter: downloads ended, by outcome.
pub const DOWNLOADS: &str = "goenhance.downloads";

/// Counter: tracking store operations that failed or got no answer in
/// time, by operation.
pub const TRACK_STORE_ERRORS: &str = "goenhance.track.store.errors";
/// Counter: heartbeats of tracking workers the store answered, by outcome
/// (`alive` or `fenced`).
pub const TRACK_HEARTBEATS: &str = "goenhance.track.heartbeats";
/// Counter: tracking workers fenced (they stopped their work and
/// registered again), by reason.
pub const TRACK_FENCINGS: &str = "goenhance.track.fencings";
/// Counter: registrations of tracking workers (each run's first, and one
/// after each fencing).
pub const TRACK_REGISTRATIONS: &str = "goenhance.track.registrations";
/// Counter: deliveries of tracked jobs to handlers, by outcome (`ok`,
/// `failed`, `timed_out`, `dead`).
pub const TRACK_DELIVERIES: &str = "goenhance.track.deliveries";
/// Gauge: jobs held by the tracking runs of this process.
pub const TRACK_JOBS_HELD: &str = "goenhance.track.jobs.held";

/// The label of the outcome of a poll, a wait, a download, a heartbeat
/// or a delivery.
pub const LABEL_OUTCOME: &str = "outcome";
/// The label of the tracking store operation that failed.
pub const LABEL_OPERATION: &str = "operation";
/// The label of why a tracking worker was fenced.
pub const LABEL_REASON: &str = "reason";
/// The label of the error type (OpenTelemetry `error.type`).
pub const LABEL_ERROR_TYPE: &str = "error.type";
/// The label of the HTTP method.
pub const LABEL_METHOD: &str = "http.request.method";
/// The label of the HTTP status code of an answer.
pub const LABEL_STATUS_CODE: &str = "http.response.status_code";

/// Registers the unit and description of every metric of the table above
/// with the installed recorder (the Prometheus exporter turns them into
/// `# HELP` lines). Call it once after installing the recorder.
///
/// ```
/// let recorder = metrics_util::debugging::DebuggingRecorder::new();
/// metrics::with_local_recorder(&recorder, goenhance_jobs::telemetry::describe);
/// ```
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        HTTP_CLIENT_REQUEST_DURATION,
        Unit::Seconds,
        "duration of GoEnhance API requests, one per attempt"
    );
    describe_counter!(
        POLLS,
        Unit::Count,
        "status requests of waits, by the status seen or error"
    );
    describe_counter!(RETRIES, Unit::Count, "retries sent, by error type");
    describe_gauge!(WAITS_ACTIVE, Unit::Count, "waits in progress");
    describe_gauge!(
        POLLS_IN_FLIGHT,
        Unit::Count,
        "polls sent and not answered yet"
    );
    describe_gauge!(
        RETRY_BUDGET_TOKENS,
        Unit::Count,
        "tokens left in the retry budget"
    );
    describe_histogram!(
        WAIT_DURATION,
        Unit::Seconds,
        "duration of waits, by outcome"
    );
    describe_counter!(DOWNLOAD_BYTES, Unit::Bytes, "output bytes downloaded");
    describe_counter!(DOWNLOADS, Unit::Count, "downloads ended, by outcome");
    describe_counter!(
        TRACK_STORE_ERRORS,
        Unit::Count,
        "tracking store operations that failed or timed out, by operation"
    );
    describe_counter!(
        TRACK_HEARTBEATS,
        Unit::Count,
        "tracking worker heartbeats answered, by outcome"
    );
    describe_counter!(
        TRACK_FENCINGS,
        Unit::Count,
        "tracking workers fenced, by reason"
    );
    describe_counter!(
        TRACK_REGISTRATIONS,
        Unit::Count,
        "tracking worker registrations"
    );
    describe_counter!(
        TRACK_DELIVERIES,
        Unit::Count,
        "deliveries of tracked jobs to handlers, by outcome"
    );
    describe_gauge!(TRACK_JOBS_HELD, Unit::Count, "jobs held by tracking runs");
}

/// The `error.type` of an error: the status code of a non-2xx answer, the
/// kind's name otherwise.
pub(crate) fn error_type(error: &Error) -> Cow<'static, str> {
    match (error.kind(), error.status()) {
        (ErrorKind::Http, Some(status)) => status_text(status),
        (kind, _) => Cow::Borrowed(kind.as_str()),
    }
}

/// A status code as text, without an allocation for the usual ones.
fn status_text(status: StatusCode) -> Cow<'static, str> {
    Cow::Borrowed(match status.as_u16() {
        200 => "200",
        204 => "204",
        301 => "301",
        302 => "302",
        307 => "307",
        308 => "308",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return Cow::Owned(other.to_string()),
    })
}

/// Whether a `tracing` subscriber could want an `INFO` span: the level
/// every subscriber installed so far lets through (`OFF` while there is
/// none). One atomic load.
fn spans_listened() -> bool {
    LevelFilter::current() >= Level::INFO
}

/// The outcome of a wait that ended with `result`.
fn wait_outcome(result: &Result<JobDetail, Error>) -> &'static str {
    match result {
        Ok(detail) => detail.status().label(),
        Err(e) => e.kind().as_str(),
    }
}

/// Counts one poll of a wait by its outcome.
pub(crate) fn polled(result: &Result<JobDetail, Error>) {
    #[cfg(feature = "metrics")]
    match result {
        Ok(detail) => {
            // Keys made at compile time for the usual statuses.
            let counter = match detail.status() {
                JobStatus::Pending => metrics::counter!("goenhance.polls", "outcome" => "pending"),
                JobStatus::Processing => {
                    metrics::counter!("goenhance.polls", "outcome" => "processing")
                }
                JobStatus::Succeeded => {
                    metrics::counter!("goenhance.polls", "outcome" => "succeeded")
                }
                other => metrics::counter!(POLLS, LABEL_OUTCOME => other.label()),
            };
            counter.increment(1)
        }
        Err(e) => metrics::counter!(
            POLLS,
            LABEL_OUTCOME => "error",
            LABEL_ERROR_TYPE => error_type(e)
        )
        .increment(1),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

/// Counts one retry sent after `error`.
pub(crate) fn retried(error: &Error) {
    #[cfg(feature = "metrics")]
    metrics::counter!(RETRIES, LABEL_ERROR_TYPE => error_type(error)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = error;
}

/// Sets the retry budget's token count.
pub(crate) fn budget_tokens(tokens: u32) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(RETRY_BUDGET_TOKENS).set(f64::from(tokens));
    #[cfg(not(feature = "metrics"))]
    let _ = tokens;
}

/// Counts `bytes` of an output written.
pub(crate) fn downloaded_bytes(bytes: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!(DOWNLOAD_BYTES).increment(bytes as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = bytes;
}

/// Counts a download that ended with `result`.
pub(crate) fn download_ended<T>(result: &Result<T, Error>) {
    #[cfg(feature = "metrics")]
    {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind().as_str(),
        };
        metrics::counter!(DOWNLOADS, LABEL_OUTCOME => outcome).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_follow_the_conventions() {
        assert_eq!(
            error_type(&Error::http(StatusCode::SERVICE_UNAVAILABLE, None)),
            "503"
        );
        assert_eq!(
            error_type(&Error::http(StatusCode::from_u16(599).unwrap(), None)),
            "599"
        );
        assert_eq!(
            error_type(&Error::timeout(std::time::Duration::from_secs(1))),
            "timeout"
        );
        assert_eq!(JobStatus::Unknown("queued".into()).label(), "unknown");
    }
}

#[cfg(all(test, feature = "metrics"))]
mod static_keys {
    /// The keys written out as literals (for speed) are the documented ones.
    #[test]
    fn literal_names_match_the_constants() {
        let src = concat!(
            include_str!("mod.rs"),
            include_str!("attempt.rs"),
            include_str!("track.rs"),
            include_str!("wait.rs")
        );
        for literal in [
            "\"http.client.request.duration\"",
            "\"http.request.method\"",
            "\"http.response.status_code\"",
            "\"goenhance.polls\"",
            "\"outcome\"",
        ] {
            let name = literal.trim_matches('"');
            assert!(
                [
                    super::HTTP_CLIENT_REQUEST_DURATION,
                    super::LABEL_METHOD,
                    super::LABEL_STATUS_CODE,
                    super::POLLS,
                    super::LABEL_OUTCOME
                ]
                .contains(&name),
                "{name}"
            );
            assert!(src.contains(literal));
        }
    }
}
