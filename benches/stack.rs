//! Throughput of the full client stack against a raw hyper-util client and
//! reqwest, all three hitting one loopback server in the same run.
//!
//! ```text
//! cargo bench --bench stack --features fake -- [--rounds N] [--requests N]
//!     [--concurrency N] [--only stack,typed,minimal,raw,reqwest] [--current-thread] [--tls]
//! ```
//!
//! `--tls` serves HTTPS instead (tokio-rustls, a CA and certificate made
//! by rcgen at start, HTTP/1.1 by ALPN): `stack` trusts that CA through
//! `root_certificates_pem`, `raw` is hyper-util over hyper-rustls with the
//! same rustls settings (ring, the same roots, ALPN h2 + http/1.1), and
//! `reqwest` (built without TLS) and `minimal` are left out.
//!
//! - `stack`: `Client::builder().base_url(..).api_key(..).build()` then
//!   `client.get(id)`: auth, retry, timeout, body cap and decoding into
//!   `JobDetail`, over the default `HyperTransport`.
//! - `typed`: hyper-util's legacy client, the same GET with the same
//!   headers, the body collected and decoded into a `#[derive(Deserialize)]`
//!   struct of the API's fields (times and all as strings): what users
//!   write by hand, the baseline.
//! - `minimal`: the least a client can do: hyper-util's legacy client with
//!   its plain HTTP connector and default settings, the request URI parsed
//!   once, one header (`Authorization`), the body decoded into the same
//!   derived struct. HTTP only: left out with `--tls`.
//! - `raw`: the same as `typed`, decoded into `serde_json::Value` instead (slower than
//!   a derived struct; kept to compare with earlier runs).
//! - `reqwest`: reqwest (http only), `.json::<serde_json::Value>()`.
//!
//! With feature `metrics`, `--only stack,metered` measures what recording
//! metrics costs: `metered` is the same `stack` client with a Prometheus
//! recorder (metrics-exporter-prometheus) taking every metric, `stack` the
//! same with no recorder taking them. One recorder is installed for the
//! whole run behind a switch that is on only during `metered` rounds (off,
//! it hands out no-op handles, as no recorder does); its upkeep runs
//! between rounds, outside the timed part.
//!
//! ```text
//! cargo bench --bench stack --features fake,metrics -- --only stack,metered
//! ```
//!
//! Diagnostics, only with `--only`: `bare` (`JobStatusService` over
//! `AuthLayer` over `HyperTransport`, cloned per call), `timeout` (the same
//! under `TimeoutLayer`), `retry` (under `RetryLayer` too: the client's stack
//! without `Client::get` and the boxing).
//!
//! The clients run in alternation (`rounds` rounds; the order rotates each
//! round), each round a fixed number of requests spread over `concurrency`
//! caller tasks. The server is a minimal hyper HTTP/1.1 server answering
//! `success.json` of the API reference (embedded below), and checks
//! the path, the query and the key, so every client must send them.
//!
//! Besides requests per second, each round records the CPU time all threads
//! of the process spent (`/proc/self/task/*/schedstat`), client and server
//! together: on a busy machine CPU per request is steadier than wall-clock
//! throughput. Its ratio is given the same way up (raw CPU / client CPU, so
//! above 1 means cheaper than raw).
//!
//! By default everything shares one two-worker tokio runtime (the machine
//! has two cores), so throughput is bounded by the CPU that client and
//! server together spend per request. `--current-thread` runs all of it on
//! one thread: slower, but deterministic enough to count instructions under
//! `valgrind --tool=callgrind` (run one client at a time with `--only`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use goenhance_jobs::auth::AddAuthorization;
use goenhance_jobs::retry::Retry;
use goenhance_jobs::timeout::{Timeout, DEFAULT_ATTEMPT_TIMEOUT};
use goenhance_jobs::{
    AuthLayer, Client, HyperTransport, JobDetail, JobQuery, JobStatus, JobStatusService, Proxy,
    RetryLayer, RetryPolicy, TimeoutLayer, TlsRoots,
};
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

