//! A tracking store written outside the crate, against its public API
//! only, and checked with the store conformance suite.
//!
//! ```text
//! cargo run --example custom_store --features test-util
//! ```
//!
//! It keeps jobs in a `BTreeMap` behind a mutex: a stand-in for a table in
//! a database of your own. Times are milliseconds of the `now` each call is
//! given (the store's clock, as [`TrackStore::now`] reads it).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goenhance_jobs::track::{
    Claim, Claimed, ClaimedJob, EndedJob, Finished, JobState, Learned, Listing, NewJob, Retry,
    StatusChange, StoreFuture, StoredJob, TrackStore, WorkerId,
};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum State {
    Waiting,
    Finished,
    Delivered,
    Dead,
}

#[derive(Debug)]
struct Row {
    seq: u64,
    meta: String,
    tracked_at: SystemTime,
    deadline: SystemTime,
    due_at: SystemTime,
    state: State,
    outcome: Option<String>,
    deliveries: u32,
    owner: Option<WorkerId>,
    token: u64,
    last: Option<(String, SystemTime, u32)>,
    error: Option<String>,
    ended_at: SystemTime,
}

#[derive(Debug, Default)]
struct Tables {
    jobs: BTreeMap<String, Row>,
    /// Name → (epoch, alive until).
    workers: BTreeMap<String, (i64, SystemTime)>,
    learned: BTreeMap<String, Learned>,
    seq: u64,
}

impl Tables {
    fn alive(&self, w: &WorkerId, now: SystemTime) -> bool {
        self.workers
            .get(&w.name)
            .is_some_and(|&(epoch, until)| epoch == w.epoch && until > now)
    }

    /// The row of `id` if `w` holds it.
    fn held(&mut self, w: &WorkerId, id: &str) -> Option<&mut Row> {
        self.jobs
            .get_mut(id)
            .filter(|r| r.state < State::Delivered && r.owner.as_ref() == Some(w))
    }
}

/// The store.
#[derive(Debug, Default)]
struct MapStore(Mutex<Tables>);

impl MapStore {
    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Tables) -> T) -> StoreFuture<'_, T> {
        let out = f(&mut self.0.lock().unwrap());
        Box::pin(std::future::ready(Ok(out)))
    }
}

fn as_claimed(id: &str, r: &Row) -> ClaimedJob {
    let mut job =
        ClaimedJob::new(id, r.meta.clone(), r.tracked_at, r.deadline).with_deliveries(r.deliveries);
    if let Some(o) = &r.outcome {
        job = job.with_outcome(o.clone(), r.deliveries);
    }
    if let Some((s, at, polls)) = &r.last {
        job = job.with_last_status(s.clone(), *at, *polls);
    }
    job
}

