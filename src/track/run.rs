//! One [`Tracker::run`](super::Tracker::run): the loop that claims jobs,
//! follows their waits and handlers, and tells the store in batches.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{AbortHandle, BoxFuture};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::fence::Heart;
use super::handlers::{spawn_handler, HandlerEnd};
use super::store::{Finished, Learned, Retry, StatusChange};
use super::tracker::Inner;
use super::waits::WaitFuture;
use super::{outcome, Completion, MAX_STORE_BACKOFF};
use crate::error::{BoxError, Error, Kind};
use crate::model::{JobDetail, JobStatus};
use crate::query::JobQuery;
use crate::telemetry::{self, FenceReason, HeldGauge};

/// A store operation of a run that failed: which, and how.
pub(crate) struct StoreFailure {
    pub(super) operation: &'static str,
    pub(super) error: Error,
}

/// Names the operation of a failed store call.
fn failed<T>(operation: &'static str, r: Result<T, Error>) -> Result<T, StoreFailure> {
    r.map_err(|error| StoreFailure { operation, error })
}

/// A job the run holds.
pub(crate) struct Held {
    pub(super) meta: Arc<Value>,
    /// Set while it is being waited on.
    pub(super) abort: Option<AbortHandle>,
}

/// The state of one [`Tracker::run`](super::Tracker::run).
pub(crate) struct Run<F> {
    pub(super) inner: Arc<Inner>,
    handler: Arc<F>,
    pub(super) heart: Heart,
    pub(super) held: HashMap<String, Held>,
    pub(super) waits: FuturesUnordered<WaitFuture>,
    /// Waits that ended, their outcome not yet stored.
    pub(super) finished: Vec<(String, Result<JobDetail, Error>)>,
    /// Stored outcomes whose handler has not started.
    pub(super) ready: VecDeque<Completion>,
    pub(super) handlers: JoinSet<HandlerEnd>,
    pub(super) to_ack: Vec<String>,
    pub(super) to_retry: Vec<Retry>,
    /// Jobs the run stopped holding, to free in the store.
    pub(super) to_release: Vec<String>,
    pub(super) claim_due: bool,
    /// How many of the first in `ready` were there at the last heartbeat.
    waited: usize,
    /// The last claim was cut short by this run's room, not by what the
    /// store had due: by the jobs it may hold, by its free handler slots.
    /// It claims again as soon as half of what was short is free, not at
    /// the next claim interval.
    pub(super) room_short: (bool, bool),
    pub(super) claim_token: u64,
    /// Claims whose answer was lost: their jobs are asked for again.
    pub(super) recover: Vec<u64>,
    next_claim: Instant,
    next_prune: Instant,
    store_pause: Option<Instant>,
    store_failures: u32,
    learned_saved: Vec<Learned>,
    /// Status changes of waiting jobs, from the hub; saved with heartbeats.
    pub(super) progress_tx: tokio::sync::mpsc::UnboundedSender<(JobQuery, JobStatus, u32)>,
    progress_rx: tokio::sync::mpsc::UnboundedReceiver<(JobQuery, JobStatus, u32)>,
    changes: HashMap<String, (String, Instant, u32)>,
    /// Resolves when the run is asked to stop (`run_until`).
    pub(super) stop: Option<BoxFuture<'static, ()>>,
    /// Set once asked to stop: when running handlers are cancelled.
    pub(super) stopping: Option<Instant>,
    /// Where the store is, for logs.
    pub(super) store_at: String,
    held_gauge: HeldGauge,
}

