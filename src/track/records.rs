//! What a [`TrackStore`](super::TrackStore) takes and hands back.
//!
//! Records are `#[non_exhaustive]`: a store outside this crate reads their
//! fields and makes the ones it hands back with their constructors.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A worker as the store knows it: its name and the epoch of its latest
/// registration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct WorkerId {
    /// The name given to [`TrackerBuilder::worker_id`](super::TrackerBuilder::worker_id).
    pub name: String,
    /// One more at each registration of the name.
    pub epoch: i64,
}

impl WorkerId {
    /// A worker's name and epoch.
    pub fn new(name: impl Into<String>, epoch: i64) -> WorkerId {
        WorkerId {
            name: name.into(),
            epoch,
        }
    }
}

/// A job as [`Tracker::track`](super::Tracker::track) stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewJob {
    /// The job id (`img_uuid`).
    pub id: String,
    /// The caller's metadata, as JSON text.
    pub meta: String,
    /// How long after it is tracked its wait ends, whatever restarts
    /// happen in between.
    pub timeout: Duration,
}

impl NewJob {
    /// A job to store.
    pub fn new(id: impl Into<String>, meta: impl Into<String>, timeout: Duration) -> NewJob {
        NewJob {
            id: id.into(),
            meta: meta.into(),
            timeout,
        }
    }
}

/// How many jobs a [`TrackStore::claim`](super::TrackStore::claim) may
/// hand out, and which earlier claims to answer again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claim {
    /// Waiting jobs, at most.
    pub waiting: usize,
    /// Finished jobs, at most (the worker's free handler slots).
    pub finished: usize,
    /// Marks the jobs of this claim.
    pub token: u64,
    /// Tokens of earlier claims by this worker whose answer was lost: the
    /// jobs they took are handed out again.
    pub recover: Vec<u64>,
}

impl Claim {
    /// A claim of at most `waiting` waiting and `finished` finished jobs.
    pub fn new(waiting: usize, finished: usize, token: u64) -> Claim {
        Claim {
            waiting,
            finished,
            token,
            recover: Vec::new(),
        }
    }

    /// Also hands out again the jobs of these earlier claims.
    pub fn recover(mut self, tokens: Vec<u64>) -> Claim {
        self.recover = tokens;
        self
    }
}

/// What a claim handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claimed {
    /// The store's clock when it claimed them.
    pub now: SystemTime,
    /// Whether the worker was alive: when not, `jobs` is empty and the
    /// worker must register again.
    pub alive: bool,
    /// The jobs.
    pub jobs: Vec<ClaimedJob>,
}

impl Claimed {
    /// Jobs handed to a live worker at `now` by the store's clock.
    pub fn new(now: SystemTime, jobs: Vec<ClaimedJob>) -> Claimed {
        Claimed {
            now,
            alive: true,
            jobs,
        }
    }

    /// The answer to a worker that is not alive.
    pub fn fenced(now: SystemTime) -> Claimed {
        Claimed {
            now,
            alive: false,
            jobs: Vec::new(),
        }
    }
}

/// A job handed to a worker by [`TrackStore::claim`](super::TrackStore::claim).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimedJob {
    /// The job id.
    pub id: String,
    /// The metadata given when it was first tracked, as JSON text.
    pub meta: String,
    /// When it was first tracked (the store's clock).
    pub tracked_at: SystemTime,
    /// When its wait ends (the store's clock).
    pub deadline: SystemTime,
    /// How the wait ended, as stored by
    /// [`TrackStore::complete`](super::TrackStore::complete); `None` while
    /// the job is still to be waited on.
    pub outcome: Option<String>,
    /// Deliveries started so far, this claim's included when `outcome` is
    /// set.
    pub deliveries: u32,
    /// The last status a wait on it saw, when that status was first seen,
    /// and the polls made until then.
    pub last_status: Option<(String, SystemTime, u32)>,
}

