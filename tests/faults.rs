//! Every fault class over the real stack (`HyperTransport` + the fake server
//! on loopback), and `get` under chaos.
#![cfg(feature = "fake")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::fake::{FakeServer, Fault, FaultPlan, Garbage, RetryAfter, Timeline};
use goenhance_jobs::{Client, JobStatus, RetryPolicy};
use support::{server_client, KEY};
use tokio::time::Instant;

fn client(server: &FakeServer, attempt_timeout: Duration, policy: RetryPolicy) -> Client {
    server_client(server.base_url())
        .attempt_timeout(attempt_timeout)
        .retry_policy(policy)
        .build()
        .unwrap()
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .jitter(Jitter::None)
}

fn fault_classes() -> Vec<(&'static str, Fault)> {
    vec![
        ("408", Fault::status(408)),
        (
            "429 retry-after 0",
            Fault::retry_after(429, RetryAfter::Seconds(0)),
        ),
        ("500", Fault::status(500)),
        ("502 empty", Fault::status_empty(502)),
        ("503 retry-after 0", Fault::unavailable(0)),
        ("504", Fault::status(504)),
        ("reset", Fault::Reset),
        ("no answer", Fault::NoAnswer),
        ("late", Fault::late(Duration::from_secs(5))),
        ("truncated", Fault::Truncated),
        ("garbage json", Fault::Garbage(Garbage::TruncatedJson)),
        ("garbage html", Fault::Garbage(Garbage::Html)),
        ("slow dribble", Fault::dribble(1, Duration::from_millis(50))),
    ]
}

#[tokio::test]
async fn each_transient_fault_is_retried_to_the_right_answer() {
    for (name, fault) in fault_classes() {
        let server = FakeServer::builder()
            .api_key(KEY)
            .job(
                "j",
                Timeline::new("mx-v2v").succeed("video", "https://cdn.example/j.mp4"),
            )
            .job_faults("j", FaultPlan::script([Some(fault)]))
            .start()
            .await
            .unwrap();
        let c = client(&server, Duration::from_millis(300), fast_retries());
        let d = c.get("j").await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.status(), &JobStatus::Succeeded, "{name}");
        assert_eq!(d.outputs()[0].url(), "https://cdn.example/j.mp4", "{name}");
        assert_eq!(server.hits("j"), 2, "{name}");
    }
}

#[tokio::test]
async fn non_transient_answers_are_sent_once_over_the_wire() {
    let faults = [
        Fault::status(400),
        Fault::status(401),
        Fault::status(403),
        Fault::status(404),
        Fault::api_error(40001, "invalid token"),
    ];
    for fault in faults {
        let server = FakeServer::builder()
            .api_key(KEY)
            .job(
                "j",
                Timeline::new("mx-v2v").pending(Duration::from_secs(60)),
            )
            .job_faults("j", FaultPlan::script([Some(fault.clone())]))
            .start()
            .await
            .unwrap();
        let err = client(&server, Duration::from_secs(2), fast_retries())
            .get("j")
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{fault:?}: {err}");
        assert_eq!(server.hits("j"), 1, "{fault:?}");
    }
}

#[tokio::test]
async fn the_budget_holds_against_a_total_outage() {
    let server = FakeServer::builder()
        .api_key(KEY)
        .faults(FaultPlan::random(1.0, 1, [Fault::status(503)]))
        .start()
        .await
        .unwrap();
    let c = client(&server, Duration::from_secs(2), fast_retries());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        tasks.push(tokio::spawn(
            async move { c.get(&format!("job-{i}")).await },
        ));
    }
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    }
    // 50 first attempts + 500 tokens / 5 per retry.
    assert_eq!(server.total_requests(), 150);
}

