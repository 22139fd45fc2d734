//! The schedule of a job type before it has a fit: what its jobs still
//! running, and the few that ended, already say of its run times.
//!
//! Before five jobs of a type have ended there is no fit, and a job is
//! polled at 1 s × 1.5ⁿ (up to 15 s). For one job alone that is right: it
//! alone says little. But a thousand jobs started together, none of them
//! ended after a minute, say a lot: with `n` jobs running for at least `a`
//! and none ended, `P(no end) ≈ exp(−n F(a))`, so `F(a)` is at most about
//! `1/n`; and the first few that end among many pin the left tail.
//!
//! This is that evidence in a posterior over the log-normal's `(μ, σ)`: a
//! grid of `μ` from a quarter of a second to a day (a flat prior on the
//! log-median) and of `σ` from 0.1 to 1.5 (flat in `ln σ`), weighed by the
//! likelihood of the jobs that ended (their count, mean and spread of
//! `ln(seconds)`) and of the lower bounds of those running (counts per
//! 1/16 of `ln(seconds)`, see [`Bounds`]). Its predictive survival
//! `S(t) = Σ w S_θ(t)` gives the interval by the rule of the fitted
//! schedule, `h × (Λ(a + h) − Λ(a)) = tradeoff` with `Λ = −ln S`. The cost
//! of building it is bounded by the grid and the buckets, not by the jobs;
//! the survival is worked out lazily at the bucket points a decision needs
//! and kept until the evidence moves.

use std::time::Duration;

use super::censored::{Bounds, LOWEST_LN, PER_LN};
use super::model::{interval_for, ln_upper_tail};

/// The grid of `μ` (`ln` of the median in seconds): from a quarter of a
/// second...
const MU_LOW: f64 = LOWEST_LN;
/// ...to a day...
const MU_HIGH: f64 = 11.366_742_954_792_146;
/// ...every eighth of `ln(seconds)`.
const MU_STEP: f64 = 0.125;
/// The grid of `σ`: from...
const SIGMA_LOW: f64 = 0.1;
/// ...to...
const SIGMA_HIGH: f64 = 1.5;
/// ...in this many steps, evenly in `ln σ`.
const SIGMAS: usize = 12;
/// Cells weighing less than this (relative to the heaviest) are left out.
const NEGLIGIBLE: f64 = 1e-9;
/// Survival points: every 1/16 of `ln(seconds)` from a quarter of a second
/// to four days.
const POINTS: usize = 227;
/// `ln S` is kept no lower than this, so that ratios stay finite.
const LN_FLOOR: f64 = -700.0;

/// What the evidence is, coarsely: the predictive is built again only
/// when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    /// Ended jobs, and the bits of their mean and spread.
    ended: (u32, u64, u64),
    /// `⌊8 log₂⌋` of the jobs with an informative bound (eight steps per
    /// doubling; exact below eight).
    running: u32,
    /// Their mean bucket.
    mean_bucket: u32,
}

impl Key {
    pub(super) fn new(n: u32, mean: f64, var: f64, bounds: &Bounds) -> Self {
        let (count, sum) = bounds.informative_sum();
        let running = if count < 8 {
            count
        } else {
            (8.0 * f64::from(count).log2()).floor() as u32
        };
        let mean_bucket = if count == 0 {
            0
        } else {
            u32::try_from(sum / u64::from(count)).unwrap_or(u32::MAX)
        };
        Key {
            ended: (n, mean.to_bits(), var.to_bits()),
            running,
            mean_bucket,
        }
    }
}

/// The predictive run-time distribution of a type from its evidence.
#[derive(Debug, Clone)]
pub(super) struct Predictive {
    /// `(μ, σ, weight)`, the weights summing to 1.
    cells: Vec<(f64, f64, f64)>,
    /// `ln S` at the survival points; NaN where not worked out yet.
    ln_survival: Vec<f64>,
}

/// The time, in seconds, of survival point `k`.
fn point_secs(k: usize) -> f64 {
    (LOWEST_LN + k as f64 / PER_LN).exp()
}