impl ClaimedJob {
    /// A waiting job.
    pub fn new(
        id: impl Into<String>,
        meta: impl Into<String>,
        tracked_at: SystemTime,
        deadline: SystemTime,
    ) -> ClaimedJob {
        ClaimedJob {
            id: id.into(),
            meta: meta.into(),
            tracked_at,
            deadline,
            outcome: None,
            deliveries: 0,
            last_status: None,
        }
    }

    /// A finished job: its stored outcome and deliveries so far.
    pub fn with_outcome(mut self, outcome: impl Into<String>, deliveries: u32) -> ClaimedJob {
        self.outcome = Some(outcome.into());
        self.deliveries = deliveries;
        self
    }

    /// The delivery count alone (of a job without an outcome).
    pub fn with_deliveries(mut self, deliveries: u32) -> ClaimedJob {
        self.deliveries = deliveries;
        self
    }

    /// The last status saved by
    /// [`TrackStore::save_status`](super::TrackStore::save_status).
    pub fn with_last_status(
        mut self,
        status: impl Into<String>,
        since: SystemTime,
        polls: u32,
    ) -> ClaimedJob {
        self.last_status = Some((status.into(), since, polls));
        self
    }
}

/// A status change seen while waiting, for
/// [`TrackStore::save_status`](super::TrackStore::save_status).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusChange {
    /// The job id.
    pub id: String,
    /// The status, as the API names it (`pending`, `processing`, …).
    pub status: String,
    /// How long before the call it was first seen (the store subtracts it
    /// from its own clock).
    pub age: Duration,
    /// Polls made until then, that one included.
    pub polls: u32,
}

impl StatusChange {
    /// A status first seen `age` ago, after `polls` polls.
    pub fn new(
        id: impl Into<String>,
        status: impl Into<String>,
        age: Duration,
        polls: u32,
    ) -> Self {
        StatusChange {
            id: id.into(),
            status: status.into(),
            age,
            polls,
        }
    }
}

/// The end of a wait, for [`TrackStore::complete`](super::TrackStore::complete).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finished {
    /// The job id.
    pub id: String,
    /// How the wait ended, as text the tracker reads back.
    pub outcome: String,
}

impl Finished {
    /// A job's stored end.
    pub fn new(id: impl Into<String>, outcome: impl Into<String>) -> Finished {
        Finished {
            id: id.into(),
            outcome: outcome.into(),
        }
    }
}

/// A delivery that failed, for [`TrackStore::retry`](super::TrackStore::retry).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retry {
    /// The job id.
    pub id: String,
    /// What went wrong (the handler's error, a timeout, a row that cannot
    /// be read).
    pub error: String,
    /// Due again this long after the call; `None`: the job is dead.
    pub delay: Option<Duration>,
}

impl Retry {
    /// Delivered again `delay` from now.
    pub fn later(id: impl Into<String>, error: impl Into<String>, delay: Duration) -> Retry {
        Retry {
            id: id.into(),
            error: error.into(),
            delay: Some(delay),
        }
    }

    /// Dead: kept with `error`, never delivered again until
    /// [`Tracker::retry_dead`](super::Tracker::retry_dead).
    pub fn dead(id: impl Into<String>, error: impl Into<String>) -> Retry {
        Retry {
            id: id.into(),
            error: error.into(),
            delay: None,
        }
    }
}

/// Which ended jobs [`TrackStore::list`](super::TrackStore::list) pages
/// through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Listing {
    /// Delivered jobs.
    Delivered,
    /// Dead jobs.
    Dead,
}

/// A delivered or dead job, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndedJob {
    /// Where the next page starts: the store's own order of tracking.
    pub cursor: u64,
    /// The job id.
    pub id: String,
    /// Its stored outcome (a dead job whose row could not be read may have
    /// none).
    pub outcome: Option<String>,
    /// The last handler error (or why the row could not be read).
    pub error: Option<String>,
    /// Deliveries started.
    pub deliveries: u32,
    /// When it was delivered or died (the store's clock).
    pub ended_at: SystemTime,
}

