//! The driver: one task per client that runs every wait — a timer queue
//! of next polls, a slab of job states, the polls in flight.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use slab::Slab;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, Sleep};
use tower::ServiceExt;

use super::job::{Job, JobId, Sink, Waiter, Waiters};
use super::{Answer, Command, HubConfig};
use crate::error::Error;
use crate::poll::state::{Step, WaitState};
use crate::poll::PollPolicy;
use crate::stack::Stack;
use crate::telemetry::{InFlight, WaitSpan};
use tracing::Instrument;

type PollFuture = Pin<Box<dyn Future<Output = (usize, Answer)> + Send>>;

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

/// A timer entry: when (milliseconds after the driver's epoch, rounded
/// up), the job's generation then, and its key. The generation
/// [`DEADLINE`] marks a waiter's deadline rather than a poll.
type TimerEntry = Reverse<(u64, u32, u32)>;

/// The generation of a timer entry that checks waiters' deadlines: a job
/// queued behind the cap on polls in flight ends at its deadline, not when
/// its turn comes. Poll generations never take this value.
const DEADLINE: u32 = u32::MAX;

pub(super) struct Driver {
    stack: Stack,
    policy: PollPolicy,
    config: HubConfig,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_open: bool,
    jobs: Slab<Job>,
    /// Slab keys by id; the ids themselves live in the slab.
    index: hashbrown::HashTable<u32>,
    hasher: RandomState,
    epoch: Instant,
    timers: BinaryHeap<TimerEntry>,
    ready: VecDeque<(u32, u32)>,
    in_flight: FuturesUnordered<PollFuture>,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    rate_wait: Option<Instant>,
    /// Jobs ended since memory was last given back.
    removed_since_shrink: usize,
}

