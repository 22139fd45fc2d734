//! The [`TrackStore`] trait.

use std::fmt;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;

pub use super::records::{
    Claim, Claimed, ClaimedJob, EndedJob, Finished, JobState, Learned, Listing, NewJob, Retry,
    StatusChange, StoredJob, WorkerId,
};
use crate::error::Error;

/// The future of a [`TrackStore`] operation.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, Error>>;

/// Durable state of tracked jobs, shared by the workers of a fleet.
///
/// A job is *waiting* (to be polled), *finished* (its outcome stored, not
/// yet delivered), *delivered*, or *dead* (its handler failed too often,
/// or its row could not be read; kept with the last error until
/// [`retry_dead`](Self::retry_dead)).
///
/// # Workers, epochs and leases
///
/// A worker [`register`](Self::register)s under its name and gets a new
/// *epoch*; the jobs it claims point at its name and epoch. It stays alive
/// while it [`heartbeat`](Self::heartbeat)s: one write per interval,
/// whatever the number of jobs it holds. A worker whose heartbeat lapsed,
/// or an older epoch of a name registered again, holds nothing: its jobs
/// are free to claim, and its heartbeat answers `false` (it is fenced).
/// Every operation that changes a held job checks the worker and epoch.
///
/// # Time
///
/// Every time that decides ownership (heartbeats, when a job is due, a
/// job's deadline) is the store's: a store whose database has a clock
/// (PostgreSQL) uses `now()` and ignores the `now` it is given; others
/// use the `now` the worker read from [`now`](Self::now) just before the
/// call. What a store hands back carries its own reading ([`Claimed::now`])
/// so that a worker turns stored instants into its own timers without
/// comparing clocks.
///
/// Operations take many jobs at once, so a run of thousands of jobs costs
/// a few statements per job. Errors are [`Error::is_store`] errors; an
/// error that a later try cannot fix (a schema newer than this crate) makes
/// [`Tracker::run`](super::Tracker::run) return it. Any operation may
/// commit and still answer an error (a lost reply): each is written so
/// that doing it again is harmless.
pub trait TrackStore: fmt::Debug + Send + Sync + 'static {
    /// The store's clock as read here: what the worker passes as `now`.
    /// The system's wall clock, read fresh, unless the store says
    /// otherwise ([`MemoryStore`](super::MemoryStore) follows tokio's
    /// clock, so tests on a paused clock see it move).
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Stores jobs that are not stored yet, tracked at `now` with their
    /// deadline `timeout` later; an id already stored keeps what it has
    /// (its meta, deadline and state). Durable when `Ok`.
    fn insert(&self, jobs: Vec<NewJob>, now: SystemTime) -> StoreFuture<'_, ()>;

    /// Registers a worker under `name` with a new epoch (one more than any
    /// epoch the name had), alive for `lease` from `now`. Jobs that still
    /// point at an earlier epoch of the name are released (due at once).
    fn register<'a>(
        &'a self,
        name: &'a str,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, WorkerId>;

    /// Keeps `worker` alive for `lease` from `now`: one write, whatever
    /// the jobs it holds. `false` when its heartbeat had already lapsed or
    /// its name was registered again: it is fenced, holds nothing, and
    /// must [`register`](Self::register) again.
    fn heartbeat<'a>(
        &'a self,
        worker: &'a WorkerId,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, bool>;

    /// Hands jobs to `worker`: first those of workers whose heartbeat
    /// lapsed are freed; then at most [`Claim::waiting`] waiting jobs and
    /// at most [`Claim::finished`] finished ones that are free and due by
    /// `now`, oldest due first, are pointed at `worker`, marked with
    /// [`Claim::token`]. Jobs `worker` already holds from claims whose
    /// answer was lost ([`Claim::recover`]) are handed out again. A
    /// finished job's delivery count goes up by one as it is claimed.
    /// Nothing is handed out, and [`Claimed::alive`] is `false`, when
    /// `worker` is not alive.
    fn claim<'a>(
        &'a self,
        worker: &'a WorkerId,
        claim: Claim,
        now: SystemTime,
    ) -> StoreFuture<'a, Claimed>;

    /// Stores the outcomes of waits on jobs that `worker` holds, counting
    /// one delivery each; returns `(id, deliveries)` for those it holds.
    /// A job it holds whose outcome is stored already (a reply lost) is
    /// answered again as it is, without counting.
    fn complete<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Finished>,
        now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>>;

    /// [`ack`](Self::ack) of `delivered`, then [`complete`](Self::complete)
    /// of `jobs`, in one call: a store may write both at once (one
    /// statement, one transaction). `delivered` are finished jobs whose
    /// handler returned `Ok`; the answer is `complete`'s. Doing it again
    /// is harmless, as each of the two is.
    ///
    /// Provided: calls [`ack`](Self::ack) (when `delivered` is not empty),
    /// then [`complete`](Self::complete).
    fn complete_and_ack<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Finished>,
        delivered: Vec<String>,
        now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        Box::pin(async move {
            if !delivered.is_empty() {
                self.ack(delivered, now).await?;
            }
            self.complete(worker, jobs, now).await
        })
    }

    /// Saves the last status seen of waiting jobs that `worker` holds, so
    /// that a wait taken up after a restart goes on from there (stall
    /// detection counts from the last change). Stores that keep no such
    /// state may ignore it.
    fn save_status<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<StatusChange>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        let _ = (worker, jobs, now);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Records that the handler took these finished jobs: they are
    /// delivered at `now` and never handed out again. Needs no lease: a
    /// delivery that happened is recorded whoever holds the job now.
    fn ack(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, ()>;

    /// Gives back finished jobs that `worker` holds whose handler failed:
    /// due again after [`Retry`]'s delay, or *dead* with the error.
    fn retry<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Retry>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()>;

    /// Frees jobs that `worker` holds and stopped working on: due at once
    /// for any worker.
    fn release<'a>(&'a self, worker: &'a WorkerId, ids: Vec<String>) -> StoreFuture<'a, ()>;

    /// Makes dead jobs deliverable again (their delivery count starts over);
    /// returns how many were dead.
    fn retry_dead(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, u64>;

    /// Deletes delivered and dead jobs that ended `retention` or more
    /// before `now`; returns how many.
    fn prune(&self, retention: Duration, now: SystemTime) -> StoreFuture<'_, u64>;

    /// Jobs tracked and neither delivered nor dead.
    fn pending(&self) -> StoreFuture<'_, u64>;

    /// A page of delivered or dead jobs in the order they were tracked:
    /// at most `limit`, after the one whose [`EndedJob::cursor`] is
    /// `after`.
    fn list(
        &self,
        listing: Listing,
        after: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<EndedJob>>;

    /// One job by id, as stored: one indexed read; `None` for an id never
    /// tracked (or pruned). Stores that cannot look one job up answer with
    /// an error.
    fn job(&self, id: &str) -> StoreFuture<'_, Option<StoredJob>> {
        let _ = id;
        Box::pin(std::future::ready(Err(Error::store(
            "this store cannot look up one job",
        ))))
    }

    /// What the poll schedule learned, as last saved.
    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>>;

    /// Saves what the poll schedule learned (replacing each type's row).
    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()>;

    /// Where the store keeps its data, as logs name it: a file's path, a
    /// database's `postgres://user@host:port/db`. Never a secret (no
    /// password). The default is the store's type name.
    fn location(&self) -> String {
        std::any::type_name::<Self>().to_owned()
    }
}

/// Milliseconds since the Unix epoch (0 before it, saturated far after).
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The instant `ms` milliseconds after the Unix epoch.
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A duration in whole milliseconds, saturated.
pub(crate) fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
