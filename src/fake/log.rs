//! The request log: every answer that carried a job's status, kept when
//! [`FakeServerBuilder::log_requests`](super::FakeServerBuilder::log_requests)
//! asks for it.

use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// One answer of the fake server that carried a job's status, as
/// [`FakeServer::requests`](super::FakeServer::requests) lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedRequest {
    /// When the answer was made (the wall clock).
    pub at: SystemTime,
    /// The job id asked for.
    pub img_uuid: String,
    /// The raw status answered (`pending`, `success`, …).
    pub status: String,
    /// Whether that status ends the job's timeline.
    pub terminal: bool,
    /// Whether a [`Fault`](super::Fault) shaped the answer (late, truncated
    /// or dribbled): the client may not have read it whole.
    pub faulted: bool,
}

/// The log, off unless asked for.
#[derive(Debug, Default)]
pub(super) struct RequestLog {
    on: bool,
    entries: Mutex<Vec<LoggedRequest>>,
}

impl RequestLog {
    pub(super) fn new(on: bool) -> Self {
        RequestLog {
            on,
            entries: Mutex::new(Vec::new()),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Vec<LoggedRequest>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn record(&self, img_uuid: &str, status: &str, terminal: bool, faulted: bool) {
        if self.on {
            self.entries().push(LoggedRequest {
                at: SystemTime::now(),
                img_uuid: img_uuid.to_owned(),
                status: status.to_owned(),
                terminal,
                faulted,
            });
        }
    }

    pub(super) fn snapshot(&self) -> Vec<LoggedRequest> {
        self.entries().clone()
    }
}
