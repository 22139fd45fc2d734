//! The hub under load: 10,000 jobs in one `wait_all`, of which 2,000 answer
//! 503 with `Retry-After: 60` for their first 3 minutes. The healthy jobs
//! are answered as soon as without the sick ones, and the sick ones send no
//! more than their `Retry-After` allows (paused clock, in-memory
//! transport).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, JobQuery, JobStatus, PollPolicy, RetryPolicy};
use support::{secs, KEY};
use tokio::time::Instant;

const JOBS: usize = 10_000;
const SICK_FOR: Duration = Duration::from_secs(180);

fn is_sick(i: usize) -> bool {
    i.is_multiple_of(5)
}

/// When healthy job `i` finishes: 10 to 16 s after the start.
fn done_at(i: usize) -> Duration {
    secs(10 + (i % 7) as u64)
}

struct Run {
    /// Healthy job → how long after its end its answer came.
    delays: HashMap<usize, Duration>,
    healthy_requests: u64,
    sick_requests: u64,
}

async fn run(with_sick: bool) -> Run {
    let start = Instant::now();
    let healthy_requests = Arc::new(AtomicU64::new(0));
    let sick_requests = Arc::new(AtomicU64::new(0));
    let mock = {
        let (healthy, sick) = (Arc::clone(&healthy_requests), Arc::clone(&sick_requests));
        MockTransport::from_fn(move |req| {
            let id = req.img_uuid.as_deref().unwrap();
            let i: usize = id[1..].parse().unwrap();
            let now = req.at - start;
            if is_sick(i) {
                sick.fetch_add(1, Ordering::Relaxed);
                if now < SICK_FOR {
                    return MockResponse::status(503).header("retry-after", "60");
                }
                return MockResponse::job(id, "success");
            }
            healthy.fetch_add(1, Ordering::Relaxed);
            let status = if now >= done_at(i) {
                "success"
            } else {
                "pending"
            };
            MockResponse::job(id, status)
        })
        .without_log()
    };
    let client = Client::builder()
        .api_key(KEY)
        .transport(mock)
        .retry_policy(RetryPolicy::default())
        .poll_policy(PollPolicy::fixed(secs(5)).jitter(Jitter::None))
        .build()
        .unwrap();
    let queries = (0..JOBS)
        .filter(|&i| with_sick || !is_sick(i))
        .map(|i| JobQuery::new(format!("j{i}")).unwrap());
    let mut delays = HashMap::new();
    let mut stream = Box::pin(client.wait_all(queries));
    let mut answered = 0;
    while let Some((query, result)) = stream.next().await {
        answered += 1;
        let i: usize = query.img_uuid()[1..].parse().unwrap();
        let detail = result.unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(detail.status(), &JobStatus::Succeeded);
        if !is_sick(i) {
            delays.insert(i, start.elapsed().saturating_sub(done_at(i)));
        }
    }
    let expected = if with_sick { JOBS } else { JOBS - JOBS / 5 };
    assert_eq!(answered, expected);
    Run {
        delays,
        healthy_requests: healthy_requests.load(Ordering::Relaxed),
        sick_requests: sick_requests.load(Ordering::Relaxed),
    }
}

#[tokio::test(start_paused = true)]
async fn sick_jobs_do_not_hold_back_healthy_ones() {
    let alone = run(false).await;
    let mixed = run(true).await;
    let mean = |r: &Run| r.delays.values().sum::<Duration>().as_secs_f64() / r.delays.len() as f64;
    let (alone_mean, mixed_mean) = (mean(&alone), mean(&mixed));
    println!(
        "healthy jobs' mean delay over their end: {alone_mean:.3} s alone, {mixed_mean:.3} s with 2,000 sick jobs; requests: {} healthy alone, {} healthy and {} sick mixed",
        alone.healthy_requests, mixed.healthy_requests, mixed.sick_requests
    );
    assert_eq!(alone.delays.len(), 8_000);
    assert!(alone_mean > 0.0);
    assert!(
        mixed_mean <= alone_mean * 1.10,
        "{mixed_mean} s against {alone_mean} s"
    );
    let worst = mixed.delays.values().max().unwrap();
    assert!(*worst <= secs(5), "{worst:?}");
    // The healthy jobs were polled exactly as often with the sick ones.
    assert_eq!(mixed.healthy_requests, alone.healthy_requests);
    // Every request after a 503 waited out its 60 s Retry-After, whether
    // it was a retry or the next poll: in 3 minutes of 503s, a sick job
    // sends at most 4 requests (at 0, 60, 120 and 180 s or later), and
    // its first answer after that ends it.
    assert!(mixed.sick_requests >= 2_000 * 2, "{}", mixed.sick_requests);
    assert!(mixed.sick_requests <= 2_000 * 4, "{}", mixed.sick_requests);
}
