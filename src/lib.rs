//! Follow GoEnhance generation jobs: a [tower] stack with auth, retry,
//! timeout and status polling over a pluggable HTTP transport.
//!
//! Every GoEnhance generation (video to video, face swap, text to image)
//! returns a job id, an `img_uuid`; `GET /api/v1/jobs/detail` tells its
//! state. This crate waits on such jobs correctly: it treats `success` and
//! `completed` alike, retries transient faults with backoff and a shared
//! budget, honours `Retry-After`, polls on an adaptive schedule under a
//! deadline, and follows thousands of jobs from one scheduler.
//!
//! ```
//! use goenhance_jobs::transport::mock::MockTransport; // feature `mock`
//! use goenhance_jobs::{Client, JobStatus};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), goenhance_jobs::Error> {
//! // A scripted transport; in production leave `.transport` out (hyper + rustls).
//! let mock = MockTransport::new();
//! mock.timeline("5334c57d", &["pending", "processing", "success"]);
//!
//! let client = Client::builder().api_key("my-key").transport(mock).build()?;
//! let job = client.wait("5334c57d").await?;
//! assert_eq!(job.status(), &JobStatus::Succeeded);
//! assert_eq!(job.outputs()[0].url(), "https://cdn.example/5334c57d_0.mp4");
//! # Ok(())
//! # }
//! ```
//!
//! # How a query travels
//!
//! [`Client`] builds one tower stack per client and sends every poll
//! through it. A single fetch goes straight down it; waits go through the
//! client's hub, one scheduler for all its waits, which runs the poll state
//! machine of [`PollPolicy`] per job and calls the same stack for each poll:
//!
//! ```text
//! Client::get ─────────────────────────┐
//! Client::wait / wait_all / watch_all  │
//!  └ hub: one driver task per client   │  timer queue, job slots, duplicate ids merged,
//!    │    per job: poll state machine  │  cap on polls in flight, Throttle; PollPolicy:
//!    │                                 │  schedule, deadline, stall, error policy
//! Client::watch                        │
//!  └ poll state machine, caller's task │
//!    └─────────────────────────────────┴→ RetryLayer        transient errors: backoff + jitter,
//!                                          │                 Retry-After, shared budget
//!                                          └ TimeoutLayer    per attempt, body included, never
//!                                            │               past the wait's deadline
//!                                            └ JobStatusService<T>  query → request → capped
//!                                              │                    body → JobDetail
//!                                              └ AuthLayer  Authorization: Bearer, sensitive
//!                                                └ T        HyperTransport | MockTransport |
//!                                                           any tower Service
//! ```
//!
//! Each piece is a public tower layer or service, so the stack can be built
//! by hand, wrapped in tower-http layers, or given another transport. By
//! hand, [`PollLayer`] takes the hub's place for one wait per call:
//!
//! ```text
//! PollLayer → RetryLayer → TimeoutLayer → JobStatusService<AddAuthorization<T>>
//! ```
//!
//! The `tower_stack` example builds it so.
//!
//! Every attempt is a `GET` span and every wait a `goenhance.wait` span,
//! named after the OpenTelemetry conventions; with the `metrics` feature
//! the stack and the hub record metrics too ([`telemetry`]).
//!
//! # Features
//!
//! - `rustls` (default): HTTPS for [`HyperTransport`], trusting the web PKI
//!   and the platform's roots ([`TlsRoots`][tls-roots]) and any extra CA. Without it,
//!   [`HyperTransport`] refuses every `https` URL before it connects (an
//!   [`Error::is_invalid_input`] that names the feature): nothing meant for
//!   TLS is ever sent in clear.
//! - `fake`: [`fake`][fake-mod], a fake GoEnhance server on loopback for tests.
//! - `mock`: [`transport::mock`][mock-mod], an in-memory transport with scripted
//!   answers, for tests.
//! - `test-util`: test support for code outside the crate (hooks on the
//!   in-memory store, the store conformance suite).
//! - `sqlite`: [`track::SqliteStore`][sqlite-store], durable tracking in an embedded SQLite file.
//! - `postgres`: [`track::PostgresStore`][postgres-store], a fleet of workers sharing tracked jobs.
//! - `metrics`: counters, gauges and histograms through the `metrics`
//!   facade ([`telemetry`]).
//! - `cli`: the `goenhance-jobs` command-line tool.
//!
//! (Items of a feature this build lacks link to docs.rs, built with all.)
//!
#![cfg_attr(feature = "rustls", doc = "[tls-roots]: crate::TlsRoots")]
#![cfg_attr(
    not(feature = "rustls"),
    doc = "[tls-roots]: https://docs.rs/goenhance-jobs/latest/goenhance_jobs/enum.TlsRoots.html"
)]
#![cfg_attr(feature = "fake", doc = "[fake-mod]: crate::fake")]
#![cfg_attr(
    not(feature = "fake"),
    doc = "[fake-mod]: https://docs.rs/goenhance-jobs/latest/goenhance_jobs/fake/index.html"
)]
#![cfg_attr(feature = "mock", doc = "[mock-mod]: crate::transport::mock")]
#![cfg_attr(
    not(feature = "mock"),
    doc = "[mock-mod]: https://docs.rs/goenhance-jobs/latest/goenhance_jobs/transport/mock/index.html"
)]
#![cfg_attr(feature = "sqlite", doc = "[sqlite-store]: crate::track::SqliteStore")]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "[sqlite-store]: https://docs.rs/goenhance-jobs/latest/goenhance_jobs/track/struct.SqliteStore.html"
)]
#![cfg_attr(
    feature = "postgres",
    doc = "[postgres-store]: crate::track::PostgresStore"
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "[postgres-store]: https://docs.rs/goenhance-jobs/latest/goenhance_jobs/track/struct.PostgresStore.html"
)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod backoff;
mod client;
mod clock;
mod decode;
pub mod download;
mod error;
mod hub;
mod model;
pub mod poll;
mod query;
pub mod retry;
pub mod service;
mod stack;
pub mod telemetry;
mod text;
pub mod timeout;
pub mod track;
pub mod transport;

#[cfg(feature = "fake")]
#[cfg_attr(docsrs, doc(cfg(feature = "fake")))]
pub mod fake;

// Each public type has one path: those of the stack's contract are here,
// and their modules keep only what goes with them (futures, services,
// strategies, defaults).
pub use crate::auth::key::ApiKey;
pub use crate::auth::layer::AuthLayer;
pub use crate::client::{Client, ClientBuilder, ENV_API_KEY, ENV_BASE_URL};
pub use crate::error::{BoxError, Error, ErrorKind, PollRecord};
pub use crate::hub::{PerSecond, Throttle, DEFAULT_MAX_IN_FLIGHT};
pub use crate::model::{JobDetail, JobOutput, JobStatus, OutputKind};
pub use crate::poll::layer::PollLayer;
pub use crate::poll::policy::{PollPolicy, PollSchedule};
pub use crate::query::{JobQuery, MAX_ID_LEN};
pub use crate::retry::layer::RetryLayer;
pub use crate::retry::policy::RetryPolicy;
pub use crate::service::base_url::BaseUrl;
pub use crate::service::job_status::JobStatusService;
pub use crate::timeout::layer::TimeoutLayer;
pub use crate::transport::hyper::HyperTransport;
pub use crate::transport::proxy::Proxy;
#[cfg(feature = "rustls")]
pub use crate::transport::tls::TlsRoots;

/// The README's examples, compiled as doc tests (in the default build: they
/// set up TLS).
#[cfg(all(doctest, feature = "rustls"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
