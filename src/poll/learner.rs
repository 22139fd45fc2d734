//! What the adaptive schedule learned: a log-normal fit of run times per job
//! type, in constant memory per type.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// At most this many job types are remembered.
const MAX_TYPES: usize = 256;
/// Samples needed before the fit is used.
const MIN_SAMPLES: u32 = 5;
/// Past this many samples, old ones fade (exponential weighting).
const WINDOW: u32 = 200;
/// The smallest spread the fit may have, so one repeated value does not make
/// the schedule bet everything on one instant.
const MIN_SIGMA: f64 = 0.1;
/// A run time this many standard deviations from the fitted mean (in
/// `ln(seconds)`) contradicts the fit...
const SURPRISE_SIGMAS: f64 = 3.0;
/// ...if it is also more than three times or less than a third of the
/// fitted median (`ln 3`): a fit from a few jobs is too narrow to judge
/// by σ alone.
const SURPRISE_LN: f64 = 1.098_612_288_668_109_8;
/// After this many contradicting run times in a row the fit starts over
/// from them: the jobs of the type changed, or the fit was wrong.
const RESTART_AFTER: u32 = 3;

#[derive(Debug, Default)]
pub(crate) struct Learner {
    types: Mutex<HashMap<Box<str>, Stats>>,
    names: Mutex<HashSet<Arc<str>>>,
}

/// Running mean and variance of `ln(seconds)`.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    n: u32,
    mean: f64,
    m2: f64,
    /// The run times in a row that contradicted the fit (see
    /// [`SURPRISE_SIGMAS`]), kept out of it; empty when the last one did
    /// not. While not empty the fit is in doubt and not used.
    recent: Moments,
}

/// Mean and population variance of a few `ln(seconds)`.
#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    n: u32,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Adds `x`, the oldest values fading once `n` reaches `window`.
    fn push(&mut self, x: f64, window: u32) {
        self.n = (self.n + 1).min(window);
        let weight = 1.0 / f64::from(self.n);
        let delta = x - self.mean;
        self.mean += weight * delta;
        self.m2 = (1.0 - weight) * (self.m2 + weight * delta * delta);
    }
}

/// A log-normal model of run times: `ln(seconds) ~ N(mu, sigma²)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Model {
    pub(crate) mu: f64,
    pub(crate) sigma: f64,
}

impl Learner {
    /// One shared copy of a job type's name, so that waiting jobs of a type
    /// do not each hold their own (at most 256 names are kept).
    pub(crate) fn intern(&self, job_type: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = names.get(job_type) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(job_type);
        if names.len() < MAX_TYPES {
            names.insert(name.clone());
        }
        name
    }

    #[cfg(test)]
    pub(crate) fn record(&self, job_type: &str, run_time: Duration) {
        self.record_between(job_type, run_time, run_time);
    }

    /// Takes in a job of `job_type` that ran between `lo` and `hi`.
    ///
    /// Within the window the run time is taken at the fit's median there
    /// (the middle of the window while there is no fit), so that a wide
    /// window (a job last seen running long before it was seen finished)
    /// moves the fit only as far as it must.
    pub(crate) fn record_between(&self, job_type: &str, lo: Duration, hi: Duration) {
        let hi = hi.as_secs_f64();
        if hi.is_nan() || hi < 0.001 {
            return;
        }
        let lo = lo.as_secs_f64().clamp(0.001, hi);
        let mut types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        if !types.contains_key(job_type) && types.len() >= MAX_TYPES {
            // Forget the type with the least evidence.
            if let Some(victim) = types
                .iter()
                .min_by_key(|(_, s)| s.n)
                .map(|(k, _)| k.clone())
            {
                types.remove(&victim);
            }
        }
        let stats = types.entry(job_type.into()).or_default();
        let x = match stats.fit() {
            Some(m) => m.median_between(lo, hi),
            None => 0.5 * (lo + hi),
        }
        .ln();
        let surprise = stats
            .fit()
            .is_some_and(|m| (x - m.mu).abs() > (SURPRISE_SIGMAS * m.sigma).max(SURPRISE_LN));
        if surprise {
            stats.recent.push(x, RESTART_AFTER);
            if stats.recent.n >= RESTART_AFTER {
                let Moments { n, mean, m2 } = stats.recent;
                *stats = Stats {
                    n,
                    mean,
                    m2,
                    recent: Moments::default(),
                };
            }
            // Left out of the fit: one job far out of line is not evidence
            // enough to change it, and would widen it a lot.
            return;
        }
        stats.recent = Moments::default();
        let mut all = Moments {
            n: stats.n,
            mean: stats.mean,
            m2: stats.m2,
        };
        all.push(x, WINDOW);
        (stats.n, stats.mean, stats.m2) = (all.n, all.mean, all.m2);
    }

    /// What was learned, per job type: `(type, samples, mean, m2)` of
    /// `ln(seconds)`, to keep across restarts.
    pub(crate) fn snapshot(&self) -> Vec<(String, u32, f64, f64)> {
        let types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        types
            .iter()
            .map(|(k, s)| (k.to_string(), s.n, s.mean, s.m2))
            .collect()
    }

    /// Takes in a [`snapshot`](Self::snapshot), for types not learned yet.
    pub(crate) fn restore(&self, learned: &[(String, u32, f64, f64)]) {
        let mut types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        for (name, n, mean, m2) in learned {
            if types.len() >= MAX_TYPES || !mean.is_finite() || !m2.is_finite() {
                continue;
            }
            types.entry(name.as_str().into()).or_insert(Stats {
                n: (*n).min(WINDOW),
                mean: *mean,
                m2: *m2,
                recent: Moments::default(),
            });
        }
    }

