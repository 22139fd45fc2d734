//! Code outside the crate can answer with the crate's error: a
//! `Service<JobQuery>` middleware of its own, in a stack built by hand, makes
//! errors with `Error::custom`, and the layers around it (retry) classify
//! them by their kind (in-memory transport: only the logic is under test).

mod support;

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use goenhance_jobs::transport::mock::MockTransport;
use goenhance_jobs::{
    AuthLayer, Error, ErrorKind, JobDetail, JobQuery, JobStatus, JobStatusService, RetryLayer,
    RetryPolicy,
};
use support::{ms, q};
use tower::{Service, ServiceBuilder, ServiceExt};

/// The error a middleware of the caller's own gives as a source.
#[derive(Debug)]
struct QuotaSpent(u32);

impl fmt::Display for QuotaSpent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "daily quota of {} polls spent", self.0)
    }
}

impl std::error::Error for QuotaSpent {}

/// Lets `limit` queries through, refuses the rest with an `Other` error;
/// the first `flaky` queries fail with a `Transport` error instead.
#[derive(Clone)]
struct Quota<S> {
    inner: S,
    limit: u32,
    flaky: u32,
    seen: Arc<AtomicU32>,
}

impl<S> Service<JobQuery> for Quota<S>
where
    S: Service<JobQuery, Response = JobDetail, Error = Error> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = JobDetail;
    type Error = Error;
    type Future = BoxFuture<'static, Result<JobDetail, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, query: JobQuery) -> Self::Future {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.flaky {
            let err = Error::custom(ErrorKind::Transport, "gateway link down");
            return std::future::ready(Err(err)).boxed();
        }
        if n > self.limit {
            let err = Error::custom(ErrorKind::Other, QuotaSpent(self.limit));
            return std::future::ready(Err(err)).boxed();
        }
        self.inner.call(query).boxed()
    }
}

fn stack(
    mock: &MockTransport,
    limit: u32,
    flaky: u32,
) -> (
    impl Service<JobQuery, Response = JobDetail, Error = Error> + Clone,
    Arc<AtomicU32>,
) {
    let seen = Arc::new(AtomicU32::new(0));
    let transport = ServiceBuilder::new()
        .layer(AuthLayer::bearer("sk-extension"))
        .service(mock.clone());
    let svc = JobStatusService::new("https://api.goenhance.ai", transport).unwrap();
    let quota = Quota {
        inner: svc,
        limit,
        flaky,
        seen: seen.clone(),
    };
    let policy = RetryPolicy::default()
        .max_attempts(3)
        .initial_backoff(ms(10))
        .no_budget();
    (
        ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .service(quota),
        seen,
    )
}

#[tokio::test(start_paused = true)]
async fn a_custom_transport_error_is_retried_and_an_other_error_is_not() {
    let mock = MockTransport::new();
    mock.timeline("job-1", &["processing"]);

    // Two link failures, then the answer: the retry layer saw transient
    // errors and sent the query again.
    let (svc, seen) = stack(&mock, 10, 2);
    let detail = svc.oneshot(q("job-1")).await.unwrap();
    assert_eq!(detail.status(), &JobStatus::Processing);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    assert_eq!(mock.request_count(), 1);

    // Over the quota: not transient, so one call and no retry.
    let (svc, seen) = stack(&mock, 0, 0);
    let err = svc.oneshot(q("job-1")).await.unwrap_err();
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(err.kind(), ErrorKind::Other);
    assert!(!err.is_transient());
    assert_eq!(err.to_string(), "daily quota of 0 polls spent");
    assert_eq!(format!("{err:#}"), "daily quota of 0 polls spent");
    let source = std::error::Error::source(&err).unwrap();
    assert!(source.downcast_ref::<QuotaSpent>().is_some());
    assert_eq!(mock.request_count(), 1);
}

#[test]
fn custom_errors_keep_only_the_kinds_outside_code_meets() {
    let cases = [
        (ErrorKind::Store, ErrorKind::Store, "store error: x"),
        (
            ErrorKind::Transport,
            ErrorKind::Transport,
            "transport error: x",
        ),
        (
            ErrorKind::InvalidInput,
            ErrorKind::InvalidInput,
            "invalid input: x",
        ),
        (ErrorKind::Other, ErrorKind::Other, "x"),
        (ErrorKind::Http, ErrorKind::Other, "x"),
        (ErrorKind::Deadline, ErrorKind::Other, "x"),
    ];
    for (asked, made, text) in cases {
        let err = Error::custom(asked, "x");
        assert_eq!((err.kind(), err.to_string().as_str()), (made, text));
        assert_eq!(err.status(), None);
        assert!(err.last_detail().is_none());
    }
}
