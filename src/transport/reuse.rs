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
//!
//! The connection itself tells such a loss apart, from the bytes it
//! carries: [`Watch`] sits on the HTTP/1.1 bytes (above TLS) and turns a
//! close or reset that comes after bytes were answered on it and after a
//! request went out, before any byte of its answer, into an I/O error
//! carrying [`LostRequest`]. That costs a few comparisons per read and
//! write, and nothing per request (no per-connection state shared with
//! the responses).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::future::Future;

use http::Uri;
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::Service;

use crate::error::{causes, BoxError, Error};

/// How many times in a row a request lost on reused connections is sent
/// again: each resend drops one dead connection, and a request lost on a
/// fresh connection is never resent, so this bounds only a pool full of
/// connections closed at once.
const MAX_RESENDS: u32 = 4;

/// The requests lost on reused connections sent again in a row, for one
/// call: what the retry policy and the download loop, which make the
/// requests, keep.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Resends(u32);

impl Resends {
    /// Whether the request that failed with `err` goes again at once: it
    /// was lost on a reused connection ([`is_lost_request`]), fewer than
    /// [`MAX_RESENDS`] went in a row, and the caller `allows` it. Counts it
    /// if so; any other failure starts the count again.
    pub(crate) fn send_again(&mut self, err: &Error, allows: bool) -> bool {
        if allows && self.0 < MAX_RESENDS && is_lost_request(err) {
            self.0 += 1;
            true
        } else {
            self.0 = 0;
            false
        }
    }
}

/// A connection as hyper sees it, watched: the hyper I/O traits over
/// [`Watch`] over the tokio ones.
pub(crate) type Watched<T> = TokioIo<Watch<TokioIo<T>>>;

/// Wraps `io` so that a request lost to its close is told apart; only
/// HTTP/1.1 connections are watched (on HTTP/2 the peer's frames, not
/// answers, are the first bytes read).
pub(crate) fn watch<T: Connection>(io: T, http2_only: bool) -> Watched<T> {
    let http1 = !http2_only && !io.connected().is_negotiated_h2();
    TokioIo::new(Watch {
        inner: TokioIo::new(io),
        watched: http1,
        answered: false,
        awaiting: false,
    })
}

/// A connector whose connections are [`Watched`].
#[derive(Clone, Debug)]
pub(crate) struct WatchConnector<C> {
    inner: C,
    http2_only: bool,
}

impl<C> WatchConnector<C> {
    /// `inner`'s connections, watched unless they speak HTTP/2.
    pub(crate) fn new(inner: C, http2_only: bool) -> Self {
        WatchConnector { inner, http2_only }
    }
}

type Connecting<T> = Pin<Box<dyn Future<Output = Result<Watched<T>, BoxError>> + Send>>;

impl<C> Service<Uri> for WatchConnector<C>
where
    C: Service<Uri>,
    C::Response: Connection + Read + Write + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = Watched<C::Response>;
    type Error = BoxError;
    type Future = Connecting<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let http2_only = self.http2_only;
        Box::pin(async move { Ok(watch(connecting.await.map_err(Into::into)?, http2_only)) })
    }
}

/// The byte-level watch of one HTTP/1.1 connection.
#[derive(Debug)]
pub(crate) struct Watch<T> {
    inner: T,
    watched: bool,
    /// Bytes were read on the connection: it answered a request.
    answered: bool,
    /// Bytes were written since the last read: a request is out, with no
    /// byte of its answer yet.
    awaiting: bool,
}

impl<T> Watch<T> {
    /// Whether this is a watched connection that had answered before: a
    /// write cut now loses the request going out.
    fn reused(&self) -> bool {
        self.watched && self.answered
    }

    /// Whether a close now loses a request on a connection that had
    /// answered before.
    fn loses_a_request(&self) -> bool {
        self.reused() && self.awaiting
    }
}

/// Whether `e` is the connection closing or resetting under a request.
fn is_cut(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

fn lost(kind: io::ErrorKind, cause: Option<io::Error>) -> io::Error {
    io::Error::new(kind, LostRequest(cause))
}

/// The cause of an I/O error that lost a request: the server closed or
/// reset a connection that had answered before, as the request went out.
#[derive(Debug)]
pub(crate) struct LostRequest(Option<io::Error>);

impl fmt::Display for LostRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server closed a reused connection as the request went out")
    }
}

impl std::error::Error for LostRequest {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.as_ref().map(|e| e as _)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.answered = true;
                    this.awaiting = false;
                } else if buf.remaining() > 0 && this.loses_a_request() {
                    return Poll::Ready(Err(lost(io::ErrorKind::UnexpectedEof, None)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) if is_cut(&e) && this.loses_a_request() => {
                Poll::Ready(Err(lost(e.kind(), Some(e))))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> Watch<T> {
    fn wrote(&mut self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.awaiting = true;
                }
                Poll::Ready(Ok(n))
            }
            // A request written on a connection that had answered before,
            // cut before any byte of its answer.
            Poll::Ready(Err(e)) if is_cut(&e) && self.reused() => {
                Poll::Ready(Err(lost(e.kind(), Some(e))))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) if is_cut(&e) && this.reused() => {
                Poll::Ready(Err(lost(e.kind(), Some(e))))
            }
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for Watch<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// Whether `err` is a request lost on a pooled HTTP/1.1 connection that had
/// answered before and that closed or reset as this one went out, before
/// any byte of its answer (as [`HyperTransport`](super::HyperTransport)
/// reports it): a request to send again at once, if it is idempotent.
fn is_lost_request(err: &Error) -> bool {
    err.is_transport() && causes(err).any(|e| e.is::<LostRequest>())
}
