//! Which output URLs and redirects a download follows.
//!
//! An output URL is `https`, or `http` on loopback (anywhere when the
//! client allows insecure http). A redirect is followed only to a URL that
//! would pass that check, never from `https` down to `http`, and never to a
//! loopback, private or link-local address unless the output URL itself was
//! on one (as a test server or a storage host inside the same network is).
//! Addresses are judged from the URL's host as written: an IP literal in any
//! form a resolver accepts (`127.1`, `0x7f000001`, `::ffff:10.0.0.1`) or a
//! `localhost` name; what a DNS name resolves to is the transport's matter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::HeaderValue;
use http::uri::{Parts, PathAndQuery};
use http::{StatusCode, Uri};

use crate::error::{Error, Kind};

/// The most redirects one request follows.
pub(super) const MAX_REDIRECTS: u32 = 5;

/// What a download's redirects may reach, decided by its output URL.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reach {
    /// Plain `http` allowed to any host.
    insecure: bool,
    /// The output URL is on a loopback, private or link-local address, so
    /// its redirects may go to such addresses too.
    local: bool,
}

/// Checks an output URL: `https`, or `http` on loopback (or anywhere when
/// `insecure`); no user info. Returns it with what its redirects may reach.
pub(super) fn parse_output_url(url: &str, insecure: bool) -> Result<(Uri, Reach), Error> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::invalid_input("output url does not parse").with_source(e))?;
    if let Some(why) = refusal(&uri, insecure) {
        return Err(Error::invalid_input(format!("output url {why}")));
    }
    let local = uri.host().is_some_and(is_local);
    Ok((uri, Reach { insecure, local }))
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
    location: &HeaderValue,
    reach: Reach,
) -> Result<Uri, Error> {
    let refused = |why: &str| {
        Error::new(Kind::Http)
            .with_status(status)
            .with_message(format!("redirect refused: {why}"))
    };
    let location = location
        .to_str()
        .map_err(|_| refused("location is not ascii"))?;
    let to = resolve(from, location).ok_or_else(|| refused("location does not parse"))?;
    if let Some(why) = refusal(&to, reach.insecure) {
        return Err(refused(&format!("target {why}")));
    }
    if from.scheme_str() == Some("https") && to.scheme_str() != Some("https") {
        return Err(refused("target leaves https for http"));
    }
    if !reach.local && to.host().is_some_and(is_local) {
        return Err(refused(
            "target is a loopback, private or link-local address",
        ));
    }
    Ok(to)
}

/// `location` resolved against `base` (RFC 3986 reference resolution,
/// without dot-segment removal).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    if has_scheme(location) {
        // Absolute: it parses as a whole, with a host, or not at all.
        return location.parse::<Uri>().ok().filter(|u| u.host().is_some());
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

/// Whether `reference` starts with `scheme:` (RFC 3986: a letter, then
/// letters, digits, `+`, `-` or `.`).
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_loopback(host: &str) -> bool {
    is_localhost(host) || address(host).is_some_and(|ip| canonical(ip).is_loopback())
}

/// Whether `host` is a loopback, private, link-local or unspecified
/// address, or a `localhost` name.
fn is_local(host: &str) -> bool {
    if is_localhost(host) {
        return true;
    }
    match address(host).map(canonical) {
        Some(IpAddr::V4(ip)) => is_local_v4(ip),
        Some(IpAddr::V6(ip)) => is_local_v6(ip),
        None => false,
    }
}

fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        // 0.0.0.0/8 ("this network") and 100.64.0.0/10 (shared address
        // space, where some clouds keep their metadata service).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

fn is_local_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

/// An IPv4 address mapped into IPv6 judged as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// `host` as an address: an IPv6 literal in brackets, or IPv4 in any form
/// `inet_aton` takes (what a resolver would connect to for it).
fn address(host: &str) -> Option<IpAddr> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    inet_aton(host.trim_end_matches('.')).map(IpAddr::V4)
}

