use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;

#[cfg(feature = "rustls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "rustls"))]
type Connector = HttpConnector;

/// The default transport: hyper-util's pooled client.
///
/// Keep-alive connections are pooled and reused; HTTP/1.1 and HTTP/2 (by
/// ALPN over TLS); HTTPS through rustls with the web PKI roots (feature
/// `rustls`, on by default); `TCP_NODELAY`; a connect timeout (default
/// 10 s). Redirects are never followed. Clones share the pool.
///
/// ```
/// use std::time::Duration;
/// use goenhance_jobs::HyperTransport;
///
/// let transport = HyperTransport::builder()
///     .connect_timeout(Duration::from_secs(3))
///     .pool_idle_timeout(Duration::from_secs(30))
///     .build();
/// # drop(transport);
/// ```
#[derive(Clone)]
pub struct HyperTransport {
    // Behind one `Arc`: the stack clones its transport for every call, and
    // the client itself is a large struct of a dozen reference counts.
    client: Arc<Client<Connector, Full<Bytes>>>,
}

impl HyperTransport {
    /// A transport with the defaults.
    pub fn new() -> HyperTransport {
        HyperTransport::builder().build()
    }

    /// Starts a transport with settings of your own.
    pub fn builder() -> HyperTransportBuilder {
        HyperTransportBuilder {
            connect_timeout: Some(Duration::from_secs(10)),
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: 256,
            http2_only: false,
        }
    }
}

impl Default for HyperTransport {
    fn default() -> Self {
        HyperTransport::new()
    }
}

impl fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransport").finish_non_exhaustive()
    }
}

/// Settings of a [`HyperTransport`].
#[derive(Debug, Clone)]
pub struct HyperTransportBuilder {
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    http2_only: bool,
}

impl HyperTransportBuilder {
    /// How long to wait for a connection (default 10 s); `None` for no limit.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// How long an idle pooled connection is kept (default 90 s).
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// How many idle connections are kept per host (default 256, above the
    /// hub's default of 64 polls in flight, so busy connections are reused
    /// rather than closed and opened again).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Speak only HTTP/2, also over plain TCP (prior knowledge).
    pub fn http2_only(mut self, yes: bool) -> Self {
        self.http2_only = yes;
        self
    }

    /// Makes the transport.
    pub fn build(self) -> HyperTransport {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(self.connect_timeout);
        #[cfg(feature = "rustls")]
        let connector = {
            http.enforce_http(false);
            let builder = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
                .expect("the ring provider supports the default protocol versions")
                .https_or_http();
            if self.http2_only {
                builder.enable_http2().wrap_connector(http)
            } else {
                builder.enable_http1().enable_http2().wrap_connector(http)
            }
        };
        #[cfg(not(feature = "rustls"))]
        let connector = http;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .http2_only(self.http2_only)
            .build(connector);
        HyperTransport {
            client: Arc::new(client),
        }
    }
}

impl Service<Request<Full<Bytes>>> for HyperTransport {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        self.client.request(req)
    }
}