impl<F, Fut> Run<F>
where
    F: Fn(Completion) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    pub(crate) fn new(
        inner: Arc<Inner>,
        handler: Arc<F>,
        stop: Option<BoxFuture<'static, ()>>,
    ) -> Self {
        let now = Instant::now();
        let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let store_at = inner.store.location();
        Run {
            progress_tx,
            progress_rx,
            changes: HashMap::new(),
            heart: Heart::new(inner.lease),
            next_claim: now,
            next_prune: now,
            inner,
            handler,
            held: HashMap::new(),
            waits: FuturesUnordered::new(),
            finished: Vec::new(),
            ready: VecDeque::new(),
            handlers: JoinSet::new(),
            to_ack: Vec::new(),
            to_retry: Vec::new(),
            to_release: Vec::new(),
            claim_due: true,
            waited: 0,
            room_short: (false, false),
            claim_token: u64::from(fastrand::u32(..)) << 20,
            recover: Vec::new(),
            store_pause: None,
            store_failures: 0,
            learned_saved: Vec::new(),
            stop,
            stopping: None,
            store_at,
            held_gauge: HeldGauge::new(),
        }
    }

    pub(crate) async fn go(mut self) -> Result<(), Error> {
        self.load_learned().await?;
        loop {
            if self
                .stopping
                .is_some_and(|end| self.handlers.is_empty() || Instant::now() >= end)
            {
                self.finish_stop().await;
                return Ok(());
            }
            if self.heart.lapsed(Instant::now()) {
                self.fence_for(FenceReason::Lapsed, "no live heartbeat");
            }
            let now = Instant::now();
            if self.store_pause.is_none_or(|at| at <= now) {
                self.store_pause = None;
                let fence_at = self.heart.fence_at();
                let pass = tokio::select! {
                    r = self.store_work(now) => Some(r),
                    () = sleep_until(fence_at) => None,
                };
                match pass {
                    None => self.fence_for(
                        FenceReason::Unanswered,
                        "the store did not answer before the lease ran out",
                    ),
                    Some(Ok(())) => self.store_failures = 0,
                    Some(Err(f)) if f.error.kind() == Kind::StoreSchema => return Err(f.error),
                    Some(Err(f)) => {
                        self.store_failures += 1;
                        let pause = (Duration::from_millis(50)
                            * 2u32.pow(self.store_failures.min(7)))
                        .min(MAX_STORE_BACKOFF)
                        .min(self.inner.lease / 6);
                        tracing::warn!(
                            store = %self.store_at,
                            operation = f.operation,
                            error = %f.error,
                            retry_in_ms = pause.as_millis() as u64,
                            "tracking store failed; retrying"
                        );
                        self.store_pause = Some(Instant::now() + pause);
                    }
                }
            }
            if self.heart.lapsed(Instant::now()) {
                self.fence_for(FenceReason::Lapsed, "no live heartbeat");
            }
            self.start_handlers();
            if self.half_the_short_room_is_free() {
                self.room_short = (false, false);
                self.claim_due = true;
            }
            let wake_at = match self.store_pause {
                Some(at) => at,
                None if !self.finished.is_empty()
                    || !self.to_ack.is_empty()
                    || !self.to_retry.is_empty()
                    || !self.to_release.is_empty()
                    || (self.claim_due && self.stopping.is_none())
                    || !self.heart.registered() =>
                {
                    Instant::now()
                }
                // (No claims while stopping.)
                None if self.stopping.is_some() => self.heart.next_beat().min(self.next_prune),
                None => self
                    .heart
                    .next_beat()
                    .min(self.next_claim)
                    .min(self.next_prune),
            };
            let wake_at = wake_at.min(self.heart.fence_at());
            let wake_at = self.stopping.map_or(wake_at, |end| wake_at.min(end));
            let stop = &mut self.stop;
            let stop_asked = async {
                match stop {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop_asked, if self.stopping.is_none() => self.begin_stop(),
                Some((id, answer)) = self.waits.next(), if !self.waits.is_empty() => {
                    self.on_wait(id, answer);
                }
                Some(joined) = self.handlers.join_next(), if !self.handlers.is_empty() => {
                    if let Ok(end) = joined {
                        self.on_handler_end(end);
                    }
                }
                Some((query, status, polls)) = self.progress_rx.recv() => {
                    self.on_change(query, status, polls);
                }
                () = self.inner.wake.notified() => self.claim_due = true,
                () = sleep_until(wake_at) => {}
            }
            self.take_in_ready();
            self.held_gauge.set(self.held.len());
        }
    }

    /// Whether half of the room the last claim was short of is free.
    fn half_the_short_room_is_free(&self) -> bool {
        let (jobs, handlers) = self.room_short;
        let busy = self.handlers.len() + self.ready.len();
        (jobs && self.held.len() <= self.inner.max_jobs / 2)
            || (handlers && busy <= self.inner.max_handlers / 2)
    }

    /// Takes in whatever else is ready, so the store sees it in one batch
    /// (outside tokio's cooperative budget, which would cut a batch at 128
    /// answers).
    fn take_in_ready(&mut self) {
        let waits = &mut self.waits;
        let ready = tokio::task::unconstrained(async move {
            let mut ready = Vec::new();
            while let Some(Some(item)) = waits.next().now_or_never() {
                ready.push(item);
            }
            ready
        })
        .now_or_never()
        .unwrap_or_default();
        for (id, answer) in ready {
            self.on_wait(id, answer);
        }
        while let Some(joined) = self.handlers.try_join_next() {
            if let Ok(end) = joined {
                self.on_handler_end(end);
            }
        }
        while let Ok((query, status, polls)) = self.progress_rx.try_recv() {
            self.on_change(query, status, polls);
        }
    }

    /// The store refused this worker: see [`fence_for`](Self::fence_for).
    pub(super) fn fence(&mut self, why: &str) {
        self.fence_for(FenceReason::Refused, why);
    }

    /// This worker may hold nothing any more: stop polling, cancel the
    /// handlers, forget what it held, and register again.
    pub(super) fn fence_for(&mut self, reason: FenceReason, why: &str) {
        if !self.heart.registered() {
            return;
        }
        tracing::warn!(
            worker = %self.inner.worker,
            store = %self.store_at,
            reason = why,
            held = self.held.len(),
            "tracking worker fenced; stopping its work and registering again"
        );
        telemetry::fenced(reason);
        for (_, h) in self.held.drain() {
            if let Some(a) = h.abort {
                a.abort();
            }
        }
        self.handlers.abort_all();
        self.finished.clear();
        self.ready.clear();
        self.to_retry.clear();
        self.to_release.clear();
        self.recover.clear();
        self.changes.clear();
        self.heart.fenced();
        self.claim_due = true;
    }

    fn on_change(&mut self, query: JobQuery, status: JobStatus, polls: u32) {
        let id = query.img_uuid();
        if self.held.contains_key(id) {
            self.changes.insert(
                id.to_owned(),
                (status.as_str().to_owned(), Instant::now(), polls),
            );
        }
    }

    async fn load_learned(&mut self) -> Result<(), Error> {
        // A store that is down now does not stop the run: what was learned
        // is an optimisation.
        let inner = Arc::clone(&self.inner);
        match inner.call("load_learned", inner.store.load_learned()).await {
            Ok(learned) => {
                let rows: Vec<_> = learned.iter().map(Learned::to_row).collect();
                self.inner.client.poll_policy().learner.restore(&rows);
                self.learned_saved = learned;
                Ok(())
            }
            Err(e) if e.kind() == Kind::StoreSchema => Err(e),
            Err(e) => {
                tracing::warn!(
                    store = %self.store_at,
                    operation = "load_learned",
                    error = %e,
                    "tracking store failed; learned durations not loaded"
                );
                Ok(())
            }
        }
    }

    fn on_wait(&mut self, id: String, answer: Option<Result<JobDetail, Error>>) {
        match answer {
            // The scheduler stopped (its runtime is going away): not an
            // end of the job to store. Free it for another worker.
            Some(Err(e)) if e.is_closed() && self.held.remove(&id).is_some() => {
                self.to_release.push(id);
            }
            Some(Err(e)) if e.is_closed() => {}
            Some(answer) => {
                if let Some(h) = self.held.get_mut(&id) {
                    h.abort = None;
                    self.finished.push((id, answer));
                }
            }
            // Aborted: the run was fenced.
            None => {}
        }
    }

    /// Everything the store has to hear, in batches. The heartbeat comes
    /// first and nothing else is tried when it fails; a later step that
    /// fails does not stop the others. Returns the first error; what was
    /// not written stays queued.
    pub(super) async fn store_work(&mut self, now: Instant) -> Result<(), StoreFailure> {
        let inner = Arc::clone(&self.inner);
        if !self.heart.registered() || now >= self.heart.next_beat() {
            let saved = self.save_status().await;
            let op = if self.heart.registered() {
                "heartbeat"
            } else {
                "register"
            };
            match failed(op, self.heart.beat(&inner).await)? {
                true => self.hand_over_surplus(),
                false => {
                    self.fence("the store says another run holds this worker's jobs");
                    failed("register", self.heart.register(&inner).await)?;
                }
            }
            saved?;
        }
        let Some(worker) = self.heart.worker().cloned() else {
            return Ok(());
        };
        let mut first: Option<StoreFailure> = None;
        let mut note = |operation: &'static str, r: Result<(), Error>| {
            if let Err(e) = failed(operation, r) {
                first.get_or_insert(e);
            }
        };
        if !self.finished.is_empty() {
            let jobs: Vec<Finished> = self
                .finished
                .iter()
                .map(|(id, answer)| Finished::new(id.clone(), outcome::encode(answer)))
                .collect();
            // Deliveries to record (handlers that returned Ok) go with it.
            let acks = std::mem::take(&mut self.to_ack);
            let r = inner
                .call(
                    "complete",
                    inner
                        .store
                        .complete_and_ack(&worker, jobs, acks.clone(), inner.now()),
                )
                .await;
            match r {
                Ok(held) => {
                    self.on_completed(held);
                    for id in acks {
                        self.held.remove(&id);
                    }
                }
                Err(e) => {
                    self.to_ack = acks;
                    note("complete", Err(e));
                }
            }
        }
        if !self.to_ack.is_empty() {
            let r = inner
                .call("ack", inner.store.ack(self.to_ack.clone(), inner.now()))
                .await;
            note(
                "ack",
                r.map(|()| {
                    for id in std::mem::take(&mut self.to_ack) {
                        self.held.remove(&id);
                    }
                }),
            );
        }
        if !self.to_retry.is_empty() {
            let r = inner
                .call(
                    "retry",
                    inner
                        .store
                        .retry(&worker, self.to_retry.clone(), inner.now()),
                )
                .await;
            note(
                "retry",
                r.map(|()| {
                    for j in std::mem::take(&mut self.to_retry) {
                        self.held.remove(&j.id);
                    }
                }),
            );
        }
        if !self.to_release.is_empty() {
            let r = inner
                .call(
                    "release",
                    inner.store.release(&worker, self.to_release.clone()),
                )
                .await;
            note("release", r.map(|()| self.to_release.clear()));
        }
        if self.stopping.is_none() && (self.claim_due || now >= self.next_claim) {
            note("claim", self.claim(&worker).await);
            self.next_claim = now + inner.claim_interval;
        }
        if let Some(keep) = inner.retention.filter(|_| now >= self.next_prune) {
            let r = inner
                .call("prune", inner.store.prune(keep, inner.now()))
                .await;
            note(
                "prune",
                r.map(|n| {
                    if n > 0 {
                        tracing::debug!(pruned = n, "tracking store pruned ended jobs");
                    }
                }),
            );
            let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
            self.next_prune = now + every;
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stored outcomes that waited a whole heartbeat for a handler go back
    /// to the store, for a worker with free handlers: one worker never
    /// holds a queue that the fleet could deliver now.
    fn hand_over_surplus(&mut self) {
        let waited = self.waited.min(self.ready.len());
        let mut last_chance = Vec::new();
        for done in self.ready.drain(..waited) {
            // Claimed again, a job counts one more delivery: never the one
            // past the limit, which would make it dead with its handler
            // never started. Such a job stays for this worker's handlers.
            if done.deliveries >= self.inner.max_deliveries {
                last_chance.push(done);
                continue;
            }
            self.held.remove(done.query.img_uuid());
            self.to_release.push(done.query.img_uuid().to_owned());
        }
        for done in last_chance.into_iter().rev() {
            self.ready.push_front(done);
        }
        self.waited = self.ready.len();
    }

    /// Status changes and what the schedule learned, with each heartbeat.
    async fn save_status(&mut self) -> Result<(), StoreFailure> {
        let inner = Arc::clone(&self.inner);
        let Some(worker) = self.heart.worker().cloned() else {
            return Ok(());
        };
        if !self.changes.is_empty() {
            let at = Instant::now();
            let held = &self.held;
            let changes: Vec<StatusChange> = self
                .changes
                .iter()
                .filter(|(id, _)| held.get(*id).is_some_and(|h| h.abort.is_some()))
                .map(|(id, (status, seen, polls))| {
                    StatusChange::new(id.clone(), status.clone(), at - *seen, *polls)
                })
                .collect();
            let r = inner
                .call(
                    "save_status",
                    inner.store.save_status(&worker, changes, inner.now()),
                )
                .await;
            failed("save_status", r)?;
            self.changes.clear();
        }
        let snapshot: Vec<Learned> = inner
            .client
            .poll_policy()
            .learner
            .snapshot()
            .into_iter()
            .map(Learned::from_row)
            .filter(|l| !self.learned_saved.contains(l))
            .collect();
        if !snapshot.is_empty() {
            let r = inner
                .call("save_learned", inner.store.save_learned(snapshot.clone()))
                .await;
            failed("save_learned", r)?;
            for l in snapshot {
                self.learned_saved.retain(|s| s.job_type() != l.job_type());
                self.learned_saved.push(l);
            }
        }
        Ok(())
    }

    fn on_completed(&mut self, held: Vec<(String, u32)>) {
        let held: HashMap<String, u32> = held.into_iter().collect();
        for (id, answer) in std::mem::take(&mut self.finished) {
            match held.get(&id) {
                Some(&deliveries) => {
                    let meta = self.held.get(&id).map(|h| (*h.meta).clone());
                    self.ready.push_back(Completion {
                        query: JobQuery::from_shared_id(Arc::from(id.as_str())),
                        meta: meta.unwrap_or(Value::Null),
                        detail: answer,
                        deliveries,
                    });
                }
                None => {
                    // Another worker's now: nothing of it to free.
                    self.held.remove(&id);
                }
            }
        }
    }

    fn start_handlers(&mut self) {
        if self.stopping.is_some() || !self.heart.live(Instant::now()) {
            return;
        }
        while self.handlers.len() < self.inner.max_handlers {
            let Some(done) = self.ready.pop_front() else {
                break;
            };
            self.waited = self.waited.saturating_sub(1);
            if done.deliveries > self.inner.max_deliveries {
                self.bury_unended(done);
                continue;
            }
            spawn_handler(
                &mut self.handlers,
                Arc::clone(&self.handler),
                done,
                self.inner.handler_timeout,
            );
        }
    }
}
