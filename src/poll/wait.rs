//! One wait in the caller's task: the loop of [`Poller`](super::Poller)
//! and `Client::watch`, over the same [`WaitState`] the hub keeps per job.

use futures_core::Stream;
use tokio::time::{sleep_until, Instant};
use tower::{Service, ServiceExt};
use tracing::Instrument;

use super::state::{Step, WaitState};
use super::PollPolicy;
use crate::error::Error;
use crate::model::JobDetail;
use crate::query::JobQuery;
use crate::telemetry::{InFlight, WaitMeter, WaitSpan};

/// Polls `svc` until `query`'s job is
/// finished or the policy ends the wait.
pub(crate) async fn wait<S>(
    mut svc: S,
    query: JobQuery,
    policy: PollPolicy,
) -> Result<JobDetail, Error>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error>,
{
    let mut trace = WaitSpan::start(query.img_uuid(), &tracing::Span::current());
    let mut meter = WaitMeter::start(1);
    let span = trace.span().clone();
    async move {
        let mut state = WaitState::new(&policy, Instant::now());
        let query = query.with_deadline(state.deadline());
        let result = loop {
            if let Some(error) = state.expired(query.img_uuid(), Instant::now()) {
                break Err(error);
            }
            let result = poll_once(&mut svc, query.clone()).await;
            trace.polled();
            match step(&mut state, &policy, query.img_uuid(), result) {
                Step::Done(result) => break result,
                Step::Again { at, .. } => sleep_until(at).await,
            }
        };
        trace.finish(&result);
        meter.end(&result);
        result
    }
    .instrument(span)
    .await
}

/// One poll: waits for `svc` to be ready, then asks it about `query`.
async fn poll_once<S>(svc: &mut S, query: JobQuery) -> Result<JobDetail, Error>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error>,
{
    let _flight = InFlight::start();
    svc.ready().await?.call(query).await
}

pub(crate) fn step(
    state: &mut WaitState,
    policy: &PollPolicy,
    img_uuid: &str,
    result: Result<JobDetail, Error>,
) -> Step {
    crate::telemetry::polled(&result);
    let now = Instant::now();
    if tracing::enabled!(tracing::Level::DEBUG) {
        let status = match &result {
            Ok(d) => d.status().as_str().to_owned(),
            Err(_) => "error".to_owned(),
        };
        let step = state.on_result(policy, now, img_uuid, result);
        if let Step::Again { at, .. } = &step {
            tracing::debug!(img_uuid, status = %status, next_in_ms = u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX), "polled");
        }
        step
    } else {
        state.on_result(policy, now, img_uuid, result)
    }
}

/// Yields each distinct status of a job once, then ends after the terminal
/// one (or an error that ends the wait).
pub(crate) fn watch<S>(
    svc: S,
    query: JobQuery,
    policy: PollPolicy,
) -> impl Stream<Item = Result<JobDetail, Error>> + Send
where
    S: Service<JobQuery, Response = JobDetail, Error = Error> + Send + 'static,
    S::Future: Send,
{
    struct Watch<S> {
        svc: S,
        query: JobQuery,
        policy: PollPolicy,
        state: WaitState,
        next: Option<Instant>,
        done: bool,
        trace: WaitSpan,
        meter: WaitMeter,
    }
    let now = Instant::now();
    let state = WaitState::new(&policy, now);
    let query = query.with_deadline(state.deadline());
    let trace = WaitSpan::start(query.img_uuid(), &tracing::Span::current());
    let init = Watch {
        svc,
        query,
        policy,
        state,
        next: None,
        done: false,
        trace,
        meter: WaitMeter::start(1),
    };
    futures_util::stream::unfold(init, |mut w| async move {
        if w.done {
            return None;
        }
        let span = w.trace.span().clone();
        async move {
            loop {
                if let Some(at) = w.next.take() {
                    sleep_until(at).await;
                }
                if let Some(error) = w.state.expired(w.query.img_uuid(), Instant::now()) {
                    let result = Err(error);
                    w.done = true;
                    w.trace.finish(&result);
                    w.meter.end(&result);
                    return Some((result, w));
                }
                let result = poll_once(&mut w.svc, w.query.clone()).await;
                w.trace.polled();
                match step(&mut w.state, &w.policy, w.query.img_uuid(), result) {
                    Step::Done(result) => {
                        w.done = true;
                        w.trace.finish(&result);
                        w.meter.end(&result);
                        return Some((result, w));
                    }
                    Step::Again { at, changed } => {
                        w.next = Some(at);
                        if let Some(detail) = changed {
                            return Some((Ok(detail), w));
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await
    })
}
