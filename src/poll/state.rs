//! The state of one wait: what was seen, when to poll next (its schedule:
//! `schedule`), when to stop.
//!
//! Shared by [`Poller`](super::Poller), `Client::watch` and the hub, so that
//! every way of waiting follows the same rules. It is kept small (at most
//! 120 bytes, plus 8 bytes a poll of history) because the hub holds one per
//! waiting job: of the last answer it keeps the status, the job type
//! (shared between jobs of a type) and the start time, not the whole detail.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::clock::{self, ms_u32 as ms};
use crate::error::{Error, WaitReport};
use crate::model::{JobDetail, JobStatus};

use super::censored::{self, NONE};
use super::history::{code_of, History, FIRST_UNKNOWN};
use super::learner::JobType;
use super::policy::{PollPolicy, Schedule};

mod schedule;

/// The largest slow-down exponent after 429/503 answers (× 16).
const MAX_SLOWDOWN: u8 = 4;
/// The oldest a job is believed to be when first seen.
const MAX_INITIAL_AGE: Duration = Duration::from_secs(24 * 3600);

/// What to do after a poll.
#[derive(Debug)]
pub(crate) enum Step {
    /// The wait is over.
    Done(Result<JobDetail, Error>),
    /// Poll again at `at`; `changed` holds the detail when this poll saw a
    /// new status.
    Again {
        at: Instant,
        changed: Option<JobDetail>,
    },
}

/// How a wait ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Deadline,
    Stall,
}

/// What the wait keeps of the last answer.
#[derive(Debug)]
struct LastSeen {
    /// 0 before any answer, then the status code of [`History`] (which
    /// keeps the text of unknown statuses).
    code: u8,
    /// When it came, in milliseconds from the start of the wait ([`NEVER`]
    /// before any): the last answer that said the job was not finished,
    /// which with the one that says it is tells what the wait saw of the
    /// job's end. (Here it fits in the padding after `code`.)
    running_ms: u32,
    /// The bucket of the lower bound on the job's run time that the job
    /// type counts while the job runs ([`NONE`] when not counted): a
    /// schedule that learns from jobs that ended also learns from those
    /// still running.
    bound: u8,
    /// Whether the next poll was put off on the strength of the type's
    /// other jobs (see `schedule::scout`), and the type's count of wakes
    /// (its low byte) then: an end of the type since times it again.
    parked: bool,
    woken: u8,
    job_type: Option<Arc<JobType>>,
    /// Milliseconds since the Unix epoch; 0 when unknown.
    start_ms: u64,
}

#[derive(Debug)]
pub(crate) struct WaitState {
    started: Instant,
    /// Milliseconds from `started` (u32: up to 49 days).
    deadline_ms: u32,
    last_change_ms: u32,
    /// How old the server said the job was when first seen; 0 once the
    /// schedule found that implausible: then it is ignored for the rest of
    /// the wait.
    initial_age_ms: u32,
    polls: u32,
    failures: u32,
    slowdown: u8,
    /// Whether whoever runs the wait times it again when its type learns
    /// an end ([`WaitState::retime`]): only then may a poll be parked.
    wakeable: bool,
    last: LastSeen,
    /// The error of the last poll when it failed, named by a deadline or
    /// stall error.
    last_error: Option<Error>,
    history: History,
}

/// A deadline offset that stands for "no deadline": a timeout of 49.7 days
/// or more.
const NEVER: u32 = u32::MAX;

impl WaitState {
    pub(crate) fn new(policy: &PollPolicy, now: Instant) -> Self {
        WaitState {
            started: now,
            deadline_ms: ms(policy.timeout),
            last_change_ms: 0,
            initial_age_ms: 0,
            polls: 0,
            failures: 0,
            slowdown: 0,
            wakeable: false,
            last: LastSeen {
                code: 0,
                running_ms: NEVER,
                bound: NONE,
                parked: false,
                woken: 0,
                job_type: None,
                start_ms: 0,
            },
            last_error: None,
            history: History::default(),
        }
    }

    fn at(&self, offset_ms: u32) -> Instant {
        clock::after(self.started, Duration::from_millis(u64::from(offset_ms)))
    }

