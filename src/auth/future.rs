//! The future of [`AddAuthorization`](super::AddAuthorization), which marks
//! each answer with the key it was asked with.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::HeaderValue;
use http::Response;
use pin_project_lite::pin_project;

/// The key a response was asked for with, in the response's extensions,
/// so that whoever turns the server's words into an error can cut the key
/// out of them: a server that echoes the key must not put it in an error.
#[derive(Clone)]
pub(crate) struct SentKey(HeaderValue);

impl SentKey {
    pub(crate) fn new(header: HeaderValue) -> SentKey {
        SentKey(header)
    }

    /// The key itself (the header value without `Bearer `).
    pub(crate) fn key(&self) -> &str {
        let value = self.0.to_str().unwrap_or_default();
        value.strip_prefix("Bearer ").unwrap_or(value)
    }
}

pin_project! {
    /// The future of [`AddAuthorization`]: the transport's answer, marked
    /// with the key it was sent with so that no error repeats the key.
    pub struct ResponseFuture<F> {
        #[pin]
        pub(super) inner: F,
        pub(super) header: Option<HeaderValue>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(header) = this.header.take() {
            response.extensions_mut().insert(SentKey(header));
        }
        Poll::Ready(Ok(response))
    }
}
