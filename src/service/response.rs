//! The answer to a query: a status, headers and a body become a detail or
//! an error that says what the server meant.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, DATE, RETRY_AFTER};
use http::{HeaderMap, StatusCode};

use crate::decode::decode;
use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;
use crate::text::{redact, server_text};

pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `body` is the answer with the key already cut out; `secret` is the key,
/// cut out again of what is decoded from it (JSON may spell it with
/// escapes) before any text is shortened for a message.
pub(super) fn on_response(
    parts: &http::response::Parts,
    body: Bytes,
    query: &JobQuery,
    secret: Option<&str>,
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
                        server_text(&redact_opt(kind, secret))
                    ));
                }
            }
            e
        })
    } else {
        Err(http_error(parts, Some(&body), secret))
    }
}

fn redact_opt<'a>(text: &'a str, secret: Option<&str>) -> std::borrow::Cow<'a, str> {
    match secret {
        Some(s) if text.contains(s) => redact(text, s).into(),
        _ => text.into(),
    }
}

pub(super) fn http_error(
    parts: &http::response::Parts,
    body: Option<&[u8]>,
    secret: Option<&str>,
) -> Error {
    let mut err = Error::http(parts.status, retry_after(&parts.headers));
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(deserialize_with = "crate::decode::lenient_code")]
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
            err.set_message(server_text(&redact_opt(&msg, secret)));
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
    use http::header::HeaderValue;

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
}
