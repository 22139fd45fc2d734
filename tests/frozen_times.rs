//! Server times that lie: a fake server on loopback whose `start_time` and
//! `end_time` are frozen at a past date, whatever its jobs really take.
//!
//! The batch cases are a seeded fault campaign: each prints its seed, and
//! `FROZEN_TIMES_SEED=<seed>` replays it.
#![cfg(feature = "fake")]

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use goenhance_jobs::fake::{FakeServer, Fault, FaultPlan, Timeline};
use goenhance_jobs::{Client, JobQuery, JobStatus, PollPolicy, RetryPolicy};
use tokio::time::Instant;

const KEY: &str = "sk-frozen-times-5";
const JOBS: u64 = 120;

/// 2024-07-12T12:49:12Z.
fn frozen_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_720_788_552)
}

/// What job `i` really takes: 0.5 s to 3 s, spread over the range.
fn true_duration(i: u64) -> Duration {
    Duration::from_millis(500 + (i * 389) % 2501)
}

/// The longest a wait of a job taking `t` may last.
///
/// Until a type has five finished jobs the schedule polls at 0, 1, 2.5,
/// 4.75 s (1 s × 1.5ⁿ), at most 10 % late with jitter: a job that ends just
/// after a poll is seen at the next one, at most 2.5 × the time of the poll
/// before, and no later than 1.1 s for a job under 1 s. The learned model
/// of a 0.5–3 s type polls at least that densely. A failed answer (5 % of
/// them) is retried after the retry layer's backoff (a few hundred ms), so
/// the bound is 2.5 × t + 1.5 s. Trusting the frozen times (5 min 28 s a
/// job) the schedule waited up to 60 s between polls.
fn bound(t: Duration) -> Duration {
    t.mul_f64(2.5) + Duration::from_millis(1500)
}

/// 120 jobs of two types, one every 2 s, each waited on with the default
/// policy and a 30 s deadline, as a new user would: the server's times all
/// say 12:49:12 to 12:54:40 (5 min 28 s), the jobs take 0.5 s to 3 s, and 5 %
/// of the answers are 500s or resets. Every wait ends in success within
/// [`bound`] of its job's true duration.
#[tokio::test(start_paused = true)]
async fn frozen_server_times_do_not_slow_waits_down() {
    let server = FakeServer::builder()
        .api_key(KEY)
        .faults(FaultPlan::random(
            0.05,
            16,
            [Fault::status(500), Fault::Reset],
        ))
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .base_url(server.base_url())
        .api_key(KEY)
        .poll_policy(
            PollPolicy::default()
                .timeout(Duration::from_secs(30))
                .seed(16),
        )
        .retry_policy(RetryPolicy::default().seed(16))
        .build()
        .unwrap();
    let server = std::sync::Arc::new(server);
    let origin = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..JOBS {
        let (server, client) = (server.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(origin + Duration::from_secs(2 * i)).await;
            let t = true_duration(i);
            let id = format!("job-{i}");
            let kind = ["mx-text2img", "mx-image-face-swap"][(i % 2) as usize];
            server.add_job(
                &id,
                Timeline::new(kind)
                    .pending(t / 4)
                    .processing(t - t / 4)
                    .succeed("image", format!("https://cdn.example/{i}.png"))
                    .start_time(frozen_start())
                    .end_time(frozen_start() + Duration::from_secs(328)),
            );
            let added = Instant::now();
            let result = client.wait(&id).await;
            (i, t, Instant::now() - added, result)
        }));
    }
    let mut worst = 0.0f64;
    for task in tasks {
        let (i, t, waited, result) = task.await.unwrap();
        let detail = result.unwrap_or_else(|e| panic!("job-{i} ({t:?}): {e}"));
        assert_eq!(detail.status(), &JobStatus::Succeeded, "job-{i}");
        assert_eq!(detail.run_time(), Some(Duration::from_secs(328)), "job-{i}");
        assert!(waited >= t, "job-{i}: {waited:?} < {t:?}");
        assert!(
            waited <= bound(t),
            "job-{i} took {t:?} but its wait lasted {waited:?} ({} polls)",
            server.hits(&format!("job-{i}"))
        );
        worst = worst.max(waited.as_secs_f64() / t.as_secs_f64());
    }
    println!(
        "frozen times: {JOBS} waits, {} requests, worst wait {worst:.2} × the job's duration",
        server.total_requests()
    );
}

