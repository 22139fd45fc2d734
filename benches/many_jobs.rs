//! Waiting on very many jobs from one process.
//!
//! Part 1 — 100,000 jobs on tokio's paused clock with an in-memory transport
//! (UUID-shaped ids, bodies shaped as the API's; each job finishes after
//! 3 to 5 polls): peak resident memory per waiting
//! job, total polls and wall time, for `Client::wait_all` (the hub) and for
//! the hand-written way, a tokio task per job looping over `Client::get`
//! and `sleep`. Each mode runs in a child process of its own so that its
//! peak resident set (`VmHWM`) is its own; the baseline is the resident set
//! just before the waits start.
//!
//! Part 2 — 100,000 waits given up at once, as a long-poll handler's
//! `timeout(25 s, client.wait(id))` gives them up, on 10 live jobs (each
//! with a waiter that stays): the wall time per wait over the first 1,000
//! and over the last 1,000. Flat means earlier cancelled waits cost the
//! later ones nothing (target: within 1.5×).
//!
//! Part 3 — 10,000 jobs over real HTTP against the fake server on
//! loopback, through `wait_all`: requests per second achieved.
//!
//! Run: `cargo bench --bench many_jobs --features fake`
//! (`-- --jobs N` to change part 1's count, `-- --memory-only` to run
//! part 1 alone, `-- --cancelled-only` part 2 alone).

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::{Client, JobQuery, PollPolicy, RetryPolicy};
use http_body_util::Full;
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_secs(5);

#[path = "common/proc.rs"]
mod proc;

use proc::status_kib;

type Answer = Result<http::Response<Full<Bytes>>, std::convert::Infallible>;

/// A transport with no per-job state: job `i` succeeds 10, 15 or 20 s after
/// the origin, so it takes 3, 4 or 5 polls at 5 s.
fn transport(
    origin: Instant,
    polls: Arc<AtomicU64>,
) -> impl tower::Service<
    http::Request<Full<Bytes>>,
    Response = http::Response<Full<Bytes>>,
    Error = std::convert::Infallible,
    Future = std::future::Ready<Answer>,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        polls.fetch_add(1, Ordering::Relaxed);
        let id = req.uri().query().unwrap().trim_start_matches("img_uuid=");
        let n = u64::from_str_radix(&id[24..], 16).unwrap();
        let done_at = Duration::from_secs(10 + 5 * (n % 3));
        let body = if origin.elapsed() >= done_at {
            format!(
                r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{id}","status":"success","type":"mx-v2v","job_type":"mx-v2v","start_time":"2024-07-12T12:49:12.541Z","end_time":"2024-07-12T12:54:40.002Z","model_id":"7","json":[{{"type":"video","value":"https://openapi-static.goenhance.ai/user/2024/07/12/{id}_0.mp4"}}]}}}}"#
            )
        } else {
            format!(
                r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{id}","status":"pending","type":"mx-v2v","job_type":"mx-v2v","start_time":"2024-07-12T12:49:12.541Z","model_id":"7","json":null}}}}"#
            )
        };
        std::future::ready(Ok(http::Response::new(Full::new(Bytes::from(body)))))
    })
}

/// A UUID-shaped id (36 characters, as the API's) that encodes `n`.
fn uuid(n: u64) -> String {
    format!(
        "5334c57d-8443-4b79-{:04x}-{:012x}",
        n >> 48,
        n & 0xffff_ffff_ffff
    )
}

fn child(mode: &str, jobs: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let polls = Arc::new(AtomicU64::new(0));
        let origin = Instant::now();
        let client = Client::builder()
            .api_key("bench")
            .retry_policy(RetryPolicy::never())
            .poll_policy(PollPolicy::fixed(INTERVAL))
            .transport(transport(origin, polls.clone()))
            .build()
            .unwrap();
        let ids: Vec<String> = (0..jobs).map(uuid).collect();
        let base = status_kib("VmRSS:");
        let wall = std::time::Instant::now();
        let done = match mode {
            "hub" => {
                let queries = ids.iter().map(|id| JobQuery::new(id).unwrap());
                client
                    .wait_all(queries)
                    .filter(|(_, r)| std::future::ready(r.is_ok()))
                    .count()
                    .await as u64
            }
            "hub-drop" => {
                // Half the answers are read, then the stream is dropped.
                let queries = ids.iter().map(|id| JobQuery::new(id).unwrap());
                let half = client
                    .wait_all(queries)
                    .take(jobs as usize / 2)
                    .count()
                    .await as u64;
                half * 2
            }
            "tasks" => {
                let mut set = tokio::task::JoinSet::new();
                for id in ids.into_iter() {
                    let client = client.clone();
                    set.spawn(async move {
                        loop {
                            let d = client.get(&id).await.unwrap();
                            if d.is_terminal() {
                                return;
                            }
                            tokio::time::sleep(INTERVAL).await;
                        }
                    });
                }
                let mut done = 0;
                while let Some(r) = set.join_next().await {
                    r.unwrap();
                    done += 1;
                }
                done
            }
            _ => unreachable!(),
        };
        let peak = status_kib("VmHWM:");
        let wall_ms = wall.elapsed().as_millis();
        let virt = origin.elapsed().as_secs();
        assert_eq!(done, jobs);
        // A minute later (the dropped jobs' next polls find no waiter), how
        // much of the growth is still resident.
        tokio::time::sleep(Duration::from_secs(60)).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let after = status_kib("VmRSS:");
        println!(
            "{mode} {} {} {wall_ms} {virt} {}",
            (peak.saturating_sub(base)) * 1024,
            polls.load(Ordering::Relaxed),
            (after.saturating_sub(base)) * 1024,
        );
    });
}

