//! [`Client`]: the ready-made stack, and [`ClientBuilder`].
//!
//! ```text
//! Client ─ get ──────────────┐
//!        ─ wait/watch/wait_all ─ PollPolicy (hub for many jobs)
//!                            └ RetryLayer → TimeoutLayer → JobStatusService → AuthLayer → transport
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::auth::{ApiKey, AuthLayer};
use crate::error::{BoxError, Error};
use crate::hub::{Hub, HubConfig};
use crate::model::{JobDetail, JobQuery};
use crate::poll::{self, PollPolicy};
use crate::retry::{self, RetryLayer, RetryPolicy};
use crate::service::{BaseUrl, JobStatusService, DEFAULT_BASE_URL, DEFAULT_MAX_BODY};
use crate::timeout::{TimeoutLayer, DEFAULT_ATTEMPT_TIMEOUT};
use crate::transport::HyperTransport;

/// The environment variable holding the API key.
pub const ENV_API_KEY: &str = "GOENHANCE_API_KEY";
/// The environment variable holding the base URL (optional).
pub const ENV_BASE_URL: &str = "GOENHANCE_BASE_URL";

/// The query stack below polling: retry over timeout over the service.
pub(crate) type Stack = BoxCloneSyncService<JobQuery, JobDetail, Error>;

/// One call of the same stack, for [`Client::get`]: a clone of the concrete
/// stack driven to its answer, boxed once (a [`Stack`] clone would box the
/// service again and then its future).
type GetFn = Arc<dyn Fn(JobQuery) -> BoxFuture<'static, Result<JobDetail, Error>> + Send + Sync>;

/// A handle to the GoEnhance job API: one status fetch, a wait, a watch, or
/// a wait on many jobs at once.
///
/// Cheap to clone (an `Arc`); clones share the connection pool, the retry
/// budget, what the adaptive schedule learned, and the scheduler that runs
/// all waits. `Send + Sync`, and its futures and streams are `Send`, so it
/// fits in an axum state or a `tokio::spawn`.
///
/// ```no_run
/// use goenhance_jobs::{Client, JobStatus};
///
/// # #[tokio::main] async fn main() -> Result<(), goenhance_jobs::Error> {
/// let client = Client::from_env()?; // GOENHANCE_API_KEY, GOENHANCE_BASE_URL
/// let job = client.wait("5334c57d-8443-4b79-ba24-8539c2163c74").await?;
/// match job.status() {
///     JobStatus::Succeeded => {
///         for out in job.outputs() {
///             println!("{} {}", out.kind(), out.url());
///         }
///     }
///     other => eprintln!("job ended {other}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    stack: Stack,
    get: GetFn,
    poll: PollPolicy,
    base: BaseUrl,
    hub: Hub,
}

impl Client {
    /// Starts a client with settings of your own.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client from the environment: `GOENHANCE_API_KEY` (required) and
    /// `GOENHANCE_BASE_URL` (default `https://api.goenhance.ai`), with the
    /// default settings otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when `GOENHANCE_API_KEY` is missing or
    /// empty (the message names the variable) or a value is refused.
    pub fn from_env() -> Result<Client, Error> {
        ClientBuilder::from_env_with(|name| std::env::var(name).ok())?.build()
    }

    /// Fetches a job's status once (retries and the attempt timeout apply).
    ///
    /// # Errors
    ///
    /// An invalid id ([`Error::is_invalid_input`], nothing is sent), or the
    /// last error after retries.
    pub async fn get(&self, img_uuid: &str) -> Result<JobDetail, Error> {
        let query = JobQuery::new(img_uuid)?;
        (self.inner.get)(query).await
    }

    /// Waits until the job is finished: `Ok` for a job that succeeded and
    /// for one that failed (check [`JobDetail::status`]).
    ///
    /// Concurrent waits on the same job share one poll loop. Dropping the
    /// future stops the polling (once no other waiter wants the job).
    ///
    /// # Errors
    ///
    /// An invalid id; the deadline ([`Error::is_deadline`], with the last
    /// detail and the history); a stall ([`Error::is_stall`]) if enabled;
    /// an error that is not transient (a refused key, `code != 0`).
    pub async fn wait(&self, img_uuid: &str) -> Result<JobDetail, Error> {
        let query = JobQuery::new(img_uuid)?;
        self.inner.hub.wait(query).await
    }