/// IPv4 as `inet_aton` reads it: one to four parts, each decimal, octal
/// (leading `0`) or hex (`0x`), the last filling the remaining bytes.
fn inet_aton(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(4);
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let value = if digits.is_empty() {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    let (last, head) = values.split_last()?;
    if head.iter().any(|&v| v > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if room < 32 && *last >= (1u32 << room) {
        return None;
    }
    let mut ip = *last;
    for (i, &v) in head.iter().enumerate() {
        ip |= v << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(from: &str, location: &str) -> Result<Uri, Error> {
        let (from, reach) = parse_output_url(from, false).unwrap();
        redirect(
            &from,
            StatusCode::FOUND,
            &HeaderValue::from_str(location).unwrap(),
            reach,
        )
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
        let ok = |loc| {
            go("https://cdn.example/out/a.mp4?sig=1", loc)
                .unwrap()
                .to_string()
        };
        assert_eq!(ok("https://b.example/x"), "https://b.example/x");
        assert_eq!(ok("//c.example/y"), "https://c.example/y");
        assert_eq!(ok("/z?q=1"), "https://cdn.example/z?q=1");
        assert_eq!(ok("b.mp4"), "https://cdn.example/out/b.mp4");
        assert_eq!(ok("?sig=2"), "https://cdn.example/out/a.mp4?sig=2");
    }

    #[test]
    fn a_redirect_to_plain_http_elsewhere_is_refused() {
        let err = go("http://127.0.0.1:9/a", "http://cdn.example/a").unwrap_err();
        assert!(err.is_http());
        assert!(!err.is_transient());
        assert_eq!(err.status(), Some(StatusCode::FOUND));
        assert_eq!(
            err.to_string(),
            "http status 302 found: redirect refused: target uses http on a host that is not loopback"
        );
        assert!(go("http://127.0.0.1:9/a", "http://127.0.0.1:10/b").is_ok());
    }

    #[test]
    fn https_is_never_left_for_http() {
        let err = go("https://cdn.example/a", "http://127.0.0.1:10/b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "http status 302 found: redirect refused: target leaves https for http"
        );
        // Even when the output URL itself was local.
        assert!(go("https://127.0.0.1/a", "http://127.0.0.1:10/b").is_err());
        assert!(go("https://127.0.0.1/a", "https://127.0.0.1:10/b").is_ok());
    }

    #[test]
    fn local_addresses_only_from_a_local_output_url() {
        for target in [
            "https://10.0.0.1/a",
            "https://172.16.5.4/a",
            "https://192.168.1.1/a",
            "https://169.254.169.254/latest/meta-data",
            "https://100.100.100.200/a",
            "https://127.0.0.1/a",
            "https://127.1/a",
            "https://0x7f000001/a",
            "https://2130706433/a",
            "https://012.0.0.1/a",
            "https://0.0.0.0/a",
            "https://localhost/a",
            "https://files.localhost./a",
            "https://[::1]/a",
            "https://[::]/a",
            "https://[fd00::1]/a",
            "https://[fe80::1]/a",
            "https://[::ffff:10.0.0.1]/a",
        ] {
            let err = go("https://cdn.example/a", target).unwrap_err();
            assert_eq!(
                err.to_string(),
                "http status 302 found: redirect refused: target is a loopback, private or link-local address",
                "{target}"
            );
            assert!(go("https://192.168.0.10/a", target).is_ok(), "{target}");
        }
        for target in [
            "https://8.8.8.8/a",
            "https://100.128.0.1/a",
            "https://[2001:db8::1]/a",
            "https://10.example/a",
            "https://1.2.3.4.5/a",
        ] {
            assert!(go("https://cdn.example/a", target).is_ok(), "{target}");
        }
    }

    #[test]
    fn a_location_that_is_not_ascii_or_does_not_parse_is_an_error() {
        let (from, reach) = parse_output_url("https://cdn.example/out/a", false).unwrap();
        let utf8 = HeaderValue::from_bytes("/d\u{e9}j\u{e0}".as_bytes()).unwrap();
        let err = redirect(&from, StatusCode::FOUND, &utf8, reach).unwrap_err();
        assert_eq!(
            err.to_string(),
            "http status 302 found: redirect refused: location is not ascii"
        );
        for bad in ["", "  ", "https://", "http://[::1/a", "/a b"] {
            let err = redirect(
                &from,
                StatusCode::FOUND,
                &HeaderValue::from_str(bad).unwrap(),
                reach,
            )
            .unwrap_err();
            assert!(
                err.to_string().ends_with("location does not parse"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn ipv4_is_read_as_a_resolver_reads_it() {
        let v4 = |s| inet_aton(s).map(|ip| ip.to_string());
        assert_eq!(v4("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("10.65535").as_deref(), Some("10.0.255.255"));
        assert_eq!(v4("0x7f.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("0177.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("167772161").as_deref(), Some("10.0.0.1"));
        assert_eq!(v4("256.0.0.1"), None);
        assert_eq!(v4("1.2.3.256"), None);
        assert_eq!(v4("cdn.example"), None);
        assert_eq!(v4("08.0.0.1"), None);
    }
}
