//! The campaign's checker. It knows nothing of the tracker or its store:
//! it reads what the handlers wrote, what the fault injectors wrote and
//! what the fake server answered, and says what went wrong.
//!
//! Checks:
//! 1. every job was delivered at least once (a handler ended for it);
//! 2. no two handlers of one job ran at the same time, in one worker or
//!    two (a handler cancelled ran until it was dropped, one cut short by
//!    a SIGKILL until the kill);
//! 3. every job was first delivered by its deadline, or by two lease
//!    periods after the end of the last fault if that is later;
//! 4. every outcome agrees with the server: `succeeded` or `failed` only
//!    for a job whose end it is and only after the server had answered
//!    that end, a deadline error only once the deadline had passed.
//!
//! Its summary also says how far the last first delivery was from check
//! 3's bound, and how late the workers' threads woke (their `lag-*.log`):
//! a starved machine is reported, never excused.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{End, Job};

/// One handler call, from its `start` line and its `end` or `cancel` line
/// if any.
#[derive(Clone, Debug)]
pub struct HandlerRun {
    pub worker: String,
    pub pid: u32,
    pub job: String,
    pub deliveries: u32,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub outcome: Option<String>,
    /// When the tracker dropped it before it was done.
    pub cancelled_ms: Option<u64>,
}

/// The handler logs (`handlers-*.log`) in `dir`. A line cut short by a
/// kill (no newline) is left out.
pub fn read_handler_logs(dir: &Path) -> Vec<HandlerRun> {
    let mut runs: BTreeMap<(u32, String, u64), HandlerRun> = BTreeMap::new();
    for text in files(dir, "handlers-") {
        for line in complete_lines(&text) {
            let f: Vec<&str> = line.splitn(8, ' ').collect();
            let parsed = (|| {
                let run = HandlerRun {
                    worker: f.get(1)?.to_string(),
                    pid: f.get(2)?.parse().ok()?,
                    job: f.get(3)?.to_string(),
                    deliveries: f.get(4)?.parse().ok()?,
                    start_ms: f.get(5)?.parse().ok()?,
                    end_ms: None,
                    outcome: None,
                    cancelled_ms: None,
                };
                match f[0] {
                    "start" => Some(run),
                    "cancel" => Some(HandlerRun {
                        cancelled_ms: Some(f.get(6)?.parse().ok()?),
                        ..run
                    }),
                    "end" => Some(HandlerRun {
                        end_ms: Some(f.get(6)?.parse().ok()?),
                        outcome: Some(f.get(7)?.to_string()),
                        ..run
                    }),
                    _ => None,
                }
            })();
            let run = parsed.unwrap_or_else(|| panic!("a garbled handler log line: {line:?}"));
            let key = (run.pid, run.job.clone(), run.start_ms);
            let entry = runs.entry(key).or_insert_with(|| run.clone());
            if run.end_ms.is_some() {
                *entry = run;
            } else if run.cancelled_ms.is_some() {
                entry.cancelled_ms = run.cancelled_ms;
            }
        }
    }
    runs.into_values().collect()
}

/// One injected fault: `<at_ms> <source> <kind> <where> <ms>` a line of
/// a `faults-*.log`, `ms` being how long it lasted (a stall, a hang).
#[derive(Clone, Debug)]
pub struct FaultLine {
    pub at_ms: u64,
    pub source: String,
    pub kind: String,
    pub lasted_ms: u64,
}

/// The fault logs (`faults-*.log`) in `dir`.
pub fn read_fault_logs(dir: &Path) -> Vec<FaultLine> {
    let mut out = Vec::new();
    for text in files(dir, "faults-") {
        for line in complete_lines(&text) {
            let f: Vec<&str> = line.split(' ').collect();
            let parsed = (|| {
                Some(FaultLine {
                    at_ms: f.first()?.parse().ok()?,
                    source: f.get(1)?.to_string(),
                    kind: f.get(2)?.to_string(),
                    lasted_ms: f.get(4)?.parse().ok()?,
                })
            })();
            out.push(parsed.unwrap_or_else(|| panic!("a garbled fault log line: {line:?}")));
        }
    }
    out.sort_by_key(|f| f.at_ms);
    out
}

fn files(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".log"))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    whole.lines().filter(|l| !l.is_empty())
}

