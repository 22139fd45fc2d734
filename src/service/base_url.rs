//! [`BaseUrl`]: where the API is, checked once.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use crate::error::Error;

const DETAIL_PATH: &str = "/api/v1/jobs/detail?img_uuid=";

/// A checked base URL of the API.
///
/// `https://` anywhere; `http://` only on loopback (`127.0.0.0/8`, `::1`,
/// `localhost`) unless made with [`BaseUrl::new_insecure`]. A path prefix is
/// kept (`https://gw.example/goenhance` →
/// `https://gw.example/goenhance/api/v1/jobs/detail`). User info, a query and
/// a fragment are refused.
///
/// ```
/// use goenhance_jobs::BaseUrl;
///
/// assert!(BaseUrl::new("http://127.0.0.1:8080").is_ok());
/// assert!(BaseUrl::new("http://api.example").unwrap_err().is_invalid_input());
/// assert!(BaseUrl::new_insecure("http://api.example").is_ok());
/// assert_eq!(BaseUrl::new("https://gw.example/goenhance/")?.as_str(), "https://gw.example/goenhance");
/// # Ok::<(), goenhance_jobs::Error>(())
/// ```
#[derive(Clone)]
pub struct BaseUrl {
    inner: Arc<BaseParts>,
}

/// A base URL, parsed once into the parts every request URI reuses.
struct BaseParts {
    /// The base without a trailing slash.
    base: Box<str>,
    scheme: Scheme,
    authority: Authority,
    /// `{path prefix}/api/v1/jobs/detail?img_uuid=`, ready for an id.
    path_query: Box<str>,
}

impl PartialEq for BaseUrl {
    fn eq(&self, other: &Self) -> bool {
        self.inner.base == other.inner.base
    }
}

impl Eq for BaseUrl {}

impl BaseUrl {
    /// Checks `url`: `https`, or `http` on a loopback host.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when the URL does not parse, has another
    /// scheme, uses `http` on a host that is not loopback, or carries user
    /// info, a query or a fragment.
    pub fn new(url: &str) -> Result<BaseUrl, Error> {
        BaseUrl::parse(url, false)
    }

    /// Like [`BaseUrl::new`], but allows plain `http` to any host.
    ///
    /// The API key then travels unencrypted: use this only for a trusted
    /// network, such as a sidecar proxy.
    ///
    /// # Errors
    ///
    /// As [`BaseUrl::new`], except for the loopback rule.
    pub fn new_insecure(url: &str) -> Result<BaseUrl, Error> {
        BaseUrl::parse(url, true)
    }

    fn parse(url: &str, allow_http: bool) -> Result<BaseUrl, Error> {
        if url.contains('#') {
            return Err(Error::invalid_input("base url must not have a fragment"));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::invalid_input("base url does not parse").with_source(e))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| Error::invalid_input("base url has no scheme"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| Error::invalid_input("base url has no host"))?;
        if authority.as_str().contains('@') {
            return Err(Error::invalid_input("base url must not carry user info"));
        }
        let port = authority
            .as_str()
            .rsplit_once(':')
            .map(|(_, port)| port)
            .filter(|port| !port.contains(']') && !port.is_empty());
        if port.is_some_and(|port| port.parse::<u16>().map_or(true, |p| p == 0)) {
            return Err(Error::invalid_input(
                "base url port must be a number from 1 to 65535",
            ));
        }
        if uri.query().is_some() {
            return Err(Error::invalid_input("base url must not have a query"));
        }
        match scheme {
            "https" => {}
            "http" if allow_http || is_loopback(authority.host()) => {}
            "http" => {
                return Err(Error::invalid_input(
                    "base url uses http on a host that is not loopback; use https or opt in to insecure http",
                ))
            }
            _ => return Err(Error::invalid_input("base url scheme must be https or http")),
        }
        let path = uri.path().trim_end_matches('/');
        let base = format!("{scheme}://{authority}{path}");
        let path_query = format!("{path}{DETAIL_PATH}");
        Ok(BaseUrl {
            inner: Arc::new(BaseParts {
                base: base.into(),
                scheme: uri.scheme().expect("checked above").clone(),
                authority: authority.clone(),
                path_query: path_query.into(),
            }),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.inner.base
    }

    /// `{base}/api/v1/jobs/detail?img_uuid={id}`. Only the path and query
    /// are parsed per request; the scheme and authority were parsed once.
    pub(super) fn detail_uri(&self, id: &str) -> Uri {
        let mut pq = String::with_capacity(self.inner.path_query.len() + id.len());
        pq.push_str(&self.inner.path_query);
        pq.push_str(id);
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.inner.scheme.clone());
        parts.authority = Some(self.inner.authority.clone());
        // The path came from a parsed URI and ids are unreserved characters,
        // so neither step can fail.
        parts.path_and_query = Some(
            PathAndQuery::try_from(pq).expect("a validated base url and id form a valid path"),
        );
        Uri::from_parts(parts).expect("a validated base url and id form a valid uri")
    }
}

fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BaseUrl").field(&&*self.inner.base).finish()
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in ["localhost", "LOCALHOST", "127.0.0.1", "127.3.4.5", "[::1]"] {
            assert!(is_loopback(ok), "{ok}");
        }
        for bad in [
            "example.com",
            "10.0.0.1",
            "[::2]",
            "localhost.evil.com",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn base_url_rules() {
        assert!(BaseUrl::new("ftp://x").is_err());
        assert!(BaseUrl::new("https://user:pw@x").is_err());
        assert!(BaseUrl::new("https://x/?a=b").is_err());
        assert!(BaseUrl::new("https://x/#f").is_err());
        assert!(BaseUrl::new("api.goenhance.ai").is_err());
        let b = BaseUrl::new("http://[::1]:8080/p/").unwrap();
        assert_eq!(
            b.detail_uri("id-1").to_string(),
            "http://[::1]:8080/p/api/v1/jobs/detail?img_uuid=id-1"
        );
    }
}
