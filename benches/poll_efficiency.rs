//! How many polls each schedule spends, and how late it sees jobs finish.
//!
//! 1,800 jobs of three kinds with log-normal run times (medians 30 s, 90 s,
//! 300 s; σ 0.3, 0.35, 0.4) arrive over two hours of virtual time. Each
//! policy waits on the same jobs, on tokio's paused clock with the in-memory
//! transport, through `Client::wait`. Printed per policy: polls per job and
//! detection delay (answer time − true finish): mean and p95, with ratios
//! against fixed 5 s.
//!
//! Then the oracle: the default's hazard-based schedule given each kind's
//! true run-time distribution from the first job, learning nothing
//! (simulated on the same jobs, with the same interval bounds, late-job
//! rule and ±10 % jitter). Its tradeoff is tuned until its mean detection
//! delay equals the default's, and the default's polls per job are
//! printed against the oracle's at that matched delay.
//!
//! Then batches: 1,000 jobs of each kind started at once (as `wait_all`
//! after a bulk submit sees them), a first batch on a fresh policy and a
//! second one after it, with the server's true times and with times
//! frozen at a 2024 date; each against the oracle at the same mean delay,
//! and the waits longer than 2.5 × their job's run time + 1.5 s counted.
//!
//! Poll counts and delays are on the paused clock: they do not depend on
//! the machine's load. Only the wall times printed to stderr do.
//!
//! Run: `cargo bench --bench poll_efficiency` (`-- --batches-only` for the
//! batch rows alone, `-- --batches-only --first-only` for the first
//! batches alone; `--by-kind` adds a row per kind under each batch row,
//! against the oracle at that row's tradeoff)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, PollPolicy, PollSchedule};
use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use tokio::time::Instant;

const JOBS_PER_KIND: usize = 600;
/// Jitter seeds each policy runs with (the figures are their means).
const SEEDS: u64 = 8;
const ARRIVAL_WINDOW: Duration = Duration::from_secs(2 * 3600);
const KINDS: [(&str, f64, f64); 3] = [
    ("mx-text2img", 30.0, 0.3),
    ("mx-image-face-swap", 90.0, 0.35),
    ("mx-v2v", 300.0, 0.4),
];

/// What the server says of a job's times.
#[derive(Clone, Copy, PartialEq, Debug)]
enum ServerTimes {
    /// When it started and ended.
    True,
    /// 2024-07-12T12:49:12Z to 12:54:40Z, whatever the job took.
    Frozen,
}

#[derive(Clone, Copy)]
struct Job {
    kind: usize,
    arrival: Duration,
    run: Duration,
}

fn jobs() -> Vec<Job> {
    jobs_seeded(20261129)
}

/// Jobs of the same kinds drawn with another seed: another day's work.
fn jobs_seeded(seed: u64) -> Vec<Job> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut jobs = Vec::new();
    for (kind, &(_, median, sigma)) in KINDS.iter().enumerate() {
        let dist = LogNormal::new(f64::ln(median), sigma).unwrap();
        for _ in 0..JOBS_PER_KIND {
            let arrival = ARRIVAL_WINDOW.mul_f64(rand::RngExt::random::<f64>(&mut rng));
            let run = Duration::from_secs_f64(dist.sample(&mut rng));
            jobs.push(Job { kind, arrival, run });
        }
    }
    jobs.sort_by_key(|j| j.arrival);
    jobs
}

/// Jobs of the same kinds, `per_kind` of each, all started at once.
fn batch_seeded(seed: u64, per_kind: usize) -> Vec<Job> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut jobs = Vec::new();
    for (kind, &(_, median, sigma)) in KINDS.iter().enumerate() {
        let dist = LogNormal::new(f64::ln(median), sigma).unwrap();
        for _ in 0..per_kind {
            let run = Duration::from_secs_f64(dist.sample(&mut rng));
            jobs.push(Job {
                kind,
                arrival: Duration::ZERO,
                run,
            });
        }
    }
    jobs
}

#[path = "../tests/support/time.rs"]
mod time_text;

use time_text::rfc3339;

struct Outcome {
    polls: Vec<u64>,
    delays: Vec<f64>,
    /// Waits longer than 2.5 × the job's run time + 1.5 s.
    overdue: usize,
}

async fn run(policy: PollPolicy, jobs: Arc<Vec<Job>>) -> Outcome {
    run_with(policy, jobs, ServerTimes::True).await
}

