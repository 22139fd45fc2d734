//! One download's requests: the retry loop, each attempt with its
//! redirects, and the body streamed to the file.

use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_TYPE, IF_RANGE, LOCATION,
    RANGE, RETRY_AFTER, USER_AGENT,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::ServiceExt;

use super::downloader::{Downloader, RawBody};
use super::headers::{content_range, header_u64, parse_retry_after, validator, validator_changed};
use super::options::{DownloadOptions, Progress};
use super::partial;
use super::temp::TempFile;
use super::url::{self, Reach};
use crate::error::{Error, Exhausted, Kind};
use crate::text::Rounded;
use crate::transport::Resends;

static USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("goenhance-jobs/", env!("CARGO_PKG_VERSION")));

/// What the download knows across attempts.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Bytes in the file.
    pub(super) offset: u64,
    /// The size the server declared.
    pub(super) total: Option<u64>,
    /// `If-Range` value: a strong ETag or a Last-Modified date.
    pub(super) validator: Option<HeaderValue>,
    /// Whether the server takes byte ranges.
    pub(super) ranges: bool,
    pub(super) content_type: Option<String>,
}

impl State {
    /// Whether the next request asks for the rest only.
    fn can_resume(&self) -> bool {
        self.offset > 0 && self.ranges && self.validator.is_some()
    }

    fn progress(&self) -> Progress {
        Progress {
            bytes: self.offset,
            total: self.total,
        }
    }
}

/// Where a download goes and what it may do.
pub(super) struct Job<'a> {
    pub(super) uri: &'a Uri,
    pub(super) reach: Reach,
    pub(super) options: &'a DownloadOptions,
    /// Where a kept partial file records how to resume it.
    pub(super) meta: Option<&'a Path>,
}

/// Fetches the whole file into `file` (holding `state.offset` bytes
/// already), within the deadline, retrying as the client's policy says.
pub(super) async fn fetch(
    dl: &Downloader,
    job: &Job<'_>,
    file: &mut TempFile,
    state: &mut State,
) -> Result<(), Error> {
    let deadline = job.options.deadline_or_default();
    match tokio::time::timeout(deadline, retrying(dl, job, file, state)).await {
        Ok(done) => done,
        Err(_) => Err(Error::new(Kind::Deadline).with_message(format!(
            "the download took longer than its deadline of {}",
            Rounded(deadline)
        ))),
    }
}

async fn retrying(
    dl: &Downloader,
    job: &Job<'_>,
    file: &mut TempFile,
    state: &mut State,
) -> Result<(), Error> {
    let idle = job.options.idle_timeout.unwrap_or(dl.idle_timeout);
    let policy = &dl.retry;
    let mut failures = 0u32;
    // The error the last retry was paid for after, for the budget's refund.
    let mut paid_after: Option<Error> = None;
    let mut rng = fastrand::Rng::new();
    let mut resends = Resends::default();
    loop {
        let before = state.offset;
        let mut error = match attempt(dl, job, file, state, idle).await {
            Ok(()) => break,
            Err(e) => e,
        };
        // Lost on a pooled connection the server closed as it went out,
        // before any answer: sent again at once, not counted as a failure.
        if resends.send_again(&error, state.offset == before) {
            tracing::debug!(reason = %error, "request lost on a reused connection, sending it again");
            continue;
        }
        if state.offset > before {
            failures = 0;
        }
        failures += 1;
        if !policy.is_retryable(&error) {
            return Err(error);
        }
        if failures >= policy.get_max_attempts() {
            if policy.get_max_attempts() > 1 {
                error.set_exhausted(Exhausted::Attempts(failures));
            }
            return Err(error);
        }
        let delay = match error.retry_after() {
            Some(after) if after > policy.get_max_retry_after() => {
                error.set_exhausted(Exhausted::RetryAfterTooLong);
                return Err(error);
            }
            Some(after) => after,
            None => policy.get_backoff().delay(failures - 1, &mut rng),
        };
        if let Some(budget) = &dl.budget {
            if !budget.withdraw(&error) {
                error.set_exhausted(Exhausted::Budget(failures));
                return Err(error);
            }
        }
        tracing::debug!(
            offset = state.offset,
            failures,
            delay_ms = delay.as_millis() as u64,
            reason = %error,
            "download interrupted; retrying"
        );
        paid_after = Some(error);
        tokio::time::sleep(delay).await;
    }
    if let Some(budget) = &dl.budget {
        budget.deposit(paid_after.as_ref());
    }
    Ok(())
}

