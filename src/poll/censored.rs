//! Jobs still running as evidence: lower bounds on their run times, and
//! the log-normal fit that counts them (right-censored maximum likelihood).
//!
//! A batch of jobs started together ends shortest first: a fit of the jobs
//! that ended so far is a fit of the short ones. Each job still running
//! says its run time is at least its age at the last answer that said it
//! was running; the fit maximises the likelihood of both kinds of
//! evidence, `Π f(xᵢ) × Π S(cⱼ)`, by a few Newton steps (an EM step where
//! Newton's would not climb). Bounds are kept as counts per bucket of
//! `ln(seconds)`, so memory and the cost of a fit do not grow with the
//! jobs running.

use std::time::Duration;

use super::model::{inverse_mills, ln_upper_tail, Model};

/// Buckets per unit of `ln(seconds)`: a bound is rounded down by at most
/// 6 %, which keeps it a lower bound.
pub(super) const PER_LN: f64 = 16.0;
/// `ln(0.25)`: bounds under a quarter of a second say next to nothing and
/// share one bucket that the fit leaves out.
pub(super) const LOWEST_LN: f64 = -1.386_294_361_119_890_6;
/// The bucket of a job not counted.
pub(crate) const NONE: u8 = 0;
/// The bucket of bounds under a quarter of a second: counted as running,
/// left out of the fit.
const SHORT: u8 = 1;
/// Newton or EM steps per fit, at most.
const MAX_STEPS: usize = 40;
/// The smallest spread the search may try.
const SIGMA_FLOOR: f64 = 0.01;

/// The bucket of a lower bound on a run time.
pub(crate) fn bucket(bound: Duration) -> u8 {
    let s = bound.as_secs_f64();
    if s < 0.25 {
        return SHORT;
    }
    let b = ((s.ln() - LOWEST_LN) * PER_LN).floor() + 2.0;
    // In range: 2 ≤ b, and past 255 (22 days) the bound is the last bucket's.
    b.min(255.0) as u8
}

/// The lower bound, in `ln(seconds)`, that bucket `b` (≥ 2) stands for.
fn bound_ln(b: u8) -> f64 {
    LOWEST_LN + f64::from(b - 2) / PER_LN
}

/// Jobs still running: how many, and a count per bucket of their bounds.
#[derive(Debug, Default, Clone)]
pub(crate) struct Bounds {
    /// (bucket, jobs), by bucket; no zero counts.
    counts: Vec<(u8, u32)>,
    running: u32,
}

impl Bounds {
    /// Jobs counted as running.
    pub(crate) fn running(&self) -> u32 {
        self.running
    }

    /// Moves one job's bound from bucket `from` to bucket `to`; [`NONE`]
    /// as `from` counts a new job, as `to` forgets one.
    pub(crate) fn shift(&mut self, from: u8, to: u8) {
        if from == to {
            return;
        }
        if from != NONE {
            if let Ok(i) = self.counts.binary_search_by_key(&from, |&(b, _)| b) {
                self.counts[i].1 -= 1;
                if self.counts[i].1 == 0 {
                    self.counts.remove(i);
                }
                self.running -= 1;
            }
        }
        if to != NONE {
            match self.counts.binary_search_by_key(&to, |&(b, _)| b) {
                Ok(i) => self.counts[i].1 += 1,
                Err(i) => self.counts.insert(i, (to, 1)),
            }
            self.running += 1;
        }
    }

    /// `(ln bound, jobs)` of the bounds the fit counts.
    pub(super) fn informative(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.counts
            .iter()
            .filter(|&&(b, _)| b > SHORT)
            .map(|&(b, n)| (bound_ln(b), f64::from(n)))
    }

    /// The jobs whose bounds the fit counts, and the sum of their buckets.
    pub(crate) fn informative_sum(&self) -> (u32, u64) {
        self.counts
            .iter()
            .filter(|&&(b, _)| b > SHORT)
            .fold((0, 0), |(n, sum), &(b, m)| {
                (n + m, sum + u64::from(b) * u64::from(m))
            })
    }
}

/// The evidence: `n` ended jobs (a weight) with mean `mean` and population
/// variance `var` of `ln(seconds)`, and the bounds of the jobs running.
struct Evidence {
    n: f64,
    mean: f64,
    var: f64,
    censored: Vec<(f64, f64)>,
}

