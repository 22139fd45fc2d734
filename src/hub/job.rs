//! What the driver keeps per job: its id, its wait state, its waiters, and
//! the retry in progress.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Answer, Progress};
use crate::error::Error;
use crate::model::JobDetail;
use crate::poll::state::WaitState;
use crate::query::JobQuery;
use crate::retry::Attempt;
use crate::telemetry::WaitSpan;

pub(super) enum Sink {
    One(oneshot::Sender<Answer>),
    /// A tracked job: its end, and its status changes for the store.
    /// (Boxed: a sink is then one pointer, whichever it is.)
    Tracked(Box<(oneshot::Sender<Answer>, Progress)>),
    Many(mpsc::UnboundedSender<(JobQuery, Answer)>),
    /// Also told of every status change.
    Watch(mpsc::UnboundedSender<(JobQuery, Answer)>),
    /// A `wait_all` or `watch_all` waiter that named the job in another
    /// case (a UUID): it is answered under its own spelling.
    Spelled(Box<(Sink, Arc<str>)>),
}

impl Sink {
    fn is_closed(&self) -> bool {
        match self {
            Sink::One(tx) => tx.is_closed(),
            Sink::Tracked(t) => t.0.is_closed(),
            Sink::Many(tx) | Sink::Watch(tx) => tx.is_closed(),
            Sink::Spelled(inner) => inner.0.is_closed(),
        }
    }

    fn query(&self, job: &JobQuery) -> JobQuery {
        match self {
            Sink::Spelled(inner) => JobQuery::from_shared_id(Arc::clone(&inner.1)),
            _ => job.clone(),
        }
    }
}

/// One waiter of a job. Its times are whole milliseconds from the start of
/// the job's wait ([`WaitState::started`]), on the driver's millisecond
/// grid, so its deadline, its timer and the state agree to the
/// millisecond.
pub(super) struct Waiter {
    /// Its deadline; `u32::MAX` for none.
    pub(super) deadline_ms: u32,
    /// When it joined.
    pub(super) joined_ms: u32,
    /// Polls of the job made before it joined.
    pub(super) polls_before: u32,
    /// A watcher that joined a job already polled and has heard nothing
    /// yet: the next answer is its first item, changed or not.
    pub(super) untold: bool,
    pub(super) sink: Sink,
}

impl Waiter {
    pub(super) fn is_gone(&self) -> bool {
        self.sink.is_closed()
    }

    /// Tells a watcher of an answer that is not the job's end: of each
    /// change, and of the first answer after it joined.
    pub(super) fn tell(&mut self, query: &JobQuery, detail: &JobDetail, changed: bool, polls: u32) {
        let untold = std::mem::take(&mut self.untold);
        if !changed && !untold {
            return;
        }
        match &self.sink {
            Sink::Watch(tx) => {
                let _ = tx.send((query.clone(), Ok(detail.clone())));
            }
            Sink::Spelled(inner) => {
                if let Sink::Watch(tx) = &inner.0 {
                    let _ = tx.send((self.sink.query(query), Ok(detail.clone())));
                }
            }
            Sink::Tracked(t) if changed => {
                let _ = t.1.send((query.clone(), detail.status().clone(), polls));
            }
            _ => {}
        }
    }

    pub(super) fn deliver(self, query: &JobQuery, answer: Answer) {
        let query = self.sink.query(query);
        let sink = match self.sink {
            Sink::Spelled(inner) => inner.0,
            sink => sink,
        };
        match sink {
            Sink::One(tx) => {
                let _ = tx.send(answer);
            }
            Sink::Tracked(t) => {
                let _ = t.0.send(answer);
            }
            Sink::Many(tx) | Sink::Watch(tx) => {
                let _ = tx.send((query, answer));
            }
            Sink::Spelled(_) => {}
        }
    }
}

/// The waiters of one job, earliest deadline first: one inline (the common
/// case), or many.
pub(super) enum Waiters {
    One(Waiter),
    Many(Vec<Waiter>),
}