/// 2,000 `get` calls over 200 jobs, about 10 % of answers faulty (every kind),
/// a short attempt timeout: each call returns the state the job had at some
/// moment during the call. The timeout (1 s) cuts the answers that never
/// come; shorter, a loaded machine running the other tests beside this
/// one made healthy answers miss it five times in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_get_always_returns_the_true_state() {
    let kinds: Vec<Fault> = fault_classes()
        .into_iter()
        .map(|(_, f)| f)
        .chain([Fault::late(Duration::from_millis(30))])
        .collect();
    let mut builder = FakeServer::builder()
        .api_key(KEY)
        .faults(FaultPlan::random(0.10, 2024, kinds));
    for i in 0..200u64 {
        let ms = |n: u64| Duration::from_millis(n);
        let timeline =
            Timeline::new(["mx-v2v", "mx-text2img", "mx-image-face-swap"][i as usize % 3])
                .pending(ms(100 + (i * 7) % 200))
                .processing(ms(200 + (i * 13) % 400));
        let timeline = if i % 5 == 0 {
            timeline.fail()
        } else {
            timeline.succeed("video", format!("https://cdn.example/{i}.mp4"))
        };
        builder = builder.job(format!("job-{i}"), timeline);
    }
    let server = Arc::new(builder.start().await.unwrap());
    let c = client(
        &server,
        Duration::from_secs(1),
        RetryPolicy::default()
            .initial_backoff(Duration::from_millis(10))
            .max_backoff(Duration::from_millis(100)),
    );

    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let (c, server) = (c.clone(), server.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("job-{i}");
            let mut wrong = Vec::new();
            for n in 0..10u64 {
                tokio::time::sleep(Duration::from_millis(10 + (i + n * 31) % 90)).await;
                let before = Instant::now();
                let got = c.get(&id).await;
                let after = Instant::now();
                let truth_before = JobStatus::from_raw(&server.status_at(&id, before).unwrap());
                let truth_after = JobStatus::from_raw(&server.status_at(&id, after).unwrap());
                match got {
                    Ok(d) => {
                        let rank = |s: &JobStatus| match s {
                            JobStatus::Pending => 0,
                            JobStatus::Processing => 1,
                            _ => 2,
                        };
                        let ok = rank(d.status()) >= rank(&truth_before)
                            && rank(d.status()) <= rank(&truth_after)
                            && (!d.is_terminal() || d.status() == &truth_after);
                        if !ok {
                            wrong.push(format!(
                                "{id}: got {} between {truth_before} and {truth_after}",
                                d.status()
                            ));
                        }
                    }
                    Err(e) => wrong.push(format!("{id}: error {e}")),
                }
            }
            wrong
        }));
    }
    let mut wrong = Vec::new();
    for t in tasks {
        wrong.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let requests = server.total_requests();
    println!(
        "chaos get: 2000 calls, {requests} requests ({:.3} per call), {elapsed:?}",
        requests as f64 / 2000.0
    );
    assert!(
        wrong.is_empty(),
        "{} wrong answers: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(
        requests >= 2000 + 100,
        "faults must have caused retries: {requests}"
    );
}

/// 200 waits of mixed outcomes with ~30 % faulty answers of every kind:
/// each ends in the job's true final state, and no job is polled after a
/// terminal answer reached the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_waits_reach_the_true_final_state() {
    let kinds: Vec<(Fault, u32)> = fault_classes()
        .into_iter()
        .map(|(_, f)| (f, 1))
        .chain([
            (Fault::too_many_requests(1), 1),
            (Fault::late(Duration::from_millis(20)), 1),
        ])
        .collect();
    let mut builder = FakeServer::builder()
        .api_key(KEY)
        .faults(FaultPlan::random_weighted(0.30, 7, kinds));
    let ms = Duration::from_millis;
    for i in 0..200u64 {
        let t = Timeline::new(["mx-v2v", "mx-text2img", "mx-image-face-swap"][i as usize % 3])
            .pending(ms(100 + (i * 37) % 400))
            .processing(ms(200 + (i * 53) % 900));
        let t = match i % 10 {
            0 | 1 => t.fail(),
            2 => t.finish("completed"),
            3 => t.finish("error"),
            _ => t.succeed("image", format!("https://cdn.example/{i}.png")),
        };
        builder = builder.job(format!("job-{i}"), t);
    }
    let server = builder.start().await.unwrap();
    let c = Client::builder()
        .base_url(server.base_url())
        .api_key(KEY)
        .attempt_timeout(ms(250))
        .retry_policy(
            RetryPolicy::default()
                .initial_backoff(ms(10))
                .max_backoff(ms(100)),
        )
        .poll_policy(
            goenhance_jobs::PollPolicy::exponential(ms(100), ms(400))
                .timeout(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let ids: Vec<String> = (0..200).map(|i| format!("job-{i}")).collect();
    let results: Vec<_> = futures_util::StreamExt::collect::<Vec<_>>(
        c.wait_all(
            ids.iter()
                .map(|id| goenhance_jobs::JobQuery::new(id).unwrap()),
        ),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 200);
    for (q, r) in &results {
        let id = q.img_uuid();
        let d = r.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"));
        let truth = JobStatus::from_raw(&server.final_status(id).unwrap());
        assert_eq!(d.status(), &truth, "{id}");
        assert_eq!(server.polls_after_terminal(id), 0, "{id}");
    }
    let requests = server.total_requests();
    println!("chaos wait: 200 waits, {requests} requests, {elapsed:?}");
}
