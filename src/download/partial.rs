//! Partial files kept across calls, so that an output cut short resumes
//! where it stopped on the next call, in this process or after a restart.
//!
//! The bytes are in `DIR/.<img_uuid>_<n>.part`; beside them,
//! `DIR/.<img_uuid>_<n>.part.meta` holds the validator they were fetched
//! under (a strong `ETag` or a `Last-Modified` date, sent again as
//! `If-Range`) and the size the server declared. Without a readable record
//! the bytes are not trusted and the output starts over.

use std::path::{Path, PathBuf};

use http::header::HeaderValue;

use crate::error::Error;
use crate::query::JobQuery;

const FORMAT: &str = "goenhance-jobs partial v1";

/// The partial file and its record for output `index` of job `img_uuid`.
pub(super) fn paths(dir: &Path, img_uuid: &str, index: usize) -> (PathBuf, PathBuf) {
    (
        dir.join(format!(".{img_uuid}_{index}.part")),
        dir.join(format!(".{img_uuid}_{index}.part.meta")),
    )
}

/// Records how to resume: `validator` (none: the bytes cannot be resumed)
/// and the declared size. A failure is logged: the record is an
/// optimisation, and a missing one only makes the next call start over.
pub(super) async fn record(meta: &Path, validator: Option<&HeaderValue>, total: Option<u64>) {
    let done = match validator.and_then(|v| v.to_str().ok()) {
        Some(v) => {
            let total = total.map_or_else(|| "-".to_owned(), |t| t.to_string());
            tokio::fs::write(meta, format!("{FORMAT}\n{v}\n{total}\n")).await
        }
        None => match tokio::fs::remove_file(meta).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    };
    if let Err(e) = done {
        tracing::debug!(path = %meta.display(), error = %e, "cannot record how to resume a partial download");
    }
}

/// The validator and declared size of a partial file, if it has a record.
pub(super) async fn read(meta: &Path) -> Option<(HeaderValue, Option<u64>)> {
    let text = tokio::fs::read_to_string(meta).await.ok()?;
    let mut lines = text.lines();
    if lines.next()? != FORMAT {
        return None;
    }
    let validator = HeaderValue::from_str(lines.next()?).ok()?;
    let total = match lines.next()? {
        "-" => None,
        t => Some(t.parse().ok()?),
    };
    Some((validator, total))
}

/// Removes a record, once its output is complete or discarded.
pub(super) async fn remove(meta: &Path) {
    record(meta, None, None).await;
}

/// Removes the partial files that [`Client::download_outputs`] keeps in
/// `dir` for the job `img_uuid` (`.<img_uuid>_<n>.part` and their records):
/// call it once the job is done with, whether its outputs all arrived or
/// it is given up. Outputs already in place are left alone.
///
/// Returns how many partial files were removed.
///
/// [`Client::download_outputs`]: crate::Client::download_outputs
///
/// # Errors
///
/// [`Error::is_invalid_input`] for an id that could not name a job (and
/// so could not name a file); [`Error::is_io`] when `dir` cannot be read
/// or a file cannot be removed.
pub async fn discard_partial_outputs(
    dir: impl AsRef<Path>,
    img_uuid: &str,
) -> Result<usize, Error> {
    let query = JobQuery::new(img_uuid)?;
    let dir = dir.as_ref();
    let prefix = format!(".{}_", query.img_uuid());
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    let mut removed = 0;
    loop {
        let entry = match entries.next_entry().await {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
        };
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let (index, part) = match rest.split_once('.') {
            Some((index, "part")) => (index, true),
            Some((index, "part.meta")) => (index, false),
            _ => continue,
        };
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = entry.path();
        match tokio::fs::remove_file(&path).await {
            Ok(()) => removed += usize::from(part),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot remove {}", path.display()), e)),
        }
    }
    Ok(removed)
}
