//! Downloads that do not trust the storage host: redirects that would leave
//! https or reach private addresses, bodies with no end, a range of another
//! file, bad `Location`s, hosts that drip or keep failing, and size
//! settings at their extremes. Against a scripted file server on loopback.
#![cfg(feature = "fake")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::download::DownloadOptions;
use goenhance_jobs::retry::TokenBucket;
use goenhance_jobs::{Client, HyperTransport, JobOutput, OutputKind, RetryPolicy};
use http::StatusCode;
use http_body_util::Full;
use tower::ServiceExt;

const KEY: &str = "sk-download-hardening-7e1a";

/// What the file server was asked: method, path and query, headers.
#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    headers: http::HeaderMap,
}

/// Answers request `i` to the server at the address given.
type Script = Arc<dyn Fn(usize, &Request, SocketAddr) -> Response + Send + Sync>;

/// A file server on loopback that answers request `i` with
/// `script(i, req, its_address)` and logs every request.
struct FileServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    async fn start(
        script: impl Fn(usize, &Request, SocketAddr) -> Response + Send + Sync + 'static,
    ) -> Self {
        let script: Script = Arc::new(script);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |req: Request| {
            let (script, log) = (Arc::clone(&script), Arc::clone(&log));
            async move {
                let i = {
                    let mut log = log.lock().unwrap();
                    log.push(Seen {
                        uri: req.uri().to_string(),
                        headers: req.headers().clone(),
                    });
                    log.len() - 1
                };
                script(i, &req, addr)
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FileServer { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.uri).collect()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A transport that serves `https://files.test/...` from the file server
/// (a public-looking name mapped to loopback), logs every URL it is asked
/// for, and refuses every other host without connecting anywhere.
fn mapped_transport(
    server: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
) -> impl tower::Service<
    http::Request<Full<Bytes>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = goenhance_jobs::BoxError,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static {
    let inner = HyperTransport::new();
    tower::service_fn(move |mut req: http::Request<Full<Bytes>>| {
        let (inner, asked) = (inner.clone(), Arc::clone(&asked));
        async move {
            asked.lock().unwrap().push(req.uri().to_string());
            if req.uri().host() != Some("files.test") {
                return Err::<_, goenhance_jobs::BoxError>(
                    format!("the test transport does not connect to {}", req.uri()).into(),
                );
            }
            let path = req.uri().path_and_query().unwrap().as_str().to_owned();
            *req.uri_mut() = format!("http://{server}{path}").parse().unwrap();
            inner.oneshot(req).await.map_err(Into::into)
        }
    })
}

fn client(retry: RetryPolicy) -> Client {
    Client::builder()
        .api_key(KEY)
        .retry_policy(
            retry
                .initial_backoff(Duration::from_millis(1))
                .jitter(Jitter::None),
        )
        .build()
        .unwrap()
}

fn mapped_client(server: &FileServer, asked: &Arc<Mutex<Vec<String>>>) -> Client {
    Client::builder()
        .api_key(KEY)
        .retry_policy(RetryPolicy::default().initial_backoff(Duration::from_millis(1)))
        .transport(mapped_transport(server.addr, Arc::clone(asked)))
        .build()
        .unwrap()
}

fn output(url: impl Into<String>) -> JobOutput {
    JobOutput::new(OutputKind::Video, url)
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn redirect(location: &[u8]) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", http::HeaderValue::from_bytes(location).unwrap())
        .body(Body::empty())
        .unwrap()
}

fn file(data: &'static [u8]) -> Response {
    Response::builder()
        .header("content-length", data.len())
        .body(Body::from(data))
        .unwrap()
}

#[tokio::test]
async fn a_redirect_from_https_to_plain_http_on_loopback_is_refused() {
    let server = FileServer::start(|i, _, addr| match i {
        0 => redirect(format!("http://{addr}/plain.mp4").as_bytes()),
        _ => file(b"the plain http host got the request"),
    })
    .await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let err = mapped_client(&server, &asked)
        .download(
            &output("https://files.test/out.mp4?sig=1"),
            dir.path().join("out.mp4"),
        )
        .await
        .unwrap_err();
    assert!(err.is_http(), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(err.status(), Some(StatusCode::FOUND));
    assert_eq!(
        err.to_string(),
        "http status 302 found: redirect refused: target leaves https for http"
    );
    assert_eq!(*asked.lock().unwrap(), ["https://files.test/out.mp4?sig=1"]);
    assert_eq!(server.paths(), ["/out.mp4?sig=1"]);
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused_before_any_connection() {
    let server = FileServer::start(|i, _, _| match i {
        0 => redirect(b"https://10.0.0.1/internal/out.mp4"),
        1 => redirect(b"https://169.254.169.254/latest/meta-data/"),
        _ => file(b"unreachable"),
    })
    .await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let client = mapped_client(&server, &asked);
    for n in 0..2 {
        let err = client
            .download(
                &output(format!("https://files.test/out-{n}.mp4")),
                dir.path().join("out.mp4"),
            )
            .await
            .unwrap_err();
        assert!(err.is_http(), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "http status 302 found: redirect refused: target is a loopback, private or link-local address"
        );
    }
    // The transport was never asked for a private address.
    assert_eq!(
        *asked.lock().unwrap(),
        [
            "https://files.test/out-0.mp4",
            "https://files.test/out-1.mp4"
        ]
    );
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn an_output_url_on_loopback_may_redirect_on_loopback() {
    let server = FileServer::start(|i, _, addr| match i {
        0 => redirect(format!("http://localhost:{}/b.mp4", addr.port()).as_bytes()),
        _ => file(b"local to local"),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let got = client(RetryPolicy::default())
        .download(&output(server.url("/a.mp4")), dir.path().join("a.mp4"))
        .await
        .unwrap();
    assert_eq!(got.bytes(), 14);
    assert_eq!(server.paths(), ["/a.mp4", "/b.mp4"]);
}

#[tokio::test]
async fn a_location_that_is_not_ascii_or_does_not_parse_is_an_error() {
    let server = FileServer::start(|i, _, _| match i {
        0 => redirect("/d\u{e9}j\u{e0}-vu.mp4".as_bytes()),
        1 => redirect(b"http://[::1/a.mp4"),
        _ => file(b"the parent folder"),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(RetryPolicy::default());
    let err = client
        .download(&output(server.url("/out/a.mp4")), dir.path().join("a.mp4"))
        .await
        .unwrap_err();
    assert!(err.is_http(), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "http status 302 found: redirect refused: location is not ascii"
    );
    let err = client
        .download(&output(server.url("/out/b.mp4")), dir.path().join("b.mp4"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "http status 302 found: redirect refused: location does not parse"
    );
    assert_eq!(server.paths(), ["/out/a.mp4", "/out/b.mp4"]);
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

/// A body of 64 KiB chunks that never ends, with no `Content-Length`.
fn endless() -> Response {
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let stream = futures_util::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
    Response::builder().body(Body::from_stream(stream)).unwrap()
}

#[tokio::test]
async fn an_endless_chunked_body_ends_at_max_bytes() {
    let server = FileServer::start(|_, _, _| endless()).await;
    let dir = tempfile::tempdir().unwrap();
    let options = DownloadOptions::new().max_bytes(3 << 20);
    let err = client(RetryPolicy::default())
        .download_with(
            &output(server.url("/endless")),
            dir.path().join("e.bin"),
            options,
        )
        .await
        .unwrap_err();
    assert!(err.is_body_too_large(), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(err.to_string(), "the output passed the 3145728 byte limit");
    assert_eq!(server.paths(), ["/endless"]);
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_declared_size_over_max_bytes_is_refused_before_writing() {
    let server = FileServer::start(|_, _, _| {
        Response::builder()
            .header("content-length", 5000)
            .body(Body::from(vec![1u8; 5000]))
            .unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&written);
    let options = DownloadOptions::new()
        .max_bytes(4999)
        .on_progress(move |p| {
            w.fetch_max(p.bytes as usize, Ordering::SeqCst);
        });
    let err = client(RetryPolicy::default())
        .download_with(&output(server.url("/big")), dir.path().join("big"), options)
        .await
        .unwrap_err();
    assert!(err.is_body_too_large(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the output is 5000 bytes, more than the 4999 byte limit"
    );
    assert_eq!(written.load(Ordering::SeqCst), 0);
    assert_eq!(server.paths(), ["/big"]);
    assert_eq!(names(dir.path()), Vec::<String>::new());

    // At the limit it is fine.
    let options = DownloadOptions::new().max_bytes(5000);
    let got = client(RetryPolicy::default())
        .download_with(&output(server.url("/big")), dir.path().join("big"), options)
        .await
        .unwrap();
    assert_eq!(got.bytes(), 5000);
}

/// Version `v` of a 100,000-byte file.
fn version(v: u8) -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 251) as u8 ^ v).collect()
}

#[tokio::test]
async fn a_206_of_another_etag_starts_over() {
    // The cut comes once the client has the first 40,000 bytes.
    let got_head = Arc::new(tokio::sync::Notify::new());
    let cut = Arc::clone(&got_head);
    let server = FileServer::start(move |i, req, _| {
        let res = Response::builder()
            .header("accept-ranges", "bytes")
            .header("content-type", "video/mp4");
        match i {
            // Version 1, cut after 40,000 bytes.
            0 => {
                let head = Bytes::from(version(1)[..40_000].to_vec());
                let cut = Arc::clone(&cut);
                let stream = futures_util::stream::once(async move { Ok(head) }).chain(
                    futures_util::stream::once(async move {
                        cut.notified().await;
                        Err(std::io::Error::other("cut"))
                    }),
                );
                res.header("etag", "\"v1\"")
                    .header("content-length", 100_000)
                    .body(Body::from_stream(stream))
                    .unwrap()
            }
            // A server that ignores If-Range: the rest of version 2.
            1 if req.headers().get("range").is_some() => res
                .status(StatusCode::PARTIAL_CONTENT)
                .header("etag", "\"v2\"")
                .header("content-range", "bytes 40000-99999/100000")
                .header("content-length", 60_000)
                .body(Body::from(version(2)[40_000..].to_vec()))
                .unwrap(),
            _ => res
                .header("etag", "\"v2\"")
                .header("content-length", 100_000)
                .body(Body::from(version(2)))
                .unwrap(),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("v.mp4");
    let options = DownloadOptions::new().on_progress(move |p| {
        if p.bytes == 40_000 {
            got_head.notify_one();
        }
    });
    let got = client(RetryPolicy::default())
        .download_with(&output(server.url("/v.mp4")), &target, options)
        .await
        .unwrap();
    assert_eq!(got.bytes(), 100_000);
    assert!(std::fs::read(&target).unwrap() == version(2));
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].headers["range"], "bytes=40000-");
    assert_eq!(seen[1].headers["if-range"], "\"v1\"");
    // Started over: the whole file, no range.
    assert_eq!(seen[2].headers.get("range"), None);
    assert_eq!(names(dir.path()), ["v.mp4"]);
}

#[tokio::test]
async fn downloads_draw_on_a_retry_budget_of_their_own() {
    // Three 503s, then the file.
    let server = FileServer::start(|i, _, _| match i {
        0..=2 => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::empty())
            .unwrap(),
        _ => file(b"finally"),
    })
    .await;
    // A poll budget that pays for one retry (10 tokens, 5 a retry... and
    // one kept back): the polls' budget would stop the second retry.
    let polls = Arc::new(TokenBucket::new(9, 5, 10));
    let client = client(RetryPolicy::default().shared_budget(polls.clone()));
    let dir = tempfile::tempdir().unwrap();
    let got = client
        .download(&output(server.url("/f")), dir.path().join("f"))
        .await
        .unwrap();
    assert_eq!(got.bytes(), 7);
    assert_eq!(server.paths().len(), 4);
    // The polls' budget was not touched.
    assert_eq!(polls.available(), 9);
}

#[test]
fn the_defaults_are_a_thirty_minute_deadline_and_eight_gib() {
    assert_eq!(
        format!("{:?}", DownloadOptions::new()),
        "DownloadOptions { progress: false, idle_timeout: None, deadline: 1800s, max_bytes: 8589934592 }"
    );
    assert_eq!(
        goenhance_jobs::download::DEFAULT_DEADLINE,
        Duration::from_secs(30 * 60)
    );
    assert_eq!(goenhance_jobs::download::DEFAULT_MAX_BYTES, 8 << 30);
}

#[tokio::test]
async fn size_settings_at_their_extremes_neither_panic_nor_refuse() {
    let server = FileServer::start(|_, _, _| file(b"extreme")).await;
    let client = Client::builder()
        .api_key(KEY)
        .max_downloads(usize::MAX)
        .max_in_flight(usize::MAX)
        .max_body_size(usize::MAX)
        .attempt_timeout(Duration::MAX)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = DownloadOptions::new()
        .max_bytes(u64::MAX)
        .deadline(Duration::MAX)
        .idle_timeout(Duration::MAX);
    let got = client
        .download_with(&output(server.url("/x")), dir.path().join("x"), options)
        .await
        .unwrap();
    assert_eq!(got.bytes(), 7);
    // And at the other end: no slot at all is one slot; nothing allowed
    // is nothing written.
    let client = Client::builder()
        .api_key(KEY)
        .max_downloads(0)
        .max_in_flight(0)
        .build()
        .unwrap();
    let got = client
        .download(&output(server.url("/x")), dir.path().join("y"))
        .await
        .unwrap();
    assert_eq!(got.bytes(), 7);
    let err = client
        .download_with(
            &output(server.url("/x")),
            dir.path().join("z"),
            DownloadOptions::new().max_bytes(0),
        )
        .await
        .unwrap_err();
    assert!(err.is_body_too_large());
    assert_eq!(names(dir.path()), ["x", "y"]);
}

mod deadline {
    //! The whole download's deadline, on tokio's paused clock, through an
    //! in-memory storage host that drips bytes just faster than the idle
    //! timeout.
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type DripBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;
    type Answer = std::future::Ready<Result<http::Response<DripBody>, Infallible>>;

    /// One byte every 5 s, of a 1,000-byte file.
    fn dripping() -> impl tower::Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<DripBody>,
        Error = Infallible,
        Future = Answer,
    > + Clone
           + Send
           + Sync
           + 'static {
        tower::service_fn(|_req: http::Request<Full<Bytes>>| {
            let drip = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Some((
                    Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"x"))),
                    (),
                ))
            })
            .take(1000);
            let res = http::Response::builder()
                .header("content-length", "1000")
                .body(StreamBody::new(drip).boxed_unsync())
                .unwrap();
            std::future::ready(Ok(res))
        })
    }

    fn dripping_client() -> Client {
        Client::builder()
            .api_key(KEY)
            .transport(dripping())
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripping_host_ends_at_the_default_deadline_of_thirty_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let started = tokio::time::Instant::now();
        let err = dripping_client()
            .download(
                &output("https://cdn.example/drip.mp4"),
                dir.path().join("drip.mp4"),
            )
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(30 * 60));
        assert!(err.is_deadline(), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "deadline reached: the download took longer than its deadline of 1800s"
        );
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_can_be_set() {
        let dir = tempfile::tempdir().unwrap();
        let started = tokio::time::Instant::now();
        let err = dripping_client()
            .download_with(
                &output("https://cdn.example/drip.mp4"),
                dir.path().join("drip.mp4"),
                DownloadOptions::new().deadline(Duration::from_secs(62)),
            )
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(62));
        assert!(err.is_deadline(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "deadline reached: the download took longer than its deadline of 62s"
        );
    }
}