    /// When the wait ends at the latest; thirty years on for a wait without
    /// a deadline.
    pub(crate) fn deadline(&self) -> Instant {
        if self.deadline_ms == NEVER {
            clock::far_future(self.started)
        } else {
            self.at(self.deadline_ms)
        }
    }

    /// The deadline error when the deadline has come by `now`: no poll is
    /// sent at or after a wait's deadline.
    pub(crate) fn expired(&self, img_uuid: &str, now: Instant) -> Option<Error> {
        (now >= self.deadline()).then(|| self.ended(img_uuid, End::Deadline, now))
    }

    /// Sets the deadline (a wait that began before this process did).
    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline_ms = ms(deadline.saturating_duration_since(self.started));
    }

    /// Takes up a wait from before a restart: the last status seen, when
    /// it came and the polls made until then, so that changes and stalls
    /// count from then and the schedule goes on from that poll. Only before
    /// the first poll, and only for a known status.
    pub(crate) fn resume(&mut self, status: &JobStatus, changed: Instant, polls: u32) {
        let code = code_of(status);
        if self.polls == 0 && code < FIRST_UNKNOWN {
            self.last.code = code;
            self.last_change_ms = ms(changed.saturating_duration_since(self.started));
            self.polls = polls;
        }
    }

    /// Polls made so far.
    pub(crate) fn polls(&self) -> u32 {
        self.polls
    }

    /// Moves the deadline later (a new waiter joined a job already followed).
    pub(crate) fn extend_deadline(&mut self, deadline: Instant) {
        self.deadline_ms = self
            .deadline_ms
            .max(ms(deadline.saturating_duration_since(self.started)));
    }

    /// When the wait began.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The deadline error as of `now` for a waiter that joined `joined_ms`
    /// into the wait, after `polls_before` polls: its report counts its own
    /// time and polls, and its history starts at its join.
    pub(crate) fn deadline_error_for(
        &self,
        img_uuid: &str,
        now: Instant,
        joined_ms: u32,
        polls_before: u32,
    ) -> Error {
        self.ended_for(img_uuid, End::Deadline, now, joined_ms, polls_before)
    }

    /// Takes in the result of one poll made at `now`.
    pub(crate) fn on_result(
        &mut self,
        policy: &PollPolicy,
        now: Instant,
        img_uuid: &str,
        result: Result<JobDetail, Error>,
    ) -> Step {
        self.polls = self.polls.saturating_add(1);
        let since = now.saturating_duration_since(self.started);
        let since_ms = ms(since);
        let deadline = self.deadline();
        match result {
            Ok(detail) => {
                let code = self.history.push(since_ms, Some(detail.status()));
                self.failures = 0;
                self.last_error = None;
                self.slowdown = self.slowdown.saturating_sub(1);
                let changed = self.last.code != code;
                if self.last.code == 0 {
                    let age = detail
                        .start_time()
                        .and_then(|s| SystemTime::now().duration_since(s).ok())
                        .unwrap_or_default()
                        .min(MAX_INITIAL_AGE);
                    self.initial_age_ms = ms(age);
                }
                if changed {
                    self.last_change_ms = since_ms;
                    if let JobStatus::Unknown(raw) = detail.status() {
                        tracing::warn!(img_uuid = %detail.img_uuid(), status = %raw, "unknown job status; waiting on");
                    }
                }
                if detail.is_terminal() {
                    self.uncount();
                    self.learn(policy, &detail, since);
                    return Step::Done(Ok(detail));
                }
                let job_type = match (&self.last.job_type, detail.job_type()) {
                    (Some(t), Some(now)) if t.name() == now => Some(t.clone()),
                    (_, Some(t)) => Some(policy.learner.intern(t)),
                    (_, None) => None,
                };
                let same_type = match (&self.last.job_type, &job_type) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                };
                if !same_type {
                    self.uncount();
                }
                self.last = LastSeen {
                    code,
                    running_ms: since_ms,
                    bound: self.last.bound,
                    parked: false,
                    woken: 0,
                    job_type,
                    start_ms: detail
                        .start_time()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                };
                let unchanged_for =
                    Duration::from_millis(u64::from(since_ms.saturating_sub(self.last_change_ms)));
                if let Some(stall) = policy.stall_after {
                    if unchanged_for >= stall {
                        return Step::Done(Err(self.ended(img_uuid, End::Stall, now)));
                    }
                }
                if now >= deadline {
                    return Step::Done(Err(self.ended(img_uuid, End::Deadline, now)));
                }
                let at = self.next_after_answer(policy, img_uuid, since, now);
                self.count(policy, since);
                Step::Again {
                    at,
                    changed: changed.then_some(detail),
                }
            }
            Err(error) => {
                self.history.push(since_ms, None);
                if !error.is_transient() {
                    return Step::Done(Err(error));
                }
                self.failures = self.failures.saturating_add(1);
                if policy
                    .max_consecutive_failures
                    .is_some_and(|max| self.failures >= max)
                {
                    return Step::Done(Err(error));
                }
                if matches!(error.status().map(|s| s.as_u16()), Some(429 | 503)) {
                    self.slowdown = (self.slowdown + 1).min(MAX_SLOWDOWN);
                }
                let at = clock::after(now, self.interval(policy, img_uuid, since, false));
                let at = match error.retry_after() {
                    Some(after) => at.max(clock::after(now, after)),
                    None => at,
                };
                tracing::debug!(error = %error, "poll failed; waiting on");
                self.last_error = Some(error);
                if now >= deadline {
                    return Step::Done(Err(self.ended(img_uuid, End::Deadline, now)));
                }
                Step::Again {
                    at: at.min(deadline),
                    changed: None,
                }
            }
        }
    }

    /// Learns the run time of a job that succeeded: how long a failed job
    /// ran says nothing of how long successes take.
    fn learn(&self, policy: &PollPolicy, detail: &JobDetail, since: Duration) {
        if !matches!(policy.schedule, Schedule::Adaptive { .. }) {
            return;
        }
        if *detail.status() != JobStatus::Succeeded {
            if let Some(t) = &self.last.job_type {
                t.failed();
            }
            return;
        }
        let (Some(name), Some((lo, hi, agreed))) =
            (detail.job_type(), self.run_time(detail.run_time(), since))
        else {
            return;
        };
        let job_type = match &self.last.job_type {
            Some(t) if t.name() == name => t.clone(),
            _ => policy.learner.intern(name),
        };
        if let Some(agreed) = agreed {
            job_type.server_times(agreed);
        }
        job_type.record_between(lo, hi);
    }

    /// Counts the job, running `since` into the wait, among its type's jobs
    /// still running: its run time is at least its age now.
    fn count(&mut self, policy: &PollPolicy, since: Duration) {
        if !matches!(policy.schedule, Schedule::Adaptive { .. }) {
            return;
        }
        if let Some(t) = &self.last.job_type {
            let (model, trusted) = t.view();
            let bound = censored::bucket(self.age(model.is_some(), trusted, since));
            t.shift_bound(self.last.bound, bound);
            self.last.bound = bound;
        }
    }

    /// No longer counts the job among its type's jobs still running.
    fn uncount(&mut self) {
        if let Some(t) = &self.last.job_type {
            t.shift_bound(self.last.bound, NONE);
        }
        self.last.bound = NONE;
    }

    /// Between which two run times the job that was seen finished `done`
    /// into the wait ran: the server's run time (`end_time − start_time`)
    /// when it agrees with what the wait saw, else what the wait saw.
    ///
    /// The job ended between the last answer that said it was running and
    /// the first that said it was finished, at an age of `initial_age`
    /// (by the server's start time) plus those. The server's run time agrees
    /// when it falls in that window, or in the window of a job that was new
    /// when first seen (a server clock that is off shifts the start time,
    /// not the run time), give or take 1 s and 10 %. When it agrees with
    /// neither, the server's times are wrong (a clock stopped, a cached or
    /// placeholder date): its start time is no better than its end time, so
    /// the job is taken as new when first seen.
    ///
    /// `None` for a job already finished when first seen: the wait saw
    /// nothing of its run to check the server's times against, and a
    /// restart that finds many jobs finished would otherwise learn whatever
    /// they claim. The third value says whether the server's run time
    /// agreed, when it gave one.
    fn run_time(
        &self,
        server: Option<Duration>,
        done: Duration,
    ) -> Option<(Duration, Duration, Option<bool>)> {
        if self.last.running_ms == NEVER {
            return None;
        }
        let from_ms = |ms: u32| Duration::from_millis(u64::from(ms));
        let age = from_ms(self.initial_age_ms);
        let running = from_ms(self.last.running_ms);
        let Some(server) = server else {
            return Some((age + running, age + done, None));
        };
        let within = |lo: Duration, hi: Duration| {
            let slack = Duration::from_secs(1) + hi / 10;
            server.saturating_add(slack) >= lo && server <= hi.saturating_add(slack)
        };
        if within(age + running, age + done) || within(running, done) {
            Some((server, server, Some(true)))
        } else {
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            tracing::debug!(
                server_ms = ms(server),
                seen_from_ms = ms(running),
                seen_to_ms = ms(done),
                "server times disagree with what the wait saw; learning what it saw"
            );
            Some((running, done, Some(false)))
        }
    }

    /// The error that ends the wait early, naming the last poll's error when
    /// that poll failed.
    fn ended(&self, img_uuid: &str, kind: End, now: Instant) -> Error {
        self.ended_for(img_uuid, kind, now, 0, 0)
    }

    /// [`ended`](Self::ended) for a waiter that joined `joined_ms` into the
    /// wait, after `polls_before` polls.
    fn ended_for(
        &self,
        img_uuid: &str,
        kind: End,
        now: Instant,
        joined_ms: u32,
        polls_before: u32,
    ) -> Error {
        let last_detail = self.history.status_of(self.last.code).map(|status| {
            let start = (self.last.start_ms != 0)
                .then(|| UNIX_EPOCH.checked_add(Duration::from_millis(self.last.start_ms)))
                .flatten();
            let d = JobDetail::new(img_uuid, status).with_times(start, None);
            match &self.last.job_type {
                Some(t) => d.with_job_type(t.name()),
                None => d,
            }
        });
        let joined = Duration::from_millis(u64::from(joined_ms));
        let waited = now
            .saturating_duration_since(self.started)
            .saturating_sub(joined);
        let mut history = self.history.records();
        if joined_ms > 0 {
            history.retain(|r| r.at >= joined);
            for r in &mut history {
                r.at -= joined;
            }
        }
        let report = WaitReport {
            waited,
            polls: self.polls.saturating_sub(polls_before),
            last_detail,
            history,
            stalled_for: (kind == End::Stall).then(|| {
                waited.saturating_sub(Duration::from_millis(u64::from(self.last_change_ms)))
            }),
        };
        let err = match kind {
            End::Stall => Error::stall(report),
            End::Deadline => Error::deadline(report),
        };
        match &self.last_error {
            Some(last) => err.with_source(last.clone()),
            None => err,
        }
    }
}

impl Drop for WaitState {
    fn drop(&mut self) {
        self.uncount();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_small() {
        assert!(
            std::mem::size_of::<WaitState>() <= 144,
            "{}",
            std::mem::size_of::<WaitState>()
        );
    }

    /// A failed job's run time is not evidence of how long successes take.
    #[test]
    fn only_succeeded_jobs_are_learned() {
        let policy = PollPolicy::adaptive();
        for (id, end, learned) in [("f", JobStatus::Failed, 0), ("s", JobStatus::Succeeded, 1)] {
            let start = Instant::now();
            let mut state = WaitState::new(&policy, start);
            let seen = |status| Ok(JobDetail::new(id, status).with_job_type("mx-v2v"));
            state.on_result(&policy, start, id, seen(JobStatus::Processing));
            let later = start + Duration::from_secs(90);
            assert!(matches!(
                state.on_result(&policy, later, id, seen(end)),
                Step::Done(Ok(_))
            ));
            let types: Vec<_> = policy.learner.snapshot();
            assert_eq!(types.len(), learned, "{id}: {types:?}");
        }
    }
}
