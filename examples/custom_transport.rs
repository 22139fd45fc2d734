//! Transports of your own, plugged into `ClientBuilder::transport`.
//!
//! A transport is any `tower::Service<http::Request<Full<Bytes>>>` that
//! answers `http::Response<B>` with `B: http_body::Body<Data = Bytes>`, is
//! `Clone + Send + Sync + 'static` and has a `Send` future. The client adds
//! the key (`AuthLayer`) above it, and retry, timeouts and polling above
//! that. Two are shown:
//!
//! 1. `Recording`: a struct that writes down each request and forwards it
//!    to `HyperTransport`, here against the fake server on loopback;
//! 2. an in-memory transport made with `tower::service_fn` that answers
//!    from a table, with no network at all: handy in your own tests.
//!
//! ```text
//! cargo run --example custom_transport --features fake
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::{Client, HyperTransport, PollPolicy};
use http::{Request, Response};
use http_body_util::Full;
use tower::Service;

/// Forwards to hyper and keeps a line per request: method, path and query,
/// and whether it carried credentials (never the credentials themselves).
#[derive(Clone, Debug, Default)]
struct Recording {
    inner: HyperTransport,
    log: Arc<Mutex<Vec<String>>>,
}

impl Service<Request<Full<Bytes>>> for Recording {
    type Response = <HyperTransport as Service<Request<Full<Bytes>>>>::Response;
    type Error = <HyperTransport as Service<Request<Full<Bytes>>>>::Error;
    type Future = <HyperTransport as Service<Request<Full<Bytes>>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let auth = req.headers().get(http::header::AUTHORIZATION);
        let line = format!(
            "{} {} (authorization: {})",
            req.method(),
            req.uri().path_and_query().map_or("", |pq| pq.as_str()),
            match auth {
                Some(v) if v.is_sensitive() => "present, sensitive",
                Some(_) => "present",
                None => "missing",
            }
        );
        self.log.lock().unwrap().push(line);
        self.inner.call(req)
    }
}

/// A job-detail body as the API sends it.
fn detail_body(id: &str, status: &str, outputs: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{id}","status":"{status}","type":"mx-text2img","json":{outputs}}}}}"#
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ms = Duration::from_millis;

    // 1. A recording transport in front of hyper.
    let server = FakeServer::builder()
        .api_key("my-key")
        .job(
            "5334c57d-8443-4b79-ba24-8539c2163c74",
            Timeline::new("mx-v2v")
                .pending(ms(200))
                .processing(ms(300))
                .succeed("video", "https://cdn.example/5334c57d_0.mp4"),
        )
        .start()
        .await?;
    let recording = Recording::default();
    let client = Client::builder()
        .base_url(server.base_url())
        .api_key("my-key")
        .poll_policy(PollPolicy::fixed(ms(150)))
        .transport(recording.clone())
        .build()?;
    let job = client.wait("5334c57d-8443-4b79-ba24-8539c2163c74").await?;
    println!("recording: {} {}", job.img_uuid(), job.status());
    for line in recording.log.lock().unwrap().iter() {
        println!("  {line}");
    }
    server.shutdown().await;

    // 2. An in-memory transport: the first answer for a job says
    //    `processing`, the next ones `success` with an image.
    let answered: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let in_memory = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let answered = Arc::clone(&answered);
        async move {
            let id = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("img_uuid="))
                .unwrap_or_default()
                .to_owned();
            let n = {
                let mut answered = answered.lock().unwrap();
                let n = answered.entry(id.clone()).or_default();
                *n += 1;
                *n
            };
            let body = if n == 1 {
                detail_body(&id, "processing", "null")
            } else {
                let url = format!("https://cdn.example/{id}_0.png");
                detail_body(
                    &id,
                    "success",
                    &format!(r#"[{{"type":"image","value":"{url}"}}]"#),
                )
            };
            Ok::<_, Infallible>(Response::new(Full::new(body)))
        }
    });
    let client = Client::builder()
        .api_key("unused-by-the-table")
        .poll_policy(PollPolicy::fixed(ms(50)))
        .transport(in_memory)
        .build()?;
    let job = client.wait("9f1e6a20-text2img").await?;
    println!(
        "in memory: {} {} {}",
        job.img_uuid(),
        job.status(),
        job.outputs()[0].url()
    );
    Ok(())
}
