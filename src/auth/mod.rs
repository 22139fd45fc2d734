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

mod future;
pub(crate) mod key;
pub(crate) mod layer;

use std::fmt;
use std::task::{Context, Poll};

use http::header::{HeaderValue, AUTHORIZATION};
use http::{Request, Response};
use tower::Service;

pub use self::future::ResponseFuture;
pub(crate) use self::future::SentKey;
pub(crate) use self::key::ApiKey;
pub(crate) use self::layer::AuthLayer;

/// The transport wrapped by [`AuthLayer`].
#[derive(Clone)]
pub struct AddAuthorization<S> {
    pub(super) inner: S,
    pub(super) header: HeaderValue,
    /// Whether answers are marked with the key ([`SentKey`]).
    pub(super) mark: bool,
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
            header: self.mark.then(|| self.header.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

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
