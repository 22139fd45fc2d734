//! Per-download settings: progress reports, the idle timeout, the deadline
//! and the size cap.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How far a download is: bytes in the file so far and the size the server
/// declared, when it did.
///
/// `bytes` only goes back (to 0) when the download has to start over, after
/// a server that cannot resume answered a cut connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Progress {
    /// Bytes written to the temporary file so far.
    pub bytes: u64,
    /// The file's size, from `Content-Length` or `Content-Range`.
    pub total: Option<u64>,
}

type Callback = Arc<dyn Fn(Progress) + Send + Sync>;

/// How long a download may take in all, retries included, unless
/// [`DownloadOptions::deadline`] says otherwise: 30 minutes.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// The largest output a download writes unless
/// [`DownloadOptions::max_bytes`] says otherwise: 8 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;

/// Settings of one download, for
/// [`Client::download_with`](crate::Client::download_with).
///
/// Progress can go to a callback (called on the downloading task after each
/// chunk is written: keep it quick) or to a [`tokio::sync::watch`] channel,
/// which keeps only the latest value: what a progress bar wants.
///
/// ```
/// use std::time::Duration;
/// use goenhance_jobs::download::{DownloadOptions, Progress};
///
/// let (tx, rx) = tokio::sync::watch::channel(Progress::default());
/// let options = DownloadOptions::new()
///     .progress_watch(tx)
///     .idle_timeout(Duration::from_secs(30))
///     .deadline(Duration::from_secs(3600))
///     .max_bytes(20 << 30);
/// assert_eq!(rx.borrow().bytes, 0);
/// # drop(options);
/// ```
#[derive(Clone, Default)]
pub struct DownloadOptions {
    pub(super) progress: Option<Callback>,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) deadline: Option<Duration>,
    pub(super) max_bytes: Option<u64>,
}

impl DownloadOptions {
    /// No progress reports; the client's attempt timeout as idle timeout;
    /// [`DEFAULT_DEADLINE`] and [`DEFAULT_MAX_BYTES`].
    pub fn new() -> Self {
        DownloadOptions::default()
    }

    /// Calls `report` after each chunk written (and with 0 bytes when a
    /// response starts, so the total is known early).
    pub fn on_progress<F>(mut self, report: F) -> Self
    where
        F: Fn(Progress) + Send + Sync + 'static,
    {
        self.progress = Some(Arc::new(report));
        self
    }

    /// Sends each progress report to a watch channel (replacing
    /// [`on_progress`](Self::on_progress)). Receivers see the latest value;
    /// a download never waits for them.
    pub fn progress_watch(self, sender: watch::Sender<Progress>) -> Self {
        self.on_progress(move |p| {
            sender.send_replace(p);
        })
    }

    /// The longest wait for the response head or for the next chunk of the
    /// body before the attempt counts as failed and the download resumes
    /// (default: the client's attempt timeout, 10 s unless set). The whole
    /// download is bounded by the [`deadline`](Self::deadline) instead.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The longest a download may take in all, from its first request to
    /// the file in place, retries and their waits included (default
    /// [`DEFAULT_DEADLINE`], 30 min; `Duration::MAX` for none). A host that
    /// drips bytes just fast enough to beat the idle timeout ends here, with
    /// an [`Error::is_deadline`](crate::Error::is_deadline) error. Time spent
    /// waiting for one of the client's download slots does not count.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The largest output written (default [`DEFAULT_MAX_BYTES`], 8 GiB;
    /// `u64::MAX` for none). A `Content-Length` or `Content-Range` total
    /// above it ends the download before a byte is written; a body with no
    /// declared size ends it as soon as it passes the cap. Either way the
    /// error is [`Error::is_body_too_large`](crate::Error::is_body_too_large),
    /// not retried, and nothing is left on disk.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    pub(super) fn deadline_or_default(&self) -> Duration {
        self.deadline.unwrap_or(DEFAULT_DEADLINE)
    }

    pub(super) fn max_bytes_or_default(&self) -> u64 {
        self.max_bytes.unwrap_or(DEFAULT_MAX_BYTES)
    }

    pub(super) fn report(&self, progress: Progress) {
        if let Some(report) = &self.progress {
            report(progress);
        }
    }
}

impl fmt::Debug for DownloadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadOptions")
            .field("progress", &self.progress.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .field("deadline", &self.deadline_or_default())
            .field("max_bytes", &self.max_bytes_or_default())
            .finish()
    }
}
