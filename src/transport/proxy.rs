//! Which HTTP proxy [`HyperTransport`](super::HyperTransport) goes through.
//!
//! ```
//! use goenhance_jobs::{HyperTransport, Proxy};
//!
//! // Every request through the company proxy, except to hosts of its own.
//! let proxy = Proxy::url("http://alice:s3cret@proxy.corp.example:3128")?
//!     .no_proxy("corp.example, 10.0.0.0/8");
//! assert!(!format!("{proxy:?}").contains("s3cret"));
//! let transport = HyperTransport::builder().proxy(proxy).build();
//! # drop(transport);
//! # Ok::<(), goenhance_jobs::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use crate::error::ProxyAuthRequired;
use crate::{BoxError, Error};

/// The HTTP proxy of a [`HyperTransport`](super::HyperTransport).
///
/// - [`Proxy::from_env`] (the default) reads `HTTPS_PROXY`, `HTTP_PROXY`,
///   `ALL_PROXY` and `NO_PROXY`, in upper or lower case, as curl does.
/// - [`Proxy::url`] sends every request through one proxy.
/// - [`Proxy::none`] connects directly.
/// - [`Proxy::no_proxy`] lists hosts that are reached directly.
///
/// Requests go through the proxy in a `CONNECT` tunnel, `https` and `http`
/// targets alike (as curl's `--proxytunnel`): the proxy sees the host and
/// port asked for and nothing else. The TLS session runs end to end inside
/// the tunnel, so the API key and the job ids travel only encrypted. (For a
/// plain-`http` target, which this crate allows only on loopback unless told
/// otherwise, a tunnel keeps the key from the proxy as well.)
///
/// Credentials in the proxy URL (`http://user:password@host:port`, percent
/// encoded) are sent as a `Proxy-Authorization: Basic` header on the
/// `CONNECT` only, marked sensitive; `Debug`, errors and logs never show
/// them. Only `http://` proxies are supported: an `https://` or `socks`
/// proxy is refused by [`Proxy::url`], and one from the environment fails
/// each request that would use it with an error that says so.
#[derive(Clone)]
pub struct Proxy {
    source: Source,
    /// `None` when nothing is proxied.
    matcher: Option<Arc<Matcher>>,
}

/// Shared (`Arc`): hyper-util clones the connector, and so the proxy, for
/// every request.
#[derive(Clone)]
enum Source {
    None,
    Env(Arc<EnvValues>),
    Url(Arc<str>),
}

/// The raw values read from the environment (credentials included: never
/// printed).
#[derive(Clone, Default)]
struct EnvValues {
    http: String,
    https: String,
    all: String,
    no: String,
}

impl Proxy {
    /// The proxy the environment asks for, the way curl reads it:
    ///
    /// - `https_proxy` / `HTTPS_PROXY` for `https` targets,
    /// - `http_proxy` (and `HTTP_PROXY`, except in a CGI program, where
    ///   a client could set it through a `Proxy:` header) for `http`
    ///   targets,
    /// - `all_proxy` / `ALL_PROXY` for either when the above is unset,
    /// - `no_proxy` / `NO_PROXY`: hosts reached directly, comma separated;
    ///   a name matches itself and its subdomains (`example.com`,
    ///   `.example.com`), an IP address or a CIDR block (`10.0.0.0/8`)
    ///   matches addresses, and `*` matches everything.
    ///
    /// The lower-case name wins when both are set. A value without a scheme
    /// is taken as `http://`. Loopback targets (`localhost`, `127.0.0.0/8`,
    /// `::1`) always go direct, since a proxy elsewhere cannot reach this
    /// machine's loopback. With none of these variables set, every request
    /// goes direct.
    ///
    /// The variables are read when this is called: a
    /// [`HyperTransport`](super::HyperTransport) reads them when it is
    /// built.
    pub fn from_env() -> Proxy {
        Proxy::from_env_with(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_env_with(lookup: impl Fn(&str) -> Option<String>) -> Proxy {
        let first = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| lookup(name).filter(|v| !v.trim().is_empty()))
                .unwrap_or_default()
        };
        let cgi = lookup("REQUEST_METHOD").is_some();
        let values = EnvValues {
            http: if cgi {
                first(&["http_proxy"])
            } else {
                first(&["http_proxy", "HTTP_PROXY"])
            },
            https: first(&["https_proxy", "HTTPS_PROXY"]),
            all: first(&["all_proxy", "ALL_PROXY"]),
            no: first(&["no_proxy", "NO_PROXY"]),
        };
        Proxy::from_values(values)
    }

