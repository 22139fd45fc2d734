//! Exponential backoff with jitter: the one delay schedule of retries
//! ([`RetryPolicy`](crate::RetryPolicy)) and of the exponential poll
//! schedule ([`PollPolicy::exponential`](crate::PollPolicy::exponential)).
//!
//! ```
//! use std::time::Duration;
//! use goenhance_jobs::backoff::{ExponentialBackoff, Jitter};
//!
//! let b = ExponentialBackoff::default()
//!     .initial(Duration::from_millis(100))
//!     .max(Duration::from_secs(1))
//!     .jitter(Jitter::None);
//! let delays: Vec<_> = (0..6).map(|n| b.base_delay(n).as_millis()).collect();
//! assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
//! ```

use std::time::Duration;

/// How much randomness a delay gets.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Jitter {
    /// The delay as computed.
    None,
    /// Uniform in `[0, delay]` ("full jitter"): spreads callers that failed
    /// together the most.
    Full,
    /// Uniform in `[delay × (1 − f), delay × (1 + f)]`, with `f` in `[0, 1]`.
    Proportional(f64),
}

impl Jitter {
    pub(crate) fn apply(self, delay: Duration, rng: &mut fastrand::Rng) -> Duration {
        match self {
            Jitter::None => delay,
            Jitter::Full => crate::clock::mul_f64(delay, rng.f64()),
            Jitter::Proportional(f) => {
                let f = if f.is_nan() { 0.0 } else { f.clamp(0.0, 1.0) };
                crate::clock::mul_f64(delay, 1.0 - f + 2.0 * f * rng.f64())
            }
        }
    }
}

/// Exponential backoff: `initial × factor^n`, capped at `max`, then
/// jittered.
///
/// ```
/// use std::time::Duration;
/// use goenhance_jobs::backoff::{ExponentialBackoff, Jitter};
///
/// let b = ExponentialBackoff::new(Duration::from_millis(200), 2.0, Duration::from_secs(10))
///     .jitter(Jitter::None);
/// let delays: Vec<_> = (0..7).map(|n| b.base_delay(n).as_millis()).collect();
/// assert_eq!(delays, [200, 400, 800, 1600, 3200, 6400, 10000]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackoff {
    initial: Duration,
    factor: f64,
    max: Duration,
    jitter: Jitter,
}

/// 200 ms × 2ⁿ up to 10 s with full jitter: the retry defaults.
impl Default for ExponentialBackoff {
    fn default() -> Self {
        ExponentialBackoff::new(Duration::from_millis(200), 2.0, Duration::from_secs(10))
    }
}

impl ExponentialBackoff {
    /// Starts at `initial`, multiplies by `factor` (at least 1) each step, never
    /// above `max`; full jitter unless changed.
    pub fn new(initial: Duration, factor: f64, max: Duration) -> Self {
        ExponentialBackoff {
            initial,
            factor: 1.0,
            max: max.max(initial),
            jitter: Jitter::Full,
        }
        .factor(factor)
    }

    /// Sets the first delay (the cap rises to it if it was lower).
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self.max = self.max.max(initial);
        self
    }

    /// Sets the growth factor: at least 1; one that is not a finite number
    /// counts as 1.
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Sets the longest delay (the first delay falls to it if it was
    /// higher).
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self.initial = self.initial.min(max);
        self
    }

    /// Sets the jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first delay.
    pub(crate) fn get_initial(&self) -> Duration {
        self.initial
    }

    /// The growth factor.
    pub(crate) fn get_factor(&self) -> f64 {
        self.factor
    }

    /// The longest delay.
    pub(crate) fn get_max(&self) -> Duration {
        self.max
    }

    /// The delay before retry number `n + 1` (`n` from 0), before jitter.
    pub fn base_delay(&self, n: u32) -> Duration {
        let secs = self.initial.as_secs_f64() * self.factor.powi(n.min(1024) as i32);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before retry number `n + 1`, jittered with `rng`.
    pub(crate) fn delay(&self, n: u32, rng: &mut fastrand::Rng) -> Duration {
        self.jitter.apply(self.base_delay(n), rng)
    }
}
