//! The [`TrackStore`] trait and the records it moves.

use std::fmt;

use futures_util::future::BoxFuture;

use crate::error::Error;

/// The future of a [`TrackStore`] operation.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, Error>>;

/// A job as [`Tracker::track`](super::Tracker::track) stores it. Times are
/// milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// The job id (`img_uuid`).
    pub id: String,
    /// The caller's metadata, as JSON text.
    pub meta: String,
    /// When it was tracked.
    pub tracked_at: i64,
    /// When its wait ends, whatever restarts happen in between.
    pub deadline: i64,
}

/// A job handed to a worker by [`TrackStore::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The job id.
    pub id: String,
    /// The metadata given when it was first tracked, as JSON text.
    pub meta: String,
    /// When it was first tracked (ms since the Unix epoch).
    pub tracked_at: i64,
    /// When its wait ends (ms since the Unix epoch).
    pub deadline: i64,
    /// How the wait ended, as stored by [`TrackStore::complete`]; `None`
    /// while the job is still to be waited on.
    pub outcome: Option<String>,
    /// Deliveries started so far, this claim's included when `outcome` is
    /// set.
    pub deliveries: u32,
    /// The last status a wait on it saw, as saved by
    /// [`TrackStore::save_status`].
    pub last_status: Option<String>,
    /// When that status was first seen (ms since the Unix epoch).
    pub last_change: Option<i64>,
    /// Polls made until then.
    pub last_polls: Option<u32>,
}

/// A status change seen while waiting, for [`TrackStore::save_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The job id.
    pub id: String,
    /// The status, as the API names it (`pending`, `processing`, …).
    pub status: String,
    /// When it was first seen (ms since the Unix epoch).
    pub at: i64,
    /// Polls made until then, that one included.
    pub polls: u32,
}

/// The end of a wait, for [`TrackStore::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The job id.
    pub id: String,
    /// How the wait ended, as text the tracker reads back.
    pub outcome: String,
}

/// What the adaptive poll schedule learned about one job type: the count,
/// mean and (weighted) sum of squares of `ln(seconds)` of run times.
#[derive(Clone, Debug, PartialEq)]
pub struct Learned {
    /// The job type, e.g. `mx-v2v`.
    pub job_type: String,
    /// Samples taken in (capped at the learning window).
    pub samples: u32,
    /// Mean of `ln(seconds)`.
    pub mean: f64,
    /// Weighted sum of squared deviations of `ln(seconds)`.
    pub m2: f64,
}

/// Durable state of tracked jobs, shared by the workers of a fleet.
///
/// A job is *waiting* (to be polled), *finished* (its outcome stored, not
/// yet delivered) or *delivered*. A worker holds the jobs it works on by a
/// lease that it renews; a job whose lease lapsed may be claimed by another
/// worker. Operations take many jobs at once, so a run of thousands of jobs
/// costs a few statements per job. Times are milliseconds since the Unix
/// epoch.
///
/// Implemented by [`MemoryStore`](super::MemoryStore),
/// `SqliteStore` (feature `sqlite`) and `PostgresStore` (feature
/// `postgres`). Errors are [`Error::is_store`] errors; an error that a
/// later try cannot fix (a schema newer than this crate) makes
/// [`Tracker::run`](super::Tracker::run) return it.
pub trait TrackStore: fmt::Debug + Send + Sync + 'static {
    /// Stores jobs that are not stored yet; an id already stored keeps
    /// what it has (its meta, deadline and state). Durable when `Ok`.
    fn insert(&self, jobs: Vec<NewJob>) -> StoreFuture<'_, ()>;

    /// Leases to `worker` until `lease_until` at most `limit` jobs that
    /// are waiting or finished-but-undelivered and due by `now`, oldest due
    /// first. A job is due when tracked, when its lease ends (a claim or a
    /// renewal makes it due again at `lease_until`), and when
    /// [`retry`](Self::retry) says.
    /// With `take_own`, jobs already leased to `worker` are taken again
    /// (a restarted worker of the same name). A finished job's delivery
    /// count goes up by one as it is claimed.
    fn claim<'a>(
        &'a self,
        worker: &'a str,
        now: i64,
        lease_until: i64,
        limit: usize,
        take_own: bool,
    ) -> StoreFuture<'a, Vec<ClaimedJob>>;

    /// Extends every lease `worker` holds on an undelivered job to
    /// `lease_until`; returns the ids it still holds.
    fn renew<'a>(&'a self, worker: &'a str, lease_until: i64) -> StoreFuture<'a, Vec<String>>;

    /// Stores the outcomes of waits on jobs that `worker` holds, counting
    /// one delivery each; returns `(id, deliveries)` for those it still
    /// held (the others belong to another worker now).
    fn complete<'a>(
        &'a self,
        worker: &'a str,
        now: i64,
        jobs: Vec<Finished>,
    ) -> StoreFuture<'a, Vec<(String, u32)>>;

    /// Saves the last status seen of waiting jobs that `worker` holds, so
    /// that a wait taken up after a restart goes on from there (stall
    /// detection counts from the last change). Stores that keep no such
    /// state may ignore it.
    fn save_status<'a>(&'a self, worker: &'a str, jobs: Vec<StatusChange>) -> StoreFuture<'a, ()> {
        let _ = (worker, jobs);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Records that the handler took these finished jobs: they are
    /// delivered and never handed out again.
    fn ack(&self, ids: Vec<String>, now: i64) -> StoreFuture<'_, ()>;

    /// Gives back finished jobs whose handler failed, each due again at
    /// the time given.
    fn retry<'a>(&'a self, worker: &'a str, jobs: Vec<(String, i64)>) -> StoreFuture<'a, ()>;

    /// Jobs tracked and not yet delivered.
    fn pending(&self) -> StoreFuture<'_, u64>;

    /// The delivered jobs and their stored outcomes, `(id, outcome)`, in
    /// the order they were tracked: for a tool that shows every result
    /// again. Stores that cannot list them answer with an error.
    fn delivered(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(std::future::ready(Err(Error::store(
            "this store cannot list delivered jobs",
        ))))
    }

    /// What the poll schedule learned, as last saved.
    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>>;

    /// Saves what the poll schedule learned (replacing each type's row).
    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()>;
}