const KEY: &str = "sk-bench-0123456789abcdef";
const ID: &str = "37c82d82-8765-4031-8cb3-722df8a668e6";
/// `fixtures/success.json` of the API reference, verbatim.
const BODY: &[u8] = br#"{"code":0,"msg":"Success","data":{"img_uuid":"37c82d82-8765-4031-8cb3-722df8a668e6","status":"success","type":"mx-image-face-swap","start_time":"2024-10-11T10:55:32.596Z","end_time":"2024-10-11T10:56:00.338Z","model_id":"-1","json":[{"type":"image","value":"https://openapi-static.goenhance.ai/user/2024/10/11/9dfdb4b5-7ef7-4fe7-93ff-b9eb76cc431d_0.jpg?q-sign-algorithm=sha1&q-sign-time=1728644159;1728687359&q-key-time=1728644159;1728687359&q-header-list=host&q-url-param-list=&q-signature=cd1e9c6ef14d36c1e034d6bd3a3fe1aaee41b15f"}],"job_type":"mx-image-face-swap"}}"#;
const PATH_AND_QUERY: &str = "/api/v1/jobs/detail?img_uuid=37c82d82-8765-4031-8cb3-722df8a668e6";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Stack,
    Typed,
    Minimal,
    Raw,
    Reqwest,
    /// `Stack` with a metrics recorder taking every metric.
    Metered,
    // Diagnostics, not run by default: the stack's pieces built by hand.
    Bare,
    Timeout,
    Retry,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stack => "stack",
            Kind::Typed => "typed",
            Kind::Minimal => "minimal",
            Kind::Raw => "raw",
            Kind::Reqwest => "reqwest",
            Kind::Metered => "metered",
            Kind::Bare => "bare",
            Kind::Timeout => "timeout",
            Kind::Retry => "retry",
        }
    }
}

struct Args {
    rounds: usize,
    requests: usize,
    concurrency: usize,
    only: Vec<Kind>,
    current_thread: bool,
    tls: bool,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 6,
        requests: 20_000,
        concurrency: 32,
        only: vec![
            Kind::Stack,
            Kind::Typed,
            Kind::Minimal,
            Kind::Raw,
            Kind::Reqwest,
        ],
        current_thread: false,
        tls: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--rounds" => a.rounds = num("--rounds"),
            "--requests" => a.requests = num("--requests"),
            "--concurrency" => a.concurrency = num("--concurrency"),
            "--current-thread" => a.current_thread = true,
            "--tls" => a.tls = true,
            "--only" => {
                let list = it.next().expect("--only needs a list");
                a.only = list
                    .split(',')
                    .map(|k| match k {
                        "stack" => Kind::Stack,
                        "typed" => Kind::Typed,
                        "minimal" => Kind::Minimal,
                        "raw" => Kind::Raw,
                        "reqwest" => Kind::Reqwest,
                        "metered" if cfg!(feature = "metrics") => Kind::Metered,
                        "bare" => Kind::Bare,
                        "timeout" => Kind::Timeout,
                        "retry" => Kind::Retry,
                        other => panic!("unknown client {other}"),
                    })
                    .collect();
            }
            // `cargo bench` passes `--bench`; filters and other flags are ignored.
            _ => {}
        }
    }
    a
}

/// Requests the server refused (bad path, query or key): must stay 0.
static REFUSED: AtomicU64 = AtomicU64::new(0);

async fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    let body = Bytes::from_static(BODY);
    let auth = HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let auth = auth.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let ok = req.headers().get(AUTHORIZATION) == Some(&auth)
                    && req.uri().path_and_query().map(|p| p.as_str()) == Some(PATH_AND_QUERY);
                let res = if ok {
                    let mut res = Response::new(Full::new(body.clone()));
                    res.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    res
                } else {
                    REFUSED.fetch_add(1, Ordering::Relaxed);
                    let mut res = Response::new(Full::new(Bytes::from_static(
                        br#"{"code":401,"msg":"unauthorized","data":null}"#,
                    )));
                    *res.status_mut() = StatusCode::UNAUTHORIZED;
                    res
                };
                async move { Ok::<_, Infallible>(res) }
            });
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        REFUSED.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }
                None => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }
            }
        });
    }
}

/// The baseline: hyper-util's legacy client, configured as `HyperTransport`
/// is (pooled, `TCP_NODELAY`, 32 idle connections per host), the request
/// built per call from the URL string with the same three headers.
#[derive(Clone)]
struct Raw {
    client: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: Arc<str>,
    auth: HeaderValue,
    accept: HeaderValue,
    user_agent: HeaderValue,
}

impl Raw {
    /// With `ca_pem`, HTTPS trusting only that CA, set up as
    /// `HyperTransport` sets up rustls.
    fn new(base: &str, ca_pem: Option<&str>) -> Raw {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = ca_pem {
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(32)
            .build(https);
        let mut auth = HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap();
        auth.set_sensitive(true);
        Raw {
            client,
            base: base.into(),
            auth,
            accept: HeaderValue::from_static("application/json"),
            user_agent: HeaderValue::from_static("goenhance-jobs/0.1.0"),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, id: &str) -> T {
        let req = Request::get(format!("{}/api/v1/jobs/detail?img_uuid={id}", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, self.accept.clone())
            .header(USER_AGENT, self.user_agent.clone())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = self.client.request(req).await.expect("raw request");
        assert!(res.status().is_success(), "raw: {}", res.status());
        let body = res
            .into_body()
            .collect()
            .await
            .expect("raw body")
            .to_bytes();
        serde_json::from_slice(&body).expect("raw decode")
    }
}

#[path = "common/typed.rs"]
mod typed;
use typed::Envelope;

/// The least a client can do: hyper-util's legacy client with its plain
/// HTTP connector and default settings, the URI parsed once, one header.
#[derive(Clone)]
struct Minimal {
    client: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
    auth: HeaderValue,
}

impl Minimal {
    fn new(base: &str) -> Minimal {
        Minimal {
            client: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
            uri: format!("{base}{PATH_AND_QUERY}").parse().unwrap(),
            auth: HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap(),
        }
    }

    async fn get(&self) -> Envelope {
        let req = Request::get(self.uri.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = self.client.request(req).await.expect("minimal request");
        assert!(res.status().is_success(), "minimal: {}", res.status());
        let body = res
            .into_body()
            .collect()
            .await
            .expect("minimal body")
            .to_bytes();
        serde_json::from_slice(&body).expect("minimal decode")
    }
}

#[derive(Clone)]
struct Reqwest {
    client: reqwest::Client,
    base: Arc<str>,
}

impl Reqwest {
    fn new(base: &str) -> Reqwest {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(32)
            .build()
            .unwrap();
        Reqwest {
            client,
            base: base.into(),
        }
    }

    async fn get(&self, id: &str) -> serde_json::Value {
        let res = self
            .client
            .get(format!("{}/api/v1/jobs/detail?img_uuid={id}", self.base))
            .bearer_auth(KEY)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "goenhance-jobs/0.1.0")
            .send()
            .await
            .expect("reqwest request");
        assert!(res.status().is_success(), "reqwest: {}", res.status());
        res.json().await.expect("reqwest decode")
    }
}

type Bare = JobStatusService<AddAuthorization<HyperTransport>>;

#[derive(Clone)]
struct Clients {
    stack: Client,
    raw: Raw,
    minimal: Minimal,
    reqwest: Reqwest,
    bare: Bare,
    timeout: Timeout<Bare>,
    retry: Retry<Timeout<Bare>>,
}

async fn by_hand<S>(svc: &S) -> JobDetail
where
    S: tower::Service<JobQuery, Response = JobDetail, Error = goenhance_jobs::Error> + Clone,
{
    let q = JobQuery::new(ID).unwrap();
    svc.clone().oneshot(q).await.expect("by hand")
}

/// One request by client `kind`; panics on any failure so a broken client
/// cannot look fast.
async fn one(clients: &Clients, kind: Kind) {
    match kind {
        Kind::Stack | Kind::Metered => {
            let d = clients.stack.get(ID).await.expect("stack get");
            debug_assert_eq!(d.status(), &JobStatus::Succeeded);
            std::hint::black_box(d);
        }
        Kind::Typed => {
            let e: Envelope = clients.raw.get(ID).await;
            debug_assert_eq!(e.data.as_ref().unwrap().status, "success");
            std::hint::black_box(e);
        }
        Kind::Minimal => {
            let e = clients.minimal.get().await;
            debug_assert_eq!(e.data.as_ref().unwrap().status, "success");
            std::hint::black_box(e);
        }
        Kind::Raw => {
            let v: serde_json::Value = clients.raw.get(ID).await;
            debug_assert_eq!(v["data"]["status"], "success");
            std::hint::black_box(v);
        }
        Kind::Reqwest => {
            let v = clients.reqwest.get(ID).await;
            debug_assert_eq!(v["data"]["status"], "success");
            std::hint::black_box(v);
        }
        Kind::Bare => {
            std::hint::black_box(by_hand(&clients.bare).await);
        }
        Kind::Timeout => {
            std::hint::black_box(by_hand(&clients.timeout).await);
        }
        Kind::Retry => {
            std::hint::black_box(by_hand(&clients.retry).await);
        }
    }
}

/// CPU time used so far by all threads of this process (client and server
/// alike), from `/proc/self/task/*/schedstat`; 0 where that is missing.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `requests` requests by `concurrency` callers; the elapsed time and the
/// CPU time spent.
async fn round(
    clients: &Clients,
    kind: Kind,
    requests: usize,
    concurrency: usize,
) -> (Duration, u64) {
    #[cfg(feature = "metrics")]
    metered::switch(kind == Kind::Metered);
    let left = Arc::new(AtomicUsize::new(requests));
    let cpu = cpu_ns();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let clients = clients.clone();
        let left = Arc::clone(&left);
        tasks.spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                one(&clients, kind).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("caller task");
    }
    let took = (start.elapsed(), cpu_ns().saturating_sub(cpu));
    #[cfg(feature = "metrics")]
    metered::upkeep();
    took
}

/// The recorder behind a switch, for `metered` rounds.
#[cfg(feature = "metrics")]
mod metered {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

    static ON: AtomicBool = AtomicBool::new(false);
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

    struct Switch(PrometheusRecorder);

    impl Recorder for Switch {
        fn describe_counter(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
            self.0.describe_counter(key, unit, text)
        }
        fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
            self.0.describe_gauge(key, unit, text)
        }
        fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
            self.0.describe_histogram(key, unit, text)
        }
        fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
            if ON.load(Ordering::Relaxed) {
                self.0.register_counter(key, metadata)
            } else {
                Counter::noop()
            }
        }
        fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
            if ON.load(Ordering::Relaxed) {
                self.0.register_gauge(key, metadata)
            } else {
                Gauge::noop()
            }
        }
        fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
            if ON.load(Ordering::Relaxed) {
                self.0.register_histogram(key, metadata)
            } else {
                Histogram::noop()
            }
        }
    }

    /// Turns recording on or off (installing the recorder the first time).
    pub(super) fn switch(on: bool) {
        HANDLE.get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(Switch(recorder)).expect("one recorder");
            goenhance_jobs::telemetry::describe();
            handle
        });
        ON.store(on, Ordering::Relaxed);
    }

    /// The exporter's upkeep (histograms drained), as a program runs it on
    /// a timer; and a check that the metered rounds were recorded.
    pub(super) fn upkeep() {
        if let Some(handle) = HANDLE.get() {
            if ON.load(Ordering::Relaxed) {
                handle.run_upkeep();
                let text = handle.render();
                assert!(
                    text.contains("http_client_request_duration_count"),
                    "the metered round recorded nothing"
                );
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A TLS acceptor for `localhost` with a certificate from a CA made here,
/// offering HTTP/1.1 by ALPN; and that CA, PEM.
fn tls_server() -> (tokio_rustls::TlsAcceptor, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

async fn run(mut a: Args) {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (base, acceptor, ca_pem) = if a.tls {
        let (acceptor, ca_pem) = tls_server();
        (
            format!("https://localhost:{port}"),
            Some(acceptor),
            Some(ca_pem),
        )
    } else {
        (format!("http://127.0.0.1:{port}"), None, None)
    };
    tokio::spawn(serve(listener, acceptor));

    let transport = || match &ca_pem {
        Some(pem) => HyperTransport::builder()
            .tls_roots(TlsRoots::None)
            .root_certificates_pem(pem.as_bytes())
            .unwrap()
            .proxy(Proxy::none())
            .build(),
        None => HyperTransport::new(),
    };
    let bare = || JobStatusService::new(&base, AuthLayer::bearer(KEY).layer(transport())).unwrap();
    let clients = Clients {
        stack: Client::builder()
            .base_url(&base)
            .api_key(KEY)
            .transport(transport())
            .build()
            .unwrap(),
        raw: Raw::new(&base, ca_pem.as_deref()),
        minimal: Minimal::new(&base),
        reqwest: Reqwest::new(&base),
        bare: bare(),
        timeout: TimeoutLayer::new(DEFAULT_ATTEMPT_TIMEOUT).layer(bare()),
        retry: RetryLayer::new(RetryPolicy::default())
            .layer(TimeoutLayer::new(DEFAULT_ATTEMPT_TIMEOUT).layer(bare())),
    };

    // Check each client once, then warm the pools and the allocator.
    let d = clients.stack.get(ID).await.expect("stack get");
    assert_eq!(d.status(), &JobStatus::Succeeded);
    assert_eq!(
        clients.raw.get::<serde_json::Value>(ID).await["data"]["status"],
        "success"
    );
    let e: Envelope = clients.raw.get(ID).await;
    assert_eq!(e.code, 0);
    assert_eq!(e.data.unwrap().status, "success");
    if a.tls {
        a.only.retain(|&k| k != Kind::Reqwest && k != Kind::Minimal);
    } else {
        assert_eq!(clients.reqwest.get(ID).await["data"]["status"], "success");
        assert_eq!(clients.minimal.get().await.data.unwrap().status, "success");
    }
    let warm = (a.requests / 10).max(a.concurrency);
    for &k in &a.only {
        round(&clients, k, warm, a.concurrency).await;
    }

    println!(
        "stack bench: {} rounds x {} requests, {} callers, {}",
        a.rounds,
        a.requests,
        a.concurrency,
        if a.current_thread {
            "current-thread runtime"
        } else {
            "2-worker runtime"
        }
    );
    let n = a.only.len();
    let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut total_time = vec![Duration::ZERO; n];
    let mut cpu_per_round: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut total_cpu = vec![0u64; n];
    for r in 0..a.rounds {
        let mut line = format!("round {r}:");
        for i in 0..n {
            let idx = (i + r) % n;
            let kind = a.only[idx];
            let (t, cpu) = round(&clients, kind, a.requests, a.concurrency).await;
            let rps = a.requests as f64 / t.as_secs_f64();
            per_round[idx].push(rps);
            total_time[idx] += t;
            cpu_per_round[idx].push(cpu as f64 / a.requests as f64 / 1000.0);
            total_cpu[idx] += cpu;
            line += &format!(" {}={rps:.0}/s", kind.name());
        }
        println!("{line}");
    }
    assert_eq!(
        REFUSED.load(Ordering::Relaxed),
        0,
        "the server refused requests"
    );

    println!();
    println!(
        "{:<8} {:>12} {:>14} {:>16}",
        "client", "req/s (all)", "req/s (median)", "CPU us/req (all)"
    );
    let mut overall = vec![0.0; n];
    let mut cpu_us = vec![0.0; n];
    for i in 0..n {
        overall[i] = (a.requests * a.rounds) as f64 / total_time[i].as_secs_f64();
        cpu_us[i] = total_cpu[i] as f64 / (a.requests * a.rounds) as f64 / 1000.0;
        println!(
            "{:<8} {:>12.0} {:>14.0} {:>16.2}",
            a.only[i].name(),
            overall[i],
            median(per_round[i].clone()),
            cpu_us[i],
        );
    }
    let stack = a.only.iter().position(|&k| k == Kind::Stack);
    let metered = a.only.iter().position(|&k| k == Kind::Metered);
    if let (Some(stack), Some(metered)) = (stack, metered) {
        let ratios: Vec<f64> = per_round[metered]
            .iter()
            .zip(&per_round[stack])
            .map(|(m, s)| m / s)
            .collect();
        let cpu_ratios: Vec<f64> = cpu_per_round[stack]
            .iter()
            .zip(&cpu_per_round[metered])
            .map(|(s, m)| s / m)
            .collect();
        println!();
        println!(
            "metered/stack = {:.3} (all requests), {:.3} (median of per-round ratios, min {:.3}, max {:.3})",
            overall[metered] / overall[stack],
            median(ratios.clone()),
            ratios.iter().cloned().fold(f64::INFINITY, f64::min),
            ratios.iter().cloned().fold(0.0, f64::max),
        );
        println!(
            "metered/stack by CPU time per request (stack CPU / metered CPU) = {:.3} (all), {:.3} (median of per-round ratios)",
            cpu_us[stack] / cpu_us[metered],
            median(cpu_ratios),
        );
    }
    for base in [Kind::Typed, Kind::Minimal, Kind::Raw] {
        let Some(raw) = a.only.iter().position(|&k| k == base) else {
            continue;
        };
        let b = base.name();
        println!();
        for i in 0..n {
            let shown = match base {
                Kind::Typed => true,
                // Against the least a client can do: the stack and the
                // hand-written client.
                Kind::Minimal => matches!(a.only[i], Kind::Stack | Kind::Typed),
                _ => !matches!(a.only[i], Kind::Typed | Kind::Minimal),
            };
            if i == raw || !shown {
                continue;
            }
            // Ratios of the same round, then their median: robust to a noisy
            // neighbour slowing one round down for everyone.
            let ratios: Vec<f64> = per_round[i]
                .iter()
                .zip(&per_round[raw])
                .map(|(x, r)| x / r)
                .collect();
            println!(
                "{}/{b} = {:.3} (all requests), {:.3} (median of per-round ratios, min {:.3}, max {:.3})",
                a.only[i].name(),
                overall[i] / overall[raw],
                median(ratios.clone()),
                ratios.iter().cloned().fold(f64::INFINITY, f64::min),
                ratios.iter().cloned().fold(0.0, f64::max),
            );
            let cpu_ratios: Vec<f64> = cpu_per_round[raw]
                .iter()
                .zip(&cpu_per_round[i])
                .map(|(r, x)| r / x)
                .collect();
            println!(
                "{}/{b} by CPU time per request ({b} CPU / {} CPU) = {:.3} (all), {:.3} (median of per-round ratios)",
                a.only[i].name(),
                a.only[i].name(),
                cpu_us[raw] / cpu_us[i],
                median(cpu_ratios),
            );
        }
    }
}

fn main() {
    let a = args();
    let rt = if a.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    rt.block_on(run(a));
}
