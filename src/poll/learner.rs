//! What the adaptive schedule learned: per job type, a log-normal fit of
//! run times that counts the jobs still running, in bounded memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use super::censored::{self, Bounds};
use super::cold::{Key, Predictive};
use super::model::Model;

/// Jobs of a type running (with bounds of a quarter of a second or more)
/// before what they say spaces the polls of a type without a fit: a few
/// jobs say little (two running for 20 s put the next poll 10.9 s on, where
/// the fallback is at most 15 s anyway), and a wait on a few jobs keeps the
/// schedule it always had.
const COLD_RUNNING: u32 = 10;
/// Polls of a type without a fit are parked (see [`Cold::parkable`]) until
/// this many of its jobs have ended: from then on every wait follows what
/// the ends and the jobs running say. (In the poll-efficiency bench's
/// first batches, one end was too few to time 1,000 waits by, and waiting
/// for three or four, or for the fit at five, left the first jobs of the
/// shortest kind ending unseen longer.)
const PARK_UNTIL_ENDS: u32 = 2;
/// At most this many job types are remembered.
const MAX_TYPES: usize = 256;
/// Samples needed before the fit is used.
const MIN_SAMPLES: u32 = 5;
/// Past this many samples, old ones fade (exponential weighting)...
const WINDOW: u32 = 200;
/// ...or past this many times the jobs of the type running, whichever is
/// more: a batch of jobs started together ends shortest first, and ended
/// jobs fading in the order they ended would be short ones fading first.
const WINDOW_PER_RUNNING: u32 = 4;
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
/// Server times are not believed for a type while any of its last few
/// contradictions (an implausible age, a run time that disagreed with what
/// a wait saw) is not made up by an agreeing run time; at most this many
/// count.
const MAX_STRIKES: u8 = 3;

/// A type without a fit and with many jobs running (see [`JobType::cold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cold {
    /// The jobs of the type running.
    pub(crate) running: u32,
    /// Whether a wait may park its polls on the type's other jobs: only
    /// before [`PARK_UNTIL_ENDS`] of them ended, and not once one failed
    /// while the type had no fit (a batch that fails fast is then seen
    /// failing by every wait on the schedule of the jobs running).
    pub(crate) parkable: bool,
}

/// What was learned, per job type.
#[derive(Debug, Default)]
pub(crate) struct Learner {
    types: Mutex<HashMap<Arc<str>, Arc<JobType>>>,
    /// Tells every scheduler that shares what is learned when a type
    /// without a fit learns of an end (see [`Learner::woken`]); shared
    /// with every type.
    notify: Arc<Notify>,
}

/// One job type: its name and what was learned of it, shared by the waits
/// of its jobs.
#[derive(Debug)]
pub(crate) struct JobType {
    name: Arc<str>,
    stats: Mutex<Stats>,
    /// The learner's notice, and this type's count of wakes.
    notify: Arc<Notify>,
    woken: AtomicU32,
}

