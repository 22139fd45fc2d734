//! [`FaultyStore`]: a store wrapper that injects partial failures.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::track::store::{
    Claim, Claimed, EndedJob, Finished, Learned, Listing, NewJob, Retry, StatusChange, StoreFuture,
    StoredJob, TrackStore, WorkerId,
};

/// A [`TrackStore`] operation, as [`FaultyStore`] names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`TrackStore::insert`].
    Insert,
    /// [`TrackStore::register`].
    Register,
    /// [`TrackStore::heartbeat`].
    Heartbeat,
    /// [`TrackStore::claim`].
    Claim,
    /// [`TrackStore::complete`] (and [`TrackStore::complete_and_ack`]).
    Complete,
    /// [`TrackStore::save_status`].
    SaveStatus,
    /// [`TrackStore::ack`].
    Ack,
    /// [`TrackStore::retry`].
    Retry,
    /// [`TrackStore::release`].
    Release,
    /// [`TrackStore::retry_dead`].
    RetryDead,
    /// [`TrackStore::prune`].
    Prune,
    /// [`TrackStore::pending`].
    Pending,
    /// [`TrackStore::list`].
    List,
    /// [`TrackStore::load_learned`] and [`TrackStore::save_learned`].
    Learned,
}

impl Operation {
    /// The operations that change tracked jobs.
    pub const WRITES: [Operation; 9] = [
        Operation::Insert,
        Operation::Register,
        Operation::Heartbeat,
        Operation::Claim,
        Operation::Complete,
        Operation::SaveStatus,
        Operation::Ack,
        Operation::Retry,
        Operation::Release,
    ];
}

/// What happens to an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Fails without doing anything.
    Error,
    /// Is done, then answers an error: a reply lost after the commit.
    CommitThenError,
    /// Answers nothing for this long, then is done and answers: a hung
    /// connection (callers with a shorter timeout give up first, and then
    /// it is never done).
    Hang(Duration),
}

#[derive(Default)]
struct Plan {
    /// Faults for the next calls of an operation, in order.
    queued: Vec<(Operation, Fault)>,
    /// A seeded random fault on any call: (probability, faults to pick
    /// from, ops it applies to, the generator).
    random: Option<(f64, Vec<Fault>, Vec<Operation>, fastrand::Rng)>,
}

/// Wraps a store and injects [`Fault`]s into chosen operations: for tests
/// that every job is delivered whatever the store answers.
///
/// ```
/// use std::time::Duration;
/// use goenhance_jobs::track::testing::{Fault, FaultyStore, Operation};
/// use goenhance_jobs::track::MemoryStore;
///
/// let store = FaultyStore::new(MemoryStore::new());
/// // The next `complete` is done but its answer is lost.
/// store.inject(Operation::Complete, Fault::CommitThenError, 1);
/// // One write in ten goes wrong, some way or another, replayably.
/// store.random(7, 0.1, &[Fault::Error, Fault::CommitThenError, Fault::Hang(Duration::from_secs(10))]);
/// ```
#[derive(Clone)]
pub struct FaultyStore<S> {
    inner: Arc<S>,
    plan: Arc<Mutex<Plan>>,
    injected: Arc<AtomicU64>,
}