impl Evidence {
    fn log_likelihood(&self, mu: f64, sigma: f64) -> f64 {
        let d = self.n * (self.var + (self.mean - mu).powi(2));
        let mut l = -self.n * sigma.ln() - d / (2.0 * sigma * sigma);
        for &(c, m) in &self.censored {
            l += m * ln_upper_tail((c - mu) / sigma);
        }
        l
    }

    /// The Newton step from `(mu, sigma)`, if the likelihood is concave
    /// there.
    fn newton(&self, mu: f64, sigma: f64) -> Option<(f64, f64)> {
        let s2 = sigma * sigma;
        let dm = self.mean - mu;
        let d = self.n * (self.var + dm * dm);
        let mut g = [self.n * dm / s2, -self.n / sigma + d / (s2 * sigma)];
        let mut h = [
            -self.n / s2,
            -2.0 * self.n * dm / (s2 * sigma),
            self.n / s2 - 3.0 * d / (s2 * s2),
        ];
        for &(c, m) in &self.censored {
            let a = (c - mu) / sigma;
            let l = inverse_mills(a);
            let k = l * (l - a);
            g[0] += m * l / sigma;
            g[1] += m * l * a / sigma;
            h[0] -= m * k / s2;
            h[1] -= m * (l + a * k) / s2;
            h[2] -= m * (k * a * a + 2.0 * l * a) / s2;
        }
        let det = h[0] * h[2] - h[1] * h[1];
        if !(h[0] < 0.0 && det > 0.0) {
            return None;
        }
        let step_mu = -(h[2] * g[0] - h[1] * g[1]) / det;
        let step_sigma = -(h[0] * g[1] - h[1] * g[0]) / det;
        Some((step_mu, step_sigma))
    }

    /// One EM step: each bound replaced by the mean (and second moment) of
    /// the fit above it. It never lowers the likelihood.
    fn em(&self, mu: f64, sigma: f64) -> (f64, f64) {
        let mut total = self.n;
        let mut sum = self.n * self.mean;
        let mut sum2 = self.n * (self.var + self.mean * self.mean);
        for &(c, m) in &self.censored {
            let a = (c - mu) / sigma;
            let l = inverse_mills(a);
            let e1 = mu + sigma * l;
            let var = sigma * sigma * (1.0 + a * l - l * l).max(0.0);
            total += m;
            sum += m * e1;
            sum2 += m * (var + e1 * e1);
        }
        let mu = sum / total;
        let var = (sum2 / total - mu * mu).max(SIGMA_FLOOR * SIGMA_FLOOR);
        (mu, var.sqrt())
    }
}

/// The maximum-likelihood log-normal of `n` ended jobs (mean `mean`,
/// population variance `var` of `ln(seconds)`; `n > 0`) and the jobs
/// running in `bounds`. Without bounds it is the ended jobs' mean and
/// spread. The spread is the population one: correcting it is the
/// caller's choice.
pub(crate) fn fit(n: f64, mean: f64, var: f64, bounds: &Bounds) -> Model {
    fit_in_steps(n, mean, var, bounds).0
}

