//! What a tracking run records: store errors by operation, heartbeats,
//! fencings and registrations, deliveries by outcome, and the jobs held.

use std::fmt;

// The names and imports of the telemetry module.
#[cfg(feature = "metrics")]
use super::*;

/// Why a tracking worker was fenced: a label of [`TRACK_FENCINGS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FenceReason {
    /// Its last heartbeat no longer covers the present.
    Lapsed,
    /// The store did not answer before the lease ran out.
    Unanswered,
    /// The store said another run holds the worker's jobs, or that it is
    /// not alive.
    Refused,
}

impl FenceReason {
    /// The label value.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FenceReason::Lapsed => "lapsed",
            FenceReason::Unanswered => "unanswered",
            FenceReason::Refused => "refused",
        }
    }
}

/// How one delivery ended: a label of [`TRACK_DELIVERIES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeliveryOutcome {
    /// The handler returned `Ok`.
    Ok,
    /// It returned an error or panicked; the job is delivered again later.
    Failed,
    /// It took longer than the handler timeout; delivered again later.
    TimedOut,
    /// It failed (or timed out) on the job's last allowed delivery: the
    /// job is dead.
    Dead,
}

impl DeliveryOutcome {
    /// The label value.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Ok => "ok",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::TimedOut => "timed_out",
            DeliveryOutcome::Dead => "dead",
        }
    }
}

/// Counts a store operation that failed or got no answer in time.
/// `operation` is one of a fixed set of names (`claim`, `complete`, …).
pub(crate) fn store_failed(operation: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(TRACK_STORE_ERRORS, LABEL_OPERATION => operation).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = operation;
}

/// Counts a heartbeat the store answered: `alive`, or `fenced` when it
/// said the worker holds nothing any more.
pub(crate) fn heartbeat(alive: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        TRACK_HEARTBEATS,
        LABEL_OUTCOME => if alive { "alive" } else { "fenced" }
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = alive;
}

/// Counts a fencing of this worker.
pub(crate) fn fenced(reason: FenceReason) {
    #[cfg(feature = "metrics")]
    metrics::counter!(TRACK_FENCINGS, LABEL_REASON => reason.as_str()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// Counts a registration of this worker (the first of a run, or one after
/// a fencing).
pub(crate) fn registered() {
    #[cfg(feature = "metrics")]
    metrics::counter!(TRACK_REGISTRATIONS).increment(1);
}

/// Counts a delivery that ended.
pub(crate) fn delivery_ended(outcome: DeliveryOutcome) {
    #[cfg(feature = "metrics")]
    metrics::counter!(TRACK_DELIVERIES, LABEL_OUTCOME => outcome.as_str()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// The jobs one run holds, added to [`TRACK_JOBS_HELD`] (so several runs
/// in one process add up); taken back out when dropped.
pub(crate) struct HeldGauge {
    #[cfg(feature = "metrics")]
    shown: usize,
}

impl fmt::Debug for HeldGauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldGauge").finish_non_exhaustive()
    }
}

impl HeldGauge {
    pub(crate) fn new() -> HeldGauge {
        HeldGauge {
            #[cfg(feature = "metrics")]
            shown: 0,
        }
    }

    /// The run holds `held` jobs now.
    pub(crate) fn set(&mut self, held: usize) {
        #[cfg(feature = "metrics")]
        if held != self.shown {
            let gauge = metrics::gauge!(TRACK_JOBS_HELD);
            if held > self.shown {
                gauge.increment((held - self.shown) as f64);
            } else {
                gauge.decrement((self.shown - held) as f64);
            }
            self.shown = held;
        }
        #[cfg(not(feature = "metrics"))]
        let _ = held;
    }
}

impl Drop for HeldGauge {
    fn drop(&mut self) {
        self.set(0);
    }
}
