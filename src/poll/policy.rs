use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::{ExponentialBackoff, Jitter};

use super::learner::Learner;

/// The default wait deadline: 30 minutes.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// When to poll a job, and when to give up on it.
///
/// Three schedules: [`fixed`](PollPolicy::fixed),
/// [`exponential`](PollPolicy::exponential) and
/// [`adaptive`](PollPolicy::adaptive) (the default). The first poll is
/// always at once; every later interval stays between
/// [`min_interval`](PollPolicy::min_interval) and
/// [`max_interval`](PollPolicy::max_interval), and the last poll is clamped
/// to the deadline ([`timeout`](PollPolicy::timeout), default 30 min).
///
/// | setting | default |
/// |---|---|
/// | schedule | adaptive (no history yet: 1 s × 1.5ⁿ up to 15 s) |
/// | interval bounds | 1 s to 60 s |
/// | jitter | ±10 % (exponential, adaptive); none (fixed) |
/// | deadline | 30 min |
/// | stall detection | off |
/// | consecutive failures allowed | unlimited (until the deadline) |
///
/// ```
/// use std::time::Duration;
/// use goenhance_jobs::PollPolicy;
///
/// let aws_like = PollPolicy::exponential(Duration::from_secs(2), Duration::from_secs(120))
///     .timeout(Duration::from_secs(600))
///     .stall_after(Duration::from_secs(300));
/// let docs_like = PollPolicy::fixed(Duration::from_secs(5));
/// # drop((aws_like, docs_like));
/// ```
///
/// Clones share what the adaptive schedule learned.
#[derive(Clone)]
pub struct PollPolicy {
    pub(crate) schedule: Schedule,
    pub(crate) min_interval: Duration,
    pub(crate) max_interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) stall_after: Option<Duration>,
    pub(crate) max_consecutive_failures: Option<u32>,
    pub(crate) jitter: Jitter,
    pub(crate) seed: Option<u64>,
    /// The jitter seed when none is set: drawn once per policy.
    random_seed: u64,
    pub(crate) learner: Arc<Learner>,
}

#[derive(Clone, Debug)]
pub(crate) enum Schedule {
    Fixed(Duration),
    Exponential(ExponentialBackoff),
    Adaptive { tradeoff: Duration },
}

/// The schedule the adaptive policy follows while it knows nothing of a job
/// type.
pub(crate) fn adaptive_fallback() -> ExponentialBackoff {
    ExponentialBackoff::new(Duration::from_secs(1), 1.5, Duration::from_secs(15))
        .jitter(Jitter::None)
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy::adaptive()
    }
}

impl PollPolicy {
    fn with_schedule(schedule: Schedule, min: Duration, max: Duration, jitter: Jitter) -> Self {
        PollPolicy {
            schedule,
            min_interval: min,
            max_interval: max.max(min),
            timeout: DEFAULT_WAIT_TIMEOUT,
            stall_after: None,
            max_consecutive_failures: None,
            jitter,
            seed: None,
            random_seed: fastrand::u64(..),
            learner: Arc::new(Learner::default()),
        }
    }

    /// Polls every `interval`, without jitter (the GoEnhance docs suggest
    /// 5 s).
    pub fn fixed(interval: Duration) -> Self {
        PollPolicy::with_schedule(Schedule::Fixed(interval), interval, interval, Jitter::None)
    }

    /// Polls after `initial`, then × 2 each time up to `max`, with ±10 %
    /// jitter (AWS's waiters use 2 s to 120 s).
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        PollPolicy::with_schedule(
            Schedule::Exponential(ExponentialBackoff::new(initial, 2.0, max).jitter(Jitter::None)),
            initial,
            max,
            Jitter::Proportional(0.1),
        )
    }

    /// The default: learns how long jobs of each `job_type` take, from the
    /// jobs this policy (and its clones) saw finish, and polls sparsely while
    /// a job is young and densely around its likely finish.
    ///
    /// It fits a log-normal to the run times of each type and picks each
    /// interval `h` so that `h × P(finish within h | still running) ≈
    /// tradeoff` (default 0.33 s): the expected wasted wait a poll buys
    /// back. A run time is the server's `end_time − start_time` when it
    /// agrees with what the wait saw (the last answer that said running,
    /// the first that said finished), else what the wait saw: wrong server
    /// times (a stopped clock, a placeholder date) are not learned, nor is
    /// a job already finished when first seen. Until
    /// five jobs of a type have finished it polls at 1 s × 1.5ⁿ up to 15 s,
    /// and so it does again while the latest job of a type contradicts the
    /// fit (more than three times or less than a third of its median, and
    /// 3σ off); after three such jobs in a row the fit starts over from
    /// them. Memory is bounded: a few numbers per type, at most 256 types.
    pub fn adaptive() -> Self {
        PollPolicy::with_schedule(
            Schedule::Adaptive {
                tradeoff: Duration::from_millis(330),
            },
            Duration::from_secs(1),
            Duration::from_secs(60),
            Jitter::Proportional(0.1),
        )
    }

    /// For the adaptive schedule: the detection delay a poll must buy back
    /// (default 330 ms). Larger means fewer polls and later detection.
    pub fn tradeoff(mut self, tradeoff: Duration) -> Self {
        if let Schedule::Adaptive { tradeoff: t } = &mut self.schedule {
            *t = tradeoff;
        }
        self
    }

    /// For the exponential schedule: the growth factor (default 2).
    pub fn factor(mut self, factor: f64) -> Self {
        if let Schedule::Exponential(b) = &mut self.schedule {
            *b = b.factor(factor);
        }
        self
    }

    /// The shortest interval between polls.
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self.max_interval = self.max_interval.max(interval);
        self
    }

    /// The longest interval between polls.
    pub fn max_interval(mut self, interval: Duration) -> Self {
        self.max_interval = interval;
        self.min_interval = self.min_interval.min(interval);
        self
    }

    /// The deadline of a wait (default 30 min).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Ends a wait whose job keeps the same status for `after`
    /// ([`Error::is_stall`](crate::Error::is_stall)). Off by default.
    pub fn stall_after(mut self, after: Duration) -> Self {
        self.stall_after = Some(after);
        self
    }

    /// Ends a wait after `n` polls in a row failed with transient errors. By
    /// default they never end a wait before its deadline.
    pub fn max_consecutive_failures(mut self, n: u32) -> Self {
        self.max_consecutive_failures = Some(n.max(1));
        self
    }

    /// The jitter of each interval.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Seeds the jitter, for reproducible schedules.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub(crate) fn jitter_seed(&self) -> u64 {
        self.seed.unwrap_or(self.random_seed)
    }

    /// The deadline of a wait.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The shortest interval between polls.
    pub fn get_min_interval(&self) -> Duration {
        self.min_interval
    }

    /// The longest interval between polls.
    pub fn get_max_interval(&self) -> Duration {
        self.max_interval
    }

    /// After how long without a status change a wait ends, if set.
    pub fn get_stall_after(&self) -> Option<Duration> {
        self.stall_after
    }
}

impl fmt::Debug for PollPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollPolicy")
            .field("schedule", &self.schedule)
            .field("min_interval", &self.min_interval)
            .field("max_interval", &self.max_interval)
            .field("timeout", &self.timeout)
            .field("stall_after", &self.stall_after)
            .field("max_consecutive_failures", &self.max_consecutive_failures)
            .field("jitter", &self.jitter)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}