/// How late the worker processes' threads woke (`lag-*.log`): the number
/// of wakes 50 ms or more late, the latest one's lateness and their sum
/// (ms). Reported, never excused: a starved machine shows here.
pub fn read_lag_logs(dir: &Path) -> (usize, u64, u64) {
    let mut lags = Vec::new();
    for text in files(dir, "lag-") {
        for line in complete_lines(&text) {
            let late = line
                .split(' ')
                .nth(1)
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("a garbled lag log line: {line:?}"));
            lags.push(late);
        }
    }
    let longest = lags.iter().copied().max().unwrap_or(0);
    (lags.len(), longest, lags.iter().sum())
}

/// What the checker is given besides the logs.
#[derive(Debug)]
pub struct Facts<'a> {
    pub jobs: &'a [Job],
    /// Every job was tracked in this span of wall time (ms): its deadline
    /// is the wait timeout after a time in it.
    pub tracked: (u64, u64),
    pub deadline: Duration,
    pub lease: Duration,
    /// When the server first answered each job's end (wall ms).
    pub first_end_served: HashMap<String, u64>,
    /// When each worker process died: killed mid-run, or at the end.
    pub deaths: HashMap<u32, u64>,
    /// Faults that no log holds (the kill, the restart), as wall ms.
    pub other_faults: Vec<(u64, String)>,
    /// The campaign's start (wall ms), for relative times in the report.
    pub t0: u64,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub failures: Vec<String>,
    pub summary: String,
    pub faults_by_kind: BTreeMap<String, usize>,
}

/// Allowed disagreement of two clocks of this machine (each tracker keeps
/// its own wall clock from its start plus monotonic time).
const CLOCK_SLACK_MS: u64 = 250;
/// Examples shown per failed check.
const EXAMPLES: usize = 8;

