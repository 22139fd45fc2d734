//! [`Client`]: the ready-made stack, and [`ClientBuilder`].
//!
//! ```text
//! get ─────────────────────────────────────┐
//! wait / wait_all / watch_all → hub ───────┤  poll state machine per job
//! watch → poll state machine, caller's task┤
//!                                          └→ RetryLayer → TimeoutLayer → JobStatusService
//!                                             → AuthLayer → transport
//! ```
//!
//! The crate root's docs draw it in full.

mod builder;
mod download;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures_core::Stream;
use tower::util::BoxCloneSyncService;

pub use self::builder::ClientBuilder;
use crate::download::{Download, DownloadOptions, Downloader};
use crate::error::Error;
use crate::hub::Hub;
use crate::model::{JobDetail, JobOutput};
use crate::poll::{self, PollPolicy};
use crate::query::JobQuery;
use crate::service::BaseUrl;
use crate::stack::{GetFn, Stack};

/// The environment variable holding the API key.
pub const ENV_API_KEY: &str = "GOENHANCE_API_KEY";
/// The environment variable holding the base URL (optional).
pub const ENV_BASE_URL: &str = "GOENHANCE_BASE_URL";

/// A handle to the GoEnhance job API: one status fetch, a wait, a watch, or
/// a wait on many jobs at once.
///
/// Cheap to clone (an `Arc`); clones share the connection pool, the retry
/// budget, what the adaptive schedule learned, and the scheduler that runs
/// all waits. `Send + Sync`, and its futures and streams are `Send`, so it
/// fits in an axum state or a `tokio::spawn`.
///
/// ```no_run
/// use goenhance_jobs::{Client, JobStatus};
///
/// # #[tokio::main] async fn main() -> Result<(), goenhance_jobs::Error> {
/// let client = Client::from_env()?; // GOENHANCE_API_KEY, GOENHANCE_BASE_URL
/// let job = client.wait("5334c57d-8443-4b79-ba24-8539c2163c74").await?;
/// match job.status() {
///     JobStatus::Succeeded => {
///         for out in job.outputs() {
///             println!("{} {}", out.kind(), out.url());
///         }
///     }
///     other => eprintln!("job ended {other}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    stack: Stack,
    get: GetFn,
    poll: PollPolicy,
    base: BaseUrl,
    hub: Hub,
    downloader: Downloader,
}

impl Client {
    /// Starts a client with settings of your own.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client from the environment: `GOENHANCE_API_KEY` (required) and
    /// `GOENHANCE_BASE_URL` (default `https://api.goenhance.ai`), with the
    /// default settings otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when `GOENHANCE_API_KEY` is missing or
    /// empty (the message names the variable) or a value is refused.
    pub fn from_env() -> Result<Client, Error> {
        ClientBuilder::from_env_with(|name| std::env::var(name).ok())?.build()
    }

    /// Fetches a job's status once (retries and the attempt timeout apply).
    ///
    /// `query` is a [`JobQuery`] (or a reference to one) or an id as text:
    /// `client.get("5334c57d-…")` and `client.get(query)` both work, as for
    /// [`wait`](Self::wait), [`watch`](Self::watch) and the queries of
    /// [`wait_all`](Self::wait_all).
    ///
    /// # Errors
    ///
    /// An invalid id ([`Error::is_invalid_input`], nothing is sent), or the
    /// last error after retries.
    pub async fn get<Q>(&self, query: Q) -> Result<JobDetail, Error>
    where
        Q: TryInto<JobQuery>,
        Q::Error: Into<Error>,
    {
        let query = query.try_into().map_err(Into::into)?;
        (self.inner.get)(query).await
    }

    /// Waits until the job is finished: `Ok` for a job that succeeded and
    /// for one that failed (check [`JobDetail::status`]).
    ///
    /// Concurrent waits on the same job share one poll loop (ids that
    /// differ only in the case of a UUID are the same job). Each wait has
    /// its own deadline, counted from when it was made, and its own report
    /// when that deadline comes. Dropping the future stops the polling
    /// (once no other waiter wants the job). The wait is served on the
    /// runtime it is polled on.
    ///
    /// # Errors
    ///
    /// An invalid id; the deadline ([`Error::is_deadline`], with the last
    /// detail and the history); a stall ([`Error::is_stall`]) if enabled;
    /// an error that is not transient (a refused key, `code != 0`).
    pub async fn wait<Q>(&self, query: Q) -> Result<JobDetail, Error>
    where
        Q: TryInto<JobQuery>,
        Q::Error: Into<Error>,
    {
        let query = query.try_into().map_err(Into::into)?;
        self.inner.hub.wait(query).await
    }