impl TrackStore for MapStore {
    fn insert(&self, jobs: Vec<NewJob>, now: SystemTime) -> StoreFuture<'_, ()> {
        self.with(move |t| {
            for j in jobs {
                if t.jobs.contains_key(&j.id) {
                    continue;
                }
                t.seq += 1;
                let row = Row {
                    seq: t.seq,
                    meta: j.meta,
                    tracked_at: now,
                    deadline: now + j.timeout,
                    due_at: now,
                    state: State::Waiting,
                    outcome: None,
                    deliveries: 0,
                    owner: None,
                    token: 0,
                    last: None,
                    error: None,
                    ended_at: UNIX_EPOCH,
                };
                t.jobs.insert(j.id, row);
            }
        })
    }

    fn register<'a>(
        &'a self,
        name: &'a str,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, WorkerId> {
        self.with(move |t| {
            let epoch = t.workers.get(name).map_or(1, |w| w.0 + 1);
            t.workers.insert(name.to_owned(), (epoch, now + lease));
            for r in t.jobs.values_mut() {
                if r.owner.as_ref().is_some_and(|o| o.name == name) {
                    r.owner = None;
                }
            }
            WorkerId::new(name, epoch)
        })
    }

    fn heartbeat<'a>(
        &'a self,
        worker: &'a WorkerId,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, bool> {
        self.with(move |t| {
            let alive = t.alive(worker, now);
            if alive {
                t.workers
                    .insert(worker.name.clone(), (worker.epoch, now + lease));
            }
            alive
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a WorkerId,
        claim: Claim,
        now: SystemTime,
    ) -> StoreFuture<'a, Claimed> {
        self.with(move |t| {
            let workers = t.workers.clone();
            for r in t.jobs.values_mut() {
                let lapsed = r.owner.as_ref().is_some_and(|o| {
                    !workers
                        .get(&o.name)
                        .is_some_and(|&(e, until)| e == o.epoch && until > now)
                });
                if lapsed {
                    r.owner = None;
                }
            }
            if !t.alive(worker, now) {
                return Claimed::fenced(now);
            }
            let mut out = Vec::new();
            for (id, r) in &t.jobs {
                if r.state < State::Delivered
                    && r.owner.as_ref() == Some(worker)
                    && claim.recover.contains(&r.token)
                {
                    out.push(as_claimed(id, r));
                }
            }
            for (state, limit) in [
                (State::Waiting, claim.waiting),
                (State::Finished, claim.finished),
            ] {
                let mut due: Vec<(SystemTime, u64, String)> = t
                    .jobs
                    .iter()
                    .filter(|(_, r)| r.state == state && r.owner.is_none() && r.due_at <= now)
                    .map(|(id, r)| (r.due_at, r.seq, id.clone()))
                    .collect();
                due.sort();
                for (_, _, id) in due.into_iter().take(limit) {
                    let r = t.jobs.get_mut(&id).unwrap();
                    r.owner = Some(worker.clone());
                    r.token = claim.token;
                    if state == State::Finished {
                        r.deliveries += 1;
                    }
                    out.push(as_claimed(&id, r));
                }
            }
            Claimed::new(now, out)
        })
    }

    fn complete<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Finished>,
        _now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        self.with(move |t| {
            let mut out = Vec::new();
            for f in jobs {
                if let Some(r) = t.held(worker, &f.id) {
                    if r.state == State::Waiting {
                        r.state = State::Finished;
                        r.outcome = Some(f.outcome);
                        r.deliveries += 1;
                    }
                    out.push((f.id, r.deliveries));
                }
            }
            out
        })
    }

    fn save_status<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<StatusChange>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        self.with(move |t| {
            for c in jobs {
                if let Some(r) = t.held(worker, &c.id).filter(|r| r.state == State::Waiting) {
                    r.last = Some((c.status, now - c.age, c.polls));
                }
            }
        })
    }

    fn ack(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, ()> {
        self.with(move |t| {
            for id in ids {
                if let Some(r) = t.jobs.get_mut(&id).filter(|r| r.state == State::Finished) {
                    r.state = State::Delivered;
                    r.owner = None;
                    r.ended_at = now;
                }
            }
        })
    }

    fn retry<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Retry>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        self.with(move |t| {
            for j in jobs {
                let Some(r) = t.held(worker, &j.id) else {
                    continue;
                };
                match j.delay {
                    Some(_) if r.state != State::Finished => continue,
                    Some(d) => r.due_at = now + d,
                    None => {
                        r.state = State::Dead;
                        r.ended_at = now;
                    }
                }
                r.owner = None;
                r.error = Some(j.error);
            }
        })
    }

    fn release<'a>(&'a self, worker: &'a WorkerId, ids: Vec<String>) -> StoreFuture<'a, ()> {
        self.with(move |t| {
            for id in ids {
                if let Some(r) = t.held(worker, &id) {
                    r.owner = None;
                }
            }
        })
    }

    fn retry_dead(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, u64> {
        self.with(move |t| {
            let mut n = 0;
            for id in ids {
                if let Some(r) = t.jobs.get_mut(&id).filter(|r| r.state == State::Dead) {
                    r.state = if r.outcome.is_some() {
                        State::Finished
                    } else {
                        State::Waiting
                    };
                    r.deliveries = 0;
                    r.due_at = now;
                    n += 1;
                }
            }
            n
        })
    }

    fn prune(&self, retention: Duration, now: SystemTime) -> StoreFuture<'_, u64> {
        self.with(move |t| {
            let before = t.jobs.len();
            t.jobs.retain(|_, r| {
                r.state < State::Delivered
                    || now.duration_since(r.ended_at).unwrap_or_default() < retention
            });
            (before - t.jobs.len()) as u64
        })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        self.with(|t| {
            t.jobs
                .values()
                .filter(|r| r.state < State::Delivered)
                .count() as u64
        })
    }

    fn list(
        &self,
        listing: Listing,
        after: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<EndedJob>> {
        let state = match listing {
            Listing::Dead => State::Dead,
            _ => State::Delivered,
        };
        self.with(move |t| {
            let mut rows: Vec<(&String, &Row)> = t
                .jobs
                .iter()
                .filter(|(_, r)| r.state == state && after.is_none_or(|a| r.seq > a))
                .collect();
            rows.sort_by_key(|(_, r)| r.seq);
            rows.into_iter()
                .take(limit)
                .map(|(id, r)| {
                    EndedJob::new(r.seq, id.clone(), r.ended_at).with(
                        r.outcome.clone(),
                        r.error.clone(),
                        r.deliveries,
                    )
                })
                .collect()
        })
    }

    fn job(&self, id: &str) -> StoreFuture<'_, Option<StoredJob>> {
        self.with(|t| {
            t.jobs.get(id).map(|r| {
                let state = match r.state {
                    State::Waiting => JobState::Waiting,
                    State::Finished => JobState::Finished,
                    State::Delivered => JobState::Delivered,
                    State::Dead => JobState::Dead,
                };
                let ended = (r.state >= State::Delivered).then_some(r.ended_at);
                let mut job = StoredJob::new(id, r.meta.clone(), state, r.tracked_at, r.deadline)
                    .with_outcome(r.outcome.clone(), r.deliveries)
                    .with_end(r.error.clone(), ended);
                if let Some((s, at, polls)) = &r.last {
                    job = job.with_last_status(s.clone(), *at, *polls);
                }
                job
            })
        })
    }

    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>> {
        self.with(|t| t.learned.values().cloned().collect())
    }

    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()> {
        self.with(move |t| {
            for l in learned {
                t.learned.insert(l.job_type().to_owned(), l);
            }
        })
    }
}

#[tokio::main]
async fn main() {
    goenhance_jobs::track::testing::conformance(|| async { MapStore::default() }).await;
    println!("the map store keeps the tracking store contract");
}
