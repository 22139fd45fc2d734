//! Through a CONNECT proxy on loopback: an explicit proxy, credentials,
//! exceptions that go direct, plain-http targets, and the proxy from the
//! environment (in the command-line tool, a child process, so no variable
//! leaks into other tests). The proxy records everything it receives before
//! the tunnel opens: a `CONNECT` and nothing else, never the API key.
#![cfg(all(feature = "rustls", feature = "fake"))]

mod support;

use goenhance_jobs::{ErrorKind, HyperTransport, JobStatus, Proxy};
use http::Version;
use support::{
    https_server, no_retry_client as client, one_answer_server, proxy_transport as transport,
    Close, ConnectProxy, Pki, API_HOST, KEY,
};

fn connect_head(authority: &str, extra: &str) -> String {
    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n")
}

#[tokio::test]
async fn the_proxy_sees_the_connect_and_nothing_else() {
    let pki = Pki::new("test CA proxy");
    let server = https_server(&pki.leaf(&[API_HOST]), &[b"h2", b"http/1.1"], 0).await;
    let proxy = ConnectProxy::start(server.addr, None).await;
    let client = client(
        &format!("https://{API_HOST}"),
        transport(&pki, Proxy::url(&proxy.url()).unwrap()),
    );

    for id in ["p-1", "p-2"] {
        let job = client.get(id).await.unwrap();
        assert_eq!(job.status(), &JobStatus::Succeeded);
        assert_eq!(job.img_uuid(), id);
    }
    // One tunnel, kept in the pool; the proxy got exactly the CONNECT.
    assert_eq!(proxy.accepts(), 1);
    assert_eq!(proxy.heads(), [connect_head("api.goenhance.test:443", "")]);
    // The key went through the tunnel, inside TLS, over HTTP/2.
    let seen = server.counts.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.version, Version::HTTP_2);
        assert_eq!(s.authorization.as_deref(), Some(&*format!("Bearer {KEY}")));
    }
}

#[tokio::test]
async fn proxy_credentials_go_on_the_connect_only() {
    let pki = Pki::new("test CA proxy auth");
    let server = https_server(&pki.leaf(&[API_HOST]), &[b"http/1.1"], 0).await;
    let proxy = ConnectProxy::start(server.addr, Some("Basic YWxpY2U6czNjckB0")).await;
    // "s3cr@t", percent-encoded in the URL.
    let url = format!("http://alice:s3cr%40t@{}", proxy.addr);
    let client = client(
        &format!("https://{API_HOST}:8443"),
        transport(&pki, Proxy::url(&url).unwrap()),
    );

    let job = client.get("auth-1").await.unwrap();
    assert_eq!(job.status(), &JobStatus::Succeeded);
    assert_eq!(
        proxy.heads(),
        [connect_head(
            "api.goenhance.test:8443",
            "Proxy-Authorization: Basic YWxpY2U6czNjckB0\r\n"
        )]
    );
    let seen = server.counts.seen();
    assert_eq!(seen[0].proxy_authorization, None, "not sent to the server");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
}

#[tokio::test]
async fn refused_proxy_credentials_are_never_shown() {
    let pki = Pki::new("test CA proxy refused");
    let server = https_server(&pki.leaf(&[API_HOST]), &[b"http/1.1"], 0).await;
    let proxy = ConnectProxy::start(server.addr, Some("Basic YWxpY2U6czNjckB0")).await;
    let url = format!("http://alice:hunter2@{}", proxy.addr);
    let proxy_setting = Proxy::url(&url).unwrap();
    let shown = format!("{proxy_setting:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("YWxpY2U6aHVudGVyMg"),
        "{shown}"
    );
    let client = client(
        &format!("https://{API_HOST}"),
        transport(&pki, proxy_setting),
    );

    let err = client.get("auth-2").await.unwrap_err();
    assert!(err.is_transport());
    assert_eq!(err.kind(), ErrorKind::ProxyAuth);
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "transport error: proxy authentication required"
    );
    // Why, once, in the chain of causes.
    let chain = support::causes(&err);
    assert!(
        chain
            .iter()
            .any(|c| c.contains("proxy authorization required")),
        "{chain:?}"
    );
    for secret in ["hunter2", "YWxpY2U6aHVudGVyMg"] {
        assert!(!chain.iter().any(|c| c.contains(secret)), "{chain:?}");
    }
    let debug = format!("{err:?}");
    for secret in ["hunter2", "YWxpY2U6aHVudGVyMg"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(!format!("{client:?}").contains("hunter2"));
    assert_eq!(server.counts.accepts(), 0);
}