async fn run_with(policy: PollPolicy, jobs: Arc<Vec<Job>>, times: ServerTimes) -> Outcome {
    let origin = Instant::now();
    let wall = SystemTime::now();
    let by_id: Arc<HashMap<String, Job>> = Arc::new(
        jobs.iter()
            .enumerate()
            .map(|(i, j)| (format!("job-{i}"), *j))
            .collect(),
    );
    let table = by_id.clone();
    let mock = MockTransport::from_fn(move |req| {
        let id = req.img_uuid.as_deref().unwrap();
        let job = table[id];
        let age = (req.at - origin).saturating_sub(job.arrival);
        let (start, end) = match times {
            ServerTimes::True => (wall + job.arrival, wall + job.arrival + job.run),
            ServerTimes::Frozen => {
                let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_720_788_552);
                (start, start + Duration::from_secs(328))
            }
        };
        let (status, end) = if age >= job.run {
            ("success", format!(r#","end_time":"{}""#, rfc3339(end)))
        } else if age >= job.run / 10 {
            ("processing", String::new())
        } else {
            ("pending", String::new())
        };
        MockResponse::ok(format!(
            r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{id}","status":"{status}","type":"{t}","job_type":"{t}","start_time":"{s}"{end},"model_id":"7","json":null}}}}"#,
            t = KINDS[job.kind].0,
            s = rfc3339(start),
        ))
    })
    .without_log();
    let client = Client::builder()
        .api_key("bench")
        .poll_policy(policy.timeout(Duration::from_secs(6 * 3600)))
        .max_in_flight(10_000)
        .transport(mock.clone())
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let client = client.clone();
        let job = *job;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(origin + job.arrival).await;
            client.wait(&format!("job-{i}")).await.unwrap();
            let seen = Instant::now() - origin;
            let overdue = seen - job.arrival > job.run.mul_f64(2.5) + Duration::from_millis(1500);
            (
                seen.as_secs_f64() - (job.arrival + job.run).as_secs_f64(),
                i,
                overdue,
            )
        }));
    }
    let mut outcome = Outcome {
        polls: Vec::new(),
        delays: Vec::new(),
        overdue: 0,
    };
    for t in tasks {
        let (delay, i, overdue) = t.await.unwrap();
        outcome.overdue += usize::from(overdue);
        outcome.delays.push(delay);
        outcome.polls.push(mock.count_for(&format!("job-{i}")));
    }
    outcome
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn p95(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[(s.len() as f64 * 0.95) as usize]
}

/// The hazard-based schedule of `PollPolicy::adaptive` for a known
/// log-normal `ln(seconds) ~ N(mu, sigma²)`: the same formulas as the
/// crate's (private) model, written out here so that the oracle learns
/// nothing.
mod oracle {
    use super::{Job, KINDS};

    /// The default interval bounds, and the late-job rule's threshold.
    const MIN: f64 = 1.0;
    const MAX: f64 = 60.0;
    const TAIL: f64 = 1e-3;

    struct Model {
        mu: f64,
        sigma: f64,
    }

    impl Model {
        fn survival(&self, t: f64) -> f64 {
            if t <= 0.0 {
                return 1.0;
            }
            let z = (t.ln() - self.mu) / self.sigma;
            0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
        }

        fn cumulative_hazard(&self, t: f64) -> f64 {
            if t <= 0.0 {
                return 0.0;
            }
            let z = (t.ln() - self.mu) / self.sigma;
            let s = self.survival(t);
            if s > 1e-300 {
                -s.ln()
            } else {
                z * z / 2.0 + (z * (2.0 * std::f64::consts::PI).sqrt()).ln()
            }
        }

