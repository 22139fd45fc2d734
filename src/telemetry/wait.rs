//! What a wait records: its `goenhance.wait` span, the waits in progress
//! and their durations, the polls in flight.

use std::fmt;

use tracing::field::Empty;
use tracing::Span;

// The names, helpers and imports of the telemetry module.
use super::*;

/// One poll in flight, counted in [`POLLS_IN_FLIGHT`] until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn start() -> InFlight {
        #[cfg(feature = "metrics")]
        metrics::gauge!(POLLS_IN_FLIGHT).increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!(POLLS_IN_FLIGHT).decrement(1.0);
    }
}

/// Waits in progress, counted in [`WAITS_ACTIVE`] until they end or this
/// is dropped; each end timed in [`WAIT_DURATION`] from when this was made.
pub(crate) struct WaitMeter {
    #[cfg(feature = "metrics")]
    started: tokio::time::Instant,
    #[cfg(feature = "metrics")]
    open: u64,
}

impl fmt::Debug for WaitMeter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitMeter").finish_non_exhaustive()
    }
}

impl WaitMeter {
    /// `waits` waits that start now.
    pub(crate) fn start(waits: usize) -> WaitMeter {
        #[cfg(feature = "metrics")]
        {
            let open = waits as u64;
            if open > 0 {
                metrics::gauge!(WAITS_ACTIVE).increment(open as f64);
            }
            WaitMeter {
                started: tokio::time::Instant::now(),
                open,
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = waits;
            WaitMeter {}
        }
    }

    /// One of the waits ended with `result`.
    pub(crate) fn end(&mut self, result: &Result<JobDetail, Error>) {
        #[cfg(feature = "metrics")]
        if self.open > 0 {
            self.open -= 1;
            metrics::gauge!(WAITS_ACTIVE).decrement(1.0);
            metrics::histogram!(WAIT_DURATION, LABEL_OUTCOME => wait_outcome(result))
                .record(self.started.elapsed().as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = result;
    }

    /// The waits not ended yet end now, cancelled.
    pub(crate) fn cancel_rest(&mut self) {
        #[cfg(feature = "metrics")]
        if self.open > 0 {
            let open = std::mem::take(&mut self.open);
            metrics::gauge!(WAITS_ACTIVE).decrement(open as f64);
            metrics::histogram!(WAIT_DURATION, LABEL_OUTCOME => "cancelled")
                .record_many(self.started.elapsed().as_secs_f64(), open as usize);
        }
    }
}

impl Drop for WaitMeter {
    fn drop(&mut self) {
        self.cancel_rest();
    }
}

/// The `goenhance.wait` span of one wait and its count of polls; nothing
/// (and no allocation) when no subscriber wants the span.
#[derive(Default)]
pub(crate) struct WaitSpan(Option<Box<WaitSpanInner>>);

struct WaitSpanInner {
    span: Span,
    polls: u32,
    done: bool,
}

static NO_SPAN: Span = Span::none();

impl fmt::Debug for WaitSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WaitSpan").field(&self.span()).finish()
    }
}

impl WaitSpan {
    /// Opens the span of a wait on `img_uuid` under `parent`.
    pub(crate) fn start(img_uuid: &str, parent: &Span) -> WaitSpan {
        if !spans_listened() {
            return WaitSpan(None);
        }
        let span = tracing::info_span!(
            parent: parent,
            "goenhance.wait",
            "goenhance.job.id" = img_uuid,
            "goenhance.wait.polls" = Empty,
            "goenhance.wait.outcome" = Empty,
        );
        if span.is_disabled() {
            return WaitSpan(None);
        }
        WaitSpan(Some(Box::new(WaitSpanInner {
            span,
            polls: 0,
            done: false,
        })))
    }

    /// The span (a disabled one when nobody listens).
    pub(crate) fn span(&self) -> &Span {
        self.0.as_ref().map_or(&NO_SPAN, |w| &w.span)
    }

    /// Counts one poll.
    pub(crate) fn polled(&mut self) {
        if let Some(w) = &mut self.0 {
            w.polls = w.polls.saturating_add(1);
        }
    }

    /// The wait ended with `result`.
    pub(crate) fn finish(&mut self, result: &Result<JobDetail, Error>) {
        if let Some(w) = &mut self.0 {
            w.end(wait_outcome(result));
        }
    }
}

impl WaitSpanInner {
    fn end(&mut self, outcome: &str) {
        if !self.done {
            self.done = true;
            self.span.record("goenhance.wait.polls", self.polls);
            self.span.record("goenhance.wait.outcome", outcome);
        }
    }
}

impl Drop for WaitSpanInner {
    fn drop(&mut self) {
        self.end("cancelled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_span_costs_no_allocation_without_a_subscriber() {
        let w = WaitSpan::start("job-1", &Span::none());
        assert!(w.0.is_none());
        assert!(w.span().is_disabled());
    }
}
