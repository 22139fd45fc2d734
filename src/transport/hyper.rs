use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;

use super::proxy::{Proxy, ProxyConnector};
use super::reuse::WatchConnector;
#[cfg(feature = "rustls")]
use super::tls::{self, TlsRoots};
#[cfg(feature = "rustls")]
use crate::Error;

#[cfg(feature = "rustls")]
type Connector = WatchConnector<hyper_rustls::HttpsConnector<ProxyConnector>>;
#[cfg(not(feature = "rustls"))]
type Connector = WatchConnector<ProxyConnector>;

/// The default transport: hyper-util's pooled client.
///
/// Keep-alive connections are pooled and reused; HTTP/1.1 and HTTP/2 (by
/// ALPN over TLS); HTTPS through rustls (feature `rustls`, on by default)
/// trusting the web PKI and the platform's roots (`TlsRoots`);
/// the proxy from the environment ([`Proxy::from_env`]); `TCP_NODELAY`; a
/// connect timeout (default 10 s). Redirects are never followed. Clones
/// share the pool.
///
/// A build without a TLS feature refuses every `https` URL before it
/// connects, with an [`Error::is_invalid_input`](crate::Error::is_invalid_input)
/// error that names the feature to enable: nothing meant for TLS (the key
/// above all) is ever sent in clear.
///
/// No connection goes stale under a request. A request that finds its
/// pooled connection closed by the server (an idle timeout on the other
/// side) is sent on a fresh connection by the pool itself. When the close
/// crosses the request instead — an HTTP/1.1 connection that had answered
/// before closes or resets as the request goes out, before any byte of its
/// answer — the transport tells that loss apart from a real failure (the
/// connection watches its own bytes), and what made the request sends it
/// again at once on a fresh connection, as Go's `net/http` does: the
/// [`RetryLayer`](crate::RetryLayer) (so [`Client`](crate::Client) and its
/// hub) and downloads. That resend is not an attempt, pays nothing from the
/// retry budget, happens with retries off too, and is made at most 4 times
/// in a row; a request lost on a fresh connection is never resent that way.
/// (The transport itself keeps no copy of each request for it: called
/// without a `RetryLayer`, it answers such a request with its error, which
/// is transient.) Idle connections are dropped after 50 s, below the 60 s
/// idle timeout of common load balancers, and HTTP/2 connections are
/// pinged every 30 s, idle or not, so a dead one is noticed (and dropped)
/// within 30 s plus a 10 s answer timeout.
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
            pool_idle_timeout: Some(Duration::from_secs(50)),
            http2_keep_alive_interval: Some(Duration::from_secs(30)),
            http2_keep_alive_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 256,
            http2_only: false,
            proxy: None,
            #[cfg(feature = "rustls")]
            tls_roots: TlsRoots::default(),
            #[cfg(feature = "rustls")]
            extra_roots: Vec::new(),
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
#[derive(Clone)]
pub struct HyperTransportBuilder {
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    http2_only: bool,
    http2_keep_alive_interval: Option<Duration>,
    http2_keep_alive_timeout: Duration,
    /// `None`: from the environment, read at `build`.
    proxy: Option<Proxy>,
    #[cfg(feature = "rustls")]
    tls_roots: TlsRoots,
    #[cfg(feature = "rustls")]
    extra_roots: Vec<pki_types::CertificateDer<'static>>,
}

impl fmt::Debug for HyperTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HyperTransportBuilder");
        d.field("connect_timeout", &self.connect_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("http2_only", &self.http2_only)
            .field("http2_keep_alive_interval", &self.http2_keep_alive_interval)
            .field("http2_keep_alive_timeout", &self.http2_keep_alive_timeout)
            .field("proxy", &self.proxy);
        #[cfg(feature = "rustls")]
        d.field("tls_roots", &self.tls_roots)
            .field("extra_roots", &self.extra_roots.len());
        d.finish()
    }
}

impl HyperTransportBuilder {
    /// How long to wait for a connection (default 10 s); `None` for no limit.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// How long an idle pooled connection is kept (default 50 s, below the
    /// 60 s after which common load balancers close idle connections).
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

    /// How often an HTTP/2 connection is pinged, idle or not, so that a
    /// dead one (a NAT or a load balancer that dropped it silently) is
    /// noticed and replaced (default 30 s); `None` for no pings.
    pub fn http2_keep_alive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.http2_keep_alive_interval = interval.into();
        self
    }

    /// How long a ping may go unanswered before its connection is closed
    /// (default 10 s).
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.http2_keep_alive_timeout = timeout;
        self
    }

    /// The proxy to go through (default [`Proxy::from_env`], read when the
    /// transport is built).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Which certificate authorities to trust (default
    /// [`TlsRoots::WebPkiAndNative`]), besides those given with
    /// [`root_certificates_pem`](Self::root_certificates_pem).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_roots(mut self, roots: TlsRoots) -> Self {
        self.tls_roots = roots;
        self
    }

    /// Also trusts the CA certificates in `pem` (one or more `CERTIFICATE`
    /// sections; other sections are skipped), such as the CA of a
    /// TLS-inspecting gateway. Calls add up.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when `pem` holds no certificate, is
    /// malformed, or holds a certificate that cannot be a trust anchor.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        self.extra_roots.extend(tls::parse_pem_roots(pem)?);
        Ok(self)
    }

    /// Makes the transport.
    pub fn build(self) -> HyperTransport {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(self.connect_timeout);
        http.enforce_http(false);
        let proxy = self.proxy.unwrap_or_else(Proxy::from_env);
        let tcp = ProxyConnector::new(http, proxy);
        #[cfg(feature = "rustls")]
        let connector = {
            let builder = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls::client_config(self.tls_roots, &self.extra_roots))
                .https_or_http();
            if self.http2_only {
                builder.enable_http2().wrap_connector(tcp)
            } else {
                builder.enable_http1().enable_http2().wrap_connector(tcp)
            }
        };
        #[cfg(not(feature = "rustls"))]
        let connector = tcp;
        let connector = WatchConnector::new(connector, self.http2_only);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .http2_only(self.http2_only)
            .http2_keep_alive_interval(self.http2_keep_alive_interval)
            .http2_keep_alive_timeout(self.http2_keep_alive_timeout)
            .http2_keep_alive_while_idle(true)
            .retry_canceled_requests(true)
            .build(connector);
        HyperTransport {
            client: Arc::new(client),
        }
    }
}

impl Service<Request<Full<Bytes>>> for HyperTransport {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        self.client.request(req)
    }
}