impl<S: TrackStore> FaultyStore<S> {
    /// `inner`, without faults until some are asked for.
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore {
            inner: Arc::new(inner),
            plan: Arc::new(Mutex::new(Plan::default())),
            injected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The wrapped store.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The next `times` calls of `op` meet `fault`.
    pub fn inject(&self, op: Operation, fault: Fault, times: usize) {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..times {
            plan.queued.push((op, fault));
        }
    }

    /// From now on, each call of a write ([`Operation::WRITES`]) meets one
    /// of `faults` with probability `p`, chosen by a generator seeded with
    /// `seed`. An empty `faults` stops random faults.
    pub fn random(&self, seed: u64, p: f64, faults: &[Fault]) {
        self.random_on(seed, p, faults, &Operation::WRITES);
    }

    /// As [`random`](Self::random), on the operations `ops` only.
    pub fn random_on(&self, seed: u64, p: f64, faults: &[Fault], ops: &[Operation]) {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        plan.random = (!faults.is_empty()).then(|| {
            (
                p,
                faults.to_vec(),
                ops.to_vec(),
                fastrand::Rng::with_seed(seed),
            )
        });
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn fault(&self, op: Operation) -> Option<Fault> {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let fault = match plan.queued.iter().position(|(o, _)| *o == op) {
            Some(i) => Some(plan.queued.remove(i).1),
            None => match &mut plan.random {
                Some((p, faults, ops, rng)) if ops.contains(&op) => {
                    (rng.f64() < *p).then(|| faults[rng.usize(..faults.len())])
                }
                _ => None,
            },
        };
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }

    fn wrap<'a, T: Send + 'a>(
        &'a self,
        op: Operation,
        call: impl FnOnce() -> StoreFuture<'a, T> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let fault = self.fault(op);
        Box::pin(async move {
            let lost = || Error::store(format!("injected fault: {op:?} lost its answer"));
            match fault {
                None => call().await,
                Some(Fault::Error) => Err(Error::store(format!("injected fault: {op:?} failed"))),
                Some(Fault::CommitThenError) => {
                    call().await?;
                    Err(lost())
                }
                Some(Fault::Hang(d)) => {
                    tokio::time::sleep(d).await;
                    call().await
                }
            }
        })
    }
}

impl<S> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("injected", &self.injected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S: TrackStore> TrackStore for FaultyStore<S> {
    fn now(&self) -> SystemTime {
        self.inner.now()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn insert(&self, jobs: Vec<NewJob>, now: SystemTime) -> StoreFuture<'_, ()> {
        self.wrap(Operation::Insert, move || self.inner.insert(jobs, now))
    }

    fn register<'a>(
        &'a self,
        name: &'a str,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, WorkerId> {
        self.wrap(Operation::Register, move || {
            self.inner.register(name, lease, now)
        })
    }

    fn heartbeat<'a>(
        &'a self,
        worker: &'a WorkerId,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, bool> {
        self.wrap(Operation::Heartbeat, move || {
            self.inner.heartbeat(worker, lease, now)
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a WorkerId,
        claim: Claim,
        now: SystemTime,
    ) -> StoreFuture<'a, Claimed> {
        self.wrap(Operation::Claim, move || {
            self.inner.claim(worker, claim, now)
        })
    }

    fn complete<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Finished>,
        now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        self.wrap(Operation::Complete, move || {
            self.inner.complete(worker, jobs, now)
        })
    }

    fn complete_and_ack<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Finished>,
        delivered: Vec<String>,
        now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        self.wrap(Operation::Complete, move || {
            self.inner.complete_and_ack(worker, jobs, delivered, now)
        })
    }

    fn save_status<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<StatusChange>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        self.wrap(Operation::SaveStatus, move || {
            self.inner.save_status(worker, jobs, now)
        })
    }

    fn ack(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, ()> {
        self.wrap(Operation::Ack, move || self.inner.ack(ids, now))
    }

    fn retry<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Retry>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        self.wrap(Operation::Retry, move || {
            self.inner.retry(worker, jobs, now)
        })
    }

    fn release<'a>(&'a self, worker: &'a WorkerId, ids: Vec<String>) -> StoreFuture<'a, ()> {
        self.wrap(Operation::Release, move || self.inner.release(worker, ids))
    }

    fn retry_dead(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, u64> {
        self.wrap(Operation::RetryDead, move || {
            self.inner.retry_dead(ids, now)
        })
    }

    fn prune(&self, retention: Duration, now: SystemTime) -> StoreFuture<'_, u64> {
        self.wrap(Operation::Prune, move || self.inner.prune(retention, now))
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        self.wrap(Operation::Pending, move || self.inner.pending())
    }

    fn job(&self, id: &str) -> StoreFuture<'_, Option<StoredJob>> {
        self.inner.job(id)
    }

    fn list(
        &self,
        listing: Listing,
        after: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<EndedJob>> {
        self.wrap(Operation::List, move || {
            self.inner.list(listing, after, limit)
        })
    }

    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>> {
        self.wrap(Operation::Learned, move || self.inner.load_learned())
    }

    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()> {
        self.wrap(Operation::Learned, move || self.inner.save_learned(learned))
    }
}
