//! The PostgreSQL store over TLS, against a throwaway cluster that speaks
//! TLS with a certificate from a CA made by the test and takes TCP
//! connections over TLS only: `sslmode=require` with the CA trusted works;
//! an untrusted certificate, a plain connection and a bad CA are refused,
//! each with an error that says why.
//!
//! Needs the PostgreSQL server binaries, as `tests/track_postgres.rs` does.
#![cfg(all(feature = "postgres", feature = "fake"))]

mod support;

use goenhance_jobs::track::{PostgresStore, Tracker};
use goenhance_jobs::{Client, ErrorKind, JobQuery};
use support::pg::Cluster;
use support::{Pki, KEY};

#[tokio::test]
async fn the_store_speaks_tls_when_asked_and_checks_the_certificate() {
    let pki = Pki::new("test CA postgres");
    let (cert, key) = pki.leaf_pem(&["127.0.0.1"]);
    let cluster = Cluster::start_tls("tls", &cert, &key);
    let url = cluster.url();
    let require = format!("{url}?sslmode=require");
    let ca = pki.ca_pem();

    // Required and trusted: the store works (the server takes no plain TCP
    // connection, so this one is over TLS).
    let store = PostgresStore::connect_trusting(&require, ca.as_bytes())
        .await
        .unwrap();
    let client = Client::builder()
        .api_key(KEY)
        .base_url("http://127.0.0.1:9")
        .build()
        .unwrap();
    let tracker = Tracker::builder(client, store).build();
    tracker
        .track(JobQuery::new("over-tls").unwrap(), serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(tracker.pending().await.unwrap(), 1);

    // Required, but the CA is not trusted: refused, and the chain says why.
    let err = PostgresStore::connect(&require).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    let shown = format!("{err:#}");
    assert!(
        shown.starts_with(&format!(
            "store error: postgres at 127.0.0.1:{}/postgres: error performing TLS handshake",
            cluster.port
        )),
        "{shown}"
    );
    assert!(shown.contains("UnknownIssuer"), "{shown}");

    // Without `sslmode` the connection is plain, which this server refuses.
    let err = PostgresStore::connect_trusting(&url, ca.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("no encryption"), "{err}");

    // A CA that is not PEM is refused before anything is sent.
    let err = PostgresStore::connect_trusting(&require, b"not a certificate")
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}
