//! What a wait that ended early reports: how long it waited, its polls,
//! the last status seen.

use std::time::Duration;

use crate::model::{JobDetail, JobStatus};

/// One poll of a wait, as kept in the history of a deadline or stall error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRecord {
    /// Time since the wait began.
    pub at: Duration,
    /// The status the poll saw, or `None` when the poll failed.
    pub status: Option<JobStatus>,
}

#[derive(Debug, Clone)]
pub(crate) struct WaitReport {
    pub(crate) waited: Duration,
    pub(crate) polls: u32,
    pub(crate) last_detail: Option<JobDetail>,
    pub(crate) history: Vec<PollRecord>,
    pub(crate) stalled_for: Option<Duration>,
}