    /// Follows a job: yields each distinct status once, ending after the
    /// terminal one (or after the error that ended the wait). Dropping the
    /// stream stops the polling.
    pub fn watch(
        &self,
        img_uuid: &str,
    ) -> impl Stream<Item = Result<JobDetail, Error>> + Send + 'static {
        use futures_util::StreamExt;
        match JobQuery::new(img_uuid) {
            Ok(query) => {
                poll::watch(self.inner.stack.clone(), query, self.inner.poll.clone()).left_stream()
            }
            Err(e) => futures_util::stream::once(std::future::ready(Err(e))).right_stream(),
        }
    }

    /// Waits on many jobs at once, through one scheduler: yields one
    /// `(query, result)` per query in completion order. Duplicate ids are
    /// polled once and answered for each. Dropping the stream cancels what
    /// remains.
    pub fn wait_all<I>(
        &self,
        queries: I,
    ) -> impl Stream<Item = (JobQuery, Result<JobDetail, Error>)> + Send + 'static
    where
        I: IntoIterator<Item = JobQuery>,
    {
        self.inner.hub.wait_all(queries, false)
    }

    /// Like [`wait_all`](Self::wait_all), and also yields each job's status
    /// changes on the way: each distinct status once, as
    /// `(query, Ok(detail))` with a status that is not terminal. A job's
    /// last item is its end: a terminal detail or an error. The stream ends
    /// when every job has ended. One scheduler polls them all, as for
    /// `wait_all`; this is what a progress display wants.
    pub fn watch_all<I>(
        &self,
        queries: I,
    ) -> impl Stream<Item = (JobQuery, Result<JobDetail, Error>)> + Send + 'static
    where
        I: IntoIterator<Item = JobQuery>,
    {
        self.inner.hub.wait_all(queries, true)
    }

    /// The scheduler of waits, for durable tracking.
    pub(crate) fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The base URL.
    pub fn base_url(&self) -> &BaseUrl {
        &self.inner.base
    }

    /// The polling policy of waits.
    pub fn poll_policy(&self) -> &PollPolicy {
        &self.inner.poll
    }

    /// The query stack (retry, timeout, service, auth, transport) as a tower
    /// service, to compose into a stack of your own.
    pub fn service(&self) -> BoxCloneSyncService<JobQuery, JobDetail, Error> {
        self.inner.stack.clone()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base)
            .field("poll", &self.inner.poll)
            .field("api_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

type MakeStack = Box<dyn FnOnce(&StackSettings) -> (Stack, GetFn) + Send>;

pub(crate) struct StackSettings {
    base: BaseUrl,
    auth: AuthLayer,
    attempt_timeout: Duration,
    retry: RetryPolicy,
    max_body: usize,
}

fn make_stack<T, B>(transport: T, s: &StackSettings) -> (Stack, GetFn)
where
    T: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    T::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let service = JobStatusService::with_base_url(s.base.clone(), s.auth.layer(transport))
        .max_body_size(s.max_body);
    let attempt = TimeoutLayer::new(s.attempt_timeout).layer(service);
    // `get` runs the same retry loop with the service moved into its future,
    // so one clone per call instead of two. The policy clone shares the
    // budget.
    let one = attempt.clone();
    let policy = Arc::new(s.retry.clone());
    let get: GetFn =
        Arc::new(move |query| Box::pin(retry::oneshot(one.clone(), Arc::clone(&policy), query)));
    let stack = RetryLayer::new(s.retry.clone()).layer(attempt);
    (BoxCloneSyncService::new(stack), get)
}

/// Settings of a [`Client`].
///
/// | setting | default |
/// |---|---|
/// | base URL | `https://api.goenhance.ai` (http only on loopback unless [`allow_insecure_http`](Self::allow_insecure_http)) |
/// | attempt timeout | 10 s |
/// | wait timeout | 30 min |
/// | retry | 5 attempts, 200 ms × 2ⁿ up to 10 s, full jitter, `Retry-After` up to 60 s, token-bucket budget 500/5 |
/// | polling | adaptive, 1 s to 60 s |
/// | body cap | 1 MiB |
/// | polls in flight (all waits) | 64 |
/// | transport | [`HyperTransport`] |
///
/// ```
/// use std::time::Duration;
/// use goenhance_jobs::{Client, PollPolicy, RetryPolicy};
///
/// let client = Client::builder()
///     .api_key("my-key")
///     .attempt_timeout(Duration::from_secs(5))
///     .wait_timeout(Duration::from_secs(600))
///     .retry_policy(RetryPolicy::default().max_attempts(3))
///     .poll_policy(PollPolicy::fixed(Duration::from_secs(5)))
///     .build()?;
/// # drop(client);
/// # Ok::<(), goenhance_jobs::Error>(())
/// ```
pub struct ClientBuilder {
    base_url: Option<String>,
    api_key: Option<ApiKey>,
    attempt_timeout: Duration,
    wait_timeout: Option<Duration>,
    retry: RetryPolicy,
    poll: PollPolicy,
    transport: Option<MakeStack>,
    allow_insecure_http: bool,
    max_body: usize,
    hub: HubConfig,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: None,
            api_key: None,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            wait_timeout: None,
            retry: RetryPolicy::default(),
            poll: PollPolicy::default(),
            transport: None,
            allow_insecure_http: false,
            max_body: DEFAULT_MAX_BODY,
            hub: HubConfig::default(),
        }
    }
}