    fn from_values(values: EnvValues) -> Proxy {
        let matcher = if [&values.http, &values.https, &values.all]
            .iter()
            .all(|v| v.is_empty())
        {
            None
        } else {
            Some(Arc::new(
                Matcher::builder()
                    .http(values.http.clone())
                    .https(values.https.clone())
                    .all(values.all.clone())
                    .no(values.no.clone())
                    .build(),
            ))
        };
        Proxy {
            source: Source::Env(Arc::new(values)),
            matcher,
        }
    }

    /// No proxy: every request connects directly.
    pub fn none() -> Proxy {
        Proxy {
            source: Source::None,
            matcher: None,
        }
    }

    /// Every request through the proxy at `url`, `http://host:port` (an
    /// `http://` scheme is assumed when missing), with credentials as
    /// `http://user:password@host:port` if the proxy wants them.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when `url` is not an `http` URL with a
    /// host (`https://` and `socks` proxies are not supported). The message
    /// does not quote the URL, which may hold a password.
    pub fn url(url: &str) -> Result<Proxy, Error> {
        let matcher = url_matcher(url, "")?;
        Ok(Proxy {
            source: Source::Url(url.into()),
            matcher: Some(Arc::new(matcher)),
        })
    }

    /// Hosts reached directly, in the format of `NO_PROXY` (see
    /// [`from_env`](Proxy::from_env)). It replaces the environment's
    /// `NO_PROXY` for a proxy from the environment, as curl's `--noproxy`
    /// does, and has no effect on [`Proxy::none`].
    pub fn no_proxy(self, hosts: &str) -> Proxy {
        match self.source {
            Source::None => self,
            Source::Env(values) => {
                let mut values = Arc::unwrap_or_clone(values);
                values.no = hosts.to_owned();
                Proxy::from_values(values)
            }
            Source::Url(url) => {
                let matcher = url_matcher(&url, hosts).expect("the url was checked by Proxy::url");
                Proxy {
                    source: Source::Url(url),
                    matcher: Some(Arc::new(matcher)),
                }
            }
        }
    }

    /// How a request to `dst` connects.
    fn route(&self, dst: &Uri) -> Route {
        let Some(matcher) = &self.matcher else {
            return Route::Direct;
        };
        if matches!(self.source, Source::Env(_)) && dst.host().is_some_and(is_loopback) {
            return Route::Direct;
        }
        match matcher.intercept(dst) {
            None => Route::Direct,
            Some(intercept) if intercept.uri().scheme() == Some(&http::uri::Scheme::HTTP) => {
                Route::Tunnel(intercept)
            }
            Some(intercept) => {
                Route::Unsupported(intercept.uri().scheme_str().unwrap_or("").to_owned())
            }
        }
    }
}

impl Default for Proxy {
    /// [`Proxy::from_env`].
    fn default() -> Self {
        Proxy::from_env()
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            Source::None => "none",
            Source::Env(_) => "env",
            Source::Url(_) => "url",
        };
        // The matcher shows proxy addresses and exceptions, never credentials.
        f.debug_struct("Proxy")
            .field("source", &source)
            .field("matcher", &self.matcher)
            .finish()
    }
}

fn url_matcher(url: &str, no: &str) -> Result<Matcher, Error> {
    let matcher = Matcher::builder()
        .all(url.to_owned())
        .no(no.to_owned())
        .build();
    // Ask for a host no exception can match, to see the parsed proxy.
    let probe = Uri::from_static("https://goenhance-jobs-probe.invalid/");
    let Some(intercept) = Matcher::builder()
        .all(url.to_owned())
        .build()
        .intercept(&probe)
    else {
        return Err(Error::invalid_input(
            "proxy url is not a valid http://host:port url",
        ));
    };
    if intercept.uri().scheme() != Some(&http::uri::Scheme::HTTP) {
        return Err(Error::invalid_input(
            "proxy url must be http:// (https and socks proxies are not supported)",
        ));
    }
    Ok(matcher)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .len()
                    .checked_sub(".localhost".len())
                    .and_then(|i| host.get(i..))
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
        }
    }
}

