//! Fencing: this worker's registration and heartbeat, and whether it may
//! act on the jobs it holds.
//!
//! The store decides by its own clock when a heartbeat lapses. A heartbeat
//! written at the local instant `sent` keeps the worker alive by the
//! store's clock until at least `sent + lease` (the store read its clock
//! after `sent`), so the worker counts itself live until
//! `sent + lease - lease / 6` on its own monotonic clock: another worker
//! can take its jobs only after it has stopped, whatever the clocks of
//! the hosts say.

use std::time::Duration;

use tokio::time::Instant;

use super::store::WorkerId;
use super::tracker::Inner;
use crate::error::Error;

/// This worker's standing in the store.
#[derive(Debug)]
pub(crate) struct Heart {
    lease: Duration,
    worker: Option<WorkerId>,
    live_until: Instant,
    next_beat: Instant,
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

impl Heart {
    pub(crate) fn new(lease: Duration) -> Heart {
        let now = Instant::now();
        Heart {
            lease,
            worker: None,
            live_until: now,
            next_beat: now,
        }
    }

    /// Registered (though perhaps not live any more).
    pub(crate) fn registered(&self) -> bool {
        self.worker.is_some()
    }

    /// The registration, with its epoch.
    pub(crate) fn worker(&self) -> Option<&WorkerId> {
        self.worker.as_ref()
    }

    /// Whether the worker may start a delivery or a poll at `now`.
    pub(crate) fn live(&self, now: Instant) -> bool {
        self.worker.is_some() && now < self.live_until
    }

    /// Registered, and its last heartbeat no longer covers `now`.
    pub(crate) fn lapsed(&self, now: Instant) -> bool {
        self.worker.is_some() && now >= self.live_until
    }

    /// When the worker must stop unless a heartbeat lands first.
    pub(crate) fn fence_at(&self) -> Instant {
        if self.worker.is_some() {
            self.live_until
        } else {
            far()
        }
    }

    /// When the next heartbeat is due.
    pub(crate) fn next_beat(&self) -> Instant {
        self.next_beat
    }

    /// Forgets the registration: the next beat registers anew.
    pub(crate) fn fenced(&mut self) {
        self.worker = None;
    }

    fn landed(&mut self, sent: Instant) {
        self.live_until = sent + self.lease - self.lease / 6;
        self.next_beat = sent + self.lease / 3;
    }

    /// Registers under a new epoch (the jobs of earlier epochs of the
    /// name are freed).
    pub(crate) async fn register(&mut self, inner: &Inner) -> Result<(), Error> {
        let sent = Instant::now();
        let worker = inner
            .call(
                "register",
                inner
                    .store
                    .register(&inner.worker, inner.lease, inner.now()),
            )
            .await?;
        tracing::debug!(worker = %worker.name, epoch = worker.epoch, "tracking worker registered");
        crate::telemetry::registered();
        self.worker = Some(worker);
        self.landed(sent);
        Ok(())
    }

    /// One heartbeat (or the registration, when there is none): `false`
    /// when the store says this worker was fenced.
    pub(crate) async fn beat(&mut self, inner: &Inner) -> Result<bool, Error> {
        let Some(worker) = self.worker.clone() else {
            self.register(inner).await?;
            return Ok(true);
        };
        let sent = Instant::now();
        let alive = inner
            .call(
                "heartbeat",
                inner.store.heartbeat(&worker, inner.lease, inner.now()),
            )
            .await?;
        crate::telemetry::heartbeat(alive);
        if alive {
            self.landed(sent);
        }
        Ok(alive)
    }
}
