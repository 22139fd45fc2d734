//! [`Tracker`] and its settings, [`TrackerBuilder`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use super::clock::{ms, Clock};
use super::outcome;
use super::run::Run;
use super::store::{NewJob, TrackStore};
use super::{Completion, DEFAULT_LEASE, DEFAULT_MAX_HANDLERS, DEFAULT_MAX_JOBS};
use crate::client::Client;
use crate::error::{BoxError, Error};
use crate::model::JobDetail;
use crate::query::JobQuery;

/// Follows jobs durably through a [`TrackStore`]: see the [module
/// docs](self).
///
/// Cheap to clone; clones share the store, the client and the worker name.
#[derive(Clone)]
pub struct Tracker {
    pub(super) inner: Arc<Inner>,
}

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
    pub(crate) clock: Clock,
    pub(crate) wake: Notify,
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
    pub(super) client: Client,
    pub(super) store: Arc<dyn TrackStore>,
    pub(super) lease: Duration,
    pub(super) worker: Option<String>,
    pub(super) max_handlers: usize,
    pub(super) max_jobs: usize,
    pub(super) claim_interval: Duration,
    pub(super) retry_base: Duration,
    pub(super) retry_max: Duration,
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
