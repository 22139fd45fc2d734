//! [`Attempt`]: one call's retry state, and tower's retry policy over it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::RetryPolicy;
use crate::error::{Error, Exhausted};
use crate::model::JobDetail;
use crate::query::JobQuery;
use crate::transport::Resends;

/// The per-call state of a [`RetryPolicy`]: how many attempts were made and
/// the jitter's random generator. It is what tower's retry middleware
/// carries in its future.
#[derive(Clone)]
pub(crate) struct Attempt {
    policy: Arc<RetryPolicy>,
    attempt: u32,
    /// Requests lost on reused connections sent again in a row.
    resends: Resends,
    rng: Option<fastrand::Rng>,
    /// The error the last retry was paid for after, for the refund.
    paid_after: Option<Error>,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Attempt {
    /// The state of a call that has made no attempt yet.
    pub(crate) fn new(policy: Arc<RetryPolicy>) -> Self {
        Attempt {
            policy,
            attempt: 1,
            resends: Resends::default(),
            rng: None,
            paid_after: None,
        }
    }

    fn next_delay(&mut self, error: &Error) -> Duration {
        if let Some(after) = error.retry_after() {
            return after;
        }
        let seed = self.policy.seed;
        let rng = self.rng.get_or_insert_with(|| match seed {
            Some(s) => fastrand::Rng::with_seed(s),
            None => fastrand::Rng::new(),
        });
        self.policy.backoff.delay(self.attempt - 1, rng)
    }
}

impl tower::retry::Policy<JobQuery, JobDetail, Error> for Attempt {
    type Future = Sleep;

    fn retry(
        &mut self,
        query: &mut JobQuery,
        result: &mut Result<JobDetail, Error>,
    ) -> Option<Sleep> {
        let policy = Arc::clone(&self.policy);
        let error = match result {
            Ok(_) => {
                if let Some(budget) = &policy.budget {
                    budget.deposit(self.paid_after.as_ref());
                }
                return None;
            }
            Err(e) => e,
        };
        // A request lost on a pooled connection the server closed as it
        // went out goes again at once on a fresh one: not an attempt, and
        // free, as if the pool had noticed the close first.
        let now = Instant::now();
        let before_deadline = query.deadline().is_none_or(|deadline| now < deadline);
        if self.resends.send_again(error, before_deadline) {
            tracing::debug!(img_uuid = %query.img_uuid(), attempt = self.attempt, reason = %error, "request lost on a reused connection, sending it again");
            return Some(tokio::time::sleep_until(now));
        }
        if !policy.is_retryable(error) {
            return None;
        }
        if self.attempt >= policy.max_attempts {
            if policy.max_attempts > 1 {
                error.set_exhausted(Exhausted::Attempts(self.attempt));
            }
            return None;
        }
        if error
            .retry_after()
            .is_some_and(|after| after > policy.max_retry_after)
        {
            error.set_exhausted(Exhausted::RetryAfterTooLong);
            return None;
        }
        let delay = self.next_delay(error);
        let wake = crate::clock::after(now, delay);
        if query.deadline().is_some_and(|deadline| wake >= deadline) {
            tracing::debug!(img_uuid = %query.img_uuid(), attempt = self.attempt, "no retry: the deadline comes first");
            return None;
        }
        if let Some(budget) = &policy.budget {
            if !budget.withdraw(error) {
                error.set_exhausted(Exhausted::Budget(self.attempt));
                tracing::debug!(img_uuid = %query.img_uuid(), attempt = self.attempt, "no retry: the retry budget is exhausted");
                return None;
            }
            self.paid_after = Some(error.clone());
        }
        tracing::debug!(
            img_uuid = %query.img_uuid(),
            attempt = self.attempt,
            delay_ms = delay.as_millis() as u64,
            reason = %error,
            "retrying"
        );
        crate::telemetry::retried(error);
        self.attempt += 1;
        query.set_attempt(self.attempt);
        Some(tokio::time::sleep_until(wake))
    }

    fn clone_request(&mut self, query: &JobQuery) -> Option<JobQuery> {
        Some(query.clone())
    }
}
