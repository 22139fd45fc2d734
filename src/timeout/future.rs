//! The future of [`Timeout`](super::Timeout).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{sleep, Sleep};

use crate::error::Error;
use crate::model::JobDetail;

pin_project! {
    /// Resolves to the inner answer, or to a timeout error when the sleep
    /// ends first.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Attempt<F>,
        #[pin]
        sleep: Sleep,
        timeout: Duration,
    }
}

pin_project! {
    /// The attempt, until the timeout cuts it.
    #[project = AttemptProj]
    #[derive(Debug)]
    enum Attempt<F> {
        Running { #[pin] future: F },
        Cut,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, timeout: Duration) -> Self {
        ResponseFuture {
            inner: Attempt::Running { future: inner },
            sleep: sleep(timeout),
            timeout,
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<JobDetail, Error>>,
{
    type Output = Result<JobDetail, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let AttemptProj::Running { future } = this.inner.as_mut().project() else {
            return Poll::Ready(Err(Error::timeout(*this.timeout)));
        };
        if let Poll::Ready(out) = future.poll(cx) {
            return Poll::Ready(out);
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                // Dropped at once, so that the attempt's span and metrics
                // say it timed out.
                crate::telemetry::cut_by_timeout(|| this.inner.set(Attempt::Cut));
                Poll::Ready(Err(Error::timeout(*this.timeout)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