/// A refusing proxy is asked once: the default retries do not send the
/// same credentials again.
#[tokio::test]
async fn a_refusing_proxy_is_asked_once_even_with_retries() {
    let pki = Pki::new("test CA proxy once");
    let server = https_server(&pki.leaf(&[API_HOST]), &[b"http/1.1"], 0).await;
    let proxy = ConnectProxy::start(server.addr, Some("Basic YWxpY2U6czNjckB0")).await;
    let setting = Proxy::url(&format!("http://alice:hunter2@{}", proxy.addr)).unwrap();
    let client = goenhance_jobs::Client::builder()
        .base_url(&format!("https://{API_HOST}"))
        .api_key(KEY)
        .transport(transport(&pki, setting))
        .build()
        .unwrap();
    let err = client.get("auth-once").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProxyAuth);
    assert_eq!(proxy.accepts(), 1);
    assert_eq!(server.counts.accepts(), 0);
}

#[tokio::test]
async fn no_proxy_exceptions_go_direct() {
    let pki = Pki::new("test CA no proxy");
    let server = https_server(&pki.leaf(&["localhost"]), &[b"http/1.1"], 0).await;
    let proxy = ConnectProxy::start(server.addr, None).await;
    let base = format!("https://localhost:{}", server.port());

    // An explicit proxy takes every host, loopback included...
    let through = client(&base, transport(&pki, Proxy::url(&proxy.url()).unwrap()));
    through.get("via").await.unwrap();
    assert_eq!(
        proxy.heads(),
        [connect_head(&format!("localhost:{}", server.port()), "")]
    );

    // ...except those listed.
    let direct = Proxy::url(&proxy.url())
        .unwrap()
        .no_proxy("example.com, localhost");
    let direct = client(&base, transport(&pki, direct));
    direct.get("direct").await.unwrap();
    assert_eq!(proxy.accepts(), 1, "the proxy saw only the first client");
    assert_eq!(server.counts.handshakes(), 2);
}

#[tokio::test]
async fn plain_http_targets_are_tunnelled_too() {
    let server = one_answer_server(None, Close::AfterAnswer).await;
    let proxy = ConnectProxy::start(server.addr, None).await;
    let transport = HyperTransport::builder()
        .proxy(Proxy::url(&proxy.url()).unwrap())
        .build();
    let client = client(&format!("http://localhost:{}", server.port()), transport);

    client.get("plain").await.unwrap();
    assert_eq!(
        proxy.heads(),
        [connect_head(&format!("localhost:{}", server.port()), "")]
    );
}

#[cfg(feature = "cli")]
mod cli {
    use super::*;
    use std::process::Output;

    const BIN: &str = env!("CARGO_BIN_EXE_goenhance-jobs");

    /// A file with `text` in a fresh directory of its own.
    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "goenhance-jobs-proxy-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs the tool with only the variables given (besides PATH).
    async fn run(args: &[&str], env: &[(&str, String)]) -> Output {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().await.unwrap()
    }

