//! Durable tracking: waits that survive restarts and crashes, and a fleet
//! of workers sharing the work through one store.
//!
//! [`Tracker::track`] stores a job before it returns; [`Tracker::run`]
//! claims stored jobs, waits on them through the client's scheduler, stores
//! each outcome, then calls the handler, and records the delivery only
//! after the handler's `Ok`. A crash anywhere means the job is waited on or
//! delivered again after a restart, never forgotten.
//!
//! ```
//! use std::time::Duration;
//! use goenhance_jobs::track::{MemoryStore, Tracker};
//! use goenhance_jobs::transport::mock::MockTransport;
//! use goenhance_jobs::{Client, JobQuery, JobStatus};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), goenhance_jobs::Error> {
//! let mock = MockTransport::new();
//! mock.timeline("job-1", &["pending", "success"]);
//! let client = Client::builder().api_key("k").transport(mock).build()?;
//!
//! let store = MemoryStore::new(); // SqliteStore::open(path) with feature `sqlite`
//! let tracker = Tracker::builder(client, store.clone()).build();
//! tracker.track(JobQuery::new("job-1")?, serde_json::json!({"user": 7})).await?;
//! assert_eq!(tracker.pending().await?, 1);
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let run = tracker.run(move |done| {
//!     let tx = tx.clone();
//!     async move {
//!         let status = done.detail().map(|d| d.status().clone()).ok();
//!         tx.send((done.query().img_uuid().to_owned(), done.meta()["user"].clone(), status))?;
//!         Ok(())
//!     }
//! });
//! tokio::select! {
//!     _ = run => unreachable!("run only ends on an error it cannot outlive"),
//!     got = rx.recv() => assert_eq!(
//!         got.unwrap(),
//!         ("job-1".to_owned(), serde_json::json!(7), Some(JobStatus::Succeeded))
//!     ),
//! }
//! // The acknowledgement is written right after the handler's Ok.
//! tokio::time::sleep(Duration::from_millis(10)).await;
//! # let _ = &store;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - A job is in the store before `track` returns; tracking an id again
//!   keeps its first meta and deadline.
//! - A job's deadline is a wall-clock instant set at `track` (the client's
//!   wait timeout from then): time a process was down counts.
//! - The outcome is stored before the handler runs; a handler `Err` (or
//!   panic) is retried with backoff; [`Completion::deliveries`] counts
//!   deliveries across restarts and workers.
//! - A wait that ends in an error (deadline, stall, a refused key) is
//!   delivered too, with [`Completion::detail`] giving the error.
//! - Handlers of different jobs run concurrently, at most
//!   [`TrackerBuilder::max_handlers`] at once.
//! - A store that is down only delays the run; `run` returns only for an
//!   error it cannot outlive (a schema newer than this crate).
//! - What the adaptive schedule learned per job type is saved in the
//!   store and taken in again when a run starts; the last status of each
//!   waiting job, when it changed and the polls until then are saved with
//!   the lease renewals, so a wait taken up after a restart counts stalls
//!   from that change, its schedule from that poll (the adaptive one from
//!   the `track`), and never polls a job whose end was stored.
//!
//! Wall-clock instants are read as the system clock when the process built
//! its first tracker plus tokio's clock since, so that tests on a paused clock see
//! deadlines move with it.

mod memory;
mod outcome;
mod store;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use self::postgres::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use self::sqlite::SqliteStore;
pub use self::store::{
    ClaimedJob, Finished, Learned, NewJob, StatusChange, StoreFuture, TrackStore,
};
use crate::client::Client;
use crate::error::{BoxError, Error, Kind};
use crate::model::{JobDetail, JobStatus};
use crate::query::JobQuery;

/// The default lease on a claimed job.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The default cap on handlers running at once.
pub const DEFAULT_MAX_HANDLERS: usize = 16;
/// The default cap on jobs a run holds at once.
pub const DEFAULT_MAX_JOBS: usize = 10_000;

/// Jobs claimed by one statement at most.
const CLAIM_BATCH: usize = 1000;
/// The longest pause after store errors.
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(5);

/// Wall-clock milliseconds that move with tokio's clock.
#[derive(Clone, Copy, Debug)]
struct Clock {
    wall0: i64,
    t0: Instant,
}

impl Clock {
    /// One clock per process, so that every tracker in it agrees.
    fn shared() -> Clock {
        static CLOCK: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
        *CLOCK.get_or_init(Clock::new)
    }

    fn new() -> Clock {
        let wall0 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Clock {
            wall0,
            t0: Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        let since = Instant::now().saturating_duration_since(self.t0);
        self.wall0
            .saturating_add(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// The tokio instant of a wall-clock time; times before this process
    /// could measure come out as the earliest instant it can.
    fn instant(&self, ms: i64) -> Instant {
        let now_ms = self.now_ms();
        let now = Instant::now();
        if ms >= now_ms {
            now + Duration::from_millis(u64::try_from(ms - now_ms).unwrap_or(0))
        } else {
            let back = Duration::from_millis(u64::try_from(now_ms - ms).unwrap_or(0));
            now.checked_sub(back).unwrap_or(now)
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A finished job handed to the handler of [`Tracker::run`].
pub struct Completion {
    query: JobQuery,
    meta: Value,
    detail: Result<JobDetail, Error>,
    deliveries: u32,
}

impl Completion {
    /// The job.
    pub fn query(&self) -> &JobQuery {
        &self.query
    }

    /// The metadata given when the job was first tracked.
    pub fn meta(&self) -> &Value {
        &self.meta
    }

    /// How the wait ended: the terminal detail (a job that succeeded or
    /// failed), or the error that ended the wait (deadline, stall, a
    /// refused key, `code != 0`).
    pub fn detail(&self) -> Result<&JobDetail, &Error> {
        self.detail.as_ref()
    }

    /// Which delivery this is: 1 the first time, more after a handler
    /// error or a crash before the delivery was recorded. It is counted
    /// when the outcome is stored, so a crash between storing it and
    /// calling the handler counts too.
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("img_uuid", &self.query.img_uuid())
            .field("meta", &self.meta)
            .field("detail", &self.detail)
            .field("deliveries", &self.deliveries)
            .finish()
    }
}

/// Follows jobs durably through a [`TrackStore`]: see the [module
/// docs](self).
///
/// Cheap to clone; clones share the store, the client and the worker name.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    store: Arc<dyn TrackStore>,
    lease: Duration,
    worker: String,
    max_handlers: usize,
    max_jobs: usize,
    claim_interval: Duration,
    retry_base: Duration,
    retry_max: Duration,
    clock: Clock,
    wake: Notify,
}

/// Settings of a [`Tracker`].
///
/// | setting | default |
/// |---|---|
/// | lease | 30 s, renewed every third of it |
/// | worker id | `<host>-<pid>-<random>` |
/// | handlers at once | 16 |
/// | jobs held at once | 10,000 |
/// | claim interval | 1 s (and at once after a local `track`) |
/// | handler retry | 1 s doubling up to 60 s |
pub struct TrackerBuilder {
    client: Client,
    store: Arc<dyn TrackStore>,
    lease: Duration,
    worker: Option<String>,
    max_handlers: usize,
    max_jobs: usize,
    claim_interval: Duration,
    retry_base: Duration,
    retry_max: Duration,
    clock_offset: i64,
}

impl Tracker {
    /// Starts a tracker that waits through `client` and keeps its state in
    /// `store`.
    pub fn builder(client: Client, store: impl TrackStore) -> TrackerBuilder {
        TrackerBuilder {
            client,
            store: Arc::new(store),
            lease: DEFAULT_LEASE,
            worker: None,
            max_handlers: DEFAULT_MAX_HANDLERS,
            max_jobs: DEFAULT_MAX_JOBS,
            claim_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            clock_offset: 0,
        }
    }

    /// This worker's name in the store's leases.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker
    }

    /// Tracks a job: durable once `Ok`. Its deadline is the client's wait
    /// timeout from now. An id tracked before stays one job, with its first
    /// meta and deadline.
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not record it.
    pub async fn track(&self, query: JobQuery, meta: Value) -> Result<(), Error> {
        let now = self.inner.clock.now_ms();
        let timeout = self.inner.client.poll_policy().timeout;
        let job = NewJob {
            id: query.img_uuid().to_owned(),
            meta: meta.to_string(),
            tracked_at: now,
            deadline: now.saturating_add(ms(timeout)),
        };
        self.inner.store.insert(vec![job]).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Jobs tracked and not yet delivered (by any worker).
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not be read.
    pub async fn pending(&self) -> Result<u64, Error> {
        self.inner.store.pending().await
    }

    /// Jobs already delivered, with their stored outcomes (deliveries as
    /// last counted), in the order they were tracked; nothing is polled.
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not be read or cannot list
    /// delivered jobs.
    pub async fn delivered(&self) -> Result<Vec<(JobQuery, Result<JobDetail, Error>)>, Error> {
        let rows = self.inner.store.delivered().await?;
        Ok(rows
            .into_iter()
            .map(|(id, text)| {
                let query = JobQuery::from_shared_id(Arc::from(id.as_str()));
                (query, outcome::decode(&text))
            })
            .collect())
    }

    /// Claims jobs, waits on them through the client's scheduler and calls
    /// `handler` for each finished one; runs until the future is dropped.
    ///
    /// Run one `run` per worker id at a time: a run starts by taking back
    /// the jobs leased under its id (those of a run of the same worker that
    /// died), so two at once would follow the same jobs.
    ///
    /// # Errors
    ///
    /// Only an error it cannot outlive: a store schema newer than this
    /// crate ([`Error::is_store`]). A store that is down is retried with
    /// backoff.
    pub async fn run<F, Fut>(&self, handler: F) -> Result<(), Error>
    where
        F: Fn(Completion) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Run::new(self.inner.clone(), Arc::new(handler)).go().await
    }
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("worker", &self.inner.worker)
            .field("lease", &self.inner.lease)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl TrackerBuilder {
    /// How long a claimed job stays this worker's without a renewal
    /// (default 30 s); leases are renewed every third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// This worker's name in leases (default `<host>-<pid>-<random>`). A
    /// worker restarted under the same name takes its leased jobs back at
    /// once instead of waiting for the leases to lapse.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker = Some(id.into());
        self
    }

    /// The most handlers running at once (default 16).
    pub fn max_handlers(mut self, n: usize) -> Self {
        self.max_handlers = n.max(1);
        self
    }

    /// The most jobs a run holds at once, waiting or being delivered
    /// (default 10,000).
    pub fn max_jobs(mut self, n: usize) -> Self {
        self.max_jobs = n.max(1);
        self
    }

    /// How often the store is asked for due jobs (default 1 s). A `track`
    /// on this tracker wakes the run at once.
    pub fn claim_interval(mut self, every: Duration) -> Self {
        self.claim_interval = every.max(Duration::from_millis(1));
        self
    }

    /// The delay before a job whose handler failed is delivered again:
    /// `base` doubling with each delivery, at most `max` (default 1 s, 60 s).
    pub fn handler_retry(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max.max(base);
        self
    }

    /// Shifts this tracker's own wall clock by `offset_ms` (a host whose
    /// clock is off), for tests.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn clock_offset(mut self, offset_ms: i64) -> Self {
        self.clock_offset = offset_ms;
        self
    }

    /// Makes the tracker.
    pub fn build(self) -> Tracker {
        let worker = self.worker.unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
            format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
        });
        Tracker {
            inner: Arc::new(Inner {
                client: self.client,
                store: self.store,
                lease: self.lease,
                worker,
                max_handlers: self.max_handlers,
                max_jobs: self.max_jobs,
                claim_interval: self.claim_interval,
                retry_base: self.retry_base,
                retry_max: self.retry_max,
                clock: Clock {
                    wall0: Clock::shared().wall0.saturating_add(self.clock_offset),
                    ..Clock::shared()
                },
                wake: Notify::new(),
            }),
        }
    }
}

impl fmt::Debug for TrackerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerBuilder")
            .field("store", &self.store)
            .field("lease", &self.lease)
            .field("worker", &self.worker)
            .field("max_handlers", &self.max_handlers)
            .finish_non_exhaustive()
    }
}

