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
//! - every retry is paid from a [`RetryBudget`] ([`TokenBucket`] by default)
//!   shared by all clones of the policy, so an outage does not multiply the
//!   load;
//! - a request lost on a pooled HTTP/1.1 connection that the server closed
//!   as the request went out (told apart by
//!   [`HyperTransport`](crate::HyperTransport)) is sent again at once, up to
//!   4 times in a row: not an attempt, not paid from the budget, and also
//!   with [`RetryPolicy::never`], as if the pool had seen the close first.
//!
//! ```
//! use std::time::Duration;
//! use goenhance_jobs::backoff::{ExponentialBackoff, Jitter};
//! use goenhance_jobs::RetryPolicy;
//!
//! let backoff = ExponentialBackoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(10))
//!     .jitter(Jitter::None);
//! assert_eq!(backoff.base_delay(1), Duration::from_millis(200));
//! let policy = RetryPolicy::default()
//!     .max_attempts(3)
//!     .backoff(backoff)
//!     .max_retry_after(Duration::from_secs(30));
//! # drop(policy);
//! ```

mod attempt;
mod budget;
pub mod future;
pub(crate) mod layer;
mod oneshot;
pub(crate) mod policy;

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

pub(crate) use self::attempt::Attempt;
pub use self::budget::{RetryBudget, TokenBucket};
pub(crate) use self::layer::RetryLayer;
pub(crate) use self::oneshot::oneshot;
pub(crate) use self::policy::RetryPolicy;
use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;

/// Retries the service below it according to a [`RetryPolicy`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: tower::retry::Retry<Attempt, S>,
}

impl<S> Retry<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        let attempt = Attempt::new(Arc::new(policy));
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
        future::ResponseFuture {
            inner: self.inner.call(query),
        }
    }
}
