//! Running a campaign's fleet: the worker processes, the kill and the
//! restart, the end of the run, and the check.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use goenhance_jobs::fake::FakeServer;

use super::check::{self, Facts, Verdict};
use super::{now_ms, Job, Proc, Settings, WorkerEnv};

/// What the fleet runner needs from a campaign.
pub struct Run<'a> {
    pub settings: &'a Settings,
    pub dir: &'a Path,
    pub jobs: &'a [Job],
    pub server: &'a FakeServer,
    /// The test entry that runs a worker.
    pub entry: &'a str,
    /// The environment of worker `i`.
    pub env: &'a dyn Fn(usize) -> WorkerEnv,
    /// When the jobs were tracked (wall ms).
    pub tracked: (u64, u64),
}

/// What came out of a run.
pub struct Outcome {
    pub verdict: Verdict,
    pub millis: u64,
}

/// Starts the workers, kills one (drawn from the seed, never the one with
/// the clock ahead) once 30 % of the jobs are delivered and starts it
/// again at once, stops the faults at the end of the window (`stop_faults`)
/// and ends the run when every job is delivered, none is pending in the
/// store (`pending`), faults have stopped and no handler is running — or
/// at the latest when the checker's bound for the last job has passed by
/// 20 s. Then it checks.
pub async fn run<P, F>(run: Run<'_>, mut pending: P, stop_faults: &dyn Fn()) -> Outcome
where
    P: FnMut() -> F,
    F: Future<Output = Option<u64>>,
{
    let s = run.settings;
    let t0 = now_ms();
    let mut procs: Vec<Proc> = (0..s.workers)
        .map(|i| Proc::start(run.entry, &(run.env)(i)))
        .collect();
    // The skewed worker is the last one.
    let victim = fastrand::Rng::with_seed(s.seed ^ 0x6b69_6c6c).usize(..s.workers - 1);
    let mut deaths: HashMap<u32, u64> = HashMap::new();
    let mut other_faults = Vec::new();
    let mut killed = false;
    let mut faults_on = true;
    let mut failures = Vec::new();
    let lease_ms = s.lease.as_millis() as u64;
    let window_end = t0 + s.fault_window.as_millis() as u64;
    let give_up =
        (run.tracked.1 + s.deadline.as_millis() as u64).max(window_end) + 2 * lease_ms + 20_000;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = now_ms();
        if faults_on && now >= window_end {
            stop_faults();
            faults_on = false;
        }
        let runs = check::read_handler_logs(run.dir);
        let delivered: HashSet<&str> = runs
            .iter()
            .filter(|r| r.end_ms.is_some())
            .map(|r| r.job.as_str())
            .collect();
        if !killed && delivered.len() * 10 >= run.jobs.len() * 3 {
            let p = &mut procs[victim];
            let pid = p.child.id();
            let at = p.kill();
            deaths.insert(pid, at);
            other_faults.push((at, "sigkill".to_owned()));
            let fresh = Proc::start(run.entry, &(run.env)(victim));
            other_faults.push((fresh.started_ms, "restart".to_owned()));
            procs[victim] = fresh;
            killed = true;
            println!("killed worker {victim} (pid {pid}) at {} ms", at - t0);
        }
        for p in &mut procs {
            if let Some(status) = p.exited() {
                failures.push(format!("worker {} ended on its own: {status}", p.name));
            }
        }
        if !failures.is_empty() {
            break;
        }
        let open = runs.iter().any(|r| {
            r.end_ms.is_none() && r.cancelled_ms.is_none() && !deaths.contains_key(&r.pid)
        });
        let settled = !faults_on && killed && delivered.len() == run.jobs.len() && !open;
        if settled && pending().await == Some(0) {
            break;
        }
        if now >= give_up {
            println!(
                "the run did not end by {} ms: checking what happened",
                now - t0
            );
            break;
        }
    }
    let end = now_ms();
    for p in &mut procs {
        let pid = p.child.id();
        let at = p.kill();
        deaths.entry(pid).or_insert(at);
    }
    let mut first_end_served: HashMap<String, u64> = HashMap::new();
    let requests = run.server.requests();
    // The server's log beside the others, for a study of the run's timing.
    let text: String = requests
        .iter()
        .map(|r| {
            let at = r.at.duration_since(std::time::UNIX_EPOCH).unwrap();
            format!(
                "{} {} {} {}\n",
                at.as_millis(),
                r.img_uuid,
                r.status,
                r.faulted
            )
        })
        .collect();
    std::fs::write(run.dir.join("requests.txt"), text).unwrap();
    std::fs::write(
        run.dir.join("facts.txt"),
        format!(
            "t0 {t0}\ntracked {} {}\ndeadline_ms {}\nlease_ms {lease_ms}\nend {end}\n",
            run.tracked.0,
            run.tracked.1,
            s.deadline.as_millis()
        ),
    )
    .unwrap();
    for r in requests {
        if r.terminal && !r.faulted {
            let at =
                r.at.duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
            first_end_served
                .entry(r.img_uuid)
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        }
    }
    let facts = Facts {
        jobs: run.jobs,
        tracked: run.tracked,
        deadline: s.deadline,
        lease: s.lease,
        first_end_served,
        deaths,
        other_faults,
        t0,
    };
    let mut verdict = check::check(run.dir, &facts);
    verdict.failures.extend(failures);
    Outcome {
        verdict,
        millis: end - t0,
    }
}

/// Panics with the seed, every failure and the folder of the logs (kept),
/// unless there are none; asserts that each kind in `kinds` was injected at
/// least `at_least` times.
pub fn assert_clean(s: &Settings, out: &Outcome, kinds: &[&str], at_least: usize, dir: &Path) {
    let v = &out.verdict;
    println!(
        "campaign seed {}: {} in {} ms",
        s.seed, v.summary, out.millis
    );
    let mut failures = v.failures.clone();
    for k in kinds {
        let n = v.faults_by_kind.get(*k).copied().unwrap_or(0);
        if n < at_least {
            failures.push(format!(
                "only {n} faults of kind {k} injected, {at_least} wanted: the campaign tested too little"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "campaign seed: {} (replay with CAMPAIGN_SEED={}) failed:\n- {}\n{}\nlogs in {}",
        s.seed,
        s.seed,
        failures.join("\n- "),
        v.summary,
        dir.display()
    );
}
