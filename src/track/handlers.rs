//! Handler tasks: each delivery runs in a task of its own, bounded in
//! time, its panic caught.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinSet;

use super::Completion;
use crate::error::BoxError;

/// How a delivery ended.
#[derive(Debug)]
pub(crate) struct HandlerEnd {
    pub(crate) id: String,
    pub(crate) deliveries: u32,
    pub(crate) result: Result<(), String>,
    /// It took longer than the handler timeout (and `result` says so).
    pub(crate) timed_out: bool,
}

/// Calls `handler` for `done` in a task of `set`; a handler that takes
/// longer than `timeout` is dropped and counts as failed.
pub(crate) fn spawn_handler<F, Fut>(
    set: &mut JoinSet<HandlerEnd>,
    handler: Arc<F>,
    done: Completion,
    timeout: Duration,
) where
    F: Fn(Completion) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let id = done.query.img_uuid().to_owned();
    let deliveries = done.deliveries;
    let fut = handler(done);
    set.spawn(async move {
        let ran = tokio::time::timeout(timeout, AssertUnwindSafe(fut).catch_unwind()).await;
        let timed_out = ran.is_err();
        let result = match ran {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(_)) => Err("the handler panicked".to_owned()),
            Err(_) => Err(format!(
                "the handler timed out after {} ms",
                timeout.as_millis()
            )),
        };
        HandlerEnd {
            id,
            deliveries,
            result,
            timed_out,
        }
    });
}
