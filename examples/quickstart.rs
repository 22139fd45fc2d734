//! The `Client` in a few lines: one status fetch, a wait, a watch, and a
//! wait on many jobs at once.
//!
//! Runs against the crate's fake GoEnhance server on loopback, so no
//! account is needed:
//!
//! ```text
//! cargo run --example quickstart --features fake
//! ```
//!
//! Against the real API, build the client with `Client::from_env()`
//! (`GOENHANCE_API_KEY`, optionally `GOENHANCE_BASE_URL`) instead.

use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::{Client, JobQuery, JobStatus, PollPolicy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ms = Duration::from_millis;
    let server = FakeServer::builder()
        .api_key("my-key")
        .job(
            "5334c57d-8443-4b79-ba24-8539c2163c74",
            Timeline::new("mx-v2v")
                .pending(ms(300))
                .processing(ms(600))
                .succeed("video", "https://cdn.example/5334c57d_0.mp4"),
        )
        .job(
            "9f1e6a20-text2img",
            Timeline::new("mx-text2img").processing(ms(500)).fail(),
        )
        .start()
        .await?;

    let client = Client::builder()
        .base_url(server.base_url()) // loopback http is allowed
        .api_key("my-key")
        .poll_policy(PollPolicy::fixed(ms(200)))
        .wait_timeout(Duration::from_secs(30))
        .build()?;

    // One status fetch.
    let job = client.get("5334c57d-8443-4b79-ba24-8539c2163c74").await?;
    println!("get:  {} is {}", job.img_uuid(), job.status());

    // Wait until it is finished: `Ok` for a success and for a failure.
    let job = client.wait("5334c57d-8443-4b79-ba24-8539c2163c74").await?;
    if *job.status() == JobStatus::Succeeded {
        for out in job.outputs() {
            println!("wait: {} {} {}", job.img_uuid(), out.kind(), out.url());
        }
    }

    // Follow a job: each distinct status once, ending at the terminal one.
    // (A job added now, so its timeline starts now.)
    server.add_job(
        "37c82d82-face-swap",
        Timeline::new("mx-image-face-swap")
            .pending(ms(300))
            .processing(ms(400))
            .succeed("image", "https://cdn.example/37c82d82_0.jpg"),
    );
    let mut changes = std::pin::pin!(client.watch("37c82d82-face-swap"));
    while let Some(change) = changes.next().await {
        let job = change?;
        println!("watch: {} is {}", job.img_uuid(), job.status());
    }

    // Many jobs through one scheduler, in the order they finish.
    let queries = ["9f1e6a20-text2img", "37c82d82-face-swap"]
        .into_iter()
        .map(JobQuery::new)
        .collect::<Result<Vec<_>, _>>()?;
    let mut done = std::pin::pin!(client.wait_all(queries));
    while let Some((query, result)) = done.next().await {
        match result {
            Ok(job) => println!("wait_all: {query} ended {}", job.status()),
            Err(e) => println!("wait_all: {query} error: {e}"),
        }
    }

    server.shutdown().await;
    Ok(())
}
