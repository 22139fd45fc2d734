//! A per-attempt timeout for job queries.
//!
//! [`TimeoutLayer`] bounds one call of the service below it, body reading
//! included (the body is read inside [`JobStatusService`](crate::JobStatusService)),
//! so a stalled or dribbling answer counts against it. On expiry the call
//! fails with [`Error::is_timeout`], which is transient: the retry layer
//! above sends the query again.
//!
//! ```
//! use std::time::Duration;
//! use goenhance_jobs::{JobQuery, TimeoutLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let slow = service_fn(|_q: JobQuery| async {
//!     tokio::time::sleep(Duration::from_secs(60)).await;
//!     Err::<goenhance_jobs::JobDetail, _>(unreachable!())
//! });
//! let svc = TimeoutLayer::new(Duration::from_secs(10)).layer(slow);
//! let err = svc.oneshot(JobQuery::new("job-1").unwrap()).await.unwrap_err();
//! assert!(err.is_timeout());
//! assert_eq!(err.to_string(), "attempt timed out after 10s");
//! # }
//! ```

pub(crate) mod layer;

pub mod future;

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;

pub(crate) use self::layer::TimeoutLayer;
use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;

/// The default per-attempt timeout: 10 s.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails a call that takes longer than its timeout.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with a per-call timeout.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Timeout { inner, timeout }
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Gives the wrapped service back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<JobQuery> for Timeout<S>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error>,
{
    type Response = JobDetail;
    type Error = Error;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    /// The attempt gets the layer's timeout, or less when the query's
    /// [deadline](JobQuery::deadline) comes first: no attempt outlives the
    /// wait it serves.
    fn call(&mut self, query: JobQuery) -> Self::Future {
        let timeout = match query.deadline() {
            Some(deadline) => self
                .timeout
                .min(deadline.saturating_duration_since(Instant::now())),
            None => self.timeout,
        };
        future::ResponseFuture::new(self.inner.call(query), timeout)
    }
}