/// The campaign's seed: `FROZEN_TIMES_SEED`, else a fixed one.
fn campaign_seed() -> u64 {
    match std::env::var("FROZEN_TIMES_SEED") {
        Ok(s) => s.parse().expect("FROZEN_TIMES_SEED is a number"),
        Err(_) => 22,
    }
}

/// `jobs` jobs of 0.5–3 s (drawn from `seed`), one in ten failing, added
/// at once and waited on together with one `wait_all` and a 30 s deadline,
/// as a new user would: 10 % of the answers are 500s, 503s or resets, and
/// the server's times all say 12:49:12 to 12:54:40. Every job is answered
/// with the status its timeline ends in, within [`bound`] of its duration.
async fn frozen_batch(jobs: usize, seed: u64) {
    println!("frozen-times batch of {jobs}: seed {seed} (FROZEN_TIMES_SEED={seed} replays it)");
    let server = FakeServer::builder()
        .api_key(KEY)
        .faults(FaultPlan::random(
            0.10,
            seed,
            [Fault::status(500), Fault::status(503), Fault::Reset],
        ))
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .base_url(server.base_url())
        .api_key(KEY)
        .poll_policy(
            PollPolicy::default()
                .timeout(Duration::from_secs(30))
                .seed(seed),
        )
        .retry_policy(RetryPolicy::default().seed(seed))
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut truth = HashMap::new();
    for i in 0..jobs {
        let t = Duration::from_millis(rng.u64(500..=3000));
        let id = format!("job-{i}");
        let kind = ["mx-text2img", "mx-image-face-swap"][i % 2];
        let timeline = Timeline::new(kind).pending(t / 4).processing(t - t / 4);
        let timeline = if i % 10 == 3 {
            timeline.fail()
        } else {
            timeline.succeed("image", format!("https://cdn.example/{i}.png"))
        };
        server.add_job(
            &id,
            timeline
                .start_time(frozen_start())
                .end_time(frozen_start() + Duration::from_secs(328)),
        );
        truth.insert(id, t);
    }
    let origin = Instant::now();
    let queries: Vec<JobQuery> = (0..jobs)
        .map(|i| JobQuery::new(format!("job-{i}")).unwrap())
        .collect();
    let mut answers = client.wait_all(queries);
    let (mut answered, mut worst) = (0, 0.0f64);
    while let Some((query, result)) = answers.next().await {
        let waited = Instant::now() - origin;
        let id = query.img_uuid();
        let t = truth[id];
        let detail = result.unwrap_or_else(|e| panic!("{id} ({t:?}), seed {seed}: {e}"));
        let expected = match server.final_status(id).as_deref() {
            Some("success") => JobStatus::Succeeded,
            Some("failed") => JobStatus::Failed,
            other => panic!("{id}: the server's timeline ends in {other:?}"),
        };
        assert_eq!(detail.status(), &expected, "{id}, seed {seed}");
        assert!(
            waited >= t,
            "{id}: answered after {waited:?}, before its end at {t:?}"
        );
        assert!(
            waited <= bound(t),
            "{id} took {t:?} but its wait lasted {waited:?} ({} polls), seed {seed}",
            server.hits(id)
        );
        worst = worst.max(waited.as_secs_f64() / t.as_secs_f64());
        answered += 1;
    }
    assert_eq!(answered, jobs, "seed {seed}");
    println!(
        "frozen-times batch of {jobs}: {} requests, worst wait {worst:.2} × the job's duration",
        server.total_requests()
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_with_frozen_server_times_and_faults_is_answered_in_time() {
    frozen_batch(120, campaign_seed()).await;
}

#[tokio::test(start_paused = true)]
async fn a_thousand_jobs_with_frozen_server_times_and_faults_are_answered_in_time() {
    frozen_batch(1000, campaign_seed()).await;
}