impl EndedJob {
    /// A listed job.
    pub fn new(cursor: u64, id: impl Into<String>, ended_at: SystemTime) -> EndedJob {
        EndedJob {
            cursor,
            id: id.into(),
            outcome: None,
            error: None,
            deliveries: 0,
            ended_at,
        }
    }

    /// Its outcome, error and deliveries.
    pub fn with(mut self, outcome: Option<String>, error: Option<String>, deliveries: u32) -> Self {
        self.outcome = outcome;
        self.error = error;
        self.deliveries = deliveries;
        self
    }
}

/// What the adaptive poll schedule learned about one job type. Opaque: a
/// store keeps it by [`job_type`](Learned::job_type) as its serde form
/// (JSON, say) and gives it back as it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    pub(crate) job_type: String,
    pub(crate) samples: u32,
    pub(crate) mean: f64,
    pub(crate) m2: f64,
}

impl Learned {
    /// The job type, e.g. `mx-v2v`.
    pub fn job_type(&self) -> &str {
        &self.job_type
    }

    pub(crate) fn from_row(row: (String, u32, f64, f64)) -> Learned {
        Learned {
            job_type: row.0,
            samples: row.1,
            mean: row.2,
            m2: row.3,
        }
    }

    pub(crate) fn to_row(&self) -> (String, u32, f64, f64) {
        (self.job_type.clone(), self.samples, self.mean, self.m2)
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// To be polled.
    Waiting,
    /// Its outcome stored, its delivery not yet recorded.
    Finished,
    /// Delivered.
    Delivered,
    /// Its handler failed too often, or its row could not be read.
    Dead,
}

impl JobState {
    /// The state of a stored number (0 waiting, 1 finished, 2 delivered,
    /// 3 dead), as the crate's stores keep it.
    pub(crate) fn from_code(code: i64) -> JobState {
        match code {
            0 => JobState::Waiting,
            1 => JobState::Finished,
            2 => JobState::Delivered,
            _ => JobState::Dead,
        }
    }
}

/// One job as stored, for [`TrackStore::job`](super::TrackStore::job).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredJob {
    /// The job id.
    pub id: String,
    /// The metadata given when it was first tracked, as JSON text.
    pub meta: String,
    /// Where it is.
    pub state: JobState,
    /// When it was first tracked (the store's clock).
    pub tracked_at: SystemTime,
    /// When its wait ends (the store's clock).
    pub deadline: SystemTime,
    /// Its stored outcome, once finished.
    pub outcome: Option<String>,
    /// Deliveries started.
    pub deliveries: u32,
    /// The last status seen, when it was first seen, and the polls then.
    pub last_status: Option<(String, SystemTime, u32)>,
    /// The last handler error, or why the row could not be read.
    pub error: Option<String>,
    /// When it was delivered or died.
    pub ended_at: Option<SystemTime>,
}

impl StoredJob {
    /// A stored job with no outcome, status, error or end yet.
    pub fn new(
        id: impl Into<String>,
        meta: impl Into<String>,
        state: JobState,
        tracked_at: SystemTime,
        deadline: SystemTime,
    ) -> StoredJob {
        StoredJob {
            id: id.into(),
            meta: meta.into(),
            state,
            tracked_at,
            deadline,
            outcome: None,
            deliveries: 0,
            last_status: None,
            error: None,
            ended_at: None,
        }
    }

    /// Its outcome (if any) and deliveries.
    pub fn with_outcome(mut self, outcome: Option<String>, deliveries: u32) -> StoredJob {
        self.outcome = outcome;
        self.deliveries = deliveries;
        self
    }

    /// The last status seen.
    pub fn with_last_status(
        mut self,
        status: impl Into<String>,
        since: SystemTime,
        polls: u32,
    ) -> Self {
        self.last_status = Some((status.into(), since, polls));
        self
    }

    /// Its last error and when it ended.
    pub fn with_end(mut self, error: Option<String>, ended_at: Option<SystemTime>) -> StoredJob {
        self.error = error;
        self.ended_at = ended_at;
        self
    }
}
