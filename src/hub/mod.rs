//! The watcher hub: every wait of a [`Client`](crate::Client) runs on one
//! scheduler.
//!
//! One task per client holds a timer queue of next polls, a small state per
//! job (no task and no timer per job), and the polls in flight. Waits on the
//! same `img_uuid` share one poll loop; a cap on polls in flight (default 64)
//! and an optional [`Throttle`] apply to all of them, and polls that come
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

mod driver;
mod job;
mod throttle;

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::driver::Driver;
pub use self::throttle::{PerSecond, Throttle};
use crate::error::Error;
use crate::model::{JobDetail, JobStatus};
use crate::poll::PollPolicy;
use crate::query::JobQuery;
use crate::stack::Stack;
use crate::telemetry::WaitMeter;

/// The default cap on polls in flight.
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

/// The handle that clients hold; the driver task is started on first use
/// (and again if its runtime went away).
pub(crate) struct Hub {
    stack: Stack,
    policy: PollPolicy,
    config: HubConfig,
    tx: Mutex<Option<mpsc::UnboundedSender<Command>>>,
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
    Many {
        /// Whether every status change is sent too, not only the end.
        changes: bool,
        ids: PackedIds,
        /// How many more ids are coming in later commands of this batch,
        /// as far as known: room is made for them at once.
        more: usize,
        tx: mpsc::UnboundedSender<(JobQuery, Answer)>,
        parent: tracing::Span,
    },
}

/// Ids travel to the driver in chunks of this many.
const CHUNK: usize = 4096;

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
    pub(crate) fn new(stack: Stack, policy: PollPolicy, config: HubConfig) -> Hub {
        Hub {
            stack,
            policy,
            config,
            tx: Mutex::new(None),
        }
    }

    /// Hands `command` to the driver, starting one if there is none (or
    /// its runtime went away). When no driver can run, every query of the
    /// command is answered with the error.
    fn send(&self, command: Command) {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let command = match tx.as_ref() {
            Some(sender) => match sender.send(command) {
                Ok(()) => return,
                // The driver is gone (its runtime shut down): start another.
                Err(mpsc::error::SendError(command)) => command,
            },
            None => command,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            command.fail(&Error::no_runtime());
            return;
        };
        let (new_tx, rx) = mpsc::unbounded_channel();
        let driver = Driver::new(
            self.stack.clone(),
            self.policy.clone(),
            self.config.clone(),
            rx,
        );
        runtime.spawn(driver.run());
        if let Err(mpsc::error::SendError(command)) = new_tx.send(command) {
            command.fail(&Error::closed());
            return;
        }
        *tx = Some(new_tx);
    }

    pub(crate) async fn wait(&self, query: JobQuery) -> Answer {
        let mut meter = WaitMeter::start(1);
        let (tx, rx) = oneshot::channel();
        self.send(Command::One(query, tx, tracing::Span::current()));
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
        self.send(Command::Until {
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

    pub(crate) fn wait_all<I>(&self, queries: I, changes: bool) -> WaitAll
    where
        I: IntoIterator<Item = JobQuery>,
    {
        let mut queries = queries.into_iter();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut remaining = 0;
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
            self.send(Command::Many {
                changes,
                ids,
                more,
                tx: tx.clone(),
                parent: tracing::Span::current(),
            });
        }
        WaitAll {
            rx,
            remaining,
            meter: WaitMeter::start(remaining),
        }
    }
}

impl Command {
    /// Answers every query of a command that no driver will see.
    pub(super) fn fail(self, error: &Error) {
        match self {
            Command::One(_, tx, _) | Command::Until { tx, .. } => {
                let _ = tx.send(Err(error.clone()));
            }
            Command::Many { ids, tx, .. } => {
                for id in ids.iter() {
                    let _ = tx.send((JobQuery::from_shared_id(Arc::from(id)), Err(error.clone())));
                }
            }
        }
    }
}

/// Where a tracked job's status changes go, with its polls so far.
pub(crate) type Progress = mpsc::UnboundedSender<(JobQuery, JobStatus, u32)>;

/// The stream of [`Client::wait_all`](crate::Client::wait_all).
///
/// It ends once every query has had its last item: each query's end (a
/// terminal detail or an error) is sent before the driver lets go of the
/// query, even when the driver stops early (see `Drop for Driver`).
pub(crate) struct WaitAll {
    rx: mpsc::UnboundedReceiver<(JobQuery, Answer)>,
    remaining: usize,
    /// The waits not answered yet, counted until the stream is dropped.
    meter: WaitMeter,
}

impl Stream for WaitAll {
    type Item = (JobQuery, Answer);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                // A job's end is an error or a terminal detail; anything
                // else is a status change on the way.
                if item.1.as_ref().map_or(true, JobDetail::is_terminal) {
                    self.remaining -= 1;
                    self.meter.end(&item.1);
                }
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                self.remaining = 0;
                self.meter.cancel_rest();
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