        /// `h` in `[MIN, MAX]` with `h × (Λ(age + h) − Λ(age)) = c`; a job
        /// past the 99.9 % quantile is polled every tenth of its age.
        fn next_interval(&self, age: f64, c: f64) -> f64 {
            if self.survival(age) < TAIL {
                return (age * 0.1).clamp(MIN, MAX);
            }
            let base = self.cumulative_hazard(age);
            let cost = |h: f64| h * (self.cumulative_hazard(age + h) - base);
            if cost(MIN) >= c {
                return MIN;
            }
            if cost(MAX) <= c {
                return MAX;
            }
            let (mut lo, mut hi) = (MIN, MAX);
            for _ in 0..40 {
                let mid = 0.5 * (lo + hi);
                if cost(mid) > c {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            lo
        }
    }

    use super::SEEDS;

    /// Mean polls per job and mean detection delay (s) of the oracle with
    /// tradeoff `c` seconds on `jobs`, averaged over [`SEEDS`] jitter draws.
    pub fn run(jobs: &[Job], c: f64) -> (f64, f64) {
        let (mut polls, mut delay) = (0u64, 0.0);
        for seed in 0..SEEDS {
            let (p, d) = run_seeded(jobs, c, seed);
            polls += p;
            delay += d;
        }
        let n = (jobs.len() as u64 * SEEDS) as f64;
        (polls as f64 / n, delay / n)
    }

    fn run_seeded(jobs: &[Job], c: f64, seed: u64) -> (u64, f64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut polls, mut delay) = (0u64, 0.0);
        for job in jobs {
            let (_, median, sigma) = KINDS[job.kind];
            let m = Model {
                mu: median.ln(),
                sigma,
            };
            let run = job.run.as_secs_f64();
            let mut t = 0.0;
            polls += 1;
            while t < run {
                let h = m.next_interval(t, c) * (0.9 + 0.2 * rng.f64());
                t += h.clamp(MIN, MAX);
                polls += 1;
            }
            delay += t - run;
        }
        (polls, delay)
    }

