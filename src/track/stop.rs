//! Stopping a run on request ([`Tracker::run_until`](super::Tracker::run_until)):
//! no new claims or deliveries, running handlers finish within the grace
//! period, and every job still held is released for another worker.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::run::Run;
use super::Completion;
use crate::error::BoxError;

/// Tries of the last store pass before giving up (the jobs are then taken
/// over when the heartbeat lapses).
const LAST_TRIES: usize = 3;

impl<F, Fut> Run<F>
where
    F: Fn(Completion) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    /// Asked to stop: waits end and are released; handlers already
    /// running may finish until the grace period ends.
    pub(super) fn begin_stop(&mut self) {
        tracing::info!(
            worker = %self.inner.worker,
            running = self.handlers.len(),
            "tracking run stopping"
        );
        self.stopping = Some(Instant::now() + self.inner.shutdown_grace);
        let waiting: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.abort.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            if let Some(a) = self.held.remove(&id).and_then(|h| h.abort) {
                a.abort();
            }
            self.to_release.push(id);
        }
        for (id, _) in std::mem::take(&mut self.finished) {
            self.held.remove(&id);
            self.to_release.push(id);
        }
        for done in std::mem::take(&mut self.ready) {
            let id = done.query.img_uuid().to_owned();
            self.held.remove(&id);
            self.to_release.push(id);
        }
    }

    /// Cancels handlers still running, then records what happened and
    /// releases the rest.
    pub(super) async fn finish_stop(&mut self) {
        self.handlers.abort_all();
        while let Some(joined) = self.handlers.join_next().await {
            if let Ok(end) = joined {
                self.on_handler_end(end);
            }
        }
        let held: Vec<String> = self.held.keys().cloned().collect();
        self.to_release.extend(held);
        for _ in 0..LAST_TRIES {
            match self.store_work(Instant::now()).await {
                Ok(()) => break,
                Err(f) => {
                    tracing::warn!(
                        store = %self.store_at,
                        operation = f.operation,
                        error = %f.error,
                        "tracking store failed while stopping"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tracing::info!(worker = %self.inner.worker, "tracking run stopped");
    }
}
