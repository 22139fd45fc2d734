//! The library inside a larger service: an axum endpoint that waits on a
//! GoEnhance job through a `Client` kept in the router's state.
//!
//! `GET /jobs/{id}/wait` answers when the job is finished:
//!
//! | outcome | HTTP status | body |
//! |---|---|---|
//! | succeeded or failed | 200 | `{"img_uuid", "status", "job_type", "outputs": [{"kind", "url"}]}` |
//! | invalid id | 400 | `{"error": ...}` |
//! | unknown job (API code 40004) | 404 | `{"error": ...}` |
//! | deadline or stall | 504 | `{"error": ...}` |
//! | anything else | 502 | `{"error": ...}` |
//!
//! `Client` is `Clone + Send + Sync` and all its waits share one scheduler,
//! so every request handler can hold a clone. The example starts the fake
//! server, serves the router on 127.0.0.1, calls itself once with
//! hyper-util's client, prints the answer and exits:
//!
//! ```text
//! cargo run --example axum_service --features fake
//! ```

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::{Client, Error, JobDetail, PollPolicy};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

#[derive(Clone)]
struct AppState {
    jobs: Client,
}

async fn wait_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    state
        .jobs
        .wait(&id)
        .await
        .map(|job| Json(detail_json(&job)))
        .map_err(|e| (status_for(&e), Json(json!({ "error": e.to_string() }))))
}

fn detail_json(job: &JobDetail) -> Value {
    json!({
        "img_uuid": job.img_uuid(),
        "status": job.status().as_str(),
        "job_type": job.job_type(),
        "outputs": job.outputs().iter()
            .map(|o| json!({ "kind": o.kind().as_str(), "url": o.url() }))
            .collect::<Vec<_>>(),
    })
}

/// How a wait's error maps onto this service's own answer.
fn status_for(e: &Error) -> StatusCode {
    if e.is_invalid_input() {
        StatusCode::BAD_REQUEST
    } else if e.api_code() == Some(40004) {
        StatusCode::NOT_FOUND
    } else if e.is_deadline() || e.is_stall() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ms = Duration::from_millis;
    let goenhance = FakeServer::builder()
        .api_key("my-key")
        .job(
            "5334c57d-8443-4b79-ba24-8539c2163c74",
            Timeline::new("mx-v2v")
                .pending(ms(300))
                .processing(ms(500))
                .succeed("video", "https://cdn.example/5334c57d_0.mp4"),
        )
        .start()
        .await?;

    // In production: `Client::from_env()?`.
    let jobs = Client::builder()
        .base_url(goenhance.base_url())
        .api_key("my-key")
        .poll_policy(PollPolicy::fixed(ms(200)))
        .wait_timeout(Duration::from_secs(60))
        .build()?;

    let app = Router::new()
        .route("/jobs/{id}/wait", get(wait_job))
        .with_state(AppState { jobs });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("serving on http://{addr}");

    // One request to ourselves.
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}/jobs/5334c57d-8443-4b79-ba24-8539c2163c74/wait");
    let res = http.get(uri.parse()?).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!("GET {uri} -> {status}");
    println!("{}", String::from_utf8_lossy(&body));

    let _ = stop.send(());
    serving.await??;
    goenhance.shutdown().await;
    Ok(())
}
