//! What the integration tests share: the key, short durations, queries,
//! and clients set up the way most tests want them (the test key, no
//! retries unless a test asks for them), over the in-memory transport or
//! against a server on loopback; in [`net`], real servers and a proxy for
//! wire tests; in [`pg`], a throwaway PostgreSQL cluster; in [`time`],
//! times as the API writes them; in `recorder`, a runtime under a local
//! metrics recorder. Each test binary uses a part of it.
#![allow(dead_code)]

pub mod net;
pub mod pg;
#[cfg(feature = "metrics")]
pub mod recorder;
pub mod time;

use std::time::Duration;

use goenhance_jobs::transport::mock::MockTransport;
use goenhance_jobs::{Client, ClientBuilder, JobQuery, RetryPolicy};

#[allow(unused_imports)]
pub use self::net::*;

/// The API key the tests use; every output is checked not to contain it
/// where a test looks for leaks.
pub const KEY: &str = "sk-test-5f3a9c-SECRET";

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A query of a valid id.
pub fn q(id: &str) -> JobQuery {
    JobQuery::new(id).unwrap()
}

/// The causes of `err`, outermost first, each as its `Display`.
pub fn causes(err: &dyn std::error::Error) -> Vec<String> {
    let mut chain = Vec::new();
    let mut cause = err.source();
    while let Some(c) = cause {
        chain.push(c.to_string());
        cause = c.source();
    }
    chain
}

/// The telemetry tests' client: the key, retries after 100 ms without
/// jitter, a poll a second, a 2.5 s deadline.
pub fn telemetry_client(mock: &MockTransport) -> Client {
    mock_client(mock)
        .retry_policy(
            RetryPolicy::default()
                .initial_backoff(ms(100))
                .jitter(goenhance_jobs::backoff::Jitter::None),
        )
        .poll_policy(
            goenhance_jobs::PollPolicy::fixed(secs(1))
                .jitter(goenhance_jobs::backoff::Jitter::None),
        )
        .wait_timeout(ms(2500))
        .build()
        .unwrap()
}

/// A client over the in-memory transport `mock`: the test key, no retries.
pub fn mock_client(mock: &MockTransport) -> ClientBuilder {
    Client::builder()
        .api_key(KEY)
        .retry_policy(RetryPolicy::never())
        .transport(mock.clone())
}

/// A client of the server at `base_url` on loopback: the test key, no
/// retries.
pub fn server_client(base_url: &str) -> ClientBuilder {
    Client::builder()
        .base_url(base_url)
        .api_key(KEY)
        .retry_policy(RetryPolicy::never())
}
