//! Downloads of job outputs: streamed to a temporary file, resumed after a
//! cut, moved into place when complete.
//!
//! ```
//! use bytes::Bytes;
//! use goenhance_jobs::{Client, JobOutput, OutputKind};
//! use goenhance_jobs::download::{DownloadOptions, Progress};
//! use http_body_util::Full;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A storage host that answers every request with the same 5 bytes; in
//! // production leave `.transport` out.
//! let storage = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     let res = http::Response::builder()
//!         .header("content-type", "video/mp4")
//!         .header("content-length", "5")
//!         .body(Full::new(Bytes::from_static(b"hello")))?;
//!     Ok::<_, http::Error>(res)
//! });
//! let client = Client::builder().api_key("my-key").transport(storage).build()?;
//!
//! let dir = std::env::temp_dir().join(format!("goenhance-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let output = JobOutput::new(OutputKind::Video, "https://cdn.example/out_0.mp4?sig=abc");
//! let (tx, rx) = tokio::sync::watch::channel(Progress::default());
//! let file = client
//!     .download_with(&output, dir.join("out_0.mp4"), DownloadOptions::new().progress_watch(tx))
//!     .await?;
//! assert_eq!(file.bytes(), 5);
//! assert_eq!(file.content_type(), Some("video/mp4"));
//! assert_eq!(*rx.borrow(), Progress { bytes: 5, total: Some(5) });
//! assert_eq!(std::fs::read(file.path())?, b"hello");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! What a download does:
//!
//! - It goes through the client's transport **without** the auth layer, so
//!   proxies, extra CAs and tower layers on the transport apply, and the
//!   API key never reaches the storage host.
//! - The bytes go to a hidden temporary file beside the target
//!   (`.NAME.part-XXXXXXXX`) as they arrive, each chunk written from the
//!   downloading task while such writes are quick (the page cache), or,
//!   after three slow ones in a row, gathered into 256 KiB batches that the
//!   blocking pool writes while the next arrive: memory stays bounded
//!   whatever the size. When the length
//!   matches what the server declared, the file is synced and renamed into
//!   place, so a reader never sees half a file. After a failure or when the
//!   future is dropped, the temporary file is removed.
//! - After a cut connection, a stall (no data for the idle timeout) or a
//!   transient status, it resumes with `Range: bytes=N-` and an `If-Range`
//!   (a strong `ETag`, else `Last-Modified`) when the server announced
//!   `Accept-Ranges: bytes`; so a file that changed is never spliced, and a
//!   `206` that names another `ETag` (or date) than the one asked for makes
//!   it start over. A server that cannot resume, or answers `200` to the
//!   range, makes it start over too. Retries follow the client's
//!   [`RetryPolicy`]: its classification, backoff, `Retry-After` limit and
//!   attempt count, which bounds the failures in a row without progress (a
//!   failure after new bytes arrived starts the count again). When the
//!   policy has a retry budget, downloads draw on one of their own (a
//!   default [`TokenBucket`] shared by the client's downloads), so a
//!   storage host that keeps failing cannot use up the retries of status
//!   polls. A request lost on a pooled
//!   connection the server closed as it went out is sent again at once, not
//!   counted, as the [`RetryLayer`](crate::RetryLayer) does.
//! - A download ends at its [deadline](DownloadOptions::deadline) (30 min
//!   unless set) and at [`max_bytes`](DownloadOptions::max_bytes) (8 GiB
//!   unless set), with or without a `Content-Length`.
//! - Redirects, at most 5 per request, are followed to `https` only (or
//!   `http` on loopback, or anywhere when the client allows insecure http),
//!   never from `https` to `http`, and never to a loopback, private or
//!   link-local address unless the output URL itself was on one. A
//!   `Location` that is not ASCII or does not parse is an error.
//! - A URL whose `link_expired_at` has passed fails at once
//!   ([`Error::is_expired`]), without a request; a `403` from the storage
//!   host is also [`Error::is_expired`], and is not retried.
//! - At most [`ClientBuilder::max_downloads`](crate::ClientBuilder::max_downloads) downloads of a client run at
//!   once (default 4); the others wait their turn.
//!
//! [`Client::download_outputs`](crate::Client::download_outputs) saves every
//! output of a job under the names [`output_file_name`] gives, fetches the
//! job again for fresh links when a stored one has expired, and keeps a
//! partial file per output across calls and restarts, so a cut output
//! resumes where it stopped (until [`discard_partial_outputs`]).

mod downloader;
mod fetch;
mod headers;
mod naming;
mod options;
mod partial;
mod temp;
mod url;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use http::Uri;