/// What was learned of a type.
#[derive(Debug, Clone, Default)]
struct Stats {
    /// Running mean and variance of the `ln(seconds)` of ended jobs.
    n: u32,
    mean: f64,
    m2: f64,
    /// The run times in a row that contradicted the fit (see
    /// [`SURPRISE_SIGMAS`]), kept out of it; empty when the last one did
    /// not. While not empty the fit is in doubt and not used.
    recent: Moments,
    /// The jobs of the type still running.
    running: Bounds,
    /// The fit, from the ended jobs and the bounds of those running when
    /// the last one ended; none before [`MIN_SAMPLES`].
    fit: Option<Model>,
    /// Recent contradictions of the server's times (see [`MAX_STRIKES`]).
    strikes: u8,
    /// While there is no fit: the posterior of the evidence so far, and
    /// what evidence it was built from.
    cold: Option<(Key, Box<Predictive>)>,
    /// A job of the type failed since it last had a fit: polls are parked
    /// no longer (see [`Cold::parkable`]).
    cold_failed: bool,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Learner {
    /// The type named `job_type`, shared by all waits on jobs of the type.
    /// At most [`MAX_TYPES`] are kept: a new one takes the place of the
    /// type with the least evidence (whose waits keep their copy).
    pub(crate) fn intern(&self, job_type: &str) -> Arc<JobType> {
        let mut types = lock(&self.types);
        if let Some(t) = types.get(job_type) {
            return t.clone();
        }
        if types.len() >= MAX_TYPES {
            if let Some(victim) = types
                .iter()
                .min_by_key(|(_, t)| lock(&t.stats).n)
                .map(|(k, _)| k.clone())
            {
                types.remove(&victim);
            }
        }
        let name: Arc<str> = Arc::from(job_type);
        let t = Arc::new(JobType {
            name: name.clone(),
            stats: Mutex::default(),
            notify: Arc::clone(&self.notify),
            woken: AtomicU32::new(0),
        });
        types.insert(name, t.clone());
        t
    }

    /// Resolves when a type without a fit learns of a job that ended
    /// after this call. Waits parked on such a type (see
    /// [`JobType::cold`]) are timed from evidence an end changes a lot:
    /// whoever holds them times them again then (made before it looks at
    /// them, no end is missed).
    pub(crate) fn woken(&self) -> OwnedNotified {
        Arc::clone(&self.notify).notified_owned()
    }

    #[cfg(test)]
    pub(crate) fn record(&self, job_type: &str, run_time: Duration) {
        self.intern(job_type).record_between(run_time, run_time);
    }

    #[cfg(test)]
    pub(crate) fn model(&self, job_type: &str) -> Option<Model> {
        self.intern(job_type).view().0
    }

    /// What was learned, per job type: `(type, samples, mean, m2)` of
    /// `ln(seconds)` of the jobs that ended, to keep across restarts. The
    /// jobs running are not in it: after a restart their waits count them
    /// again.
    pub(crate) fn snapshot(&self) -> Vec<(String, u32, f64, f64)> {
        let types = lock(&self.types);
        types
            .iter()
            .map(|(k, t)| {
                let s = lock(&t.stats);
                (k.to_string(), s.n, s.mean, s.m2)
            })
            .filter(|&(_, n, _, _)| n > 0)
            .collect()
    }

    /// Takes in a [`snapshot`](Self::snapshot), for types not learned yet.
    pub(crate) fn restore(&self, learned: &[(String, u32, f64, f64)]) {
        for (name, n, mean, m2) in learned {
            if !mean.is_finite() || !m2.is_finite() {
                continue;
            }
            let full = {
                let types = lock(&self.types);
                !types.contains_key(name.as_str()) && types.len() >= MAX_TYPES
            };
            if full {
                continue;
            }
            let t = self.intern(name);
            let mut s = lock(&t.stats);
            if s.n == 0 && s.recent.n == 0 {
                (s.n, s.mean, s.m2) = ((*n).min(WINDOW), *mean, *m2);
                s.refit();
            }
        }
    }
}

impl JobType {
    /// The type's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// How many times the type learned of an end while it had no fit
    /// (wrapping): a wait parked before the last of them is timed again.
    pub(crate) fn woken(&self) -> u32 {
        self.woken.load(Ordering::Acquire)
    }

    /// The fit, once [`MIN_SAMPLES`] jobs ended and while the latest run
    /// times do not contradict it; and whether the server's times are
    /// believed for this type.
    pub(crate) fn view(&self) -> (Option<Model>, bool) {
        let s = lock(&self.stats);
        let model = if s.recent.n > 0 { None } else { s.fit };
        (model, s.strikes == 0)
    }

