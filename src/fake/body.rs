//! The response body of the fake server: whole, dribbled or cut short.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// A body sent in chunks with a pause before each chunk after the first,
/// optionally ending in an error (which makes hyper abort the connection).
pub(super) struct FakeBody {
    rest: Bytes,
    chunk: usize,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    started: bool,
    fail_at_end: bool,
}

impl FakeBody {
    pub(super) fn full(data: impl Into<Bytes>) -> Self {
        let rest = data.into();
        Self {
            chunk: rest.len().max(1),
            rest,
            delay: Duration::ZERO,
            sleep: None,
            started: false,
            fail_at_end: false,
        }
    }

    /// The bytes not sent yet.
    pub(super) fn into_bytes(self) -> Bytes {
        self.rest
    }

    pub(super) fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub(super) fn dribble(data: Bytes, chunk: usize, delay: Duration) -> Self {
        Self {
            chunk: chunk.max(1),
            delay,
            ..Self::full(data)
        }
    }

    /// Sends `data`, pauses `delay` (so the bytes are flushed), then fails.
    pub(super) fn cut(data: Bytes, delay: Duration) -> Self {
        Self {
            delay,
            fail_at_end: true,
            ..Self::full(data)
        }
    }
}

/// The error that ends a cut-short body.
#[derive(Debug)]
pub(super) struct BodyCut;

impl fmt::Display for BodyCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake body cut short")
    }
}

impl std::error::Error for BodyCut {}

impl http_body::Body for FakeBody {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyCut>>> {
        let this = &mut *self;
        if this.rest.is_empty() && !this.fail_at_end {
            return Poll::Ready(None);
        }
        if this.started && !this.delay.is_zero() {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(this.delay)));
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        this.started = true;
        if this.rest.is_empty() {
            this.fail_at_end = false;
            return Poll::Ready(Some(Err(BodyCut)));
        }
        let n = this.chunk.min(this.rest.len());
        Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && !self.fail_at_end
    }

    fn size_hint(&self) -> SizeHint {
        if self.fail_at_end {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.rest.len() as u64)
        }
    }
}

impl fmt::Debug for FakeBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeBody")
            .field("remaining", &self.rest.len())
            .field("chunk", &self.chunk)
            .field("delay", &self.delay)
            .field("fail_at_end", &self.fail_at_end)
            .finish()
    }
}
