//! The tracker as a service: an HTTP front that tracks jobs durably on
//! SQLite and answers what is known of each, a worker in the same process
//! that downloads every success's outputs, and a graceful stop.
//!
//! ```text
//! cargo run --example service --features sqlite,fake
//! ```
//!
//! - `POST /videos/{id}` tracks the job (the request's JSON body, if any,
//!   is kept as its meta): `201 {"id","tracked":"new"}` the first time,
//!   then `200` with `"tracked"` `"already_tracked"`, `"already_delivered"`
//!   or `"already_dead"`; `400` for an id the API could not have made.
//! - `GET /videos/{id}` answers from the store alone ([`Tracker::job`], one
//!   indexed read, nothing polled): `404` for a job never tracked, else
//!   `200 {"id","state","status","polls","deliveries","tracked_at_ms",
//!   "deadline_ms","outcome","last_error"}` where `state` is `waiting`,
//!   `finished` (its end stored, its delivery under way), `delivered` or
//!   `dead`; `status` is the job's final status once it ended, else the
//!   last status a poll saw (`null` before the first was saved); `outcome`
//!   is `null` while waiting, `{"status","outputs":[{"kind","url"}]}` for a
//!   job that finished, `{"error"}` for a wait that ended in an error.
//! - The worker ([`Tracker::run_until`]) saves each output of a succeeded
//!   job into the outputs folder with [`Client::download_outputs`]
//!   (`<id>_<n>.<ext>`). A link that expired while the job waited for its
//!   delivery (a redelivery after a restart carries the stored links) is
//!   fetched again once; a cut download resumes with `Range`, and an
//!   output that failed keeps its partial file, which the next delivery
//!   resumes, after a restart too. Once a job's outputs are all in place
//!   (or its last delivery failed) its partial files are discarded: a
//!   delivery repeated because its acknowledgement was lost finds the
//!   outputs in place and fetches nothing.
//!
//! Without `GOENHANCE_API_KEY` it starts the crate's fake GoEnhance server
//! on loopback with three jobs, and nothing leaves the machine:
//!
//! ```text
//! curl -X POST localhost:3000/videos/demo-ok      # succeeds: its link has expired and its download is cut once
//! curl -X POST localhost:3000/videos/demo-failed  # fails
//! curl -X POST localhost:3000/videos/demo-slow    # pending for an hour
//! curl localhost:3000/videos/demo-ok
//! ```
//!
//! With `GOENHANCE_API_KEY` (and optionally `GOENHANCE_BASE_URL`) it
//! follows real jobs. Other settings, all optional: `SERVICE_LISTEN`
//! (`127.0.0.1:3000`), `SERVICE_DATA` (a folder for `jobs.db` and
//! `outputs/`; default `goenhance-service` in the temporary folder),
//! `SERVICE_GRACE_MS` (the tracker's grace period, `20000`),
//! `SERVICE_LEASE_MS` (the lease, `30000`; the last status of a waiting
//! job is saved every third of it) and `SERVICE_POLL_MS` (a fixed poll
//! interval instead of the adaptive schedule).
//!
//! # Stopping: SIGTERM and Kubernetes
//!
//! On SIGINT or SIGTERM the HTTP server stops taking connections and the
//! tracker stops gracefully: it claims nothing more, downloads already
//! running may finish within the grace period (20 s here), their
//! acknowledgements are recorded, and every job still held is released so
//! another replica (or the next start) takes it at once. A download still
//! running when the grace period ends is cancelled; its job is released
//! and its partial file kept for the next delivery. Then the process exits
//! with status 0.
//!
//! On Kubernetes the kubelet sends SIGTERM, waits
//! `terminationGracePeriodSeconds` (30 by default), then sends SIGKILL. Set
//! it longer than the tracker's grace period plus a few seconds for the
//! last store writes, so the stop is always the graceful one:
//!
//! ```text
//! spec:
//!   terminationGracePeriodSeconds: 30   # > SERVICE_GRACE_MS (20 s) + the last writes
//!   containers:
//!     - name: videos
//!       env: [{ name: SERVICE_GRACE_MS, value: "20000" }]
//! ```
//!
//! A SIGKILL anyway (the node died) loses nothing either: the jobs it held
//! are taken over when their lease runs out, and a job whose handler ran
//! but whose acknowledgement was not recorded is delivered once more.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use goenhance_jobs::download::discard_partial_outputs;
use goenhance_jobs::fake::{FakeFile, FakeServer, FileFault, FileFaults, Timeline};
use goenhance_jobs::track::{Completion, JobState, SqliteStore, Tracked, Tracker};
use goenhance_jobs::{BoxError, Client, ClientBuilder, JobQuery, JobStatus, PollPolicy};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Deliveries of one job before it is given up (dead).
const MAX_DELIVERIES: u32 = 5;

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the service until SIGINT or SIGTERM.
#[tokio::main]
pub async fn main() -> Result<(), AnyError> {
    let data = env_or(
        "SERVICE_DATA",
        std::env::temp_dir().join("goenhance-service"),
    );
    let outputs = data.join("outputs");
    tokio::fs::create_dir_all(&outputs).await?;
    let grace = Duration::from_millis(env_or("SERVICE_GRACE_MS", 20_000));
    let lease = Duration::from_millis(env_or("SERVICE_LEASE_MS", 30_000));

    // The API: the real one when a key is given, else a fake on loopback.
    let (builder, fake) = match std::env::var("GOENHANCE_API_KEY") {
        Ok(_) => (ClientBuilder::from_env()?, None),
        Err(_) => {
            let fake = demo_server().await?;
            println!("fake GoEnhance server at {}", fake.base_url());
            let builder = Client::builder()
                .base_url(fake.base_url())
                .api_key("fake-key");
            (builder, Some(fake))
        }
    };
    let builder = match std::env::var("SERVICE_POLL_MS") {
        Ok(ms) => builder.poll_policy(PollPolicy::fixed(Duration::from_millis(ms.parse()?))),
        Err(_) => builder,
    };
    let client = builder.build()?;

    // Durable tracking in a SQLite file: what is tracked survives restarts.
    let store = SqliteStore::open(data.join("jobs.db")).await?;
    let tracker = Tracker::builder(client.clone(), store)
        .lease(lease)
        .shutdown_grace(grace)
        .max_deliveries(MAX_DELIVERIES)
        .handler_retry(Duration::from_millis(500), Duration::from_secs(60))
        .build();

    // One signal stops both the HTTP server and the worker.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let signal = stop_signal().await;
        println!("stopping on {signal}: finishing running downloads within {grace:?}");
        let _ = stop_tx.send(true);
    });

    let listen = std::env::var("SERVICE_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/videos/{id}", get(lookup).post(track))
        .with_state(tracker.clone());
    let serve = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
    let http = tokio::spawn(async move { serve.await });

    let handler = {
        let client = client.clone();
        move |done: Completion| deliver(client.clone(), outputs.clone(), done)
    };
    tracker.run_until(handler, stopped(stop_rx)).await?;
    http.await??;
    if let Some(fake) = fake {
        fake.shutdown().await;
    }
    println!("stopped");
    Ok(())
}

