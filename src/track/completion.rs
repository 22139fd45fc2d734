//! [`Completion`]: a finished job handed to the handler.

use std::fmt;

use serde_json::Value;

use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;

/// A finished job handed to the handler of [`Tracker::run`](super::Tracker::run).
pub struct Completion {
    pub(crate) query: JobQuery,
    pub(crate) meta: Value,
    pub(crate) detail: Result<JobDetail, Error>,
    pub(crate) deliveries: u32,
}

impl Completion {
    /// The job.
    pub fn query(&self) -> &JobQuery {
        &self.query
    }

    /// The metadata given when the job was first tracked.
    pub fn meta(&self) -> &Value {
        &self.meta
    }

    /// How the wait ended: the terminal detail (a job that succeeded or
    /// failed), or the error that ended the wait (deadline, stall, a
    /// refused key, `code != 0`).
    pub fn detail(&self) -> Result<&JobDetail, &Error> {
        self.detail.as_ref()
    }

    /// Which delivery this is: 1 the first time, more after a handler
    /// error or a crash before the delivery was recorded. It is counted
    /// when the outcome is stored, so a crash between storing it and
    /// calling the handler counts too, and so does an outcome that waited
    /// a whole heartbeat for a handler and was given back for a worker
    /// with free handlers.
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("img_uuid", &self.query.img_uuid())
            .field("meta", &self.meta)
            .field("detail", &self.detail)
            .field("deliveries", &self.deliveries)
            .finish()
    }
}
