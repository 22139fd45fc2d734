//! The driver: one task per client and runtime that runs every wait made
//! there — a timer queue of polls, retries and deadlines, a slab of job
//! states, the requests in flight.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use slab::Slab;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, Sleep};
use tower::retry::Policy as _;
use tower::ServiceExt;
use tracing::Instrument;

use super::job::{Job, Retrying, Waiter, IN_FLIGHT};
use super::queue::{floor_ms, Entry, Queue, DEADLINE};
use super::{Answer, Command, HubConfig};
use crate::decode::is_uuid;
use crate::error::Error;
use crate::poll::state::Step;
use crate::poll::PollPolicy;
use crate::query::JobQuery;
use crate::retry::{Attempt, RetryPolicy};
use crate::stack::Stack;
use crate::telemetry::InFlight;

mod intake;
mod memory;

type PollFuture = Pin<Box<dyn Future<Output = (usize, JobQuery, Answer)> + Send>>;

#[derive(Debug, PartialEq, Eq)]
enum Yield {
    /// Every job is finished and no client is left: the driver ends.
    Done,
    /// The work budget ran out: let other tasks run, then go on.
    Busy,
}

/// Below this many job slots the driver does not bother giving memory back.
const SHRINK_MIN: usize = 1024;

/// Rounds of work the driver does before it yields.
const ROUNDS_PER_TURN: u32 = 1;

/// The least time before a wait's deadline that a request is still worth
/// sending: past it, the wait ends with its deadline error at the deadline.
pub(super) const MIN_ATTEMPT: Duration = Duration::from_millis(10);

/// A waiter offset that stands for "no deadline".
const NEVER: u32 = u32::MAX;

pub(super) struct Driver {
    attempts: Stack,
    retry: Arc<RetryPolicy>,
    policy: PollPolicy,
    config: HubConfig,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_open: bool,
    jobs: Slab<Job>,
    /// Slab keys by the id's canonical form; the ids live in the slab.
    index: hashbrown::HashTable<u32>,
    hasher: RandomState,
    queue: Queue,
    /// The last poll generation handed out (never 0 nor `IN_FLIGHT`).
    generation: u32,
    /// The retries in progress, by job key: jobs whose last attempt failed
    /// and is retried (few, so not a field of every job).
    retries: std::collections::HashMap<u32, Retrying>,
    in_flight: FuturesUnordered<PollFuture>,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    rate_wait: Option<Instant>,
    /// Jobs ended since memory was last given back.
    removed_since_shrink: usize,
    /// The notice that a job type without a fit learned of an end (here,
    /// or in another client's scheduler sharing the policy): parked polls
    /// are timed again.
    woken: Pin<Box<OwnedNotified>>,
}

/// The hash of an id's canonical form: a UUID in lower case, any other id
/// as it is (answers are matched the same way).
fn hash_id(hasher: &RandomState, id: &str) -> u64 {
    if is_uuid(id) {
        let mut lower = [0u8; 36];
        lower.copy_from_slice(id.as_bytes());
        lower.make_ascii_lowercase();
        hasher.hash_one(lower)
    } else {
        hasher.hash_one(id.as_bytes())
    }
}

impl Driver {
    pub(super) fn new(
        attempts: Stack,
        retry: Arc<RetryPolicy>,
        policy: PollPolicy,
        config: HubConfig,
        rx: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        let now = Instant::now();
        let policy_woken = policy.learner.woken();
        Driver {
            attempts,
            retry,
            policy,
            config,
            rx,
            rx_open: true,
            jobs: Slab::new(),
            index: hashbrown::HashTable::new(),
            hasher: RandomState::new(),
            queue: Queue::new(now),
            generation: 0,
            retries: std::collections::HashMap::new(),
            in_flight: FuturesUnordered::new(),
            sleep: Box::pin(sleep_until(now)),
            armed: None,
            rate_wait: None,
            removed_since_shrink: 0,
            woken: Box::pin(policy_woken),
        }
    }

