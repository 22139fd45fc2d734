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
        inner: F,
        #[pin]
        sleep: Sleep,
        timeout: Duration,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, timeout: Duration) -> Self {
        ResponseFuture {
            inner,
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
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out);
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::timeout(*this.timeout))),
            Poll::Pending => Poll::Pending,
        }
    }
}