type Handler<F> = Arc<F>;
type WaitFuture =
    futures_util::future::BoxFuture<'static, (String, Option<Result<JobDetail, Error>>)>;

/// A job the run holds.
struct Held {
    meta: Arc<Value>,
    /// Set while it is being waited on.
    abort: Option<AbortHandle>,
}

/// The state of one [`Tracker::run`].
struct Run<F> {
    inner: Arc<Inner>,
    handler: Handler<F>,
    held: HashMap<String, Held>,
    waits: FuturesUnordered<WaitFuture>,
    finished: Vec<(String, Result<JobDetail, Error>)>,
    ready: VecDeque<Completion>,
    handlers: JoinSet<(String, u32, Result<(), String>)>,
    to_ack: Vec<String>,
    to_retry: Vec<(String, i64)>,
    claim_due: bool,
    first_claim: bool,
    next_renew: Instant,
    next_claim: Instant,
    store_pause: Option<Instant>,
    store_failures: u32,
    learned_saved: Vec<Learned>,
    /// Status changes of waiting jobs, from the hub; saved with renewals.
    progress_tx: tokio::sync::mpsc::UnboundedSender<(JobQuery, JobStatus, u32)>,
    progress_rx: tokio::sync::mpsc::UnboundedReceiver<(JobQuery, JobStatus, u32)>,
    changes: HashMap<String, StatusChange>,
}