/// Runs the checks on the logs in `dir`.
pub fn check(dir: &Path, facts: &Facts<'_>) -> Verdict {
    let runs = read_handler_logs(dir);
    let faults = read_fault_logs(dir);
    let mut v = Verdict::default();
    for f in &faults {
        *v.faults_by_kind.entry(f.kind.clone()).or_default() += 1;
    }
    for (_, what) in &facts.other_faults {
        *v.faults_by_kind.entry(what.clone()).or_default() += 1;
    }
    let last_fault = faults
        .iter()
        .map(|f| f.at_ms + f.lasted_ms)
        .chain(facts.other_faults.iter().map(|f| f.0))
        .max()
        .unwrap_or(facts.t0);
    let rel = |ms: u64| ms as i64 - facts.t0 as i64;

    let mut by_job: HashMap<&str, Vec<&HandlerRun>> = HashMap::new();
    for r in &runs {
        by_job.entry(r.job.as_str()).or_default().push(r);
    }

    // 1. Delivered.
    let missing: Vec<&str> = facts
        .jobs
        .iter()
        .filter(|j| {
            !by_job
                .get(j.id.as_str())
                .is_some_and(|rs| rs.iter().any(|r| r.end_ms.is_some()))
        })
        .map(|j| j.id.as_str())
        .collect();
    if !missing.is_empty() {
        v.failures.push(format!(
            "check 1 (every job delivered): {} of {} jobs never delivered, e.g. {:?}",
            missing.len(),
            facts.jobs.len(),
            &missing[..missing.len().min(EXAMPLES)]
        ));
    }

    // 2. No two handlers of a job at once.
    let end_of = |r: &HandlerRun| {
        r.end_ms
            .or(r.cancelled_ms)
            .unwrap_or_else(|| facts.deaths.get(&r.pid).copied().unwrap_or(u64::MAX))
    };
    let mut overlaps = Vec::new();
    for (job, rs) in &by_job {
        let mut rs = rs.clone();
        rs.sort_by_key(|r| r.start_ms);
        for (i, a) in rs.iter().enumerate() {
            for b in &rs[i + 1..] {
                if b.start_ms < end_of(a) {
                    overlaps.push(format!(
                        "{job}: {}/{} ran {}..{} ms and {}/{} from {} ms",
                        a.worker,
                        a.pid,
                        rel(a.start_ms),
                        rel(end_of(a)),
                        b.worker,
                        b.pid,
                        rel(b.start_ms)
                    ));
                }
            }
        }
    }
    if !overlaps.is_empty() {
        overlaps.sort();
        v.failures.push(format!(
            "check 2 (no job handled twice at once): {} overlaps, e.g. {:?}",
            overlaps.len(),
            &overlaps[..overlaps.len().min(EXAMPLES)]
        ));
    }

    // 3. In time.
    let lease_ms = facts.lease.as_millis() as u64;
    let deadline_ms = facts.deadline.as_millis() as u64;
    let mut late = Vec::new();
    let mut latest_first = None::<u64>;
    for j in facts.jobs {
        let first = by_job.get(j.id.as_str()).and_then(|rs| {
            rs.iter()
                .filter(|r| r.end_ms.is_some())
                .map(|r| r.start_ms)
                .min()
        });
        let Some(first) = first else { continue };
        latest_first = latest_first.max(Some(first));
        let bound = (facts.tracked.1 + deadline_ms).max(last_fault) + 2 * lease_ms;
        if first > bound + CLOCK_SLACK_MS {
            late.push(format!(
                "{}: first delivered at {} ms, bound {} ms",
                j.id,
                rel(first),
                rel(bound)
            ));
        }
    }
    if !late.is_empty() {
        v.failures.push(format!(
            "check 3 (delivered by its deadline or two leases after the last fault, at {} ms): {} late, e.g. {:?}",
            rel(last_fault),
            late.len(),
            &late[..late.len().min(EXAMPLES)]
        ));
    }

    // 4. Outcomes.
    let mut wrong = Vec::new();
    let plans: HashMap<&str, &Job> = facts.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    for r in runs.iter().filter(|r| r.end_ms.is_some()) {
        let Some(job) = plans.get(r.job.as_str()) else {
            wrong.push(format!("{}: not a job of the campaign", r.job));
            continue;
        };
        let outcome = r.outcome.as_deref().unwrap_or("");
        let served = facts.first_end_served.get(&r.job).copied();
        let problem = match (outcome, job.end) {
            ("succeeded", End::Succeed) | ("failed", End::Fail) => match served {
                Some(at) if at <= r.start_ms + CLOCK_SLACK_MS => None,
                Some(at) => Some(format!(
                    "delivered at {} ms, end served at {} ms",
                    rel(r.start_ms),
                    rel(at)
                )),
                None => Some("delivered an end the server never answered".to_owned()),
            },
            ("error:deadline", _) => {
                let earliest = facts.tracked.0 + deadline_ms;
                (r.start_ms + CLOCK_SLACK_MS < earliest).then(|| {
                    format!(
                        "deadline error at {} ms, before the deadline at {} ms or later",
                        rel(r.start_ms),
                        rel(earliest)
                    )
                })
            }
            (other, end) => Some(format!("outcome {other} for a job that ends {end:?}")),
        };
        if let Some(p) = problem {
            wrong.push(format!("{} ({}/{}): {p}", r.job, r.worker, r.pid));
        }
    }
    if !wrong.is_empty() {
        wrong.sort();
        v.failures.push(format!(
            "check 4 (outcomes agree with the server): {} wrong, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(EXAMPLES)]
        ));
    }

    let ended = runs.iter().filter(|r| r.end_ms.is_some()).count();
    let cancelled = runs.iter().filter(|r| r.cancelled_ms.is_some()).count();
    let cut = runs.len() - ended - cancelled;
    let twice = by_job
        .values()
        .filter(|rs| rs.iter().filter(|r| r.end_ms.is_some()).count() > 1)
        .count();
    let mut s = String::new();
    let _ = write!(
        s,
        "{} jobs; {ended} handler runs ended, {cancelled} cancelled, {cut} cut short by a kill; {twice} jobs delivered more than once; \
         last fault at {} ms; faults {:?}",
        facts.jobs.len(),
        rel(last_fault),
        v.faults_by_kind
    );
    if let Some(at) = latest_first {
        let bound = (facts.tracked.1 + deadline_ms).max(last_fault) + 2 * lease_ms;
        let (by, side) = if at <= bound {
            (bound - at, "before")
        } else {
            (at - bound, "after")
        };
        let _ = write!(
            s,
            "; last first delivery at {} ms, {by} ms {side} the bound",
            rel(at)
        );
    }
    let (stalls, longest, total) = read_lag_logs(dir);
    let _ = write!(
        s,
        "; workers woke late {stalls} times (50 ms or more), at worst {longest} ms, {total} ms in all"
    );
    v.summary = s;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, end: End) -> Job {
        Job {
            id: id.to_owned(),
            end,
            pending: Duration::ZERO,
            processing: Duration::ZERO,
            handler_ms: 0,
        }
    }

    /// Each check fails on a history that breaks it, and says so.
    #[test]
    fn each_check_fails_on_a_history_that_breaks_it() {
        let dir = super::super::campaign_dir("checker");
        let t0 = 1_000_000;
        // a: delivered twice at once (w0 and w1), b: never, c: late,
        // d: a deadline error before its deadline, e: an end the server
        // never gave, f: handled until its worker was killed, while another
        // worker handled it.
        let handlers = format!(
            "start w0 1 a 1 {s1}\nend w0 1 a 1 {s1} {e1} succeeded\n\
             start w0 1 c 1 {late}\nend w0 1 c 1 {late} {late2} failed\n\
             start w0 1 d 1 {s1}\nend w0 1 d 1 {s1} {e1} error:deadline\n\
             start w0 1 e 1 {s1}\nend w0 1 e 1 {s1} {e1} succeeded\n\
             start w0 1 f 1 {s1}\nend w0 1 f 1 {s1} {e1} fail\nstart w0 1 b 1",
            s1 = t0 + 100,
            e1 = t0 + 900,
            late = t0 + 90_000,
            late2 = t0 + 90_100,
        );
        std::fs::write(dir.join("handlers-w0-1.log"), handlers).unwrap();
        let other = format!(
            "start w1 2 a 2 {}\nend w1 2 a 2 {} {} succeeded\nstart w1 2 f 1 {}\n\
             start w1 2 c 1 {}\ncancel w1 2 c 1 {} {}\n",
            t0 + 500,
            t0 + 500,
            t0 + 600,
            t0 + 50,
            t0 + 80_000,
            t0 + 80_000,
            t0 + 89_999,
        );
        std::fs::write(dir.join("handlers-w1-2.log"), other).unwrap();
        std::fs::write(
            dir.join("faults-p.log"),
            format!("{} p cut 1 0\n{} p stall 1 20\n", t0 + 10, t0 + 5),
        )
        .unwrap();
        std::fs::write(
            dir.join("lag-w0-1.log"),
            "1000010 60\n1000020 250\n1000030 7",
        )
        .unwrap();
        let jobs = [
            job("a", End::Succeed),
            job("b", End::Succeed),
            job("c", End::Fail),
            job("d", End::Succeed),
            job("e", End::Succeed),
            job("f", End::Fail),
        ];
        let served = [("a", t0 + 50), ("c", t0 + 50), ("f", t0 + 50)]
            .map(|(id, at)| (id.to_owned(), at))
            .into();
        let facts = Facts {
            jobs: &jobs,
            tracked: (t0, t0 + 10),
            deadline: Duration::from_secs(60),
            lease: Duration::from_secs(3),
            first_end_served: served,
            deaths: [(1, t0 + 100_000), (2, t0 + 700)].into(),
            other_faults: vec![],
            t0,
        };
        let v = check(&dir, &facts);
        assert_eq!(
            v.failures,
            [
                r#"check 1 (every job delivered): 1 of 6 jobs never delivered, e.g. ["b"]"#,
                r#"check 2 (no job handled twice at once): 2 overlaps, e.g. ["a: w0/1 ran 100..900 ms and w1/2 from 500 ms", "f: w1/2 ran 50..700 ms and w0/1 from 100 ms"]"#,
                r#"check 3 (delivered by its deadline or two leases after the last fault, at 25 ms): 1 late, e.g. ["c: first delivered at 90000 ms, bound 66010 ms"]"#,
                r#"check 4 (outcomes agree with the server): 3 wrong, e.g. ["d (w0/1): deadline error at 100 ms, before the deadline at 60000 ms or later", "e (w0/1): delivered an end the server never answered", "f (w0/1): outcome fail for a job that ends Fail"]"#,
            ]
        );
        assert_eq!(
            v.faults_by_kind,
            [("cut".to_owned(), 1), ("stall".to_owned(), 1)].into()
        );
        // A line cut short by a kill is left out of the lag.
        assert_eq!(
            v.summary,
            "6 jobs; 6 handler runs ended, 1 cancelled, 1 cut short by a kill; 1 jobs delivered more than once; \
             last fault at 25 ms; faults {\"cut\": 1, \"stall\": 1}; last first delivery at 90000 ms, 23990 ms after the bound; \
             workers woke late 2 times (50 ms or more), at worst 250 ms, 310 ms in all"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