/// `POST /videos/{id}`: tracks the job, durably once answered.
async fn track(
    State(tracker): State<Tracker>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let query = match JobQuery::new(&id) {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": e.to_string() })),
            )
        }
    };
    let meta = match body.is_empty() {
        true => Value::Null,
        false => match serde_json::from_slice(&body) {
            Ok(meta) => meta,
            Err(e) => {
                let error = format!("the body is not json: {e}");
                return (StatusCode::BAD_REQUEST, Json(json!({ "error": error })));
            }
        },
    };
    let (code, tracked) = match tracker.track(query, meta).await {
        Ok(Tracked::New) => (StatusCode::CREATED, "new"),
        Ok(Tracked::AlreadyTracked) => (StatusCode::OK, "already_tracked"),
        Ok(Tracked::AlreadyDelivered) => (StatusCode::OK, "already_delivered"),
        Ok(Tracked::AlreadyDead) => (StatusCode::OK, "already_dead"),
        Ok(_) => (StatusCode::OK, "already_known"),
        Err(e) => {
            let body = json!({ "id": id, "error": e.to_string() });
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
        }
    };
    println!("tracked {id} {tracked}");
    (code, Json(json!({ "id": id, "tracked": tracked })))
}

/// `GET /videos/{id}`: what the store knows, nothing polled.
async fn lookup(
    State(tracker): State<Tracker>,
    UrlPath(id): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
    let query = match JobQuery::new(&id) {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": e.to_string() })),
            )
        }
    };
    let job = match tracker.job(&query).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            let body = json!({ "id": id, "error": "not tracked" });
            return (StatusCode::NOT_FOUND, Json(body));
        }
        Err(e) => {
            let body = json!({ "id": id, "error": e.to_string() });
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
        }
    };
    let state = match job.state() {
        JobState::Waiting => "waiting",
        JobState::Finished => "finished",
        JobState::Delivered => "delivered",
        JobState::Dead => "dead",
        _ => "unknown",
    };
    let last_seen = job.last_status().map(|(status, _)| status.to_string());
    let (status, outcome) = match job.detail() {
        None => (last_seen, Value::Null),
        Some(Ok(detail)) => {
            let outputs: Vec<Value> = detail
                .outputs()
                .iter()
                .map(|o| json!({ "kind": o.kind().to_string(), "url": o.url() }))
                .collect();
            let status = detail.status().to_string();
            let outcome = json!({ "status": status, "outputs": outputs });
            (Some(status), outcome)
        }
        Some(Err(e)) => (last_seen, json!({ "error": e.to_string() })),
    };
    let body = json!({
        "id": id,
        "state": state,
        "status": status,
        "polls": job.polls(),
        "deliveries": job.deliveries(),
        "tracked_at_ms": unix_ms(job.tracked_at()),
        "deadline_ms": unix_ms(job.deadline()),
        "outcome": outcome,
        "last_error": job.last_error(),
    });
    (StatusCode::OK, Json(body))
}

