//! Downloads of job outputs: streamed to a temporary file, resumed after a
//! cut, moved into place when complete.
//!
//! ```
//! use bytes::Bytes;
//! use goenhance_jobs::{Client, JobOutput, OutputKind};
//! use goenhance_jobs::download::{DownloadOptions, Progress};
//! use http_body_util::Full;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A storage host that answers every request with the same 5 bytes; in
//! // production leave `.transport` out.
//! let storage = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     let res = http::Response::builder()
//!         .header("content-type", "video/mp4")
//!         .header("content-length", "5")
//!         .body(Full::new(Bytes::from_static(b"hello")))?;
//!     Ok::<_, http::Error>(res)
//! });
//! let client = Client::builder().api_key("my-key").transport(storage).build()?;
//!
//! let dir = std::env::temp_dir().join(format!("goenhance-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let output = JobOutput::new(OutputKind::Video, "https://cdn.example/out_0.mp4?sig=abc");
//! let (tx, rx) = tokio::sync::watch::channel(Progress::default());
//! let file = client
//!     .download_with(&output, dir.join("out_0.mp4"), DownloadOptions::new().progress_watch(tx))
//!     .await?;
//! assert_eq!(file.bytes(), 5);
//! assert_eq!(file.content_type(), Some("video/mp4"));
//! assert_eq!(*rx.borrow(), Progress { bytes: 5, total: Some(5) });
//! assert_eq!(std::fs::read(file.path())?, b"hello");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! What a download does:
//!
//! - It goes through the client's transport **without** the auth layer, so
//!   proxies, extra CAs and tower layers on the transport apply, and the
//!   API key never reaches the storage host.
//! - The bytes go to a hidden temporary file beside the target
//!   (`.NAME.part-XXXXXXXX`), chunk by chunk as they arrive: memory stays
//!   bounded (a few hundred KiB) whatever the size. When the length matches
//!   what the server declared, the file is synced and renamed into place,
//!   so a reader never sees half a file. After a failure or when the future
//!   is dropped, the temporary file is removed.
//! - After a cut connection, a stall (no data for the idle timeout) or a
//!   transient status, it resumes with `Range: bytes=N-` and an `If-Range`
//!   (a strong `ETag`, else `Last-Modified`) when the server announced
//!   `Accept-Ranges: bytes`; so a file that changed is never spliced. A
//!   server that cannot resume, or answers `200` to the range, makes it
//!   start over. Retries follow the client's [`RetryPolicy`]: its
//!   classification, backoff, `Retry-After` limit and budget; its attempt
//!   count bounds the failures in a row without progress (a failure after
//!   new bytes arrived starts the count again). A request lost on a pooled
//!   connection the server closed as it went out is sent again at once,
//!   not counted, as the [`RetryLayer`](crate::RetryLayer) does.
//! - Redirects are followed to `https` only (or `http` on loopback, or
//!   anywhere when the client allows insecure http), at most 5 per request.
//! - A URL whose `link_expired_at` has passed fails at once
//!   ([`Error::is_expired`]), without a request; a `403` from the storage
//!   host is also [`Error::is_expired`], and is not retried.
//! - At most [`ClientBuilder::max_downloads`](crate::ClientBuilder::max_downloads) downloads of a client run at
//!   once (default 4); the others wait their turn.

mod options;
mod temp;
mod url;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_RANGE, LAST_MODIFIED, LOCATION, RANGE, RETRY_AFTER, USER_AGENT,
};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

pub use self::options::{DownloadOptions, Progress};
use self::temp::TempFile;
use crate::error::{BoxError, Error, Exhausted, Kind};
use crate::model::JobOutput;
use crate::retry::RetryPolicy;
use crate::text::Rounded;
use crate::transport::Resends;

/// Downloads of one client that run at once unless
/// [`ClientBuilder::max_downloads`](crate::ClientBuilder::max_downloads) says otherwise.
pub const DEFAULT_MAX_DOWNLOADS: usize = 4;

static USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("goenhance-jobs/", env!("CARGO_PKG_VERSION")));

/// The body of the raw transport, boxed.
pub(crate) type RawBody = UnsyncBoxBody<Bytes, BoxError>;

/// The client's transport without the auth layer, boxed once.
pub(crate) type RawTransport =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<RawBody>, BoxError>;

/// Boxes a transport for downloads.
pub(crate) fn raw_transport<T, B>(transport: T) -> RawTransport
where
    T: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    T::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        transport
            .map_response(|res: Response<B>| res.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    )
}

/// A finished download: the file is complete and in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    path: PathBuf,
    bytes: u64,
    content_type: Option<String>,
}

impl Download {
    /// Where the file is (the target given).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The `Content-Type` the storage host declared, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }
}

/// The download settings of a [`ClientBuilder`].
#[derive(Clone, Debug)]
pub(crate) struct DownloadSettings {
    pub(crate) max_downloads: usize,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        DownloadSettings {
            max_downloads: DEFAULT_MAX_DOWNLOADS,
        }
    }
}

/// What a client downloads with; one per client, shared by its clones.
pub(crate) struct Downloader {
    transport: RawTransport,
    retry: RetryPolicy,
    idle_timeout: Duration,
    insecure_http: bool,
    slots: Arc<Semaphore>,
}

impl fmt::Debug for Downloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Downloader")
            .field("idle_timeout", &self.idle_timeout)
            .field("insecure_http", &self.insecure_http)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Downloader {
    pub(crate) fn new(
        transport: RawTransport,
        retry: RetryPolicy,
        idle_timeout: Duration,
        insecure_http: bool,
        settings: &DownloadSettings,
    ) -> Downloader {
        Downloader {
            transport,
            retry,
            idle_timeout,
            insecure_http,
            slots: Arc::new(Semaphore::new(settings.max_downloads.max(1))),
        }
    }
}

