//! The first batch of a fresh process: many jobs of a type the policy has
//! never seen, started at once and waited on together. On the paused clock
//! with the in-memory transport.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, JobQuery, JobStatus, PollPolicy};
use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use tokio::time::Instant;

mod support;

use support::time::rfc3339;

/// `n` run times, log-normal with median `median` s and spread `sigma`,
/// drawn with `seed`.
fn runs(n: usize, median: f64, sigma: f64, seed: u64) -> Vec<Duration> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dist = LogNormal::new(median.ln(), sigma).unwrap();
    (0..n)
        .map(|_| Duration::from_secs_f64(dist.sample(&mut rng)))
        .collect()
}

/// A server whose job `j{i}` started at `origin` and runs `runs[i]`, with
/// true server times; and a client with the default schedule, fresh, and
/// without jitter.
fn setup(runs: Arc<Vec<Duration>>) -> (Client, MockTransport, Instant) {
    server(move |i, elapsed, wall| {
        let run = runs[i];
        if elapsed >= run {
            (
                "success",
                format!(r#","end_time":"{}""#, rfc3339(wall + run)),
            )
        } else {
            ("processing", String::new())
        }
    })
}

/// A server of jobs `j{i}` of type `t`, all started at `origin`, whose
/// status and end time (a JSON field or nothing) `answer` gives from `i`,
/// the time since `origin` and the wall clock then; and a client as
/// [`setup`]'s.
fn server(
    answer: impl Fn(usize, Duration, SystemTime) -> (&'static str, String) + Send + Sync + 'static,
) -> (Client, MockTransport, Instant) {
    let origin = Instant::now();
    let wall = SystemTime::now();
    let mock = MockTransport::from_fn(move |req| {
        let id = req.img_uuid.clone().unwrap();
        let i: usize = id.trim_start_matches('j').parse().unwrap();
        let (status, end) = answer(i, req.at - origin, wall);
        MockResponse::ok(format!(
            r#"{{"code":0,"data":{{"img_uuid":"{id}","status":"{status}","job_type":"t","start_time":"{}"{end}}}}}"#,
            rfc3339(wall)
        ))
    })
    .without_log();
    let client = Client::builder()
        .api_key("sk-cold-start-test")
        .poll_policy(PollPolicy::adaptive().jitter(Jitter::None).seed(7))
        .max_in_flight(1000)
        .transport(mock.clone())
        .build()
        .unwrap();
    (client, mock, origin)
}

#[tokio::test(start_paused = true)]
async fn a_fresh_policy_polls_a_batch_sparsely_before_its_first_jobs_end() {
    // 300 jobs of one type (median 90 s, σ 0.35, seed 3) started at once
    // on a fresh policy. The first ends after 36.6 s. The 1 s × 1.5ⁿ cold
    // schedule polls each job 8 times by then (at 0, 1, 2.5, 4.75, 8.1,
    // 13.2, 20.8 and 32.2 s), and 6,310 times in all (21.0 a job, mean
    // delay 2.09 s). The jobs still running are evidence that none is
    // about to end: weighing it, every job polled on what it says, took
    // 5,446 polls (18.15 a job, mean delay 2.74 s). With scouts polled on
    // it and the other waits parked until the type's ends time them
    // again: 4,465 (14.88 a job, mean delay 2.47 s; the order in which
    // answers of one instant are taken in moves a few polls). The bound leaves 2 %
    // for changes that move a few polls; the run itself is deterministic
    // (paused clock, no jitter).
    let runs = Arc::new(runs(300, 90.0, 0.35, 3));
    let (client, mock, origin) = setup(runs.clone());
    let queries = (0..runs.len()).map(|i| JobQuery::new(format!("j{i}")).unwrap());
    let mut ended = client.wait_all(queries);
    let mut overdue = 0;
    let mut delay = Duration::ZERO;
    while let Some((query, result)) = ended.next().await {
        assert_eq!(result.unwrap().status(), &JobStatus::Succeeded);
        let i: usize = query.img_uuid().trim_start_matches('j').parse().unwrap();
        let waited = Instant::now() - origin;
        delay += waited - runs[i];
        if waited > runs[i].mul_f64(2.5) + Duration::from_millis(1500) {
            overdue += 1;
        }
    }
    let polls = mock.request_count();
    let mut first = runs.to_vec();
    first.sort();
    println!(
        "first end {:.1} s; {polls} polls, {:.2} a job; mean delay {:.2} s",
        first[0].as_secs_f64(),
        polls as f64 / 300.0,
        delay.as_secs_f64() / 300.0
    );
    assert_eq!(overdue, 0);
    assert!(polls <= 4_560, "{polls}");
    // Not sparse by seeing ends late: the mean delay stays under 3 s.
    assert!(delay < Duration::from_secs(3 * 300), "{delay:?}");
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_fails_fast_is_seen_failing_by_every_wait_in_time() {
    // 1,000 jobs of a type never seen, all failing 2 s after they
    // started (a bad input, a quota). Most waits are parked on the type's
    // scouts; the first failure a scout sees ends the parking, and every
    // wait sees its job failed by 2.5 × 2 s + 1.5 s, not at the longest
    // interval (60 s) a parked poll would wait.
    let (client, mock, origin) = server(|_, elapsed, _| {
        let failed = elapsed >= Duration::from_secs(2);
        (if failed { "failed" } else { "processing" }, String::new())
    });
    let queries = (0..1000).map(|i| JobQuery::new(format!("j{i}")).unwrap());
    let mut ended = client.wait_all(queries);
    let (mut n, mut last) = (0, Duration::ZERO);
    while let Some((_, result)) = ended.next().await {
        assert_eq!(result.unwrap().status(), &JobStatus::Failed);
        n += 1;
        last = Instant::now() - origin;
    }
    assert_eq!(n, 1000);
    println!(
        "all seen failed by {:.2} s, {} polls",
        last.as_secs_f64(),
        mock.request_count()
    );
    assert!(last <= Duration::from_millis(6_500), "{last:?}");
}
