//! Downloads of job outputs against the fake server on loopback: resume,
//! restart, atomic placement, clean failures, redirects, expiry, the cap.
#![cfg(feature = "fake")]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::download::{DownloadOptions, Progress};
use goenhance_jobs::fake::{FakeFile, FakeServer, FileFault, FileFaults, Timeline};
use goenhance_jobs::{Client, JobDetail, JobOutput, OutputKind, RetryPolicy};
use http::StatusCode;
use sha2::{Digest, Sha256};

const KEY: &str = "sk-download-test-5f2c";
const MIB: u64 = 1 << 20;

fn client(server: &FakeServer) -> Client {
    client_with(server, RetryPolicy::default())
}

fn client_with(server: &FakeServer, retry: RetryPolicy) -> Client {
    Client::builder()
        .base_url(server.base_url())
        .api_key(KEY)
        .retry_policy(
            retry
                .initial_backoff(Duration::from_millis(1))
                .jitter(Jitter::None),
        )
        .build()
        .unwrap()
}

fn output(server: &FakeServer, path: &str) -> JobOutput {
    JobOutput::new(OutputKind::Video, server.file_url(path))
}

fn sha256_of_file(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_vec()
}

fn sha256_of_fake(file: &FakeFile) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0;
    while at < file.len() {
        let n = (file.len() - at).min(buf.len() as u64) as usize;
        file.fill(at, &mut buf[..n]);
        h.update(&buf[..n]);
        at += n as u64;
    }
    h.finalize().to_vec()
}

/// The names in a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn twenty_mib_through_thirty_percent_cuts_arrives_identical() {
    let file = FakeFile::new(20 * MIB)
        .content_type("video/mp4")
        .faults(FileFaults::random_cuts(0.3, 14));
    let expected = sha256_of_fake(&file);
    let server = FakeServer::builder()
        .api_key(KEY)
        .file("/out/big.mp4", file)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("big.mp4");
    let got = client_with(&server, RetryPolicy::default().max_attempts(10))
        .download(&output(&server, "/out/big.mp4"), &target)
        .await
        .unwrap();

    assert_eq!(got.path(), target);
    assert_eq!(got.bytes(), 20 * MIB);
    assert_eq!(got.content_type(), Some("video/mp4"));
    assert_eq!(sha256_of_file(&target), expected);
    let stats = server.file_stats("/out/big.mp4");
    assert!(stats.requests >= 2, "no response was cut: {stats:?}");
    assert_eq!(stats.range_requests, stats.requests - 1);
    for h in &stats.headers[1..] {
        assert!(header(h, "range").unwrap().starts_with("bytes="));
        assert_eq!(header(h, "if-range"), Some("\"1400000-0\""));
    }
    assert!(
        stats.bytes_served <= 20 * MIB * 3 / 2,
        "served {} bytes for a 20 MiB file",
        stats.bytes_served
    );
    assert_eq!(names(dir.path()), ["big.mp4"]);
}

