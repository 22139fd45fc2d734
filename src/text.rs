//! Text for messages: durations rounded for people, what a server wrote
//! made fit for one line, and secrets cut out.

use std::fmt;
use std::time::Duration;

/// A duration rounded for messages: to the millisecond below 1000 s
/// (`1.01s`, not `1.010371047s`), in whole seconds above (`86400s`, and
/// `9223372036854775807s` for a server's absurd `Retry-After`).
pub(crate) struct Rounded(pub(crate) Duration);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= Duration::from_secs(1000) {
            return write!(f, "{}s", self.0.as_secs());
        }
        let ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        write!(f, "{:?}", Duration::from_millis(ms))
    }
}

/// `text` with every occurrence of `secret` replaced by `[redacted]`; a
/// server that echoes the API key back must not put it into an error.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "[redacted]")
}

/// Whether `body` holds `secret` (not empty) anywhere.
pub(crate) fn holds(body: &[u8], secret: &str) -> bool {
    let needle = secret.as_bytes();
    !needle.is_empty() && body.windows(needle.len()).any(|w| w == needle)
}

/// `body` with every occurrence of `secret` replaced by `[redacted]`,
/// before anything reads it: what is decoded from it, and cut short for a
/// message, can then hold no piece of the secret.
pub(crate) fn redact_bytes(body: bytes::Bytes, secret: &str) -> bytes::Bytes {
    if !holds(&body, secret) {
        return body;
    }
    let needle = secret.as_bytes();
    let mut out = Vec::with_capacity(body.len());
    let mut rest = &body[..];
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"[redacted]");
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out.into()
}

/// A message the server wrote, made fit for a one-line error: control
/// characters and runs of white space become one space, a trailing period
/// goes, and it is cut at 200 bytes.
pub(crate) fn server_text(msg: &str) -> String {
    let line = msg
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    truncate(line.trim_end_matches('.'), 200)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_one_line_without_a_trailing_period() {
        assert_eq!(
            server_text("Invalid token.\r\nX-Injected: 1\t "),
            "Invalid token. X-Injected: 1"
        );
        assert_eq!(server_text("job not found."), "job not found");
        assert_eq!(server_text("  a \u{7} b  "), "a b");
        assert_eq!(server_text(&"x".repeat(300)).len(), 200 + "…".len());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 3), "abc");
    }
    #[test]
    fn enormous_durations_read_in_whole_seconds() {
        assert_eq!(Rounded(Duration::from_millis(1234)).to_string(), "1.234s");
        assert_eq!(Rounded(Duration::from_secs(86_400)).to_string(), "86400s");
        assert_eq!(Rounded(Duration::MAX).to_string(), "18446744073709551615s");
    }
}
