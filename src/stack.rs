//! The query stack that [`Client`](crate::Client) builds and its hub
//! drives: retry over timeout over the service, over auth and the
//! transport. Below both the client and the hub, so neither imports the
//! other for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::auth::AuthLayer;
use crate::download::{self, RawTransport};
use crate::error::{BoxError, Error};
use crate::model::JobDetail;
use crate::query::JobQuery;
use crate::retry::{self, RetryLayer, RetryPolicy};
use crate::service::{BaseUrl, JobStatusService};
use crate::timeout::TimeoutLayer;

/// The query stack below polling: retry over timeout over the service.
pub(crate) type Stack = BoxCloneSyncService<JobQuery, JobDetail, Error>;

/// One call of the same stack, for [`Client::get`]: a clone of the concrete
/// stack driven to its answer, boxed once (a [`Stack`] clone would box the
/// service again and then its future).
pub(crate) type GetFn =
    Arc<dyn Fn(JobQuery) -> BoxFuture<'static, Result<JobDetail, Error>> + Send + Sync>;

pub(crate) type MakeStack = Box<dyn FnOnce(&StackSettings) -> Stacks + Send>;

/// What a client is made of: the retried stack, the same stack without its
/// retries (the hub schedules retries itself, so that no slot is held
/// through a backoff), the one-off call, and the raw transport.
pub(crate) type Stacks = (Stack, Stack, GetFn, RawTransport);

pub(crate) struct StackSettings {
    pub(crate) base: BaseUrl,
    pub(crate) auth: AuthLayer,
    pub(crate) attempt_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_body: usize,
}

pub(crate) fn make_stack<T, B>(transport: T, s: &StackSettings) -> Stacks
where
    T: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    T::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let raw = download::raw_transport(transport.clone());
    // The service is given the key to cut out of errors, so answers need
    // not carry it.
    let service = JobStatusService::with_base_url(s.base.clone(), s.auth.layer_unmarked(transport))
        .max_body_size(s.max_body)
        .redacting(s.auth.sent_key());
    let attempt = TimeoutLayer::new(s.attempt_timeout).layer(service);
    // `get` runs the same retry loop with the service moved into its future,
    // so one clone per call instead of two. The policy clone shares the
    // budget.
    let one = attempt.clone();
    let policy = Arc::new(s.retry.clone());
    let get: GetFn =
        Arc::new(move |query| Box::pin(retry::oneshot(one.clone(), Arc::clone(&policy), query)));
    let attempts = BoxCloneSyncService::new(attempt.clone());
    let stack = RetryLayer::new(s.retry.clone()).layer(attempt);
    (BoxCloneSyncService::new(stack), attempts, get, raw)
}
