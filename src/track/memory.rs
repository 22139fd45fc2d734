//! [`MemoryStore`]: tracked jobs in this process's memory, for tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::clock::TokioWall;
use super::store::{
    dur_ms, from_ms, to_ms, Claim, Claimed, ClaimedJob, EndedJob, Finished, JobState, Learned,
    Listing, NewJob, Retry, StatusChange, StoreFuture, StoredJob, TrackStore, WorkerId,
};
use crate::error::Error;

const WAITING: u8 = 0;
const FINISHED: u8 = 1;
const DELIVERED: u8 = 2;
const DEAD: u8 = 3;

#[derive(Debug, Clone)]
struct Row {
    seq: u64,
    meta: String,
    tracked_at: i64,
    deadline: i64,
    due_at: i64,
    state: u8,
    outcome: Option<String>,
    deliveries: u32,
    owner: Option<(String, i64)>,
    token: u64,
    last: Option<(String, i64, u32)>,
    error: Option<String>,
    ended_at: i64,
}

#[derive(Debug, Default)]
struct State {
    rows: BTreeMap<String, Row>,
    /// Name → (epoch, alive until).
    workers: BTreeMap<String, (i64, i64)>,
    learned: BTreeMap<String, Learned>,
    seq: u64,
    down: bool,
}

impl State {
    fn alive(&self, w: &WorkerId, now: i64) -> bool {
        self.workers
            .get(&w.name)
            .is_some_and(|&(epoch, until)| epoch == w.epoch && until > now)
    }

    fn holds(&self, w: &WorkerId, r: &Row) -> bool {
        r.owner
            .as_ref()
            .is_some_and(|(n, e)| *n == w.name && *e == w.epoch)
    }
}

/// Tracked jobs in memory: the semantics of a durable store, without the
/// durability. Clones share the same jobs, so two trackers on clones act as
/// two workers of a fleet. For tests of code that tracks jobs.
///
/// Its clock follows tokio's ([`TrackStore::now`]): the system's time when
/// the store was made (in whole milliseconds, as it keeps times) plus
/// tokio's time since, so that on a paused clock (`tokio::time::advance`)
/// leases and deadlines move with the test, and a time stored and read
/// back is the same instant again. Clones share that clock.
///
/// ```
/// use goenhance_jobs::track::{MemoryStore, TrackStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), goenhance_jobs::Error> {
/// let store = MemoryStore::new();
/// assert_eq!(store.pending().await?, 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    statements: Arc<AtomicU64>,
    clock: TokioWall,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore {
            state: Arc::default(),
            statements: Arc::default(),
            clock: TokioWall::new(),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes every operation fail (as a database that went away) until
    /// called again with `false`: for tests of how trackers ride out an
    /// outage.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Operations served so far (each counts as one statement).
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// How many deliveries of a job were started; `None` for an unknown id.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn deliveries(&self, id: &str) -> Option<u32> {
        self.lock().rows.get(id).map(|r| r.deliveries)
    }

    /// Whether a job's delivery was recorded.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn is_delivered(&self, id: &str) -> bool {
        self.lock()
            .rows
            .get(id)
            .is_some_and(|r| r.state == DELIVERED)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> T + Send,
    ) -> StoreFuture<'_, T> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        let result = {
            let mut state = self.lock();
            if state.down {
                Err(Error::store("memory store is down"))
            } else {
                Ok(f(&mut state))
            }
        };
        Box::pin(std::future::ready(result))
    }
}

fn claimed(id: &str, r: &Row) -> ClaimedJob {
    let mut job = ClaimedJob::new(
        id,
        r.meta.clone(),
        from_ms(r.tracked_at),
        from_ms(r.deadline),
    )
    .with_deliveries(r.deliveries);
    if let Some(o) = &r.outcome {
        job = job.with_outcome(o.clone(), r.deliveries);
    }
    if let Some((s, at, polls)) = &r.last {
        job = job.with_last_status(s.clone(), from_ms(*at), *polls);
    }
    job
}

impl TrackStore for MemoryStore {
    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn location(&self) -> String {
        "memory".to_owned()
    }