enum Route {
    Direct,
    Tunnel(Intercept),
    Unsupported(String),
}

/// The TCP connector of [`HyperTransport`](super::HyperTransport): direct,
/// or through a proxy's `CONNECT` tunnel (hyper-util's [`Tunnel`]).
#[derive(Clone)]
pub(crate) struct ProxyConnector {
    http: HttpConnector,
    proxy: Proxy,
}

impl ProxyConnector {
    pub(crate) fn new(http: HttpConnector, proxy: Proxy) -> Self {
        ProxyConnector { http, proxy }
    }
}

impl fmt::Debug for ProxyConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConnector")
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        // Without TLS, the connector would open a plain connection to an
        // `https` URL and send the key in clear: refuse before connecting.
        #[cfg(not(feature = "rustls"))]
        if dst.scheme() == Some(&http::uri::Scheme::HTTPS) {
            return Box::pin(std::future::ready(Err(crate::error::TlsUnavailable.into())));
        }
        match self.proxy.route(&dst) {
            Route::Direct => {
                let connecting = self.http.call(dst);
                Box::pin(async move { Ok(connecting.await?) })
            }
            Route::Tunnel(intercept) => {
                let mut tunnel = Tunnel::new(intercept.uri().clone(), self.http.clone());
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                // The tunnel assumes port 443 when the target has none.
                let dst = with_port(dst);
                Box::pin(async move { tunnel.call(dst?).await.map_err(refusal) })
            }
            Route::Unsupported(scheme) => Box::pin(std::future::ready(Err(format!(
                "proxy scheme {scheme} from the environment is not supported: use an http:// proxy"
            )
            .into()))),
        }
    }
}

/// The tunnel's error, a 407 told apart: hyper-util's tunnel error type is
/// not exported, so its one stable trace is its text (a test of the 407
/// path fails if that text changes).
fn refusal(e: impl Into<BoxError>) -> BoxError {
    let e = e.into();
    if e.to_string() == "tunnel error: proxy authorization required" {
        Box::new(ProxyAuthRequired(e))
    } else {
        e
    }
}

