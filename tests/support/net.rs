//! Real parts on loopback for transport tests: certificates made on the
//! spot (rcgen), an HTTPS server (tokio-rustls + hyper) answering the job
//! detail, a server that closes every connection after one answer, and a
//! small CONNECT proxy that records what it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use goenhance_jobs::{Client, HyperTransport, RetryPolicy};
#[cfg(feature = "rustls")]
use goenhance_jobs::{Proxy, TlsRoots};
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use super::KEY;

/// The detail body the servers answer for job `id`.
pub fn detail_json(id: &str) -> String {
    format!(
        r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{id}","status":"success","type":"mx-v2v","json":[{{"type":"video","value":"https://cdn.example/{id}_0.mp4"}}]}}}}"#
    )
}

/// A certificate authority made for one test.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A server certificate chain and its key.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid
    /// from 1975 to 4096.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, |_| {})
    }

    /// A server certificate for `names`, and its key, both PEM: for servers
    /// that read files.
    pub fn leaf_pem(&self, names: &[&str]) -> (String, String) {
        let (cert, key) = self.issue(names, |_| {});
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate for `names` that expired in 2021.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn leaf_with(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let (cert, key) = self.issue(names, edit);
        Leaf {
            chain: vec![cert.der().clone(), self.ca.der().clone()],
            key_der: key.serialize_der(),
        }
    }
}

impl Pki {
    /// A server certificate for `names`, edited by `edit`, signed by the CA.
    fn issue(
        &self,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "test server");
        params.use_authority_key_identifier_extension = true;
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert, key)
    }
}

fn server_config(leaf: &Leaf, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(leaf.chain.clone(), key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// One request as the HTTPS server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: Version,
    pub authorization: Option<String>,
    pub proxy_authorization: Option<String>,
    pub uri: String,
}

/// What a server counted.
#[derive(Debug, Default)]
pub struct Counts {
    /// TCP connections accepted.
    pub accepts: AtomicUsize,
    /// TLS handshakes completed.
    pub handshakes: AtomicUsize,
    /// Requests answered.
    pub requests: AtomicUsize,
    /// Requests read and dropped unanswered.
    pub dropped: AtomicUsize,
    pub seen: Mutex<Vec<Seen>>,
}

impl Counts {
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A loopback server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Server {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// An HTTPS server answering the job detail over HTTP/1.1 or HTTP/2, as
/// `alpn` offers (`b"h2"`, `b"http/1.1"`). The first `cut` connections are
/// dropped after the client's first bytes, as a network cutting the
/// handshake would.
pub async fn https_server(leaf: &Leaf, alpn: &[&[u8]], cut: usize) -> Server {
    let listener = listen().await;
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config(leaf, alpn));
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let n = c.accepts.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let c = c.clone();
            tokio::spawn(async move {
                if n < cut {
                    let mut buf = [0u8; 64];
                    let _ = tcp.read(&mut buf).await;
                    return;
                }
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                c.handshakes.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let c = c.clone();
                    async move { Ok::<_, Infallible>(answer(&c, &req)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Server { addr, counts, task }
}

fn answer(counts: &Counts, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    counts.seen.lock().unwrap().push(Seen {
        version: req.version(),
        authorization: req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned()),
        proxy_authorization: req
            .headers()
            .get(http::header::PROXY_AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned()),
        uri: req.uri().to_string(),
    });
    let id = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("img_uuid=")))
        .unwrap_or("none");
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(detail_json(id))))
        .unwrap()
}

/// When a [`one_answer_server`] closes a connection after its one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Right after the answer.
    AfterAnswer,
    /// When the next request arrives, unanswered: the close crosses the
    /// request on the wire. Such requests are counted in `Counts::dropped`.
    OnNextRequest,
}

/// A server that answers one request a connection, keep-alive and all (no
/// `Connection: close`), then closes the connection as `close` says: plain
/// HTTP/1.1, or HTTPS when given a leaf.
pub async fn one_answer_server(leaf: Option<&Leaf>, close: Close) -> Server {
    let listener = listen().await;
    let addr = listener.local_addr().unwrap();
    let acceptor = leaf.map(|l| TlsAcceptor::from(server_config(l, &[b"http/1.1"])));
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            c.accepts.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let c = c.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            c.handshakes.fetch_add(1, Ordering::SeqCst);
                            answer_once_and_close(tls, &c, close).await;
                        }
                    }
                    None => answer_once_and_close(tcp, &c, close).await,
                }
            });
        }
    });
    Server { addr, counts, task }
}

