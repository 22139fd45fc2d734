//! Durable tracking: waits that survive restarts and crashes, and a fleet
//! of workers sharing the work through one store.
//!
//! [`Tracker::track`] stores a job before it returns; [`Tracker::run`]
//! claims stored jobs, waits on them through the client's scheduler, stores
//! each outcome, then calls the handler, and records the delivery only
//! after the handler's `Ok`. A crash anywhere means the job is waited on or
//! delivered again after a restart, never forgotten.
//!
//! ```
//! use goenhance_jobs::track::{MemoryStore, Tracker};
//! use goenhance_jobs::transport::mock::MockTransport;
//! use goenhance_jobs::{Client, JobQuery, JobStatus};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), goenhance_jobs::Error> {
//! let mock = MockTransport::new();
//! mock.timeline("job-1", &["pending", "success"]);
//! let client = Client::builder().api_key("k").transport(mock).build()?;
//!
//! let store = MemoryStore::new(); // SqliteStore::open(path) with feature `sqlite`
//! let tracker = Tracker::builder(client, store).build();
//! tracker.track(JobQuery::new("job-1")?, serde_json::json!({"user": 7})).await?;
//! assert_eq!(tracker.pending().await?, 1);
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! let run = tokio::spawn({
//!     let tracker = tracker.clone();
//!     async move {
//!         let stop = async move { let _ = stop_rx.await; };
//!         tracker.run_until(move |done| {
//!             let tx = tx.clone();
//!             async move {
//!                 let status = done.detail().map(|d| d.status().clone()).ok();
//!                 tx.send((done.query().img_uuid().to_owned(), done.meta()["user"].clone(), status))?;
//!                 Ok(())
//!             }
//!         }, stop).await
//!     }
//! });
//! assert_eq!(
//!     rx.recv().await.unwrap(),
//!     ("job-1".to_owned(), serde_json::json!(7), Some(JobStatus::Succeeded))
//! );
//! // A graceful stop records the acknowledgement before it returns.
//! stop_tx.send(()).unwrap();
//! run.await.unwrap()?;
//! assert_eq!(tracker.pending().await?, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - A job is in the store before `track` returns; tracking an id again
//!   keeps its first meta and deadline.
//! - A job's deadline is an instant of the store's clock set at `track`
//!   (the client's wait timeout from then): time a process was down counts.
//! - The outcome is stored before the handler runs; a handler `Err`,
//!   panic or timeout ([`TrackerBuilder::handler_timeout`]) is retried with
//!   backoff, up to [`TrackerBuilder::max_deliveries`]; then the job is
//!   *dead*, listed by [`Tracker::dead`] with its last error until
//!   [`Tracker::retry_dead`]. [`Completion::deliveries`] counts deliveries
//!   across restarts and workers.
//! - A wait that ends in an error (deadline, stall, a refused key) is
//!   delivered too, with [`Completion::detail`] giving the error.
//! - Handlers of different jobs run concurrently, at most
//!   [`TrackerBuilder::max_handlers`] at once; a claim takes no more
//!   finished jobs than there are free handlers, and a stored outcome
//!   that waited a whole heartbeat for a handler is given back at the
//!   next one, for whichever worker has a handler free.
//! - A store that is down only delays the run; `run` returns only for an
//!   error it cannot outlive (a schema newer than this crate).
//! - What the adaptive schedule learned per job type is saved in the
//!   store and taken in again when a run starts; the last status of each
//!   waiting job, when it changed and the polls until then are saved with
//!   the heartbeats, so a wait taken up after a restart counts stalls
//!   from that change, its schedule from that poll (the adaptive one from
//!   the `track`), and never polls a job whose end was stored.
//! - Delivered and dead jobs are kept for [`TrackerBuilder::retention`]
//!   (7 days by default), then pruned; [`Tracker::delivered`] and
//!   [`Tracker::dead`] list them a page at a time.
//!
//! # Partial failures and fencing
//!
//! Any store operation may fail, hang, or commit and lose its answer.
//! Every operation has a timeout ([`TrackerBuilder::store_timeout`]) and is
//! safe to repeat, so whatever the store answers, every tracked job is
//! eventually delivered or handed to another worker:
//!
//! - A worker registers in the store under its name and a new *epoch*, and
//!   writes one heartbeat every third of the lease, whatever the number of
//!   jobs it holds. Jobs point at the worker and epoch that claimed them.
//! - A worker whose heartbeat lapsed by the store's clock, or whose name
//!   registered again, holds nothing: another worker's claim takes its
//!   jobs. The worker itself stops first: it counts itself alive only
//!   until five sixths of a lease after its last heartbeat was sent, on its
//!   own monotonic clock; then it stops polling, cancels its handlers,
//!   and registers again. No delivery starts without a live heartbeat.
//! - A job the run stops holding (the scheduler shut down) is released at
//!   once; a completion whose answer was lost is asked again and answered
//!   the same; the jobs of a claim whose answer was lost are asked for
//!   again by the next claim; a row that cannot be read (an id that is not
//!   valid, an outcome that is not) is dead with the reason.
//! - [`Tracker::run_until`] stops gracefully, releasing every job it holds.
//!
//! # Time
//!
//! Times that decide ownership (heartbeats, when a job is due, deadlines)
//! are the store's. `PostgresStore` (feature `postgres`) takes them from
//! the database's `now()`, so the clocks of the workers' hosts do not
//! matter; `SqliteStore` (feature `sqlite`) reads the system's wall
//! clock afresh at each operation; [`MemoryStore`] follows tokio's clock
//! (the wall clock when first read, plus tokio's time since), so that
//! tests on a paused clock see leases and deadlines move.

mod builder;
mod claims;
mod clock;
mod completion;
mod deliveries;
mod fence;
mod handlers;
mod listing;
mod memory;
mod outcome;
mod records;
mod run;
mod stop;
mod store;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
mod tracked;
mod tracker;
mod tracking;
mod waits;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::time::Duration;

pub use self::builder::{
    TrackerBuilder, DEFAULT_HANDLER_TIMEOUT, DEFAULT_MAX_DELIVERIES, DEFAULT_RETENTION,
    DEFAULT_STORE_TIMEOUT,
};
pub use self::completion::Completion;
pub use self::listing::{DeadJob, DeliveredJob, Page};
pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use self::postgres::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use self::sqlite::SqliteStore;
pub use self::store::{
    Claim, Claimed, ClaimedJob, EndedJob, Finished, JobState, Learned, Listing, NewJob, Retry,
    StatusChange, StoreFuture, StoredJob, TrackStore, WorkerId,
};
pub use self::tracked::TrackedJob;
pub use self::tracker::Tracker;
pub use self::tracking::{TrackOptions, Tracked};

/// The default lease on a claimed job.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The default cap on handlers running at once.
pub const DEFAULT_MAX_HANDLERS: usize = 16;
/// The default cap on jobs a run holds at once.
pub const DEFAULT_MAX_JOBS: usize = 10_000;

/// Jobs claimed by one statement at most.
pub(crate) const CLAIM_BATCH: usize = 1000;
/// The longest pause after store errors.
pub(crate) const MAX_STORE_BACKOFF: Duration = Duration::from_secs(5);
