//! [`Tracker`]: tracks jobs, lists what ended, and runs the worker.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::Notify;

use super::clock::shift;
use super::listing::{DeadJob, DeliveredJob, Page};
use super::outcome;
use super::run::Run;
use super::store::{Listing, NewJob, TrackStore};
use super::{Completion, TrackOptions, Tracked, TrackedJob};
use crate::client::Client;
use crate::error::{BoxError, Error};
use crate::query::JobQuery;

/// Follows jobs durably through a [`TrackStore`]: see the [module
/// docs](super).
///
/// Cheap to clone; clones share the store, the client and the worker name.
#[derive(Clone)]
pub struct Tracker {
    pub(super) inner: Arc<Inner>,
}

/// What a tracker's clones share: its settings.
pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) store: Arc<dyn TrackStore>,
    pub(crate) lease: Duration,
    pub(crate) worker: String,
    pub(crate) max_handlers: usize,
    pub(crate) max_jobs: usize,
    pub(crate) claim_interval: Duration,
    pub(crate) retry_base: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) handler_timeout: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) retention: Option<Duration>,
    /// Milliseconds added to this worker's reading of the store's clock
    /// (tests of skewed hosts).
    pub(crate) offset_ms: i64,
    pub(crate) shutdown_grace: Duration,
    pub(crate) wake: Notify,
}

impl Inner {
    /// The store's clock as this worker reads it.
    pub(crate) fn now(&self) -> SystemTime {
        shift(self.store.now(), self.offset_ms)
    }

    /// Runs a store operation, giving up after the store timeout.
    /// A failure is counted by `what` in the store errors metric.
    pub(crate) async fn call<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let r = match tokio::time::timeout(self.store_timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(Error::store(format!(
                "tracking store: {what} got no answer within {} ms",
                self.store_timeout.as_millis()
            ))),
        };
        if r.is_err() {
            crate::telemetry::store_failed(what);
        }
        r
    }
}

impl Tracker {
    /// Starts a tracker that waits through `client` and keeps its state in
    /// `store`.
    pub fn builder(client: Client, store: impl TrackStore) -> super::TrackerBuilder {
        super::TrackerBuilder::new(client, Arc::new(store))
    }