/// Part 2: `waits` cancelled waits on live jobs, timed per wait over the
/// first and the last 1,000.
fn cancelled_waits(waits: usize) {
    const LIVE: usize = 10;
    const WINDOW: usize = 1_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let pending = tower::service_fn(|req: http::Request<Full<Bytes>>| {
            let id = req.uri().query().unwrap().trim_start_matches("img_uuid=").to_owned();
            let body = format!(
                r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{id}","status":"processing","type":"mx-v2v","json":null}}}}"#
            );
            std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                Bytes::from(body),
            ))))
        });
        let client = Client::builder()
            .api_key("bench")
            .retry_policy(RetryPolicy::never())
            .poll_policy(PollPolicy::fixed(INTERVAL))
            .wait_timeout(Duration::from_secs(7 * 86_400))
            .transport(pending)
            .build()
            .unwrap();
        let ids: Vec<String> = (0..LIVE as u64).map(uuid).collect();
        let _stay: Vec<_> = ids
            .iter()
            .map(|id| {
                let (c, id) = (client.clone(), id.clone());
                tokio::spawn(async move { c.wait(&id).await })
            })
            .collect();
        tokio::task::yield_now().await;
        // Each wait's own time, over the first and the last window: the
        // median is what a wait costs, the mean also counts the moments
        // the (busy) machine took the thread away.
        let mut first = Vec::with_capacity(WINDOW);
        let mut last = Vec::with_capacity(WINDOW);
        for n in 0..waits {
            let id = &ids[n % LIVE];
            let t = std::time::Instant::now();
            let r = tokio::time::timeout(Duration::from_millis(25), client.wait(id)).await;
            let took = t.elapsed();
            assert!(r.is_err(), "a live job ended");
            if n < WINDOW {
                first.push(took);
            } else if n >= waits - WINDOW {
                last.push(took);
            }
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            us(v[v.len() / 2])
        };
        let mean = |v: &[Duration]| us(v.iter().sum::<Duration>()) / v.len() as f64;
        let (mean_first, mean_last) = (mean(&first), mean(&last));
        let (med_first, med_last) = (median(&mut first), median(&mut last));
        println!(
            "cancelled waits: {waits} `timeout(25 ms, wait(id))` on {LIVE} live jobs, µs a wait (median / mean) over the first {WINDOW}: {med_first:.2} / {mean_first:.2}; over the last {WINDOW}: {med_last:.2} / {mean_last:.2}; last/first {:.2}× / {:.2}× (target at most 1.5×)",
            med_last / med_first,
            mean_last / mean_first,
        );
    });
}

fn loopback(jobs: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut builder = FakeServer::builder().api_key("bench");
        for i in 0..jobs {
            builder = builder.job(
                format!("h{i}"),
                Timeline::new("mx-text2img").pending_for_answers(2).succeed("image", "https://cdn.example/x.png"),
            );
        }
        let server = builder.start().await.unwrap();
        let client = Client::builder()
            .base_url(server.base_url())
            .api_key("bench")
            .poll_policy(PollPolicy::fixed(Duration::from_millis(1)))
            .build()
            .unwrap();
        let start = std::time::Instant::now();
        let ok = client
            .wait_all((0..jobs).map(|i| JobQuery::new(format!("h{i}")).unwrap()))
            .filter(|(_, r)| std::future::ready(r.as_ref().is_ok_and(|d| d.is_terminal())))
            .count()
            .await;
        let elapsed = start.elapsed();
        let requests = server.total_requests();
        assert_eq!(ok, jobs);
        println!(
            "loopback: {jobs} jobs, {requests} requests in {:.2} s: {:.0} requests/s ({} connections, max {} in flight)",
            elapsed.as_secs_f64(),
            requests as f64 / elapsed.as_secs_f64(),
            server.connections(),
            server.max_in_flight()
        );
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    let jobs: u64 = args
        .iter()
        .position(|a| a == "--jobs")
        .map(|i| args[i + 1].parse().unwrap())
        .unwrap_or(100_000);
    if args.iter().any(|a| a == "--cancelled-only") {
        cancelled_waits(100_000);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    for mode in ["hub", "tasks", "hub-drop"] {
        let out = Command::new(&exe)
            .args(["--child", mode, &jobs.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        rows.push((mode, f[0], f[1], f[2], f[3], f[4]));
    }
    println!("{jobs} jobs on the paused clock, each done after 3-5 polls at 5 s\n");
    println!("| mode | peak RSS growth | bytes per waiting job | × task per job | polls | wall time | virtual time | RSS growth left 60 s later |");
    println!("|---|---|---|---|---|---|---|---|");
    let tasks_per_job = rows[1].1 as f64 / jobs as f64;
    for (mode, bytes, polls, wall_ms, virt, after) in &rows {
        let per_job = *bytes as f64 / jobs as f64;
        let name = match *mode {
            "hub" => "`wait_all` (hub)",
            "hub-drop" => "`wait_all`, dropped half way",
            _ => "task per job, `get` loop",
        };
        println!(
            "| {name} | {:.1} MiB | {per_job:.0} | {:.2} | {polls} | {:.2} s | {virt} s | {:.1} MiB ({:.0} % of peak) |",
            *bytes as f64 / 1048576.0,
            per_job / tasks_per_job,
            *wall_ms as f64 / 1000.0,
            *after as f64 / 1048576.0,
            100.0 * *after as f64 / (*bytes).max(1) as f64,
        );
    }
    println!();
    if !args.iter().any(|a| a == "--memory-only") {
        cancelled_waits(100_000);
        loopback(10_000);
    }
}