    #[tokio::test]
    async fn the_cli_goes_through_the_proxy_from_the_environment() {
        let pki = Pki::new("test CA cli proxy");
        let server = https_server(&pki.leaf(&[API_HOST]), &[b"h2", b"http/1.1"], 0).await;
        let proxy = ConnectProxy::start(server.addr, Some("Basic YWxpY2U6czNjckB0")).await;
        let ca = temp_file("cli-proxy", &pki.ca_pem());
        let proxy_url = format!("http://alice:s3cr%40t@{}", proxy.addr);

        for name in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"] {
            let out = run(
                &[
                    "get",
                    "cli-1",
                    "--output",
                    "json",
                    "--ca-file",
                    ca.to_str().unwrap(),
                ],
                &[
                    ("GOENHANCE_API_KEY", KEY.to_owned()),
                    ("GOENHANCE_BASE_URL", format!("https://{API_HOST}")),
                    (name, proxy_url.clone()),
                ],
            )
            .await;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{name}: {stdout} {stderr}");
            assert!(stdout.contains("\"status\":\"succeeded\""), "{stdout}");
            for secret in [KEY, "s3cr", "YWxpY2U6czNjckB0"] {
                assert!(!stdout.contains(secret) && !stderr.contains(secret));
            }
        }
        let want = connect_head(
            "api.goenhance.test:443",
            "Proxy-Authorization: Basic YWxpY2U6czNjckB0\r\n",
        );
        assert_eq!(proxy.heads(), [want.clone(), want.clone(), want]);
        assert_eq!(server.counts.requests(), 3);
    }

    #[tokio::test]
    async fn the_cli_reaches_loopback_directly_despite_the_environment() {
        let pki = Pki::new("test CA cli loopback");
        let server = https_server(&pki.leaf(&["localhost"]), &[b"http/1.1"], 0).await;
        let proxy = ConnectProxy::start(server.addr, None).await;
        let ca = temp_file("cli-loopback", &pki.ca_pem());
        let out = run(
            &["get", "cli-2", "--ca-file", ca.to_str().unwrap()],
            &[
                ("GOENHANCE_API_KEY", KEY.to_owned()),
                (
                    "GOENHANCE_BASE_URL",
                    format!("https://localhost:{}", server.port()),
                ),
                ("HTTPS_PROXY", proxy.url()),
            ],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(proxy.accepts(), 0);
        assert_eq!(server.counts.requests(), 1);
    }

    #[tokio::test]
    async fn platform_roots_honour_ssl_cert_file_and_ssl_cert_dir() {
        let pki = Pki::new("test CA platform");
        let server = https_server(&pki.leaf(&["localhost"]), &[b"http/1.1"], 0).await;
        let ca = temp_file("platform", &pki.ca_pem());
        let other = temp_file("platform-other", &Pki::new("test CA elsewhere").ca_pem());
        let base = format!("https://localhost:{}", server.port());
        let env = |var: &'static str, value: &std::path::Path| {
            vec![
                ("GOENHANCE_API_KEY", KEY.to_owned()),
                ("GOENHANCE_BASE_URL", base.clone()),
                (var, value.to_str().unwrap().to_owned()),
            ]
        };
        // No --ca-file: the default roots include the platform's store.
        for vars in [
            env("SSL_CERT_FILE", &ca),
            env("SSL_CERT_DIR", ca.parent().unwrap()),
        ] {
            let out = run(&["get", "platform"], &vars).await;
            assert_eq!(out.status.code(), Some(0), "{vars:?}: {out:?}");
        }
        let vars = env("SSL_CERT_FILE", &other);
        let out = run(&["get", "platform"], &vars).await;
        assert_eq!(out.status.code(), Some(4));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            format!("{stdout}{stderr}").contains("certificate not trusted (unknown issuer)"),
            "{stdout} {stderr}"
        );
        assert_eq!(server.counts.requests(), 2);
        assert_eq!(
            server.counts.accepts(),
            3,
            "the refused certificate was tried once"
        );
    }

    #[tokio::test]
    async fn a_bad_ca_file_is_a_usage_error() {
        let bad = temp_file(
            "bad",
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        );
        let out = run(
            &["get", "x", "--ca-file", bad.to_str().unwrap()],
            &[("GOENHANCE_API_KEY", KEY.to_owned())],
        )
        .await;
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid input: cannot read the root certificates: a PEM section is not valid base64"),
            "{stderr}"
        );
    }
}
