//! The watcher hub: every wait of a [`Client`](crate::Client) runs on one
//! scheduler.
//!
//! One task per client holds a timer queue of next polls, a small state per
//! job (no task and no timer per job), and the polls in flight. Waits on the
//! same `img_uuid` share one poll loop; a cap on polls in flight (default 64)
//! and an optional [`RateLimit`] apply to all of them, and polls that come
//! due while the cap is full start oldest-due first. A job whose every
//! waiter has gone is polled no more. Scheduling, deadlines, stall detection
//! and the error policy are those of a single wait
//! ([`PollPolicy`]).
//!
//! ```
//! use futures_util::StreamExt;
//! use goenhance_jobs::transport::mock::MockTransport;
//! use goenhance_jobs::{Client, JobQuery, JobStatus};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), goenhance_jobs::Error> {
//! let mock = MockTransport::new();
//! mock.timeline("a", &["pending", "success"]);
//! mock.timeline("b", &["processing", "failed"]);
//! let client = Client::builder().api_key("k").transport(mock.clone()).build()?;
//! let queries = ["a", "b", "a"].map(|id| JobQuery::new(id).unwrap());
//! let results: Vec<_> = client.wait_all(queries).collect().await;
//! assert_eq!(results.len(), 3);
//! assert_eq!(mock.count_for("a"), 2); // "a" twice in the list, polled once
//! # Ok(())
//! # }
//! ```

mod rate;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use slab::Slab;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant, Sleep};
use tower::ServiceExt;

pub use self::rate::{PerSecond, RateLimit};
use crate::client::Stack;
use crate::error::Error;
use crate::model::{JobDetail, JobQuery, JobStatus};
use crate::poll::state::{Step, WaitState};
use crate::poll::PollPolicy;

/// The default cap on polls in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

type Answer = Result<JobDetail, Error>;

#[derive(Clone, Debug)]
pub(crate) struct HubConfig {
    pub(crate) max_in_flight: usize,
    pub(crate) rate_limit: Option<Arc<dyn RateLimit>>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            rate_limit: None,
        }
    }
}

/// The handle that clients hold; the driver task is started on first use
/// (and again if its runtime went away).
pub(crate) struct Hub {
    stack: Stack,
    policy: PollPolicy,
    config: HubConfig,
    tx: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

enum Command {
    One(JobQuery, oneshot::Sender<Answer>),
    /// A tracked job's wait: it began at `started`, ends at `deadline`,
    /// resumes from `seed` (the last status seen, when it came, and the
    /// polls made until then), and
    /// tells `progress` of each status change.
    Until {
        query: JobQuery,
        started: Instant,
        deadline: Instant,
        seed: Option<(JobStatus, Instant, u32)>,
        tx: oneshot::Sender<Answer>,
        progress: Progress,
    },
    Many {
        /// Whether every status change is sent too, not only the end.
        changes: bool,
        ids: PackedIds,
        /// How many more ids are coming in later commands of this batch,
        /// as far as known: room is made for them at once.
        more: usize,
        tx: mpsc::UnboundedSender<(JobQuery, Answer)>,
    },
}

/// Ids travel to the driver in chunks of this many.
const CHUNK: usize = 4096;

/// A chunk of ids packed in one string (about 40 bytes an id, where
/// separate queries would take twice that) until the driver takes them in.
#[derive(Default)]
struct PackedIds {
    text: String,
    ends: Vec<u32>,
}

impl PackedIds {
    fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len() as u32);
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.text[a as usize..b as usize])
    }
}

impl Hub {
    pub(crate) fn new(stack: Stack, policy: PollPolicy, config: HubConfig) -> Hub {
        Hub {
            stack,
            policy,
            config,
            tx: Mutex::new(None),
        }
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let command = match tx.as_ref() {
            Some(sender) => match sender.send(command) {
                Ok(()) => return Ok(()),
                // The driver is gone (its runtime shut down): start another.
                Err(mpsc::error::SendError(command)) => command,
            },
            None => command,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::closed().with_source("waits need a tokio runtime"))?;
        let (new_tx, rx) = mpsc::unbounded_channel();
        let driver = Driver::new(
            self.stack.clone(),
            self.policy.clone(),
            self.config.clone(),
            rx,
        );
        runtime.spawn(driver.run());
        new_tx.send(command).map_err(|_| Error::closed())?;
        *tx = Some(new_tx);
        Ok(())
    }

