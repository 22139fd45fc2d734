//! When a wait polls next: the interval each schedule gives, and the
//! parked polls of a batch (its scouts, and timing the others again when
//! their type learns an end).

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::time::Duration;

use tokio::time::Instant;

use super::{WaitState, NEVER};
use crate::clock;
use crate::poll::learner::JobType;
use crate::poll::policy::{adaptive_fallback, PollPolicy, Schedule};

/// Of the jobs of a type without a fit, about this many are its scouts,
/// polled on the evidence's schedule; the polls of the others are parked
/// (see [`scout`]). Fewer scouts see the type's first ends later (in the
/// poll-efficiency bench, 32 cost more delay than they saved polls, 16 let
/// 25 of 24,000 waits run past their bound); more spend polls that tell
/// little more (128 and 256 were costlier at the same delay).
const PARK_SCOUTS: u32 = 64;

/// Whether a job is one of the about [`PARK_SCOUTS`] of its type's
/// `running` jobs polled on the evidence's schedule (`Some(true)`) or a
/// parked one (`Some(false)`): drawn by its id (and the policy's seed), so
/// that a wait is a scout or not from poll to poll while the count stays
/// put. `None` while no more than that many run: then none is parked.
fn scout(policy: &PollPolicy, img_uuid: &str, running: u32) -> Option<bool> {
    if running <= PARK_SCOUTS {
        return None;
    }
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one((img_uuid, "scout"));
    Some(fastrand::Rng::with_seed(policy.jitter_seed() ^ h).u32(..running) < PARK_SCOUTS)
}

impl WaitState {
    /// When to poll next after an answer that came `since` into the wait:
    /// the interval, then the stall check and the deadline.
    pub(super) fn next_after_answer(
        &mut self,
        policy: &PollPolicy,
        img_uuid: &str,
        since: Duration,
        from: Instant,
    ) -> Instant {
        let mut at = clock::after(from, self.interval(policy, img_uuid, since, true));
        if let Some(stall) = policy.stall_after {
            at = at.min(clock::after(self.at(self.last_change_ms), stall));
        }
        at.min(self.deadline())
    }

    /// Lets the wait's polls be parked: whoever runs it calls
    /// [`retime`](Self::retime) when the
    /// [`Learner`](crate::poll::learner::Learner) says a type woke
    /// (`Learner::woken`).
    pub(crate) fn wakeable(&mut self) {
        self.wakeable = true;
    }

    /// When to poll next, worked out again, for a wait whose next poll is
    /// parked and whose type learned of an end since: `None` when it is
    /// not. The interval is taken from the last answer, as if it came now
    /// with what the type knows now.
    pub(crate) fn retime(&mut self, policy: &PollPolicy, img_uuid: &str) -> Option<Instant> {
        if !self.last.parked || self.last.running_ms == NEVER {
            return None;
        }
        let woken = self.last.job_type.as_ref()?.woken();
        if woken as u8 == self.last.woken {
            return None;
        }
        let since = Duration::from_millis(u64::from(self.last.running_ms));
        let from = self.at(self.last.running_ms);
        Some(self.next_after_answer(policy, img_uuid, since, from))
    }

    /// The age the schedule believes the job to be, `since` into the wait:
    /// the time since it was first seen, plus the age the server gave it
    /// then, if a fit found that plausible and the server's times are
    /// believed for the type.
    pub(super) fn age(&self, fitted: bool, trusted: bool, since: Duration) -> Duration {
        if fitted && trusted {
            since.saturating_add(Duration::from_millis(u64::from(self.initial_age_ms)))
        } else {
            since
        }
    }

    /// The interval before the next poll, slow-down and jitter applied,
    /// within the policy's bounds.
    ///
    /// The adaptive schedule refuses, for the rest of the wait, an age the
    /// server gave that its fit finds implausible, and holds that against
    /// the server's times for the job type.
    pub(super) fn interval(
        &mut self,
        policy: &PollPolicy,
        img_uuid: &str,
        since: Duration,
        answered: bool,
    ) -> Duration {
        let n = self.polls.saturating_sub(1);
        self.last.parked = false;
        let base = match &policy.schedule {
            Schedule::Fixed(d) => *d,
            Schedule::Exponential(b) => b.base_delay(n),
            Schedule::Adaptive { tradeoff } => {
                let job_type = self.last.job_type.clone();
                let view = job_type.as_deref().map(|t| (t, t.view()));
                match view {
                    Some((t, (Some(m), mut trusted))) => {
                        let initial = Duration::from_millis(u64::from(self.initial_age_ms));
                        if !initial.is_zero() && m.implausible(initial) {
                            self.initial_age_ms = 0;
                            t.server_times(false);
                            trusted = false;
                        }
                        m.next_interval(
                            self.age(true, trusted, since),
                            since,
                            *tradeoff,
                            policy.min_interval,
                            policy.max_interval,
                        )
                    }
                    Some((t, (None, _))) => {
                        self.before_fit(policy, t, img_uuid, since, *tradeoff, answered)
                    }
                    None => adaptive_fallback().base_delay(n),
                }
            }
        };
        let slowed = base.saturating_mul(1u32 << self.slowdown);
        // The jitter of poll n of a job: random across jobs, reproducible
        // with a seeded policy, and no generator kept per wait.
        let mut rng = fastrand::Rng::with_seed(
            policy.jitter_seed()
                ^ BuildHasherDefault::<DefaultHasher>::default().hash_one(img_uuid)
                ^ u64::from(self.polls).rotate_left(32),
        );
        policy
            .jitter
            .apply(slowed, &mut rng)
            .clamp(policy.min_interval, policy.max_interval)
    }

