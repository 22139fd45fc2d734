//! HTTPS end to end on loopback, with a CA and certificates made by the
//! test: HTTP/1.1 and HTTP/2 by ALPN, extra and platform roots, refused
//! certificates failing once with a message that says why, a cut handshake
//! retried, and connections the server closes after every answer never
//! surfacing as errors.
#![cfg(all(feature = "rustls", feature = "fake"))]

mod support;

use std::time::Duration;

use goenhance_jobs::{
    AuthLayer, Client, ErrorKind, HyperTransport, JobOutput, JobStatus, JobStatusService,
    OutputKind, Proxy, RetryLayer, RetryPolicy, TlsRoots,
};
use http::Version;
use support::{https_server, no_retry_client, one_answer_server, q, Close, Pki, KEY};
use tower::{Layer, ServiceBuilder, ServiceExt};

/// A transport trusting only `pki`'s CA, never through a proxy.
fn transport(pki: &Pki) -> HyperTransport {
    HyperTransport::builder()
        .tls_roots(TlsRoots::None)
        .root_certificates_pem(pki.ca_pem().as_bytes())
        .unwrap()
        .proxy(Proxy::none())
        .build()
}

fn client(base: &str, transport: HyperTransport) -> Client {
    Client::builder()
        .base_url(base)
        .api_key(KEY)
        .retry_policy(quick_retries())
        .transport(transport)
        .build()
        .unwrap()
}

/// Five attempts, a millisecond apart: transient errors are retried, and a
/// test of them does not wait for a production backoff.
fn quick_retries() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(5)
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(Duration::from_millis(2))
        .no_budget()
}

#[tokio::test]
async fn http1_over_tls_with_an_extra_root() {
    let pki = Pki::new("test CA h1");
    let server = https_server(&pki.leaf(&["localhost"]), &[b"http/1.1"], 0).await;
    let client = client(
        &format!("https://localhost:{}", server.port()),
        transport(&pki),
    );

    let job = client.get("job-h1").await.unwrap();
    assert_eq!(job.status(), &JobStatus::Succeeded);
    assert_eq!(job.outputs()[0].url(), "https://cdn.example/job-h1_0.mp4");
    let seen = server.counts.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, Version::HTTP_11);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(seen[0].uri, "/api/v1/jobs/detail?img_uuid=job-h1");
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_one_connection_carries_every_request() {
    let pki = Pki::new("test CA h2");
    let server = https_server(&pki.leaf(&["localhost"]), &[b"h2", b"http/1.1"], 0).await;
    let client = client(
        &format!("https://localhost:{}", server.port()),
        transport(&pki),
    );

    for id in ["a", "b", "c"] {
        let job = client.get(id).await.unwrap();
        assert_eq!(job.status(), &JobStatus::Succeeded);
    }
    let versions: Vec<Version> = server.counts.seen().iter().map(|s| s.version).collect();
    assert_eq!(versions, [Version::HTTP_2; 3]);
    assert_eq!(server.counts.handshakes(), 1);
}

#[tokio::test]
async fn an_ip_address_certificate_is_accepted() {
    let pki = Pki::new("test CA ip");
    let server = https_server(&pki.leaf(&["127.0.0.1"]), &[b"http/1.1"], 0).await;
    let client = client(
        &format!("https://127.0.0.1:{}", server.port()),
        transport(&pki),
    );
    assert_eq!(
        client.get("ip").await.unwrap().status(),
        &JobStatus::Succeeded
    );
}

/// Asserts that `get` fails with `message` after exactly one TCP connection
/// and no request, though five attempts were allowed.
async fn refused_once(
    server: &support::Server,
    transport: HyperTransport,
    host: &str,
    message: &str,
) {
    let client = client(&format!("https://{host}:{}", server.port()), transport);
    let err = client.get("refused").await.unwrap_err();
    assert_eq!(err.to_string(), message);
    assert!(err.is_transport());
    assert!(!err.is_transient());
    assert_eq!(server.counts.accepts(), 1, "one attempt only");
    assert_eq!(server.counts.requests(), 0);
}