async fn answer_once_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    counts: &Counts,
    close: Close,
) {
    let Some(head) = read_head(&mut io).await else {
        return;
    };
    let first = head.lines().next().unwrap_or_default().to_owned();
    // GET /api/v1/jobs/detail?img_uuid=ID HTTP/1.1
    let id = first
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once("img_uuid="))
        .map(|(_, id)| id.split('&').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let body = detail_json(&id);
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = io.write_all(response.as_bytes()).await;
    let _ = io.flush().await;
    if close == Close::OnNextRequest && read_head(&mut io).await.is_some() {
        counts.dropped.fetch_add(1, Ordering::SeqCst);
    }
    let _ = io.shutdown().await;
}

/// Reads up to the end of a request or response head; `None` on EOF first.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if io.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The API host proxy tests name: only the proxy can reach it (it sends
/// every tunnel to the loopback server), and `.test` never resolves, so a
/// request that skipped the proxy could not reach anything.
pub const API_HOST: &str = "api.goenhance.test";

/// A transport trusting only `pki`'s CA, through `proxy`.
#[cfg(feature = "rustls")]
pub fn proxy_transport(pki: &Pki, proxy: Proxy) -> HyperTransport {
    HyperTransport::builder()
        .tls_roots(TlsRoots::None)
        .root_certificates_pem(pki.ca_pem().as_bytes())
        .unwrap()
        .proxy(proxy)
        .build()
}

/// A client of `base` over `transport`, with the test key and no retries.
pub fn no_retry_client(base: &str, transport: HyperTransport) -> Client {
    Client::builder()
        .base_url(base)
        .api_key(KEY)
        .retry_policy(RetryPolicy::never())
        .transport(transport)
        .build()
        .unwrap()
}

/// A CONNECT proxy on loopback that sends every tunnel to `target`,
/// whatever host it names, and records every byte it receives before the
/// tunnel is open. With `credentials` (`Basic …`), it wants that
/// `Proxy-Authorization` and answers 407 otherwise.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    /// Everything received before each tunnel opened (or was refused).
    pub heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl ConnectProxy {
    pub async fn start(target: SocketAddr, credentials: Option<&str>) -> ConnectProxy {
        let listener = listen().await;
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (accepts.clone(), heads.clone());
        let credentials = credentials.map(str::to_owned);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                let credentials = credentials.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut client).await else {
                        return;
                    };
                    h.lock().unwrap().push(head.clone());
                    if !head.starts_with("CONNECT ") {
                        let _ = client
                            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    if let Some(want) = credentials {
                        if header(&head, "proxy-authorization").as_deref() != Some(want.as_str()) {
                            let _ = client
                                .write_all(
                                    b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                                      proxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n",
                                )
                                .await;
                            return;
                        }
                    }
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        let _ = client
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    };
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        ConnectProxy {
            addr,
            accepts,
            heads,
            task,
        }
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of header `name` in a raw head, if present.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A TCP forwarder to `target` that can go silent: every connection open at
/// that moment stops carrying bytes either way (as a NAT or load balancer
/// that dropped it without a word), while the forwarder still notices when
/// the client closes it.
pub struct Forwarder {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    silent: Arc<Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>>,
    closed: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(target: SocketAddr) -> Forwarder {
        let listener = listen().await;
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let silent = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(tokio::sync::Notify::new());
        let (a, s, c) = (accepts.clone(), silent.clone(), closed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = TcpStream::connect(target).await else {
                    return;
                };
                let quiet = Arc::new(std::sync::atomic::AtomicBool::new(false));
                s.lock().unwrap().push(quiet.clone());
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let (q, c) = (quiet.clone(), c.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                c.notify_one();
                                return;
                            }
                            Ok(n) => {
                                if !q.load(Ordering::SeqCst) {
                                    let _ = uw.write_all(&buf[..n]).await;
                                }
                            }
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if !quiet.load(Ordering::SeqCst)
                                    && cw.write_all(&buf[..n]).await.is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Forwarder {
            addr,
            accepts,
            silent,
            closed,
            task,
        }
    }

    /// Every connection open now stops carrying bytes.
    pub fn go_silent(&self) {
        for quiet in self.silent.lock().unwrap().iter() {
            quiet.store(true, Ordering::SeqCst);
        }
    }

    /// Resolves when a client has closed one of its connections.
    pub async fn client_closed(&self) {
        self.closed.notified().await;
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
