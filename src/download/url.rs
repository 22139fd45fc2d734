//! Which output URLs and redirects a download follows.

use std::net::IpAddr;

use http::uri::{Parts, PathAndQuery};
use http::{StatusCode, Uri};

use crate::error::{Error, Kind};

/// The most redirects one request follows.
pub(super) const MAX_REDIRECTS: u32 = 5;

/// Checks an output URL: `https`, or `http` on loopback (or anywhere when
/// `insecure`); no user info.
pub(super) fn parse_output_url(url: &str, insecure: bool) -> Result<Uri, Error> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::invalid_input("output url does not parse").with_source(e))?;
    if let Some(why) = refusal(&uri, insecure) {
        return Err(Error::invalid_input(format!("output url {why}")));
    }
    Ok(uri)
}

/// Why `uri` may not be fetched, if it may not.
fn refusal(uri: &Uri, insecure: bool) -> Option<&'static str> {
    let Some(authority) = uri.authority() else {
        return Some("has no host");
    };
    if authority.as_str().contains('@') {
        return Some("must not carry user info");
    }
    match uri.scheme_str() {
        Some("https") => None,
        Some("http") if insecure || is_loopback(authority.host()) => None,
        Some("http") => Some("uses http on a host that is not loopback"),
        _ => Some("scheme must be https"),
    }
}

/// Where a redirect from `from` to `location` leads, if it may be
/// followed.
pub(super) fn redirect(
    from: &Uri,
    status: StatusCode,
    location: &str,
    insecure: bool,
) -> Result<Uri, Error> {
    let refused = |why: &str| {
        Error::new(Kind::Http)
            .with_status(status)
            .with_message(format!("redirect refused: {why}"))
    };
    let to = resolve(from, location).ok_or_else(|| refused("location does not parse"))?;
    match refusal(&to, insecure) {
        Some(why) => Err(refused(&format!("target {why}"))),
        None => Ok(to),
    }
}

/// `location` resolved against `base` (RFC 3986 reference resolution,
/// without dot-segment removal).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    if let Ok(uri) = location.parse::<Uri>() {
        if uri.scheme().is_some() {
            return Some(uri);
        }
    }
    let scheme = base.scheme()?.clone();
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{}://{rest}", scheme.as_str()).parse().ok();
    }
    let path_and_query = if location.starts_with('/') {
        location.to_owned()
    } else if location.starts_with('?') {
        format!("{}{location}", base.path())
    } else {
        let path = base.path();
        let dir = &path[..=path.rfind('/').unwrap_or(0)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{dir}{location}")
    };
    let mut parts = Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(base.authority()?.clone());
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn output_urls_must_be_https_or_loopback_http() {
        assert!(parse_output_url("https://cdn.example/a.mp4?sig=x", false).is_ok());
        assert!(parse_output_url("http://127.0.0.1:8080/a.mp4", false).is_ok());
        assert!(parse_output_url("http://[::1]:8080/a.mp4", false).is_ok());
        assert!(parse_output_url("http://localhost/a.mp4", false).is_ok());
        let err = parse_output_url("http://cdn.example/a.mp4", false).unwrap_err();
        assert!(err.is_invalid_input());
        assert_eq!(
            err.to_string(),
            "invalid input: output url uses http on a host that is not loopback"
        );
        assert!(parse_output_url("http://cdn.example/a.mp4", true).is_ok());
        assert!(parse_output_url("ftp://cdn.example/a.mp4", true).is_err());
        assert!(parse_output_url("https://u:p@cdn.example/a", false).is_err());
        assert!(parse_output_url("/a.mp4", false).is_err());
    }

    #[test]
    fn redirects_resolve_relative_locations() {
        let from = uri("https://cdn.example/out/a.mp4?sig=1");
        let go = |loc| {
            redirect(&from, StatusCode::FOUND, loc, false)
                .unwrap()
                .to_string()
        };
        assert_eq!(go("https://b.example/x"), "https://b.example/x");
        assert_eq!(go("//c.example/y"), "https://c.example/y");
        assert_eq!(go("/z?q=1"), "https://cdn.example/z?q=1");
        assert_eq!(go("b.mp4"), "https://cdn.example/out/b.mp4");
        assert_eq!(go("?sig=2"), "https://cdn.example/out/a.mp4?sig=2");
    }

    #[test]
    fn a_redirect_to_plain_http_elsewhere_is_refused() {
        let from = uri("http://127.0.0.1:9/a");
        let err = redirect(&from, StatusCode::FOUND, "http://cdn.example/a", false).unwrap_err();
        assert!(err.is_http());
        assert!(!err.is_transient());
        assert_eq!(err.status(), Some(StatusCode::FOUND));
        assert_eq!(
            err.to_string(),
            "http status 302 found: redirect refused: target uses http on a host that is not loopback"
        );
        assert!(redirect(&from, StatusCode::FOUND, "http://127.0.0.1:10/b", false).is_ok());
    }
}
