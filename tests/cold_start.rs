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
    let (mock, origin) = server(move |id, elapsed, wall| {
        let run = runs[id.trim_start_matches('j').parse::<usize>().unwrap()];
        if elapsed >= run {
            ended(wall + run)
        } else {
            ("processing", String::new())
        }
    });
    (client(&mock, &fresh()), mock, origin)
}

/// A success that ended at `at`: its status and its end time's field.
fn ended(at: SystemTime) -> (&'static str, String) {
    ("success", format!(r#","end_time":"{}""#, rfc3339(at)))
}

/// A server of jobs of type `t`, all started at `origin` (returned),
/// whose status and end time (a JSON field or nothing) `answer` gives
/// from the id, the time since `origin` and the wall clock at `origin`.
fn server(
    answer: impl Fn(&str, Duration, SystemTime) -> (&'static str, String) + Send + Sync + 'static,
) -> (MockTransport, Instant) {
    let origin = Instant::now();
    let wall = SystemTime::now();
    let mock = MockTransport::from_fn(move |req| {
        let id = req.img_uuid.clone().unwrap();
        let (status, end) = answer(&id, req.at - origin, wall);
        MockResponse::ok(format!(
            r#"{{"code":0,"data":{{"img_uuid":"{id}","status":"{status}","job_type":"t","start_time":"{}"{end}}}}}"#,
            rfc3339(wall)
        ))
    })
    .without_log();
    (mock, origin)
}

/// The default schedule, fresh, without jitter, seeded.
fn fresh() -> PollPolicy {
    PollPolicy::adaptive().jitter(Jitter::None).seed(7)
}

/// A client of `mock` with `policy`.
fn client(mock: &MockTransport, policy: &PollPolicy) -> Client {
    Client::builder()
        .api_key("sk-cold-start-test")
        .poll_policy(policy.clone())
        .max_in_flight(1000)
        .transport(mock.clone())
        .build()
        .unwrap()
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
    let (mock, origin) = server(|_, elapsed, _| {
        let failed = elapsed >= Duration::from_secs(2);
        (if failed { "failed" } else { "processing" }, String::new())
    });
    let client = client(&mock, &fresh());
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

#[tokio::test(start_paused = true)]
async fn an_end_one_client_sees_times_the_parked_waits_of_another_sharing_its_policy() {
    // Two clients share one policy (its clones share what is learned),
    // each with its own scheduler. Client A waits on 1,000 jobs of a
    // type never seen, client B on 3 more, first answered a second later;
    // all end after 20 s. B's waits are parked (none of them is a scout
    // with this seed); the ends A's scouts see time them again, so B sees
    // its jobs ended by 2.5 × 20 s + 1.5 s, not at B's next parked poll
    // (61 s).
    let (mock, origin) = server(|_, elapsed, wall| {
        let twenty = Duration::from_secs(20);
        if elapsed >= twenty {
            ended(wall + twenty)
        } else {
            ("processing", String::new())
        }
    });
    let policy = fresh();
    let (a, b) = (client(&mock, &policy), client(&mock, &policy));
    let queries = |prefix: &str, n: usize| {
        (0..n)
            .map(|i| JobQuery::new(format!("{prefix}{i}")).unwrap())
            .collect::<Vec<_>>()
    };
    let a_all = a.wait_all(queries("a", 1000));
    let a_task = tokio::spawn(async move { a_all.count().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut b_all = b.wait_all(queries("b", 3));
    let mut seen = Vec::new();
    while let Some((query, result)) = b_all.next().await {
        assert_eq!(result.unwrap().status(), &JobStatus::Succeeded);
        seen.push((query.img_uuid().to_owned(), Instant::now() - origin));
    }
    assert_eq!(a_task.await.unwrap(), 1000);
    let b_polls: Vec<u64> = (0..3).map(|i| mock.count_for(&format!("b{i}"))).collect();
    println!("B's jobs seen ended at {seen:?}, after {b_polls:?} polls");
    assert_eq!(seen.len(), 3);
    // Parked: two polls each (the first answer, and the one that saw the
    // end), none in between.
    assert_eq!(b_polls, [2, 2, 2]);
    for (id, at) in seen {
        assert!(at <= Duration::from_millis(51_500), "{id} at {at:?}");
    }
}