#[tokio::test]
async fn a_cut_resumes_from_the_byte_it_stopped_at() {
    let file = FakeFile::new(MIB).faults(FileFaults::script([Some(FileFault::Cut {
        after: 400_000,
    })]));
    let expected = sha256_of_fake(&file);
    let server = FakeServer::builder()
        .file("/a.bin", file)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let got = client(&server)
        .download(&output(&server, "/a.bin"), &target)
        .await
        .unwrap();
    assert_eq!(got.bytes(), MIB);
    assert_eq!(sha256_of_file(&target), expected);
    let stats = server.file_stats("/a.bin");
    assert_eq!(stats.requests, 2);
    assert_eq!(header(&stats.headers[0], "range"), None);
    // The rest from the first byte the client did not get: all 400,000
    // sent before the cut, unless the reset lost some in flight.
    let from: u64 = header(&stats.headers[1], "range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 400_000, "resumed from {from}");
    assert_eq!(header(&stats.headers[1], "if-range"), Some("\"100000-0\""));
    assert_eq!(stats.bytes_served, 400_000 + (MIB - from));
}

#[tokio::test]
async fn without_an_etag_last_modified_validates_the_range() {
    let file = FakeFile::new(MIB)
        .no_etag()
        .faults(FileFaults::script([Some(FileFault::Cut { after: 1000 })]));
    let server = FakeServer::builder()
        .file("/a.bin", file.clone())
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    client(&server)
        .download(&output(&server, "/a.bin"), &target)
        .await
        .unwrap();
    assert_eq!(sha256_of_file(&target), sha256_of_fake(&file));
    let stats = server.file_stats("/a.bin");
    assert_eq!(header(&stats.headers[1], "range"), Some("bytes=1000-"));
    assert_eq!(
        header(&stats.headers[1], "if-range"),
        Some("Sun, 01 Nov 2026 12:00:00 GMT")
    );
}

#[tokio::test]
async fn a_server_without_ranges_makes_it_start_over() {
    let file = FakeFile::new(MIB)
        .no_ranges()
        .faults(FileFaults::script([Some(FileFault::Cut {
            after: 300_000,
        })]));
    let expected = sha256_of_fake(&file);
    let server = FakeServer::builder()
        .file("/a.bin", file)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let log = Arc::clone(&seen);
    let options = DownloadOptions::new().on_progress(move |p| log.lock().unwrap().push(p.bytes));
    let got = client(&server)
        .download_with(&output(&server, "/a.bin"), &target, options)
        .await
        .unwrap();
    assert_eq!(got.bytes(), MIB);
    assert_eq!(sha256_of_file(&target), expected);
    let stats = server.file_stats("/a.bin");
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.range_requests, 0);
    assert_eq!(stats.bytes_served, 300_000 + MIB);
    // The progress went up to the cut, back to 0, then up to the end.
    let seen = seen.lock().unwrap();
    let back = seen.windows(2).position(|w| w[1] < w[0]).unwrap();
    assert!(seen[back] > 0 && seen[back] <= 300_000, "{}", seen[back]);
    assert_eq!(seen[back + 1], 0);
    assert_eq!(seen.iter().filter(|&&b| b == 0).count(), 2);
    assert_eq!(*seen.last().unwrap(), MIB);
}

#[tokio::test]
async fn a_file_that_changed_is_not_spliced() {
    let first = FakeFile::new(MIB).faults(FileFaults::script([Some(FileFault::Cut {
        after: 200_000,
    })]));
    let changed = FakeFile::new(MIB).seed(1);
    let expected = sha256_of_fake(&changed);
    assert_ne!(expected, sha256_of_fake(&first));
    let server = Arc::new(
        FakeServer::builder()
            .file("/a.bin", first)
            .start()
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    // The file changes on the server while the first response is read.
    let swapped = AtomicBool::new(false);
    let srv = Arc::clone(&server);
    let options = DownloadOptions::new().on_progress(move |p| {
        if p.bytes >= 100_000 && !swapped.swap(true, Ordering::SeqCst) {
            srv.add_file("/a.bin", changed.clone());
        }
    });
    client(&server)
        .download_with(&output(&server, "/a.bin"), &target, options)
        .await
        .unwrap();
    assert_eq!(sha256_of_file(&target), expected);
    // The resumed request carried the old ETag and got the whole new file.
    let stats = server.file_stats("/a.bin");
    assert_eq!(stats.requests, 1);
    assert_eq!(header(&stats.headers[0], "if-range"), Some("\"100000-0\""));
    assert_eq!(stats.bytes_served, MIB);
}

#[tokio::test]
async fn a_stalled_body_is_resumed_after_the_idle_timeout() {
    let file = FakeFile::new(MIB).faults(FileFaults::script([Some(FileFault::Stall {
        after: 100_000,
    })]));
    let expected = sha256_of_fake(&file);
    let server = FakeServer::builder()
        .file("/a.bin", file)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let options = DownloadOptions::new().idle_timeout(Duration::from_secs(1));
    client(&server)
        .download_with(&output(&server, "/a.bin"), &target, options)
        .await
        .unwrap();
    assert_eq!(sha256_of_file(&target), expected);
    let stats = server.file_stats("/a.bin");
    assert_eq!(stats.requests, 2);
    assert_eq!(header(&stats.headers[1], "range"), Some("bytes=100000-"));
}

#[tokio::test]
async fn nothing_is_at_the_target_until_the_file_is_complete() {
    let server = FakeServer::builder()
        .file("/a.bin", FakeFile::new(4 * MIB))
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let checks = Arc::new(AtomicU64::new(0));
    let (t, d, n) = (target.clone(), dir.path().to_owned(), Arc::clone(&checks));
    let options = DownloadOptions::new().on_progress(move |_| {
        assert!(!t.exists(), "the target exists during the download");
        let names = names(&d);
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with(".a.bin.part-"), "{names:?}");
        n.fetch_add(1, Ordering::SeqCst);
    });
    let got = client(&server)
        .download_with(&output(&server, "/a.bin"), &target, options)
        .await
        .unwrap();
    assert!(checks.load(Ordering::SeqCst) >= 2);
    assert_eq!(got.bytes(), 4 * MIB);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 4 * MIB);
    assert_eq!(names(dir.path()), ["a.bin"]);
}

