//! [`RetryPolicy`]: when and how to retry.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::budget::{RetryBudget, TokenBucket};
use crate::backoff::{ExponentialBackoff, Jitter};
use crate::error::Error;

type Classifier = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// When and how to retry. `Default` gives the documented defaults and a
/// fresh [`TokenBucket`]; clones share the budget.
#[derive(Clone)]
pub struct RetryPolicy {
    pub(super) max_attempts: u32,
    pub(super) backoff: ExponentialBackoff,
    pub(super) max_retry_after: Duration,
    pub(super) budget: Option<Arc<dyn RetryBudget>>,
    classifier: Option<Classifier>,
    pub(super) seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: ExponentialBackoff::default(),
            max_retry_after: Duration::from_secs(60),
            budget: Some(Arc::new(TokenBucket::default())),
            classifier: None,
            seed: None,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy::default().max_attempts(1)
    }

    /// Attempts in all, the first included (default 5; at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The first delay (default 200 ms).
    pub fn initial_backoff(mut self, delay: Duration) -> Self {
        self.backoff = self.backoff.initial(delay);
        self
    }

    /// The growth factor of the delay (default 2).
    pub fn backoff_factor(mut self, factor: f64) -> Self {
        self.backoff = self.backoff.factor(factor);
        self
    }

    /// The longest delay (default 10 s).
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.backoff = self.backoff.max(delay);
        self
    }

    /// The jitter (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.backoff = self.backoff.jitter(jitter);
        self
    }

    /// Replaces the whole backoff.
    pub fn backoff(mut self, backoff: ExponentialBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Seeds the jitter, for reproducible schedules (by default each call
    /// draws from a fresh random generator).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The longest `Retry-After` honoured (default 60 s). A server asking for
    /// longer ends the call at once with the error, whose
    /// [`retry_after`](Error::retry_after) tells the time asked.
    pub fn max_retry_after(mut self, limit: Duration) -> Self {
        self.max_retry_after = limit;
        self
    }

    /// Pays retries from this budget, shared by every clone of the policy.
    pub fn budget(mut self, budget: impl RetryBudget + 'static) -> Self {
        self.budget = Some(Arc::new(budget));
        self
    }

    /// Pays retries from a budget that is already shared elsewhere.
    pub fn shared_budget(mut self, budget: Arc<dyn RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Retries without a budget: only the attempt limit bounds retries.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Decides with `classify` which errors are retried, instead of
    /// [`Error::is_transient`].
    pub fn classify_with<F>(mut self, classify: F) -> Self
    where
        F: Fn(&Error) -> bool + Send + Sync + 'static,
    {
        self.classifier = Some(Arc::new(classify));
        self
    }

    /// The backoff.
    pub(crate) fn get_backoff(&self) -> &ExponentialBackoff {
        &self.backoff
    }

    /// Attempts in all.
    pub(crate) fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The longest `Retry-After` honoured.
    pub(crate) fn get_max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The budget, if any.
    pub(crate) fn get_budget(&self) -> Option<&Arc<dyn RetryBudget>> {
        self.budget.as_ref()
    }

    /// Whether this policy retries `error`.
    pub fn is_retryable(&self, error: &Error) -> bool {
        match &self.classifier {
            Some(classify) => classify(error),
            None => error.is_transient(),
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("budget", &self.budget)
            .field("classifier", &self.classifier.as_ref().map(|_| "custom"))
            .field("seed", &self.seed)
            .finish()
    }
}