    pub(crate) async fn wait(&self, query: JobQuery) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.send(Command::One(query, tx))?;
        rx.await.unwrap_or_else(|_| Err(Error::closed()))
    }

    /// A wait that began at `started` (its history and schedule count from
    /// there) and ends at `deadline`, for a tracked job resumed after a
    /// restart.
    pub(crate) async fn wait_until(
        &self,
        query: JobQuery,
        started: Instant,
        deadline: Instant,
        seed: Option<(JobStatus, Instant, u32)>,
        progress: Progress,
    ) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Until {
            query,
            started,
            deadline,
            seed,
            tx,
            progress,
        })?;
        rx.await.unwrap_or_else(|_| Err(Error::closed()))
    }

    pub(crate) fn wait_all<I>(&self, queries: I, changes: bool) -> WaitAll
    where
        I: IntoIterator<Item = JobQuery>,
    {
        let mut queries = queries.into_iter();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut remaining = 0;
        let mut failed = None;
        loop {
            let hint = queries.size_hint().0;
            let mut ids = PackedIds::default();
            for query in queries.by_ref().take(CHUNK) {
                ids.push(query.img_uuid());
            }
            if ids.len() == 0 {
                break;
            }
            remaining += ids.len();
            let more = hint.saturating_sub(ids.len());
            if failed.is_none() {
                failed = self
                    .send(Command::Many {
                        changes,
                        ids,
                        more,
                        tx: tx.clone(),
                    })
                    .err();
            }
        }
        WaitAll {
            rx,
            remaining,
            failed,
        }
    }
}

/// The stream of [`Client::wait_all`](crate::Client::wait_all).
pub(crate) struct WaitAll {
    rx: mpsc::UnboundedReceiver<(JobQuery, Answer)>,
    remaining: usize,
    failed: Option<Error>,
}

impl Stream for WaitAll {
    type Item = (JobQuery, Answer);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if self.failed.is_some() {
            // The hub could not start: nothing will come.
            self.remaining = 0;
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                // A job's end is an error or a terminal detail; anything
                // else is a status change on the way.
                if item.1.as_ref().map_or(true, JobDetail::is_terminal) {
                    self.remaining -= 1;
                }
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                self.remaining = 0;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, None)
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where a tracked job's status changes go, with its polls so far.
pub(crate) type Progress = mpsc::UnboundedSender<(JobQuery, JobStatus, u32)>;

enum Sink {
    One(oneshot::Sender<Answer>),
    /// A tracked job: its end, and its status changes for the store.
    Tracked(oneshot::Sender<Answer>, Progress),
    Many(mpsc::UnboundedSender<(JobQuery, Answer)>),
    /// Also told of every status change.
    Watch(mpsc::UnboundedSender<(JobQuery, Answer)>),
}

struct Waiter {
    deadline: Instant,
    sink: Sink,
}

impl Waiter {
    fn is_gone(&self) -> bool {
        match &self.sink {
            Sink::One(tx) | Sink::Tracked(tx, _) => tx.is_closed(),
            Sink::Many(tx) | Sink::Watch(tx) => tx.is_closed(),
        }
    }

    fn tell_change(&self, query: &JobQuery, detail: &JobDetail, polls: u32) {
        match &self.sink {
            Sink::Watch(tx) => {
                let _ = tx.send((query.clone(), Ok(detail.clone())));
            }
            Sink::Tracked(_, progress) => {
                let _ = progress.send((query.clone(), detail.status().clone(), polls));
            }
            _ => {}
        }
    }

    fn deliver(self, query: &JobQuery, answer: Answer) {
        match self.sink {
            Sink::One(tx) | Sink::Tracked(tx, _) => {
                let _ = tx.send(answer);
            }
            Sink::Many(tx) | Sink::Watch(tx) => {
                let _ = tx.send((query.clone(), answer));
            }
        }
    }
}

/// The waiters of one job: one inline (the common case), or many.
enum Waiters {
    One(Waiter),
    Many(Vec<Waiter>),
}

impl Waiters {
    fn push(&mut self, waiter: Waiter) {
        let all = match std::mem::replace(self, Waiters::Many(Vec::new())) {
            Waiters::One(first) => vec![first, waiter],
            Waiters::Many(mut all) => {
                all.push(waiter);
                all
            }
        };
        *self = Waiters::Many(all);
    }

    fn as_slice(&self) -> &[Waiter] {
        match self {
            Waiters::One(w) => std::slice::from_ref(w),
            Waiters::Many(v) => v,
        }
    }

    /// Keeps the waiters for which `keep` is true; returns the others.
    fn split_off(&mut self, mut keep: impl FnMut(&Waiter) -> bool) -> Vec<Waiter> {
        let all = match std::mem::replace(self, Waiters::Many(Vec::new())) {
            Waiters::One(w) => vec![w],
            Waiters::Many(v) => v,
        };
        let (kept, gone): (Vec<_>, Vec<_>) = all.into_iter().partition(|w| keep(w));
        *self = Waiters::Many(kept);
        gone
    }

    fn into_vec(self) -> Vec<Waiter> {
        match self {
            Waiters::One(w) => vec![w],
            Waiters::Many(v) => v,
        }
    }
}

/// The longest id kept inline (UUIDs are 36 bytes).
const INLINE_ID: usize = 38;

/// A job id, inline when short, so that a waiting job needs no allocation
/// of its own for it. Ids are validated ASCII.
enum JobId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Shared(Arc<str>),
}

impl JobId {
    fn new(id: &str) -> JobId {
        if id.len() <= INLINE_ID {
            let mut bytes = [0; INLINE_ID];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            JobId::Inline {
                len: id.len() as u8,
                bytes,
            }
        } else {
            JobId::Shared(Arc::from(id))
        }
    }