impl Predictive {
    /// The posterior from `n` ended jobs (mean `mean`, population variance
    /// `var` of `ln(seconds)`; `n` may be 0) and the jobs running in
    /// `bounds`.
    pub(super) fn new(n: u32, mean: f64, var: f64, bounds: &Bounds) -> Self {
        let censored: Vec<(f64, f64)> = bounds.informative().collect();
        let n = f64::from(n);
        let var = var.max(0.0);
        let steps = ((MU_HIGH - MU_LOW) / MU_STEP).round() as usize;
        let mut cells = Vec::with_capacity((steps + 1) * SIGMAS);
        let ratio = (SIGMA_HIGH / SIGMA_LOW).ln() / (SIGMAS - 1) as f64;
        for j in 0..SIGMAS {
            let sigma = SIGMA_LOW * (ratio * j as f64).exp();
            for i in 0..=steps {
                let mu = MU_LOW + MU_STEP * i as f64;
                let mut l = 0.0;
                if n > 0.0 {
                    let d = n * (var + (mean - mu).powi(2));
                    l += -n * sigma.ln() - d / (2.0 * sigma * sigma);
                }
                for &(c, m) in &censored {
                    l += m * ln_upper_tail((c - mu) / sigma);
                }
                cells.push((mu, sigma, l));
            }
        }
        let top = cells.iter().map(|c| c.2).fold(f64::NEG_INFINITY, f64::max);
        cells.retain_mut(|c| {
            c.2 = (c.2 - top).exp();
            c.2 >= NEGLIGIBLE
        });
        let total: f64 = cells.iter().map(|c| c.2).sum();
        for c in &mut cells {
            c.2 /= total;
        }
        Predictive {
            cells,
            ln_survival: vec![f64::NAN; POINTS],
        }
    }

    /// `ln S` at survival point `k`.
    fn ln_survival_at(&mut self, k: usize) -> f64 {
        let k = k.min(POINTS - 1);
        if self.ln_survival[k].is_nan() {
            let z0 = LOWEST_LN + k as f64 / PER_LN;
            let s: f64 = self
                .cells
                .iter()
                .map(|&(mu, sigma, w)| {
                    w * 0.5 * libm::erfc((z0 - mu) / sigma / std::f64::consts::SQRT_2)
                })
                .sum();
            self.ln_survival[k] = if s > 0.0 {
                s.ln().max(LN_FLOOR)
            } else {
                LN_FLOOR
            };
        }
        self.ln_survival[k]
    }

    /// `ln S(t)`, `t` in seconds: linear in `ln t` between survival points,
    /// and in `t` below the first (`S(0) = 1`).
    fn ln_survival(&mut self, t: f64) -> f64 {
        let first = point_secs(0);
        if t <= first {
            return self.ln_survival_at(0) * (t.max(0.0) / first);
        }
        let x = (t.ln() - LOWEST_LN) * PER_LN;
        let k = x.floor() as usize;
        if k + 1 >= POINTS {
            return self.ln_survival_at(POINTS - 1);
        }
        let f = x - k as f64;
        let (a, b) = (self.ln_survival_at(k), self.ln_survival_at(k + 1));
        a + f * (b - a)
    }

    /// The interval `h` in `[min, max]` after which a job of age `age`
    /// should be polled: `h × (Λ(age + h) − Λ(age)) = tradeoff`.
    pub(super) fn interval(
        &mut self,
        age: Duration,
        tradeoff: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        interval_for(age, tradeoff, min, max, |t| -self.ln_survival(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::censored::{bucket, NONE};

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// `n` jobs running, all first seen `age` seconds ago.
    fn running(n: u32, age: f64) -> Bounds {
        let mut b = Bounds::default();
        for _ in 0..n {
            b.shift(NONE, bucket(secs(age)));
        }
        b
    }

    /// The interval of a job `age` seconds old among `bounds`, with `n`
    /// ended jobs of mean `mean` (`ln(seconds)`, spread 0).
    fn interval(n: u32, mean: f64, bounds: &Bounds, age: f64) -> Duration {
        Predictive::new(n, mean, 0.0, bounds).interval(secs(age), secs(0.33), secs(1.0), secs(60.0))
    }

    #[test]
    fn jobs_running_without_an_end_space_the_polls_the_more_there_are() {
        // At 20 s and at 60 s, two jobs running and none ended, then a
        // thousand: the more jobs say "not yet", the less likely this one
        // is to end soon. (The 1 s × 1.5ⁿ fallback is at most 15 s.)
        for (n, age, expected_ms) in [
            (2, 20.0, 10_896),
            (1000, 20.0, 21_689),
            (2, 60.0, 17_415),
            (1000, 60.0, 40_101),
        ] {
            let h = interval(0, 0.0, &running(n, age), age);
            assert_eq!(h.as_millis(), expected_ms, "{n} jobs at {age} s");
        }
        // Before any bound says anything (all under a quarter of a
        // second): the prior alone, close to the fallback's first 1 s.
        let h = interval(0, 0.0, &running(1000, 0.0), 0.0);
        assert_eq!(h.as_millis(), 1_870);
    }

    #[test]
    fn the_first_ends_among_many_running_pin_the_schedule() {
        // 998 jobs running past 80 s: without an end, the next poll of one
        // of them in 50 s; once two have ended at 78 s, the rest are
        // about to, and it comes in 12 s.
        let bounds = running(998, 80.0);
        assert_eq!(interval(0, 0.0, &bounds, 80.0).as_millis(), 50_465);
        let two = interval(2, 78f64.ln(), &bounds, 80.0);
        assert_eq!(two.as_millis(), 11_943);
    }
}
