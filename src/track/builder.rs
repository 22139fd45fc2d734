//! The settings of a [`Tracker`](super::Tracker): [`TrackerBuilder`]'s methods.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::clock::Clock;
use super::tracker::{Inner, Tracker, TrackerBuilder};

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
                clock: Clock::shared(),
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
