//! The future of [`Retry`](super::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::Service;

use super::attempt::Attempt;
use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;

pin_project! {
    /// Resolves to the first answer that is not retried: tower's retry
    /// future with this crate's policy inside.
    pub struct ResponseFuture<S>
    where
        S: Service<JobQuery, Response = JobDetail, Error = Error>,
        S: Clone,
    {
        #[pin]
        pub(super) inner: tower::retry::future::ResponseFuture<Attempt, S, JobQuery>,
    }
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error> + Clone,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error> + Clone,
{
    type Output = Result<JobDetail, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
