//! The request of a query: method, URI and headers.

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, USER_AGENT};
use http::{Method, Request};
use http_body_util::Full;

use super::BaseUrl;
use crate::query::JobQuery;

static USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("goenhance-jobs/", env!("CARGO_PKG_VERSION")));
static ACCEPT_JSON: HeaderValue = HeaderValue::from_static("application/json");

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
