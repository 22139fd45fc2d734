//! A build without TLS never sends in clear what was meant for `https`: a
//! base URL, an output URL or a redirect to `https` is refused before any
//! connection, with an error that names the feature to enable.
//!
//! Built only without the `rustls` feature (CI runs
//! `cargo test --no-default-features`); with TLS these URLs are served
//! over TLS, which `tests/tls.rs` checks.
#![cfg(not(feature = "rustls"))]

use std::io::ErrorKind as IoErrorKind;
use std::net::TcpListener as StdListener;

use goenhance_jobs::{Client, JobOutput, OutputKind, RetryPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain TCP listener on loopback that nobody should reach, checked
/// without waiting: a connection the client made would already sit in its
/// accept queue, since `connect` returns only once the handshake is done.
struct Tripwire(StdListener);

impl Tripwire {
    fn new() -> Tripwire {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Tripwire(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == IoErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("the plain listener got a connection from {peer}"),
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

fn assert_names_the_feature(err: &goenhance_jobs::Error) {
    assert!(err.is_invalid_input(), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "invalid input: https needs tls, and this build has none: \
         enable the `rustls` feature of goenhance-jobs"
    );
}

fn client(base_url: &str) -> Client {
    Client::builder()
        .api_key("sk-plaintext-SECRET")
        .base_url(base_url)
        .retry_policy(RetryPolicy::default())
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_https_base_url_is_refused_before_connecting() {
    let wire = Tripwire::new();
    let client = client(&format!("https://127.0.0.1:{}", wire.port()));
    let err = client.get("5334c57d").await.unwrap_err();
    assert_names_the_feature(&err);
    let err = client.wait("5334c57d").await.unwrap_err();
    assert_names_the_feature(&err);
    wire.assert_untouched();
}

#[tokio::test]
async fn an_https_output_url_is_refused_before_connecting() {
    let wire = Tripwire::new();
    let dir = tempfile::tempdir().unwrap();
    let client = client("http://127.0.0.1:9");
    let output = JobOutput::new(
        OutputKind::Video,
        format!("https://127.0.0.1:{}/out.mp4", wire.port()),
    );
    let err = client.download(&output, dir.path()).await.unwrap_err();
    assert_names_the_feature(&err);
    wire.assert_untouched();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_redirect_to_https_is_refused_before_connecting() {
    let wire = Tripwire::new();
    // A plain file host on loopback that answers every request with a
    // redirect to the `https` tripwire.
    let host = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_port = host.local_addr().unwrap().port();
    let location = format!("https://127.0.0.1:{}/out.mp4", wire.port());
    let server = tokio::spawn(async move {
        let mut served = 0;
        while let Ok((mut conn, _)) = host.accept().await {
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            served += 1;
            let answer = format!(
                "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = conn.write_all(answer.as_bytes()).await;
            if served == 1 {
                return served;
            }
        }
        served
    });
    let dir = tempfile::tempdir().unwrap();
    let client = client("http://127.0.0.1:9");
    let output = JobOutput::new(
        OutputKind::Video,
        format!("http://127.0.0.1:{host_port}/out.mp4"),
    );
    let err = client.download(&output, dir.path()).await.unwrap_err();
    assert_names_the_feature(&err);
    assert_eq!(server.await.unwrap(), 1, "the plain host answered once");
    wire.assert_untouched();
}
