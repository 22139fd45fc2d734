//! How errors read: one lowercase line (`Display`), the causes after it in
//! the alternate form, and a `Debug` of every field.

use std::fmt;

use http::StatusCode;

use super::*;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return with_causes(f, self);
        }
        let inner = &*self.inner;
        match inner.retries_exhausted {
            Some(Exhausted::Attempts(n)) => write!(f, "gave up after {n} attempts: ")?,
            Some(Exhausted::Budget(n)) => write!(f, "retry budget exhausted after {n} attempts: ")?,
            Some(Exhausted::RetryAfterTooLong) => {
                if let Some(after) = inner.retry_after {
                    write!(
                        f,
                        "server asked to retry after {}, longer than allowed: ",
                        Rounded(after)
                    )?
                }
            }
            None => {}
        }
        match inner.kind {
            Kind::InvalidInput => f.write_str("invalid input")?,
            Kind::Transport | Kind::Certificate | Kind::ProxyAuth => {
                f.write_str("transport error")?
            }
            Kind::Timeout => {}
            Kind::Http => {
                let status = inner.status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                write!(f, "http status {}", status.as_u16())?;
                if let Some(reason) = status.canonical_reason() {
                    write!(f, " {}", reason.to_ascii_lowercase())?;
                }
            }
            Kind::Api => write!(f, "api error code {}", inner.api_code.unwrap_or_default())?,
            Kind::Decode => f.write_str("cannot decode the job detail")?,
            Kind::BodyTooLarge => {}
            // A deadline that ended no wait: a download's.
            Kind::Deadline if inner.wait.is_none() => f.write_str("deadline reached")?,
            Kind::Deadline | Kind::Stall => {
                let w = inner.wait.as_ref();
                let waited = w.map(|w| w.waited).unwrap_or_default();
                let polls = w.map(|w| w.polls).unwrap_or_default();
                let last = w
                    .and_then(|w| w.last_detail.as_ref())
                    .map(|d| d.status().as_str().to_owned())
                    .unwrap_or_else(|| "none".to_owned());
                if inner.kind == Kind::Deadline {
                    write!(
                        f,
                        "wait deadline reached after {} ({polls} polls, last status {last}",
                        Rounded(waited)
                    )?;
                    // The error of the last poll is the source; name its
                    // kind here so a one-line report says that answers
                    // failed, not only that time ran out.
                    match inner
                        .source
                        .as_deref()
                        .and_then(|s| s.downcast_ref::<Error>())
                    {
                        Some(last) => write!(f, ", last poll failed: {})", last.kind())?,
                        None => f.write_str(")")?,
                    }
                } else {
                    let stalled = w.and_then(|w| w.stalled_for).unwrap_or_default();
                    write!(
                        f,
                        "job stalled: status {last} unchanged for {} ({polls} polls over {})",
                        Rounded(stalled),
                        Rounded(waited)
                    )?;
                }
            }
            Kind::Closed => {}
            Kind::Expired => f.write_str("output url expired")?,
            Kind::Io => f.write_str("file error")?,
            Kind::Store | Kind::StoreSchema => f.write_str("store error")?,
            Kind::JobFailed => f.write_str("job failed")?,
            Kind::Other => {}
        }
        let sep = if matches!(
            inner.kind,
            Kind::Timeout | Kind::BodyTooLarge | Kind::Closed | Kind::Other
        ) {
            ""
        } else {
            ": "
        };
        if let Some(msg) = &inner.message {
            write!(f, "{sep}{msg}")?;
        }
        // The cause is not repeated here: `source()` gives it, and error
        // reporters (anyhow, eyre, tracing) print the chain themselves.
        Ok(())
    }
}

/// The alternate form: the line, then `: cause: cause…` for each source of
/// `err`, skipping one whose text the line already ends with (some errors
/// repeat their cause).
fn with_causes(f: &mut fmt::Formatter<'_>, err: &Error) -> fmt::Result {
    let mut last = err.to_string();
    f.write_str(&last)?;
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !last.ends_with(&text) {
            write!(f, ": {text}")?;
        }
        last = text;
        cause = c.source();
    }
    Ok(())
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &inner.kind);
        if let Some(m) = &inner.message {
            d.field("message", m);
        }
        if let Some(s) = inner.status {
            d.field("status", &s);
        }
        if let Some(c) = inner.api_code {
            d.field("api_code", &c);
        }
        if let Some(r) = inner.retry_after {
            d.field("retry_after", &r);
        }
        if let Some(e) = inner.retries_exhausted {
            d.field("retries_exhausted", &e);
        }
        if let Some(w) = &inner.wait {
            d.field("wait", w);
        }
        if let Some(s) = &inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}
