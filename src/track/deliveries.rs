//! How a delivery ends: acknowledged, delivered again later after a
//! failure, or dead once its handler has failed (or never ended) on the
//! last delivery allowed.

use std::future::Future;

use super::handlers::HandlerEnd;
use super::run::Run;
use super::store::Retry;
use super::Completion;
use crate::error::BoxError;
use crate::telemetry::{self, DeliveryOutcome};

impl<F, Fut> Run<F>
where
    F: Fn(Completion) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    pub(super) fn on_handler_end(&mut self, end: HandlerEnd) {
        telemetry::delivery_ended(match &end.result {
            Ok(()) => DeliveryOutcome::Ok,
            Err(_) if end.deliveries >= self.inner.max_deliveries => DeliveryOutcome::Dead,
            Err(_) if end.timed_out => DeliveryOutcome::TimedOut,
            Err(_) => DeliveryOutcome::Failed,
        });
        if !self.held.contains_key(&end.id) {
            // Fenced while it ran: the job is another run's now. A
            // delivery that happened is still recorded.
            if end.result.is_ok() {
                self.to_ack.push(end.id);
            }
            return;
        }
        match end.result {
            Ok(()) => self.to_ack.push(end.id),
            Err(e) if end.deliveries >= self.inner.max_deliveries => {
                tracing::warn!(img_uuid = %end.id, deliveries = end.deliveries, error = %e, "handler failed; the job is dead");
                self.to_retry.push(Retry::dead(end.id, e));
            }
            Err(e) => {
                tracing::warn!(img_uuid = %end.id, deliveries = end.deliveries, error = %e, "handler failed; delivering again later");
                let exp = end.deliveries.saturating_sub(1).min(20);
                let delay = self
                    .inner
                    .retry_base
                    .saturating_mul(1u32 << exp)
                    .min(self.inner.retry_max);
                self.to_retry.push(Retry::later(end.id, e, delay));
            }
        }
    }

    /// A job claimed once more than its deliveries allow: the last one it
    /// was allowed never ended (its process died, or it was stopped or
    /// fenced while the handler ran), so it is dead, not delivered again.
    /// A handler that crashes its process every time ends here.
    pub(super) fn bury_unended(&mut self, done: Completion) {
        let id = done.query.img_uuid().to_owned();
        let last = done.deliveries - 1;
        let why = format!(
            "delivery {last} of {} did not end: the worker died or stopped while its handler ran",
            self.inner.max_deliveries
        );
        tracing::warn!(img_uuid = %id, deliveries = last, reason = %why, "tracked job is dead");
        telemetry::delivery_ended(DeliveryOutcome::Dead);
        self.to_retry.push(Retry::dead(id, why));
    }
}
