//! The tracker's clock: wall-clock milliseconds that move with tokio's clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Wall-clock milliseconds that move with tokio's clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    wall0: i64,
    t0: Instant,
}

impl Clock {
    /// One clock per process, so that every tracker in it agrees.
    pub(crate) fn shared() -> Clock {
        static CLOCK: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
        *CLOCK.get_or_init(Clock::new)
    }

    fn new() -> Clock {
        let wall0 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Clock {
            wall0,
            t0: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        let since = Instant::now().saturating_duration_since(self.t0);
        self.wall0
            .saturating_add(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// The tokio instant of a wall-clock time; times before this process
    /// could measure come out as the earliest instant it can.
    pub(crate) fn instant(&self, ms: i64) -> Instant {
        let now_ms = self.now_ms();
        let now = Instant::now();
        if ms >= now_ms {
            now + Duration::from_millis(u64::try_from(ms - now_ms).unwrap_or(0))
        } else {
            let back = Duration::from_millis(u64::try_from(now_ms - ms).unwrap_or(0));
            now.checked_sub(back).unwrap_or(now)
        }
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
