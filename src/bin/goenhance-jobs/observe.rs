//! A transport that lets the live display see each job's latest status.
//!
//! The waits run through `Client::wait_all`, which yields only the end of
//! each job. To show `pending` → `processing` while they run, without
//! polling a second time, this wraps the HTTP transport and reads a copy of
//! each answer's body as the client consumes it. The body is handed on
//! unchanged, so the client's own size cap, timeouts and errors still apply.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use goenhance_jobs::{HyperTransport, JobDetail};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::Service;

/// Bodies larger than this are not inspected (job details are ~1 KiB).
const MAX_INSPECTED: usize = 64 * 1024;

/// The latest status text seen for each job id.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    statuses: Arc<Mutex<HashMap<String, String>>>,
}

impl Seen {
    fn record(&self, detail: &JobDetail) {
        let mut map = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            detail.img_uuid().to_owned(),
            detail.status().as_str().to_owned(),
        );
    }

    /// The latest status seen for `id`.
    pub(crate) fn status(&self, id: &str) -> Option<String> {
        let map = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).cloned()
    }
}

/// [`HyperTransport`] with its answers copied into a [`Seen`].
#[derive(Clone, Debug)]
pub(crate) struct Observe {
    inner: HyperTransport,
    seen: Seen,
}

impl Observe {
    pub(crate) fn new(inner: HyperTransport, seen: Seen) -> Self {
        Observe { inner, seen }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Request<Full<Bytes>>> for Observe {
    type Response = Response<Tee>;
    type Error = <HyperTransport as Service<Request<Full<Bytes>>>>::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let fut = self.inner.call(req);
        let seen = self.seen.clone();
        Box::pin(async move {
            let res = fut.await?;
            let inspect = res.status() == StatusCode::OK;
            Ok(res.map(|inner| Tee {
                inner,
                buf: inspect.then(Vec::new),
                seen,
            }))
        })
    }
}

/// A body that keeps a copy of what passes through and, once it has been
/// read to the end, records the job detail it holds.
#[derive(Debug)]
pub(crate) struct Tee {
    inner: Incoming,
    buf: Option<Vec<u8>>,
    seen: Seen,
}

impl Tee {
    fn finish(&mut self) {
        if let Some(buf) = self.buf.take() {
            if let Ok(detail) = JobDetail::from_json(&buf) {
                self.seen.record(&detail);
            }
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(buf), Some(data)) = (this.buf.as_mut(), frame.data_ref()) {
                    if buf.len() + data.len() > MAX_INSPECTED {
                        this.buf = None;
                    } else {
                        buf.extend_from_slice(data);
                    }
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.buf = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_status_of_a_detail() {
        let seen = Seen::default();
        let body = br#"{"code":0,"msg":"Success","data":{"img_uuid":"a1","status":"processing"}}"#;
        seen.record(&JobDetail::from_json(body).unwrap());
        assert_eq!(seen.status("a1").as_deref(), Some("processing"));
        assert_eq!(seen.status("b2"), None);
    }
}
