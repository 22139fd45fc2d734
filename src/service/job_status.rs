//! [`JobStatusService`]: the service, its settings and its `Service` impl.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::Service;

use super::base_url::BaseUrl;
use super::future::{ResponseFuture, State};
use super::request::build_request;
use super::DEFAULT_MAX_BODY;
use crate::auth::SentKey;
use crate::error::{BoxError, Error};
use crate::model::JobDetail;
use crate::query::JobQuery;
use crate::telemetry::AttemptTrace;

/// Turns a [`JobQuery`] into a [`JobDetail`] with one HTTP request.
///
/// `T` is the transport: any `tower::Service<http::Request<Full<Bytes>>>`
/// answering `http::Response<B>` with `B: http_body::Body<Data = Bytes>`.
/// [`AuthLayer`](crate::AuthLayer) wraps the transport to add the key. The
/// service sends `Accept: application/json` and
/// `User-Agent: goenhance-jobs/<version>`, never follows a redirect (a 3xx is
/// an error: the key would travel along), and reads at most
/// [`max_body_size`](JobStatusService::max_body_size) bytes of the answer.
pub struct JobStatusService<T> {
    transport: T,
    base: BaseUrl,
    max_body: usize,
    /// The key to cut out of errors, when the stack's builder knows it;
    /// else the key each answer is marked with ([`SentKey`]) is used.
    key: Option<SentKey>,
}

impl<T> JobStatusService<T> {
    /// Makes the service for `base_url` (checked as [`BaseUrl::new`] does).
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when the base URL is refused.
    pub fn new(base_url: &str, transport: T) -> Result<Self, Error> {
        Ok(JobStatusService::with_base_url(
            BaseUrl::new(base_url)?,
            transport,
        ))
    }

    /// Makes the service for an already checked base URL.
    pub fn with_base_url(base: BaseUrl, transport: T) -> Self {
        JobStatusService {
            transport,
            base,
            max_body: DEFAULT_MAX_BODY,
            key: None,
        }
    }

    /// Sets the cap on a response body (default 1 MiB). A larger body is an
    /// error ([`Error::is_body_too_large`]) and is not read past the cap.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Cuts `key` out of every error's text, without relying on the
    /// transport marking each answer with the key it was sent with: for a
    /// stack whose builder wraps the transport in the auth layer itself
    /// (unmarked, which spares a map insert per answer).
    pub(crate) fn redacting(mut self, key: SentKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &BaseUrl {
        &self.base
    }

    /// The transport.
    pub fn get_ref(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Gives the transport back.
    pub fn into_inner(self) -> T {
        self.transport
    }
}

impl<T: Clone> Clone for JobStatusService<T> {
    fn clone(&self) -> Self {
        JobStatusService {
            transport: self.transport.clone(),
            base: self.base.clone(),
            max_body: self.max_body,
            key: self.key.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for JobStatusService<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStatusService")
            .field("base", &self.base)
            .field("max_body", &self.max_body)
            .field("transport", &self.transport)
            .finish()
    }
}

impl<T, B> Service<JobQuery> for JobStatusService<T>
where
    T: Service<Request<Full<Bytes>>, Response = Response<B>>,
    T::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = JobDetail;
    type Error = Error;
    type Future = ResponseFuture<T::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.transport.poll_ready(cx).map_err(Error::transport)
    }

    fn call(&mut self, query: JobQuery) -> Self::Future {
        let request = build_request(&self.base, &query);
        let trace = AttemptTrace::start(request.uri(), query.attempt());
        let future = {
            let _enter = trace.span().enter();
            self.transport.call(request)
        };
        ResponseFuture {
            state: State::Sending { future },
            query: Some(query),
            max_body: self.max_body,
            key: self.key.clone(),
            trace,
        }
    }
}
