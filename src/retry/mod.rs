//! Retries of transient failures: classification, exponential backoff with
//! jitter, `Retry-After`, and a retry budget shared by every clone.
//!
//! A status query is an idempotent GET, so sending it again is always safe.
//! [`RetryLayer`] is built on tower's own [`tower::retry::Retry`] with
//! [`RetryPolicy`] deciding each time:
//!
//! - only [transient](crate::Error::is_transient) errors are retried
//!   (connect and I/O errors, a body cut short, attempt timeouts, a garbled
//!   body, 408/429/500/502/503/504), unless another classifier is set;
//! - up to 5 attempts; delays 200 ms × 2ⁿ, at most 10 s, full jitter;
//! - a `Retry-After` from the server is the next delay, up to 60 s; when it
//!   asks for longer the call gives up at once, and the error's
//!   [`retry_after`](crate::Error::retry_after) says how long it asked;
//! - no retry is sent, and no delay runs, past the query's
//!   [deadline](crate::JobQuery::deadline);
//! - every retry is paid from a [`Budget`] ([`TokenBucket`] by default)
//!   shared by all clones of the policy, so an outage does not multiply the
//!   load.
//!
//! ```
//! use std::time::Duration;
//! use goenhance_jobs::retry::{Jitter, RetryPolicy};
//!
//! let policy = RetryPolicy::default()
//!     .max_attempts(3)
//!     .initial_backoff(Duration::from_millis(100))
//!     .jitter(Jitter::None)
//!     .max_retry_after(Duration::from_secs(30));
//! assert_eq!(policy.backoff().base_delay(1), Duration::from_millis(200));
//! ```

mod backoff;
pub mod budget;
mod layer;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::retry::Policy as _;
use tower::Service;

pub use self::backoff::{ExponentialBackoff, Jitter};
pub use self::budget::{Budget, TokenBucket};
pub use self::layer::RetryLayer;
use crate::error::{Error, Exhausted};
use crate::model::{JobDetail, JobQuery};

/// The future of [`Retry`]: tower's retry future with this crate's policy.
pub mod future {
    /// Resolves to the first answer that is not retried.
    pub type ResponseFuture<S> =
        tower::retry::future::ResponseFuture<super::Attempt, S, crate::JobQuery>;
}

type Classifier = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// When and how to retry. `Default` gives the documented defaults and a
/// fresh [`TokenBucket`]; clones share the budget.
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: ExponentialBackoff,
    max_retry_after: Duration,
    budget: Option<Arc<dyn Budget>>,
    classifier: Option<Classifier>,
    seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: ExponentialBackoff::new(
                Duration::from_millis(200),
                2.0,
                Duration::from_secs(10),
            ),
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
        self.backoff = ExponentialBackoff::new(delay, self.backoff.factor, self.backoff.max)
            .jitter(self.backoff.jitter);
        self
    }

    /// The growth factor of the delay (default 2).
    pub fn backoff_factor(mut self, factor: f64) -> Self {
        self.backoff = ExponentialBackoff::new(self.backoff.initial, factor, self.backoff.max)
            .jitter(self.backoff.jitter);
        self
    }

    /// The longest delay (default 10 s).
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.backoff = ExponentialBackoff::new(self.backoff.initial, self.backoff.factor, delay)
            .jitter(self.backoff.jitter);
        self
    }

    /// The jitter (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.backoff = self.backoff.jitter(jitter);
        self
    }

    /// Replaces the whole backoff.
    pub fn with_backoff(mut self, backoff: ExponentialBackoff) -> Self {
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
    pub fn budget(mut self, budget: impl Budget + 'static) -> Self {
        self.budget = Some(Arc::new(budget));
        self
    }

    /// Pays retries from a budget that is already shared elsewhere.
    pub fn shared_budget(mut self, budget: Arc<dyn Budget>) -> Self {
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
    pub fn backoff(&self) -> &ExponentialBackoff {
        &self.backoff
    }

    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The budget, if any.
    pub fn budget_ref(&self) -> Option<&Arc<dyn Budget>> {
        self.budget.as_ref()
    }

    /// The longest `Retry-After` honoured.
    pub(crate) fn max_retry_after_limit(&self) -> Duration {
        self.max_retry_after
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

/// The per-call state of a [`RetryPolicy`]: how many attempts were made and
/// the jitter's random generator. It is what tower's retry middleware
/// carries in its future.
#[derive(Clone)]
pub struct Attempt {
    policy: Arc<RetryPolicy>,
    attempt: u32,
    rng: Option<fastrand::Rng>,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Attempt {
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
                    budget.deposit(self.attempt > 1);
                }
                return None;
            }
            Err(e) => e,
        };
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
        let wake = Instant::now() + delay;
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
        }
        tracing::debug!(
            img_uuid = %query.img_uuid(),
            attempt = self.attempt,
            delay_ms = delay.as_millis() as u64,
            reason = %error,
            "retrying"
        );
        self.attempt += 1;
        query.attempt = self.attempt;
        Some(tokio::time::sleep_until(wake))
    }

    fn clone_request(&mut self, query: &JobQuery) -> Option<JobQuery> {
        Some(query.clone())
    }
}