    fn as_str(&self) -> &str {
        match self {
            JobId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("job ids are ASCII")
            }
            JobId::Shared(id) => id,
        }
    }

    /// A query of this id, for a poll or an answer.
    fn query(&self) -> JobQuery {
        let id = match self {
            JobId::Inline { .. } => Arc::from(self.as_str()),
            JobId::Shared(id) => Arc::clone(id),
        };
        JobQuery::from_shared_id(id)
    }
}

struct Job {
    id: JobId,
    state: WaitState,
    waiters: Waiters,
    /// Bumped whenever the job is (re)scheduled, so stale timer entries are
    /// recognised.
    generation: u32,
    in_flight: bool,
}

type PollFuture = Pin<Box<dyn Future<Output = (usize, Answer)> + Send>>;

#[derive(Debug, PartialEq, Eq)]
enum Yield {
    /// Every job is finished and no client is left: the driver ends.
    Done,
    /// The work budget ran out: let other tasks run, then go on.
    Busy,
}

/// Rounds of work the driver does before it yields.
const ROUNDS_PER_TURN: u32 = 1;

/// A timer entry: when (milliseconds after the driver's epoch, rounded
/// up), the job's generation then, and its key.
type TimerEntry = Reverse<(u64, u32, u32)>;

struct Driver {
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
}

impl Driver {
    fn new(
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
        }
    }

    async fn run(mut self) {
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
        self.epoch + Duration::from_millis(ms)
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
        let deadline = now + self.policy.timeout;
        match command {
            Command::One(query, tx) => {
                self.add(
                    query.img_uuid(),
                    Waiter {
                        deadline,
                        sink: Sink::One(tx),
                    },
                    now,
                );
            }
            Command::Until {
                query,
                started,
                deadline,
                seed,
                tx,
                progress,
            } => {
                let key = self.add(
                    query.img_uuid(),
                    Waiter {
                        deadline,
                        sink: Sink::Tracked(tx, progress),
                    },
                    started.min(now),
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
                    self.add(id, Waiter { deadline, sink }, now);
                }
            }
        }
    }

    /// Adds a waiter; returns the job's key.
    fn add(&mut self, id: &str, waiter: Waiter, now: Instant) -> usize {
        let hash = self.hasher.hash_one(id);
        let jobs = &self.jobs;
        if let Some(&key) = self
            .index
            .find(hash, |&k| jobs[k as usize].id.as_str() == id)
        {
            let job = &mut self.jobs[key as usize];
            job.state.extend_deadline(waiter.deadline);
            job.waiters.push(waiter);
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
        });
        let (jobs, hasher) = (&self.jobs, &self.hasher);
        self.index.insert_unique(hash, key as u32, |&k| {
            hasher.hash_one(jobs[k as usize].id.as_str())
        });
        self.ready.push_back((key as u32, 0));
        key
    }

    fn remove(&mut self, key: usize) -> Job {
        let hash = self.hasher.hash_one(self.jobs[key].id.as_str());
        if let Ok(entry) = self.index.find_entry(hash, |&k| k as usize == key) {
            entry.remove();
        }
        self.jobs.remove(key)
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
            self.ready.push_back((key, generation));
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
                    self.ready.pop_front();
                    tracing::debug!(img_uuid = job.id.as_str(), "no waiter left; polling stops");
                    self.remove(key);
                    progressed = true;
                    continue;
                }
            }
            if let Some(limit) = &self.config.rate_limit {
                if let Err(at) = limit.try_acquire(now) {
                    self.rate_wait = Some(at);
                    break;
                }
            }
            self.ready.pop_front();
            job.in_flight = true;
            let query = job.id.query().with_deadline(job.state.deadline());
            let svc = self.stack.clone();
            self.in_flight.push(Box::pin(async move {
                let answer = svc.oneshot(query).await;
                (key, answer)
            }));
            progressed = true;
        }
        progressed
    }

    fn on_answer(&mut self, key: usize, answer: Answer) {
        let now = Instant::now();
        let job = &mut self.jobs[key];
        job.in_flight = false;
        match crate::poll::step(&mut job.state, &self.policy, job.id.as_str(), answer) {
            Step::Done(answer) => {
                let job = self.remove(key);
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
                // than the latest one) get their deadline error now.
                if job.waiters.as_slice().iter().any(|w| w.deadline <= now) {
                    let error = job.state.deadline_error(job.id.as_str(), now);
                    let query = job.id.query();
                    for w in job.waiters.split_off(|w| w.deadline > now) {
                        w.deliver(&query, Err(error.clone()));
                    }
                }
                let at = job
                    .waiters
                    .as_slice()
                    .iter()
                    .map(|w| w.deadline)
                    .fold(at, Instant::min);
                job.generation = job.generation.wrapping_add(1);
                let generation = job.generation;
                let at = self.to_ms(at);
                self.timers.push(Reverse((at, generation, key as u32)));
            }
        }
    }
}
