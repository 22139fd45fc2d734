//! The stack that `Client` builds, composed by hand with
//! `tower::ServiceBuilder`, with tower-http layers around the transport.
//!
//! ```text
//! PollLayer            query → terminal detail, on a schedule, under a deadline
//!  └ RetryLayer        transient errors: backoff + jitter, Retry-After, budget
//!    └ TimeoutLayer    per attempt
//!      └ JobStatusService   query → request → response → detail
//!        └ AuthLayer   Authorization: Bearer (a sensitive header)
//!          └ TraceLayer             tower-http: a span and events per request
//!            └ SetRequestHeaderLayer  tower-http: a User-Agent of your own
//!              └ HyperTransport
//! ```
//!
//! The fake server answers the first requests with a 503 and a reset, so
//! the trace shows the retries:
//!
//! ```text
//! cargo run --example tower_stack --features fake
//! RUST_LOG=debug cargo run --example tower_stack --features fake   # more
//! ```

use std::time::Duration;

use goenhance_jobs::fake::{FakeServer, Fault, FaultPlan, Timeline};
use goenhance_jobs::{
    AuthLayer, HyperTransport, JobQuery, JobStatusService, PollLayer, PollPolicy, RetryLayer,
    RetryPolicy, TimeoutLayer,
};
use http::header::{HeaderValue, USER_AGENT};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("tower_http=debug,goenhance_jobs=info")),
        )
        .with_target(false)
        .init();

    let ms = Duration::from_millis;
    let server = FakeServer::builder()
        .api_key("my-key")
        .job(
            "5334c57d-8443-4b79-ba24-8539c2163c74",
            Timeline::new("mx-v2v")
                .pending(ms(300))
                .processing(ms(500))
                .succeed("video", "https://cdn.example/5334c57d_0.mp4"),
        )
        .faults(FaultPlan::script([
            Some(Fault::status(503)),
            None,
            Some(Fault::Reset),
        ]))
        .start()
        .await?;

    // The transport: hyper, wrapped in tower-http layers. Its body stays an
    // `http_body::Body<Data = Bytes>` (TraceLayer wraps it in its own
    // `ResponseBody`), and its errors convert into `BoxError`.
    let transport = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestHeaderLayer::overriding(
            USER_AGENT,
            HeaderValue::from_static("my-app/1.0"),
        ))
        .service(HyperTransport::new());

    // The key goes on above the tracing, marked sensitive.
    let service = JobStatusService::new(
        server.base_url(),
        ServiceBuilder::new()
            .layer(AuthLayer::bearer("my-key"))
            .service(transport),
    )?;

    let waits = ServiceBuilder::new()
        .layer(PollLayer::new(
            PollPolicy::fixed(ms(200)).timeout(Duration::from_secs(30)),
        ))
        .layer(RetryLayer::new(
            RetryPolicy::default()
                .max_attempts(4)
                .initial_backoff(ms(50)),
        ))
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .service(service);

    let job = waits
        .oneshot(JobQuery::new("5334c57d-8443-4b79-ba24-8539c2163c74")?)
        .await?;
    println!("{} {}", job.img_uuid(), job.status());
    for out in job.outputs() {
        println!("  {} {}", out.kind(), out.url());
    }
    println!(
        "the server saw {} requests for this job",
        server.hits(job.img_uuid())
    );

    server.shutdown().await;
    Ok(())
}
