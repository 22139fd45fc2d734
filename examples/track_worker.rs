//! A tracking worker: follows the jobs tracked in a store until each is
//! delivered, printing one line per delivery. Kill it and start it again:
//! nothing is lost.
//!
//! ```text
//! track_worker STORE BASE_URL [--track ID]... [--poll-ms N] [--handler-ms N]
//!     [--timeout-ms N] [--worker-id NAME] [--lease-ms N] [--max-jobs N]
//! ```
//!
//! `STORE` is a SQLite file path (feature `sqlite`), or a PostgreSQL URL
//! `postgres://…` (feature `postgres`) that several workers share. `BASE_URL` is the API
//! (the crate's fake server in tests); the key comes from
//! `GOENHANCE_API_KEY` (default `fake-key`). `--track` adds jobs before
//! running. Output, one line each:
//!
//! ```text
//! ready <worker-id>
//! deliver <id> <deliveries> <status|error:…> <unix-ms> <meta>
//! ```
//!
//! A handler in a real service would download the outputs or write to a
//! queue; this one prints, waits `--handler-ms`, and returns `Ok`.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goenhance_jobs::track::{SqliteStore, TrackStore, Tracker};
use goenhance_jobs::{Client, JobQuery, PollPolicy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: track_worker STORE BASE_URL [--track ID]... [--poll-ms N] \
                 [--handler-ms N] [--timeout-ms N] [--worker-id NAME] [--lease-ms N] [--max-jobs N]";
    let store_path = args.next().ok_or(usage)?;
    let base = args.next().ok_or(usage)?;
    let (mut track, mut poll_ms, mut handler_ms, mut timeout_ms, mut worker) = (
        Vec::new(),
        200u64,
        20u64,
        30 * 60 * 1000u64,
        "worker".to_owned(),
    );
    let mut lease_ms = 30_000u64;
    let mut max_jobs = 10_000usize;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(usage)?;
        match flag.as_str() {
            "--track" => track.push(value),
            "--poll-ms" => poll_ms = value.parse()?,
            "--handler-ms" => handler_ms = value.parse()?,
            "--timeout-ms" => timeout_ms = value.parse()?,
            "--worker-id" => worker = value,
            "--lease-ms" => lease_ms = value.parse()?,
            "--max-jobs" => max_jobs = value.parse()?,
            _ => return Err(usage.into()),
        }
    }
    let key = std::env::var("GOENHANCE_API_KEY").unwrap_or_else(|_| "fake-key".to_owned());
    let client = Client::builder()
        .api_key(key)
        .base_url(&base)
        .poll_policy(PollPolicy::fixed(Duration::from_millis(poll_ms)))
        .wait_timeout(Duration::from_millis(timeout_ms))
        .build()?;
    let tracker =
        if store_path.starts_with("postgres://") || store_path.starts_with("postgresql://") {
            builder(client, postgres(&store_path).await?, lease_ms)
        } else {
            builder(client, SqliteStore::open(&store_path).await?, lease_ms)
        }
        .worker_id(worker)
        .max_jobs(max_jobs)
        .claim_interval(Duration::from_millis(100))
        .build();
    for id in &track {
        tracker
            .track(JobQuery::new(id)?, serde_json::json!({ "by": "worker" }))
            .await?;
    }
    println!("ready {}", tracker.worker_id());
    tracker
        .run(move |done| async move {
            let what = match done.detail() {
                Ok(d) => d.status().to_string(),
                Err(e) => format!("error:{}", e.to_string().replace(' ', "_")),
            };
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
            {
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "deliver {} {} {what} {now} {}",
                    done.query().img_uuid(),
                    done.deliveries(),
                    done.meta()
                )?;
                out.flush()?;
            }
            tokio::time::sleep(Duration::from_millis(handler_ms)).await;
            Ok(())
        })
        .await?;
    Ok(())
}

fn builder(
    client: Client,
    store: impl TrackStore,
    lease_ms: u64,
) -> goenhance_jobs::track::TrackerBuilder {
    Tracker::builder(client, store).lease(Duration::from_millis(lease_ms))
}

#[cfg(feature = "postgres")]
async fn postgres(
    url: &str,
) -> Result<goenhance_jobs::track::PostgresStore, goenhance_jobs::Error> {
    goenhance_jobs::track::PostgresStore::connect(url).await
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_url: &str) -> Result<SqliteStore, Box<dyn std::error::Error>> {
    Err("a postgres store needs the `postgres` feature".into())
}
