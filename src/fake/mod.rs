//! A fake GoEnhance server on loopback, with scripted job timelines, the
//! jobs' output files, and faults.
//!
//! ```
//! use std::time::Duration;
//! use goenhance_jobs::fake::{FakeFile, FakeServer, Timeline};
//! use http_body_util::{BodyExt, Empty};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = FakeServer::builder()
//!     .job(
//!         "job-1",
//!         Timeline::new("mx-v2v")
//!             .pending(Duration::from_secs(2))
//!             .processing(Duration::from_secs(3))
//!             .succeed_with_file("video", "/out/job-1_0.mp4"),
//!     )
//!     .file("/out/job-1_0.mp4", FakeFile::new(1 << 20).content_type("video/mp4"))
//!     .start()
//!     .await?;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
//! let req = http::Request::get(format!("{}/api/v1/jobs/detail?img_uuid=job-1", server.base_url()))
//!     .header("authorization", "Bearer fake-key")
//!     .body(Empty::new())?;
//! let res = client.request(req).await?;
//! assert_eq!(res.status(), 200);
//! let body = res.into_body().collect().await?.to_bytes();
//! let json: serde_json::Value = serde_json::from_slice(&body)?;
//! assert_eq!(json["data"]["status"], "pending");
//! assert_eq!(server.hits("job-1"), 1);
//!
//! let file = client.get(server.file_url("/out/job-1_0.mp4").parse()?).await?;
//! assert_eq!(file.headers()["content-length"], "1048576");
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # What it serves
//!
//! **The job endpoint**, `GET {prefix}/api/v1/jobs/detail?img_uuid=<id>`
//! ([`FakeServerBuilder::job`], [`FakeServer::add_job`],
//! [`FakeServerBuilder::path_prefix`]):
//!
//! - without `Authorization: Bearer <key>`: HTTP 401,
//!   `{"code":401,"msg":"unauthorized","data":null}` (checked first, on
//!   every path that is not a file or a redirect);
//! - another method: HTTP 405;
//! - a missing or empty `img_uuid`: HTTP 400, `{"code":400,...}`;
//! - an unknown id: HTTP 200, `{"code":40004,"msg":"job not found","data":null}`;
//! - a known id: HTTP 200 with the job's current status from its
//!   [`Timeline`], unless the [`FaultPlan`] picks a [`Fault`] for the
//!   request ([`FakeServerBuilder::faults`], [`FakeServerBuilder::job_faults`],
//!   [`FakeServer::set_faults`], [`FakeServer::set_job_faults`]). A
//!   succeeded job's outputs are URLs given to [`Timeline::succeed`] and
//!   [`Timeline::output`], or paths of this server given to
//!   [`Timeline::succeed_with_file`], which become
//!   `http://<its address><path>` when answered.
//!
//! **Files**, at the exact path they are given, whatever the prefix and
//! without a key, as a storage host serves signed URLs
//! ([`FakeServerBuilder::file`], [`FakeServer::add_file`]; the full URL from
//! [`FakeServer::file_url`]): a [`FakeFile`]'s deterministic bytes to `GET`
//! (headers only to `HEAD`, 405 to other methods), with `Content-Length`,
//! `Content-Type`, `Accept-Ranges: bytes`, a strong `ETag` and a
//! `Last-Modified` (each can be left out); `Range: bytes=N-` or `N-M` gets
//! `206` with `Content-Range` unless an `If-Range` does not match (then the
//! whole file, `200`), a range past the end `416`. [`FileFaults`] cut or
//! stall a body, answer `403` as an expired signed URL does, or answer
//! any status. [`FakeServer::file_stats`] tells what was asked and sent.
//!
//! **Redirects** ([`FakeServerBuilder::redirect`],
//! [`FakeServer::add_redirect`]): `302 Found` with the `Location` given.
//!
//! **Any other path**: HTTP 404 (with a key; 401 without).
//!
//! It serves HTTP/1.1 with keep-alive and HTTP/2 without TLS (h2c), and
//! counts what it sees so tests can check how a client behaved: hits per
//! job ([`FakeServer::hits`]), requests ([`FakeServer::total_requests`]),
//! connections, requests in flight and their peak, polls of one job that
//! overlapped ([`FakeServer::overlapping_polls`]), polls after a terminal
//! answer ([`FakeServer::polls_after_terminal`]), what status a job showed
//! when ([`FakeServer::status_at`]), and, when
//! [`FakeServerBuilder::log_requests`] asks for it, every answer that
//! carried a job's status, with its time ([`FakeServer::requests`]).