#[tokio::test]
async fn an_unknown_ca_is_refused_once() {
    let pki = Pki::new("test CA trusted");
    let other = Pki::new("test CA untrusted");
    let server = https_server(&other.leaf(&["localhost"]), &[b"http/1.1"], 0).await;
    refused_once(
        &server,
        transport(&pki),
        "localhost",
        "transport error: certificate not trusted (unknown issuer)",
    )
    .await;
}

#[tokio::test]
async fn the_web_pki_roots_do_not_trust_a_private_ca() {
    let pki = Pki::new("test CA private");
    let server = https_server(&pki.leaf(&["localhost"]), &[b"http/1.1"], 0).await;
    let transport = HyperTransport::builder()
        .tls_roots(TlsRoots::WebPki)
        .proxy(Proxy::none())
        .build();
    refused_once(
        &server,
        transport,
        "localhost",
        "transport error: certificate not trusted (unknown issuer)",
    )
    .await;
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_once() {
    let pki = Pki::new("test CA name");
    let server = https_server(&pki.leaf(&["api.example.test"]), &[b"http/1.1"], 0).await;
    refused_once(
        &server,
        transport(&pki),
        "localhost",
        "transport error: certificate is for another host",
    )
    .await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused_once() {
    let pki = Pki::new("test CA expired");
    let server = https_server(&pki.expired_leaf(&["localhost"]), &[b"http/1.1"], 0).await;
    refused_once(
        &server,
        transport(&pki),
        "localhost",
        "transport error: certificate expired",
    )
    .await;
}

#[tokio::test]
async fn a_handshake_cut_by_the_network_is_retried() {
    let pki = Pki::new("test CA cut");
    let server = https_server(&pki.leaf(&["localhost"]), &[b"http/1.1"], 2).await;
    let client = client(
        &format!("https://localhost:{}", server.port()),
        transport(&pki),
    );

    let job = client.get("cut").await.unwrap();
    assert_eq!(job.status(), &JobStatus::Succeeded);
    assert_eq!(
        server.counts.accepts(),
        3,
        "two cut handshakes, then one that completes"
    );
    assert_eq!(server.counts.handshakes(), 1);
}

#[tokio::test]
async fn a_cut_handshake_is_a_transient_transport_error() {
    let pki = Pki::new("test CA cut always");
    let server = https_server(&pki.leaf(&["localhost"]), &[b"http/1.1"], usize::MAX).await;
    let client = Client::builder()
        .base_url(&format!("https://localhost:{}", server.port()))
        .api_key(KEY)
        .retry_policy(RetryPolicy::never())
        .transport(transport(&pki))
        .build()
        .unwrap();
    let err = client.get("cut").await.unwrap_err();
    assert!(err.is_transport());
    assert!(err.is_transient());
    assert_eq!(server.counts.accepts(), 1);
}

#[tokio::test]
async fn a_bad_pem_is_refused_when_the_transport_is_built() {
    let err = HyperTransport::builder()
        .root_certificates_pem(
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
    assert!(err.is_invalid_input());
    assert_eq!(
        err.to_string(),
        "invalid input: cannot read the root certificates: a PEM section is not valid base64"
    );
    let err = HyperTransport::builder()
        .root_certificates_pem(b"")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid input: cannot read the root certificates: no PEM certificate found"
    );
}

#[tokio::test]
async fn several_extra_roots_in_one_pem_are_all_trusted() {
    let first = Pki::new("test CA first");
    let second = Pki::new("test CA second");
    let both = format!("{}{}", first.ca_pem(), second.ca_pem());
    let transport = HyperTransport::builder()
        .tls_roots(TlsRoots::None)
        .root_certificates_pem(both.as_bytes())
        .unwrap()
        .proxy(Proxy::none())
        .build();
    for pki in [&first, &second] {
        let server = https_server(&pki.leaf(&["localhost"]), &[b"http/1.1"], 0).await;
        let client = client(
            &format!("https://localhost:{}", server.port()),
            transport.clone(),
        );
        assert_eq!(
            client.get("x").await.unwrap().status(),
            &JobStatus::Succeeded
        );
    }
}

/// 200 sequential gets against a server that closes every connection after
/// one answer, without saying so, as `close` says. With retries off, not
/// one get may fail: the transport connects afresh on its own.
async fn closed_after_every_answer(tls: bool, close: Close) -> support::Server {
    let pki = Pki::new("test CA stale");
    let leaf = pki.leaf(&["localhost"]);
    let server = one_answer_server(tls.then_some(&leaf), close).await;
    let (scheme, transport) = if tls {
        ("https", transport(&pki))
    } else {
        (
            "http",
            HyperTransport::builder().proxy(Proxy::none()).build(),
        )
    };
    let client = no_retry_client(
        &format!("{scheme}://localhost:{}", server.port()),
        transport,
    );
    for i in 0..200 {
        let id = format!("job-{i}");
        match client.get(&id).await {
            Ok(job) => assert_eq!(job.img_uuid(), id),
            Err(e) => panic!("get {i} failed: {e}"),
        }
    }
    assert_eq!(server.counts.requests(), 200);
    assert_eq!(server.counts.accepts(), 200);
    server
}

/// The pool sees the close before it lends the connection again: the
/// server gets each request exactly once.
#[tokio::test]
async fn connections_closed_after_every_answer_never_fail_a_get() {
    let server = closed_after_every_answer(false, Close::AfterAnswer).await;
    assert_eq!(server.counts.dropped(), 0);
}

#[tokio::test]
async fn tls_connections_closed_after_every_answer_never_fail_a_get() {
    let server = closed_after_every_answer(true, Close::AfterAnswer).await;
    assert_eq!(server.counts.dropped(), 0);
}

/// The close crosses the next request on the wire, on every connection:
/// each lost request is sent again at once on a fresh connection, with
/// retries off (a resend is not an attempt).
#[tokio::test]
async fn a_request_crossing_the_close_of_its_connection_is_sent_again() {
    let server = closed_after_every_answer(false, Close::OnNextRequest).await;
    assert_eq!(server.counts.dropped(), 199);
}

#[tokio::test]
async fn over_tls_a_request_crossing_the_close_of_its_connection_is_sent_again() {
    let server = closed_after_every_answer(true, Close::OnNextRequest).await;
    assert_eq!(server.counts.dropped(), 199);
}

/// A plain-HTTP server whose connections each answer once and close as
/// the next request crosses the close, and a transport for it.
async fn crossing_server() -> (support::Server, HyperTransport, String) {
    let server = one_answer_server(None, Close::OnNextRequest).await;
    let base = format!("http://localhost:{}", server.port());
    (
        server,
        HyperTransport::builder().proxy(Proxy::none()).build(),
        base,
    )
}

/// A stack built by hand: the retry layer, with retries off, sends a lost
/// request again.
#[tokio::test]
async fn a_hand_built_retry_layer_sends_a_lost_request_again() {
    let (server, transport, base) = crossing_server().await;
    let service = JobStatusService::new(&base, AuthLayer::bearer(KEY).layer(transport)).unwrap();
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::never()))
        .service(service);
    for i in 0..50 {
        let id = format!("job-{i}");
        let job = stack
            .clone()
            .oneshot(q(&id))
            .await
            .unwrap_or_else(|e| panic!("get {i} failed: {e}"));
        assert_eq!(job.img_uuid(), id);
    }
    assert_eq!(server.counts.requests(), 50);
    assert_eq!(server.counts.dropped(), 49);
}