    fn insert(&self, jobs: Vec<NewJob>, now: SystemTime) -> StoreFuture<'_, ()> {
        let now = to_ms(now);
        self.with(move |s| {
            for job in jobs {
                if s.rows.contains_key(&job.id) {
                    continue;
                }
                s.seq += 1;
                let row = Row {
                    seq: s.seq,
                    meta: job.meta,
                    tracked_at: now,
                    deadline: now.saturating_add(dur_ms(job.timeout)),
                    due_at: now,
                    state: WAITING,
                    outcome: None,
                    deliveries: 0,
                    owner: None,
                    token: 0,
                    last: None,
                    error: None,
                    ended_at: 0,
                };
                s.rows.insert(job.id, row);
            }
        })
    }

    fn register<'a>(
        &'a self,
        name: &'a str,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, WorkerId> {
        let now = to_ms(now);
        self.with(move |s| {
            let epoch = s.workers.get(name).map_or(1, |w| w.0 + 1);
            s.workers
                .insert(name.to_owned(), (epoch, now.saturating_add(dur_ms(lease))));
            for r in s.rows.values_mut() {
                if r.state < DELIVERED && r.owner.as_ref().is_some_and(|(n, _)| n == name) {
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
        let now = to_ms(now);
        self.with(move |s| {
            if !s.alive(worker, now) {
                return false;
            }
            if let Some(w) = s.workers.get_mut(&worker.name) {
                w.1 = now.saturating_add(dur_ms(lease));
            }
            true
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a WorkerId,
        claim: Claim,
        now: SystemTime,
    ) -> StoreFuture<'a, Claimed> {
        let at = now;
        let now = to_ms(now);
        self.with(move |s| {
            // Free the jobs of workers whose heartbeat lapsed, or that
            // point at an epoch that is not the name's latest.
            let workers = s.workers.clone();
            for r in s.rows.values_mut() {
                if r.state >= DELIVERED {
                    continue;
                }
                if let Some((n, e)) = &r.owner {
                    let live = workers
                        .get(n)
                        .is_some_and(|&(epoch, until)| epoch == *e && until > now);
                    if !live {
                        r.owner = None;
                    }
                }
            }
            if !s.alive(worker, now) {
                return Claimed::fenced(at);
            }
            let mut out: Vec<String> = s
                .rows
                .iter()
                .filter(|(_, r)| {
                    s.holds(worker, r) && r.state < DELIVERED && claim.recover.contains(&r.token)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for (state, limit) in [(WAITING, claim.waiting), (FINISHED, claim.finished)] {
                let mut due: Vec<(i64, u64, String)> = s
                    .rows
                    .iter()
                    .filter(|(_, r)| r.state == state && r.owner.is_none() && r.due_at <= now)
                    .map(|(id, r)| (r.due_at, r.seq, id.clone()))
                    .collect();
                due.sort();
                due.truncate(limit);
                for (_, _, id) in due {
                    let r = s.rows.get_mut(&id).expect("row listed above");
                    if r.state == FINISHED {
                        r.deliveries += 1;
                    }
                    out.push(id);
                }
            }
            let jobs = out
                .into_iter()
                .map(|id| {
                    let r = s.rows.get_mut(&id).expect("row listed above");
                    if r.owner.is_none() {
                        r.owner = Some((worker.name.clone(), worker.epoch));
                        r.token = claim.token;
                    }
                    claimed(&id, r)
                })
                .collect();
            Claimed::new(at, jobs)
        })
    }

    fn complete<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Finished>,
        now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        let now = to_ms(now);
        self.with(move |s| {
            let mut held = Vec::new();
            for f in jobs {
                let holds = s.rows.get(&f.id).is_some_and(|r| s.holds(worker, r));
                let Some(r) = s.rows.get_mut(&f.id).filter(|_| holds) else {
                    continue;
                };
                match r.state {
                    WAITING => {
                        r.state = FINISHED;
                        r.outcome = Some(f.outcome);
                        r.deliveries += 1;
                        r.ended_at = now;
                        held.push((f.id, r.deliveries));
                    }
                    FINISHED => held.push((f.id, r.deliveries)),
                    _ => {}
                }
            }
            held
        })
    }

    fn save_status<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<StatusChange>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        let now = to_ms(now);
        self.with(move |s| {
            for c in jobs {
                let holds = s.rows.get(&c.id).is_some_and(|r| s.holds(worker, r));
                if let Some(r) = s
                    .rows
                    .get_mut(&c.id)
                    .filter(|r| holds && r.state == WAITING)
                {
                    r.last = Some((c.status, now.saturating_sub(dur_ms(c.age)), c.polls));
                }
            }
        })
    }

    fn ack(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, ()> {
        let now = to_ms(now);
        self.with(move |s| {
            for id in ids {
                if let Some(r) = s.rows.get_mut(&id).filter(|r| r.state == FINISHED) {
                    r.state = DELIVERED;
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
        let now = to_ms(now);
        self.with(move |s| {
            for j in jobs {
                let holds = s.rows.get(&j.id).is_some_and(|r| s.holds(worker, r));
                let Some(r) = s
                    .rows
                    .get_mut(&j.id)
                    .filter(|r| holds && r.state < DELIVERED)
                else {
                    continue;
                };
                r.owner = None;
                r.error = Some(j.error);
                match j.delay {
                    Some(d) if r.state == FINISHED => r.due_at = now.saturating_add(dur_ms(d)),
                    Some(_) => {}
                    None => {
                        r.state = DEAD;
                        r.ended_at = now;
                    }
                }
            }
        })
    }

    fn release<'a>(&'a self, worker: &'a WorkerId, ids: Vec<String>) -> StoreFuture<'a, ()> {
        self.with(move |s| {
            for id in ids {
                let holds = s.rows.get(&id).is_some_and(|r| s.holds(worker, r));
                if let Some(r) = s.rows.get_mut(&id).filter(|r| holds && r.state < DELIVERED) {
                    r.owner = None;
                }
            }
        })
    }

    fn retry_dead(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, u64> {
        let now = to_ms(now);
        self.with(move |s| {
            let mut n = 0;
            for id in ids {
                if let Some(r) = s.rows.get_mut(&id).filter(|r| r.state == DEAD) {
                    r.state = if r.outcome.is_some() {
                        FINISHED
                    } else {
                        WAITING
                    };
                    r.deliveries = 0;
                    r.due_at = now;
                    r.owner = None;
                    n += 1;
                }
            }
            n
        })
    }

    fn prune(&self, retention: Duration, now: SystemTime) -> StoreFuture<'_, u64> {
        let before = to_ms(now).saturating_sub(dur_ms(retention));
        self.with(move |s| {
            let n = s.rows.len();
            s.rows
                .retain(|_, r| r.state < DELIVERED || r.ended_at > before);
            (n - s.rows.len()) as u64
        })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        self.with(|s| s.rows.values().filter(|r| r.state < DELIVERED).count() as u64)
    }

    fn list(
        &self,
        listing: Listing,
        after: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<EndedJob>> {
        let state = match listing {
            Listing::Delivered => DELIVERED,
            Listing::Dead => DEAD,
        };
        self.with(move |s| {
            let mut rows: Vec<_> = s
                .rows
                .iter()
                .filter(|(_, r)| r.state == state && after.is_none_or(|a| r.seq > a))
                .collect();
            rows.sort_by_key(|(_, r)| r.seq);
            rows.into_iter()
                .take(limit)
                .map(|(id, r)| {
                    EndedJob::new(r.seq, id.clone(), from_ms(r.ended_at)).with(
                        r.outcome.clone(),
                        r.error.clone(),
                        r.deliveries,
                    )
                })
                .collect()
        })
    }

    fn job(&self, id: &str) -> StoreFuture<'_, Option<StoredJob>> {
        let id = id.to_owned();
        self.with(move |s| {
            s.rows.get(&id).map(|r| {
                let mut job = StoredJob::new(
                    id.clone(),
                    r.meta.clone(),
                    JobState::from_code(i64::from(r.state)),
                    from_ms(r.tracked_at),
                    from_ms(r.deadline),
                )
                .with_outcome(r.outcome.clone(), r.deliveries)
                .with_end(
                    r.error.clone(),
                    (r.state >= DELIVERED).then(|| from_ms(r.ended_at)),
                );
                if let Some((st, at, polls)) = &r.last {
                    job = job.with_last_status(st.clone(), from_ms(*at), *polls);
                }
                job
            })
        })
    }

    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>> {
        self.with(|s| s.learned.values().cloned().collect())
    }

    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()> {
        self.with(move |s| {
            for l in learned {
                s.learned.insert(l.job_type().to_owned(), l);
            }
        })
    }
}