    /// The fit of a type, once it has [`MIN_SAMPLES`] run times and while
    /// its latest run times do not contradict it.
    pub(crate) fn model(&self, job_type: &str) -> Option<Model> {
        let types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        let s = types.get(job_type)?;
        if s.recent.n > 0 {
            return None;
        }
        s.fit()
    }
}

impl Stats {
    fn fit(&self) -> Option<Model> {
        if self.n < MIN_SAMPLES {
            return None;
        }
        // m2 is the (weighted) population variance; correct it to a sample one.
        let n = f64::from(self.n);
        let var = self.m2 * n / (n - 1.0);
        Some(Model {
            mu: self.mean,
            sigma: var.sqrt().max(MIN_SIGMA),
        })
    }
}

/// Below this survival probability a job is "later than the model knows".
const TAIL: f64 = 1e-3;

impl Model {
    fn survival(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 1.0;
        }
        let z = (t.ln() - self.mu) / self.sigma;
        0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
    }

    /// The interval before the next poll of a job that has waited `since`
    /// and was `initial_age` old (by the server's clock) when first seen.
    ///
    /// An initial age the model finds implausible is taken for clock skew
    /// and ignored. A job older than the model's 99.9 % quantile is late:
    /// it is polled every tenth of its age.
    pub(crate) fn next_interval(
        &self,
        initial_age: Duration,
        since: Duration,
        tradeoff: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let mut age = initial_age.saturating_add(since);
        if self.survival(age.as_secs_f64()) < TAIL && self.survival(since.as_secs_f64()) >= TAIL {
            age = since;
        }
        if self.survival(age.as_secs_f64()) < TAIL {
            return age.mul_f64(0.1).clamp(min, max);
        }
        self.interval(age, tradeoff, min, max)
    }

    /// The median run time, in seconds, of the jobs that end between `lo`
    /// and `hi` seconds (`0 < lo ≤ hi`); the end nearest the bulk of the
    /// fit when it puts (almost) nothing there.
    fn median_between(&self, lo: f64, hi: f64) -> f64 {
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
        let z = (t.ln() - self.mu) / self.sigma;
        let survival = self.survival(t);
        if survival > 1e-300 {
            -survival.ln()
        } else {
            // Far in the tail: the asymptotic form of the normal tail.
            z * z / 2.0 + (z * (2.0 * std::f64::consts::PI).sqrt()).ln()
        }
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
        let a = age.as_secs_f64();
        let c = tradeoff.as_secs_f64();
        let base = self.cumulative_hazard(a);
        let cost = |h: f64| h * (self.cumulative_hazard(a + h) - base);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_five_samples_then_fits_the_log_mean() {
        let l = Learner::default();
        for _ in 0..4 {
            l.record("t", Duration::from_secs(90));
        }
        assert_eq!(l.model("t"), None);
        l.record("t", Duration::from_secs(90));
        let m = l.model("t").unwrap();
        assert!((m.mu - 90f64.ln()).abs() < 1e-9);
        assert_eq!(m.sigma, MIN_SIGMA);
        assert_eq!(l.model("other"), None);
    }

    #[test]
    fn memory_is_bounded_by_type_count() {
        let l = Learner::default();
        for i in 0..(MAX_TYPES + 50) {
            l.record(&format!("type-{i}"), Duration::from_secs(1));
        }
        assert_eq!(l.types.lock().unwrap().len(), MAX_TYPES);
    }

    #[test]
    fn a_lone_contradicting_run_time_is_left_out_of_the_fit() {
        let l = Learner::default();
        for _ in 0..10 {
            l.record("t", Duration::from_secs(90));
        }
        l.record("t", Duration::from_secs(3));
        // In doubt: not used until a run time agrees with it again.
        assert_eq!(l.model("t"), None);
        l.record("t", Duration::from_secs(90));
        let m = l.model("t").unwrap();
        assert!((m.mu - 90f64.ln()).abs() < 1e-12, "{m:?}");
        assert_eq!(m.sigma, MIN_SIGMA);
    }

    #[test]
    fn three_contradicting_run_times_in_a_row_restart_the_fit() {
        let l = Learner::default();
        for _ in 0..10 {
            l.record("t", Duration::from_secs(90));
        }
        for _ in 0..3 {
            l.record("t", Duration::from_secs(3));
        }
        // Restarted from the three: not used before five run times.
        assert_eq!(l.model("t"), None);
        l.record("t", Duration::from_secs(3));
        assert_eq!(l.model("t"), None);
        l.record("t", Duration::from_secs(3));
        let m = l.model("t").unwrap();
        assert!((m.mu - 3f64.ln()).abs() < 1e-12, "{m:?}");
    }

    #[test]
    fn within_a_factor_of_three_nothing_contradicts_a_tight_fit() {
        // 3σ is 0.3 in ln(seconds); 2.9 × the median is still no surprise,
        // 3.1 × or a 3.1th is.
        for (run, surprise) in [(261, false), (279, true), (31, false), (29, true)] {
            let l = Learner::default();
            for _ in 0..10 {
                l.record("t", Duration::from_secs(90));
            }
            l.record("t", Duration::from_secs(run));
            assert_eq!(l.model("t").is_none(), surprise, "{run} s");
        }
    }

    #[test]
    fn a_window_is_taken_at_the_fits_median_in_it() {
        let l = Learner::default();
        // No fit yet: the middle of the window.
        for _ in 0..5 {
            l.record_between("t", Duration::from_secs(2), Duration::from_secs(4));
        }
        let m = l.model("t").unwrap();
        assert!((m.mu - 3f64.ln()).abs() < 1e-12, "{m:?}");
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
}