    /// The oracle's polls per job at mean delay `target`: the tradeoff is
    /// found by bisection (delay grows with it). Returns (tradeoff, polls,
    /// delay).
    pub fn at_delay(jobs: &[Job], target: f64) -> (f64, f64, f64) {
        let (mut lo, mut hi) = (1e-4f64, 100.0f64);
        for _ in 0..60 {
            let mid = (lo * hi).sqrt();
            if run(jobs, mid).1 < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let c = (lo * hi).sqrt();
        let (p, d) = run(jobs, c);
        (c, p, d)
    }
}

fn main() {
    if std::env::args().any(|a| a == "--batches-only") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        batches(&rt);
        return;
    }
    let jobs = Arc::new(jobs());
    type MakePolicy = Box<dyn Fn() -> PollPolicy>;
    let policies: Vec<(&str, MakePolicy)> = vec![
        (
            "fixed 5 s",
            Box::new(|| PollPolicy::fixed(Duration::from_secs(5))),
        ),
        (
            "fixed 10 s",
            Box::new(|| PollPolicy::fixed(Duration::from_secs(10))),
        ),
        (
            "AWS-style exponential 2 s → 120 s",
            Box::new(|| PollPolicy::exponential(Duration::from_secs(2), Duration::from_secs(120))),
        ),
        ("default (adaptive)", Box::new(PollPolicy::default)),
        (
            "adaptive, tradeoff 0.36 s (the default before)",
            Box::new(|| {
                PollPolicy::new(PollSchedule::Adaptive {
                    tradeoff: Duration::from_millis(360),
                })
            }),
        ),
        (
            "adaptive, tradeoff 0.34 s",
            Box::new(|| {
                PollPolicy::new(PollSchedule::Adaptive {
                    tradeoff: Duration::from_millis(340),
                })
            }),
        ),
        (
            "adaptive, tradeoff 0.32 s",
            Box::new(|| {
                PollPolicy::new(PollSchedule::Adaptive {
                    tradeoff: Duration::from_millis(320),
                })
            }),
        ),
        (
            "adaptive, tradeoff 0.30 s",
            Box::new(|| {
                PollPolicy::new(PollSchedule::Adaptive {
                    tradeoff: Duration::from_millis(300),
                })
            }),
        ),
    ];
    println!(
        "{} jobs ({} per kind: medians 30/90/300 s), arriving over {} h of virtual time\n",
        jobs.len(),
        JOBS_PER_KIND,
        ARRIVAL_WINDOW.as_secs() / 3600
    );
    println!(
        "| policy | polls/job | × fixed 5 s | mean delay (s) | × fixed 5 s | p95 delay (s) | per kind polls/job (30 s, 90 s, 300 s) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut base: Option<(f64, f64)> = None;
    let mut default = (0.0, 0.0);
    // The default's figures on the jobs after the first WARM of each kind
    // (by arrival): what is left once the cold start is over.
    const WARM: usize = 20;
    let warm: Vec<bool> = {
        let mut seen = [0usize; KINDS.len()];
        jobs.iter()
            .map(|j| {
                seen[j.kind] += 1;
                seen[j.kind] > WARM
            })
            .collect()
    };
    let mut default_warm = (0.0, 0.0);
    for (name, make) in &policies {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let wall = std::time::Instant::now();
        // Jitter draws averaged over: the mean delay of one draw moves by
        // a few percent from one seed to the next.
        let mut out = Outcome {
            polls: Vec::new(),
            delays: Vec::new(),
            overdue: 0,
        };
        for seed in 0..SEEDS {
            let o = rt.block_on(run(make().seed(seed), jobs.clone()));
            out.polls.extend(o.polls);
            out.delays.extend(o.delays);
        }
        let polls: Vec<f64> = out.polls.iter().map(|&p| p as f64).collect();
        let (p, d) = (mean(&polls), mean(&out.delays));
        let (bp, bd) = *base.get_or_insert((p, d));
        if *name == "default (adaptive)" {
            default = (p, d);
            let pick = |v: &[f64]| -> Vec<f64> {
                v.iter()
                    .zip(warm.iter().cycle())
                    .filter(|(_, &w)| w)
                    .map(|(&x, _)| x)
                    .collect()
            };
            default_warm = (mean(&pick(&polls)), mean(&pick(&out.delays)));
        }
        let per_kind: Vec<String> = (0..KINDS.len())
            .map(|k| {
                let v: Vec<f64> = jobs
                    .iter()
                    .cycle()
                    .zip(&polls)
                    .filter(|(j, _)| j.kind == k)
                    .map(|(_, &p)| p)
                    .collect();
                format!("{:.1}", mean(&v))
            })
            .collect();
        println!(
            "| {name} | {p:.2} | {:.2} | {d:.2} | {:.2} | {:.2} | {} |",
            p / bp,
            d / bd,
            p95(&out.delays),
            per_kind.join(", ")
        );
        eprintln!("  ({name}: {:?} wall)", wall.elapsed());
    }
    let (bp, bd) = base.unwrap();
    let (dp, dd) = default;
    let (p, d) = oracle::run(&jobs, 0.33);
    println!(
        "\nThe oracle: the same schedule given each kind's true distribution, learning nothing\n"
    );
    println!("| schedule | tradeoff (s) | polls/job | × fixed 5 s | mean delay (s) | × fixed 5 s | default's polls ÷ oracle's |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| oracle, default tradeoff | 0.330 | {p:.2} | {:.2} | {d:.2} | {:.2} | |",
        p / bp,
        d / bd
    );
    let (c, p, d) = oracle::at_delay(&jobs, dd);
    println!(
        "| oracle at the default's mean delay | {c:.3} | {p:.2} | {:.2} | {d:.2} | {:.2} | {:.3} |",
        p / bp,
        d / bd,
        dp / p
    );
    let warm_jobs: Vec<Job> = jobs
        .iter()
        .zip(&warm)
        .filter(|(_, &w)| w)
        .map(|(j, _)| *j)
        .collect();
    let (wp, wd) = default_warm;
    let (c, p, d) = oracle::at_delay(&warm_jobs, wd);
    println!(
        "| oracle at the default's mean delay, jobs after the first {WARM} of each kind (default: {wp:.2} polls, {wd:.2} s) | {c:.3} | {p:.2} | | {d:.2} | | {:.3} |",
        wp / p
    );
    let (c, p, d) = oracle::at_delay(&jobs, bd);
    println!(
        "| oracle at fixed 5 s's mean delay | {c:.3} | {p:.2} | {:.2} | {d:.2} | {:.2} | |",
        p / bp,
        d / bd
    );

    // Cold start against restored durations: a fresh process knows nothing
    // of the job types; one that restored what an earlier process learned
    // (durable tracking stores the learner's per-type statistics and a new
    // process takes them in) starts with a fit. The earlier process is a
    // pass over another day's jobs with the same policy: its clones share
    // the learner, so the second pass sees exactly the statistics a restore
    // gives.
    let earlier = Arc::new(jobs_seeded(7));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let mut restored = Outcome {
        polls: Vec::new(),
        delays: Vec::new(),
        overdue: 0,
    };
    for seed in 0..SEEDS {
        let policy = PollPolicy::default().seed(seed);
        rt.block_on(run(policy.clone(), earlier.clone()));
        let o = rt.block_on(run(policy, jobs.clone()));
        restored.polls.extend(o.polls);
        restored.delays.extend(o.delays);
    }
    let polls: Vec<f64> = restored.polls.iter().map(|&p| p as f64).collect();
    let (rp, rd) = (mean(&polls), mean(&restored.delays));
    println!("\nCold start against learned durations restored from an earlier process\n");
    println!("| default policy | polls/job | × fixed 5 s | mean delay (s) | × fixed 5 s | p95 delay (s) |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| fresh process (cold start) | {dp:.2} | {:.2} | {dd:.2} | {:.2} | |",
        dp / bp,
        dd / bd
    );
    println!(
        "| restored durations | {rp:.2} | {:.2} | {rd:.2} | {:.2} | {:.2} |",
        rp / bp,
        rd / bd,
        p95(&restored.delays)
    );

    batches(&rt);
}

/// Jobs of each kind in a batch.
const BATCH_PER_KIND: usize = 1000;

/// The batch rows: a first and a second batch per policy (the second
/// after the first, so it starts from what the first taught), with true
/// and with frozen server times, each against the oracle at its mean
/// delay.
fn batches(rt: &tokio::runtime::Runtime) {
    let first_only = std::env::args().any(|a| a == "--first-only");
    let by_kind = std::env::args().any(|a| a == "--by-kind");
    let first = Arc::new(batch_seeded(7, BATCH_PER_KIND));
    let second = Arc::new(batch_seeded(20261129, BATCH_PER_KIND));
    println!(
        "\nBatches: {BATCH_PER_KIND} jobs of each kind started at once, a first batch on a fresh policy, then a second\n"
    );
    println!("| server times | batch | polls/job | mean delay (s) | oracle's polls/job at that delay | default ÷ oracle (polls) | oracle's delay (s) | waits over 2.5 × run + 1.5 s |");
    println!("|---|---|---|---|---|---|---|---|");
    for times in [ServerTimes::True, ServerTimes::Frozen] {
        let wall = std::time::Instant::now();
        let empty = || Outcome {
            polls: Vec::new(),
            delays: Vec::new(),
            overdue: 0,
        };
        let (mut a, mut b) = (empty(), empty());
        for seed in 0..SEEDS {
            let policy = PollPolicy::default().seed(seed);
            for (out, jobs) in [(&mut a, &first), (&mut b, &second)] {
                if first_only && std::ptr::eq(jobs, &second) {
                    continue;
                }
                let o = rt.block_on(run_with(policy.clone(), jobs.clone(), times));
                out.polls.extend(o.polls);
                out.delays.extend(o.delays);
                out.overdue += o.overdue;
            }
        }
        for (name, out, jobs) in [("first", &a, &first), ("second", &b, &second)] {
            if first_only && name == "second" {
                continue;
            }
            let polls: Vec<f64> = out.polls.iter().map(|&p| p as f64).collect();
            let (p, d) = (mean(&polls), mean(&out.delays));
            let (oc, op, od) = oracle::at_delay(jobs, d);
            if by_kind {
                // Each kind against the oracle at the row's tradeoff: where
                // the polls and the delay went.
                for (k, (kind, _, _)) in KINDS.iter().enumerate() {
                    let of_kind: Vec<usize> = (0..out.polls.len())
                        .filter(|i| jobs[i % jobs.len()].kind == k)
                        .collect();
                    let n = of_kind.len() as f64;
                    let kp = of_kind.iter().map(|&i| out.polls[i] as f64).sum::<f64>() / n;
                    let kd = of_kind.iter().map(|&i| out.delays[i]).sum::<f64>() / n;
                    let own: Vec<Job> = jobs.iter().filter(|j| j.kind == k).copied().collect();
                    let (kop, kod) = oracle::run(&own, oc);
                    println!(
                        "|  | {kind} | {kp:.2} | {kd:.2} | {kop:.2} | {:.3} | {kod:.2} | |",
                        kp / kop
                    );
                }
            }
            println!(
                "| {times:?} | {name} | {p:.2} | {d:.2} | {op:.2} | {:.3} | {od:.2} | {} of {} |",
                p / op,
                out.overdue,
                out.delays.len()
            );
        }
        eprintln!("  (batches, {times:?} times: {:?} wall)", wall.elapsed());
    }
}
