//! Bearer authorization for the transport.
//!
//! [`AuthLayer`] wraps the transport and adds `Authorization: Bearer <key>`
//! to every request. The header value is built once, marked sensitive (so
//! hyper and tower-http's trace layer do not print it) and shared by every
//! request; [`ApiKey`]'s `Debug` is redacted.
//!
//! ```
//! use goenhance_jobs::{AuthLayer, HyperTransport, JobStatusService};
//! use tower::Layer;
//!
//! let transport = AuthLayer::bearer("my-key").layer(HyperTransport::new());
//! assert!(!format!("{transport:?}").contains("my-key"));
//! let svc = JobStatusService::new("https://api.goenhance.ai", transport)?;
//! # Ok::<(), goenhance_jobs::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{HeaderValue, AUTHORIZATION};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::error::Error;

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into().into_boxed_str())
    }

    /// The key itself. Handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Builds the sensitive `Bearer` header value.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when the key is empty, has surrounding
    /// whitespace, or has a character not allowed in a header (such as a
    /// newline).
    pub fn bearer_header(&self) -> Result<HeaderValue, Error> {
        if self.0.is_empty() {
            return Err(Error::invalid_input("api key is empty"));
        }
        if self.0.trim() != &*self.0 {
            return Err(Error::invalid_input("api key has surrounding whitespace"));
        }
        let mut value = HeaderValue::try_from(format!("Bearer {}", self.0))
            .map_err(|_| Error::invalid_input("api key has a character not allowed in a header"))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey::new(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        ApiKey::new(key)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Adds `Authorization: Bearer <key>` to every request of the transport it
/// wraps.
#[derive(Clone)]
pub struct AuthLayer {
    header: HeaderValue,
}

impl AuthLayer {
    /// A layer that authorizes with this key.
    ///
    /// # Panics
    ///
    /// If the key is not valid in a header (empty, surrounding whitespace, a
    /// control character). Use [`AuthLayer::try_bearer`] for keys that come
    /// from outside the program.
    pub fn bearer(key: impl Into<ApiKey>) -> AuthLayer {
        match AuthLayer::try_bearer(key) {
            Ok(layer) => layer,
            Err(e) => panic!("{e}"),
        }
    }

    /// A layer that authorizes with this key.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when the key is not valid in a header.
    pub fn try_bearer(key: impl Into<ApiKey>) -> Result<AuthLayer, Error> {
        Ok(AuthLayer {
            header: key.into().bearer_header()?,
        })
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("authorization", &"Bearer [redacted]")
            .finish()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AddAuthorization<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddAuthorization {
            inner,
            header: self.header.clone(),
        }
    }
}

/// The transport wrapped by [`AuthLayer`].
#[derive(Clone)]
pub struct AddAuthorization<S> {
    inner: S,
    header: HeaderValue,
}

impl<S> AddAuthorization<S> {
    /// The wrapped transport.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped transport, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Gives the wrapped transport back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for AddAuthorization<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddAuthorization")
            .field("inner", &self.inner)
            .field("authorization", &"Bearer [redacted]")
            .finish()
    }
}

impl<S, B, RB> Service<Request<B>> for AddAuthorization<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.headers_mut().insert(AUTHORIZATION, self.header.clone());
        ResponseFuture {
            inner: self.inner.call(req),
            header: Some(self.header.clone()),
        }
    }
}

/// The key a response was asked for with, in the response's extensions,
/// so that whoever turns the server's words into an error can cut the key
/// out of them: a server that echoes the key must not put it in an error.
#[derive(Clone)]
pub(crate) struct SentKey(HeaderValue);

impl SentKey {
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
        inner: F,
        header: Option<HeaderValue>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test]
    async fn adds_a_sensitive_bearer_header() {
        let svc =
            AuthLayer::bearer("sk-123").layer(tower::service_fn(|req: Request<()>| async move {
                Ok::<_, Infallible>(Response::new(req.headers().get(AUTHORIZATION).cloned()))
            }));
        let response = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(
            response.extensions().get::<SentKey>().unwrap().key(),
            "sk-123"
        );
        let value = response.into_body().unwrap();
        assert_eq!(value, "Bearer sk-123");
        assert!(value.is_sensitive());
        assert_eq!(format!("{value:?}"), "Sensitive");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::new("sk-secret");
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
        assert_eq!(key.to_string(), "[redacted]");
        let layer = AuthLayer::bearer(key);
        assert!(!format!("{layer:?}").contains("sk-secret"));
    }

    #[test]
    fn bad_keys_are_refused_without_echo() {
        for bad in ["", " sk-1", "sk-2\nb", "sk-3\r\nX: y"] {
            let err = AuthLayer::try_bearer(bad).unwrap_err();
            assert!(err.is_invalid_input(), "{bad:?}");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("sk-"), "{shown}");
        }
    }
}