    /// A job's server times agreed (`true`) or disagreed with what its wait
    /// saw; a refused age is a disagreement.
    pub(crate) fn server_times(&self, agreed: bool) {
        let mut s = lock(&self.stats);
        s.strikes = if agreed {
            s.strikes.saturating_sub(1)
        } else {
            (s.strikes + 1).min(MAX_STRIKES)
        };
    }

    /// The interval before the next poll of a job `age` old (the time since
    /// it was first seen), while the type has no fit, from what the jobs
    /// still running and those that ended say (see [`super::cold`]).
    ///
    /// `None` when it does not apply: the type has a fit, or one in doubt
    /// (the latest run time contradicted it), or fewer than
    /// [`COLD_RUNNING`] jobs of it are running with a bound of a quarter of
    /// a second or more.
    pub(crate) fn cold_interval(
        &self,
        age: Duration,
        tradeoff: Duration,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let mut guard = lock(&self.stats);
        let s = &mut *guard;
        if s.fit.is_some() || s.recent.n > 0 || s.running.informative_sum().0 < COLD_RUNNING {
            return None;
        }
        let key = Key::new(s.n, s.mean, s.m2, &s.running);
        let fresh = matches!(&s.cold, Some((k, _)) if *k == key);
        if !fresh {
            s.cold = Some((
                key,
                Box::new(Predictive::new(s.n, s.mean, s.m2, &s.running)),
            ));
        }
        let (_, predictive) = s.cold.as_mut()?;
        Some(predictive.interval(age, tradeoff, min, max))
    }

    /// The type's jobs running, while it has no fit (nor one in doubt) and
    /// [`COLD_RUNNING`] or more of them run: whether waits on them may be
    /// parked (see `WaitState`'s scouts).
    pub(crate) fn cold(&self) -> Option<Cold> {
        let s = lock(&self.stats);
        let running = s.running.running();
        (s.fit.is_none() && s.recent.n == 0 && running >= COLD_RUNNING).then_some(Cold {
            running,
            parkable: !s.cold_failed && s.n < PARK_UNTIL_ENDS,
        })
    }

    /// A job of the type ended other than in success. Without a fit, the
    /// type parks polls no more, and the parked ones are timed again.
    pub(crate) fn failed(&self) {
        let mut s = lock(&self.stats);
        if s.fit.is_none() && !s.cold_failed {
            s.cold_failed = true;
            self.wake();
        }
    }

