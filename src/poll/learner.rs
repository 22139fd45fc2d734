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

    pub(crate) fn record(&self, job_type: &str, run_time: Duration) {
        let secs = run_time.as_secs_f64();
        if secs.is_nan() || secs < 0.001 {
            return;
        }
        let x = secs.ln();
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
        stats.n = (stats.n + 1).min(WINDOW);
        let weight = 1.0 / f64::from(stats.n);
        let delta = x - stats.mean;
        stats.mean += weight * delta;
        stats.m2 = (1.0 - weight) * (stats.m2 + weight * delta * delta);
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
            });
        }
    }

    pub(crate) fn model(&self, job_type: &str) -> Option<Model> {
        let types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        let s = types.get(job_type)?;
        if s.n < MIN_SAMPLES {
            return None;
        }
        // m2 is the (weighted) population variance; correct it to a sample one.
        let n = f64::from(s.n);
        let var = s.m2 * n / (n - 1.0);
        Some(Model {
            mu: s.mean,
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