/// [`fit`], and the steps it took.
fn fit_in_steps(n: f64, mean: f64, var: f64, bounds: &Bounds) -> (Model, usize) {
    let plain = Model {
        mu: mean,
        sigma: var.max(0.0).sqrt(),
    };
    let evidence = Evidence {
        n,
        mean,
        var: var.max(0.0),
        censored: bounds.informative().collect(),
    };
    if evidence.censored.is_empty() || n <= 0.0 {
        return (plain, 0);
    }
    let (mut mu, mut sigma) = (mean, plain.sigma.max(0.1));
    let mut l = evidence.log_likelihood(mu, sigma);
    let mut steps = 0;
    while steps < MAX_STEPS {
        steps += 1;
        let mut next = None;
        if let Some((dm, ds)) = evidence.newton(mu, sigma) {
            let mut t = 1.0;
            for _ in 0..20 {
                let (m, s) = (mu + t * dm, sigma + t * ds);
                if s > SIGMA_FLOOR {
                    let lt = evidence.log_likelihood(m, s);
                    if lt >= l {
                        next = Some((m, s, lt));
                        break;
                    }
                }
                t *= 0.5;
            }
        }
        let (m, s, lt) = next.unwrap_or_else(|| {
            let (m, s) = evidence.em(mu, sigma);
            (m, s, evidence.log_likelihood(m, s))
        });
        if !(m.is_finite() && s.is_finite() && lt.is_finite()) {
            break;
        }
        let settled = (m - mu).abs() < 1e-7 && (s - sigma).abs() < 1e-7;
        (mu, sigma, l) = (m, s, lt);
        if settled {
            break;
        }
    }
    (Model { mu, sigma }, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn buckets_round_bounds_down_and_keep_their_order() {
        assert_eq!(bucket(secs(0.1)), SHORT);
        assert_eq!(bucket(secs(0.25)), 2);
        for s in [0.3, 1.0, 7.5, 90.0, 3600.0] {
            let b = bucket(secs(s));
            assert!(bound_ln(b) <= f64::ln(s), "{s}");
            assert!(f64::ln(s) - bound_ln(b) < 1.0 / PER_LN, "{s}");
        }
        assert!(bucket(secs(2.0)) < bucket(secs(3.0)));
        assert_eq!(bucket(secs(1e9)), 255);
    }

    #[test]
    fn counts_follow_jobs_from_bucket_to_bucket() {
        let mut b = Bounds::default();
        b.shift(NONE, SHORT);
        b.shift(NONE, 40);
        b.shift(SHORT, 40);
        assert_eq!(b.running(), 2);
        assert_eq!(b.counts, [(40, 2)]);
        b.shift(40, NONE);
        b.shift(40, 41);
        assert_eq!(b.counts, [(41, 1)]);
        b.shift(41, NONE);
        assert_eq!(b.running(), 0);
        assert!(b.counts.is_empty());
    }

    #[test]
    fn without_bounds_the_fit_is_the_ended_jobs_mean_and_spread() {
        let m = fit(10.0, 2.0, 0.25, &Bounds::default());
        assert_eq!(
            m,
            Model {
                mu: 2.0,
                sigma: 0.5
            }
        );
    }

    #[test]
    fn the_fit_is_where_the_likelihood_is_flat() {
        // Ended jobs around e² s; twenty still running past e^2.5 s.
        let mut bounds = Bounds::default();
        for _ in 0..20 {
            bounds.shift(NONE, bucket(secs(2.5f64.exp())));
        }
        let m = fit(30.0, 2.0, 0.09, &bounds);
        let e = Evidence {
            n: 30.0,
            mean: 2.0,
            var: 0.09,
            censored: bounds.informative().collect(),
        };
        let l = e.log_likelihood(m.mu, m.sigma);
        for (dm, ds) in [(1e-4, 0.0), (-1e-4, 0.0), (0.0, 1e-4), (0.0, -1e-4)] {
            assert!(e.log_likelihood(m.mu + dm, m.sigma + ds) < l, "{m:?}");
        }
        // Pulled up and widened by the jobs still running.
        assert!(m.mu > 2.1 && m.sigma > 0.3, "{m:?}");
    }

    #[test]
    fn fits_of_a_batch_as_it_ends_settle_in_a_few_steps() {
        // 1,000 jobs (median 300 s, σ 0.4) started together, polled every
        // 10 s: after each job ends, the fit of those ended and those
        // running.
        let mut rng = fastrand::Rng::with_seed(5);
        let mut runs: Vec<f64> = (0..1000)
            .map(|_| {
                let (u, v) = (1.0 - rng.f64(), rng.f64());
                let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
                (300f64.ln() + 0.4 * z).exp()
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        let (mut most, mut total) = (0, 0);
        for k in 5..runs.len() {
            let ended = &runs[..k];
            let n = k as f64;
            let mean = ended.iter().map(|x| x.ln()).sum::<f64>() / n;
            let var = ended.iter().map(|x| (x.ln() - mean).powi(2)).sum::<f64>() / n;
            let mut bounds = Bounds::default();
            for (i, _) in runs[k..].iter().enumerate() {
                // Seen running at the last multiple of 10 s, offset per job.
                let seen = ((runs[k - 1] - (i % 10) as f64) / 10.0).floor() * 10.0;
                bounds.shift(NONE, bucket(secs(seen.max(0.0))));
            }
            let (m, steps) = fit_in_steps(n, mean, var, &bounds);
            assert!(m.mu.is_finite() && m.sigma.is_finite(), "{k}: {m:?}");
            most = most.max(steps);
            total += steps;
        }
        println!("most steps {most}, mean {:.1}", total as f64 / 995.0);
        // 14 at most, 7.7 on average; the bound is MAX_STEPS.
        assert!(most <= 16, "{most}");
        assert!(total <= 8 * 995, "{total}");
    }
}
