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
//! use goenhance_jobs::transport::mock::MockTransport;
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
//! # The stack
//!
//! ```text
//! Client                 get / wait / watch / wait_all
//!  └ PollLayer           query → terminal detail: schedule, deadline, stall
//!    └ RetryLayer        transient errors: backoff + jitter, Retry-After, budget
//!      └ TimeoutLayer    per attempt, body included
//!        └ JobStatusService<T>   query → request → response → detail
//!          └ AuthLayer   Authorization: Bearer, marked sensitive
//!            └ T         HyperTransport | MockTransport | any tower Service
//! ```
//!
//! Each piece is a public tower layer or service, so the stack can be
//! rebuilt by hand, wrapped in tower-http layers, or given another
//! transport.
//!
//! # Features
//!
//! - `rustls` (default): HTTPS for [`HyperTransport`].
//! - `fake`: [`fake`], a fake GoEnhance server on loopback for tests.
//! - `sqlite`: [`track::SqliteStore`], durable tracking in an embedded SQLite file.
//! - `postgres`: [`track::PostgresStore`], a fleet of workers sharing tracked jobs.
//! - `cli`: the `goenhance-jobs` command-line tool.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
mod client;
pub mod error;
pub mod hub;
pub mod model;
pub mod poll;
pub mod retry;
pub mod service;
pub mod timeout;
pub mod track;
pub mod transport;

#[cfg(feature = "fake")]
#[cfg_attr(docsrs, doc(cfg(feature = "fake")))]
pub mod fake;

pub use crate::auth::{ApiKey, AuthLayer};
pub use crate::client::{Client, ClientBuilder, ENV_API_KEY, ENV_BASE_URL};
pub use crate::error::{BoxError, Error};
pub use crate::model::{JobDetail, JobOutput, JobQuery, JobStatus, OutputKind};
pub use crate::poll::{PollLayer, PollPolicy};
pub use crate::retry::{RetryLayer, RetryPolicy};
pub use crate::service::{BaseUrl, JobStatusService};
pub use crate::timeout::TimeoutLayer;
pub use crate::transport::HyperTransport;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
