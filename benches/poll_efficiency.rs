//! How many polls each schedule spends, and how late it sees jobs finish.
//!
//! 1,800 jobs of three kinds with log-normal run times (medians 30 s, 90 s,
//! 300 s; σ 0.3, 0.35, 0.4) arrive over two hours of virtual time. Each
//! policy waits on the same jobs, on tokio's paused clock with the in-memory
//! transport, through `Client::wait`. Printed per policy: polls per job and
//! detection delay (answer time − true finish): mean and p95, with ratios
//! against fixed 5 s.
//!
//! Run: `cargo bench --bench poll_efficiency`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, PollPolicy};
use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use tokio::time::Instant;

const JOBS_PER_KIND: usize = 600;
const ARRIVAL_WINDOW: Duration = Duration::from_secs(2 * 3600);
const KINDS: [(&str, f64, f64); 3] = [
    ("mx-text2img", 30.0, 0.3),
    ("mx-image-face-swap", 90.0, 0.35),
    ("mx-v2v", 300.0, 0.4),
];

#[derive(Clone, Copy)]
struct Job {
    kind: usize,
    arrival: Duration,
    run: Duration,
}

fn jobs() -> Vec<Job> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261129);
    let mut jobs = Vec::new();
    for (kind, &(_, median, sigma)) in KINDS.iter().enumerate() {
        let dist = LogNormal::new(f64::ln(median), sigma).unwrap();
        for _ in 0..JOBS_PER_KIND {
            let arrival = ARRIVAL_WINDOW.mul_f64(rand::RngExt::random::<f64>(&mut rng));
            let run = Duration::from_secs_f64(dist.sample(&mut rng));
            jobs.push(Job { kind, arrival, run });
        }
    }
    jobs.sort_by_key(|j| j.arrival);
    jobs
}

fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos() as i128).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

struct Outcome {
    polls: Vec<u64>,
    delays: Vec<f64>,
}

async fn run(policy: PollPolicy, jobs: Arc<Vec<Job>>) -> Outcome {
    let origin = Instant::now();
    let wall = SystemTime::now();
    let by_id: Arc<HashMap<String, Job>> = Arc::new(
        jobs.iter()
            .enumerate()
            .map(|(i, j)| (format!("job-{i}"), *j))
            .collect(),
    );
    let table = by_id.clone();
    let mock = MockTransport::from_fn(move |req| {
        let id = req.img_uuid.as_deref().unwrap();
        let job = table[id];
        let age = (req.at - origin).saturating_sub(job.arrival);
        let start = wall + job.arrival;
        let (status, end) = if age >= job.run {
            ("success", format!(r#","end_time":"{}""#, rfc3339(start + job.run)))
        } else if age >= job.run / 10 {
            ("processing", String::new())
        } else {
            ("pending", String::new())
        };
        MockResponse::ok(format!(
            r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{id}","status":"{status}","type":"{t}","job_type":"{t}","start_time":"{s}"{end},"model_id":"7","json":null}}}}"#,
            t = KINDS[job.kind].0,
            s = rfc3339(start),
        ))
    })
    .without_log();
    let client = Client::builder()
        .api_key("bench")
        .poll_policy(policy.seed(1).timeout(Duration::from_secs(6 * 3600)))
        .max_in_flight(10_000)
        .transport(mock.clone())
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let client = client.clone();
        let job = *job;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(origin + job.arrival).await;
            client.wait(&format!("job-{i}")).await.unwrap();
            let seen = Instant::now() - origin;
            (
                seen.as_secs_f64() - (job.arrival + job.run).as_secs_f64(),
                i,
            )
        }));
    }
    let mut outcome = Outcome {
        polls: Vec::new(),
        delays: Vec::new(),
    };
    for t in tasks {
        let (delay, i) = t.await.unwrap();
        outcome.delays.push(delay);
        outcome.polls.push(mock.count_for(&format!("job-{i}")));
    }
    outcome
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn p95(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[(s.len() as f64 * 0.95) as usize]
}

fn main() {
    let jobs = Arc::new(jobs());
    type MakePolicy = Box<dyn Fn() -> PollPolicy>;
    let policies: Vec<(&str, MakePolicy)> = vec![
        (
            "fixed 5 s",
            Box::new(|| PollPolicy::fixed(Duration::from_secs(5))),
        ),
        (
            "fixed 10 s",
            Box::new(|| PollPolicy::fixed(Duration::from_secs(10))),
        ),
        (
            "AWS-style exponential 2 s → 120 s",
            Box::new(|| PollPolicy::exponential(Duration::from_secs(2), Duration::from_secs(120))),
        ),
        ("default (adaptive)", Box::new(PollPolicy::default)),
    ];
    println!(
        "{} jobs ({} per kind: medians 30/90/300 s), arriving over {} h of virtual time\n",
        jobs.len(),
        JOBS_PER_KIND,
        ARRIVAL_WINDOW.as_secs() / 3600
    );
    println!(
        "| policy | polls/job | × fixed 5 s | mean delay (s) | × fixed 5 s | p95 delay (s) | per kind polls/job (30 s, 90 s, 300 s) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut base: Option<(f64, f64)> = None;
    for (name, make) in &policies {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let wall = std::time::Instant::now();
        let out = rt.block_on(run(make(), jobs.clone()));
        let polls: Vec<f64> = out.polls.iter().map(|&p| p as f64).collect();
        let (p, d) = (mean(&polls), mean(&out.delays));
        let (bp, bd) = *base.get_or_insert((p, d));
        let per_kind: Vec<String> = (0..KINDS.len())
            .map(|k| {
                let v: Vec<f64> = jobs
                    .iter()
                    .zip(&polls)
                    .filter(|(j, _)| j.kind == k)
                    .map(|(_, &p)| p)
                    .collect();
                format!("{:.1}", mean(&v))
            })
            .collect();
        println!(
            "| {name} | {p:.2} | {:.2} | {d:.2} | {:.2} | {:.2} | {} |",
            p / bp,
            d / bd,
            p95(&out.delays),
            per_kind.join(", ")
        );
        eprintln!("  ({name}: {:?} wall)", wall.elapsed());
    }
}
