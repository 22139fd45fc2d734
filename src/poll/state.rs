//! The state of one wait: what was seen, when to poll next, when to stop.
//!
//! Shared by [`Poller`](super::Poller), `Client::watch` and the hub, so that
//! every way of waiting follows the same rules.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::error::{Error, Kind, PollRecord, WaitReport};
use crate::model::{JobDetail, JobStatus};

use super::policy::{adaptive_fallback, PollPolicy, Schedule};

/// History entries kept per wait; older ones are dropped first.
const MAX_HISTORY: usize = 1000;
/// The largest slow-down exponent after 429/503 answers (× 16).
const MAX_SLOWDOWN: u8 = 4;
/// The oldest a job is believed to be when first seen.
const MAX_INITIAL_AGE: Duration = Duration::from_secs(24 * 3600);

/// What to do after a poll.
#[derive(Debug)]
pub(crate) enum Step {
    /// The wait is over.
    Done(Result<JobDetail, Error>),
    /// Poll again at `at`; `changed` is true when this poll saw a new status.
    Again { at: Instant, changed: bool },
}

#[derive(Debug)]
pub(crate) struct WaitState {
    started: Instant,
    deadline: Instant,
    last_change: Instant,
    initial_age: Duration,
    polls: u32,
    failures: u32,
    slowdown: u8,
    rng: Option<fastrand::Rng>,
    last: Option<Box<JobDetail>>,
    history: History,
}

