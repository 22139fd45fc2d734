//! One [`Tracker::run`](super::Tracker::run): claims, waits, completions,
//! handlers and the store's batches.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::clock::ms;
use super::outcome;
use super::store::{Finished, Learned, StatusChange};
use super::tracker::Inner;
use super::{Completion, CLAIM_BATCH, MAX_STORE_BACKOFF};
use crate::error::{BoxError, Error, Kind};
use crate::model::{JobDetail, JobStatus};
use crate::query::JobQuery;

type Handler<F> = Arc<F>;
type WaitFuture =
    futures_util::future::BoxFuture<'static, (String, Option<Result<JobDetail, Error>>)>;

/// A job the run holds.
struct Held {
    meta: Arc<Value>,
    /// Set while it is being waited on.
    abort: Option<AbortHandle>,
}

/// The state of one [`Tracker::run`].
pub(crate) struct Run<F> {
    inner: Arc<Inner>,
    handler: Handler<F>,
    held: HashMap<String, Held>,
    waits: FuturesUnordered<WaitFuture>,
    finished: Vec<(String, Result<JobDetail, Error>)>,
    ready: VecDeque<Completion>,
    handlers: JoinSet<(String, u32, Result<(), String>)>,
    to_ack: Vec<String>,
    to_retry: Vec<(String, i64)>,
    claim_due: bool,
    first_claim: bool,
    next_renew: Instant,
    next_claim: Instant,
    store_pause: Option<Instant>,
    store_failures: u32,
    learned_saved: Vec<Learned>,
    /// Status changes of waiting jobs, from the hub; saved with renewals.
    progress_tx: tokio::sync::mpsc::UnboundedSender<(JobQuery, JobStatus, u32)>,
    progress_rx: tokio::sync::mpsc::UnboundedReceiver<(JobQuery, JobStatus, u32)>,
    changes: HashMap<String, StatusChange>,
}

