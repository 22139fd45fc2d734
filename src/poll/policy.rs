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
/// | schedule | adaptive (no history yet: 1 s × 1.5ⁿ up to 15 s, sparser while many jobs of the type run) |
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

/// Which schedule a [`PollPolicy`] follows, with the settings of that
/// schedule and no other, so no setting can be given to a schedule that
/// would ignore it.
///
/// ```
/// use std::time::Duration;
/// use goenhance_jobs::{PollPolicy, PollSchedule};
///
/// let gentle = PollPolicy::new(PollSchedule::Exponential {
///     initial: Duration::from_secs(2),
///     factor: 1.5,
///     max: Duration::from_secs(60),
/// });
/// let sparse = PollPolicy::new(PollSchedule::Adaptive {
///     tradeoff: Duration::from_millis(500),
/// });
/// assert_eq!(
///     sparse.schedule(),
///     PollSchedule::Adaptive { tradeoff: Duration::from_millis(500) }
/// );
/// // A factor below 1 would shrink the intervals: it counts as 1.
/// let flat = PollPolicy::new(PollSchedule::Exponential {
///     initial: Duration::from_secs(3),
///     factor: 0.5,
///     max: Duration::from_secs(60),
/// });
/// assert_eq!(
///     flat.schedule(),
///     PollSchedule::Exponential {
///         initial: Duration::from_secs(3),
///         factor: 1.0,
///         max: Duration::from_secs(60),
///     }
/// );
/// # drop(gentle);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum PollSchedule {
    /// Every `interval`, without jitter ([`PollPolicy::fixed`]).
    Fixed {
        /// The time between polls.
        interval: Duration,
    },
    /// After `initial`, then × `factor` each time up to `max`, with ±10 %
    /// jitter ([`PollPolicy::exponential`] has `factor` 2).
    Exponential {
        /// The first interval.
        initial: Duration,
        /// The growth of each interval over the one before (at least 1).
        factor: f64,
        /// The longest interval.
        max: Duration,
    },
    /// What [`PollPolicy::adaptive`] describes, with the detection delay a
    /// poll must buy back (330 ms there): larger means fewer polls and
    /// later detection.
    Adaptive {
        /// The expected wasted wait a poll buys back.
        tradeoff: Duration,
    },
}

impl PollPolicy {
    /// A policy that follows `schedule`, with that schedule's defaults for
    /// the interval bounds and jitter: those of [`fixed`](Self::fixed),
    /// [`exponential`](Self::exponential) and [`adaptive`](Self::adaptive).
    pub fn new(schedule: PollSchedule) -> Self {
        match schedule {
            PollSchedule::Fixed { interval } => PollPolicy::with_schedule(
                Schedule::Fixed(interval),
                interval,
                interval,
                Jitter::None,
            ),
            PollSchedule::Exponential {
                initial,
                factor,
                max,
            } => PollPolicy::with_schedule(
                Schedule::Exponential(
                    ExponentialBackoff::new(initial, factor, max).jitter(Jitter::None),
                ),
                initial,
                max,
                Jitter::Proportional(0.1),
            ),
            PollSchedule::Adaptive { tradeoff } => PollPolicy::with_schedule(
                Schedule::Adaptive { tradeoff },
                Duration::from_secs(1),
                Duration::from_secs(60),
                Jitter::Proportional(0.1),
            ),
        }
    }

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
        PollPolicy::new(PollSchedule::Fixed { interval })
    }

    /// Polls after `initial`, then × 2 each time up to `max`, with ±10 %
    /// jitter (AWS's waiters use 2 s to 120 s). Another factor:
    /// [`PollSchedule::Exponential`].
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        PollPolicy::new(PollSchedule::Exponential {
            initial,
            factor: 2.0,
            max,
        })
    }

    /// The default: learns how long jobs of each `job_type` take, from the
    /// jobs this policy (and its clones) saw finish, and polls sparsely while
    /// a job is young and densely around its likely finish.
    ///
    /// It fits a log-normal to the run times of each type and picks each
    /// interval `h` so that `h × P(finish within h | still running) ≈
    /// tradeoff` (default 0.33 s, another with [`PollSchedule::Adaptive`]):
    /// the expected wasted wait a poll buys
    /// back. A run time is the server's `end_time − start_time` when it
    /// agrees with what the wait saw (the last answer that said running,
    /// the first that said finished), else what the wait saw: wrong server
    /// times (a stopped clock, a placeholder date) are not learned, nor is
    /// a job already finished when first seen. Until
    /// five jobs of a type have finished it polls at 1 s × 1.5ⁿ up to 15 s,
    /// or sparser when ten or more jobs of the type are running: many jobs
    /// running without an end (and the first few that ended) are evidence
    /// of how long the type takes, weighed in a posterior over the
    /// log-normal whose predictive hazard gives the interval, never more
    /// than the time since the job was first seen plus 1 s. Waits run by a
    /// [`Client`](crate::Client) (`wait`, `wait_all`, tracking: one
    /// scheduler that can time a wait again) go further while more than 64
    /// jobs of a type run and none has ended: about 64 of them, drawn by
    /// id, are its scouts, polled on that evidence at half the tradeoff,
    /// and the others wait up to the longest interval, each timed again
    /// from its last answer as soon as a job of the type ends. After two
    /// ends, or one failure, every wait follows the evidence again (a
    /// batch that fails fast is seen failing by all its waits within about
    /// twice its run time + 1 s). It polls at
    /// 1 s × 1.5ⁿ again while the latest job of a type contradicts the
    /// fit (more than three times or less than a third of its median, and
    /// 3σ off); after three such jobs in a row the fit starts over from
    /// them. Memory is bounded: a few numbers per type (and, while a type
    /// has no fit and several jobs running, its posterior: at most 32 KiB),
    /// at most 256 types.
    pub fn adaptive() -> Self {
        PollPolicy::new(PollSchedule::Adaptive {
            tradeoff: Duration::from_millis(330),
        })
    }

    /// The schedule this policy follows.
    pub fn schedule(&self) -> PollSchedule {
        match &self.schedule {
            Schedule::Fixed(interval) => PollSchedule::Fixed {
                interval: *interval,
            },
            Schedule::Exponential(b) => PollSchedule::Exponential {
                initial: b.get_initial(),
                factor: b.get_factor(),
                max: b.get_max(),
            },
            Schedule::Adaptive { tradeoff } => PollSchedule::Adaptive {
                tradeoff: *tradeoff,
            },
        }
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
