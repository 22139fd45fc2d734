//! Claiming: how many jobs a run asks for, and how it takes each one up
//! (a wait, a delivery, or a row that cannot be read).

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;
use tokio::time::Instant;

use super::run::{Held, Run};
use super::store::{Claim, ClaimedJob, Retry, WorkerId};
use super::waits::start_wait;
use super::{outcome, Completion, CLAIM_BATCH};
use crate::error::{BoxError, Error};
use crate::query::JobQuery;

impl<F, Fut> Run<F>
where
    F: Fn(Completion) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    pub(super) async fn claim(&mut self, worker: &WorkerId) -> Result<(), Error> {
        self.claim_due = false;
        let waiting = self
            .inner
            .max_jobs
            .saturating_sub(self.held.len())
            .min(CLAIM_BATCH);
        let finished = self
            .inner
            .max_handlers
            .saturating_sub(self.handlers.len() + self.ready.len())
            .min(waiting);
        self.room_short = (waiting == 0, waiting > 0 && finished == 0);
        if waiting == 0 && self.recover.is_empty() {
            return Ok(());
        }
        self.claim_token += 1;
        let claim = Claim::new(waiting, finished, self.claim_token).recover(self.recover.clone());
        let inner = Arc::clone(&self.inner);
        let at = Instant::now();
        let claimed = match inner
            .call("claim", inner.store.claim(worker, claim, inner.now()))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                self.recover.push(self.claim_token);
                return Err(e);
            }
        };
        self.recover.clear();
        if !claimed.alive {
            self.fence("the store says this worker is not alive");
            return Ok(());
        }
        let (mut got_waiting, mut got_finished) = (0, 0);
        for job in claimed.jobs {
            if job.outcome.is_some() {
                got_finished += 1;
            } else {
                got_waiting += 1;
            }
            if !self.held.contains_key(&job.id) {
                self.take(job, claimed.now, at);
            }
        }
        if (got_waiting >= waiting && waiting > 0) || (got_finished >= finished && finished > 0) {
            // More may be due: ask again at once.
            self.claim_due = true;
        }
        Ok(())
    }

    /// Starts work on a claimed job: its wait, or its delivery.
    fn take(&mut self, job: ClaimedJob, store_now: SystemTime, at: Instant) {
        let meta = Arc::new(serde_json::from_str(&job.meta).unwrap_or(Value::Null));
        self.held.insert(
            job.id.clone(),
            Held {
                meta: Arc::clone(&meta),
                abort: None,
            },
        );
        let query = match JobQuery::new(&job.id) {
            Ok(q) => q,
            Err(e) => {
                let why = format!("the stored id cannot be read: {e}");
                tracing::warn!(img_uuid = %job.id, reason = %why, "tracked job is dead");
                self.to_retry.push(Retry::dead(job.id, why));
                return;
            }
        };
        match &job.outcome {
            Some(text) => match outcome::read(text) {
                Ok(detail) => self.ready.push_back(Completion {
                    query,
                    meta: (*meta).clone(),
                    detail,
                    deliveries: job.deliveries,
                }),
                Err(why) => {
                    tracing::warn!(img_uuid = %job.id, reason = %why, "tracked job is dead");
                    self.to_retry.push(Retry::dead(job.id, why));
                }
            },
            None => {
                let (abort, wait) = start_wait(
                    &self.inner.client,
                    query,
                    &job,
                    store_now,
                    at,
                    self.progress_tx.clone(),
                );
                self.waits.push(wait);
                if let Some(h) = self.held.get_mut(&job.id) {
                    h.abort = Some(abort);
                }
            }
        }
    }
}