    /// Follows a job: yields each distinct status once, ending after the
    /// terminal one (or after the error that ended the wait). Dropping the
    /// stream stops the polling.
    pub fn watch<Q>(
        &self,
        query: Q,
    ) -> impl Stream<Item = Result<JobDetail, Error>> + Send + 'static
    where
        Q: TryInto<JobQuery>,
        Q::Error: Into<Error>,
    {
        use futures_util::StreamExt;
        match query.try_into().map_err(Into::into) {
            Ok(query) => {
                poll::watch(self.inner.stack.clone(), query, self.inner.poll.clone()).left_stream()
            }
            Err(e) => futures_util::stream::once(std::future::ready(Err(e))).right_stream(),
        }
    }

    /// Waits on many jobs at once, through one scheduler: yields one
    /// `(query, result)` per query in completion order. Duplicate ids are
    /// polled once and answered for each.
    ///
    /// The queries are read lazily, a chunk of at most 4096 at a time as
    /// the scheduler takes them in, while the stream is polled (the first
    /// chunk at once): an iterator that is long, slow or endless is fine,
    /// and its `size_hint` is not relied on. Each query's deadline counts
    /// from when the scheduler took it in. Dropping the stream cancels what
    /// remains.
    pub fn wait_all<I>(
        &self,
        queries: I,
    ) -> impl Stream<Item = (JobQuery, Result<JobDetail, Error>)> + Send
    where
        I: IntoIterator<Item = JobQuery>,
        I::IntoIter: Send,
    {
        self.inner.hub.wait_all(queries, false)
    }

    /// Like [`wait_all`](Self::wait_all), and also yields each job's status
    /// changes on the way: each distinct status once, as
    /// `(query, Ok(detail))` with a status that is not terminal. A job's
    /// last item is its end: a terminal detail or an error. The stream ends
    /// when every job has ended. One scheduler polls them all, as for
    /// `wait_all`; this is what a progress display wants.
    ///
    /// A job that another wait already follows is joined where it stands:
    /// its first item is the job's next answer, whether or not its status
    /// changed with it, so the first thing heard is the job's current
    /// status as the server gives it (never a detail from before the
    /// join); after that, each change.
    pub fn watch_all<I>(
        &self,
        queries: I,
    ) -> impl Stream<Item = (JobQuery, Result<JobDetail, Error>)> + Send
    where
        I: IntoIterator<Item = JobQuery>,
        I::IntoIter: Send,
    {
        self.inner.hub.wait_all(queries, true)
    }

    /// The scheduler of waits, for durable tracking.
    pub(crate) fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The base URL.
    pub fn base_url(&self) -> &BaseUrl {
        &self.inner.base
    }

    /// The polling policy of waits.
    pub fn poll_policy(&self) -> &PollPolicy {
        &self.inner.poll
    }

    /// The query stack (retry, timeout, service, auth, transport) as a tower
    /// service, to compose into a stack of your own.
    pub fn service(&self) -> BoxCloneSyncService<JobQuery, JobDetail, Error> {
        self.inner.stack.clone()
    }

    /// Downloads an output to `to`: streamed to a temporary file beside it,
    /// resumed after a cut where the server allows, and renamed into place
    /// when complete. See [`download`](crate::download) for the details.
    ///
    /// # Errors
    ///
    /// - [`Error::is_expired`]: the URL's `link_expired_at` has passed
    ///   (nothing is sent), or the storage host answered 403;
    /// - [`Error::is_invalid_input`]: the URL is not `https` (or `http` on
    ///   loopback), or `to` has no file name;
    /// - [`Error::is_io`]: the temporary file could not be created, written
    ///   or moved into place;
    /// - the last error after retries: transport, timeout, HTTP status, or
    ///   a refused redirect or bad `Location` ([`Error::is_http`] with the
    ///   3xx status);
    /// - [`Error::is_body_too_large`]: the output is larger than
    ///   [`DownloadOptions::max_bytes`] (8 GiB unless set);
    /// - [`Error::is_deadline`]: the download took longer than
    ///   [`DownloadOptions::deadline`] (30 min unless set).
    ///
    /// Nothing is left at `to` or beside it after an error.
    pub async fn download(
        &self,
        output: &JobOutput,
        to: impl AsRef<Path>,
    ) -> Result<Download, Error> {
        self.download_with(output, to, DownloadOptions::default())
            .await
    }

    /// [`download`](Self::download) with progress reports, or another idle
    /// timeout, deadline or size cap.
    ///
    /// # Errors
    ///
    /// As [`download`](Self::download).
    pub async fn download_with(
        &self,
        output: &JobOutput,
        to: impl AsRef<Path>,
        options: DownloadOptions,
    ) -> Result<Download, Error> {
        let to = to.as_ref().to_path_buf();
        crate::download::run(&self.inner.downloader, output, to, &options).await
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base)
            .field("poll", &self.inner.poll)
            .field("api_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}
