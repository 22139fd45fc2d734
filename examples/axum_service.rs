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
//! cargo run --example axum_service --features fake,metrics
//! ```
//!
//! It is also observable the way a service mesh expects:
//!
//! - `GET /metrics` answers the crate's metrics (and any of the program's
//!   own) in the Prometheus text format: metrics-exporter-prometheus is
//!   installed as the `metrics` recorder and rendered through its
//!   `PrometheusHandle`; no exporter listens or pushes on its own.
//! - Trace context travels: the incoming `traceparent` header (W3C Trace
//!   Context) is read into the request's span, and every request to
//!   GoEnhance carries a `traceparent` of the same trace whose parent is
//!   the attempt's `GET` span. A tiny tracing layer (`TraceIds`) gives each
//!   span W3C ids, and a tiny tower layer on the transport
//!   (`InjectTraceparent`) writes the current span's ids into the header.
//!   That is what `tracing-opentelemetry` and `opentelemetry-http`'s
//!   `HeaderInjector` do in a program that exports its traces; both need an
//!   OpenTelemetry SDK, so this example does it by hand to stay without one.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::{Client, Error, HyperTransport, JobDetail, PollPolicy};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use tower::{Layer, Service};
use tower_http::trace::TraceLayer;
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The incoming request's trace context, W3C style.
const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The W3C ids of a span: its trace and its own id.
#[derive(Clone, Copy)]
struct TraceIds {
    trace: u128,
    span: u64,
}

impl TraceIds {
    fn traceparent(self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace, self.span)
    }

    /// The trace of a `traceparent` header value.
    fn parse_trace(header: &str) -> Option<u128> {
        let mut parts = header.split('-');
        let (Some("00"), Some(trace)) = (parts.next(), parts.next()) else {
            return None;
        };
        u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)
    }
}

/// Gives every span W3C ids: the trace of a `traceparent` field (the
/// incoming header), else that of its parent, else a new one.
struct TraceIdLayer;

struct TraceparentField(Option<String>);

impl tracing::field::Visit for TraceparentField {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "traceparent" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for TraceIdLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut incoming = TraceparentField(None);
        attrs.record(&mut incoming);
        let trace = incoming
            .0
            .as_deref()
            .and_then(TraceIds::parse_trace)
            .or_else(|| {
                let parent = span.parent()?;
                let ids = parent.extensions().get::<TraceIds>().copied();
                ids.map(|ids| ids.trace)
            })
            .unwrap_or_else(|| rand::random::<u128>().max(1));
        let ids = TraceIds {
            trace,
            span: rand::random::<u64>().max(1),
        };
        span.extensions_mut().insert(ids);
    }
}

/// The W3C ids of the current span, if the subscriber gave it some.
fn current_ids() -> Option<TraceIds> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            let ids = span.extensions().get::<TraceIds>().copied();
            ids
        })
        .flatten()
}

/// A tower layer for the transport: adds `traceparent` for the current
/// span (the attempt's `GET` span) to every request, and notes each value
/// sent so the example can show them.
#[derive(Clone)]
struct InjectTraceparent {
    sent: Arc<Mutex<Vec<String>>>,
}

impl<S> Layer<S> for InjectTraceparent {
    type Service = InjectTraceparentService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InjectTraceparentService {
            inner,
            sent: Arc::clone(&self.sent),
        }
    }
}

#[derive(Clone)]
struct InjectTraceparentService<S> {
    inner: S,
    sent: Arc<Mutex<Vec<String>>>,
}

impl<S, B> Service<http::Request<B>> for InjectTraceparentService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        if let Some(ids) = current_ids() {
            let value = ids.traceparent();
            if let Ok(header) = http::HeaderValue::from_str(&value) {
                req.headers_mut().insert("traceparent", header);
                self.sent.lock().unwrap().push(value);
            }
        }
        self.inner.call(req)
    }
}

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
    // Metrics: the Prometheus recorder, rendered on `/metrics` below.
    // Durations as histograms with buckets (the exporter's default is a
    // summary), from a fast answer to a long wait.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration".into()),
            &[
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
            ],
        )?
        .install_recorder()?;
    goenhance_jobs::telemetry::describe();
    // Traces: W3C ids for every span (a real program adds its exporter's
    // layer here, tracing-opentelemetry's for instance).
    tracing_subscriber::registry().with(TraceIdLayer).init();

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

    // In production: `Client::builder()` with the key from the environment
    // (as `Client::from_env` reads it) and this same transport.
    let inject = InjectTraceparent {
        sent: Arc::default(),
    };
    let jobs = Client::builder()
        .base_url(goenhance.base_url())
        .api_key("my-key")
        .transport(inject.layer(HyperTransport::new()))
        .poll_policy(PollPolicy::fixed(ms(200)))
        .wait_timeout(Duration::from_secs(60))
        .build()?;

    let app = Router::new()
        .route("/jobs/{id}/wait", get(wait_job))
        .with_state(AppState { jobs })
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &http::Request<_>| {
                let traceparent = req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", uri = %req.uri(), traceparent)
            }),
        )
        .route("/metrics", get(move || metrics_text(prometheus.clone())));
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

    // One request to ourselves, as a mesh sidecar would pass it on.
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}/jobs/5334c57d-8443-4b79-ba24-8539c2163c74/wait");
    let req = http::Request::get(&uri)
        .header("traceparent", INCOMING)
        .body(Empty::new())?;
    let res = http.request(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!("GET {uri} (traceparent {INCOMING}) -> {status}");
    println!("{}", String::from_utf8_lossy(&body));

    // Every status request went out in the caller's trace.
    let sent = inject.sent.lock().unwrap().clone();
    println!("{} status requests sent to GoEnhance, with:", sent.len());
    for value in &sent {
        println!("  traceparent: {value}");
    }
    let trace = TraceIds::parse_trace(INCOMING);
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|v| TraceIds::parse_trace(v) == trace));

    // What a Prometheus scrape sees.
    let res = http.get(format!("http://{addr}/metrics").parse()?).await?;
    let text = res.into_body().collect().await?.to_bytes();
    println!("GET /metrics:");
    for line in String::from_utf8_lossy(&text).lines() {
        if line.starts_with("goenhance_") || line.starts_with("http_client_") {
            println!("  {line}");
        }
    }

    let _ = stop.send(());
    serving.await??;
    goenhance.shutdown().await;
    Ok(())
}

/// The Prometheus text of every metric recorded so far.
async fn metrics_text(handle: PrometheusHandle) -> String {
    // Histograms are summarised on upkeep; a long-running program runs it
    // on a timer instead.
    handle.run_upkeep();
    handle.render()
}
