//! The watcher hub: the waits of a [`Client`](crate::Client) run on one
//! scheduler per tokio runtime.
//!
//! One task per client and runtime holds a timer queue of next polls, a
//! small state per job (no task and no timer per job), and the polls in
//! flight. Waits on the same job share one poll loop: ids that differ only
//! in the case of a UUID are one job, as answers are matched. A cap on
//! requests in flight (default 64) and an optional [`Throttle`] apply to
//! every poll and every retry; a retry waits for its backoff or
//! `Retry-After` in the queue, not in a slot, and polls that come due while
//! the cap is full start in order of their due time. A job whose every
//! waiter has gone is polled no more. Scheduling, deadlines, stall
//! detection and the error policy are those of a single wait
//! ([`PollPolicy`]); each waiter has its own deadline and its own report.
//!
//! Waits are served on the runtime they are made on: a client shared by
//! several runtimes (a test harness, a `block_on` per request) has a
//! scheduler on each, and a runtime that is dropped ends only the waits
//! made on it. The cap on requests in flight is per runtime; the retry
//! budget and the [`Throttle`] are shared by all.
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

mod driver;
mod job;
mod queue;
mod throttle;
mod wait_all;

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::runtime::{Handle, Id};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::driver::Driver;
pub use self::throttle::{PerSecond, Throttle};
pub(crate) use self::wait_all::WaitAll;
use crate::error::Error;
use crate::model::{JobDetail, JobStatus};
use crate::poll::PollPolicy;
use crate::query::JobQuery;
use crate::retry::RetryPolicy;
use crate::stack::Stack;
use crate::telemetry::WaitMeter;

/// The default cap on status requests in flight (retries included) per
/// runtime.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

pub(super) type Answer = Result<JobDetail, Error>;

#[derive(Clone, Debug)]
pub(crate) struct HubConfig {
    pub(crate) max_in_flight: usize,
    pub(crate) throttle: Option<Arc<dyn Throttle>>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            throttle: None,
        }
    }
}

/// The handle that clients hold; a driver task is started on each runtime
/// at its first wait there (and again if it stopped).
pub(crate) struct Hub {
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    /// The stack below the retries: the driver retries by itself.
    attempts: Stack,
    retry: Arc<RetryPolicy>,
    policy: PollPolicy,
    config: HubConfig,
    /// The driver of each runtime that has one.
    drivers: Mutex<Vec<(Id, mpsc::UnboundedSender<Command>)>>,
}

pub(super) enum Command {
    /// The span is the parent of the wait's span: the one current where
    /// the wait was asked for.
    One(JobQuery, oneshot::Sender<Answer>, tracing::Span),
    /// A tracked job's wait: it began at `started`, ends at `deadline`,
    /// resumes from `seed` (the last status seen, when it came, and the
    /// polls made until then), and tells `progress` of each status change.
    Until {
        query: JobQuery,
        started: Instant,
        deadline: Instant,
        seed: Option<(JobStatus, Instant, u32)>,
        tx: oneshot::Sender<Answer>,
        progress: Progress,
        /// The parent of the wait's span, as for `One`.
        parent: tracing::Span,
    },
    /// A chunk of a `wait_all`. `taken` is sent once every id of the chunk
    /// is the driver's to answer (or answered); dropped unsent, it tells
    /// the stream that none is, and the stream answers them itself.
    Many {
        /// Whether every status change is sent too, not only the end.
        changes: bool,
        ids: Arc<PackedIds>,
        tx: mpsc::UnboundedSender<(JobQuery, Answer)>,
        taken: oneshot::Sender<()>,
        parent: tracing::Span,
    },
}

/// A chunk of ids packed in one string (about 40 bytes an id, where
/// separate queries would take twice that) until the driver takes them in.
#[derive(Default)]
pub(super) struct PackedIds {
    text: String,
    ends: Vec<u32>,
}

impl PackedIds {
    pub(super) fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len() as u32);
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.text[a as usize..b as usize])
    }
}

impl Hub {
    pub(crate) fn new(
        attempts: Stack,
        retry: Arc<RetryPolicy>,
        policy: PollPolicy,
        config: HubConfig,
    ) -> Hub {
        Hub {
            shared: Arc::new(Shared {
                attempts,
                retry,
                policy,
                config,
                drivers: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) async fn wait(&self, query: JobQuery) -> Answer {
        let mut meter = WaitMeter::start(1);
        let (tx, rx) = oneshot::channel();
        self.shared
            .send(Command::One(query, tx, tracing::Span::current()));
        let answer = rx.await.unwrap_or_else(|_| Err(Error::closed()));
        meter.end(&answer);
        answer
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
        let mut meter = WaitMeter::start(1);
        let (tx, rx) = oneshot::channel();
        self.shared.send(Command::Until {
            query,
            started,
            deadline,
            seed,
            tx,
            progress,
            parent: tracing::Span::current(),
        });
        let answer = rx.await.unwrap_or_else(|_| Err(Error::closed()));
        meter.end(&answer);
        answer
    }

    /// The stream of `wait_all` (`changes`: of `watch_all`). The queries
    /// are read lazily, a chunk at a time as the driver takes them in.
    pub(crate) fn wait_all<I>(&self, queries: I, changes: bool) -> WaitAll<I::IntoIter>
    where
        I: IntoIterator<Item = JobQuery>,
    {
        WaitAll::new(Arc::clone(&self.shared), queries.into_iter(), changes)
    }
}

impl Shared {
    /// Hands `command` to the driver of the current runtime, starting one
    /// if there is none (or it stopped). When no driver can run, every
    /// query of the command is answered with the error.
    pub(super) fn send(&self, command: Command) {
        let Ok(runtime) = Handle::try_current() else {
            command.fail(&Error::no_runtime());
            return;
        };
        let id = runtime.id();
        let mut drivers = self.drivers.lock().unwrap_or_else(|e| e.into_inner());
        let command = match drivers.iter().position(|(r, _)| *r == id) {
            Some(at) => match drivers[at].1.send(command) {
                Ok(()) => return,
                // The driver is gone (its runtime shut down, or it failed):
                // start another.
                Err(mpsc::error::SendError(command)) => {
                    drivers.swap_remove(at);
                    command
                }
            },
            None => command,
        };
        // Drivers of runtimes that are gone are let go of here.
        drivers.retain(|(_, tx)| !tx.is_closed());
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver::new(
            self.attempts.clone(),
            Arc::clone(&self.retry),
            self.policy.clone(),
            self.config.clone(),
            rx,
        );
        runtime.spawn(driver.run());
        if let Err(mpsc::error::SendError(command)) = tx.send(command) {
            command.fail(&Error::closed());
            return;
        }
        drivers.push((id, tx));
    }
}

impl Command {
    /// Answers every query of a command that no driver will see.
    pub(super) fn fail(self, error: &Error) {
        match self {
            Command::One(_, tx, _) | Command::Until { tx, .. } => {
                let _ = tx.send(Err(error.clone()));
            }
            Command::Many { ids, tx, taken, .. } => {
                for id in ids.iter() {
                    let _ = tx.send((JobQuery::from_shared_id(Arc::from(id)), Err(error.clone())));
                }
                let _ = taken.send(());
            }
        }
    }
}

/// Where a tracked job's status changes go, with its polls so far.
pub(crate) type Progress = mpsc::UnboundedSender<(JobQuery, JobStatus, u32)>;

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
