//! The tracker's clocks: the store's wall clock as read here, and tokio
//! instants of store times.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// The wall clock as tokio's clock moves: the system's time when it was
/// made, in whole milliseconds (as stores keep times), plus tokio's time
/// since. On a paused clock it moves only when tokio's does, and a time read
/// from it, kept in milliseconds and turned back into an instant lands on
/// the instant it was read at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokioWall {
    wall0: SystemTime,
    t0: Instant,
}

impl TokioWall {
    pub(crate) fn new() -> TokioWall {
        TokioWall {
            wall0: super::store::from_ms(super::store::to_ms(SystemTime::now())),
            t0: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.wall0 + Instant::now().saturating_duration_since(self.t0)
    }
}

/// Moves `t` by `offset_ms` milliseconds (a skewed host's reading).
pub(crate) fn shift(t: SystemTime, offset_ms: i64) -> SystemTime {
    let by = Duration::from_millis(offset_ms.unsigned_abs());
    if offset_ms >= 0 {
        t + by
    } else {
        t.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The tokio instant of the store time `t`, given that the store's clock
/// read `now` at the tokio instant `at`; times before anything this
/// process can measure come out as the earliest instant it can.
pub(crate) fn instant_of(t: SystemTime, now: SystemTime, at: Instant) -> Instant {
    match t.duration_since(now) {
        Ok(ahead) => at + ahead,
        Err(e) => at.checked_sub(e.duration()).unwrap_or(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_times_become_instants_around_the_reading() {
        let at = Instant::now();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = now + Duration::from_millis(1500);
        assert_eq!(instant_of(later, now, at), at + Duration::from_millis(1500));
        assert_eq!(instant_of(now, now, at), at);
        assert_eq!(
            shift(now, -2_000),
            SystemTime::UNIX_EPOCH + Duration::from_secs(998)
        );
        assert_eq!(shift(now, 30_000), now + Duration::from_secs(30));
    }
}
