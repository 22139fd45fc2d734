//! The future of [`JobStatusService`](super::JobStatusService): sends,
//! reads the capped body, decodes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;

use super::response::{content_length, http_error, on_response};
use crate::auth::SentKey;
use crate::error::{BoxError, Error};
use crate::model::JobDetail;
use crate::query::JobQuery;
use crate::telemetry::AttemptTrace;

pin_project! {
    /// The future of [`JobStatusService`]: sends, reads the capped body,
    /// decodes.
    pub struct ResponseFuture<F, B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        pub(super) state: State<F, B>,
        pub(super) query: Option<JobQuery>,
        pub(super) max_body: usize,
        pub(super) key: Option<SentKey>,
        pub(super) trace: AttemptTrace,
    }
}

pin_project! {
    #[project = StateProj]
    pub(super) enum State<F, B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        Sending { #[pin] future: F },
        Reading { parts: Option<http::response::Parts>, #[pin] body: Collect<Limited<B>> },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<JobDetail, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _enter = this.trace.span().clone().entered();
        loop {
            match this.state.as_mut().project() {
                StateProj::Sending { future } => {
                    let response = match ready!(future.poll(cx)) {
                        Ok(r) => r,
                        Err(e) => return Poll::Ready(finish(this.trace, Err(Error::transport(e)))),
                    };
                    let (parts, body) = response.into_parts();
                    this.trace.response(parts.status);
                    if parts.status.is_success()
                        && content_length(&parts.headers).is_some_and(|n| n > *this.max_body as u64)
                    {
                        return Poll::Ready(finish(
                            this.trace,
                            Err(Error::body_too_large(*this.max_body)),
                        ));
                    }
                    let body = Limited::new(body, *this.max_body).collect();
                    this.state.set(State::Reading {
                        parts: Some(parts),
                        body,
                    });
                }
                StateProj::Reading { parts, body } => {
                    let read = ready!(body.poll(cx));
                    let parts = parts.take().expect("polled after completion");
                    let query = this.query.take().expect("polled after completion");
                    let sent = this
                        .key
                        .as_ref()
                        .or_else(|| parts.extensions.get::<SentKey>());
                    // The key is cut out of what the server wrote before
                    // any of it is shortened to fit a message: a key cut
                    // in two would no longer be found whole.
                    let secret = sent.map(SentKey::key);
                    let mut result = match read {
                        Ok(collected) => {
                            let body = collected.to_bytes();
                            match (on_response(&parts, body.clone(), &query, secret), secret) {
                                // An error from a body that holds the key:
                                // read again with the key cut out first.
                                (Err(_), Some(s)) if crate::text::holds(&body, s) => {
                                    let body = crate::text::redact_bytes(body, s);
                                    on_response(&parts, body, &query, secret)
                                }
                                (result, _) => result,
                            }
                        }
                        Err(_) if !parts.status.is_success() => {
                            Err(http_error(&parts, None, secret))
                        }
                        Err(e) if e.is::<LengthLimitError>() => {
                            Err(Error::body_too_large(*this.max_body))
                        }
                        Err(e) => Err(Error::transport(e)),
                    };
                    if let (Err(e), Some(secret)) = (&mut result, secret) {
                        e.redact(secret);
                    }
                    *this.query = Some(query);
                    return Poll::Ready(finish(this.trace, result));
                }
            }
        }
    }
}

fn finish(trace: &mut AttemptTrace, result: Result<JobDetail, Error>) -> Result<JobDetail, Error> {
    trace.finish(&result);
    result
}