    /// Counts a wake of the type and tells the schedulers.
    fn wake(&self) {
        self.woken.fetch_add(1, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Moves a running job's lower bound from bucket `from` to `to` (see
    /// [`censored::bucket`]; [`censored::NONE`] for a job not counted).
    pub(crate) fn shift_bound(&self, from: u8, to: u8) {
        if from != to {
            lock(&self.stats).running.shift(from, to);
        }
    }

    /// Takes in a job that ran between `lo` and `hi`, and fits again.
    ///
    /// Within the window the run time is taken at the fit's median there
    /// (the middle of the window while there is no fit), so that a wide
    /// window (a job last seen running long before it was seen finished)
    /// moves the fit only as far as it must.
    pub(crate) fn record_between(&self, lo: Duration, hi: Duration) {
        let hi = hi.as_secs_f64();
        if hi.is_nan() || hi < 0.001 {
            return;
        }
        let lo = lo.as_secs_f64().clamp(0.001, hi);
        let mut stats = lock(&self.stats);
        if stats.fit.is_none() {
            // Parked waits of the type are timed again (see `cold_interval`).
            self.wake();
        }
        let x = match stats.fit {
            Some(m) => m.median_between(lo, hi),
            None => 0.5 * (lo + hi),
        }
        .ln();
        let surprise = stats
            .fit
            .is_some_and(|m| (x - m.mu).abs() > (SURPRISE_SIGMAS * m.sigma).max(SURPRISE_LN));
        if surprise {
            stats.recent.push(x, RESTART_AFTER);
            if stats.recent.n >= RESTART_AFTER {
                let Moments { n, mean, m2 } = stats.recent;
                (stats.n, stats.mean, stats.m2) = (n, mean, m2);
                stats.recent = Moments::default();
                stats.refit();
            }
            // Left out of the fit: one job far out of line is not evidence
            // enough to change it, and would widen it a lot.
            return;
        }
        stats.recent = Moments::default();
        let window = WINDOW.max(stats.running.running().saturating_mul(WINDOW_PER_RUNNING));
        let mut all = Moments {
            n: stats.n,
            mean: stats.mean,
            m2: stats.m2,
        };
        all.push(x, window);
        (stats.n, stats.mean, stats.m2) = (all.n, all.mean, all.m2);
        stats.refit();
    }
}

impl Stats {
    fn refit(&mut self) {
        if self.n < MIN_SAMPLES {
            self.fit = None;
            return;
        }
        self.cold = None;
        self.cold_failed = false;
        let n = f64::from(self.n);
        let m = censored::fit(n, self.mean, self.m2, &self.running);
        // A population spread; correct it to a sample one.
        let sigma = m.sigma * (n / (n - 1.0)).sqrt();
        self.fit = Some(Model {
            mu: m.mu,
            sigma: sigma.max(MIN_SIGMA),
        });
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
    fn a_window_is_taken_at_its_middle_before_there_is_a_fit() {
        let l = Learner::default();
        for _ in 0..5 {
            l.intern("t")
                .record_between(Duration::from_secs(2), Duration::from_secs(4));
        }
        let m = l.model("t").unwrap();
        assert!((m.mu - 3f64.ln()).abs() < 1e-12, "{m:?}");
    }

    /// `n` log-normal run times (median `median` s, spread `sigma`), drawn
    /// with seed `seed` (Box–Muller over `fastrand`).
    fn lognormal(n: usize, median: f64, sigma: f64, seed: u64) -> Vec<f64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|_| {
                let (u, v) = (1.0 - rng.f64(), rng.f64());
                let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
                (median.ln() + sigma * z).exp()
            })
            .collect()
    }

    /// The fitted medians, counting the jobs still running and not, once
    /// `ended` of a batch of jobs started together have ended.
    fn batch(runs: &[f64], ended: usize) -> (f64, f64) {
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (censored, plain) = (Learner::default(), Learner::default());
        let (t, p) = (censored.intern("t"), plain.intern("t"));
        // Every job is counted from its first answer, at age 0.
        let mut bound = vec![censored::bucket(Duration::ZERO); runs.len()];
        for &b in &bound {
            t.shift_bound(censored::NONE, b);
        }
        for k in 0..ended {
            // The jobs still running were seen running just before the
            // k-th ended, at its run time.
            let now = censored::bucket(Duration::from_secs_f64(sorted[k]));
            for b in &mut bound[k..] {
                t.shift_bound(*b, now);
                *b = now;
            }
            t.shift_bound(bound[k], censored::NONE);
            let run = Duration::from_secs_f64(sorted[k]);
            t.record_between(run, run);
            p.record_between(run, run);
        }
        let median = |l: &Learner| l.model("t").unwrap().mu.exp();
        (median(&censored), median(&plain))
    }

    #[test]
    fn a_batch_half_ended_is_fitted_within_a_tenth_of_its_median() {
        // 1,000 jobs started together, run times log-normal with median
        // 60 s and σ 0.5 (seed 22), half of them ended (by 57.7 s).
        let runs = lognormal(1000, 60.0, 0.5, 22);
        let (censored, plain) = batch(&runs, 500);
        let miss = |m: f64| m / 60.0 - 1.0;
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        println!("half ended by {:.1} s", sorted[499]);
        println!(
            "fitted median {censored:.2} s ({:+.1} %); ended jobs alone {plain:.2} s ({:+.1} %)",
            100.0 * miss(censored),
            100.0 * miss(plain)
        );
        assert!(miss(censored).abs() < 0.10, "{censored}");
        // The ended jobs alone (the fit before jobs still running counted)
        // put the median at 44.2 s: 26 % short.
        assert!((-0.27..-0.255).contains(&miss(plain)), "{plain}");
    }

    #[test]
    fn counting_jobs_still_running_keeps_every_stage_of_a_batch_close() {
        // From a tenth ended to nine tenths (seed 7, median 30 s, σ 0.3).
        let runs = lognormal(1000, 30.0, 0.3, 7);
        for ended in [100, 250, 500, 750, 900] {
            let (censored, _) = batch(&runs, ended);
            assert!((censored / 30.0 - 1.0).abs() < 0.10, "{ended}: {censored}");
        }
    }

    #[test]
    fn jobs_running_widen_the_window_so_a_batch_does_not_fade_its_short_jobs() {
        // 300 jobs running: 300 ended jobs are weighed alike, where a
        // window of 200 would fade the first 100.
        let l = Learner::default();
        let t = l.intern("t");
        for _ in 0..300 {
            t.shift_bound(censored::NONE, censored::bucket(Duration::from_millis(100)));
        }
        for _ in 0..300 {
            t.record_between(Duration::from_secs(1), Duration::from_secs(1));
        }
        assert_eq!(lock(&t.stats).n, 300);
        for _ in 0..300 {
            t.shift_bound(censored::bucket(Duration::from_millis(100)), censored::NONE);
        }
        t.record_between(Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(lock(&t.stats).n, WINDOW);
    }

    #[test]
    fn the_cold_interval_needs_other_jobs_running_and_no_fit() {
        let l = Learner::default();
        let t = l.intern("t");
        let (c, min, max) = (
            Duration::from_millis(330),
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let at_60 = censored::bucket(Duration::from_secs(60));
        let cold = |age| t.cold_interval(Duration::from_secs(age), c, min, max);
        // A job alone, or nine: the fallback's.
        for _ in 0..9 {
            t.shift_bound(censored::NONE, at_60);
        }
        assert_eq!(cold(60), None);
        // A thousand: the evidence's (as in `cold::tests`).
        for _ in 9..1000 {
            t.shift_bound(censored::NONE, at_60);
        }
        assert_eq!(cold(60).unwrap().as_millis(), 40_101);
        // Built once for this evidence, and again when it moves.
        let built = |t: &JobType| lock(&t.stats).cold.as_ref().map(|(k, _)| *k);
        let key = built(&t).unwrap();
        assert_eq!(cold(60).unwrap().as_millis(), 40_101);
        assert_eq!(built(&t), Some(key));
        for _ in 0..1000 {
            t.shift_bound(at_60, censored::bucket(Duration::from_secs(120)));
        }
        assert!(cold(120).unwrap() > Duration::from_secs(50));
        assert_ne!(built(&t), Some(key));
        // Once five ended there is a fit: the cold rule is done with.
        for _ in 0..5 {
            t.record_between(Duration::from_secs(130), Duration::from_secs(130));
        }
        assert_eq!(cold(120), None);
        assert!(lock(&t.stats).cold.is_none());
    }

    #[test]
    fn a_snapshot_restores_into_a_fresh_learner_and_not_over_what_it_learned() {
        let l = Learner::default();
        for _ in 0..10 {
            l.record("t", Duration::from_secs(90));
        }
        let saved = l.snapshot();
        assert_eq!(saved.len(), 1);
        let fresh = Learner::default();
        fresh.restore(&saved);
        assert_eq!(fresh.model("t"), l.model("t"));
        // A type learned already keeps what it learned.
        let other = Learner::default();
        for _ in 0..10 {
            other.record("t", Duration::from_secs(3));
        }
        other.restore(&saved);
        assert!((other.model("t").unwrap().mu - 3f64.ln()).abs() < 1e-12);
    }
}