/// What the download knows across attempts.
#[derive(Debug, Default)]
struct State {
    /// Bytes in the temporary file.
    offset: u64,
    /// The size the server declared.
    total: Option<u64>,
    /// `If-Range` value: a strong ETag or a Last-Modified date.
    validator: Option<HeaderValue>,
    /// Whether the server takes byte ranges.
    ranges: bool,
    content_type: Option<String>,
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

pub(crate) async fn run(
    dl: &Downloader,
    output: &JobOutput,
    target: PathBuf,
    options: DownloadOptions,
) -> Result<Download, Error> {
    let result = run_counted(dl, output, target, options).await;
    crate::telemetry::download_ended(&result);
    result
}

async fn run_counted(
    dl: &Downloader,
    output: &JobOutput,
    target: PathBuf,
    options: DownloadOptions,
) -> Result<Download, Error> {
    if let Some(at) = output.expires_at() {
        if at <= SystemTime::now() {
            return Err(Error::expired(
                None,
                format!("link expired at {}", httpdate::fmt_http_date(at)),
            ));
        }
    }
    let uri = url::parse_output_url(output.url(), dl.insecure_http)?;
    temp::split(&target)?;
    let _slot = dl.slots.acquire().await.map_err(|_| Error::closed())?;
    let mut file = TempFile::create(&target).await?;
    let idle = options.idle_timeout.unwrap_or(dl.idle_timeout);
    let policy = &dl.retry;
    let mut state = State::default();
    let mut failures = 0u32;
    // The error the last retry was paid for after, for the budget's refund.
    let mut paid_after: Option<Error> = None;
    let mut rng = fastrand::Rng::new();
    let mut resends = Resends::default();
    loop {
        let before = state.offset;
        let mut error = match attempt(dl, &uri, &mut file, &mut state, &options, idle).await {
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
        if let Some(budget) = policy.get_budget() {
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
    if let Some(budget) = policy.get_budget() {
        budget.deposit(paid_after.as_ref());
    }
    file.finish(&target).await?;
    Ok(Download {
        path: target,
        bytes: state.offset,
        content_type: state.content_type,
    })
}

/// One request (and its redirects) and as much of the body as arrives.
async fn attempt(
    dl: &Downloader,
    start: &Uri,
    file: &mut TempFile,
    state: &mut State,
    options: &DownloadOptions,
    idle: Duration,
) -> Result<(), Error> {
    let resume = state.can_resume();
    let mut uri = start.clone();
    let mut redirects = 0;
    let response = loop {
        let request = request(&uri, resume.then_some(state))?;
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
                let location = location.to_str().unwrap_or("");
                uri = url::redirect(&uri, status, location, dl.insecure_http)?;
                continue;
            }
        }
        break response;
    };
    let status = response.status();
    let (parts, mut body) = response.into_parts();
    match status {
        StatusCode::FORBIDDEN => {
            return Err(Error::expired(
                Some(status),
                "the storage host refused the signed url (403 forbidden)",
            ))
        }
        StatusCode::PARTIAL_CONTENT if resume => {
            let range = content_range(&parts.headers);
            let expected_total = state.total;
            match range {
                Some((first, total))
                    if first == state.offset
                        && (expected_total.is_none() || total == expected_total) =>
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
    state.content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    options.report(state.progress());
    drop(parts);

    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(Error::new(Kind::Timeout)
                    .with_message(format!("no data for {}", Rounded(idle))))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Error::transport(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let end = state.offset + data.len() as u64;
        if state.total.is_some_and(|total| end > total) {
            // More than declared: the file is not what the head said.
            file.truncate().await?;
            state.offset = 0;
            state.ranges = false;
            return Err(Error::new(Kind::Transport)
                .with_message("the body is longer than the server declared"));
        }
        file.write(&data).await?;
        crate::telemetry::downloaded_bytes(data.len());
        state.offset = end;
        options.report(state.progress());
    }
    match state.total {
        Some(total) if state.offset < total => Err(Error::new(Kind::Transport)
            .with_message(format!("body cut short: {} of {total} bytes", state.offset))),
        _ => Ok(()),
    }
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

/// A strong ETag, else Last-Modified: what `If-Range` may carry.
fn validator(headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(etag) = headers.get(ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            return Some(etag.clone());
        }
    }
    headers.get(LAST_MODIFIED).cloned()
}

fn header_u64(headers: &HeaderMap, name: http::header::HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` as `(FIRST, TOTAL)`; a total
/// of `*` is `None`.
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _last) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, total))
}

/// `Retry-After` in seconds or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/1000"),
        );
        assert_eq!(content_range(&h), Some((100, Some(1000))));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 5-9/*"));
        assert_eq!(content_range(&h), Some((5, None)));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("items 1-2/3"));
        assert_eq!(content_range(&h), None);
    }

    #[test]
    fn weak_etags_do_not_validate_a_range() {
        let mut h = HeaderMap::new();
        h.insert(ETAG, HeaderValue::from_static("W/\"x\""));
        assert_eq!(validator(&h), None);
        h.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Sun, 29 Nov 2026 09:00:00 GMT"),
        );
        assert_eq!(validator(&h).unwrap(), "Sun, 29 Nov 2026 09:00:00 GMT");
        h.insert(ETAG, HeaderValue::from_static("\"strong\""));
        assert_eq!(validator(&h).unwrap(), "\"strong\"");
    }
}
