//! The hub behind `wait` and `wait_all`: one scheduler, merged duplicates,
//! shared limits (paused clock, in-memory transport).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::PerSecond;
use goenhance_jobs::{ClientBuilder, JobStatus, PollPolicy};
use support::{mock_client, q, secs};
use tokio::time::Instant;

fn builder(mock: &MockTransport) -> ClientBuilder {
    mock_client(mock).poll_policy(PollPolicy::fixed(secs(5)))
}

#[tokio::test(start_paused = true)]
async fn fifty_jobs_each_answered_once_with_the_right_state() {
    let mock = MockTransport::new();
    let mut want = HashMap::new();
    for i in 0..50usize {
        let id = format!("job-{i}");
        let mut steps = vec!["pending"; i % 7];
        steps.extend(vec!["processing"; i % 4]);
        let end = if i % 5 == 0 { "failed" } else { "success" };
        steps.push(end);
        mock.timeline(&id, &steps);
        want.insert(id, (steps.len() as u64, end));
    }
    let c = builder(&mock).build().unwrap();
    let start = Instant::now();
    let results: Vec<_> = c.wait_all(want.keys().map(|id| q(id))).collect().await;
    assert_eq!(results.len(), 50);
    let mut seen = std::collections::HashSet::new();
    let mut last_done = Duration::ZERO;
    for (query, result) in results {
        let d = result.unwrap();
        let (polls, end) = want[query.img_uuid()];
        let status = if end == "failed" {
            JobStatus::Failed
        } else {
            JobStatus::Succeeded
        };
        assert_eq!(d.status(), &status, "{query}");
        assert_eq!(d.img_uuid(), query.img_uuid());
        assert_eq!(mock.count_for(query.img_uuid()), polls, "{query}");
        assert!(seen.insert(query.img_uuid().to_owned()), "{query} twice");
        last_done = last_done.max(Duration::from_secs(5 * (polls - 1)));
    }
    // The longest timeline has 6 + 3 + 1 steps: done after 45 s.
    assert_eq!(start.elapsed(), last_done);
    assert_eq!(last_done, secs(45));
}

#[tokio::test(start_paused = true)]
async fn results_come_in_completion_order() {
    let mock = MockTransport::new();
    mock.timeline("slow", &["pending", "pending", "pending", "success"]);
    mock.timeline("fast", &["pending", "success"]);
    mock.timeline("now", &["failed"]);
    let c = builder(&mock).build().unwrap();
    let order: Vec<String> = c
        .wait_all([q("slow"), q("fast"), q("now")])
        .map(|(q, _)| q.img_uuid().to_owned())
        .collect()
        .await;
    assert_eq!(order, ["now", "fast", "slow"]);
}

#[tokio::test(start_paused = true)]
async fn duplicates_in_one_wait_all_poll_once() {
    let mock = MockTransport::new();
    mock.timeline("a", &["pending", "processing", "success"]);
    mock.timeline("b", &["pending", "success"]);
    let c = builder(&mock).build().unwrap();
    let results: Vec<_> = c
        .wait_all([q("a"), q("b"), q("a"), q("a"), q("b")])
        .collect()
        .await;
    assert_eq!(results.len(), 5);
    assert!(results
        .iter()
        .all(|(_, r)| r.as_ref().unwrap().is_terminal()));
    assert_eq!(
        results.iter().filter(|(q, _)| q.img_uuid() == "a").count(),
        3
    );
    assert_eq!(mock.count_for("a"), 3);
    assert_eq!(mock.count_for("b"), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_waits_on_one_job_share_its_polls() {
    let mock = MockTransport::new();
    mock.timeline("a", &["pending", "pending", "processing", "success"]);
    let c = builder(&mock).build().unwrap();
    let waits: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.wait("a").await })
        })
        .collect();
    // A late joiner, and a wait_all on the same job.
    tokio::time::sleep(secs(7)).await;
    let late = c.wait("a");
    let stream = c.wait_all([q("a")]).collect::<Vec<_>>();
    let (late, streamed) = tokio::join!(late, stream);
    assert_eq!(late.unwrap().status(), &JobStatus::Succeeded);
    assert_eq!(
        streamed[0].1.as_ref().unwrap().status(),
        &JobStatus::Succeeded
    );
    for w in waits {
        assert_eq!(w.await.unwrap().unwrap().status(), &JobStatus::Succeeded);
    }
    assert_eq!(mock.count_for("a"), 4);
}

