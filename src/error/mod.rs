//! The crate's one error type and its classification.
//!
//! Every failure of this crate is an [`Error`]. Callers classify it with
//! methods, as `hyper-util`'s client error does, or match on its
//! [`ErrorKind`], which is `#[non_exhaustive]` so that it can grow:
//!
//! ```
//! use goenhance_jobs::JobQuery;
//!
//! let err = JobQuery::new("a b").unwrap_err();
//! assert!(err.is_invalid_input());
//! assert!(!err.is_transient());
//! assert_eq!(err.to_string(), "invalid input: job id has a character outside [A-Za-z0-9._~-] at byte 1");
//! ```

mod certificate;
mod kind;
mod proxy;
mod report;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::model::JobDetail;
use crate::text::{redact, server_text, Rounded};

pub use self::kind::ErrorKind;
pub(crate) use self::kind::ErrorKind as Kind;
pub(crate) use self::proxy::ProxyAuthRequired;
pub use self::report::PollRecord;
pub(crate) use self::report::WaitReport;

/// `err` and its causes, each I/O error replaced by the error it carries
/// (whose text it shows: `io::Error::source` skips that error and goes on
/// to its source), for finding a cause by its type.
pub(crate) fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    // An I/O error may carry another one: unwrap them all.
    fn unwrap<'a>(
        mut e: &'a (dyn std::error::Error + 'static),
    ) -> &'a (dyn std::error::Error + 'static) {
        while let Some(carried) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            e = carried;
        }
        e
    }
    std::iter::successors(Some(unwrap(err)), |e| e.source().map(unwrap))
}

/// A boxed error, as tower and hyper use for service errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error of every operation in this crate.
///
/// Classify it with the `is_*` methods and read its details with
/// [`status`](Error::status), [`api_code`](Error::api_code),
/// [`retry_after`](Error::retry_after) and, for a wait that ended early,
/// [`last_detail`](Error::last_detail) and [`history`](Error::history).
/// Its `Display` is one lowercase line that says what failed, and
/// [`source`](std::error::Error::source) says why; the alternate form
/// (`{:#}`) adds the causes to the line, as `anyhow` does. Neither carries
/// the API key.
///
/// ```
/// use goenhance_jobs::Client;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A port nothing listens on.
/// let client = Client::builder()
///     .api_key("my-key")
///     .base_url("http://127.0.0.1:9")
///     .retry_policy(goenhance_jobs::RetryPolicy::never())
///     .build()
///     .unwrap();
/// let err = client.get("some-job").await.unwrap_err();
/// assert_eq!(err.to_string(), "transport error: cannot connect");
/// assert!(format!("{err:#}").starts_with("transport error: cannot connect: "));
/// # }
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: Kind,
    message: Option<Box<str>>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    status: Option<StatusCode>,
    api_code: Option<i64>,
    retry_after: Option<Duration>,
    retries_exhausted: Option<Exhausted>,
    wait: Option<WaitReport>,
}

