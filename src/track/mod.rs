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
//! use std::time::Duration;
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
//! let tracker = Tracker::builder(client, store.clone()).build();
//! tracker.track(JobQuery::new("job-1")?, serde_json::json!({"user": 7})).await?;
//! assert_eq!(tracker.pending().await?, 1);
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let run = tracker.run(move |done| {
//!     let tx = tx.clone();
//!     async move {
//!         let status = done.detail().map(|d| d.status().clone()).ok();
//!         tx.send((done.query().img_uuid().to_owned(), done.meta()["user"].clone(), status))?;
//!         Ok(())
//!     }
//! });
//! tokio::select! {
//!     _ = run => unreachable!("run only ends on an error it cannot outlive"),
//!     got = rx.recv() => assert_eq!(
//!         got.unwrap(),
//!         ("job-1".to_owned(), serde_json::json!(7), Some(JobStatus::Succeeded))
//!     ),
//! }
//! // The acknowledgement is written right after the handler's Ok.
//! tokio::time::sleep(Duration::from_millis(10)).await;
//! # let _ = &store;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - A job is in the store before `track` returns; tracking an id again
//!   keeps its first meta and deadline.
//! - A job's deadline is a wall-clock instant set at `track` (the client's
//!   wait timeout from then): time a process was down counts.
//! - The outcome is stored before the handler runs; a handler `Err` (or
//!   panic) is retried with backoff; [`Completion::deliveries`] counts
//!   deliveries across restarts and workers.
//! - A wait that ends in an error (deadline, stall, a refused key) is
//!   delivered too, with [`Completion::detail`] giving the error.
//! - Handlers of different jobs run concurrently, at most
//!   [`TrackerBuilder::max_handlers`] at once.
//! - A store that is down only delays the run; `run` returns only for an
//!   error it cannot outlive (a schema newer than this crate).
//! - What the adaptive schedule learned per job type is saved in the
//!   store and taken in again when a run starts; the last status of each
//!   waiting job, when it changed and the polls until then are saved with
//!   the lease renewals, so a wait taken up after a restart counts stalls
//!   from that change, its schedule from that poll (the adaptive one from
//!   the `track`), and never polls a job whose end was stored.
//!
//! Wall-clock instants are read as the system clock when the process built
//! its first tracker plus tokio's clock since, so that tests on a paused clock see
//! deadlines move with it.

mod builder;
mod clock;
mod completion;
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
mod tracker;
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
    Claim, Claimed, ClaimedJob, EndedJob, Finished, Learned, Listing, NewJob, Retry, StatusChange,
    StoreFuture, TrackStore, WorkerId,
};
pub use self::tracker::Tracker;

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