impl Driver {
    pub(super) fn new(
        stack: Stack,
        policy: PollPolicy,
        config: HubConfig,
        rx: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Driver {
            stack,
            policy,
            config,
            rx,
            rx_open: true,
            jobs: Slab::new(),
            index: hashbrown::HashTable::new(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            sleep: Box::pin(sleep_until(Instant::now())),
            armed: None,
            rate_wait: None,
            removed_since_shrink: 0,
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
            while let Poll::Ready(Some((key, answer))) = self.in_flight.poll_next_unpin(cx) {
                self.on_answer(key, answer);
                progressed = true;
            }
            let now = Instant::now();
            self.release_due(now);
            progressed |= self.start_ready(now);
            if !progressed {
                if !self.rx_open && self.jobs.is_empty() {
                    return Poll::Ready(Yield::Done);
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

    fn to_ms(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.epoch);
        let ms = d.as_millis();
        let ms = if d > Duration::from_millis(ms as u64) {
            ms + 1
        } else {
            ms
        };
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    fn instant_at(&self, ms: u64) -> Instant {
        crate::clock::after(self.epoch, Duration::from_millis(ms))
    }

    fn next_wake(&self) -> Option<Instant> {
        let timer = self
            .timers
            .peek()
            .map(|Reverse((at, _, _))| self.instant_at(*at));
        match (timer, self.rate_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        let deadline = crate::clock::after(now, self.policy.timeout);
        match command {
            Command::One(query, tx, parent) => {
                self.add(
                    query.img_uuid(),
                    Waiter {
                        deadline,
                        sink: Sink::One(tx),
                    },
                    now,
                    &parent,
                );
            }
            Command::Until {
                query,
                started,
                deadline,
                seed,
                tx,
                progress,
                parent,
            } => {
                let key = self.add(
                    query.img_uuid(),
                    Waiter {
                        deadline,
                        sink: Sink::Tracked(tx, progress),
                    },
                    started.min(now),
                    &parent,
                );
                if let Some((status, at, polls)) = seed {
                    self.jobs[key].state.resume(&status, at, polls);
                }
            }
            Command::Many {
                changes,
                ids,
                more,
                tx,
                parent,
            } => {
                let room = ids.len() + more;
                self.jobs.reserve_exact(room);
                let (jobs, hasher) = (&self.jobs, &self.hasher);
                self.index
                    .reserve(room, |&k| hasher.hash_one(jobs[k as usize].id.as_str()));
                self.timers.reserve_exact(room);
                self.ready.reserve_exact(room);
                for id in ids.iter() {
                    let sink = if changes {
                        Sink::Watch(tx.clone())
                    } else {
                        Sink::Many(tx.clone())
                    };
                    self.add(id, Waiter { deadline, sink }, now, &parent);
                }
            }
        }
        // Deadline entries of jobs that ended early stay in the timer queue
        // until their time: sweep them out once they outnumber the jobs.
        if self.timers.len() > 4 * (self.jobs.len() + SHRINK_MIN) {
            self.sweep_timers();
        }
    }

    /// Drops the timer entries of jobs that are gone.
    fn sweep_timers(&mut self) {
        let jobs = &self.jobs;
        self.timers.retain(|Reverse((_, generation, key))| {
            jobs.get(*key as usize)
                .is_some_and(|j| *generation == DEADLINE || j.generation == *generation)
        });
    }

    /// Gives memory back once most jobs have ended: a 100,000-job
    /// `wait_all` must not keep its peak for the life of the client.
    ///
    /// It runs when no job is left, or once three quarters of at least
    /// 1024 slots are unused and at least as many jobs (and 64) ended since
    /// the last time as are left,
    /// so its cost, linear in the room, is spread over those ends. A job
    /// that stays keeps the slots up to its own.
    fn shrink(&mut self) {
        let len = self.jobs.len();
        let worth_it = if len == 0 {
            self.jobs.capacity() > 0 || self.timers.capacity() > 0
        } else {
            self.jobs.capacity() >= SHRINK_MIN
                && len * 4 <= self.jobs.capacity()
                && self.removed_since_shrink >= len.max(64)
        };
        if !worth_it {
            return;
        }
        self.removed_since_shrink = 0;
        if self.jobs.is_empty() {
            // Nothing is in flight either: every structure starts afresh.
            self.jobs = Slab::new();
            self.index = hashbrown::HashTable::new();
            self.timers = BinaryHeap::new();
            self.ready = VecDeque::new();
        } else {
            // Stale entries go first, so that none is taken for a job that
            // moves into its slot.
            self.sweep_timers();
            let jobs = &self.jobs;
            self.ready.retain(|&(key, generation)| {
                jobs.get(key as usize)
                    .is_some_and(|j| j.generation == generation)
            });
            // Jobs move down into free slots (not those with a poll out,
            // whose answer comes back by key); the index, the timers and
            // the ready queue follow them.
            let mut moved = std::collections::HashMap::new();
            let (index, hasher) = (&mut self.index, &self.hasher);
            self.jobs.compact(|job, from, to| {
                if job.in_flight {
                    return false;
                }
                let hash = hasher.hash_one(job.id.as_str());
                if let Some(k) = index.find_mut(hash, |&k| k as usize == from) {
                    *k = to as u32;
                }
                moved.insert(from as u32, to as u32);
                true
            });
            let at = |key: u32| moved.get(&key).copied().unwrap_or(key);
            let timers = std::mem::take(&mut self.timers).into_vec();
            self.timers = timers
                .into_iter()
                .map(|Reverse((when, generation, key))| Reverse((when, generation, at(key))))
                .collect();
            for entry in &mut self.ready {
                entry.0 = at(entry.0);
            }
            let (jobs, hasher) = (&self.jobs, &self.hasher);
            self.index
                .shrink_to_fit(|&k| hasher.hash_one(jobs[k as usize].id.as_str()));
            self.timers.shrink_to_fit();
            self.ready.shrink_to_fit();
        }
    }

    /// Adds a waiter; returns the job's key.
    fn add(&mut self, id: &str, waiter: Waiter, now: Instant, parent: &tracing::Span) -> usize {
        let hash = self.hasher.hash_one(id);
        let jobs = &self.jobs;
        let deadline = self.to_ms(waiter.deadline);
        if let Some(&key) = self
            .index
            .find(hash, |&k| jobs[k as usize].id.as_str() == id)
        {
            let job = &mut self.jobs[key as usize];
            job.state.extend_deadline(waiter.deadline);
            job.waiters.push(waiter);
            self.timers.push(Reverse((deadline, DEADLINE, key)));
            return key as usize;
        }
        let mut state = WaitState::new(&self.policy, now);
        state.set_deadline(waiter.deadline);
        let key = self.jobs.insert(Job {
            state,
            id: JobId::new(id),
            waiters: Waiters::One(waiter),
            generation: 0,
            in_flight: false,
            trace: WaitSpan::start(id, parent),
        });
        let (jobs, hasher) = (&self.jobs, &self.hasher);
        self.index.insert_unique(hash, key as u32, |&k| {
            hasher.hash_one(jobs[k as usize].id.as_str())
        });
        self.ready.push_back((key as u32, 0));
        self.timers.push(Reverse((deadline, DEADLINE, key as u32)));
        key
    }

    /// Gives the waiters of job `key` whose deadline has come their
    /// deadline error, and drops the job once no waiter is left and no poll
    /// of it is out. Returns whether the job is still followed.
    fn expire(&mut self, key: usize, now: Instant) -> bool {
        let Some(job) = self.jobs.get_mut(key) else {
            return false;
        };
        if job.waiters.as_slice().iter().any(|w| w.deadline <= now) {
            let error = job.state.deadline_error(job.id.as_str(), now);
            let query = job.id.query();
            for w in job.waiters.split_off(|w| w.deadline > now) {
                w.deliver(&query, Err(error.clone()));
            }
            if job.waiters.as_slice().is_empty() {
                job.trace.finish(&Err(error));
            }
        }
        if job.waiters.as_slice().is_empty() && !job.in_flight {
            self.remove(key);
            return false;
        }
        true
    }

    fn remove(&mut self, key: usize) -> Job {
        let hash = self.hasher.hash_one(self.jobs[key].id.as_str());
        if let Ok(entry) = self.index.find_entry(hash, |&k| k as usize == key) {
            entry.remove();
        }
        let job = self.jobs.remove(key);
        self.removed_since_shrink += 1;
        self.shrink();
        job
    }

    /// Moves due timer entries to the ready queue, in due order.
    fn release_due(&mut self, now: Instant) {
        if self.rate_wait.is_some_and(|at| at <= now) {
            self.rate_wait = None;
        }
        while let Some(Reverse((at, generation, key))) = self.timers.peek().copied() {
            if self.instant_at(at) > now {
                break;
            }
            self.timers.pop();
            if generation == DEADLINE {
                self.expire(key as usize, now);
            } else {
                self.ready.push_back((key, generation));
            }
        }
    }

    /// Starts ready polls while the cap and the rate limit allow. Returns
    /// whether anything changed.
    fn start_ready(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        if self.rate_wait.is_some() {
            return false;
        }
        while self.in_flight.len() < self.config.max_in_flight {
            let Some(&(key, generation)) = self.ready.front() else {
                break;
            };
            let key = key as usize;
            let live = self
                .jobs
                .get(key)
                .is_some_and(|j| j.generation == generation && !j.in_flight);
            if !live {
                self.ready.pop_front();
                continue;
            }
            let job = &mut self.jobs[key];
            if job.waiters.as_slice().iter().any(Waiter::is_gone) {
                drop(job.waiters.split_off(|w| !w.is_gone()));
                if job.waiters.as_slice().is_empty() {
                    tracing::debug!(img_uuid = job.id.as_str(), "no waiter left; polling stops");
                }
            }
            // Taken off the queue before `expire`, which may give the
            // queue's memory back.
            self.ready.pop_front();
            // No poll is sent at or after a waiter's deadline.
            if !self.expire(key, now) {
                progressed = true;
                continue;
            }
            if let Some(limit) = &self.config.throttle {
                if let Err(at) = limit.try_acquire(now) {
                    self.rate_wait = Some(at);
                    self.ready.push_front((key as u32, generation));
                    break;
                }
            }
            let job = &mut self.jobs[key];
            job.in_flight = true;
            let query = job.id.query().with_deadline(job.state.deadline());
            let svc = self.stack.clone();
            let span = job.trace.span().clone();
            let flight = InFlight::start();
            self.in_flight.push(Box::pin(
                async move {
                    let _flight = flight;
                    let answer = svc.oneshot(query).await;
                    (key, answer)
                }
                .instrument(span),
            ));
            progressed = true;
        }
        progressed
    }

    fn on_answer(&mut self, key: usize, answer: Answer) {
        let now = Instant::now();
        let job = &mut self.jobs[key];
        job.in_flight = false;
        job.trace.polled();
        // One job's answer must not take down every wait of the client: a
        // panic while taking it in ends that job alone.
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::poll::step(&mut job.state, &self.policy, job.id.as_str(), answer)
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
                let mut waiters = job.waiters.into_vec().into_iter().peekable();
                while let Some(w) = waiters.next() {
                    if waiters.peek().is_none() {
                        w.deliver(&query, answer);
                        break;
                    }
                    w.deliver(&query, answer.clone());
                }
            }
            Step::Again { at, changed } => {
                if let Some(detail) = changed {
                    let query = job.id.query();
                    for w in job.waiters.as_slice() {
                        w.tell_change(&query, &detail, job.state.polls());
                    }
                }
                // Waiters whose own deadline has come (they joined earlier
                // than the latest one) get their deadline error now; a job
                // without waiters is dropped.
                if !self.expire(key, now) {
                    return;
                }
                let job = &mut self.jobs[key];
                let at = job
                    .waiters
                    .as_slice()
                    .iter()
                    .map(|w| w.deadline)
                    .fold(at, Instant::min);
                job.generation = (job.generation + 1) % DEADLINE;
                let generation = job.generation;
                let at = self.to_ms(at);
                self.timers.push(Reverse((at, generation, key as u32)));
            }
        }
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
mod tests {
    use tokio::sync::oneshot;

    use super::super::PackedIds;
    use super::*;
    use crate::model::{JobDetail, JobStatus};
    use crate::query::JobQuery;

    /// A driver over a stack that answers every job as succeeded at once.
    fn driver() -> (Driver, mpsc::UnboundedSender<Command>) {
        let stack = Stack::new(tower::service_fn(|q: JobQuery| async move {
            if q.img_uuid() == "stays" {
                std::future::pending::<()>().await;
            }
            Ok::<_, Error>(JobDetail::new(q.img_uuid(), JobStatus::Succeeded))
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver::new(stack, PollPolicy::default(), HubConfig::default(), rx);
        (driver, tx)
    }

    fn many(n: usize, tx: &mpsc::UnboundedSender<(JobQuery, Answer)>) -> Command {
        let mut ids = PackedIds::default();
        for i in 0..n {
            ids.push(&format!("job-{i}"));
        }
        Command::Many {
            changes: false,
            ids,
            more: 0,
            tx: tx.clone(),
            parent: tracing::Span::none(),
        }
    }

    /// Runs the driver until `n` answers came in.
    async fn run_until(
        driver: &mut Driver,
        rx: &mut mpsc::UnboundedReceiver<(JobQuery, Answer)>,
        n: usize,
    ) {
        let mut got = 0;
        while got < n {
            let _ = std::future::poll_fn(|cx| match driver.poll(cx) {
                Poll::Pending => Poll::Ready(Yield::Busy),
                ready => ready,
            })
            .await;
            while rx.try_recv().is_ok() {
                got += 1;
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_given_back_once_the_jobs_have_ended() {
        let (mut driver, commands) = driver();
        let (tx, mut rx) = mpsc::unbounded_channel();
        commands.send(many(20_000, &tx)).unwrap();
        run_until(&mut driver, &mut rx, 20_000).await;
        assert!(driver.jobs.is_empty());
        assert_eq!(driver.jobs.capacity(), 0);
        assert_eq!(driver.index.capacity(), 0);
        assert_eq!(driver.timers.capacity(), 0);
        assert_eq!(driver.ready.capacity(), 0);

        // With one job of many still waiting, most of the room goes back too.
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let (one_tx, _one_rx) = oneshot::channel();
        driver.on_command(Command::One(
            JobQuery::new("stays").unwrap(),
            one_tx,
            tracing::Span::none(),
        ));
        // The lone job is in flight; answer the batch around it.
        commands.send(many(20_000, &tx2)).unwrap();
        run_until(&mut driver, &mut rx2, 20_000).await;
        assert_eq!(driver.jobs.len(), 1);
        assert!(driver.jobs.capacity() < 1024, "{}", driver.jobs.capacity());
        assert!(driver.timers.len() < 1024, "{}", driver.timers.len());
    }
}
