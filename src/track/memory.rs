//! [`MemoryStore`]: tracked jobs in this process's memory, for tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::store::{ClaimedJob, Finished, Learned, NewJob, StatusChange, StoreFuture, TrackStore};
use crate::error::Error;

const WAITING: u8 = 0;
const FINISHED: u8 = 1;
const DELIVERED: u8 = 2;

#[derive(Debug, Clone)]
struct Row {
    job: NewJob,
    due_at: i64,
    state: u8,
    outcome: Option<String>,
    deliveries: u32,
    lease_owner: Option<String>,
    lease_until: i64,
    last: Option<(String, i64, u32)>,
}

#[derive(Debug, Default)]
struct State {
    rows: BTreeMap<String, Row>,
    learned: BTreeMap<String, Learned>,
    down: bool,
}

/// Tracked jobs in memory: the semantics of a durable store, without the
/// durability. Clones share the same jobs, so two trackers on clones act as
/// two workers of a fleet. For tests of code that tracks jobs.
///
/// ```
/// use goenhance_jobs::track::{MemoryStore, TrackStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), goenhance_jobs::Error> {
/// let store = MemoryStore::new();
/// assert_eq!(store.pending().await?, 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    statements: Arc<AtomicU64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes every operation fail (as a database that went away) until
    /// called again with `false`: for tests of how trackers ride out an
    /// outage.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Operations served so far (each counts as one statement).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// How many deliveries of a job were started; `None` for an unknown id.
    pub fn deliveries(&self, id: &str) -> Option<u32> {
        self.lock().rows.get(id).map(|r| r.deliveries)
    }

    /// Whether a job's delivery was recorded.
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

impl TrackStore for MemoryStore {
    fn insert(&self, jobs: Vec<NewJob>) -> StoreFuture<'_, ()> {
        self.with(move |s| {
            for job in jobs {
                s.rows.entry(job.id.clone()).or_insert(Row {
                    due_at: job.tracked_at,
                    job,
                    state: WAITING,
                    outcome: None,
                    deliveries: 0,
                    lease_owner: None,
                    lease_until: 0,
                    last: None,
                });
            }
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        now: i64,
        lease_until: i64,
        limit: usize,
        take_own: bool,
    ) -> StoreFuture<'a, Vec<ClaimedJob>> {
        self.with(move |s| {
            let mut due: Vec<(i64, String)> = s
                .rows
                .iter()
                .filter(|(_, r)| {
                    r.state != DELIVERED
                        && (r.due_at <= now
                            || (take_own && r.lease_owner.as_deref() == Some(worker)))
                })
                .map(|(id, r)| (r.due_at, id.clone()))
                .collect();
            due.sort();
            due.truncate(limit);
            due.into_iter()
                .map(|(_, id)| {
                    let r = s.rows.get_mut(&id).expect("row listed above");
                    r.lease_owner = Some(worker.to_owned());
                    r.lease_until = lease_until;
                    r.due_at = lease_until;
                    if r.state == FINISHED {
                        r.deliveries += 1;
                    }
                    ClaimedJob {
                        id,
                        meta: r.job.meta.clone(),
                        tracked_at: r.job.tracked_at,
                        deadline: r.job.deadline,
                        outcome: r.outcome.clone(),
                        deliveries: r.deliveries,
                        last_status: r.last.as_ref().map(|l| l.0.clone()),
                        last_change: r.last.as_ref().map(|l| l.1),
                        last_polls: r.last.as_ref().map(|l| l.2),
                    }
                })
                .collect()
        })
    }

    fn renew<'a>(&'a self, worker: &'a str, lease_until: i64) -> StoreFuture<'a, Vec<String>> {
        self.with(move |s| {
            s.rows
                .iter_mut()
                .filter(|(_, r)| r.state != DELIVERED && r.lease_owner.as_deref() == Some(worker))
                .map(|(id, r)| {
                    r.lease_until = lease_until;
                    r.due_at = lease_until;
                    id.clone()
                })
                .collect()
        })
    }

    fn complete<'a>(
        &'a self,
        worker: &'a str,
        _now: i64,
        jobs: Vec<Finished>,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        self.with(move |s| {
            let mut held = Vec::new();
            for f in jobs {
                if let Some(r) = s.rows.get_mut(&f.id) {
                    if r.state == WAITING && r.lease_owner.as_deref() == Some(worker) {
                        r.state = FINISHED;
                        r.outcome = Some(f.outcome);
                        r.deliveries += 1;
                        held.push((f.id, r.deliveries));
                    }
                }
            }
            held
        })
    }

    fn save_status<'a>(&'a self, worker: &'a str, jobs: Vec<StatusChange>) -> StoreFuture<'a, ()> {
        self.with(move |s| {
            for c in jobs {
                if let Some(r) = s.rows.get_mut(&c.id) {
                    if r.state == WAITING && r.lease_owner.as_deref() == Some(worker) {
                        r.last = Some((c.status, c.at, c.polls));
                    }
                }
            }
        })
    }

    fn ack(&self, ids: Vec<String>, _now: i64) -> StoreFuture<'_, ()> {
        self.with(move |s| {
            for id in ids {
                if let Some(r) = s.rows.get_mut(&id) {
                    if r.state == FINISHED {
                        r.state = DELIVERED;
                        r.lease_owner = None;
                    }
                }
            }
        })
    }

    fn retry<'a>(&'a self, worker: &'a str, jobs: Vec<(String, i64)>) -> StoreFuture<'a, ()> {
        self.with(move |s| {
            for (id, at) in jobs {
                if let Some(r) = s.rows.get_mut(&id) {
                    if r.state == FINISHED && r.lease_owner.as_deref() == Some(worker) {
                        r.due_at = at;
                        r.lease_owner = None;
                        r.lease_until = 0;
                    }
                }
            }
        })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        self.with(|s| s.rows.values().filter(|r| r.state != DELIVERED).count() as u64)
    }

    fn delivered(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        self.with(|s| {
            let mut rows: Vec<_> = s
                .rows
                .iter()
                .filter(|(_, r)| r.state == DELIVERED)
                .map(|(id, r)| {
                    (
                        r.job.tracked_at,
                        id.clone(),
                        r.outcome.clone().unwrap_or_default(),
                    )
                })
                .collect();
            rows.sort();
            rows.into_iter().map(|(_, id, o)| (id, o)).collect()
        })
    }

    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>> {
        self.with(|s| s.learned.values().cloned().collect())
    }

    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()> {
        self.with(move |s| {
            for l in learned {
                s.learned.insert(l.job_type.clone(), l);
            }
        })
    }
}