impl Waiters {
    /// Adds a waiter in deadline order. Waiters that have gone are dropped
    /// whenever the list would grow its room, so a job waited on and
    /// abandoned over and over (a long-poll handler's `timeout(wait)`)
    /// keeps a list as long as its live waiters, at O(1) amortised a join.
    pub(super) fn push(&mut self, waiter: Waiter) {
        let mut all = match std::mem::replace(self, Waiters::Many(Vec::new())) {
            Waiters::One(first) => {
                let mut all = Vec::with_capacity(2);
                all.push(first);
                all
            }
            Waiters::Many(all) => all,
        };
        if all.len() == all.capacity() {
            all.retain(|w| !w.is_gone());
        }
        let at = all.partition_point(|w| w.deadline_ms <= waiter.deadline_ms);
        all.insert(at, waiter);
        *self = Waiters::Many(all);
    }

    pub(super) fn as_slice(&self) -> &[Waiter] {
        match self {
            Waiters::One(w) => std::slice::from_ref(w),
            Waiters::Many(v) => v,
        }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [Waiter] {
        match self {
            Waiters::One(w) => std::slice::from_mut(w),
            Waiters::Many(v) => v,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// The earliest deadline of a waiter, if any is left.
    pub(super) fn first_deadline(&self) -> Option<u32> {
        self.as_slice().first().map(|w| w.deadline_ms)
    }

    /// Keeps the waiters for which `keep` is true; returns the others.
    pub(super) fn split_off(&mut self, mut keep: impl FnMut(&Waiter) -> bool) -> Vec<Waiter> {
        if let Waiters::One(w) = self {
            if keep(w) {
                return Vec::new();
            }
        }
        let all = match std::mem::replace(self, Waiters::Many(Vec::new())) {
            Waiters::One(w) => vec![w],
            Waiters::Many(v) => v,
        };
        let (kept, gone): (Vec<_>, Vec<_>) = all.into_iter().partition(|w| keep(w));
        *self = Waiters::Many(kept);
        gone
    }

    pub(super) fn into_vec(self) -> Vec<Waiter> {
        match self {
            Waiters::One(w) => vec![w],
            Waiters::Many(v) => v,
        }
    }
}

/// The longest id kept inline (UUIDs are 36 bytes).
const INLINE_ID: usize = 38;

/// A job id, inline when short, so that a waiting job needs no allocation
/// of its own for it. Ids are validated ASCII.
pub(super) enum JobId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Shared(Arc<str>),
}

impl JobId {
    pub(super) fn new(id: &str) -> JobId {
        if id.len() <= INLINE_ID {
            let mut bytes = [0; INLINE_ID];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            JobId::Inline {
                len: id.len() as u8,
                bytes,
            }
        } else {
            JobId::Shared(Arc::from(id))
        }
    }

    pub(super) fn as_str(&self) -> &str {
        match self {
            JobId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("job ids are ASCII")
            }
            JobId::Shared(id) => id,
        }
    }

    /// A query of this id, for a poll or an answer.
    pub(super) fn query(&self) -> JobQuery {
        let id = match self {
            JobId::Inline { .. } => Arc::from(self.as_str()),
            JobId::Shared(id) => Arc::clone(id),
        };
        JobQuery::from_shared_id(id)
    }
}

/// A retried poll between its attempts: the retry policy's state and the
/// query (its attempt number) to send next.
pub(super) struct Retrying {
    pub(super) attempt: Attempt,
    pub(super) query: JobQuery,
    /// The failure retried after: the poll's result if the retry is never
    /// sent.
    pub(super) error: Error,
}

/// The generation of a job whose request is out.
pub(super) const IN_FLIGHT: u32 = u32::MAX;

pub(super) struct Job {
    pub(super) id: JobId,
    pub(super) state: WaitState,
    pub(super) waiters: Waiters,
    /// The mark of the job's poll entry in the timer queue, so stale
    /// entries are recognised: unique across the driver; 0 for none,
    /// [`IN_FLIGHT`] while a request is out.
    pub(super) generation: u32,
    /// The deadline (as a waiter's offset) of the job's deadline entry in
    /// the timer queue, `u32::MAX` for none: never later than its earliest
    /// waiter's.
    pub(super) armed: u32,
    /// The wait's span; nothing when nobody listens.
    pub(super) trace: WaitSpan,
}

impl Job {
    pub(super) fn in_flight(&self) -> bool {
        self.generation == IN_FLIGHT
    }
}