impl<F, Fut> Run<F>
where
    F: Fn(Completion) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn new(inner: Arc<Inner>, handler: Handler<F>) -> Self {
        let now = Instant::now();
        let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel();
        Run {
            progress_tx,
            progress_rx,
            changes: HashMap::new(),
            next_renew: now + inner.lease / 3,
            next_claim: now,
            inner,
            handler,
            held: HashMap::new(),
            waits: FuturesUnordered::new(),
            finished: Vec::new(),
            ready: VecDeque::new(),
            handlers: JoinSet::new(),
            to_ack: Vec::new(),
            to_retry: Vec::new(),
            claim_due: true,
            first_claim: true,
            store_pause: None,
            store_failures: 0,
            learned_saved: Vec::new(),
        }
    }

    async fn go(mut self) -> Result<(), Error> {
        self.load_learned().await?;
        loop {
            let now = Instant::now();
            if self.store_pause.is_none_or(|at| at <= now) {
                self.store_pause = None;
                if let Err(e) = self.store_work(now).await {
                    if e.kind() == Kind::StoreSchema {
                        return Err(e);
                    }
                    self.store_failures += 1;
                    let pause = (Duration::from_millis(50) * 2u32.pow(self.store_failures.min(7)))
                        .min(MAX_STORE_BACKOFF);
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "tracking store failed; retrying");
                    self.store_pause = Some(Instant::now() + pause);
                } else {
                    self.store_failures = 0;
                }
            }
            self.start_handlers();
            let wake_at = match self.store_pause {
                Some(at) => at,
                None if !self.finished.is_empty()
                    || !self.to_ack.is_empty()
                    || !self.to_retry.is_empty()
                    || self.claim_due =>
                {
                    Instant::now()
                }
                None => self.next_renew.min(self.next_claim),
            };
            tokio::select! {
                Some((id, answer)) = self.waits.next(), if !self.waits.is_empty() => {
                    self.on_wait(id, answer);
                }
                Some(joined) = self.handlers.join_next(), if !self.handlers.is_empty() => {
                    self.on_handler(joined);
                }
                Some((query, status, polls)) = self.progress_rx.recv() => {
                    self.on_change(query, status, polls);
                }
                () = self.inner.wake.notified() => self.claim_due = true,
                () = sleep_until(wake_at) => {}
            }
            // Take in whatever else is ready, so the store sees it in one
            // batch.
            // (Outside tokio's cooperative budget, which would cut a batch
            // at 128 answers.)
            let waits = &mut self.waits;
            let ready = tokio::task::unconstrained(async move {
                let mut ready = Vec::new();
                while let Some(Some(item)) = waits.next().now_or_never() {
                    ready.push(item);
                }
                ready
            })
            .now_or_never()
            .unwrap_or_default();
            for (id, answer) in ready {
                self.on_wait(id, answer);
            }
            while let Some(joined) = self.handlers.try_join_next() {
                self.on_handler(joined);
            }
            while let Ok((query, status, polls)) = self.progress_rx.try_recv() {
                self.on_change(query, status, polls);
            }
        }
    }

    fn on_change(&mut self, query: JobQuery, status: JobStatus, polls: u32) {
        let id = query.img_uuid().to_owned();
        if self.held.contains_key(&id) {
            let change = StatusChange {
                id: id.clone(),
                status: status.as_str().to_owned(),
                at: self.inner.clock.now_ms(),
                polls,
            };
            self.changes.insert(id, change);
        }
    }

    async fn load_learned(&mut self) -> Result<(), Error> {
        // A store that is down now does not stop the run: what was learned
        // is an optimisation.
        match self.inner.store.load_learned().await {
            Ok(learned) => {
                let rows: Vec<_> = learned
                    .iter()
                    .map(|l| (l.job_type.clone(), l.samples, l.mean, l.m2))
                    .collect();
                self.inner.client.poll_policy().learner.restore(&rows);
                self.learned_saved = learned;
                Ok(())
            }
            Err(e) if e.kind() == Kind::StoreSchema => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "tracking store failed; learned durations not loaded");
                Ok(())
            }
        }
    }

    fn on_wait(&mut self, id: String, answer: Option<Result<JobDetail, Error>>) {
        match answer {
            // The scheduler stopped (its runtime is going away): not an
            // end of the job to store. Another claim takes it up.
            Some(Err(e)) if e.is_closed() => {
                self.held.remove(&id);
            }
            Some(answer) => {
                if let Some(h) = self.held.get_mut(&id) {
                    h.abort = None;
                    self.finished.push((id, answer));
                }
            }
            // Aborted: the lease went to another worker.
            None => {}
        }
    }

    fn on_handler(
        &mut self,
        joined: Result<(String, u32, Result<(), String>), tokio::task::JoinError>,
    ) {
        let Ok((id, deliveries, result)) = joined else {
            // Handler tasks catch panics; a join error means the run is
            // being torn down.
            return;
        };
        match result {
            Ok(()) => self.to_ack.push(id),
            Err(e) => {
                tracing::warn!(img_uuid = %id, deliveries, error = %e, "handler failed; delivering again later");
                let exp = deliveries.saturating_sub(1).min(20);
                let delay = self
                    .inner
                    .retry_base
                    .saturating_mul(1u32 << exp)
                    .min(self.inner.retry_max);
                let at = self.inner.clock.now_ms().saturating_add(ms(delay));
                self.to_retry.push((id, at));
            }
        }
    }

    /// Everything the store has to hear, in batches; stops at the first
    /// error (what was not written stays queued).
    async fn store_work(&mut self, now: Instant) -> Result<(), Error> {
        let store = Arc::clone(&self.inner.store);
        let worker = self.inner.worker.clone();
        if !self.finished.is_empty() {
            let jobs: Vec<Finished> = self
                .finished
                .iter()
                .map(|(id, answer)| Finished {
                    id: id.clone(),
                    outcome: outcome::encode(answer),
                })
                .collect();
            let held = store
                .complete(&worker, self.inner.clock.now_ms(), jobs)
                .await?;
            let held: HashMap<String, u32> = held.into_iter().collect();
            for (id, answer) in std::mem::take(&mut self.finished) {
                match held.get(&id) {
                    Some(&deliveries) => {
                        let meta = self.held.get(&id).map(|h| (*h.meta).clone());
                        self.ready.push_back(Completion {
                            query: JobQuery::from_shared_id(Arc::from(id.as_str())),
                            meta: meta.unwrap_or(Value::Null),
                            detail: answer,
                            deliveries,
                        });
                    }
                    None => {
                        self.held.remove(&id);
                    }
                }
            }
        }
        if !self.to_ack.is_empty() {
            store
                .ack(self.to_ack.clone(), self.inner.clock.now_ms())
                .await?;
            for id in std::mem::take(&mut self.to_ack) {
                self.held.remove(&id);
            }
        }
        if !self.to_retry.is_empty() {
            store.retry(&worker, self.to_retry.clone()).await?;
            for (id, _) in std::mem::take(&mut self.to_retry) {
                self.held.remove(&id);
            }
            // Due again later: the periodic claim finds them.
        }
        if now >= self.next_renew {
            if !self.changes.is_empty() {
                let held = &self.held;
                let changes: Vec<StatusChange> = self
                    .changes
                    .drain()
                    .map(|(_, c)| c)
                    .filter(|c| held.get(&c.id).is_some_and(|h| h.abort.is_some()))
                    .collect();
                if let Err(e) = store.save_status(&worker, changes.clone()).await {
                    for c in changes {
                        self.changes.entry(c.id.clone()).or_insert(c);
                    }
                    return Err(e);
                }
            }
            self.renew(&worker).await?;
            self.next_renew = now + self.inner.lease / 3;
        }
        if self.claim_due || now >= self.next_claim {
            self.claim(&worker).await?;
            self.next_claim = now + self.inner.claim_interval;
        }
        Ok(())
    }

    async fn renew(&mut self, worker: &str) -> Result<(), Error> {
        let until = self
            .inner
            .clock
            .now_ms()
            .saturating_add(ms(self.inner.lease));
        let still: std::collections::HashSet<String> = self
            .inner
            .store
            .renew(worker, until)
            .await?
            .into_iter()
            .collect();
        // Jobs whose lease went to someone else while they were waited on:
        // stop polling them. (Jobs being delivered finish their delivery.)
        let lost: Vec<String> = self
            .held
            .iter()
            .filter(|(id, h)| h.abort.is_some() && !still.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            if let Some(h) = self.held.remove(&id) {
                if let Some(a) = h.abort {
                    a.abort();
                }
            }
            tracing::warn!(img_uuid = %id, "lease lost; another worker follows the job");
        }
        let snapshot: Vec<Learned> = self
            .inner
            .client
            .poll_policy()
            .learner
            .snapshot()
            .into_iter()
            .map(|(job_type, samples, mean, m2)| Learned {
                job_type,
                samples,
                mean,
                m2,
            })
            .filter(|l| !self.learned_saved.contains(l))
            .collect();
        if !snapshot.is_empty() {
            self.inner.store.save_learned(snapshot.clone()).await?;
            for l in snapshot {
                self.learned_saved.retain(|s| s.job_type != l.job_type);
                self.learned_saved.push(l);
            }
        }
        Ok(())
    }

    async fn claim(&mut self, worker: &str) -> Result<(), Error> {
        self.claim_due = false;
        let room = self.inner.max_jobs.saturating_sub(self.held.len());
        if room == 0 {
            return Ok(());
        }
        let limit = room.min(CLAIM_BATCH);
        let now_ms = self.inner.clock.now_ms();
        let until = now_ms.saturating_add(ms(self.inner.lease));
        let jobs = self
            .inner
            .store
            .claim(worker, now_ms, until, limit, self.first_claim)
            .await?;
        self.first_claim = false;
        if jobs.len() == limit {
            // More may be due: ask again at once.
            self.claim_due = true;
        }
        for job in jobs {
            if self.held.contains_key(&job.id) {
                continue;
            }
            let meta: Value = serde_json::from_str(&job.meta).unwrap_or(Value::Null);
            let meta = Arc::new(meta);
            let query = match JobQuery::new(&job.id) {
                Ok(q) => q,
                Err(e) => {
                    // An id that is not valid cannot be polled: deliver
                    // the error.
                    self.held.insert(job.id.clone(), Held { meta, abort: None });
                    self.finished.push((job.id, Err(e)));
                    continue;
                }
            };
            match job.outcome {
                Some(text) => {
                    self.ready.push_back(Completion {
                        query,
                        meta: (*meta).clone(),
                        detail: outcome::decode(&text),
                        deliveries: job.deliveries,
                    });
                    self.held.insert(job.id, Held { meta, abort: None });
                }
                None => {
                    let clock = self.inner.clock;
                    let started = clock.instant(job.tracked_at);
                    let deadline = clock.instant(job.deadline);
                    let seed = job.last_status.zip(job.last_change).map(|(s, at)| {
                        (
                            JobStatus::from_raw(&s),
                            clock.instant(at),
                            job.last_polls.unwrap_or(0),
                        )
                    });
                    let progress = self.progress_tx.clone();
                    let client = self.inner.client.clone();
                    let (abort, reg) = AbortHandle::new_pair();
                    let id = job.id.clone();
                    let wait = Abortable::new(
                        async move {
                            client
                                .hub()
                                .wait_until(query, started, deadline, seed, progress)
                                .await
                        },
                        reg,
                    );
                    self.waits
                        .push(Box::pin(async move { (id, wait.await.ok()) }));
                    self.held.insert(
                        job.id,
                        Held {
                            meta,
                            abort: Some(abort),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn start_handlers(&mut self) {
        while self.handlers.len() < self.inner.max_handlers {
            let Some(done) = self.ready.pop_front() else {
                break;
            };
            let id = done.query.img_uuid().to_owned();
            let deliveries = done.deliveries;
            let fut = (self.handler)(done);
            self.handlers.spawn(async move {
                let result = match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the handler panicked".to_owned()),
                };
                (id, deliveries, result)
            });
        }
    }
}
