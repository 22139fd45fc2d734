//! `HyperTransport` end to end against the fake server on loopback.
#![cfg(feature = "fake")]

mod support;

use std::time::Duration;

use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::{
    AuthLayer, Client, HyperTransport, JobQuery, JobStatus, JobStatusService, OutputKind,
    RetryPolicy,
};
use support::{server_client, KEY};
use tower::{Layer, ServiceExt};

async fn server() -> FakeServer {
    FakeServer::builder()
        .api_key(KEY)
        .job(
            "done",
            Timeline::new("mx-image-face-swap").succeed("image", "https://cdn.example/done_0.jpg"),
        )
        .job(
            "busy",
            Timeline::new("mx-v2v").processing(Duration::from_secs(3600)),
        )
        .start()
        .await
        .unwrap()
}

fn client(server: &FakeServer, key: &str) -> Client {
    server_client(server.base_url())
        .api_key(key)
        .build()
        .unwrap()
}

#[tokio::test]
async fn get_end_to_end() {
    let server = server().await;
    let c = client(&server, KEY);
    let d = c.get("done").await.unwrap();
    assert_eq!(d.img_uuid(), "done");
    assert_eq!(d.status(), &JobStatus::Succeeded);
    assert_eq!(d.job_type(), Some("mx-image-face-swap"));
    assert_eq!(d.outputs().len(), 1);
    assert_eq!(d.outputs()[0].kind(), &OutputKind::Image);
    assert_eq!(d.outputs()[0].url(), "https://cdn.example/done_0.jpg");
    assert!(d.end_time().is_some());
    assert_eq!(
        c.get("busy").await.unwrap().status(),
        &JobStatus::Processing
    );
    assert_eq!(server.hits("done"), 1);
    assert_eq!(server.hits("busy"), 1);
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let server = server().await;
    let c = client(&server, KEY);
    for _ in 0..10 {
        c.get("busy").await.unwrap();
    }
    assert_eq!(server.total_requests(), 10);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn the_layers_by_hand_over_hyper() {
    let server = server().await;
    let transport = AuthLayer::bearer(KEY).layer(HyperTransport::new());
    let svc = JobStatusService::new(server.base_url(), transport).unwrap();
    let d = svc.oneshot(JobQuery::new("done").unwrap()).await.unwrap();
    assert_eq!(d.status(), &JobStatus::Succeeded);
}

#[tokio::test]
async fn a_wrong_key_is_a_401_without_the_key_in_the_error() {
    let server = server().await;
    let wrong = "sk-wrong-key-0000";
    let err = client(&server, wrong).get("done").await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_eq!(err.api_code(), Some(401));
    assert!(!err.is_transient());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(wrong) && !shown.contains(KEY), "{shown}");
}

#[tokio::test]
async fn an_unknown_job_is_an_api_error() {
    let server = server().await;
    let err = client(&server, KEY).get("nope").await.unwrap_err();
    assert!(err.is_api());
    assert_eq!(err.api_code(), Some(40004));
    assert_eq!(err.to_string(), "api error code 40004: job not found");
}

#[tokio::test]
async fn a_base_url_prefix_travels_to_the_server() {
    let server = FakeServer::builder()
        .api_key(KEY)
        .path_prefix("/goenhance")
        .job(
            "done",
            Timeline::new("mx-v2v").succeed("video", "https://cdn.example/v.mp4"),
        )
        .start()
        .await
        .unwrap();
    assert!(server.base_url().ends_with("/goenhance"));
    let d = client(&server, KEY).get("done").await.unwrap();
    assert_eq!(d.status(), &JobStatus::Succeeded);
}

#[tokio::test]
async fn a_closed_port_is_a_transient_transport_error() {
    let server = server().await;
    let url = server.base_url().to_owned();
    server.shutdown().await;
    let c = Client::builder()
        .base_url(&url)
        .api_key(KEY)
        .retry_policy(RetryPolicy::never())
        .build()
        .unwrap();
    let err = c.get("done").await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.to_string(), "transport error: cannot connect");
    // Why is in the chain, once.
    let chain = support::causes(&err);
    assert!(
        chain
            .iter()
            .any(|c| c.to_ascii_lowercase().contains("connection refused")),
        "{chain:?}"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_over_one_connection() {
    let server = server().await;
    let c = Client::builder()
        .base_url(server.base_url())
        .api_key(KEY)
        .transport(HyperTransport::builder().http2_only(true).build())
        .build()
        .unwrap();
    let gets: Vec<_> = (0..8).map(|_| c.get("busy")).collect();
    for d in futures_util::future::join_all(gets).await {
        assert_eq!(d.unwrap().status(), &JobStatus::Processing);
    }
    assert_eq!(server.total_requests(), 8);
    assert_eq!(server.connections(), 1);
}