impl ClientBuilder {
    pub(crate) fn from_env_with(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let key = lookup(ENV_API_KEY)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::invalid_input(format!("{ENV_API_KEY} is not set")))?;
        let mut builder = ClientBuilder::default().api_key(key);
        if let Some(base) = lookup(ENV_BASE_URL).filter(|b| !b.is_empty()) {
            builder = builder.base_url(&base);
        }
        Ok(builder)
    }

    /// A builder with the key and base URL from the environment, for more
    /// settings before [`build`](Self::build).
    ///
    /// # Errors
    ///
    /// As [`Client::from_env`].
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env_with(|name| std::env::var(name).ok())
    }

    /// The API's base URL; a path prefix is kept.
    pub fn base_url(mut self, url: &str) -> Self {
        self.base_url = Some(url.to_owned());
        self
    }

    /// The API key (required).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(ApiKey::new(key));
        self
    }

    /// The timeout of one attempt, body included (default 10 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The deadline of a wait (default 30 min); overrides the poll policy's.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// The retry policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The polling policy of waits.
    pub fn poll_policy(mut self, policy: PollPolicy) -> Self {
        self.poll = policy;
        self
    }

    /// Allows plain `http` to hosts that are not loopback. The key then
    /// travels unencrypted.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// The cap on a response body (default 1 MiB).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The most polls in flight at once, over all waits of the client
    /// (default 64).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.hub.max_in_flight = n.max(1);
        self
    }

    /// A limit on polls started per second, over all waits of the client
    /// (default none).
    pub fn poll_rate_limit(mut self, limiter: impl crate::hub::RateLimit + 'static) -> Self {
        self.hub.rate_limit = Some(Arc::new(limiter));
        self
    }

    /// The HTTP transport: any `tower::Service<http::Request<Full<Bytes>>>`
    /// answering `http::Response<B>` (default [`HyperTransport`]). Wrap it in
    /// tower-http layers as you like; the key is added above it.
    pub fn transport<T, B>(mut self, transport: T) -> Self
    where
        T: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        T::Future: Send + 'static,
        T::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.transport = Some(Box::new(move |s: &StackSettings| make_stack(transport, s)));
        self
    }

    /// Makes the client. A tokio runtime must be running when waits start.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when the key is missing or not valid in a
    /// header, or the base URL is refused.
    pub fn build(self) -> Result<Client, Error> {
        let key = self.api_key.ok_or_else(|| {
            Error::invalid_input(format!("api key is not set (use api_key or {ENV_API_KEY})"))
        })?;
        let url = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let base = if self.allow_insecure_http {
            BaseUrl::new_insecure(url)?
        } else {
            BaseUrl::new(url)?
        };
        let settings = StackSettings {
            base: base.clone(),
            auth: AuthLayer::try_bearer(key)?,
            attempt_timeout: self.attempt_timeout,
            retry: self.retry,
            max_body: self.max_body,
        };
        let (stack, get) = match self.transport {
            Some(make) => make(&settings),
            None => make_stack(HyperTransport::new(), &settings),
        };
        let mut poll = self.poll;
        if let Some(t) = self.wait_timeout {
            poll = poll.timeout(t);
        }
        let hub = Hub::new(stack.clone(), poll.clone(), self.hub);
        Ok(Client {
            inner: Arc::new(Inner {
                stack,
                get,
                poll,
                base,
                hub,
            }),
        })
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("wait_timeout", &self.wait_timeout)
            .field("retry", &self.retry)
            .field("poll", &self.poll)
            .field("custom_transport", &self.transport.is_some())
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("max_body", &self.max_body)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_requires_the_key_and_names_the_variable() {
        let err = ClientBuilder::from_env_with(|_| None).unwrap_err();
        assert!(err.is_invalid_input());
        assert_eq!(
            err.to_string(),
            "invalid input: GOENHANCE_API_KEY is not set"
        );
        let b = ClientBuilder::from_env_with(|n| match n {
            ENV_API_KEY => Some("sk-env".into()),
            ENV_BASE_URL => Some("http://127.0.0.1:9".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(b.base_url.as_deref(), Some("http://127.0.0.1:9"));
        assert!(!format!("{b:?}").contains("sk-env"));
    }

    #[test]
    fn client_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Client>();
    }
}