/// Retries the service below it according to a [`RetryPolicy`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: tower::retry::Retry<Attempt, S>,
}

impl<S> Retry<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        let attempt = Attempt {
            policy: Arc::new(policy),
            attempt: 1,
            rng: None,
        };
        Retry {
            inner: tower::retry::Retry::new(attempt, inner),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// Gives the wrapped service back.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S> Service<JobQuery> for Retry<S>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error> + Clone,
{
    type Response = JobDetail;
    type Error = Error;
    type Future = future::ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, query: JobQuery) -> Self::Future {
        self.inner.call(query)
    }
}

/// One call through `service` with the retries of `policy`, the service
/// moved into the future.
///
/// For a one-off call (`Client::get`): tower's `Retry::call` must clone its
/// service into the future, and a one-off caller has already cloned the
/// stack to call it, so that second clone (and its reference counts, shared
/// by every caller) is spared. Retries behave exactly as through
/// [`Retry`]: the same [`Attempt`] decides, the same budget pays.
pub(crate) fn oneshot<S>(service: S, policy: Arc<RetryPolicy>, query: JobQuery) -> Oneshot<S>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error>,
{
    Oneshot {
        service,
        attempt: Attempt {
            policy,
            attempt: 1,
            rng: None,
        },
        query: Some(query),
        state: OneshotState::NotReady,
    }
}

pin_project! {
    /// The future of [`oneshot`].
    pub(crate) struct Oneshot<S>
    where
        S: Service<JobQuery>,
    {
        service: S,
        attempt: Attempt,
        // The query to send next; while a call is out, the copy kept for a
        // retry.
        query: Option<JobQuery>,
        #[pin]
        state: OneshotState<S::Future>,
    }
}

pin_project! {
    #[project = OneshotProj]
    enum OneshotState<F> {
        NotReady,
        Called { #[pin] future: F },
        Waiting { #[pin] sleep: Sleep },
    }
}

impl<S> Future for Oneshot<S>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error>,
{
    type Output = Result<JobDetail, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                OneshotProj::NotReady => {
                    ready!(this.service.poll_ready(cx))?;
                    let query = this.query.take().expect("polled after completion");
                    *this.query = this.attempt.clone_request(&query);
                    let future = this.service.call(query);
                    this.state.set(OneshotState::Called { future });
                }
                OneshotProj::Called { future } => {
                    let mut result = ready!(future.poll(cx));
                    let Some(query) = this.query.as_mut() else {
                        return Poll::Ready(result);
                    };
                    match this.attempt.retry(query, &mut result) {
                        Some(sleep) => this.state.set(OneshotState::Waiting { sleep }),
                        None => return Poll::Ready(result),
                    }
                }
                OneshotProj::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(OneshotState::NotReady);
                }
            }
        }
    }
}