    pub(super) async fn run(mut self) {
        // After each round of work (at most one answer per poll in flight,
        // then as many new polls) the driver yields, so that whoever reads
        // the results runs before more pile up: a scheduler may run a busy
        // task dozens of times in a row before it polls a `block_on` future,
        // and results waiting to be read are what the hub's memory peaks on.
        while std::future::poll_fn(|cx| self.poll(cx)).await == Yield::Busy {
            tokio::task::yield_now().await;
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Yield> {
        let mut rounds = 0u32;
        loop {
            if rounds == ROUNDS_PER_TURN {
                return Poll::Ready(Yield::Busy);
            }
            rounds += 1;
            let mut progressed = false;
            while self.rx_open {
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(command)) => {
                        self.on_command(command);
                        progressed = true;
                    }
                    Poll::Ready(None) => self.rx_open = false,
                    Poll::Pending => break,
                }
            }
            while let Poll::Ready(Some((key, query, answer))) = self.in_flight.poll_next_unpin(cx) {
                self.on_answer(key, query, answer);
                progressed = true;
            }
            let now = Instant::now();
            self.release_due(now);
            progressed |= self.start_ready(now);
            if !progressed {
                if !self.rx_open && self.jobs.is_empty() {
                    return Poll::Ready(Yield::Done);
                }
                if self.woken.as_mut().poll(cx).is_ready() {
                    // Armed again before the waits are looked at: no end
                    // is missed. What is due now starts next round.
                    self.woken = Box::pin(self.policy.learner.woken());
                    self.retime_parked();
                    continue;
                }
                let wake = self.next_wake();
                if let Some(at) = wake {
                    if self.armed != Some(at) {
                        self.sleep.as_mut().reset(at);
                        self.armed = Some(at);
                    }
                    if self.sleep.as_mut().poll(cx).is_ready() {
                        self.armed = None;
                        continue;
                    }
                }
                return Poll::Pending;
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        match (self.queue.next_at(), self.rate_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a timer entry still stands: a poll entry of the job's
    /// current generation, or the deadline entry the job has armed.
    fn entry_valid(jobs: &Slab<Job>, epoch: Instant, &(at, mark, key): &Entry) -> bool {
        jobs.get(key as usize).is_some_and(|job| {
            if mark == DEADLINE {
                job.armed != NEVER
                    && floor_ms(epoch, job.state.started()) + i64::from(job.armed) == at
            } else {
                job.generation == mark
            }
        })
    }

    fn push_timer(&mut self, entry: Entry) {
        let (jobs, epoch) = (&self.jobs, self.queue.epoch());
        self.queue
            .push(entry, |e| Self::entry_valid(jobs, epoch, e));
    }

    /// Gives the waiters of job `key` whose deadline has come by `now`
    /// their deadline errors, each with its own report, and drops the job
    /// once no waiter is left and no request of it is out. Returns whether
    /// the job is still followed.
    fn expire(&mut self, key: usize, now: Instant) -> bool {
        let now_ms = self.queue.floor_ms(now);
        let Some(job) = self.jobs.get_mut(key) else {
            return false;
        };
        let base = self.queue.floor_ms(job.state.started());
        let rel = offset(base, now_ms);
        if job
            .waiters
            .first_deadline()
            .is_some_and(|d| d != NEVER && d <= rel)
        {
            let query = job.id.query();
            let mut last = None;
            for w in job.waiters.split_off(|w| w.deadline_ms > rel) {
                let error =
                    job.state
                        .deadline_error_for(job.id.as_str(), now, w.joined_ms, w.polls_before);
                w.deliver(&query, Err(error.clone()));
                last = Some(error);
            }
            if let (true, Some(error)) = (job.waiters.is_empty(), last) {
                job.trace.finish(&Err(error));
            }
        }
        if job.waiters.is_empty() && !job.in_flight() {
            self.remove(key);
            return false;
        }
        true
    }

    /// A deadline entry fell: ends the waiters whose deadline came, and
    /// arms the next one.
    fn on_deadline(&mut self, key: usize, at: i64, now: Instant) {
        let valid = Self::entry_valid(&self.jobs, self.queue.epoch(), &(at, DEADLINE, key as u32));
        if !valid || !self.expire(key, now) {
            return;
        }
        let job = &mut self.jobs[key];
        // Waiters that have gone do not keep a timer.
        if job.waiters.as_slice().iter().any(Waiter::is_gone) {
            drop(job.waiters.split_off(|w| !w.is_gone()));
        }
        job.armed = job.waiters.first_deadline().unwrap_or(NEVER);
        if job.armed != NEVER {
            let at = self.queue.floor_ms(job.state.started()) + i64::from(job.armed);
            self.push_timer((at, DEADLINE, key as u32));
        }
    }

    fn remove(&mut self, key: usize) -> Job {
        let hash = hash_id(&self.hasher, self.jobs[key].id.as_str());
        if let Ok(entry) = self.index.find_entry(hash, |&k| k as usize == key) {
            entry.remove();
        }
        let job = self.jobs.remove(key);
        self.retries.remove(&(key as u32));
        self.removed_since_shrink += 1;
        self.shrink();
        job
    }

    /// Moves due timer entries to the ready queue, in due order, and ends
    /// the waiters whose deadline came.
    fn release_due(&mut self, now: Instant) {
        if self.rate_wait.is_some_and(|at| at <= now) {
            self.rate_wait = None;
        }
        while let Some((at, mark, key)) = self.queue.pop_due(now) {
            if mark == DEADLINE {
                self.on_deadline(key as usize, at, now);
            } else {
                self.queue.ready.push_back((key, mark));
            }
        }
    }

    /// Starts ready requests while the cap and the rate limit allow.
    /// Returns whether anything changed.
    fn start_ready(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        if self.rate_wait.is_some() {
            return false;
        }
        while self.in_flight.len() < self.config.max_in_flight {
            let Some(&(key, generation)) = self.queue.ready.front() else {
                break;
            };
            let key = key as usize;
            let live = self
                .jobs
                .get(key)
                .is_some_and(|j| j.generation == generation);
            if !live {
                self.queue.ready.pop_front();
                continue;
            }
            let job = &mut self.jobs[key];
            if job.waiters.as_slice().iter().any(Waiter::is_gone) {
                drop(job.waiters.split_off(|w| !w.is_gone()));
                if job.waiters.is_empty() {
                    tracing::debug!(img_uuid = job.id.as_str(), "no waiter left; polling stops");
                }
            }
            // Taken off the queue before `expire`, which may give the
            // queue's memory back.
            self.queue.ready.pop_front();
            // No request is sent at or after a waiter's deadline.
            if !self.expire(key, now) {
                progressed = true;
                continue;
            }
            let job = &mut self.jobs[key];
            // Waiters are in deadline order: the last has the latest.
            let bounded = job
                .waiters
                .as_slice()
                .last()
                .is_some_and(|w| w.deadline_ms != NEVER);
            if bounded && job.state.deadline() < crate::clock::after(now, MIN_ATTEMPT) {
                // Too late to be worth a request: a retry gives up with its
                // error, and the waiters end at their deadlines.
                job.generation = 0;
                if let Some(retrying) = self.retries.remove(&(key as u32)) {
                    self.take_in(key, Err(retrying.error), now);
                }
                progressed = true;
                continue;
            }
            if let Some(limit) = &self.config.throttle {
                if let Err(at) = limit.try_acquire(now) {
                    self.rate_wait = Some(at);
                    self.queue.ready.push_front((key as u32, generation));
                    break;
                }
            }
            let job = &mut self.jobs[key];
            job.generation = IN_FLIGHT;
            let query = match self.retries.get(&(key as u32)) {
                Some(r) => r.query.clone(),
                None => job.id.query(),
            }
            .with_deadline(job.state.deadline());
            let svc = self.attempts.clone();
            let span = job.trace.span().clone();
            let flight = InFlight::start();
            let sent = query.clone();
            self.in_flight.push(Box::pin(
                async move {
                    let _flight = flight;
                    // A panic below (a transport's bug) ends this job alone.
                    let answer = AssertUnwindSafe(svc.oneshot(sent))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::closed().with_message("the request panicked"))
                        });
                    (key, query, answer)
                }
                .instrument(span),
            ));
            progressed = true;
        }
        progressed
    }

    /// One request's answer: retried through the queue when the retry
    /// policy says so, else taken in as the poll's result.
    fn on_answer(&mut self, key: usize, query: JobQuery, answer: Answer) {
        let now = Instant::now();
        let job = &mut self.jobs[key];
        job.generation = 0;
        let (mut attempt, mut query) = match self.retries.remove(&(key as u32)) {
            Some(r) => (r.attempt, r.query),
            None => (Attempt::new(Arc::clone(&self.retry)), query),
        };
        let mut result = answer;
        if let Some(sleep) = attempt.retry(&mut query, &mut result) {
            // The retry waits in the queue, not in a slot, and passes the
            // throttle as any poll.
            let wake = sleep.deadline();
            let Err(error) = result else {
                unreachable!("only failures are retried")
            };
            let gone = job.waiters.is_empty();
            self.retries.insert(
                key as u32,
                Retrying {
                    attempt,
                    query,
                    error,
                },
            );
            if gone {
                self.remove(key);
                return;
            }
            self.schedule(key, wake);
            return;
        }
        self.take_in(key, result, now);
    }

    /// Times again the polls parked on a job type that has learned of an
    /// end since (see `WaitState::retime`): each job's next poll comes
    /// from its last answer and what its type knows now, at once if that
    /// has passed.
    fn retime_parked(&mut self) {
        let mut moved = Vec::new();
        for (key, job) in &mut self.jobs {
            // Only a job waiting for its next poll: not one in flight,
            // retried, or past its last request.
            if matches!(job.generation, 0 | IN_FLIGHT) || self.retries.contains_key(&(key as u32)) {
                continue;
            }
            if let Some(at) = job.state.retime(&self.policy, job.id.as_str()) {
                moved.push((key, at));
            }
        }
        for (key, at) in moved {
            self.schedule(key, at);
        }
    }

    /// Schedules job `key`'s next request at `at`.
    fn schedule(&mut self, key: usize, at: Instant) {
        self.generation = next_generation(self.generation);
        let generation = self.generation;
        self.jobs[key].generation = generation;
        let at = self.queue.ceil_ms(at);
        self.push_timer((at, generation, key as u32));
    }

    /// Takes in the result of one poll (its retries done).
    fn take_in(&mut self, key: usize, result: Answer, now: Instant) {
        let job = &mut self.jobs[key];
        job.trace.polled();
        let untold = job.waiters.as_slice().iter().any(|w| w.untold);
        let copy = match (&result, untold) {
            (Ok(detail), true) => Some(detail.clone()),
            _ => None,
        };
        // One job's answer must not take down every wait of the client: a
        // panic while taking it in ends that job alone.
        let step = catch_unwind(AssertUnwindSafe(|| {
            crate::poll::step(&mut job.state, &self.policy, job.id.as_str(), result)
        }))
        .unwrap_or_else(|_| {
            Step::Done(Err(
                Error::closed().with_message("the wait scheduler failed on this job's answer")
            ))
        });
        match step {
            Step::Done(answer) => {
                let mut job = self.remove(key);
                job.trace.finish(&answer);
                let query = job.id.query();
                let deadline = answer.as_ref().err().is_some_and(Error::is_deadline);
                let mut waiters = job.waiters.into_vec().into_iter().peekable();
                while let Some(w) = waiters.next() {
                    if deadline {
                        let error = job.state.deadline_error_for(
                            job.id.as_str(),
                            now,
                            w.joined_ms,
                            w.polls_before,
                        );
                        w.deliver(&query, Err(error));
                    } else if waiters.peek().is_none() {
                        w.deliver(&query, answer);
                        break;
                    } else {
                        w.deliver(&query, answer.clone());
                    }
                }
            }
            Step::Again { at, changed } => {
                let detail = changed.as_ref().or(copy.as_ref());
                if let Some(detail) = detail {
                    let query = job.id.query();
                    let polls = job.state.polls();
                    for w in job.waiters.as_mut_slice() {
                        w.tell(&query, detail, changed.is_some(), polls);
                    }
                }
                // Waiters whose own deadline has come get their deadline
                // error now; a job without waiters is dropped.
                if self.expire(key, now) {
                    self.schedule(key, at);
                }
            }
        }
    }
}

/// `at - base` in milliseconds, [`NEVER`] when that does not fit.
fn offset(base: i64, at: i64) -> u32 {
    u32::try_from(at.saturating_sub(base).max(0)).unwrap_or(NEVER)
}

/// Whole milliseconds of `d`, rounded up.
fn ceil_ms(d: Duration) -> i64 {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if d > Duration::from_millis(ms.unsigned_abs()) {
        ms.saturating_add(1)
    } else {
        ms
    }
}

fn next_generation(g: u32) -> u32 {
    match g.wrapping_add(1) {
        DEADLINE | IN_FLIGHT => 1,
        g => g,
    }
}

impl Drop for Driver {
    /// However the driver stops (its runtime shut down, or a panic), every
    /// query it holds or has not read yet gets an error, so no `wait` hangs
    /// and no `wait_all` stream ends short of an item per query.
    fn drop(&mut self) {
        if self.jobs.is_empty() && !self.rx_open {
            return;
        }
        let error = Error::closed();
        for mut job in self.jobs.drain() {
            job.trace.finish(&Err(error.clone()));
            let query = job.id.query();
            for w in job.waiters.into_vec() {
                w.deliver(&query, Err(error.clone()));
            }
        }
        self.rx.close();
        while let Ok(command) = self.rx.try_recv() {
            command.fail(&error);
        }
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