#[tokio::test]
async fn a_failed_download_leaves_nothing_behind() {
    let server = FakeServer::builder()
        .file(
            "/a.bin",
            FakeFile::new(MIB).faults(FileFaults::script([
                Some(FileFault::Status(500)),
                Some(FileFault::Cut { after: 500_000 }),
                Some(FileFault::Status(500)),
                Some(FileFault::Status(500)),
            ])),
        )
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let err = client_with(&server, RetryPolicy::default().max_attempts(3))
        .download(&output(&server, "/a.bin"), &target)
        .await
        .unwrap_err();
    assert!(err.is_http(), "{err:?}");
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        err.to_string(),
        "gave up after 3 attempts: http status 500 internal server error"
    );
    // The cut brought bytes, so the failures in a row counted from it.
    assert_eq!(server.file_stats("/a.bin").requests, 4);
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_dropped_download_removes_its_temporary_file() {
    let server = FakeServer::builder()
        .file(
            "/a.bin",
            FakeFile::new(MIB).faults(FileFaults::always(FileFault::Stall { after: 1000 })),
        )
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.bin");
    let (tx, mut rx) = tokio::sync::watch::channel(Progress::default());
    let client = client(&server);
    let out = output(&server, "/a.bin");
    let download = client.download_with(&out, &target, DownloadOptions::new().progress_watch(tx));
    tokio::select! {
        r = download => panic!("a stalled download ended: {r:?}"),
        _ = rx.wait_for(|p| p.bytes == 1000) => {}
    }
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn the_output_host_never_sees_the_api_key() {
    let server = FakeServer::builder()
        .api_key(KEY)
        .file(
            "/out/job-1_0.png",
            FakeFile::new(1000).content_type("image/png"),
        )
        .start()
        .await
        .unwrap();
    server.add_job(
        "job-1",
        Timeline::new("mx-text2img").succeed("image", server.file_url("/out/job-1_0.png")),
    );
    let client = client(&server);
    let job = client.wait("job-1").await.unwrap();
    assert_eq!(server.hits("job-1"), 1);
    let dir = tempfile::tempdir().unwrap();
    let got = client
        .download(&job.outputs()[0], dir.path().join("job-1_0.png"))
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("image/png"));
    let stats = server.file_stats("/out/job-1_0.png");
    assert_eq!(stats.requests, 1);
    let h = &stats.headers[0];
    assert_eq!(header(h, "authorization"), None);
    assert!(!format!("{h:?}").contains(KEY));
    assert!(header(h, "user-agent")
        .unwrap()
        .starts_with("goenhance-jobs/"));
    assert_eq!(header(h, "accept-encoding"), Some("identity"));
}

#[tokio::test]
async fn layers_on_the_transport_apply_to_downloads() {
    use tower::Layer;
    let server = FakeServer::builder()
        .api_key(KEY)
        .file("/a.bin", FakeFile::new(1000))
        .start()
        .await
        .unwrap();
    let transport = tower_http::set_header::SetRequestHeaderLayer::overriding(
        http::header::HeaderName::from_static("x-tenant"),
        http::HeaderValue::from_static("t-42"),
    )
    .layer(goenhance_jobs::HyperTransport::new());
    let client = Client::builder()
        .base_url(server.base_url())
        .api_key(KEY)
        .transport(transport)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    client
        .download(&output(&server, "/a.bin"), dir.path().join("a.bin"))
        .await
        .unwrap();
    let stats = server.file_stats("/a.bin");
    assert_eq!(header(&stats.headers[0], "x-tenant"), Some("t-42"));
    assert_eq!(header(&stats.headers[0], "authorization"), None);
}

