//! A log-normal model of a job type's run times, and the poll schedule it
//! gives: sparse while a job is young, dense around its likely end.

use std::time::Duration;

/// Below this survival probability a job is "later than the model knows".
const TAIL: f64 = 1e-3;

/// A log-normal model of run times: `ln(seconds) ~ N(mu, sigma²)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Model {
    pub(crate) mu: f64,
    pub(crate) sigma: f64,
}

/// `ln(1 − Φ(a))`, the log of the standard normal's upper tail at `a`,
/// accurate far into the tail.
pub(super) fn ln_upper_tail(a: f64) -> f64 {
    let q = 0.5 * libm::erfc(a / std::f64::consts::SQRT_2);
    if q > 1e-300 {
        q.ln()
    } else {
        // The asymptotic form of the normal tail.
        -0.5 * a * a - (a * (2.0 * std::f64::consts::PI).sqrt()).ln()
    }
}

/// The inverse Mills ratio `φ(a) / (1 − Φ(a))`: the mean of a standard
/// normal above `a`.
pub(super) fn inverse_mills(a: f64) -> f64 {
    let q = 0.5 * libm::erfc(a / std::f64::consts::SQRT_2);
    if q > 1e-300 {
        (-0.5 * a * a).exp() / (2.0 * std::f64::consts::PI).sqrt() / q
    } else {
        a + 1.0 / a - 2.0 / (a * a * a)
    }
}

impl Model {
    fn survival(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 1.0;
        }
        let z = (t.ln() - self.mu) / self.sigma;
        0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
    }

    /// Whether a job that the server says was `age` old when first seen is
    /// past the model's 99.9 % quantile already: the server's start time is
    /// then taken for a wrong clock, not believed.
    pub(crate) fn implausible(&self, age: Duration) -> bool {
        self.survival(age.as_secs_f64()) < TAIL
    }

    /// The interval before the next poll of a job that is `age` old (the
    /// age the wait believes) and was first seen `since` ago.
    ///
    /// A job older than the model's 99.9 % quantile is late: it is polled
    /// every tenth of the time since it was first seen, never of an age
    /// the server claimed.
    pub(crate) fn next_interval(
        &self,
        age: Duration,
        since: Duration,
        tradeoff: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        if self.survival(age.as_secs_f64()) < TAIL {
            return since.mul_f64(0.1).clamp(min, max);
        }
        self.interval(age, tradeoff, min, max)
    }

    /// The median run time, in seconds, of the jobs that end between `lo`
    /// and `hi` seconds (`0 < lo ≤ hi`); the end nearest the bulk of the
    /// fit when it puts (almost) nothing there.
    pub(super) fn median_between(&self, lo: f64, hi: f64) -> f64 {
        let (s_lo, s_hi) = (self.survival(lo), self.survival(hi));
        if s_lo - s_hi < 1e-12 {
            return if hi.ln() < self.mu { hi } else { lo };
        }
        let target = 0.5 * (s_lo + s_hi);
        let (mut a, mut b) = (lo.ln(), hi.ln());
        for _ in 0..50 {
            let mid = 0.5 * (a + b);
            if self.survival(mid.exp()) > target {
                a = mid;
            } else {
                b = mid;
            }
        }
        (0.5 * (a + b)).exp()
    }

    /// The cumulative hazard `-ln S(t)` at `t` seconds.
    fn cumulative_hazard(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        -ln_upper_tail((t.ln() - self.mu) / self.sigma)
    }

    /// The interval `h` in `[min, max]` after which a job of age `age` should
    /// be polled: `h × (Λ(age + h) − Λ(age)) = tradeoff`.
    pub(crate) fn interval(
        &self,
        age: Duration,
        tradeoff: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        interval_for(age, tradeoff, min, max, |t| self.cumulative_hazard(t))
    }
}

/// The interval `h` in `[min, max]` with `h × (Λ(age + h) − Λ(age)) =
/// tradeoff`, for a cumulative hazard `Λ` (seconds in, nondecreasing), by
/// bisection: the rule of every schedule that has a run-time distribution.
pub(super) fn interval_for(
    age: Duration,
    tradeoff: Duration,
    min: Duration,
    max: Duration,
    mut cumulative_hazard: impl FnMut(f64) -> f64,
) -> Duration {
    let a = age.as_secs_f64();
    let c = tradeoff.as_secs_f64();
    let base = cumulative_hazard(a);
    let mut cost = |h: f64| h * (cumulative_hazard(a + h) - base);
    let (lo, hi) = (min.as_secs_f64(), max.as_secs_f64());
    if cost(lo) >= c {
        return min;
    }
    if cost(hi) <= c {
        return max;
    }
    let (mut lo, mut hi) = (lo, hi);
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if cost(mid) > c {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Duration::try_from_secs_f64(lo).unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_taken_at_the_fits_median_in_it() {
        let m = Model {
            mu: 0.0,
            sigma: 1.0,
        };
        let e = std::f64::consts::E;
        assert!((m.median_between(1.0 / e, e) - 1.0).abs() < 1e-9);
        assert!((m.median_between(1.0, 1.0) - 1.0).abs() < 1e-9);
        // Where the fit puts nothing: the end nearest its bulk.
        let tight = Model {
            mu: 0.0,
            sigma: 0.1,
        };
        assert_eq!(tight.median_between(100.0, 200.0), 100.0);
        assert_eq!(tight.median_between(0.001, 0.01), 0.01);
    }

    #[test]
    fn sparse_when_young_dense_near_the_median() {
        let m = Model {
            mu: 90f64.ln(),
            sigma: 0.35,
        };
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let c = Duration::from_millis(360);
        let young = m.interval(Duration::from_secs(1), c, min, max);
        let near = m.interval(Duration::from_secs(90), c, min, max);
        assert!(young > Duration::from_secs(20), "{young:?}");
        assert!(near < Duration::from_secs(8), "{near:?}");
        assert!(near >= min);
    }

    #[test]
    fn a_late_job_is_polled_at_a_tenth_of_the_time_since_first_seen() {
        // 3 s jobs: a job believed 1 h old is late, and is polled every
        // tenth of the 20 s it has been waited on, not every tenth of 1 h
        // (6 min, clamped to 60 s).
        let m = Model {
            mu: 3f64.ln(),
            sigma: 0.1,
        };
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let c = Duration::from_millis(330);
        let h = m.next_interval(
            Duration::from_secs(3620),
            Duration::from_secs(20),
            c,
            min,
            max,
        );
        assert_eq!(h, Duration::from_secs(2));
        assert!(m.implausible(Duration::from_secs(3600)));
        assert!(!m.implausible(Duration::from_secs(2)));
    }

    #[test]
    fn the_tail_functions_agree_with_their_exact_forms_and_stay_finite() {
        for a in [-3.0, 0.0, 1.5, 5.0] {
            let q: f64 = 0.5 * libm::erfc(a / std::f64::consts::SQRT_2);
            assert!((ln_upper_tail(a) - q.ln()).abs() < 1e-12);
        }
        // λ(0) = φ(0) / ½ = √(2/π).
        assert!((inverse_mills(0.0) - (2.0 / std::f64::consts::PI).sqrt()).abs() < 1e-12);
        for a in [40.0, 100.0] {
            assert!(ln_upper_tail(a).is_finite());
            assert!((inverse_mills(a) - a).abs() < 0.1);
        }
    }
}
