//! [`ClientBuilder`]: the settings of a [`Client`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::Service;

use super::{Client, Inner, ENV_API_KEY, ENV_BASE_URL};
use crate::auth::{ApiKey, AuthLayer};
use crate::download::{DownloadSettings, Downloader};
use crate::error::{BoxError, Error};
use crate::hub::{Hub, HubConfig, Throttle};
use crate::poll::PollPolicy;
use crate::retry::RetryPolicy;
use crate::service::{BaseUrl, DEFAULT_BASE_URL, DEFAULT_MAX_BODY};
use crate::stack::{make_stack, MakeStack, StackSettings};
use crate::timeout::DEFAULT_ATTEMPT_TIMEOUT;
use crate::transport::HyperTransport;

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
    downloads: DownloadSettings,
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
            downloads: DownloadSettings::default(),
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
    pub fn poll_rate_limit(mut self, limiter: impl Throttle + 'static) -> Self {
        self.hub.throttle = Some(Arc::new(limiter));
        self
    }

    /// The most downloads of this client (and its clones) that run at once
    /// (default [`DEFAULT_MAX_DOWNLOADS`](crate::download::DEFAULT_MAX_DOWNLOADS); at least 1). Others wait for a
    /// free slot before sending anything.
    pub fn max_downloads(mut self, n: usize) -> Self {
        self.downloads.max_downloads = n.max(1);
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
        let (stack, get, raw) = match self.transport {
            Some(make) => make(&settings),
            None => make_stack(HyperTransport::new(), &settings),
        };
        let mut poll = self.poll;
        if let Some(t) = self.wait_timeout {
            poll = poll.timeout(t);
        }
        let hub = Hub::new(stack.clone(), poll.clone(), self.hub);
        let downloader = Downloader::new(
            raw,
            settings.retry,
            settings.attempt_timeout,
            self.allow_insecure_http,
            &self.downloads,
        );
        Ok(Client {
            inner: Arc::new(Inner {
                stack,
                get,
                poll,
                base,
                hub,
                downloader,
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

    const _: fn() = || {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Client>();
    };
}