impl<F, Fut> Run<F>
where
    F: Fn(Completion) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    pub(crate) fn new(inner: Arc<Inner>, handler: Handler<F>) -> Self {
        let now = Instant::now();
        let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel();
        Run {
            progress_tx,
            progress_rx,
            changes: HashMap::new(),
            next_renew: now + inner.lease / 3,
            next_claim: now,
            inner,
            handler,
            held: HashMap::new(),
            waits: FuturesUnordered::new(),
            finished: Vec::new(),
            ready: VecDeque::new(),
            handlers: JoinSet::new(),
            to_ack: Vec::new(),
            to_retry: Vec::new(),
            claim_due: true,
            first_claim: true,
            store_pause: None,
            store_failures: 0,
            learned_saved: Vec::new(),
        }
    }

    pub(crate) async fn go(mut self) -> Result<(), Error> {
        self.load_learned().await?;
        loop {
            let now = Instant::now();
            if self.store_pause.is_none_or(|at| at <= now) {
                self.store_pause = None;
                if let Err(e) = self.store_work(now).await {
                    if e.kind() == Kind::StoreSchema {
                        return Err(e);
                    }
                    self.store_failures += 1;
                    let pause = (Duration::from_millis(50) * 2u32.pow(self.store_failures.min(7)))
                        .min(MAX_STORE_BACKOFF);
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "tracking store failed; retrying");
                    self.store_pause = Some(Instant::now() + pause);
                } else {
                    self.store_failures = 0;
                }
            }
            self.start_handlers();
            let wake_at = match self.store_pause {
                Some(at) => at,
                None if !self.finished.is_empty()
                    || !self.to_ack.is_empty()
                    || !self.to_retry.is_empty()
                    || self.claim_due =>
                {
                    Instant::now()
                }
                None => self.next_renew.min(self.next_claim),
            };
            tokio::select! {
                Some((id, answer)) = self.waits.next(), if !self.waits.is_empty() => {
                    self.on_wait(id, answer);
                }
                Some(joined) = self.handlers.join_next(), if !self.handlers.is_empty() => {
                    self.on_handler(joined);
                }
                Some((query, status, polls)) = self.progress_rx.recv() => {
                    self.on_change(query, status, polls);
                }
                () = self.inner.wake.notified() => self.claim_due = true,
                () = sleep_until(wake_at) => {}
            }
            // Take in whatever else is ready, so the store sees it in one
            // batch.
            // (Outside tokio's cooperative budget, which would cut a batch
            // at 128 answers.)
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
                self.on_handler(joined);
            }
            while let Ok((query, status, polls)) = self.progress_rx.try_recv() {
                self.on_change(query, status, polls);
            }
        }
    }

    fn on_change(&mut self, query: JobQuery, status: JobStatus, polls: u32) {
        let id = query.img_uuid().to_owned();
        if self.held.contains_key(&id) {
            let change = StatusChange {
                id: id.clone(),
                status: status.as_str().to_owned(),
                at: self.inner.clock.now_ms(),
                polls,
            };
            self.changes.insert(id, change);
        }
    }

    async fn load_learned(&mut self) -> Result<(), Error> {
        // A store that is down now does not stop the run: what was learned
        // is an optimisation.
        match self.inner.store.load_learned().await {
            Ok(learned) => {
                let rows: Vec<_> = learned
                    .iter()
                    .map(|l| (l.job_type.clone(), l.samples, l.mean, l.m2))
                    .collect();
                self.inner.client.poll_policy().learner.restore(&rows);
                self.learned_saved = learned;
                Ok(())
            }
            Err(e) if e.kind() == Kind::StoreSchema => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "tracking store failed; learned durations not loaded");
                Ok(())
            }
        }
    }

    fn on_wait(&mut self, id: String, answer: Option<Result<JobDetail, Error>>) {
        match answer {
            // The scheduler stopped (its runtime is going away): not an
            // end of the job to store. Another claim takes it up.
            Some(Err(e)) if e.is_closed() => {
                self.held.remove(&id);
            }
            Some(answer) => {
                if let Some(h) = self.held.get_mut(&id) {
                    h.abort = None;
                    self.finished.push((id, answer));
                }
            }
            // Aborted: the lease went to another worker.
            None => {}
        }
    }

    fn on_handler(
        &mut self,
        joined: Result<(String, u32, Result<(), String>), tokio::task::JoinError>,
    ) {
        let Ok((id, deliveries, result)) = joined else {
            // Handler tasks catch panics; a join error means the run is
            // being torn down.
            return;
        };
        match result {
            Ok(()) => self.to_ack.push(id),
            Err(e) => {
                tracing::warn!(img_uuid = %id, deliveries, error = %e, "handler failed; delivering again later");
                let exp = deliveries.saturating_sub(1).min(20);
                let delay = self
                    .inner
                    .retry_base
                    .saturating_mul(1u32 << exp)
                    .min(self.inner.retry_max);
                let at = self.inner.clock.now_ms().saturating_add(ms(delay));
                self.to_retry.push((id, at));
            }
        }
    }

    /// Everything the store has to hear, in batches; stops at the first
    /// error (what was not written stays queued).
    async fn store_work(&mut self, now: Instant) -> Result<(), Error> {
        let store = Arc::clone(&self.inner.store);
        let worker = self.inner.worker.clone();
        if !self.finished.is_empty() {
            let jobs: Vec<Finished> = self
                .finished
                .iter()
                .map(|(id, answer)| Finished {
                    id: id.clone(),
                    outcome: outcome::encode(answer),
                })
                .collect();
            let held = store
                .complete(&worker, self.inner.clock.now_ms(), jobs)
                .await?;
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
                        self.held.remove(&id);
                    }
                }
            }
        }
        if !self.to_ack.is_empty() {
            store
                .ack(self.to_ack.clone(), self.inner.clock.now_ms())
                .await?;
            for id in std::mem::take(&mut self.to_ack) {
                self.held.remove(&id);
            }
        }
        if !self.to_retry.is_empty() {
            store.retry(&worker, self.to_retry.clone()).await?;
            for (id, _) in std::mem::take(&mut self.to_retry) {
                self.held.remove(&id);
            }
            // Due again later: the periodic claim finds them.
        }
        if now >= self.next_renew {
            if !self.changes.is_empty() {
                let held = &self.held;
                let changes: Vec<StatusChange> = self
                    .changes
                    .drain()
                    .map(|(_, c)| c)
                    .filter(|c| held.get(&c.id).is_some_and(|h| h.abort.is_some()))
                    .collect();
                if let Err(e) = store.save_status(&worker, changes.clone()).await {
                    for c in changes {
                        self.changes.entry(c.id.clone()).or_insert(c);
                    }
                    return Err(e);
                }
            }
            self.renew(&worker).await?;
            self.next_renew = now + self.inner.lease / 3;
        }
        if self.claim_due || now >= self.next_claim {
            self.claim(&worker).await?;
            self.next_claim = now + self.inner.claim_interval;
        }
        Ok(())
    }

    async fn renew(&mut self, worker: &str) -> Result<(), Error> {
        let until = self
            .inner
            .clock
            .now_ms()
            .saturating_add(ms(self.inner.lease));
        let still: std::collections::HashSet<String> = self
            .inner
            .store
            .renew(worker, until)
            .await?
            .into_iter()
            .collect();
        // Jobs whose lease went to someone else while they were waited on:
        // stop polling them. (Jobs being delivered finish their delivery.)
        let lost: Vec<String> = self
            .held
            .iter()
            .filter(|(id, h)| h.abort.is_some() && !still.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            if let Some(h) = self.held.remove(&id) {
                if let Some(a) = h.abort {
                    a.abort();
                }
            }
            tracing::warn!(img_uuid = %id, "lease lost; another worker follows the job");
        }
        let snapshot: Vec<Learned> = self
            .inner
            .client
            .poll_policy()
            .learner
            .snapshot()
            .into_iter()
            .map(|(job_type, samples, mean, m2)| Learned {
                job_type,
                samples,
                mean,
                m2,
            })
            .filter(|l| !self.learned_saved.contains(l))
            .collect();
        if !snapshot.is_empty() {
            self.inner.store.save_learned(snapshot.clone()).await?;
            for l in snapshot {
                self.learned_saved.retain(|s| s.job_type != l.job_type);
                self.learned_saved.push(l);
            }
        }
        Ok(())
    }

    async fn claim(&mut self, worker: &str) -> Result<(), Error> {
        self.claim_due = false;
        let room = self.inner.max_jobs.saturating_sub(self.held.len());
        if room == 0 {
            return Ok(());
        }
        let limit = room.min(CLAIM_BATCH);
        let now_ms = self.inner.clock.now_ms();
        let until = now_ms.saturating_add(ms(self.inner.lease));
        let jobs = self
            .inner
            .store
            .claim(worker, now_ms, until, limit, self.first_claim)
            .await?;
        self.first_claim = false;
        if jobs.len() == limit {
            // More may be due: ask again at once.
            self.claim_due = true;
        }
        for job in jobs {
            if self.held.contains_key(&job.id) {
                continue;
            }
            let meta: Value = serde_json::from_str(&job.meta).unwrap_or(Value::Null);
            let meta = Arc::new(meta);
            let query = match JobQuery::new(&job.id) {
                Ok(q) => q,
                Err(e) => {
                    // An id that is not valid cannot be polled: deliver
                    // the error.
                    self.held.insert(job.id.clone(), Held { meta, abort: None });
                    self.finished.push((job.id, Err(e)));
                    continue;
                }
            };
            match job.outcome {
                Some(text) => {
                    self.ready.push_back(Completion {
                        query,
                        meta: (*meta).clone(),
                        detail: outcome::decode(&text),
                        deliveries: job.deliveries,
                    });
                    self.held.insert(job.id, Held { meta, abort: None });
                }
                None => {
                    let clock = self.inner.clock;
                    let started = clock.instant(job.tracked_at);
                    let deadline = clock.instant(job.deadline);
                    let seed = job.last_status.zip(job.last_change).map(|(s, at)| {
                        (
                            JobStatus::from_raw(&s),
                            clock.instant(at),
                            job.last_polls.unwrap_or(0),
                        )
                    });
                    let progress = self.progress_tx.clone();
                    let client = self.inner.client.clone();
                    let (abort, reg) = AbortHandle::new_pair();
                    let id = job.id.clone();
                    let wait = Abortable::new(
                        async move {
                            client
                                .hub()
                                .wait_until(query, started, deadline, seed, progress)
                                .await
                        },
                        reg,
                    );
                    self.waits
                        .push(Box::pin(async move { (id, wait.await.ok()) }));
                    self.held.insert(
                        job.id,
                        Held {
                            meta,
                            abort: Some(abort),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn start_handlers(&mut self) {
        while self.handlers.len() < self.inner.max_handlers {
            let Some(done) = self.ready.pop_front() else {
                break;
            };
            let id = done.query.img_uuid().to_owned();
            let deliveries = done.deliveries;
            let fut = (self.handler)(done);
            self.handlers.spawn(async move {
                let result = match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the handler panicked".to_owned()),
                };
                (id, deliveries, result)
            });
        }
    }
}