/// Why a retry loop gave up on an error that was still transient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exhausted {
    Attempts(u32),
    Budget(u32),
    RetryAfterTooLong,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: None,
                source: None,
                status: None,
                api_code: None,
                retry_after: None,
                retries_exhausted: None,
                wait: None,
            }),
        }
    }

    pub(crate) fn with_message(mut self, message: impl Into<Box<str>>) -> Self {
        self.inner.message = Some(message.into());
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(Arc::from(source.into()));
        self
    }

    pub(crate) fn invalid_input(message: impl Into<Box<str>>) -> Self {
        Error::new(Kind::InvalidInput).with_message(message)
    }

    pub(crate) fn transport(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        if let Some(failure) = certificate::certificate_failure(&*source) {
            return Error::new(Kind::Certificate)
                .with_message(failure)
                .with_source(source);
        }
        if proxy::auth_required(&*source) {
            return Error::new(Kind::ProxyAuth)
                .with_message("proxy authentication required")
                .with_source(source);
        }
        let connect = source
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect());
        let err = Error::new(Kind::Transport).with_source(source);
        // What failed, not why: the source says why.
        if connect {
            err.with_message("cannot connect")
        } else {
            err
        }
    }

    pub(crate) fn decode(message: impl Into<Box<str>>) -> Self {
        Error::new(Kind::Decode).with_message(message)
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        Error::new(Kind::Timeout)
            .with_message(format!("attempt timed out after {}", Rounded(after)))
    }

    pub(crate) fn http(status: StatusCode, retry_after: Option<Duration>) -> Self {
        let mut err = Error::new(Kind::Http);
        err.inner.status = Some(status);
        err.inner.retry_after = retry_after;
        err
    }

    pub(crate) fn api(code: i64, msg: &str) -> Self {
        let mut err = Error::new(Kind::Api).with_message(server_text(msg));
        err.inner.api_code = Some(code);
        err
    }

    pub(crate) fn body_too_large(limit: usize) -> Self {
        Error::new(Kind::BodyTooLarge)
            .with_message(format!("response body exceeds the {limit} byte limit"))
    }

    pub(crate) fn closed() -> Self {
        Error::new(Kind::Closed).with_message("the wait scheduler has stopped")
    }

    pub(crate) fn store(message: impl Into<Box<str>>) -> Self {
        Error::new(Kind::Store).with_message(message)
    }

    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn store_schema(message: impl Into<Box<str>>) -> Self {
        Error::new(Kind::StoreSchema).with_message(message)
    }

    /// Rebuilds an error from what a tracking store kept of it.
    pub(crate) fn from_parts(
        kind: Kind,
        message: Option<Box<str>>,
        status: Option<StatusCode>,
        api_code: Option<i64>,
        wait: Option<WaitReport>,
    ) -> Self {
        let mut err = Error::new(kind);
        err.inner.message = message;
        err.inner.status = status;
        err.inner.api_code = api_code;
        err.inner.wait = wait;
        err
    }

    pub(crate) fn message(&self) -> Option<&str> {
        self.inner.message.as_deref()
    }

    pub(crate) fn wait_report(&self) -> Option<&WaitReport> {
        self.inner.wait.as_ref()
    }

    pub(crate) fn expired(status: Option<StatusCode>, message: impl Into<Box<str>>) -> Self {
        let mut err = Error::new(Kind::Expired).with_message(message);
        err.inner.status = status;
        err
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn io(message: impl Into<Box<str>>, source: std::io::Error) -> Self {
        Error::new(Kind::Io)
            .with_message(message)
            .with_source(source)
    }

    pub(crate) fn no_runtime() -> Self {
        Error::new(Kind::Closed)
            .with_message("waits need a tokio runtime and none is running on this thread")
    }

    /// A wait reached its deadline; `report` tells what it saw.
    pub(crate) fn deadline(report: WaitReport) -> Self {
        Error::new(Kind::Deadline).with_report(report)
    }

    /// A job's status stopped changing; `report` tells what the wait saw.
    pub(crate) fn stall(report: WaitReport) -> Self {
        Error::new(Kind::Stall).with_report(report)
    }

    fn with_report(mut self, report: WaitReport) -> Self {
        self.inner.wait = Some(report);
        self
    }

    pub(crate) fn set_api_code(&mut self, code: i64) {
        self.inner.api_code = Some(code);
    }

    pub(crate) fn set_message(&mut self, message: impl Into<Box<str>>) {
        self.inner.message = Some(message.into());
    }

    /// Cuts `secret` out of everything the server wrote into this error:
    /// the message and, where its text holds the secret, the source.
    pub(crate) fn redact(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        if let Some(message) = &mut self.inner.message {
            if message.contains(secret) {
                *message = redact(message, secret).into();
            }
        }
        if let Some(source) = &self.inner.source {
            let text = source.to_string();
            if text.contains(secret) {
                let redacted: BoxError = redact(&text, secret).into();
                self.inner.source = Some(Arc::from(redacted));
            }
        }
    }

    pub(crate) fn set_exhausted(&mut self, why: Exhausted) {
        self.inner.retries_exhausted = Some(why);
    }

    /// What kind of failure this is; the `is_*` methods ask the same
    /// question one kind at a time.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// One attempt took longer than its per-attempt timeout.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::Timeout
    }

    /// A wait reached its deadline before the job finished.
    ///
    /// [`last_detail`](Error::last_detail), [`history`](Error::history) and
    /// [`waited`](Error::waited) tell what was seen until then.
    pub fn is_deadline(&self) -> bool {
        self.inner.kind == Kind::Deadline
    }

    /// A wait ended because the job's status stopped changing.
    pub fn is_stall(&self) -> bool {
        self.inner.kind == Kind::Stall
    }

    /// The transport failed: connecting, reading, writing, a reset
    /// connection or a body cut short.
    ///
    /// A server certificate that failed verification is a transport error
    /// too; its message says what is wrong ("certificate not trusted
    /// (unknown issuer)", "certificate is for another host", "certificate
    /// expired") and it is not [transient](Error::is_transient). So is a
    /// proxy that answers `407 Proxy Authentication Required`
    /// ([`ErrorKind::ProxyAuth`]: "proxy authentication required").
    pub fn is_transport(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Transport | Kind::Certificate | Kind::ProxyAuth
        )
    }

    /// The body could not be decoded (not JSON, a wrong shape, `data: null`).
    pub fn is_decode(&self) -> bool {
        self.inner.kind == Kind::Decode
    }

    /// The input was refused before anything was sent: a bad job id, base
    /// URL, key or setting.
    pub fn is_invalid_input(&self) -> bool {
        self.inner.kind == Kind::InvalidInput
    }

    /// The server answered with an HTTP status other than 2xx.
    /// [`status`](Error::status) tells which.
    pub fn is_http(&self) -> bool {
        self.inner.kind == Kind::Http
    }

    /// The API answered with `code != 0`. [`api_code`](Error::api_code)
    /// tells which code; the message is in `Display`.
    pub fn is_api(&self) -> bool {
        self.inner.kind == Kind::Api
    }

    /// The response body was larger than the configured cap.
    pub fn is_body_too_large(&self) -> bool {
        self.inner.kind == Kind::BodyTooLarge
    }

    /// The scheduler behind [`Client::wait`](crate::Client::wait) stopped
    /// (its tokio runtime shut down) before the wait ended.
    pub fn is_closed(&self) -> bool {
        self.inner.kind == Kind::Closed
    }

    /// An output's signed URL is no longer valid: its `link_expired_at` had
    /// passed before the download started (nothing was sent), or the
    /// storage host refused it with 403 ([`status`](Error::status) says
    /// which). Ask the API for the job again to get fresh URLs.
    pub fn is_expired(&self) -> bool {
        self.inner.kind == Kind::Expired
    }

    /// A local file could not be created, written, synced or moved into
    /// place (a download's target folder is missing, the disk is full).
    pub fn is_io(&self) -> bool {
        self.inner.kind == Kind::Io
    }

    /// A tracking store failed: unreachable, refused, or holding a schema
    /// newer than this crate knows. Its message never carries a password or
    /// a connection string.
    pub fn is_store(&self) -> bool {
        matches!(self.inner.kind, Kind::Store | Kind::StoreSchema)
    }

    /// The retry loop stopped although the error was transient, because the
    /// shared retry budget ran out.
    pub fn is_budget_exhausted(&self) -> bool {
        matches!(self.inner.retries_exhausted, Some(Exhausted::Budget(_)))
    }

    /// Whether sending the same request again may succeed.
    ///
    /// Transient: transport errors (except a server certificate that failed
    /// verification), a body cut short, attempt timeouts, a
    /// garbled body, and the HTTP statuses 408, 429, 500, 502, 503 and 504.
    /// Everything else is not: other statuses, `code != 0`, invalid input, an
    /// oversized body, deadlines and stalls. This is the classification
    /// [`RetryPolicy`](crate::RetryPolicy) uses unless it is given another.
    pub fn is_transient(&self) -> bool {
        match self.inner.kind {
            Kind::Transport | Kind::Timeout | Kind::Decode => true,
            Kind::Http => matches!(
                self.inner.status.map(|s| s.as_u16()),
                Some(408 | 429 | 500 | 502 | 503 | 504)
            ),
            Kind::InvalidInput
            | Kind::Certificate
            | Kind::ProxyAuth
            | Kind::Api
            | Kind::BodyTooLarge
            | Kind::Deadline
            | Kind::Stall
            | Kind::Closed
            | Kind::Expired
            | Kind::Io => false,
            Kind::Store | Kind::StoreSchema => false,
        }
    }

    /// The HTTP status of a non-2xx answer.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The API's `code` when it was not 0.
    pub fn api_code(&self) -> Option<i64> {
        self.inner.api_code
    }

    /// How long the server asked to wait (`Retry-After`), when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The last job detail a wait saw before it ended with a deadline or a
    /// stall, if any poll succeeded.
    pub fn last_detail(&self) -> Option<&JobDetail> {
        self.inner.wait.as_ref()?.last_detail.as_ref()
    }

    /// The polls of a wait that ended with a deadline or a stall: when each
    /// happened (since the wait began) and what status it saw. Empty for
    /// other errors.
    pub fn history(&self) -> &[PollRecord] {
        self.inner.wait.as_ref().map_or(&[], |w| &w.history)
    }

    /// How long a wait that ended with a deadline or a stall had waited.
    pub fn waited(&self) -> Option<Duration> {
        self.inner.wait.as_ref().map(|w| w.waited)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return with_causes(f, self);
        }
        let inner = &*self.inner;
        match inner.retries_exhausted {
            Some(Exhausted::Attempts(n)) => write!(f, "gave up after {n} attempts: ")?,
            Some(Exhausted::Budget(n)) => write!(f, "retry budget exhausted after {n} attempts: ")?,
            Some(Exhausted::RetryAfterTooLong) => {
                if let Some(after) = inner.retry_after {
                    write!(
                        f,
                        "server asked to retry after {}, longer than allowed: ",
                        Rounded(after)
                    )?
                }
            }
            None => {}
        }
        match inner.kind {
            Kind::InvalidInput => f.write_str("invalid input")?,
            Kind::Transport | Kind::Certificate | Kind::ProxyAuth => {
                f.write_str("transport error")?
            }
            Kind::Timeout => {}
            Kind::Http => {
                let status = inner.status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                write!(f, "http status {}", status.as_u16())?;
                if let Some(reason) = status.canonical_reason() {
                    write!(f, " {}", reason.to_ascii_lowercase())?;
                }
            }
            Kind::Api => write!(f, "api error code {}", inner.api_code.unwrap_or_default())?,
            Kind::Decode => f.write_str("cannot decode the job detail")?,
            Kind::BodyTooLarge => {}
            // A deadline that ended no wait: a download's.
            Kind::Deadline if inner.wait.is_none() => f.write_str("deadline reached")?,
            Kind::Deadline | Kind::Stall => {
                let w = inner.wait.as_ref();
                let waited = w.map(|w| w.waited).unwrap_or_default();
                let polls = w.map(|w| w.polls).unwrap_or_default();
                let last = w
                    .and_then(|w| w.last_detail.as_ref())
                    .map(|d| d.status().as_str().to_owned())
                    .unwrap_or_else(|| "none".to_owned());
                if inner.kind == Kind::Deadline {
                    write!(
                        f,
                        "wait deadline reached after {} ({polls} polls, last status {last}",
                        Rounded(waited)
                    )?;
                    // The error of the last poll is the source; name its
                    // kind here so a one-line report says that answers
                    // failed, not only that time ran out.
                    match inner
                        .source
                        .as_deref()
                        .and_then(|s| s.downcast_ref::<Error>())
                    {
                        Some(last) => write!(f, ", last poll failed: {})", last.kind())?,
                        None => f.write_str(")")?,
                    }
                } else {
                    let stalled = w.and_then(|w| w.stalled_for).unwrap_or_default();
                    write!(
                        f,
                        "job stalled: status {last} unchanged for {} ({polls} polls over {})",
                        Rounded(stalled),
                        Rounded(waited)
                    )?;
                }
            }
            Kind::Closed => {}
            Kind::Expired => f.write_str("output url expired")?,
            Kind::Io => f.write_str("file error")?,
            Kind::Store | Kind::StoreSchema => f.write_str("store error")?,
        }
        let sep = if matches!(
            inner.kind,
            Kind::Timeout | Kind::BodyTooLarge | Kind::Closed
        ) {
            ""
        } else {
            ": "
        };
        if let Some(msg) = &inner.message {
            write!(f, "{sep}{msg}")?;
        }
        // The cause is not repeated here: `source()` gives it, and error
        // reporters (anyhow, eyre, tracing) print the chain themselves.
        Ok(())
    }
}

