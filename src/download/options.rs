//! Per-download settings: progress reports and the idle timeout.

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
///     .idle_timeout(Duration::from_secs(30));
/// assert_eq!(rx.borrow().bytes, 0);
/// # drop(options);
/// ```
#[derive(Clone, Default)]
pub struct DownloadOptions {
    pub(super) progress: Option<Callback>,
    pub(super) idle_timeout: Option<Duration>,
}

impl DownloadOptions {
    /// No progress reports; the client's attempt timeout as idle timeout.
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
    /// download has no time limit: a large file on a slow link takes what
    /// it takes, as long as bytes keep coming.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
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
            .finish()
    }
}
