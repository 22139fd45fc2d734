//! The driver's queue: a timer heap of polls and deadlines on a millisecond
//! grid, and the polls that are due, in due order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The mark of a timer entry that checks waiters' deadlines rather than
/// starting a poll; poll entries carry their job's generation, never 0.
pub(super) const DEADLINE: u32 = 0;

/// A timer entry: when (milliseconds from the driver's epoch), its mark
/// (a poll's generation, or [`DEADLINE`]), and the job's key.
pub(super) type Entry = (i64, u32, u32);

/// Below this many entries the heap is never swept.
const SWEEP_MIN: usize = 4096;

/// `at` on the grid of `epoch`, rounded down. The grid reaches before the
/// epoch (negative times): a tracked wait may have begun before the driver.
pub(super) fn floor_ms(epoch: Instant, at: Instant) -> i64 {
    if at >= epoch {
        ms_i64(at - epoch)
    } else {
        -ceil_i64(epoch - at)
    }
}

/// `at` on the grid of `epoch`, rounded up.
fn ceil_ms(epoch: Instant, at: Instant) -> i64 {
    if at >= epoch {
        ceil_i64(at - epoch)
    } else {
        -ms_i64(epoch - at)
    }
}

fn ms_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn ceil_i64(d: Duration) -> i64 {
    let ms = ms_i64(d);
    if d > Duration::from_millis(ms.unsigned_abs()) {
        ms.saturating_add(1)
    } else {
        ms
    }
}

pub(super) struct Queue {
    /// The grid's origin: every time the driver keeps is whole
    /// milliseconds after it.
    epoch: Instant,
    timers: BinaryHeap<Reverse<Entry>>,
    /// Polls that are due, waiting for room under the cap: `(key,
    /// generation)`, in due order.
    pub(super) ready: VecDeque<(u32, u32)>,
    /// The heap's length at which stale entries are next swept out: twice
    /// its length after the last sweep, so each sweep's cost is paid by as
    /// many pushes before it (amortised O(1)).
    sweep_at: usize,
}

impl Queue {
    pub(super) fn new(epoch: Instant) -> Queue {
        Queue {
            epoch,
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            sweep_at: SWEEP_MIN,
        }
    }

    /// `at` on the grid, rounded down: when a wait starts.
    pub(super) fn floor_ms(&self, at: Instant) -> i64 {
        floor_ms(self.epoch, at)
    }

    /// The grid's origin.
    pub(super) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// `at` on the grid, rounded up: when a deadline or a timer falls. A
    /// deadline is never earlier than asked for, and the timer of a time
    /// and the time itself are the same instant.
    pub(super) fn ceil_ms(&self, at: Instant) -> i64 {
        ceil_ms(self.epoch, at)
    }

    /// The instant of grid time `ms`.
    pub(super) fn instant_at(&self, ms: i64) -> Instant {
        let d = Duration::from_millis(ms.unsigned_abs());
        if ms >= 0 {
            crate::clock::after(self.epoch, d)
        } else {
            self.epoch.checked_sub(d).unwrap_or(self.epoch)
        }
    }

    pub(super) fn push(&mut self, entry: Entry, valid: impl FnMut(&Entry) -> bool) {
        self.timers.push(Reverse(entry));
        if self.timers.len() > self.sweep_at {
            self.sweep(valid);
        }
    }

    /// The next entry, if it is due by `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Entry> {
        let Reverse(entry) = *self.timers.peek()?;
        if self.instant_at(entry.0) > now {
            return None;
        }
        self.timers.pop();
        Some(entry)
    }

    /// When the next timer falls.
    pub(super) fn next_at(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(e)| self.instant_at(e.0))
    }

    /// Drops the entries that are no longer valid.
    pub(super) fn sweep(&mut self, mut valid: impl FnMut(&Entry) -> bool) {
        self.timers.retain(|Reverse(e)| valid(e));
        self.sweep_at = (2 * self.timers.len()).max(SWEEP_MIN);
    }

    pub(super) fn timers_len(&self) -> usize {
        self.timers.len()
    }

    pub(super) fn reserve(&mut self, n: usize) {
        self.timers.reserve(n);
        self.ready.reserve(n);
    }

    /// Moves every entry's key with `moved` (jobs that moved to other
    /// slots), then gives unused room back.
    pub(super) fn rekey(&mut self, moved: impl Fn(u32) -> u32) {
        let timers = std::mem::take(&mut self.timers).into_vec();
        self.timers = timers
            .into_iter()
            .map(|Reverse((at, mark, key))| Reverse((at, mark, moved(key))))
            .collect();
        for entry in &mut self.ready {
            entry.0 = moved(entry.0);
        }
        self.timers.shrink_to_fit();
        self.ready.shrink_to_fit();
    }

    /// Starts afresh, with no room held.
    pub(super) fn clear(&mut self) {
        self.timers = BinaryHeap::new();
        self.ready = VecDeque::new();
        self.sweep_at = SWEEP_MIN;
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.timers.capacity() + self.ready.capacity()
    }
}
