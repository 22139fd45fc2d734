//! Proxy credentials never show, in logs at every level, in errors or in
//! `Debug`. A test binary of its own: it listens with a scoped tracing
//! subscriber, and tracing caches per call site whether anyone listens, so
//! tests running beside it on other threads without a subscriber could
//! make it miss spans.
#![cfg(all(feature = "rustls", feature = "fake"))]

mod support;

use goenhance_jobs::{HyperTransport, Proxy};
use support::{
    https_server, no_retry_client as client, proxy_transport as transport, ConnectProxy, Pki,
    API_HOST,
};

/// Captures the log lines of the current thread.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Through a proxy with credentials, accepted once and refused once: the
/// password and its base64 form show in no log line (TRACE, every span),
/// no error and no `Debug`.
#[tokio::test]
async fn proxy_credentials_never_show_in_logs_errors_or_debug() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    // This test's runtime has one thread: its tasks all log here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new("test CA proxy audit");
    let server = https_server(&pki.leaf(&[API_HOST]), &[b"http/1.1"], 0).await;
    let proxy = ConnectProxy::start(server.addr, Some("Basic YWxpY2U6czNjckB0")).await;
    let mut shown = String::new();
    for (password, ok) in [("s3cr%40t", true), ("hunter2", false)] {
        let setting = Proxy::url(&format!("http://alice:{password}@{}", proxy.addr)).unwrap();
        let builder = HyperTransport::builder().proxy(setting.clone());
        shown += &format!("{setting:?}\n{setting:#?}\n{builder:?}\n");
        let client = client(&format!("https://{API_HOST}"), transport(&pki, setting));
        shown += &format!("{client:?}\n");
        match client.get("audit").await {
            Ok(job) => assert!(ok, "{job:?}"),
            Err(e) => {
                assert!(!ok, "{e}");
                shown += &format!("{e}\n{e:?}\n{e:#?}\n");
            }
        }
    }
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("audit"), "the capture works: {log}");
    for text in [&log, &shown] {
        for secret in ["s3cr", "hunter2", "YWxpY2U6czNjckB0", "YWxpY2U6aHVudGVyMg"] {
            assert!(!text.contains(secret), "{secret} shows in:\n{text}");
        }
    }
}
