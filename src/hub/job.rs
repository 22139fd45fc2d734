//! What the driver keeps per job: its id, its wait state and its waiters.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Answer, Progress};
use crate::model::JobDetail;
use crate::poll::state::WaitState;
use crate::query::JobQuery;
use crate::telemetry::WaitSpan;

pub(super) enum Sink {
    One(oneshot::Sender<Answer>),
    /// A tracked job: its end, and its status changes for the store.
    Tracked(oneshot::Sender<Answer>, Progress),
    Many(mpsc::UnboundedSender<(JobQuery, Answer)>),
    /// Also told of every status change.
    Watch(mpsc::UnboundedSender<(JobQuery, Answer)>),
}

pub(super) struct Waiter {
    pub(super) deadline: Instant,
    pub(super) sink: Sink,
}

impl Waiter {
    pub(super) fn is_gone(&self) -> bool {
        match &self.sink {
            Sink::One(tx) | Sink::Tracked(tx, _) => tx.is_closed(),
            Sink::Many(tx) | Sink::Watch(tx) => tx.is_closed(),
        }
    }

    pub(super) fn tell_change(&self, query: &JobQuery, detail: &JobDetail, polls: u32) {
        match &self.sink {
            Sink::Watch(tx) => {
                let _ = tx.send((query.clone(), Ok(detail.clone())));
            }
            Sink::Tracked(_, progress) => {
                let _ = progress.send((query.clone(), detail.status().clone(), polls));
            }
            _ => {}
        }
    }

    pub(super) fn deliver(self, query: &JobQuery, answer: Answer) {
        match self.sink {
            Sink::One(tx) | Sink::Tracked(tx, _) => {
                let _ = tx.send(answer);
            }
            Sink::Many(tx) | Sink::Watch(tx) => {
                let _ = tx.send((query.clone(), answer));
            }
        }
    }
}

/// The waiters of one job: one inline (the common case), or many.
pub(super) enum Waiters {
    One(Waiter),
    Many(Vec<Waiter>),
}

impl Waiters {
    pub(super) fn push(&mut self, waiter: Waiter) {
        let all = match std::mem::replace(self, Waiters::Many(Vec::new())) {
            Waiters::One(first) => vec![first, waiter],
            Waiters::Many(mut all) => {
                all.push(waiter);
                all
            }
        };
        *self = Waiters::Many(all);
    }

    pub(super) fn as_slice(&self) -> &[Waiter] {
        match self {
            Waiters::One(w) => std::slice::from_ref(w),
            Waiters::Many(v) => v,
        }
    }

    /// Keeps the waiters for which `keep` is true; returns the others.
    pub(super) fn split_off(&mut self, mut keep: impl FnMut(&Waiter) -> bool) -> Vec<Waiter> {
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

pub(super) struct Job {
    pub(super) id: JobId,
    pub(super) state: WaitState,
    pub(super) waiters: Waiters,
    /// Bumped whenever the job is (re)scheduled, so stale timer entries are
    /// recognised.
    pub(super) generation: u32,
    pub(super) in_flight: bool,
    /// The wait's span; nothing when nobody listens.
    pub(super) trace: WaitSpan,
}