pub use self::downloader::DEFAULT_MAX_DOWNLOADS;
pub(crate) use self::downloader::{raw_transport, DownloadSettings, Downloader, RawTransport};
use self::fetch::{fetch, Job, State};
pub use self::naming::{extension_from_content_type, extension_from_url, output_file_name};
pub use self::options::{DownloadOptions, Progress, DEFAULT_DEADLINE, DEFAULT_MAX_BYTES};
pub use self::partial::discard_partial_outputs;
use self::temp::TempFile;
use self::url::Reach;
use crate::error::Error;
use crate::model::JobOutput;
#[cfg(doc)]
use crate::retry::{RetryPolicy, TokenBucket};

/// A finished download: the file is complete and in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    path: PathBuf,
    bytes: u64,
    content_type: Option<String>,
}

impl Download {
    /// Where the file is (the target given).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The `Content-Type` the storage host declared, if any (none for an
    /// output [`Client::download_outputs`](crate::Client::download_outputs)
    /// found already in place).
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }
}

/// Downloads `output` to `target` through a throwaway temporary file.
pub(crate) async fn run(
    dl: &Downloader,
    output: &JobOutput,
    target: PathBuf,
    options: &DownloadOptions,
) -> Result<Download, Error> {
    let result = async {
        let (uri, reach) = check(dl, output)?;
        temp::split(&target)?;
        let _slot = dl.slots.acquire().await.map_err(|_| Error::closed())?;
        let mut file = TempFile::create(&target).await?;
        let mut state = State::default();
        let job = Job {
            uri: &uri,
            reach,
            options,
            meta: None,
        };
        fetch(dl, &job, &mut file, &mut state).await?;
        file.finish(&target).await?;
        Ok(Download {
            path: target,
            bytes: state.offset,
            content_type: state.content_type,
        })
    }
    .await;
    crate::telemetry::download_ended(&result);
    result
}

/// Downloads output `index` of job `img_uuid` (an id a query accepted)
/// into `dir` under [`output_file_name`], through a partial file kept
/// after a failure, and resumed from if one is there. See [`in_place`]
/// first.
pub(crate) async fn run_output(
    dl: &Downloader,
    output: &JobOutput,
    dir: &Path,
    img_uuid: &str,
    index: usize,
    options: &DownloadOptions,
) -> Result<Download, Error> {
    let result = async {
        let (uri, reach) = check(dl, output)?;
        let _slot = dl.slots.acquire().await.map_err(|_| Error::closed())?;
        let (part, meta) = partial::paths(dir, img_uuid, index);
        let (mut file, held) = TempFile::open_kept(part).await?;
        let mut state = State::default();
        if held > 0 {
            match partial::read(&meta).await {
                Some((validator, total)) if total.is_none_or(|t| held < t) => {
                    tracing::debug!(bytes = held, "resuming a partial download");
                    state.offset = held;
                    state.total = total;
                    state.validator = Some(validator);
                    state.ranges = true;
                }
                // No record of what the bytes are, or all of them with no
                // proof they were checked: start over.
                _ => file.truncate().await?,
            }
        }
        let job = Job {
            uri: &uri,
            reach,
            options,
            meta: Some(&meta),
        };
        if let Err(e) = fetch(dl, &job, &mut file, &mut state).await {
            // What arrived is kept for the next call, unless there is
            // nothing to keep or it is of no use.
            let kept = state.offset > 0 && !e.is_body_too_large() && file.flush().await.is_ok();
            if !kept {
                file.discard();
                partial::remove(&meta).await;
            }
            return Err(e);
        }
        let name = output_file_name(img_uuid, index, output.url(), state.content_type.as_deref());
        let target = dir.join(name);
        file.finish(&target).await?;
        partial::remove(&meta).await;
        Ok(Download {
            path: target,
            bytes: state.offset,
            content_type: state.content_type,
        })
    }
    .await;
    crate::telemetry::download_ended(&result);
    result
}

/// The output already saved under its name, if it is: a file gets its
/// name only once complete and synced.
pub(crate) async fn in_place(
    dir: &Path,
    img_uuid: &str,
    index: usize,
    url: &str,
) -> Option<Download> {
    let candidates: Vec<String> = match naming::extension_from_url(url) {
        Some(ext) => vec![ext],
        None => naming::content_type_extensions()
            .map(str::to_owned)
            .collect(),
    };
    for ext in candidates {
        let path = dir.join(format!("{img_uuid}_{index}.{ext}"));
        if let Ok(meta) = tokio::fs::metadata(&path).await {
            if meta.is_file() {
                return Some(Download {
                    path,
                    bytes: meta.len(),
                    content_type: None,
                });
            }
        }
    }
    None
}

/// Refuses an output whose link has expired or whose URL may not be
/// fetched, before anything is sent.
fn check(dl: &Downloader, output: &JobOutput) -> Result<(Uri, Reach), Error> {
    if let Some(at) = output.expires_at() {
        if at <= SystemTime::now() {
            return Err(Error::expired(
                None,
                format!("link expired at {}", httpdate::fmt_http_date(at)),
            ));
        }
    }
    url::parse_output_url(output.url(), dl.insecure_http)
}
