//! Waits on claimed jobs through the client's scheduler, resumed from what
//! the store kept.

use std::time::SystemTime;

use futures_util::future::{AbortHandle, Abortable, BoxFuture};

use super::clock::instant_of;
use super::store::ClaimedJob;
use crate::client::Client;
use crate::error::Error;
use crate::model::{JobDetail, JobStatus};
use crate::query::JobQuery;

/// A wait's end: its id and answer; `None` when it was aborted.
pub(crate) type WaitFuture = BoxFuture<'static, (String, Option<Result<JobDetail, Error>>)>;

/// Starts the wait on `job`, whose stored instants were read when the
/// store's clock said `store_now`, at the local instant `at`.
pub(crate) fn start_wait(
    client: &Client,
    query: JobQuery,
    job: &ClaimedJob,
    store_now: SystemTime,
    at: tokio::time::Instant,
    progress: tokio::sync::mpsc::UnboundedSender<(JobQuery, JobStatus, u32)>,
) -> (AbortHandle, WaitFuture) {
    let started = instant_of(job.tracked_at, store_now, at);
    let deadline = instant_of(job.deadline, store_now, at);
    let seed = job.last_status.as_ref().map(|(s, since, polls)| {
        (
            JobStatus::from_raw(s),
            instant_of(*since, store_now, at),
            *polls,
        )
    });
    let client = client.clone();
    let (abort, reg) = AbortHandle::new_pair();
    let id = job.id.clone();
    let wait = Abortable::new(
        async move {
            client
                .hub()
                .wait_until(query, started, deadline, seed, progress)
                .await
        },
        reg,
    );
    (abort, Box::pin(async move { (id, wait.await.ok()) }))
}
