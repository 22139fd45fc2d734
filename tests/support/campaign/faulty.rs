//! Store faults injected inside a worker by a seeded plan, through the
//! tracker's [`FaultyStore`]: this wrapper decides when (as the proxy
//! does: one at a time, the next due a drawn gap after the last, on the
//! next write: `register`, `heartbeat`, `claim`, `complete`,
//! `save_status`, `ack`, `retry`, `release`) and which, tells the
//! `FaultyStore` to inject it into that call, and logs it:
//!
//! - `commit-error`: the write is done, then an error is answered (a reply
//!   lost after the commit);
//! - `error`: an error, nothing written;
//! - `hang`: the write waits a drawn time first (most short, one in twenty
//!   longer than a lease).
//!
//! Each injected fault is a line `<at_ms> <worker> <kind> <op> <ms>` of
//! `faults-<worker>-<pid>.log`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use goenhance_jobs::track::testing::{Fault, FaultyStore, Operation};
use goenhance_jobs::track::{
    Claim, Claimed, EndedJob, Finished, Learned, Listing, NewJob, Retry, StatusChange, StoreFuture,
    StoredJob, TrackStore, WorkerId,
};

use super::{now_ms, WorkerEnv};

/// The kinds, as the fault log names them.
pub const KINDS: [&str; 3] = ["commit-error", "error", "hang"];

#[derive(Clone, Copy, Debug)]
enum Kind {
    CommitError,
    Error,
    Hang(Duration),
}

struct Plan {
    faults: Vec<(Duration, Kind)>,
    next: usize,
    due_ms: u64,
    until_ms: u64,
    worker: String,
    log: std::fs::File,
}

/// A store whose writes fail by a seeded plan.
#[derive(Clone)]
pub struct Faulty<S> {
    inner: FaultyStore<S>,
    plan: Arc<Mutex<Plan>>,
}

impl<S> std::fmt::Debug for Faulty<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Faulty")
    }
}

impl<S: TrackStore> Faulty<S> {
    /// `inner` with the plan drawn for this worker process: `env.faults`
    /// faults `env.mean_gap_ms` apart on average, none after
    /// `env.faults_until_ms`.
    pub fn new(inner: S, env: &WorkerEnv, lease: Duration) -> Self {
        // Seeded by the worker's name and how many times it started before,
        // so a replay draws the same plans.
        let earlier = std::fs::read_dir(&env.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&format!("faults-{}-", env.name)))
            })
            .count() as u64;
        let seed = env.seed
            ^ (earlier + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ env
                .name
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut turn = Vec::new();
        let mean = env.mean_gap_ms.max(1);
        let faults = (0..env.faults)
            .map(|_| {
                if turn.is_empty() {
                    turn = vec![0, 1, 2];
                    rng.shuffle(&mut turn);
                }
                let kind = match turn.pop().unwrap() {
                    0 => Kind::CommitError,
                    1 => Kind::Error,
                    _ if rng.f64() < 0.05 => {
                        let lo = lease.as_millis() as u64;
                        Kind::Hang(Duration::from_millis(rng.u64(lo..=lo * 5 / 4)))
                    }
                    _ => Kind::Hang(Duration::from_millis(rng.u64(10..=400))),
                };
                (
                    Duration::from_millis(rng.u64(mean / 2..=mean + mean / 2)),
                    kind,
                )
            })
            .collect::<Vec<_>>();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                env.dir
                    .join(format!("faults-{}-{}.log", env.name, std::process::id())),
            )
            .unwrap();
        let due_ms = now_ms() + faults.first().map_or(0, |f| f.0.as_millis() as u64);
        Faulty {
            inner: FaultyStore::new(inner),
            plan: Arc::new(Mutex::new(Plan {
                faults,
                next: 0,
                due_ms,
                until_ms: env.faults_until_ms,
                worker: env.name.clone(),
                log,
            })),
        }
    }

    /// Injects the fault of the plan into this call of `op`, if one is
    /// due; logs it.
    fn take(&self, op: Operation) {
        let mut p = self.plan.lock().unwrap();
        let now = now_ms();
        if p.next >= p.faults.len() || now < p.due_ms || now >= p.until_ms {
            return;
        }
        let kind = p.faults[p.next].1;
        p.next += 1;
        let (name, ms, fault) = match kind {
            Kind::CommitError => ("commit-error", 0, Fault::CommitThenError),
            Kind::Error => ("error", 0, Fault::Error),
            Kind::Hang(d) => ("hang", d.as_millis() as u64, Fault::Hang(d)),
        };
        self.inner.inject(op, fault, 1);
        let line = format!("{now} {} {name} {op:?} {ms}\n", p.worker);
        p.log.write_all(line.as_bytes()).unwrap();
        if let Some(next) = p.faults.get(p.next) {
            p.due_ms = now + ms + next.0.as_millis() as u64;
        }
    }

    fn write<'a, T>(
        &'a self,
        op: Operation,
        call: impl FnOnce(&'a FaultyStore<S>) -> StoreFuture<'a, T>,
    ) -> StoreFuture<'a, T> {
        self.take(op);
        call(&self.inner)
    }
}

impl<S: TrackStore> TrackStore for Faulty<S> {
    fn now(&self) -> SystemTime {
        self.inner.now()
    }

    fn insert(&self, jobs: Vec<NewJob>, now: SystemTime) -> StoreFuture<'_, ()> {
        self.inner.insert(jobs, now)
    }

    fn register<'a>(
        &'a self,
        name: &'a str,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, WorkerId> {
        self.write(Operation::Register, |s| s.register(name, lease, now))
    }

    fn heartbeat<'a>(
        &'a self,
        worker: &'a WorkerId,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, bool> {
        self.write(Operation::Heartbeat, |s| s.heartbeat(worker, lease, now))
    }

    fn claim<'a>(
        &'a self,
        worker: &'a WorkerId,
        claim: Claim,
        now: SystemTime,
    ) -> StoreFuture<'a, Claimed> {
        self.write(Operation::Claim, |s| s.claim(worker, claim, now))
    }

    fn complete<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Finished>,
        now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        self.write(Operation::Complete, |s| s.complete(worker, jobs, now))
    }

    fn save_status<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<StatusChange>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        self.write(Operation::SaveStatus, |s| s.save_status(worker, jobs, now))
    }

    fn ack(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, ()> {
        self.write(Operation::Ack, |s| s.ack(ids, now))
    }

    fn retry<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Retry>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        self.write(Operation::Retry, |s| s.retry(worker, jobs, now))
    }

    fn release<'a>(&'a self, worker: &'a WorkerId, ids: Vec<String>) -> StoreFuture<'a, ()> {
        self.write(Operation::Release, |s| s.release(worker, ids))
    }

    fn retry_dead(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, u64> {
        self.inner.retry_dead(ids, now)
    }

    fn prune(&self, retention: Duration, now: SystemTime) -> StoreFuture<'_, u64> {
        self.inner.prune(retention, now)
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        self.inner.pending()
    }

    fn list(
        &self,
        listing: Listing,
        after: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<EndedJob>> {
        self.inner.list(listing, after, limit)
    }

    fn job(&self, id: &str) -> StoreFuture<'_, Option<StoredJob>> {
        self.inner.job(id)
    }

    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>> {
        self.inner.load_learned()
    }

    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()> {
        self.inner.save_learned(learned)
    }
}