#[tokio::test]
async fn redirects_are_followed_on_loopback_up_to_five() {
    let server = FakeServer::builder()
        .file("/files/a.bin", FakeFile::new(5000))
        .redirect("/r1", "/r2")
        .redirect("/r2", "files/a.bin")
        .redirect("/loop", "/loop")
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server);
    let got = client
        .download(&output(&server, "/r1"), dir.path().join("a.bin"))
        .await
        .unwrap();
    assert_eq!(got.bytes(), 5000);
    assert_eq!(server.file_stats("/files/a.bin").requests, 1);

    let err = client
        .download(&output(&server, "/loop"), dir.path().join("b.bin"))
        .await
        .unwrap_err();
    assert!(err.is_http());
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "http status 302 found: more than 5 redirects"
    );
    assert_eq!(server.file_stats("/loop").requests, 6);
    assert_eq!(names(dir.path()), ["a.bin"]);
}

#[tokio::test]
async fn a_redirect_to_plain_http_on_another_host_is_refused() {
    let server = FakeServer::builder()
        .redirect("/a.mp4", "http://cdn.example/a.mp4?sig=1")
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = client(&server)
        .download(&output(&server, "/a.mp4"), dir.path().join("a.mp4"))
        .await
        .unwrap_err();
    assert!(err.is_http(), "{err:?}");
    assert_eq!(err.status(), Some(StatusCode::FOUND));
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "http status 302 found: redirect refused: target uses http on a host that is not loopback"
    );
    assert_eq!(server.file_stats("/a.mp4").requests, 1);
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn an_expired_url_is_expired_after_one_request() {
    let server = FakeServer::builder()
        .file(
            "/a.mp4",
            FakeFile::new(1000).faults(FileFaults::always(FileFault::Expired)),
        )
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = client(&server)
        .download(&output(&server, "/a.mp4"), dir.path().join("a.mp4"))
        .await
        .unwrap_err();
    assert!(err.is_expired(), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert_eq!(
        err.to_string(),
        "output url expired: the storage host refused the signed url (403 forbidden)"
    );
    assert_eq!(server.file_stats("/a.mp4").requests, 1);
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_link_past_its_expiry_is_not_requested() {
    let server = FakeServer::builder()
        .file("/a.mp4", FakeFile::new(1000))
        .start()
        .await
        .unwrap();
    let body = format!(
        r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"j","status":"success",
            "link_expired_at":"2020-01-01T00:00:00Z",
            "json":[{{"type":"video","value":"{}"}}]}}}}"#,
        server.file_url("/a.mp4")
    );
    let detail = JobDetail::from_json(body.as_bytes()).unwrap();
    let out = &detail.outputs()[0];
    assert_eq!(
        out.expires_at(),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800))
    );
    let dir = tempfile::tempdir().unwrap();
    let err = client(&server)
        .download(out, dir.path().join("a.mp4"))
        .await
        .unwrap_err();
    assert!(err.is_expired());
    assert_eq!(err.status(), None);
    assert_eq!(
        err.to_string(),
        "output url expired: link expired at Wed, 01 Jan 2020 00:00:00 GMT"
    );
    assert_eq!(server.file_stats("/a.mp4").requests, 0);

    // Unix seconds work too, and a link still valid downloads.
    let later = SystemTime::now() + Duration::from_secs(3600);
    let secs = later
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = body.replace("\"2020-01-01T00:00:00Z\"", &secs.to_string());
    let detail = JobDetail::from_json(body.as_bytes()).unwrap();
    assert_eq!(
        detail.outputs()[0].expires_at(),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    );
    client(&server)
        .download(&detail.outputs()[0], dir.path().join("a.mp4"))
        .await
        .unwrap();
    assert_eq!(server.file_stats("/a.mp4").requests, 1);
}

