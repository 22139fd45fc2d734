//! The stream of `Client::wait_all` and `watch_all`: it reads its queries
//! lazily, one chunk in the driver's hands at a time, and yields every
//! query's end.

use std::collections::VecDeque;
use std::future::Future;
use std::iter::Fuse;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::{mpsc, oneshot};

use super::{Answer, Command, PackedIds, Shared};
use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;
use crate::telemetry::WaitMeter;

/// Ids go to the driver in chunks of at most this many.
pub(super) const CHUNK: usize = 4096;

/// The stream of [`Client::wait_all`](crate::Client::wait_all).
///
/// The queries are read a chunk at a time, the next once the driver
/// has taken the last one in, while the stream is polled: a long or
/// endless iterator is never read ahead of the driver, and its
/// `size_hint` is never trusted. It ends once every query read has had
/// its last item and the iterator is done: each query's end (a terminal
/// detail or an error) is sent before the driver lets go of the query,
/// even when the driver stops early (see `Drop for Driver`), and a chunk
/// the driver never took in is answered here.
pub(crate) struct WaitAll<I> {
    shared: Arc<Shared>,
    /// Boxed, so that the stream is `Unpin` whatever the iterator.
    queries: Option<Box<Fuse<I>>>,
    changes: bool,
    parent: tracing::Span,
    tx: mpsc::UnboundedSender<(JobQuery, Answer)>,
    rx: mpsc::UnboundedReceiver<(JobQuery, Answer)>,
    /// The chunk the driver has not taken in yet.
    in_transit: Option<(Arc<PackedIds>, oneshot::Receiver<()>)>,
    /// Queries handed to the driver and not ended yet.
    remaining: usize,
    /// The waits not answered yet, a meter per chunk (with its count),
    /// so each wait is timed from when its chunk went out.
    meters: VecDeque<(WaitMeter, usize)>,
}

impl<I> WaitAll<I>
where
    I: Iterator<Item = JobQuery>,
{
    pub(super) fn new(shared: Arc<Shared>, queries: I, changes: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut this = WaitAll {
            shared,
            queries: Some(Box::new(queries.fuse())),
            changes,
            parent: tracing::Span::current(),
            tx,
            rx,
            in_transit: None,
            remaining: 0,
            meters: VecDeque::new(),
        };
        // The first chunk goes out at once: the first polls do not wait
        // for the stream to be polled.
        this.feed();
        this
    }

    /// Reads the next chunk and hands it to the driver.
    fn feed(&mut self) {
        let Some(queries) = self.queries.as_mut() else {
            return;
        };
        let mut ids = PackedIds::default();
        for query in queries.by_ref().take(CHUNK) {
            ids.push(query.img_uuid());
        }
        let n = ids.len();
        if n < CHUNK {
            self.queries = None;
        }
        if n == 0 {
            return;
        }
        self.remaining += n;
        self.meters.push_back((WaitMeter::start(n), n));
        let ids = Arc::new(ids);
        let (taken, taken_rx) = oneshot::channel();
        self.shared.send(Command::Many {
            changes: self.changes,
            ids: Arc::clone(&ids),
            tx: self.tx.clone(),
            taken,
            parent: self.parent.clone(),
        });
        self.in_transit = Some((ids, taken_rx));
    }

    /// Hands over chunks while the driver takes them; answers a chunk the
    /// driver dropped without taking it in.
    fn poll_feed(&mut self, cx: &mut Context<'_>) {
        while let Some((ids, taken)) = self.in_transit.as_mut() {
            match Pin::new(taken).poll(cx) {
                Poll::Pending => return,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    let error = Error::closed()
                        .with_message("the wait scheduler stopped before it took this job in");
                    for id in ids.iter() {
                        let query = JobQuery::from_shared_id(Arc::from(id));
                        let _ = self.tx.send((query, Err(error.clone())));
                    }
                }
            }
            self.in_transit = None;
            self.feed();
        }
    }

    fn ended(&mut self, answer: &Answer) {
        self.remaining -= 1;
        if let Some((meter, open)) = self.meters.front_mut() {
            meter.end(answer);
            *open -= 1;
            if *open == 0 {
                self.meters.pop_front();
            }
        }
    }
}

impl<I> Stream for WaitAll<I>
where
    I: Iterator<Item = JobQuery>,
{
    type Item = (JobQuery, Answer);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.poll_feed(cx);
        if this.remaining == 0 && this.queries.is_none() && this.in_transit.is_none() {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                // A job's end is an error or a terminal detail; anything
                // else is a status change on the way.
                if item.1.as_ref().map_or(true, JobDetail::is_terminal) {
                    this.ended(&item.1);
                }
                Poll::Ready(Some(item))
            }
            // The stream holds a sender itself: this never comes.
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, None)
    }
}