/// One request (and its redirects) and as much of the body as arrives.
async fn attempt(
    dl: &Downloader,
    job: &Job<'_>,
    file: &mut TempFile,
    state: &mut State,
    idle: Duration,
) -> Result<(), Error> {
    let max_bytes = job.options.max_bytes_or_default();
    let resume = state.can_resume();
    let mut uri = job.uri.clone();
    let mut redirects = 0;
    let response = loop {
        let request = request(&uri, resume.then_some(&*state))?;
        let call = dl.transport.clone().oneshot(request);
        let response = match tokio::time::timeout(idle, call).await {
            Err(_) => return Err(Error::timeout(idle)),
            Ok(Err(e)) => return Err(Error::transport(e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status.is_redirection() {
            if let Some(location) = response.headers().get(LOCATION) {
                redirects += 1;
                if redirects > url::MAX_REDIRECTS {
                    return Err(Error::new(Kind::Http)
                        .with_status(status)
                        .with_message(format!("more than {} redirects", url::MAX_REDIRECTS)));
                }
                uri = url::redirect(&uri, status, location, job.reach)?;
                continue;
            }
        }
        break response;
    };
    let status = response.status();
    let (parts, body) = response.into_parts();
    match status {
        StatusCode::FORBIDDEN => {
            return Err(Error::expired(
                Some(status),
                "the storage host refused the signed url (403 forbidden)",
            ))
        }
        StatusCode::PARTIAL_CONTENT if resume => {
            let asked = state.validator.as_ref().expect("a resume has a validator");
            if validator_changed(asked, &parts.headers) {
                // Another file than the one asked for: its rest would be
                // spliced onto the old bytes. Start over.
                start_over(file, state, job.meta).await?;
                return Err(Error::new(Kind::Transport)
                    .with_message("the server answered a range of another version of the file"));
            }
            match content_range(&parts.headers) {
                Some((first, total))
                    if first == state.offset && (state.total.is_none() || total == state.total) =>
                {
                    tracing::debug!(offset = state.offset, "download resumed");
                }
                _ => {
                    // Not the rest of the same file: start over.
                    state.ranges = false;
                    return Err(Error::new(Kind::Transport)
                        .with_message("the server answered a range request with another range"));
                }
            }
        }
        s if s.is_success() && s != StatusCode::PARTIAL_CONTENT => {
            if state.offset > 0 {
                tracing::debug!(offset = state.offset, "download starts over");
                file.truncate().await?;
                state.offset = 0;
            }
            state.total = header_u64(&parts.headers, CONTENT_LENGTH);
            state.ranges = parts
                .headers
                .get(ACCEPT_RANGES)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes"));
            state.validator = validator(&parts.headers);
            if let Some(meta) = job.meta {
                partial::record(meta, resumable(state), state.total).await;
            }
        }
        s if s.is_success() => {
            state.ranges = false;
            return Err(Error::new(Kind::Transport)
                .with_message("the server answered a full request with a range"));
        }
        s => {
            let retry_after = parts
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Err(Error::http(s, retry_after));
        }
    }
    if let Some(total) = state.total.filter(|&t| t > max_bytes) {
        file.discard();
        return Err(too_large(max_bytes, Some(total)));
    }
    state.content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    job.options.report(state.progress());
    drop(parts);
    stream(body, file, state, job.options, idle, max_bytes).await
}

/// Writes the body to the file as it arrives.
async fn stream(
    body: RawBody,
    file: &mut TempFile,
    state: &mut State,
    options: &DownloadOptions,
    idle: Duration,
    max_bytes: u64,
) -> Result<(), Error> {
    let mut body = pin!(body);
    // One timer for the whole body, moved on only when it fires: a timer
    // set and cancelled for every chunk costs more than the chunk's write.
    let mut last_data = Instant::now();
    let mut idle_timer = pin!(tokio::time::sleep(idle));
    let mut counted = 0usize;
    let result = loop {
        let next = tokio::select! {
            biased;
            frame = body.frame() => Some(frame),
            () = &mut idle_timer => None,
        };
        let frame = match next {
            None => match last_data.checked_add(idle) {
                Some(due) if due > Instant::now() => {
                    idle_timer.as_mut().reset(due);
                    continue;
                }
                _ => {
                    break Err(Error::new(Kind::Timeout)
                        .with_message(format!("no data for {}", Rounded(idle))))
                }
            },
            Some(None) => break Ok(()),
            Some(Some(Err(e))) => break Err(Error::transport(e)),
            Some(Some(Ok(frame))) => frame,
        };
        let Ok(data): Result<Bytes, _> = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        last_data = Instant::now();
        let end = state.offset + data.len() as u64;
        if state.total.is_some_and(|total| end > total) {
            // More than declared: the file is not what the head said.
            file.truncate().await?;
            state.offset = 0;
            state.ranges = false;
            break Err(Error::new(Kind::Transport)
                .with_message("the body is longer than the server declared"));
        }
        if end > max_bytes {
            file.discard();
            break Err(too_large(max_bytes, None));
        }
        counted += data.len();
        file.write(&data).await?;
        state.offset = end;
        options.report(state.progress());
    };
    crate::telemetry::downloaded_bytes(counted);
    result?;
    match state.total {
        Some(total) if state.offset < total => Err(Error::new(Kind::Transport)
            .with_message(format!("body cut short: {} of {total} bytes", state.offset))),
        _ => Ok(()),
    }
}

/// Empties the file and forgets what was known of it, so that the next
/// request asks for the whole file.
async fn start_over(
    file: &mut TempFile,
    state: &mut State,
    meta: Option<&Path>,
) -> Result<(), Error> {
    file.truncate().await?;
    state.offset = 0;
    state.total = None;
    state.validator = None;
    state.ranges = false;
    if let Some(meta) = meta {
        partial::record(meta, None, None).await;
    }
    Ok(())
}

/// The validator a later call may resume with, when the server takes
/// ranges.
fn resumable(state: &State) -> Option<&HeaderValue> {
    state.validator.as_ref().filter(|_| state.ranges)
}

fn too_large(max_bytes: u64, declared: Option<u64>) -> Error {
    let message = match declared {
        Some(total) => format!("the output is {total} bytes, more than the {max_bytes} byte limit"),
        None => format!("the output passed the {max_bytes} byte limit"),
    };
    Error::new(Kind::BodyTooLarge).with_message(message)
}

/// A GET for `uri`; the rest of the file only when `resume` is given.
fn request(uri: &Uri, resume: Option<&State>) -> Result<Request<Full<Bytes>>, Error> {
    let mut builder = Request::get(uri.clone())
        .header(USER_AGENT, USER_AGENT_VALUE.clone())
        .header(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    if let Some(state) = resume {
        builder = builder.header(RANGE, format!("bytes={}-", state.offset));
        if let Some(v) = &state.validator {
            builder = builder.header(IF_RANGE, v.clone());
        }
    }
    builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| Error::invalid_input("cannot build the download request").with_source(e))
}
