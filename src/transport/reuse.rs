//! Requests lost to a pooled connection the server had just closed: told
//! apart, so they can be sent again on a fresh connection without costing
//! a retry.
//!
//! hyper-util's pool already resends a request that finds its connection
//! closed before the request was written. What it leaves is the race: the
//! server closes an idle keep-alive connection just as the request goes out,
//! and the request gets "connection closed before message completed" or a
//! reset, with no response. Like Go's `net/http` and browsers, such a
//! request is sent again when it is idempotent and its connection had
//! already carried a request (a fresh connection that fails is a real
//! failure, left to the retries). The resend is made where the request is
//! made — the retry layer's policy and the download loop, which build
//! every attempt afresh — so the transport keeps no copy of each request
//! for the rare one that is lost.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

use crate::error::Error;

/// How many times in a row a request lost on reused connections is sent
/// again: each resend drops one dead connection, and a request lost on a
/// fresh connection is never resent, so this bounds only a pool full of
/// connections closed at once.
pub(crate) const MAX_RESENDS: u32 = 4;

/// How many responses a connection has carried, shared by the connection's
/// [`Connected`] info and every response and error from it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnUse(Arc<AtomicU64>);

impl ConnUse {
    /// Counts a response read on this connection.
    pub(crate) fn answered(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn was_used(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// A connection that carries its [`ConnUse`] in its [`Connected`] info.
#[derive(Debug)]
pub(crate) struct Marked<T> {
    inner: T,
    uses: ConnUse,
}

impl<T> Marked<T> {
    pub(crate) fn new(inner: T) -> Self {
        Marked {
            inner,
            uses: ConnUse::default(),
        }
    }
}

impl<T: Connection> Connection for Marked<T> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.uses.clone())
    }
}

impl<T: Read + Unpin> Read for Marked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Marked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

/// Whether `err` is a request lost on a pooled connection that had carried
/// a request before and that closed or reset as this one went out, before
/// any answer (as [`HyperTransport`](super::HyperTransport) reports it): a
/// request to send again at once.
pub(crate) fn is_lost_request(err: &Error) -> bool {
    if !err.is_transport() {
        return false;
    }
    let mut cause = std::error::Error::source(err);
    while let Some(e) = cause {
        if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            return lost_on_reused_connection(e);
        }
        cause = e.source();
    }
    false
}

fn lost_on_reused_connection(err: &hyper_util::client::legacy::Error) -> bool {
    if err.is_connect() {
        return false;
    }
    let Some(info) = err.connect_info() else {
        return false;
    };
    let mut extensions = http::Extensions::new();
    info.get_extras(&mut extensions);
    let Some(uses) = extensions.get::<ConnUse>() else {
        return false;
    };
    if !uses.was_used() {
        return false;
    }
    let mut cause = std::error::Error::source(err);
    while let Some(e) = cause {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}
