//! What a download reads from response headers: sizes, ranges, validators
//! and `Retry-After`.

use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue, CONTENT_RANGE, ETAG, LAST_MODIFIED};
use http::HeaderMap;

/// A strong ETag, else Last-Modified: what `If-Range` may carry.
pub(super) fn validator(headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(etag) = headers.get(ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            return Some(etag.clone());
        }
    }
    headers.get(LAST_MODIFIED).cloned()
}

/// Whether a `206` answered with `headers` says the file is no longer the
/// one `asked` (the `If-Range` sent) named: an ETag, or a date, of its own
/// that differs. A `206` that names none is taken at its word.
pub(super) fn validator_changed(asked: &HeaderValue, headers: &HeaderMap) -> bool {
    let name = if asked.as_bytes().starts_with(b"\"") {
        ETAG
    } else {
        LAST_MODIFIED
    };
    headers.get(name).is_some_and(|got| got != asked)
}

/// A header as a number.
pub(super) fn header_u64(headers: &HeaderMap, name: HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` as `(FIRST, TOTAL)`; a total
/// of `*` is `None`.
pub(super) fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _last) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, total))
}

/// `Retry-After` in seconds or as an HTTP date.
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/1000"),
        );
        assert_eq!(content_range(&h), Some((100, Some(1000))));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 5-9/*"));
        assert_eq!(content_range(&h), Some((5, None)));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("items 1-2/3"));
        assert_eq!(content_range(&h), None);
    }

    #[test]
    fn weak_etags_do_not_validate_a_range() {
        let mut h = HeaderMap::new();
        h.insert(ETAG, HeaderValue::from_static("W/\"x\""));
        assert_eq!(validator(&h), None);
        h.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Sun, 29 Nov 2026 09:00:00 GMT"),
        );
        assert_eq!(validator(&h).unwrap(), "Sun, 29 Nov 2026 09:00:00 GMT");
        h.insert(ETAG, HeaderValue::from_static("\"strong\""));
        assert_eq!(validator(&h).unwrap(), "\"strong\"");
    }

    #[test]
    fn a_partial_answer_names_the_validator_it_was_asked_for_or_none() {
        let etag = HeaderValue::from_static("\"v1\"");
        let date = HeaderValue::from_static("Sun, 29 Nov 2026 09:00:00 GMT");
        let mut h = HeaderMap::new();
        assert!(!validator_changed(&etag, &h));
        assert!(!validator_changed(&date, &h));
        h.insert(ETAG, HeaderValue::from_static("\"v1\""));
        h.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Mon, 30 Nov 2026 09:00:00 GMT"),
        );
        assert!(!validator_changed(&etag, &h));
        assert!(validator_changed(&date, &h));
        h.insert(ETAG, HeaderValue::from_static("\"v2\""));
        assert!(validator_changed(&etag, &h));
    }
}