#[tokio::test(start_paused = true)]
async fn the_in_flight_cap_is_never_exceeded() {
    let mock = MockTransport::from_fn(|req| {
        MockResponse::job(req.img_uuid.as_deref().unwrap(), "success").after(secs(1))
    });
    let c = builder(&mock).max_in_flight(8).build().unwrap();
    let start = Instant::now();
    let n = c
        .wait_all((0..200).map(|i| q(&format!("j{i}"))))
        .count()
        .await;
    assert_eq!(n, 200);
    assert_eq!(mock.max_in_flight(), 8);
    assert_eq!(mock.request_count(), 200);
    // 200 answers of 1 s each, 8 at a time.
    assert_eq!(start.elapsed(), secs(25));
}

#[tokio::test(start_paused = true)]
async fn polls_due_while_the_cap_is_full_start_oldest_first() {
    let mock = MockTransport::from_fn(|req| {
        MockResponse::job(req.img_uuid.as_deref().unwrap(), "success").after(secs(1))
    });
    let c = builder(&mock).max_in_flight(1).build().unwrap();
    let order: Vec<String> = c
        .wait_all(["c", "a", "d", "b"].map(q))
        .map(|(q, _)| q.img_uuid().to_owned())
        .collect()
        .await;
    assert_eq!(order, ["c", "a", "d", "b"]);
    let sent: Vec<_> = mock
        .requests()
        .into_iter()
        .map(|r| r.img_uuid.unwrap())
        .collect();
    assert_eq!(sent, ["c", "a", "d", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_spaces_polls() {
    let mock = MockTransport::from_fn(|req| {
        MockResponse::job(req.img_uuid.as_deref().unwrap(), "success")
    });
    let c = builder(&mock)
        .poll_rate_limit(PerSecond::new(4.0).burst(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let n = c
        .wait_all((0..9).map(|i| q(&format!("j{i}"))))
        .count()
        .await;
    assert_eq!(n, 9);
    let at: Vec<u128> = mock
        .requests()
        .iter()
        .map(|r| (r.at - start).as_millis())
        .collect();
    assert_eq!(at, [0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000]);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_stops_all_polling() {
    let mock = MockTransport::new();
    for i in 0..20 {
        mock.timeline(&format!("j{i}"), &["pending"]);
    }
    mock.timeline("quick", &["success"]);
    let c = builder(&mock).build().unwrap();
    let mut stream = Box::pin(c.wait_all((0..20).map(|i| q(&format!("j{i}"))).chain([q("quick")])));
    let (first, _) = stream.next().await.unwrap();
    assert_eq!(first.img_uuid(), "quick");
    tokio::time::sleep(secs(11)).await;
    let before = mock.request_count();
    assert_eq!(before, 21 + 2 * 20);
    drop(stream);
    tokio::time::sleep(secs(3600)).await;
    assert_eq!(mock.request_count(), before);
}

#[tokio::test(start_paused = true)]
async fn a_job_still_wanted_by_another_waiter_keeps_polling() {
    let mock = MockTransport::new();
    mock.timeline("a", &["pending", "pending", "pending", "success"]);
    let c = builder(&mock).build().unwrap();
    let keep = tokio::spawn({
        let c = c.clone();
        async move { c.wait("a").await }
    });
    let dropped = tokio::spawn({
        let c = c.clone();
        async move { c.wait("a").await }
    });
    tokio::time::sleep(secs(1)).await;
    dropped.abort();
    assert_eq!(keep.await.unwrap().unwrap().status(), &JobStatus::Succeeded);
    assert_eq!(mock.count_for("a"), 4);
}

#[tokio::test(start_paused = true)]
async fn deadlines_are_per_job() {
    let mock = MockTransport::new();
    mock.timeline("stuck", &["pending"]);
    mock.timeline("ok", &["pending", "success"]);
    let c = builder(&mock).wait_timeout(secs(20)).build().unwrap();
    let start = Instant::now();
    let mut results = Box::pin(c.wait_all([q("stuck"), q("ok")]));
    let (first, r) = results.next().await.unwrap();
    assert_eq!(first.img_uuid(), "ok");
    assert!(r.unwrap().is_terminal());
    assert_eq!(start.elapsed(), secs(5));
    let (second, r) = results.next().await.unwrap();
    assert_eq!(second.img_uuid(), "stuck");
    let err = r.unwrap_err();
    assert!(err.is_deadline());
    assert_eq!(err.waited(), Some(secs(20)));
    assert_eq!(start.elapsed(), secs(20));
    assert!(results.next().await.is_none());

    // A later waiter on the same job has its own, later deadline; the
    // earlier one still ends on time.
    mock.timeline("late", &["pending"]);
    let start = Instant::now();
    let early = tokio::spawn({
        let c = c.clone();
        async move { c.wait("late").await }
    });
    tokio::time::sleep(secs(8)).await;
    let later = tokio::spawn({
        let c = c.clone();
        async move { c.wait("late").await }
    });
    let early = early.await.unwrap().unwrap_err();
    assert!(early.is_deadline());
    assert_eq!(early.waited(), Some(secs(20)));
    assert_eq!(start.elapsed(), secs(20));
    let later = later.await.unwrap().unwrap_err();
    assert!(later.is_deadline());
    assert_eq!(start.elapsed(), secs(28));
}

#[tokio::test(start_paused = true)]
async fn errors_reach_every_waiter() {
    let mock = MockTransport::new();
    mock.script(
        "gone",
        [MockResponse::ok(
            r#"{"code":40004,"msg":"job not found","data":null}"#,
        )],
    );
    let c = builder(&mock).build().unwrap();
    let results: Vec<_> = c.wait_all([q("gone"), q("gone")]).collect().await;
    assert_eq!(results.len(), 2);
    for (_, r) in results {
        assert_eq!(r.unwrap_err().api_code(), Some(40004));
    }
    assert_eq!(mock.count_for("gone"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_empty_wait_all_ends_at_once() {
    let c = builder(&MockTransport::new()).build().unwrap();
    assert_eq!(c.wait_all(Vec::new()).count().await, 0);
}

#[test]
fn waits_across_runtimes_restart_the_scheduler() {
    let mock = MockTransport::new();
    mock.timeline("a", &["success"]);
    let c = builder(&mock).build().unwrap();
    for _ in 0..2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let d = rt.block_on(c.wait("a")).unwrap();
        assert_eq!(d.status(), &JobStatus::Succeeded);
    }
    assert_eq!(mock.count_for("a"), 2);
}

#[tokio::test(start_paused = true)]
async fn watch_all_yields_each_change_then_the_end() {
    let mock = MockTransport::new();
    mock.timeline("a", &["pending", "pending", "processing", "success"]);
    mock.timeline("b", &["processing", "failed"]);
    mock.script("c", [MockResponse::status(401)]);
    let c = builder(&mock).build().unwrap();
    let items: Vec<(String, Result<String, u16>)> = c
        .watch_all([q("a"), q("b"), q("c")])
        .map(|(q, r)| {
            let r = r
                .map(|d| d.status().to_string())
                .map_err(|e| e.status().unwrap().as_u16());
            (q.img_uuid().to_owned(), r)
        })
        .collect()
        .await;
    let of = |id: &str| -> Vec<Result<String, u16>> {
        items
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, r)| r.clone())
            .collect()
    };
    assert_eq!(
        of("a"),
        [
            Ok("pending".into()),
            Ok("processing".into()),
            Ok("succeeded".into())
        ]
    );
    assert_eq!(of("b"), [Ok("processing".into()), Ok("failed".into())]);
    assert_eq!(of("c"), [Err(401)]);
    assert_eq!(items.len(), 6);
    assert_eq!(mock.count_for("a"), 4);
    assert_eq!(mock.count_for("b"), 2);
}