    /// This worker's name in the store.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker
    }

    /// Tracks a job: durable once `Ok`. Its deadline is the client's wait
    /// timeout from now, by the store's clock. An id tracked before stays
    /// one job, with its first meta and deadline; the answer tells which
    /// it was ([`Tracked`]).
    ///
    /// The store is read first ([`Tracker::job`]), and written only for a
    /// job it does not hold. So two calls racing on one new id may both
    /// answer [`Tracked::New`], and a call repeated after an error whose
    /// write had landed answers [`Tracked::AlreadyTracked`].
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not record it (or did not
    /// answer within the store timeout: tracking it again is harmless).
    pub async fn track(&self, query: JobQuery, meta: Value) -> Result<Tracked, Error> {
        self.track_with(query, meta, TrackOptions::new()).await
    }

    /// [`track`](Self::track) with settings of its own: another wait
    /// timeout for this job.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use goenhance_jobs::track::{MemoryStore, TrackOptions, Tracked, Tracker};
    /// # use goenhance_jobs::{Client, JobQuery};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), goenhance_jobs::Error> {
    /// # let client = Client::builder().api_key("k").base_url("http://127.0.0.1:9").build()?;
    /// let tracker = Tracker::builder(client, MemoryStore::new()).build();
    /// let hour = TrackOptions::new().wait_timeout(Duration::from_secs(3600));
    /// let first = tracker.track_with(JobQuery::new("job-1")?, serde_json::json!({}), hour.clone()).await?;
    /// assert_eq!(first, Tracked::New);
    /// let job = tracker.job(&JobQuery::new("job-1")?).await?.unwrap();
    /// assert_eq!(job.deadline().duration_since(job.tracked_at()).unwrap(), Duration::from_secs(3600));
    /// // Once tracked, its settings stay.
    /// let again = tracker.track_with(JobQuery::new("job-1")?, serde_json::json!({}), TrackOptions::new()).await?;
    /// assert_eq!(again, Tracked::AlreadyTracked);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`track`](Self::track).
    pub async fn track_with(
        &self,
        query: JobQuery,
        meta: Value,
        options: TrackOptions,
    ) -> Result<Tracked, Error> {
        let now = self.inner.now();
        let known = self
            .inner
            .call("job", self.inner.store.job(query.img_uuid()))
            .await?;
        if let Some(row) = known {
            return Ok(Tracked::from_state(row.state));
        }
        let timeout = options
            .timeout()
            .unwrap_or_else(|| self.inner.client.poll_policy().timeout);
        let job = NewJob::new(query.img_uuid(), meta.to_string(), timeout);
        self.inner
            .call("insert", self.inner.store.insert(vec![job], now))
            .await?;
        self.inner.wake.notify_one();
        Ok(Tracked::New)
    }

    /// What the store knows of one job (its state, last status, polls,
    /// deadline, deliveries, outcome and last error): one indexed read,
    /// nothing polled. `None` for a job never tracked, or pruned.
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not be read.
    pub async fn job(&self, query: &JobQuery) -> Result<Option<TrackedJob>, Error> {
        let row = self
            .inner
            .call("job", self.inner.store.job(query.img_uuid()))
            .await?;
        Ok(row.map(|r| TrackedJob::from_stored(query.clone(), r)))
    }

    /// Jobs tracked and neither delivered nor dead (by any worker).
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not be read.
    pub async fn pending(&self) -> Result<u64, Error> {
        self.inner.call("pending", self.inner.store.pending()).await
    }

    /// A page of delivered jobs with their stored outcomes, in the order
    /// they were tracked: at most `limit`, after `cursor` (`None`: from
    /// the first). Nothing is polled. Delivered jobs are kept for the
    /// [retention](super::TrackerBuilder::retention) period.
    ///
    /// ```
    /// # use goenhance_jobs::track::{MemoryStore, Tracker};
    /// # async fn f(tracker: Tracker) -> Result<(), goenhance_jobs::Error> {
    /// let mut cursor = None;
    /// loop {
    ///     let page = tracker.delivered(100, cursor).await?;
    ///     for job in page.items() {
    ///         println!("{}: {:?}", job.query().img_uuid(), job.detail().map(|d| d.status()));
    ///     }
    ///     match page.next() {
    ///         Some(next) => cursor = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not be read.
    pub async fn delivered(
        &self,
        limit: usize,
        cursor: Option<u64>,
    ) -> Result<Page<DeliveredJob>, Error> {
        let rows = self
            .inner
            .call(
                "list",
                self.inner.store.list(Listing::Delivered, cursor, limit),
            )
            .await?;
        let next = (rows.len() >= limit && limit > 0)
            .then(|| rows.last().map(|r| r.cursor))
            .flatten();
        let items = rows
            .into_iter()
            .map(|r| DeliveredJob {
                query: JobQuery::from_shared_id(Arc::from(r.id.as_str())),
                detail: outcome::decode(r.outcome.as_deref().unwrap_or("")),
                deliveries: r.deliveries,
                ended_at: r.ended_at,
            })
            .collect();
        Ok(Page { items, next })
    }

    /// A page of dead jobs (their handler failed
    /// [`max_deliveries`](super::TrackerBuilder::max_deliveries) times, or
    /// their row could not be read), as [`delivered`](Self::delivered).
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not be read.
    pub async fn dead(&self, limit: usize, cursor: Option<u64>) -> Result<Page<DeadJob>, Error> {
        let rows = self
            .inner
            .call("list", self.inner.store.list(Listing::Dead, cursor, limit))
            .await?;
        let next = (rows.len() >= limit && limit > 0)
            .then(|| rows.last().map(|r| r.cursor))
            .flatten();
        let items = rows
            .into_iter()
            .map(|r| DeadJob {
                id: r.id,
                error: r.error.unwrap_or_default(),
                deliveries: r.deliveries,
                ended_at: r.ended_at,
            })
            .collect();
        Ok(Page { items, next })
    }

    /// Makes dead jobs deliverable again: each is delivered anew (its
    /// stored outcome, or waited on if it has none), its delivery count
    /// starting over. Returns how many of `ids` were dead.
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not record it.
    pub async fn retry_dead<I, S>(&self, ids: I) -> Result<u64, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let ids: Vec<String> = ids.into_iter().map(Into::into).collect();
        let now = self.inner.now();
        let n = self
            .inner
            .call("retry_dead", self.inner.store.retry_dead(ids, now))
            .await?;
        self.inner.wake.notify_one();
        Ok(n)
    }

    /// Deletes the delivered and dead jobs that ended longer ago than the
    /// [retention](super::TrackerBuilder::retention) now (runs do so on
    /// their own every quarter of it); returns how many. Nothing with no
    /// retention.
    ///
    /// # Errors
    ///
    /// [`Error::is_store`] when the store could not delete them.
    pub async fn prune(&self) -> Result<u64, Error> {
        let Some(keep) = self.inner.retention else {
            return Ok(0);
        };
        let now = self.inner.now();
        self.inner
            .call("prune", self.inner.store.prune(keep, now))
            .await
    }

    /// Claims jobs, waits on them through the client's scheduler and calls
    /// `handler` for each finished one; runs until the future is dropped.
    ///
    /// The run registers this worker in the store (a new epoch: a run
    /// of the same name still going is fenced and stops) and heartbeats
    /// every third of the lease. When it cannot show a live heartbeat it
    /// stops polling, cancels its handlers, and registers again.
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
        Run::new(self.inner.clone(), Arc::new(handler), None)
            .go()
            .await
    }

    /// [`run`](Self::run) until `shutdown` resolves, then stops
    /// gracefully: no new claims, waits end, handlers already running may
    /// finish within the [grace period](super::TrackerBuilder::shutdown_grace)
    /// (then they are cancelled), their acknowledgements are recorded, and
    /// every job still held is released so that another worker takes it at
    /// once. Returns `Ok(())` then.
    ///
    /// On Kubernetes: resolve `shutdown` on SIGTERM and set the grace
    /// period a few seconds under the pod's `terminationGracePeriodSeconds`.
    ///
    /// ```no_run
    /// # use goenhance_jobs::track::Tracker;
    /// # async fn f(tracker: Tracker) -> Result<(), goenhance_jobs::Error> {
    /// let stop = async {
    ///     let _ = tokio::signal::ctrl_c().await;
    /// };
    /// tracker.run_until(|done| async move { Ok(()) }, stop).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub async fn run_until<F, Fut, S>(&self, handler: F, shutdown: S) -> Result<(), Error>
    where
        F: Fn(Completion) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
        S: Future<Output = ()> + Send + 'static,
    {
        Run::new(
            self.inner.clone(),
            Arc::new(handler),
            Some(Box::pin(shutdown)),
        )
        .go()
        .await
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
