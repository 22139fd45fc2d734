//! One retried call with the service moved into its future, for
//! `Client::get`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::retry::Policy as _;
use tower::Service;

use super::attempt::Attempt;
use super::RetryPolicy;
use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;

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
        attempt: Attempt::new(policy),
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
