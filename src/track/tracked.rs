//! [`TrackedJob`]: what the store knows of one job.

use std::time::SystemTime;

use serde_json::Value;

use super::outcome;
use super::store::{JobState, StoredJob};
use crate::error::Error;
use crate::model::{JobDetail, JobStatus};
use crate::query::JobQuery;

/// One tracked job as the store knows it, from
/// [`Tracker::job`](super::Tracker::job): nothing is polled.
#[derive(Debug)]
pub struct TrackedJob {
    query: JobQuery,
    meta: Value,
    state: JobState,
    tracked_at: SystemTime,
    deadline: SystemTime,
    detail: Option<Result<JobDetail, Error>>,
    deliveries: u32,
    last_status: Option<(JobStatus, SystemTime, u32)>,
    last_error: Option<String>,
    ended_at: Option<SystemTime>,
}

impl TrackedJob {
    pub(crate) fn from_stored(query: JobQuery, row: StoredJob) -> TrackedJob {
        TrackedJob {
            query,
            meta: serde_json::from_str(&row.meta).unwrap_or(Value::Null),
            state: row.state,
            tracked_at: row.tracked_at,
            deadline: row.deadline,
            detail: row.outcome.as_deref().map(outcome::decode),
            deliveries: row.deliveries,
            last_status: row
                .last_status
                .map(|(s, at, polls)| (JobStatus::from_raw(&s), at, polls)),
            last_error: row.error,
            ended_at: row.ended_at,
        }
    }

    /// The job.
    pub fn query(&self) -> &JobQuery {
        &self.query
    }

    /// The metadata given when it was first tracked.
    pub fn meta(&self) -> &Value {
        &self.meta
    }

    /// Where it is: waiting, finished, delivered or dead.
    pub fn state(&self) -> JobState {
        self.state
    }

    /// When it was first tracked (the store's clock).
    pub fn tracked_at(&self) -> SystemTime {
        self.tracked_at
    }

    /// When its wait ends (the store's clock).
    pub fn deadline(&self) -> SystemTime {
        self.deadline
    }

    /// How its wait ended, once it has: the terminal detail or the error
    /// that ended it. `None` while waiting.
    pub fn detail(&self) -> Option<Result<&JobDetail, &Error>> {
        self.detail.as_ref().map(Result::as_ref)
    }

    /// Deliveries started so far.
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }

    /// The last status a wait saw and when it was first seen, as last
    /// saved (with the heartbeats).
    pub fn last_status(&self) -> Option<(&JobStatus, SystemTime)> {
        self.last_status.as_ref().map(|(s, at, _)| (s, *at))
    }

    /// Polls made until the last status was saved.
    pub fn polls(&self) -> u32 {
        self.last_status.as_ref().map_or(0, |l| l.2)
    }

    /// The last handler error (or why the row could not be read).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// When it was delivered or died.
    pub fn ended_at(&self) -> Option<SystemTime> {
        self.ended_at
    }
}
