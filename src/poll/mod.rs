//! Status polling: a query becomes a future that resolves when the job is
//! finished.
//!
//! [`PollLayer`](crate::PollLayer) wraps any `Service<JobQuery, Response = JobDetail, Error =
//! Error>` (typically retry over timeout over
//! [`JobStatusService`](crate::JobStatusService)). Its future polls at once,
//! then on the [`PollPolicy`]'s schedule, and resolves with `Ok` for a job
//! that succeeded *and* for one that failed (both are answers: check
//! [`JobDetail::status`](crate::JobDetail::status)). It resolves with an
//! error for a deadline ([`Error::is_deadline`](crate::Error::is_deadline)),
//! a stall, or a failure that is not transient (a refused key, `code != 0`).
//! Transient failures do not end a wait: the next poll simply comes, later
//! when the server answered 429/503, and not before its `Retry-After`.
//! Dropping the future stops the polling; nothing runs in the background.
//!
//! ```
//! use std::time::Duration;
//! use goenhance_jobs::transport::mock::MockTransport;
//! use goenhance_jobs::{AuthLayer, JobQuery, JobStatus, JobStatusService, PollLayer, PollPolicy};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), goenhance_jobs::Error> {
//! let mock = MockTransport::new();
//! mock.timeline("job-1", &["pending", "processing", "success"]);
//! let transport = ServiceBuilder::new().layer(AuthLayer::bearer("key")).service(mock.clone());
//! let svc = ServiceBuilder::new()
//!     .layer(PollLayer::new(PollPolicy::fixed(Duration::from_secs(5))))
//!     .service(JobStatusService::new("https://api.goenhance.ai", transport)?);
//! let detail = svc.oneshot(JobQuery::new("job-1")?).await?;
//! assert_eq!(detail.status(), &JobStatus::Succeeded);
//! assert_eq!(mock.request_count(), 3);
//! # Ok(())
//! # }
//! ```

mod censored;
mod cold;
mod history;
pub(crate) mod layer;
pub(crate) mod learner;
mod model;
pub(crate) mod policy;
pub(crate) mod state;
mod wait;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::Service;

pub(crate) use self::policy::PollPolicy;
pub use self::policy::DEFAULT_WAIT_TIMEOUT;
pub(crate) use self::wait::{step, wait, watch};
use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;

/// The future of [`Poller`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<JobDetail, Error>> + Send>>;

/// Polls the service below it until the job is finished.
///
/// Made by [`PollLayer`](crate::PollLayer). The service below must be `Clone`; each wait
/// takes the clone that was made ready.
#[derive(Clone)]
pub struct Poller<S> {
    inner: S,
    policy: PollPolicy,
}

impl<S> Poller<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: PollPolicy) -> Self {
        Poller { inner, policy }
    }

    /// The policy.
    pub fn policy(&self) -> &PollPolicy {
        &self.policy
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

impl<S: fmt::Debug> fmt::Debug for Poller<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S> Service<JobQuery> for Poller<S>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = JobDetail;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, query: JobQuery) -> Self::Future {
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(wait(ready, query, self.policy.clone()))
    }
}
