//! What a client downloads with: the transport without the auth layer,
//! the retry policy and the downloads' own budget, the slots.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::error::BoxError;
use crate::retry::{RetryBudget, RetryPolicy, TokenBucket};

/// Downloads of one client that run at once unless
/// [`ClientBuilder::max_downloads`](crate::ClientBuilder::max_downloads) says otherwise.
pub const DEFAULT_MAX_DOWNLOADS: usize = 4;

/// The body of the raw transport, boxed.
pub(crate) type RawBody = UnsyncBoxBody<Bytes, BoxError>;

/// The client's transport without the auth layer, boxed once.
pub(crate) type RawTransport =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<RawBody>, BoxError>;

/// Boxes a transport for downloads.
pub(crate) fn raw_transport<T, B>(transport: T) -> RawTransport
where
    T: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    T::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        transport
            .map_response(|res: Response<B>| res.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    )
}

/// The download settings of a [`ClientBuilder`](crate::ClientBuilder).
#[derive(Clone, Debug)]
pub(crate) struct DownloadSettings {
    pub(crate) max_downloads: usize,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        DownloadSettings {
            max_downloads: DEFAULT_MAX_DOWNLOADS,
        }
    }
}

/// What a client downloads with; one per client, shared by its clones.
pub(crate) struct Downloader {
    pub(super) transport: RawTransport,
    pub(super) retry: RetryPolicy,
    /// The downloads' own retry budget, apart from the polls'.
    pub(super) budget: Option<Arc<dyn RetryBudget>>,
    pub(super) idle_timeout: Duration,
    pub(super) insecure_http: bool,
    pub(super) slots: Arc<Semaphore>,
}

impl fmt::Debug for Downloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Downloader")
            .field("idle_timeout", &self.idle_timeout)
            .field("insecure_http", &self.insecure_http)
            .field("budget", &self.budget)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Downloader {
    pub(crate) fn new(
        transport: RawTransport,
        retry: RetryPolicy,
        idle_timeout: Duration,
        insecure_http: bool,
        settings: &DownloadSettings,
    ) -> Downloader {
        let budget = retry
            .get_budget()
            .map(|_| Arc::new(TokenBucket::default()) as Arc<dyn RetryBudget>);
        Downloader {
            transport,
            retry,
            budget,
            idle_timeout,
            insecure_http,
            // A semaphore holds at most MAX_PERMITS: more would panic.
            slots: Arc::new(Semaphore::new(
                settings.max_downloads.clamp(1, Semaphore::MAX_PERMITS),
            )),
        }
    }
}
