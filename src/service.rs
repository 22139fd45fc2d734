//! [`JobStatusService`]: a job query in, a job detail out, over any HTTP
//! transport.
//!
//! The service builds `GET {base}/api/v1/jobs/detail?img_uuid=…`, sends it
//! through its transport, reads the body up to a cap and decodes it. Any
//! `tower::Service<http::Request<Full<Bytes>>>` is a transport, so a
//! `service_fn` is a mock:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use goenhance_jobs::{JobQuery, JobStatus, JobStatusService};
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), goenhance_jobs::Error> {
//! let transport = service_fn(|req: http::Request<Full<Bytes>>| async move {
//!     assert_eq!(req.uri(), "https://api.goenhance.ai/api/v1/jobs/detail?img_uuid=job-1");
//!     let body = r#"{"code":0,"msg":"Success","data":{"img_uuid":"job-1","status":"processing"}}"#;
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
//! });
//! let svc = JobStatusService::new("https://api.goenhance.ai", transport)?;
//! let detail = svc.oneshot(JobQuery::new("job-1")?).await?;
//! assert_eq!(detail.status(), &JobStatus::Processing);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CONTENT_LENGTH, DATE, RETRY_AFTER, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower::Service;

use crate::auth::SentKey;
use crate::error::{BoxError, Error};
use crate::model::{decode, JobDetail, JobQuery};

/// The default base URL of the API.
pub const DEFAULT_BASE_URL: &str = "https://api.goenhance.ai";

/// The default cap on a response body: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

const DETAIL_PATH: &str = "/api/v1/jobs/detail?img_uuid=";

static USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("goenhance-jobs/", env!("CARGO_PKG_VERSION")));
static ACCEPT_JSON: HeaderValue = HeaderValue::from_static("application/json");

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
    fn detail_uri(&self, id: &str) -> Uri {
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

/// Turns a [`JobQuery`] into a [`JobDetail`] with one HTTP request.
///
/// `T` is the transport: any `tower::Service<http::Request<Full<Bytes>>>`
/// answering `http::Response<B>` with `B: http_body::Body<Data = Bytes>`.
/// [`AuthLayer`](crate::AuthLayer) wraps the transport to add the key. The
/// service sends `Accept: application/json` and
/// `User-Agent: goenhance-jobs/<version>`, never follows a redirect (a 3xx is
/// an error: the key would travel along), and reads at most
/// [`max_body_size`](JobStatusService::max_body_size) bytes of the answer.
pub struct JobStatusService<T> {
    transport: T,
    base: BaseUrl,
    max_body: usize,
}

impl<T> JobStatusService<T> {
    /// Makes the service for `base_url` (checked as [`BaseUrl::new`] does).
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when the base URL is refused.
    pub fn new(base_url: &str, transport: T) -> Result<Self, Error> {
        Ok(JobStatusService::with_base_url(
            BaseUrl::new(base_url)?,
            transport,
        ))
    }

    /// Makes the service for an already checked base URL.
    pub fn with_base_url(base: BaseUrl, transport: T) -> Self {
        JobStatusService {
            transport,
            base,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Sets the cap on a response body (default 1 MiB). A larger body is an
    /// error ([`Error::is_body_too_large`]) and is not read past the cap.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &BaseUrl {
        &self.base
    }

    /// The transport.
    pub fn get_ref(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Gives the transport back.
    pub fn into_inner(self) -> T {
        self.transport
    }
}

impl<T: Clone> Clone for JobStatusService<T> {
    fn clone(&self) -> Self {
        JobStatusService {
            transport: self.transport.clone(),
            base: self.base.clone(),
            max_body: self.max_body,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for JobStatusService<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStatusService")
            .field("base", &self.base)
            .field("max_body", &self.max_body)
            .field("transport", &self.transport)
            .finish()
    }
}

/// Builds the request for a query: method, URI and headers.
pub(crate) fn build_request(base: &BaseUrl, query: &JobQuery) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.method_mut() = Method::GET;
    *req.uri_mut() = base.detail_uri(query.img_uuid());
    let headers = req.headers_mut();
    headers.insert(ACCEPT, ACCEPT_JSON.clone());
    headers.insert(USER_AGENT, USER_AGENT_VALUE.clone());
    req
}

impl<T, B> Service<JobQuery> for JobStatusService<T>
where
    T: Service<Request<Full<Bytes>>, Response = Response<B>>,
    T::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = JobDetail;
    type Error = Error;
    type Future = ResponseFuture<T::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.transport.poll_ready(cx).map_err(Error::transport)
    }

    fn call(&mut self, query: JobQuery) -> Self::Future {
        let span = tracing::debug_span!(
            "job_status",
            img_uuid = %query.img_uuid(),
            attempt = query.attempt,
            outcome = tracing::field::Empty,
        );
        let request = build_request(&self.base, &query);
        let future = {
            let _enter = span.enter();
            self.transport.call(request)
        };
        ResponseFuture {
            state: State::Sending { future },
            query: Some(query),
            max_body: self.max_body,
            span,
        }
    }
}

pin_project! {
    /// The future of [`JobStatusService`]: sends, reads the capped body,
    /// decodes.
    pub struct ResponseFuture<F, B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: State<F, B>,
        query: Option<JobQuery>,
        max_body: usize,
        span: tracing::Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B>
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
        let _enter = this.span.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Sending { future } => {
                    let response = match ready!(future.poll(cx)) {
                        Ok(r) => r,
                        Err(e) => return Poll::Ready(finish(this.span, Err(Error::transport(e)))),
                    };
                    let (parts, body) = response.into_parts();
                    if parts.status.is_success()
                        && content_length(&parts.headers).is_some_and(|n| n > *this.max_body as u64)
                    {
                        return Poll::Ready(finish(
                            this.span,
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
                    let mut result = match read {
                        Ok(collected) => on_response(&parts, collected.to_bytes(), &query),
                        Err(_) if !parts.status.is_success() => Err(http_error(&parts, None)),
                        Err(e) if e.is::<LengthLimitError>() => {
                            Err(Error::body_too_large(*this.max_body))
                        }
                        Err(e) => Err(Error::transport(e)),
                    };
                    if let (Err(e), Some(sent)) = (&mut result, parts.extensions.get::<SentKey>()) {
                        e.redact(sent.key());
                    }
                    *this.query = Some(query);
                    return Poll::Ready(finish(this.span, result));
                }
            }
        }
    }
}

fn finish(span: &tracing::Span, result: Result<JobDetail, Error>) -> Result<JobDetail, Error> {
    match &result {
        Ok(d) => {
            span.record("outcome", d.status().as_str());
        }
        Err(e) => {
            span.record("outcome", tracing::field::display(e));
        }
    }
    result
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn on_response(
    parts: &http::response::Parts,
    body: Bytes,
    query: &JobQuery,
) -> Result<JobDetail, Error> {
    if parts.status.is_success() {
        decode(&body, Some(query.img_uuid())).map_err(|mut e| {
            // A gateway's HTML page is the usual garbled 200: say so.
            if e.is_decode() {
                if let Some(kind) = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.to_ascii_lowercase().contains("json"))
                {
                    e.set_message(format!(
                        "body is {}, not json",
                        crate::error::server_text(kind)
                    ));
                }
            }
            e
        })
    } else {
        Err(http_error(parts, Some(&body)))
    }
}

fn http_error(parts: &http::response::Parts, body: Option<&[u8]>) -> Error {
    let mut err = Error::http(parts.status, retry_after(&parts.headers));
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(deserialize_with = "crate::model::lenient_code")]
        code: i64,
        #[serde(default)]
        msg: Option<String>,
    }
    // An envelope that says `code: 0` ("Success") on an error status
    // explains nothing: only an error code and its message are kept.
    if let Some(Ok(b)) = body
        .map(serde_json::from_slice::<ErrorBody>)
        .filter(|b| b.as_ref().is_ok_and(|b| b.code != 0))
    {
        err.set_api_code(b.code);
        let reason = parts.status.canonical_reason().unwrap_or("");
        if let Some(msg) = b
            .msg
            .filter(|m| !m.is_empty() && !m.eq_ignore_ascii_case(reason))
        {
            err.set_message(crate::error::server_text(&msg));
        }
    }
    if parts.status.is_redirection() && parts.status != StatusCode::NOT_MODIFIED {
        err.set_message("redirects are not followed");
    }
    if parts.status == StatusCode::UNAUTHORIZED && err.api_code().is_none() {
        err.set_message("the api key was refused");
    }
    err
}

/// Reads `Retry-After`: delay-seconds, or an HTTP date measured from the
/// response's `Date` header when there is one (so clock skew does not
/// matter), else from this machine's clock.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    let now = headers
        .get(DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or_else(SystemTime::now);
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:44 GMT"),
        );
        h.insert(
            DATE,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            DATE,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:50:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

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