mod body;
mod fault;
mod files;
mod handler;
mod log;
mod timeline;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::Either;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use fault::{Fault, FaultPlan, Garbage, RetryAfter};
pub use files::{FakeFile, FileFault, FileFaults, FileStats};
pub use log::LoggedRequest;
pub use timeline::Timeline;

use handler::Shared;

/// The key the server expects unless [`FakeServerBuilder::api_key`] says
/// otherwise.
pub const DEFAULT_API_KEY: &str = "fake-key";

/// A running fake GoEnhance server; stops when dropped or on
/// [`FakeServer::shutdown`].
///
/// Made with [`FakeServer::builder`]. All methods take `&self`: jobs and
/// fault plans can change while the server runs.
pub struct FakeServer {
    addr: SocketAddr,
    base_url: String,
    shared: Arc<Shared>,
    files: Arc<files::Files>,
    stop: Option<watch::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Configures and starts a [`FakeServer`].
pub struct FakeServerBuilder {
    api_key: String,
    prefix: String,
    addr: SocketAddr,
    jobs: Vec<(String, Timeline)>,
    job_faults: HashMap<String, FaultPlan>,
    faults: FaultPlan,
    files: files::Files,
    log_requests: bool,
}

impl FakeServer {
    /// A builder with key [`DEFAULT_API_KEY`], no prefix, no jobs and no
    /// faults, listening on `127.0.0.1` on a free port.
    pub fn builder() -> FakeServerBuilder {
        FakeServerBuilder {
            api_key: DEFAULT_API_KEY.to_owned(),
            prefix: String::new(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            jobs: Vec::new(),
            job_faults: HashMap::new(),
            faults: FaultPlan::none(),
            files: files::Files::default(),
            log_requests: false,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` followed by the path prefix, if any: the
    /// base URL a client should be given.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Adds a job, or replaces the job with this id (its counters start
    /// again from zero). Its timeline starts now.
    pub fn add_job(&self, id: impl Into<String>, timeline: Timeline) {
        self.shared.add_job(id.into(), timeline);
    }

    /// Replaces the fault plan for all requests (except those for jobs
    /// with their own plan).
    pub fn set_faults(&self, plan: FaultPlan) {
        self.shared.set_faults(plan);
    }

    /// Sets the fault plan of one job id, used instead of the global plan
    /// for its requests. The id need not be a known job.
    pub fn set_job_faults(&self, id: impl Into<String>, plan: FaultPlan) {
        self.shared.set_job_faults(id.into(), plan);
    }

    /// Requests for this job that reached its handler, faulted ones
    /// included; 0 for an unknown id.
    pub fn hits(&self, id: &str) -> u64 {
        self.shared.with_job(id, |job| job.hits).unwrap_or(0)
    }

    /// All requests received, whatever their path or answer.
    pub fn total_requests(&self) -> u64 {
        self.shared.total_requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests being handled now (a held or late answer included).
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The highest number of requests handled at once so far.
    pub fn max_in_flight(&self) -> u64 {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Polls that arrived while another poll of the same id was still
    /// being answered: a sign that two waiters (or two workers of a fleet)
    /// followed one job at once.
    pub fn overlapping_polls(&self) -> u64 {
        self.shared.overlapping_polls.load(Ordering::SeqCst)
    }

    /// The raw status the job's timeline shows at `at`, given the good
    /// answers served so far; `None` for an unknown id. Instants before
    /// the job was added give its first status.
    pub fn status_at(&self, id: &str, at: Instant) -> Option<String> {
        self.shared.with_job(id, |job| job.status_at(at))
    }

    /// The terminal status of the job's timeline; `None` for an unknown id
    /// or a timeline without an end.
    pub fn final_status(&self, id: &str) -> Option<String> {
        self.shared
            .with_job(id, |job| job.timeline().final_status().map(str::to_owned))
            .flatten()
    }

    /// Requests for the job that arrived after a terminal answer had been
    /// served without a fault: polls a client should not have made.
    pub fn polls_after_terminal(&self, id: &str) -> u64 {
        self.shared
            .with_job(id, |job| job.polls_after_terminal)
            .unwrap_or(0)
    }

    /// Every answer that carried a job's status so far, in order, when
    /// [`FakeServerBuilder::log_requests`] turned the log on; else empty.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.log.snapshot()
    }

    /// Stops accepting, closes every open connection (held requests
    /// included) and waits for the server's tasks to end.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeServer")
            .field("addr", &self.addr)
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("jobs", &self.shared.job_count())
            .field("connections", &self.connections())
            .field("total_requests", &self.total_requests())
            .finish()
    }
}

impl FakeServerBuilder {
    /// The key clients must send as `Authorization: Bearer <key>`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = key.into();
        self
    }

    /// Serves the API under a path prefix, as behind a proxy:
    /// `/goenhance` serves `/goenhance/api/v1/jobs/detail`, and the plain
    /// path is then a 404. Slashes around the prefix do not matter.
    pub fn path_prefix(mut self, prefix: impl AsRef<str>) -> Self {
        let trimmed = prefix.as_ref().trim_matches('/');
        self.prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        self
    }

    /// Listens on this address instead of `127.0.0.1:0`.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Adds a job; its timeline starts when the server starts.
    pub fn job(mut self, id: impl Into<String>, timeline: Timeline) -> Self {
        self.jobs.push((id.into(), timeline));
        self
    }

    /// The fault plan for all requests that reach the job handler (known
    /// or unknown ids), except those of jobs with their own plan.
    pub fn faults(mut self, plan: FaultPlan) -> Self {
        self.faults = plan;
        self
    }

    /// The fault plan of one job id, used instead of the global plan.
    pub fn job_faults(mut self, id: impl Into<String>, plan: FaultPlan) -> Self {
        self.job_faults.insert(id.into(), plan);
        self
    }

    /// Keeps a log of every answer that carried a job's status: when, which
    /// job, what status ([`FakeServer::requests`]). Off by default: it grows
    /// with every poll.
    ///
    /// ```
    /// use std::time::Duration;
    /// use goenhance_jobs::fake::{FakeServer, Timeline, DEFAULT_API_KEY};
    /// use goenhance_jobs::{Client, PollPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeServer::builder()
    ///     .job("job-1", Timeline::new("mx-v2v").pending_for_answers(2).fail())
    ///     .log_requests()
    ///     .start()
    ///     .await?;
    /// let client = Client::builder()
    ///     .base_url(server.base_url())
    ///     .api_key(DEFAULT_API_KEY)
    ///     .poll_policy(PollPolicy::fixed(Duration::from_millis(10)))
    ///     .build()?;
    /// client.wait("job-1").await?;
    /// let seen: Vec<(String, bool)> = server
    ///     .requests()
    ///     .into_iter()
    ///     .map(|r| (r.status, r.terminal))
    ///     .collect();
    /// assert_eq!(
    ///     seen,
    ///     [("pending".into(), false), ("pending".into(), false), ("failed".into(), true)]
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_requests(mut self) -> Self {
        self.log_requests = true;
        self
    }

    /// Binds the listener and starts serving on a background task.
    ///
    /// # Errors
    ///
    /// Returns the error of binding the address.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    pub async fn start(self) -> io::Result<FakeServer> {
        let listener = TcpListener::bind(self.addr).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}{}", self.prefix);
        let shared = Arc::new(Shared::new(
            self.api_key,
            self.prefix,
            format!("http://{addr}"),
            log::RequestLog::new(self.log_requests),
            self.jobs,
            self.job_faults,
            self.faults,
        ));
        let (stop, stopped) = watch::channel(());
        let files = Arc::new(self.files);
        let task = tokio::spawn(serve(
            listener,
            Arc::clone(&shared),
            Arc::clone(&files),
            stopped,
        ));
        Ok(FakeServer {
            addr,
            base_url,
            shared,
            files,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

impl fmt::Debug for FakeServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeServerBuilder")
            .field("api_key", &"[redacted]")
            .field("prefix", &self.prefix)
            .field("addr", &self.addr)
            .field("jobs", &self.jobs)
            .field("job_faults", &self.job_faults)
            .field("faults", &self.faults)
            .finish()
    }
}

/// Spawns tasks (HTTP/2 streams) that end when the server stops.
#[derive(Clone, Debug)]
struct StopExecutor {
    stopped: watch::Receiver<()>,
}

impl<F> hyper::rt::Executor<F> for StopExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut stopped = self.stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = stopped.changed() => {}
            }
        });
    }
}

/// The accept loop: one task a connection, all ended when `stopped` fires.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    files: Arc<files::Files>,
    mut stopped: watch::Receiver<()>,
) {
    let builder = auto::Builder::new(StopExecutor {
        stopped: stopped.clone(),
    });
    let builder = Arc::new(builder);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "fake server accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = Arc::clone(&shared);
                let files = Arc::clone(&files);
                let builder = Arc::clone(&builder);
                conns.spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let shared = Arc::clone(&shared);
                        let files = Arc::clone(&files);
                        async move {
                            if files.serves(req.uri().path()) {
                                return Ok(files.handle(req).map(Either::Right));
                            }
                            shared.handle(req).await.map(|res| res.map(Either::Left))
                        }
                    });
                    if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                        tracing::trace!(error = %e, "fake server connection ended");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}
