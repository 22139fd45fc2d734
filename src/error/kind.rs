//! [`ErrorKind`]: what kind of failure an [`Error`](super::Error) is.

use std::fmt;

/// What kind of failure an [`Error`](super::Error) is, from
/// [`Error::kind`](super::Error::kind).
///
/// One value per `is_*` classification, so a program can `match` on it (a
/// JSON error field, a metric label) instead of chaining `is_*` checks that
/// fall behind when a kind is added: the enum is `#[non_exhaustive]`, so a
/// new kind shows up as a wildcard arm the compiler asks for.
///
/// ```
/// use goenhance_jobs::{ErrorKind, JobQuery};
///
/// let err = JobQuery::new("a b").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert_eq!(err.kind().as_str(), "invalid_input");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bad job id, base URL, key or setting; nothing was sent.
    InvalidInput,
    /// The transport failed: connect, I/O, a reset, a body cut short.
    Transport,
    /// The server's TLS certificate failed verification: a transport error
    /// ([`is_transport`](super::Error::is_transport)) that is not transient.
    Certificate,
    /// The proxy wants credentials, or refused the ones given: it answered
    /// the `CONNECT` with `407 Proxy Authentication Required`. A transport
    /// error that is not transient: sending again cannot help.
    ProxyAuth,
    /// One attempt took longer than its timeout.
    Timeout,
    /// The server answered with a status other than 2xx.
    Http,
    /// The envelope had `code != 0`.
    Api,
    /// The body could not be decoded.
    Decode,
    /// The body was larger than the configured cap.
    BodyTooLarge,
    /// A wait reached its deadline.
    Deadline,
    /// A job's status did not change for the configured time.
    Stall,
    /// The scheduler behind `Client::wait` stopped.
    Closed,
    /// An output's signed URL is no longer valid.
    Expired,
    /// A local file could not be created, written or moved into place.
    Io,
    /// A tracking store failed; it may come back.
    Store,
    /// A tracking store holds a schema newer than this crate knows.
    StoreSchema,
    /// The job itself failed: [`JobDetail::into_result`](crate::JobDetail::into_result)
    /// turned its answer into this error.
    JobFailed,
    /// A failure of code outside this crate that fits no other kind: a
    /// middleware of the caller's, say, made with
    /// [`Error::custom`](super::Error::custom).
    Other,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub(crate) const ALL: [ErrorKind; 18] = [
        ErrorKind::InvalidInput,
        ErrorKind::Transport,
        ErrorKind::Certificate,
        ErrorKind::ProxyAuth,
        ErrorKind::Timeout,
        ErrorKind::Http,
        ErrorKind::Api,
        ErrorKind::Decode,
        ErrorKind::BodyTooLarge,
        ErrorKind::Deadline,
        ErrorKind::Stall,
        ErrorKind::Closed,
        ErrorKind::Expired,
        ErrorKind::Io,
        ErrorKind::Store,
        ErrorKind::StoreSchema,
        ErrorKind::JobFailed,
        ErrorKind::Other,
    ];

    /// A stable snake-case name: `invalid_input`, `transport`,
    /// `certificate`, `proxy_auth`, `timeout`,
    /// `http`, `api`, `decode`, `body_too_large`, `deadline`, `stall`,
    /// `closed`, `expired`, `io`, `store`, `store_schema`, `job_failed`,
    /// `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Transport => "transport",
            ErrorKind::Certificate => "certificate",
            ErrorKind::ProxyAuth => "proxy_auth",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http => "http",
            ErrorKind::Api => "api",
            ErrorKind::Decode => "decode",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::Deadline => "deadline",
            ErrorKind::Stall => "stall",
            ErrorKind::Closed => "closed",
            ErrorKind::Expired => "expired",
            ErrorKind::Io => "io",
            ErrorKind::Store => "store",
            ErrorKind::StoreSchema => "store_schema",
            ErrorKind::JobFailed => "job_failed",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