#[tokio::test]
async fn plain_http_output_urls_elsewhere_are_refused_before_sending() {
    let server = FakeServer::builder().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = client(&server)
        .download(
            &JobOutput::new(OutputKind::Video, "http://cdn.example/a.mp4"),
            dir.path().join("a.mp4"),
        )
        .await
        .unwrap_err();
    assert!(err.is_invalid_input());
    assert_eq!(
        err.to_string(),
        "invalid input: output url uses http on a host that is not loopback"
    );
    let err = client(&server)
        .download(
            &output(&server, "/a.mp4"),
            dir.path().join("missing-folder").join("a.mp4"),
        )
        .await
        .unwrap_err();
    assert!(err.is_io(), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("file error: cannot create a temporary file in "));
    assert_eq!(server.total_requests(), 0);
}

#[tokio::test]
async fn max_downloads_makes_the_others_wait() {
    let server = FakeServer::builder()
        .file(
            "/slow.bin",
            FakeFile::new(MIB).faults(FileFaults::script([Some(FileFault::Stall { after: 10 })])),
        )
        .file("/b.bin", FakeFile::new(1000))
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .base_url(server.base_url())
        .api_key(KEY)
        .max_downloads(1)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let slow_done = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::watch::channel(Progress::default());
    let slow = {
        let (client, out, to) = (
            client.clone(),
            output(&server, "/slow.bin"),
            dir.path().join("slow.bin"),
        );
        let done = Arc::clone(&slow_done);
        tokio::spawn(async move {
            let options = DownloadOptions::new()
                .progress_watch(tx)
                .idle_timeout(Duration::from_secs(1));
            let r = client.download_with(&out, to, options).await;
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    // The slow download holds the only slot once its first bytes came.
    rx.wait_for(|p| p.bytes == 10).await.unwrap();
    let done = Arc::clone(&slow_done);
    let options = DownloadOptions::new().on_progress(move |_| {
        assert!(
            done.load(Ordering::SeqCst),
            "a second download ran while the only slot was taken"
        );
    });
    client
        .download_with(
            &output(&server, "/b.bin"),
            dir.path().join("b.bin"),
            options,
        )
        .await
        .unwrap();
    assert_eq!(slow.await.unwrap().unwrap().bytes(), MIB);
    assert_eq!(server.file_stats("/slow.bin").requests, 2);
}

mod policy {
    //! Retries of downloads through an in-memory storage host, on tokio's
    //! paused clock: the client's `RetryPolicy` decides.
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::sync::atomic::AtomicUsize;

    type Answer = Result<http::Response<Full<Bytes>>, std::convert::Infallible>;

    /// A storage host answering `script[i]` (status, extra header) to
    /// request `i`, then 200 with 10 bytes.
    fn storage(
        script: Vec<(u16, Option<(&'static str, &'static str)>)>,
        calls: Arc<AtomicUsize>,
    ) -> impl tower::Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<Full<Bytes>>,
        Error = std::convert::Infallible,
        Future = std::future::Ready<Answer>,
    > + Clone
           + Send
           + Sync
           + 'static {
        let script = Arc::new(script);
        tower::service_fn(move |_req: http::Request<Full<Bytes>>| {
            let i = calls.fetch_add(1, Ordering::SeqCst);
            let mut res = http::Response::builder();
            let body = match script.get(i) {
                Some((status, header)) => {
                    res = res.status(*status);
                    if let Some((k, v)) = header {
                        res = res.header(*k, *v);
                    }
                    Bytes::new()
                }
                None => {
                    res = res.header("content-length", "10");
                    Bytes::from_static(b"0123456789")
                }
            };
            std::future::ready(Ok(res.body(Full::new(body)).unwrap()))
        })
    }

    fn storage_client(
        script: Vec<(u16, Option<(&'static str, &'static str)>)>,
        retry: RetryPolicy,
    ) -> (Client, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let client = Client::builder()
            .api_key(KEY)
            .retry_policy(retry.jitter(Jitter::None).no_budget())
            .transport(storage(script, Arc::clone(&calls)))
            .build()
            .unwrap();
        (client, calls)
    }

    fn out() -> JobOutput {
        JobOutput::new(OutputKind::Image, "https://cdn.example/a.png?sig=1")
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_between_retries_is_the_policy_s() {
        let (client, calls) = storage_client(
            vec![(503, None), (502, None)],
            RetryPolicy::default().initial_backoff(Duration::from_secs(1)),
        );
        let dir = tempfile::tempdir().unwrap();
        let started = tokio::time::Instant::now();
        let got = client
            .download(&out(), dir.path().join("a.png"))
            .await
            .unwrap();
        assert_eq!(got.bytes(), 10);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // 1 s, then 2 s.
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_capped() {
        let (client, calls) = storage_client(
            vec![(503, Some(("retry-after", "7")))],
            RetryPolicy::default(),
        );
        let dir = tempfile::tempdir().unwrap();
        let started = tokio::time::Instant::now();
        client
            .download(&out(), dir.path().join("a.png"))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(started.elapsed(), Duration::from_secs(7));

        let (client, calls) = storage_client(
            vec![(429, Some(("retry-after", "120")))],
            RetryPolicy::default(),
        );
        let err = client
            .download(&out(), dir.path().join("b.png"))
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
        assert_eq!(
            err.to_string(),
            "server asked to retry after 120s, longer than allowed: http status 429 too many requests"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_capped_and_other_statuses_not_retried() {
        let (client, calls) = storage_client(
            vec![(503, None), (503, None), (503, None)],
            RetryPolicy::default().max_attempts(2),
        );
        let dir = tempfile::tempdir().unwrap();
        let err = client
            .download(&out(), dir.path().join("a.png"))
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            err.to_string(),
            "gave up after 2 attempts: http status 503 service unavailable"
        );

        let (client, calls) = storage_client(vec![(404, None)], RetryPolicy::default());
        let err = client
            .download(&out(), dir.path().join("a.png"))
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
        assert!(!err.is_expired());
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_ends_after_the_idle_timeout_and_the_rest_is_asked_for() {
        use futures_util::StreamExt;
        use http_body_util::{BodyExt, StreamBody};

        let content: Bytes = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let seen = Arc::new(Mutex::new(Vec::<http::HeaderMap>::new()));
        let (log, data) = (Arc::clone(&seen), content.clone());
        let storage = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
            let n = {
                let mut log = log.lock().unwrap();
                log.push(req.headers().clone());
                log.len()
            };
            let res = http::Response::builder()
                .header("etag", "\"e\"")
                .header("accept-ranges", "bytes");
            let res = if n == 1 {
                // 100 bytes, then nothing: a stalled connection.
                let first = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                    http_body::Frame::data(data.slice(..100)),
                )])
                .chain(futures_util::stream::pending());
                res.header("content-length", "1000")
                    .body(StreamBody::new(first).boxed_unsync())
            } else {
                res.status(206)
                    .header("content-range", "bytes 100-999/1000")
                    .header("content-length", "900")
                    .body(Full::new(data.slice(100..)).boxed_unsync())
            };
            std::future::ready(Ok::<_, std::convert::Infallible>(res.unwrap()))
        });
        let client = Client::builder()
            .api_key(KEY)
            .retry_policy(
                RetryPolicy::default()
                    .initial_backoff(Duration::from_secs(1))
                    .jitter(Jitter::None),
            )
            .transport(storage)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.png");
        let started = tokio::time::Instant::now();
        let options = DownloadOptions::new().idle_timeout(Duration::from_secs(30));
        let got = client
            .download_with(&out(), &target, options)
            .await
            .unwrap();
        // 30 s without data, then the 1 s backoff.
        assert_eq!(started.elapsed(), Duration::from_secs(31));
        assert_eq!(got.bytes(), 1000);
        assert_eq!(std::fs::read(&target).unwrap(), content);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(header(&seen[1], "range"), Some("bytes=100-"));
        assert_eq!(header(&seen[1], "if-range"), Some("\"e\""));
    }

    #[test]
    fn download_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (client, _) = storage_client(vec![], RetryPolicy::default());
        let out = out();
        let fut = client.download(&out, "a.png");
        assert_send(&fut);
        let fut = client.download_with(&out, String::from("a.png"), DownloadOptions::new());
        assert_send(&fut);
    }
}