/// `dst` with its port written out, the scheme's default when it had none.
fn with_port(dst: Uri) -> Result<Uri, BoxError> {
    if dst.port().is_some() {
        return Ok(dst);
    }
    let port = if dst.scheme() == Some(&http::uri::Scheme::HTTP) {
        80
    } else {
        443
    };
    let host = dst.host().ok_or("the request has no host")?;
    let authority = format!("{host}:{port}");
    let mut parts = dst.into_parts();
    parts.authority = Some(authority.parse()?);
    Ok(Uri::from_parts(parts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> Proxy {
        Proxy::from_env_with(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn proxied_by(proxy: &Proxy, dst: &'static str) -> Option<String> {
        match proxy.route(&Uri::from_static(dst)) {
            Route::Direct => None,
            Route::Tunnel(i) => Some(i.uri().to_string()),
            Route::Unsupported(s) => Some(format!("unsupported {s}")),
        }
    }

    #[test]
    fn env_reads_either_case_lower_first() {
        let p = env(&[("HTTPS_PROXY", "http://upper:1")]);
        assert_eq!(
            proxied_by(&p, "https://api.goenhance.ai/").as_deref(),
            Some("http://upper:1/")
        );
        let p = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "lower:2"),
        ]);
        assert_eq!(
            proxied_by(&p, "https://api.goenhance.ai/").as_deref(),
            Some("http://lower:2/")
        );
        let p = env(&[("ALL_PROXY", "http://all:3")]);
        assert_eq!(
            proxied_by(&p, "https://api.goenhance.ai/").as_deref(),
            Some("http://all:3/")
        );
        assert_eq!(
            proxied_by(&p, "http://gw.example/").as_deref(),
            Some("http://all:3/")
        );
        let p = env(&[("HTTP_PROXY", "http://h:4")]);
        assert_eq!(proxied_by(&p, "https://api.goenhance.ai/"), None);
        assert_eq!(
            proxied_by(&p, "http://gw.example/").as_deref(),
            Some("http://h:4/")
        );
        assert_eq!(proxied_by(&env(&[]), "https://api.goenhance.ai/"), None);
    }

    #[test]
    fn cgi_ignores_upper_case_http_proxy() {
        let p = env(&[("HTTP_PROXY", "http://h:4"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(proxied_by(&p, "http://gw.example/"), None);
        let p = env(&[("http_proxy", "http://h:4"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(
            proxied_by(&p, "http://gw.example/").as_deref(),
            Some("http://h:4/")
        );
    }

    #[test]
    fn no_proxy_from_env_and_loopback_go_direct() {
        let p = env(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("NO_PROXY", "goenhance.ai, 10.0.0.0/8"),
        ]);
        assert_eq!(proxied_by(&p, "https://api.goenhance.ai/"), None);
        assert_eq!(proxied_by(&p, "https://goenhance.ai/"), None);
        assert_eq!(proxied_by(&p, "https://10.1.2.3/"), None);
        assert_eq!(
            proxied_by(&p, "https://notgoenhance.ai/").as_deref(),
            Some("http://p:1/")
        );
        for dst in [
            "https://localhost:8443/",
            "https://127.0.0.1/",
            "https://[::1]:1/",
            "https://a.localhost/",
        ] {
            let uri = Uri::from_maybe_shared(dst).unwrap();
            assert!(matches!(p.route(&uri), Route::Direct), "{dst}");
        }
        // An explicit proxy takes loopback too, unless excepted.
        let p = Proxy::url("http://p:1").unwrap();
        assert_eq!(
            proxied_by(&p, "https://localhost:8443/").as_deref(),
            Some("http://p:1/")
        );
        let p = p.no_proxy("localhost");
        assert_eq!(proxied_by(&p, "https://localhost:8443/"), None);
        // `no_proxy` replaces the environment's list.
        let p = env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "goenhance.ai")])
            .no_proxy("other.example");
        assert_eq!(
            proxied_by(&p, "https://api.goenhance.ai/").as_deref(),
            Some("http://p:1/")
        );
    }

    #[test]
    fn unsupported_schemes() {
        let err = Proxy::url("https://user:pw@p:1").unwrap_err();
        assert!(err.is_invalid_input());
        assert_eq!(
            err.to_string(),
            "invalid input: proxy url must be http:// (https and socks proxies are not supported)"
        );
        assert!(Proxy::url("socks5://p:1").unwrap_err().is_invalid_input());
        let err = Proxy::url("http://user:pw@").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: proxy url is not a valid http://host:port url"
        );
        assert!(!format!("{err:?}").contains("pw"));
        let p = env(&[("HTTPS_PROXY", "socks5://p:1")]);
        assert_eq!(
            proxied_by(&p, "https://api.goenhance.ai/").as_deref(),
            Some("unsupported socks5")
        );
    }

    #[test]
    fn debug_hides_credentials() {
        let p = Proxy::url("http://alice:s3cret@p:1").unwrap();
        let shown = format!("{p:?}");
        assert!(shown.contains("http://p:1/"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice"),
            "{shown}"
        );
        let p = env(&[("https_proxy", "http://alice:s3cret@p:1")]);
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice"),
            "{shown}"
        );
    }

    #[test]
    fn ports_are_written_out_for_the_tunnel() {
        let uri = with_port(Uri::from_static("http://gw.example/x")).unwrap();
        assert_eq!(uri.to_string(), "http://gw.example:80/x");
        let uri = with_port(Uri::from_static("https://api.goenhance.ai/")).unwrap();
        assert_eq!(uri.to_string(), "https://api.goenhance.ai:443/");
        let uri = with_port(Uri::from_static("https://[::1]:8443/")).unwrap();
        assert_eq!(uri.to_string(), "https://[::1]:8443/");
    }
}
