//! How errors are made: [`Error::custom`] for code outside the crate, and
//! the crate's own constructors, one per kind of failure.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::*;

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

    /// An error of `kind` caused by `source`, for code outside this crate
    /// that must answer with this crate's error: a [`TrackStore`] of your
    /// own, or a `Service<JobQuery>` middleware in the stack.
    ///
    /// The kinds such code meets are [`ErrorKind::Store`],
    /// [`ErrorKind::Transport`] (transient: a
    /// [`RetryPolicy`](crate::RetryPolicy) sends the request again),
    /// [`ErrorKind::InvalidInput`] and [`ErrorKind::Other`]. The other kinds
    /// carry what only this crate knows (an HTTP status, a wait's history),
    /// so any of them is made as [`ErrorKind::Other`]. The `Display` of the
    /// error is its kind's words and `source`'s text; `source` is also its
    /// [`source`](std::error::Error::source).
    ///
    /// [`TrackStore`]: crate::track::TrackStore
    ///
    /// ```
    /// use goenhance_jobs::{Error, ErrorKind};
    ///
    /// let err = Error::custom(ErrorKind::Store, "the ledger is read-only");
    /// assert!(err.is_store());
    /// assert_eq!(err.kind(), ErrorKind::Store);
    /// assert_eq!(err.to_string(), "store error: the ledger is read-only");
    ///
    /// let err = Error::custom(ErrorKind::Other, "quota of the day spent");
    /// assert_eq!(err.to_string(), "quota of the day spent");
    /// assert!(!err.is_transient());
    /// assert!(Error::custom(ErrorKind::Transport, "link down").is_transient());
    /// // A kind that only the crate makes:
    /// assert_eq!(Error::custom(ErrorKind::Deadline, "late").kind(), ErrorKind::Other);
    /// ```
    pub fn custom(kind: ErrorKind, source: impl Into<BoxError>) -> Error {
        let kind = match kind {
            Kind::Store | Kind::Transport | Kind::InvalidInput => kind,
            _ => Kind::Other,
        };
        let source = source.into();
        let message = source.to_string();
        let err = Error::new(kind).with_source(source);
        if message.is_empty() {
            err
        } else {
            err.with_message(message)
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
        if tls::tls_unavailable(&*source) {
            return Error::invalid_input(tls::MESSAGE);
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
}
