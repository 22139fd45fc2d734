//! The `GET` span and the request-duration metric of one HTTP attempt.

use std::fmt;

use http::{StatusCode, Uri};
use tracing::field::Empty;
use tracing::Span;

// The names, helpers and imports of the telemetry module.
use super::*;

thread_local! {
    /// Set while the timeout layer drops an attempt it cut, so that the
    /// attempt's span says `timeout` rather than `cancelled`.
    static CUTTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `drop_attempt`, which drops an attempt cut by its timeout.
pub(crate) fn cut_by_timeout(drop_attempt: impl FnOnce()) {
    /// Clears the flag however `drop_attempt` returns, a panic included.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CUTTING.with(|c| c.set(false));
        }
    }
    CUTTING.with(|c| c.set(true));
    let _reset = Reset;
    drop_attempt();
}

/// The span and the timing of one HTTP attempt.
pub(crate) struct AttemptTrace {
    span: Span,
    #[cfg(feature = "metrics")]
    started: tokio::time::Instant,
    #[cfg(feature = "metrics")]
    status: Option<StatusCode>,
    done: bool,
}

impl fmt::Debug for AttemptTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptTrace")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl AttemptTrace {
    /// Opens the span of an attempt at `uri`; `attempt` is 1 for the first.
    pub(crate) fn start(uri: &Uri, attempt: u32) -> AttemptTrace {
        if !spans_listened() {
            return AttemptTrace {
                span: Span::none(),
                #[cfg(feature = "metrics")]
                started: tokio::time::Instant::now(),
                #[cfg(feature = "metrics")]
                status: None,
                done: false,
            };
        }
        let span = tracing::info_span!(
            "GET",
            "otel.kind" = "client",
            "http.request.method" = "GET",
            "server.address" = uri.host().unwrap_or_default(),
            "server.port" = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            }),
            "url.full" = %uri,
            "http.request.resend_count" = Empty,
            "http.response.status_code" = Empty,
            "error.type" = Empty,
        );
        if attempt > 1 {
            span.record("http.request.resend_count", attempt - 1);
        }
        AttemptTrace {
            span,
            #[cfg(feature = "metrics")]
            started: tokio::time::Instant::now(),
            #[cfg(feature = "metrics")]
            status: None,
            done: false,
        }
    }

    /// The attempt's span.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Notes the status of the answer.
    pub(crate) fn response(&mut self, status: StatusCode) {
        self.span
            .record("http.response.status_code", status.as_u16());
        #[cfg(feature = "metrics")]
        {
            self.status = Some(status);
        }
    }

    /// Ends the attempt with `result`.
    pub(crate) fn finish(&mut self, result: &Result<JobDetail, Error>) {
        let error = result.as_ref().err().map(error_type);
        self.end(error);
    }

    fn end(&mut self, error: Option<Cow<'static, str>>) {
        self.done = true;
        if let Some(e) = &error {
            if !self.span.is_disabled() {
                self.span.record("error.type", &**e);
            }
        }
        #[cfg(feature = "metrics")]
        {
            let seconds = self.started.elapsed().as_secs_f64();
            let h = match (self.status, error) {
                // The common case with a key made at compile time: no
                // allocation, its hash computed once.
                (Some(StatusCode::OK), None) => metrics::histogram!(
                    "http.client.request.duration",
                    "http.request.method" => "GET",
                    "http.response.status_code" => "200"
                ),
                (Some(s), Some(e)) => metrics::histogram!(
                    HTTP_CLIENT_REQUEST_DURATION,
                    LABEL_METHOD => "GET",
                    LABEL_STATUS_CODE => status_text(s),
                    LABEL_ERROR_TYPE => e
                ),
                (Some(s), None) => metrics::histogram!(
                    HTTP_CLIENT_REQUEST_DURATION,
                    LABEL_METHOD => "GET",
                    LABEL_STATUS_CODE => status_text(s)
                ),
                (None, Some(e)) => metrics::histogram!(
                    HTTP_CLIENT_REQUEST_DURATION,
                    LABEL_METHOD => "GET",
                    LABEL_ERROR_TYPE => e
                ),
                (None, None) => {
                    metrics::histogram!(HTTP_CLIENT_REQUEST_DURATION, LABEL_METHOD => "GET")
                }
            };
            h.record(seconds);
        }
    }
}

impl Drop for AttemptTrace {
    fn drop(&mut self) {
        if !self.done {
            let cut = CUTTING.with(|c| c.get());
            self.end(Some(Cow::Borrowed(if cut {
                "timeout"
            } else {
                "cancelled"
            })));
        }
    }
}
