//! What [`Tracker::track_with`](super::Tracker::track_with) takes
//! ([`TrackOptions`]) and what `track` answers ([`Tracked`]).

use std::time::Duration;

use super::store::JobState;

/// Settings of one job given to
/// [`Tracker::track_with`](super::Tracker::track_with).
///
/// ```
/// use std::time::Duration;
/// use goenhance_jobs::track::TrackOptions;
///
/// let options = TrackOptions::new().wait_timeout(Duration::from_secs(2 * 3600));
/// assert_eq!(options.timeout(), Some(Duration::from_secs(7200)));
/// assert_eq!(TrackOptions::new().timeout(), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackOptions {
    timeout: Option<Duration>,
}

impl TrackOptions {
    /// The defaults: the job's wait ends the client's wait timeout after
    /// it is tracked.
    pub fn new() -> TrackOptions {
        TrackOptions::default()
    }

    /// The job's wait ends `timeout` after it is tracked, by the store's
    /// clock, whatever restarts happen in between (instead of the client's
    /// wait timeout).
    pub fn wait_timeout(mut self, timeout: Duration) -> TrackOptions {
        self.timeout = Some(timeout);
        self
    }

    /// The wait timeout set by [`wait_timeout`](Self::wait_timeout), if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// What [`Tracker::track`](super::Tracker::track) found: a job it stored
/// now, or one the store already held (which it left as it was: its first
/// meta and deadline stand).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tracked {
    /// No job of this id was stored: it is now.
    New,
    /// The job was tracked before and is not delivered yet (waiting, or
    /// finished and about to be delivered).
    AlreadyTracked,
    /// The job was tracked before and its delivery is recorded.
    AlreadyDelivered,
    /// The job was tracked before and is dead: its handler failed too
    /// often, until [`Tracker::retry_dead`](super::Tracker::retry_dead).
    AlreadyDead,
}

impl Tracked {
    pub(super) fn from_state(state: JobState) -> Tracked {
        match state {
            JobState::Waiting | JobState::Finished => Tracked::AlreadyTracked,
            JobState::Delivered => Tracked::AlreadyDelivered,
            JobState::Dead => Tracked::AlreadyDead,
        }
    }

    /// Whether this call stored the job.
    pub fn is_new(self) -> bool {
        self == Tracked::New
    }
}
