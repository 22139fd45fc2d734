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
//! ([`PollPolicy`](crate::PollPolicy)).
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
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use slab::Slab;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant, Sleep};
use tower::{Service, ServiceExt};

pub use self::rate::{PerSecond, RateLimit};
use crate::client::Stack;
use crate::error::Error;
use crate::model::{JobDetail, JobQuery};
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
    Many(Vec<JobQuery>, mpsc::UnboundedSender<(JobQuery, Answer)>),
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

    pub(crate) fn wait_all<I>(&self, queries: I) -> WaitAll
    where
        I: IntoIterator<Item = JobQuery>,
    {
        let queries: Vec<JobQuery> = queries.into_iter().collect();
        let remaining = queries.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let start = if remaining == 0 {
            Ok(())
        } else {
            self.send(Command::Many(queries, tx))
        };
        WaitAll {
            rx,
            remaining,
            failed: start.err(),
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
                self.remaining -= 1;
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
        (self.remaining, Some(self.remaining))
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Sink {
    One(oneshot::Sender<Answer>),
    Many(mpsc::UnboundedSender<(JobQuery, Answer)>),
}

struct Waiter {
    deadline: Instant,
    sink: Sink,
}

impl Waiter {
    fn is_gone(&self) -> bool {
        match &self.sink {
            Sink::One(tx) => tx.is_closed(),
            Sink::Many(tx) => tx.is_closed(),
        }
    }

    fn deliver(self, query: &JobQuery, answer: Answer) {
        match self.sink {
            Sink::One(tx) => {
                let _ = tx.send(answer);
            }
            Sink::Many(tx) => {
                let _ = tx.send((query.clone(), answer));
            }
        }
    }
}

struct Job {
    /// The query without a deadline, as handed back to `wait_all` callers.
    query: JobQuery,
    state: WaitState,
    waiters: Vec<Waiter>,
    /// Bumped whenever the job is (re)scheduled, so stale timer entries are
    /// recognised.
    generation: u32,
    in_flight: bool,
}

type PollFuture = Pin<Box<dyn Future<Output = (usize, Answer)> + Send>>;

struct Driver {
    stack: Stack,
    policy: PollPolicy,
    config: HubConfig,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_open: bool,
    jobs: Slab<Job>,
    index: HashMap<Arc<str>, usize>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
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
            index: HashMap::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            sleep: Box::pin(sleep_until(Instant::now())),
            armed: None,
            rate_wait: None,
        }
    }

    async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll(cx)).await
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
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
                    return Poll::Ready(());
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
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        match (timer, self.rate_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        let deadline = now + self.policy.timeout;
        match command {
            Command::One(query, tx) => self.add(
                query,
                Waiter {
                    deadline,
                    sink: Sink::One(tx),
                },
                now,
            ),
            Command::Many(queries, tx) => {
                for query in queries {
                    let sink = Sink::Many(tx.clone());
                    self.add(query, Waiter { deadline, sink }, now);
                }
            }
        }
    }

    fn add(&mut self, query: JobQuery, waiter: Waiter, now: Instant) {
        let id: &str = query.img_uuid();
        if let Some(&key) = self.index.get(id) {
            let job = &mut self.jobs[key];
            job.state.extend_deadline(waiter.deadline);
            job.waiters.push(waiter);
            return;
        }
        let key = self.jobs.insert(Job {
            state: WaitState::new(&self.policy, now),
            query: JobQuery::new(id).expect("an id that was valid stays valid"),
            waiters: vec![waiter],
            generation: 0,
            in_flight: false,
        });
        let id: Arc<str> = Arc::from(id);
        self.index.insert(id, key);
        self.ready.push_back((key as u32, 0));
    }

    fn remove(&mut self, key: usize) -> Job {
        let job = self.jobs.remove(key);
        self.index.remove(job.query.img_uuid());
        job
    }

    /// Moves due timer entries to the ready queue, in due order.
    fn release_due(&mut self, now: Instant) {
        if self.rate_wait.is_some_and(|at| at <= now) {
            self.rate_wait = None;
        }
        while let Some(Reverse((at, generation, key))) = self.timers.peek().copied() {
            if at > now {
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
            job.waiters.retain(|w| !w.is_gone());
            if job.waiters.is_empty() {
                self.ready.pop_front();
                tracing::debug!(img_uuid = %job.query.img_uuid(), "no waiter left; polling stops");
                self.remove(key);
                progressed = true;
                continue;
            }
            if let Some(limit) = &self.config.rate_limit {
                if let Err(at) = limit.try_acquire(now) {
                    self.rate_wait = Some(at);
                    break;
                }
            }
            self.ready.pop_front();
            job.in_flight = true;
            let query = job.query.clone().with_deadline(job.state.deadline());
            let mut svc = self.stack.clone();
            self.in_flight.push(Box::pin(async move {
                let answer = match svc.ready().await {
                    Ok(svc) => svc.call(query).await,
                    Err(e) => Err(e),
                };
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
        match job.state.on_result(&self.policy, now, answer) {
            Step::Done(answer) => {
                let job = self.remove(key);
                let mut waiters = job.waiters.into_iter().peekable();
                while let Some(w) = waiters.next() {
                    if waiters.peek().is_none() {
                        w.deliver(&job.query, answer);
                        break;
                    }
                    w.deliver(&job.query, answer.clone());
                }
            }
            Step::Again { at, .. } => {
                // Waiters whose own deadline has come (they joined earlier
                // than the latest one) get their deadline error now.
                if job.waiters.iter().any(|w| w.deadline <= now) {
                    let error = job.state.deadline_error(now);
                    let (expired, kept): (Vec<_>, Vec<_>) =
                        job.waiters.drain(..).partition(|w| w.deadline <= now);
                    job.waiters = kept;
                    for w in expired {
                        w.deliver(&job.query, Err(error.clone()));
                    }
                }
                let at = job
                    .waiters
                    .iter()
                    .map(|w| w.deadline)
                    .fold(at, Instant::min);
                job.generation = job.generation.wrapping_add(1);
                self.timers.push(Reverse((at, job.generation, key as u32)));
            }
        }
    }
}
