//! [`JobStatusService`]: a job query in, a job detail out, over any HTTP
//! transport.
//!
//! The service builds `GET {base}/api/v1/jobs/detail?img_uuid=…`, sends it
//! through its transport, reads the body up to a cap and decodes it. Any
//! `tower::Service<http::Request<Full<Bytes>>>` is a transport, so a
//! `service_fn` is a mock:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use goenhance_jobs::{JobQuery, JobStatus, JobStatusService};
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), goenhance_jobs::Error> {
//! let transport = service_fn(|req: http::Request<Full<Bytes>>| async move {
//!     assert_eq!(req.uri(), "https://api.goenhance.ai/api/v1/jobs/detail?img_uuid=job-1");
//!     let body = r#"{"code":0,"msg":"Success","data":{"img_uuid":"job-1","status":"processing"}}"#;
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
//! });
//! let svc = JobStatusService::new("https://api.goenhance.ai", transport)?;
//! let detail = svc.oneshot(JobQuery::new("job-1")?).await?;
//! assert_eq!(detail.status(), &JobStatus::Processing);
//! # Ok(())
//! # }
//! ```

pub(crate) mod base_url;
pub mod future;
pub(crate) mod job_status;
mod request;
mod response;

pub(crate) use self::base_url::BaseUrl;
pub(crate) use self::job_status::JobStatusService;

/// The default base URL of the API.
pub const DEFAULT_BASE_URL: &str = "https://api.goenhance.ai";

/// The default cap on a response body: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