/// The worker's handler: downloads a success's outputs; `Ok` acknowledges
/// the job, `Err` has it delivered again later (after a backoff).
async fn deliver(client: Client, dir: PathBuf, done: Completion) -> Result<(), BoxError> {
    let id = done.query().img_uuid().to_owned();
    let n = done.deliveries();
    let detail = match done.detail() {
        Ok(detail) if *detail.status() == JobStatus::Succeeded => detail,
        Ok(detail) => {
            println!("delivered {id} {} delivery={n}", detail.status());
            return Ok(());
        }
        Err(e) => {
            println!("delivered {id} error delivery={n}: {e}");
            return Ok(());
        }
    };
    match client.download_outputs(detail, &dir).await {
        Ok(saved) => {
            for file in &saved {
                println!(
                    "saved {id} {} {} bytes",
                    file.path().display(),
                    file.bytes()
                );
            }
            // Every output is in place under its name: nothing is left to
            // resume, and a repeated delivery fetches nothing.
            discard_partial_outputs(&dir, &id).await?;
            println!(
                "delivered {id} succeeded delivery={n} files={}",
                saved.len()
            );
            Ok(())
        }
        Err(e) => {
            println!("download failed {id} delivery={n}: {e}");
            if n >= MAX_DELIVERIES {
                // The job dies with this error: nothing will resume.
                discard_partial_outputs(&dir, &id).await?;
            }
            Err(e.into())
        }
    }
}

/// The demo's fake API: a job that succeeds (its first link has expired
/// and its download is cut once), one that fails, one pending for an hour.
async fn demo_server() -> Result<FakeServer, AnyError> {
    let secs = Duration::from_secs;
    let faults = FileFaults::script([
        Some(FileFault::Expired),
        Some(FileFault::Cut { after: 700_000 }),
    ]);
    let server = FakeServer::builder()
        .api_key("fake-key")
        .file(
            "/files/demo-ok.mp4",
            FakeFile::new(2_000_000)
                .content_type("video/mp4")
                .faults(faults),
        )
        .start()
        .await?;
    server.add_job(
        "demo-ok",
        Timeline::new("mx-v2v")
            .pending(secs(2))
            .processing(secs(3))
            .succeed_with_file("video", "/files/demo-ok.mp4"),
    );
    server.add_job(
        "demo-failed",
        Timeline::new("mx-v2v").processing(secs(3)).fail(),
    );
    server.add_job("demo-slow", Timeline::new("mx-v2v").pending(secs(3600)));
    Ok(server)
}

/// Resolves on SIGINT or SIGTERM; says which.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Resolves once the stop was asked for.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A setting from the environment, or its default.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