/// The alternate form: the line, then `: cause: cause…` for each source of
/// `err`, skipping one whose text the line already ends with (some errors
/// repeat their cause).
fn with_causes(f: &mut fmt::Formatter<'_>, err: &Error) -> fmt::Result {
    let mut last = err.to_string();
    f.write_str(&last)?;
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !last.ends_with(&text) {
            write!(f, ": {text}")?;
        }
        last = text;
        cause = c.source();
    }
    Ok(())
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &inner.kind);
        if let Some(m) = &inner.message {
            d.field("message", m);
        }
        if let Some(s) = inner.status {
            d.field("status", &s);
        }
        if let Some(c) = inner.api_code {
            d.field("api_code", &c);
        }
        if let Some(r) = inner.retry_after {
            d.field("retry_after", &r);
        }
        if let Some(e) = inner.retries_exhausted {
            d.field("retries_exhausted", &e);
        }
        if let Some(w) = &inner.wait {
            d.field("wait", w);
        }
        if let Some(s) = &inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const _: fn() = || {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
    };

    #[test]
    fn http_display_names_status_in_lowercase() {
        let err = Error::http(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(7)),
        );
        assert_eq!(err.to_string(), "http status 503 service unavailable");
        assert!(err.is_transient());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn classification_of_statuses() {
        for code in [408, 429, 500, 502, 503, 504] {
            let err = Error::http(StatusCode::from_u16(code).unwrap(), None);
            assert!(err.is_transient(), "{code} must be transient");
        }
        for code in [300, 301, 302, 400, 401, 403, 404, 409, 422, 501, 505] {
            let err = Error::http(StatusCode::from_u16(code).unwrap(), None);
            assert!(!err.is_transient(), "{code} must not be transient");
        }
        assert!(!Error::api(40001, "invalid token").is_transient());
        assert!(!Error::body_too_large(10).is_transient());
        assert!(Error::decode("x").is_transient());
        assert!(Error::timeout(Duration::from_secs(1)).is_transient());
    }

    #[test]
    fn exhausted_prefixes_the_message() {
        let mut err = Error::http(StatusCode::BAD_GATEWAY, None);
        err.set_exhausted(Exhausted::Budget(3));
        assert!(err.is_budget_exhausted());
        assert_eq!(
            err.to_string(),
            "retry budget exhausted after 3 attempts: http status 502 bad gateway"
        );
    }

    #[test]
    fn display_says_what_failed_and_source_says_why() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Error::transport(io);
        assert_eq!(err.to_string(), "transport error");
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "connection refused"
        );
        assert_eq!(err.kind(), ErrorKind::Transport);
        assert_eq!(err.kind().as_str(), "transport");
        assert_eq!(format!("{err:#}"), "transport error: connection refused");
    }

    #[test]
    fn the_alternate_form_adds_each_cause_once() {
        let inner = std::io::Error::other("reset by peer");
        let outer = std::io::Error::other(Wrapped(inner));
        let err = Error::transport(outer);
        // The io error's text is its payload's, whose source is the inner
        // one: said once each.
        assert_eq!(
            format!("{err:#}"),
            "transport error: cut short: reset by peer"
        );
        let mut err = Error::api(401, "bad key sk-1 given").with_source("bad key sk-1 given");
        err.redact("sk-1");
        assert_eq!(
            format!("{err:#}"),
            "api error code 401: bad key [redacted] given"
        );
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cut short")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn redaction_reaches_message_and_source() {
        let mut err = Error::api(401, "bad key sk-1 given").with_source("echo sk-1");
        err.redact("sk-1");
        assert_eq!(
            err.to_string(),
            "api error code 401: bad key [redacted] given"
        );
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "echo [redacted]"
        );
    }
}