/// The transport alone keeps no copy of a request: a request lost on a
/// reused connection comes back as a transient transport error.
#[tokio::test]
async fn without_a_retry_layer_a_lost_request_is_a_transient_error() {
    let (server, transport, base) = crossing_server().await;
    let service = JobStatusService::new(&base, AuthLayer::bearer(KEY).layer(transport)).unwrap();
    let first = service.clone().oneshot(q("first")).await.unwrap();
    assert_eq!(first.img_uuid(), "first");
    let err = service.oneshot(q("second")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.is_transient());
    assert_eq!(server.counts.requests(), 1);
    assert_eq!(server.counts.dropped(), 1);
}

/// A connection that closes under its first request never answered: that
/// is a real failure, not a lost request, and with retries off it is one
/// request and one error.
#[tokio::test]
async fn a_request_lost_on_a_fresh_connection_is_not_sent_again() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepts.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Reads the request's first bytes, then closes unanswered.
            let mut buf = [0u8; 16];
            let _ = tcp.read(&mut buf).await;
        }
    });
    let client = no_retry_client(
        &format!("http://localhost:{port}"),
        HyperTransport::builder().proxy(Proxy::none()).build(),
    );
    for _ in 0..3 {
        let err = client.get("fresh").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport);
        assert!(err.is_transient());
    }
    assert_eq!(accepts.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// Waits (through the hub) and downloads send lost requests again too,
/// with retries off.
#[tokio::test]
async fn waits_and_downloads_send_a_lost_request_again() {
    let (server, transport, base) = crossing_server().await;
    let client = no_retry_client(&base, transport);
    for i in 0..30 {
        let id = format!("wait-{i}");
        let job = client
            .wait(&id)
            .await
            .unwrap_or_else(|e| panic!("wait {i} failed: {e}"));
        assert_eq!(job.img_uuid(), id);
    }
    let dir = tempfile::tempdir().unwrap();
    for i in 0..30 {
        let output = JobOutput::new(
            OutputKind::Image,
            format!("{base}/api/v1/jobs/detail?img_uuid=file-{i}"),
        );
        let to = dir.path().join(format!("file-{i}.json"));
        let done = client
            .download(&output, &to)
            .await
            .unwrap_or_else(|e| panic!("download {i} failed: {e}"));
        let body = std::fs::read_to_string(&to).unwrap();
        assert!(body.contains(&format!("\"file-{i}\"")), "{body}");
        assert_eq!(done.bytes(), body.len() as u64);
    }
    assert_eq!(server.counts.requests(), 60);
    assert_eq!(server.counts.dropped(), 59);
}

/// An HTTP/2 connection that goes silent (dropped by a middlebox without a
/// word) is noticed by its unanswered keep-alive ping and closed, and the
/// next get connects afresh instead of waiting on the dead one.
#[tokio::test]
async fn a_silent_http2_connection_is_noticed_by_its_pings() {
    let pki = Pki::new("test CA ping");
    let server = https_server(&pki.leaf(&["localhost"]), &[b"h2"], 0).await;
    let forwarder = support::Forwarder::start(server.addr).await;
    let transport = HyperTransport::builder()
        .tls_roots(TlsRoots::None)
        .root_certificates_pem(pki.ca_pem().as_bytes())
        .unwrap()
        .proxy(Proxy::none())
        .http2_keep_alive_interval(Duration::from_millis(200))
        .http2_keep_alive_timeout(Duration::from_secs(1))
        .build();
    let client = Client::builder()
        .base_url(&format!("https://localhost:{}", forwarder.addr.port()))
        .api_key(KEY)
        .retry_policy(RetryPolicy::never())
        .transport(transport)
        .build()
        .unwrap();

    client.get("before").await.unwrap();
    forwarder.go_silent();
    tokio::time::timeout(Duration::from_secs(10), forwarder.client_closed())
        .await
        .expect("the client closes the silent connection once a ping goes unanswered");
    client.get("after").await.unwrap();
    assert_eq!(forwarder.accepts(), 2);
    let versions: Vec<Version> = server.counts.seen().iter().map(|s| s.version).collect();
    assert_eq!(versions, [Version::HTTP_2; 2]);
}
