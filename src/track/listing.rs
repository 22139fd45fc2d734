//! Pages of ended jobs: [`Page`], [`DeliveredJob`], [`DeadJob`].

use std::time::SystemTime;

use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;

/// One page of a listing, and where the next starts.
#[derive(Debug)]
pub struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next: Option<u64>,
}

impl<T> Page<T> {
    /// The page's items.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// The items, owned.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }

    /// The cursor of the next page; `None` when this one is the last.
    pub fn next(&self) -> Option<u64> {
        self.next
    }
}

/// A delivered job, as [`Tracker::delivered`](super::Tracker::delivered)
/// lists it.
#[derive(Debug)]
pub struct DeliveredJob {
    pub(crate) query: JobQuery,
    pub(crate) detail: Result<JobDetail, Error>,
    pub(crate) deliveries: u32,
    pub(crate) ended_at: SystemTime,
}

impl DeliveredJob {
    /// The job.
    pub fn query(&self) -> &JobQuery {
        &self.query
    }

    /// How its wait ended, as stored.
    pub fn detail(&self) -> Result<&JobDetail, &Error> {
        self.detail.as_ref()
    }

    /// Deliveries started before the one recorded.
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }

    /// When the delivery was recorded (the store's clock).
    pub fn delivered_at(&self) -> SystemTime {
        self.ended_at
    }
}

/// A dead job, as [`Tracker::dead`](super::Tracker::dead) lists it.
#[derive(Debug)]
pub struct DeadJob {
    pub(crate) id: String,
    pub(crate) error: String,
    pub(crate) deliveries: u32,
    pub(crate) ended_at: SystemTime,
}

impl DeadJob {
    /// The stored id (it may not be a valid job id: a row that could not be
    /// read dies with its reason).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The last handler error, or why the row could not be read.
    pub fn error(&self) -> &str {
        &self.error
    }

    /// Deliveries started.
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }

    /// When it died (the store's clock).
    pub fn died_at(&self) -> SystemTime {
        self.ended_at
    }
}