impl WaitState {
    pub(crate) fn new(policy: &PollPolicy, now: Instant) -> Self {
        WaitState {
            started: now,
            deadline: now + policy.timeout,
            last_change: now,
            initial_age: Duration::ZERO,
            polls: 0,
            failures: 0,
            slowdown: 0,
            rng: None,
            last: None,
            history: History::default(),
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline later (a new waiter joined a job already followed).
    pub(crate) fn extend_deadline(&mut self, deadline: Instant) {
        self.deadline = self.deadline.max(deadline);
    }

    /// The deadline error as of `now`, for a waiter whose own deadline came
    /// before the wait's.
    pub(crate) fn deadline_error(&self, now: Instant) -> Error {
        self.ended(Kind::Deadline, now, None)
    }

    pub(crate) fn last(&self) -> Option<&JobDetail> {
        self.last.as_deref()
    }

    /// Takes in the result of one poll made at `now`.
    pub(crate) fn on_result(
        &mut self,
        policy: &PollPolicy,
        now: Instant,
        result: Result<JobDetail, Error>,
    ) -> Step {
        self.polls += 1;
        let since = now - self.started;
        match result {
            Ok(detail) => {
                self.history.push(since, Some(detail.status()));
                self.failures = 0;
                self.slowdown = self.slowdown.saturating_sub(1);
                let changed = self
                    .last
                    .as_ref()
                    .is_none_or(|l| l.status() != detail.status());
                if self.last.is_none() {
                    self.initial_age = detail
                        .start_time()
                        .and_then(|s| SystemTime::now().duration_since(s).ok())
                        .unwrap_or_default()
                        .min(MAX_INITIAL_AGE);
                }
                if changed {
                    self.last_change = now;
                    if let JobStatus::Unknown(raw) = detail.status() {
                        tracing::warn!(img_uuid = %detail.img_uuid(), status = %raw, "unknown job status; waiting on");
                    }
                }
                if detail.is_terminal() {
                    self.learn(policy, &detail, since);
                    return Step::Done(Ok(detail));
                }
                let unchanged_for = now - self.last_change;
                self.last = Some(Box::new(detail));
                if let Some(stall) = policy.stall_after {
                    if unchanged_for >= stall {
                        return Step::Done(Err(self.ended(Kind::Stall, now, None)));
                    }
                }
                if now >= self.deadline {
                    return Step::Done(Err(self.ended(Kind::Deadline, now, None)));
                }
                let mut at = now + self.interval(policy, now);
                if let Some(stall) = policy.stall_after {
                    at = at.min(self.last_change + stall);
                }
                Step::Again {
                    at: at.min(self.deadline),
                    changed,
                }
            }
            Err(error) => {
                self.history.push(since, None);
                if !error.is_transient() {
                    return Step::Done(Err(error));
                }
                self.failures += 1;
                if policy
                    .max_consecutive_failures
                    .is_some_and(|max| self.failures >= max)
                {
                    return Step::Done(Err(error));
                }
                if matches!(error.status().map(|s| s.as_u16()), Some(429 | 503)) {
                    self.slowdown = (self.slowdown + 1).min(MAX_SLOWDOWN);
                }
                if now >= self.deadline {
                    return Step::Done(Err(self.ended(Kind::Deadline, now, Some(error))));
                }
                let mut at = now + self.interval(policy, now);
                if let Some(after) = error.retry_after() {
                    at = at.max(now + after);
                }
                tracing::debug!(error = %error, "poll failed; waiting on");
                Step::Again {
                    at: at.min(self.deadline),
                    changed: false,
                }
            }
        }
    }

    fn learn(&self, policy: &PollPolicy, detail: &JobDetail, since: Duration) {
        if !matches!(policy.schedule, Schedule::Adaptive { .. }) {
            return;
        }
        if let Some(job_type) = detail.job_type() {
            let run_time = detail.run_time().unwrap_or(self.initial_age + since);
            policy.learner.record(job_type, run_time);
        }
    }

    /// The interval before the next poll, slow-down and jitter applied,
    /// within the policy's bounds.
    fn interval(&mut self, policy: &PollPolicy, now: Instant) -> Duration {
        let rng = self.rng.get_or_insert_with(|| match policy.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        });
        let n = self.polls.saturating_sub(1);
        let base = match &policy.schedule {
            Schedule::Fixed(d) => *d,
            Schedule::Exponential(b) => b.base_delay(n),
            Schedule::Adaptive { tradeoff } => {
                let model = self
                    .last
                    .as_ref()
                    .and_then(|d| d.job_type())
                    .and_then(|t| policy.learner.model(t));
                match model {
                    Some(m) => m.next_interval(
                        self.initial_age,
                        now - self.started,
                        *tradeoff,
                        policy.min_interval,
                        policy.max_interval,
                    ),
                    None => adaptive_fallback().base_delay(n),
                }
            }
        };
        let slowed = base * (1u32 << self.slowdown);
        policy
            .jitter
            .apply(slowed, rng)
            .clamp(policy.min_interval, policy.max_interval)
    }

    fn ended(&self, kind: Kind, now: Instant, source: Option<Error>) -> Error {
        let report = WaitReport {
            waited: now - self.started,
            polls: self.polls,
            last_detail: self.last.as_deref().cloned(),
            history: self.history.records(),
            stalled_for: (kind == Kind::Stall).then(|| now - self.last_change),
        };
        let err = Error::wait_ended(kind, report);
        match source {
            Some(s) => err.with_source(s),
            None => err,
        }
    }
}

/// Poll history in 8 bytes a poll.
#[derive(Debug, Default)]
struct History {
    entries: std::collections::VecDeque<(u32, u8)>,
    unknown: Vec<Box<str>>,
}

const FAILED_POLL: u8 = 0;

impl History {
    fn push(&mut self, since: Duration, status: Option<&JobStatus>) {
        let code = match status {
            None => FAILED_POLL,
            Some(JobStatus::Pending) => 1,
            Some(JobStatus::Processing) => 2,
            Some(JobStatus::Succeeded) => 3,
            Some(JobStatus::Failed) => 4,
            Some(JobStatus::Unknown(raw)) => {
                let idx = match self.unknown.iter().position(|u| **u == **raw) {
                    Some(i) => i,
                    None if self.unknown.len() < 250 => {
                        self.unknown.push(raw.as_str().into());
                        self.unknown.len() - 1
                    }
                    None => 249,
                };
                5 + idx as u8
            }
        };
        if self.entries.len() == MAX_HISTORY {
            self.entries.pop_front();
        }
        let ms = u32::try_from(since.as_millis()).unwrap_or(u32::MAX);
        self.entries.push_back((ms, code));
    }

    fn records(&self) -> Vec<PollRecord> {
        self.entries
            .iter()
            .map(|&(ms, code)| PollRecord {
                at: Duration::from_millis(u64::from(ms)),
                status: match code {
                    FAILED_POLL => None,
                    1 => Some(JobStatus::Pending),
                    2 => Some(JobStatus::Processing),
                    3 => Some(JobStatus::Succeeded),
                    4 => Some(JobStatus::Failed),
                    n => Some(JobStatus::Unknown(
                        self.unknown[usize::from(n - 5)].to_string(),
                    )),
                },
            })
            .collect()
    }
}
