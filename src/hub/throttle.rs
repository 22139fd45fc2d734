use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A limit on how fast polls start, shared by every wait of a client.
///
/// The hub asks before each poll. Implement it over a shared store to limit
/// several processes together.
pub trait Throttle: fmt::Debug + Send + Sync {
    /// Asks to start one poll at `now`: `Ok(())` to go ahead (the permit is
    /// taken), or `Err(when)` to ask again at `when`.
    fn try_acquire(&self, now: Instant) -> Result<(), Instant>;
}

/// A token bucket: `rate` polls a second on average, bursts of up to
/// `burst`.
///
/// ```
/// use goenhance_jobs::{PerSecond, Throttle};
/// use tokio::time::Instant;
///
/// let limit = PerSecond::new(2.0).burst(1);
/// let now = Instant::now();
/// assert!(limit.try_acquire(now).is_ok());
/// let later = limit.try_acquire(now).unwrap_err();
/// assert_eq!(later - now, std::time::Duration::from_millis(500));
/// ```
pub struct PerSecond {
    rate: f64,
    burst: f64,
    state: Mutex<Option<(f64, Instant)>>,
}

impl PerSecond {
    /// `rate` polls a second (at least 0.001), with a burst of
    /// `max(1, rate)`.
    pub fn new(rate: f64) -> Self {
        let rate = if rate.is_finite() {
            rate.max(0.001)
        } else {
            1e9
        };
        PerSecond {
            rate,
            burst: rate.max(1.0),
            state: Mutex::new(None),
        }
    }

    /// Sets the burst (at least 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = f64::from(burst.max(1));
        self
    }
}

impl fmt::Debug for PerSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerSecond")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish()
    }
}

impl Throttle for PerSecond {
    fn try_acquire(&self, now: Instant) -> Result<(), Instant> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = state.unwrap_or((self.burst, now));
        let tokens = (tokens + (now - last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *state = Some((tokens - 1.0, now));
            Ok(())
        } else {
            *state = Some((tokens, now));
            Err(crate::clock::after(
                now,
                Duration::try_from_secs_f64((1.0 - tokens) / self.rate).unwrap_or(Duration::MAX),
            ))
        }
    }
}
