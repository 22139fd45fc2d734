//! HTTP transports: [`HyperTransport`] for real use, [`mock`][mock-mod] (feature `mock`) for tests.
//!
//! A transport is any `tower::Service<http::Request<Full<Bytes>>>` that
//! answers `http::Response<B>` with `B: http_body::Body<Data = Bytes>`, is
//! `Clone + Send + Sync + 'static`, and has a `Send` future. So a
//! `tower::service_fn` is one, and tower-http layers can wrap one:
//!
//! ```
//! use goenhance_jobs::{HyperTransport, JobStatusService};
//! use tower::ServiceBuilder;
//! use tower::util::MapRequestLayer;
//!
//! let transport = ServiceBuilder::new()
//!     .layer(MapRequestLayer::new(|mut req: http::Request<http_body_util::Full<bytes::Bytes>>| {
//!         req.headers_mut().insert("x-trace", http::HeaderValue::from_static("on"));
//!         req
//!     }))
//!     .service(HyperTransport::new());
//! let svc = JobStatusService::new("https://api.goenhance.ai", transport)?;
//! # Ok::<(), goenhance_jobs::Error>(())
//! ```
//!
#![cfg_attr(feature = "mock", doc = "[mock-mod]: mock")]
#![cfg_attr(
    not(feature = "mock"),
    doc = "[mock-mod]: https://docs.rs/goenhance-jobs/latest/goenhance_jobs/transport/mock/index.html"
)]

pub(crate) mod hyper;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
pub(crate) mod proxy;
mod reuse;
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub(crate) mod tls;

pub(crate) use self::hyper::HyperTransport;
pub use self::hyper::HyperTransportBuilder;
pub(crate) use self::reuse::Resends;