    /// The interval of a wait on type `t` before it has a fit.
    ///
    /// The evidence of the type's other jobs only ever makes the 1 s ×
    /// 1.5ⁿ fallback sparser, and only after an answer (after a failed
    /// poll the wait saw nothing, and tries again soon). It never more than
    /// doubles the time since the job was first seen (+ 1 s): a job that
    /// ends just after a poll is seen by twice its run time + 1 s. A parked
    /// poll is the exception: it waits for the longest interval, unless an
    /// end of the type times it again first.
    fn before_fit(
        &mut self,
        policy: &PollPolicy,
        t: &JobType,
        img_uuid: &str,
        since: Duration,
        tradeoff: Duration,
        answered: bool,
    ) -> Duration {
        let fallback = adaptive_fallback().base_delay(self.polls.saturating_sub(1));
        let cap = since.saturating_add(Duration::from_secs(1));
        match answered.then(|| t.cold()).flatten() {
            None => fallback,
            Some(c) => {
                let scout = (self.wakeable && c.parkable)
                    .then(|| scout(policy, img_uuid, c.running))
                    .flatten();
                if scout == Some(false) {
                    // Parked: the type's scouts (and the other parked
                    // polls) watch for its first ends, and each end times
                    // this poll again.
                    self.last.parked = true;
                    self.last.woken = t.woken() as u8;
                    policy.max_interval.max(fallback)
                } else {
                    // A scout's answer serves the parked polls too: it
                    // buys back half the wasted wait.
                    let tradeoff = if scout == Some(true) {
                        tradeoff / 2
                    } else {
                        tradeoff
                    };
                    t.cold_interval(since, tradeoff, policy.min_interval, policy.max_interval)
                        .map_or(fallback, |h| h.min(cap).max(fallback))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobDetail, JobStatus};
    use crate::poll::state::Step;

    /// 1,000 waits on jobs of a type never seen, every other one run by
    /// a driver that times them again (wakeable), answered at 0 and 5 s.
    #[test]
    fn only_a_wakeable_wait_is_parked_and_ends_of_its_type_time_it_again() {
        let policy = PollPolicy::adaptive()
            .jitter(crate::backoff::Jitter::None)
            .seed(1);
        let start = Instant::now();
        let running = |id: &str| Ok(JobDetail::new(id, JobStatus::Processing).with_job_type("t"));
        let mut waits: Vec<(String, WaitState)> = (0..1000)
            .map(|i| {
                let id = format!("j{i}");
                let mut state = WaitState::new(&policy, start);
                if i % 2 == 0 {
                    state.wakeable();
                }
                state.on_result(&policy, start, &id, running(&id));
                (id, state)
            })
            .collect();
        let at_5 = start + Duration::from_secs(5);
        let next: Vec<Duration> = waits
            .iter_mut()
            .map(
                |(id, state)| match state.on_result(&policy, at_5, id, running(id)) {
                    Step::Again { at, .. } => at - at_5,
                    Step::Done(r) => panic!("{r:?}"),
                },
            )
            .collect();
        // The others are never parked: at most the time since first seen
        // + 1 s. Of the wakeable, all but about 64 scouts are parked for
        // the longest interval.
        let cap = Duration::from_secs(6);
        assert!(next.iter().skip(1).step_by(2).all(|&h| h <= cap));
        let parked = next
            .iter()
            .filter(|&&h| h == Duration::from_secs(60))
            .count();
        let scouts = next.iter().step_by(2).filter(|&&h| h <= cap).count();
        assert_eq!(parked + scouts, 500, "{parked} parked, {scouts} scouts");
        assert!((20..=110).contains(&scouts), "{scouts} scouts");
        let retime = |waits: &mut Vec<(String, WaitState)>| -> Vec<Instant> {
            waits
                .iter_mut()
                .filter_map(|(id, s)| s.retime(&policy, id))
                .collect()
        };
        // Nothing to time again before an end.
        assert!(retime(&mut waits).is_empty());
        // One job ends (a wait that was not parked): the parked are timed
        // again, and stay parked.
        let end = |waits: &mut Vec<(String, WaitState)>, i: usize, secs: u64| {
            let (id, state) = &mut waits[i];
            let done = Ok(JobDetail::new(id.as_str(), JobStatus::Succeeded).with_job_type("t"));
            let r = state.on_result(&policy, start + Duration::from_secs(secs), id, done);
            assert!(matches!(r, Step::Done(Ok(_))));
        };
        end(&mut waits, 1, 9);
        let retimed = retime(&mut waits);
        assert_eq!(retimed.len(), parked);
        assert!(retimed
            .iter()
            .all(|&at| at == at_5 + Duration::from_secs(60)));
        // A second end: no longer parked, each next poll comes on what the
        // evidence says, within the time since first seen + 1 s.
        end(&mut waits, 3, 10);
        let retimed = retime(&mut waits);
        assert_eq!(retimed.len(), parked);
        assert!(retimed.iter().all(|&at| at <= at_5 + cap), "{retimed:?}");
        // And once timed again, a wait is not timed again until the next
        // end.
        assert!(retime(&mut waits).is_empty());
    }
}
