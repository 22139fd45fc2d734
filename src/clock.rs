//! Arithmetic on instants and durations that cannot overflow.
//!
//! Every duration in this crate can come from a setting or from a server
//! (`Retry-After: 9223372036854775807`), so no instant is ever computed with
//! a bare `+`: a time too far ahead becomes [`far_future`], thirty years on,
//! which is as good as never for a wait and still a valid timer.

use std::time::Duration;

use tokio::time::Instant;

/// How far ahead "never" is: later than any wait, far from any limit of the
/// platform's clock, and what tokio itself uses for a timer without end.
pub(crate) const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `at + d`, or thirty years after `at` when `d` is longer than that.
pub(crate) fn after(at: Instant, d: Duration) -> Instant {
    // Thirty years after any instant this process can see always fits.
    at.checked_add(d.min(FAR)).unwrap_or(at)
}

/// The instant that stands for "never" as seen from `now`.
pub(crate) fn far_future(now: Instant) -> Instant {
    after(now, FAR)
}

/// Whole milliseconds of `d`, saturating at `u32::MAX` (49.7 days).
pub(crate) fn ms_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// `d × factor`, saturating at `Duration::MAX`; a factor that is not a
/// finite non-negative number counts as 1.
pub(crate) fn mul_f64(d: Duration, factor: f64) -> Duration {
    let factor = if factor.is_finite() && factor >= 0.0 {
        factor
    } else {
        1.0
    };
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_saturates_at_thirty_years() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), now + FAR);
        assert_eq!(
            after(now, Duration::from_secs(9_223_372_036_854_775_807)),
            now + FAR
        );
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(far_future(now), now + FAR);
    }

    #[test]
    fn milliseconds_saturate() {
        assert_eq!(ms_u32(Duration::MAX), u32::MAX);
        assert_eq!(ms_u32(Duration::from_millis(1234)), 1234);
    }

    #[test]
    fn multiplication_saturates() {
        assert_eq!(mul_f64(Duration::MAX, 2.0), Duration::MAX);
        assert_eq!(mul_f64(Duration::from_secs(2), 0.5), Duration::from_secs(1));
        assert_eq!(
            mul_f64(Duration::from_secs(2), f64::NAN),
            Duration::from_secs(2)
        );
    }
}
