//! [`TrackerBuilder`]: the settings of a [`Tracker`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::store::TrackStore;
use super::tracker::{Inner, Tracker};
use super::{DEFAULT_LEASE, DEFAULT_MAX_HANDLERS, DEFAULT_MAX_JOBS};
use crate::client::Client;

/// The default time a handler may take before its delivery counts as
/// failed.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(300);
/// The default number of deliveries after which a job is dead.
pub const DEFAULT_MAX_DELIVERIES: u32 = 25;
/// The default time delivered and dead jobs are kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The default time a store operation may take.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`Tracker`].
///
/// | setting | default |
/// |---|---|
/// | lease | 30 s, one heartbeat every third of it |
/// | worker id | `<host>-<pid>-<random>` |
/// | handlers at once | 16 |
/// | jobs held at once | 10,000 |
/// | claim interval | 1 s (and at once after a local `track`) |
/// | handler retry | 1 s doubling up to 60 s |
/// | handler timeout | 5 min |
/// | deliveries before a job is dead | 25 |
/// | retention of delivered and dead jobs | 7 days |
/// | store timeout | 10 s |
/// | shutdown grace | 30 s |
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
    store_timeout: Duration,
    handler_timeout: Duration,
    max_deliveries: u32,
    retention: Option<Duration>,
    offset_ms: i64,
    shutdown_grace: Duration,
}

impl TrackerBuilder {
    pub(crate) fn new(client: Client, store: Arc<dyn TrackStore>) -> TrackerBuilder {
        TrackerBuilder {
            client,
            store,
            lease: DEFAULT_LEASE,
            worker: None,
            max_handlers: DEFAULT_MAX_HANDLERS,
            max_jobs: DEFAULT_MAX_JOBS,
            claim_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            store_timeout: DEFAULT_STORE_TIMEOUT,
            handler_timeout: DEFAULT_HANDLER_TIMEOUT,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            retention: Some(DEFAULT_RETENTION),
            offset_ms: 0,
            shutdown_grace: Duration::from_secs(30),
        }
    }

    /// How long this worker's jobs stay its own without a heartbeat
    /// (default 30 s); one heartbeat every third of it keeps them all,
    /// and the worker stops by itself five sixths of it after the last one
    /// it could write.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// This worker's name in the store (default `<host>-<pid>-<random>`).
    /// A worker restarted under the same name fences the one before (a new
    /// epoch) and takes its jobs back at once instead of waiting for its
    /// heartbeat to lapse.
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

    /// How long one store operation may take (default 10 s) before it
    /// counts as failed and is tried again: a connection that hangs never
    /// freezes the run. What it may have written is harmless to write
    /// again.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a handler may take (default 5 min); after that it is
    /// cancelled and the delivery counts as failed.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Deliveries after which a job whose handler keeps failing is *dead*
    /// (default 25): kept with its last error, never delivered again until
    /// [`Tracker::retry_dead`]. A delivery is counted when it starts, so
    /// one that never ended (its process died while the handler ran, or
    /// the run was stopped or fenced) counts too: a job found again after
    /// its last delivery allowed is dead without its handler being called,
    /// and a handler that crashes its process every time cannot keep a
    /// fleet restarting.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// How long delivered and dead jobs are kept (default 7 days); `None`
    /// keeps them for ever. Runs prune them every quarter of it (at most
    /// every 10 minutes, at least every second).
    pub fn retention(mut self, keep: Option<Duration>) -> Self {
        self.retention = keep;
        self
    }

    /// Shifts this worker's reading of the store's clock by `offset_ms`
    /// milliseconds: a host whose clock is off, for tests. A store with a
    /// clock of its own (PostgreSQL) does not see it.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn clock_offset(mut self, offset_ms: i64) -> Self {
        self.offset_ms = offset_ms;
        self
    }

    /// How long handlers already running may take to finish once
    /// [`Tracker::run_until`] is asked to stop (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
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
                store_timeout: self.store_timeout,
                handler_timeout: self.handler_timeout,
                max_deliveries: self.max_deliveries,
                retention: self.retention,
                offset_ms: self.offset_ms,
                shutdown_grace: self.shutdown_grace,
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
