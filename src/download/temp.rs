//! The file a download is written to, beside its target.
//!
//! Chunks are written straight from the downloading task, each as it
//! arrives, while such writes take well under a millisecond (the page
//! cache, tmpfs): no copy of our own, and the bytes the connection just
//! read are still in this CPU's cache when the kernel copies them into the
//! file. Handing each write to the blocking pool instead costs a third
//! more CPU per byte in the download bench: a wake-up of another thread,
//! and the kernel's copy reading from the other core's cache.
//!
//! After [`SLOW_IN_A_ROW`] writes in a row that each took longer than
//! [`INLINE_LIMIT`] (a disk that throttles writers, a network file
//! system), the rest of the download goes through the blocking pool:
//! chunks are gathered into one of two buffers of [`BATCH`] bytes, and a
//! full buffer is written by the pool while the other fills. So the
//! runtime's thread is held up by slow writes at most that many times per
//! download.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::error::Error;

/// A write from the downloading task that takes longer is slow.
const INLINE_LIMIT: Duration = Duration::from_millis(1);

/// Slow writes in a row after which the rest go through the blocking pool.
/// One alone is no sign: on a busy machine the thread may simply have been
/// descheduled during a quick write; a file system that makes writers wait
/// makes every write slow.
const SLOW_IN_A_ROW: u32 = 3;

/// Bytes gathered before one write through the blocking pool. A download
/// then holds two such buffers: one filling, one being written.
const BATCH: usize = 256 * 1024;

/// A file a download writes to: a hidden throwaway `.NAME.part-XXXXXXXX`
/// beside the target, removed when dropped unless
/// [`finish`](TempFile::finish) moved it into place; or a partial file kept
/// across calls to resume from (see [`open_kept`](TempFile::open_kept)).
pub(super) struct TempFile {
    path: PathBuf,
    file: Arc<std::fs::File>,
    /// The buffer filling.
    pending: Vec<u8>,
    /// The buffer being written, given back when done.
    writing: Option<JoinHandle<(Vec<u8>, io::Result<()>)>>,
    /// Writes go straight from the task (until they are slow).
    inline: bool,
    /// Slow inline writes in a row.
    slow: u32,
    /// Left in place when dropped, for a later call to resume.
    keep: bool,
    /// Renamed into place: nothing to remove.
    done: bool,
}

impl TempFile {
    /// Creates a new, empty temporary file for `target`.
    pub(super) async fn create(target: &Path) -> Result<TempFile, Error> {
        let (dir, name) = split(target)?;
        let mut tries = 0;
        loop {
            let path = dir.join(format!(
                ".{}.part-{:08x}",
                name.to_string_lossy(),
                fastrand::u32(..)
            ));
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
            {
                Ok(file) => return Ok(TempFile::new(path, file.into_std().await, false)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => {
                    tries += 1;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("cannot create a temporary file in {}", dir.display()),
                        e,
                    ))
                }
            }
        }
    }

    /// Opens (or creates) the partial file `path`, kept when dropped, with
    /// the bytes it already holds: writes go after them.
    pub(super) async fn open_kept(path: PathBuf) -> Result<(TempFile, u64), Error> {
        let opened = tokio::task::spawn_blocking({
            let path = path.clone();
            move || {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                let len = file.seek(SeekFrom::End(0))?;
                Ok::<_, io::Error>((file, len))
            }
        })
        .await
        .map_err(join_failed);
        match opened {
            Ok(Ok((file, len))) => Ok((TempFile::new(path, file, true), len)),
            Ok(Err(e)) | Err(e) => Err(Error::io(
                format!("cannot open the partial file {}", path.display()),
                e,
            )),
        }
    }

    fn new(path: PathBuf, file: std::fs::File, keep: bool) -> TempFile {
        TempFile {
            path,
            file: Arc::new(file),
            pending: Vec::new(),
            writing: None,
            inline: true,
            slow: 0,
            keep,
            done: false,
        }
    }

    /// Where the bytes are.
    #[cfg(test)]
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data`: at once, or once a batch is gathered.
    pub(super) async fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        if self.inline {
            let started = Instant::now();
            if let Err(e) = (&*self.file).write_all(data) {
                return Err(Error::io(
                    format!("cannot write {}", self.path.display()),
                    e,
                ));
            }
            let took = started.elapsed();
            self.slow = if took > INLINE_LIMIT {
                self.slow + 1
            } else {
                0
            };
            if self.slow >= SLOW_IN_A_ROW {
                tracing::debug!(
                    took_us = took.as_micros() as u64,
                    "slow file writes; the rest go through the blocking pool"
                );
                self.inline = false;
            }
            return Ok(());
        }
        while !data.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(BATCH);
            }
            let room = BATCH.saturating_sub(self.pending.len()).max(1);
            let (now, rest) = data.split_at(room.min(data.len()));
            self.pending.extend_from_slice(now);
            data = rest;
            if self.pending.len() >= BATCH {
                self.submit().await?;
            }
        }
        Ok(())
    }

    /// Waits for the batch being written, then starts writing the gathered
    /// one, filling the buffer given back next.
    async fn submit(&mut self) -> Result<(), Error> {
        let spare = self.wait().await?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.pending, spare);
        let file = Arc::clone(&self.file);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let done = (&*file).write_all(&batch);
            let mut batch = batch;
            batch.clear();
            (batch, done)
        }));
        Ok(())
    }

    /// Waits for the batch being written, if any, and gives its buffer
    /// back (empty).
    async fn wait(&mut self) -> Result<Vec<u8>, Error> {
        let Some(writing) = self.writing.take() else {
            return Ok(Vec::new());
        };
        let failed = match writing.await {
            Ok((buffer, Ok(()))) => return Ok(buffer),
            Ok((_, Err(e))) => e,
            Err(e) => join_failed(e),
        };
        Err(Error::io(
            format!("cannot write {}", self.path.display()),
            failed,
        ))
    }

    /// Writes everything gathered.
    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        self.submit().await?;
        self.wait().await.map(drop)
    }

    /// Empties the file, to start over.
    pub(super) async fn truncate(&mut self) -> Result<(), Error> {
        // A failed write does not matter: the bytes are thrown away.
        let _ = self.wait().await;
        self.pending.clear();
        let file = Arc::clone(&self.file);
        let done = tokio::task::spawn_blocking(move || {
            file.set_len(0)?;
            (&*file).seek(SeekFrom::Start(0)).map(drop)
        })
        .await
        .map_err(join_failed);
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => Err(Error::io(
                format!("cannot truncate {}", self.path.display()),
                e,
            )),
        }
    }

    /// Writes what is gathered and syncs the file, then renames it to
    /// `target` (replacing what was there) and syncs the folder, so the
    /// name and the bytes are durable together.
    pub(super) async fn finish(mut self, target: &Path) -> Result<(), Error> {
        self.flush().await?;
        let path = self.path.display().to_string();
        let file = Arc::clone(&self.file);
        let synced = tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(join_failed);
        if let Ok(Err(e)) | Err(e) = synced {
            return Err(Error::io(format!("cannot sync {path}"), e));
        }
        tokio::fs::rename(&self.path, target)
            .await
            .map_err(|e| Error::io(format!("cannot move {path} to {}", target.display()), e))?;
        self.done = true;
        sync_dir(target).await;
        Ok(())
    }

    /// Removes the file when dropped, even a kept one: its bytes are of no
    /// use to a later call.
    pub(super) fn discard(&mut self) {
        self.keep = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.done || self.keep {
            return;
        }
        // A batch still being written goes to the removed file: no harm.
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "cannot remove a temporary download file");
        }
    }
}

fn join_failed(e: tokio::task::JoinError) -> io::Error {
    io::Error::other(e)
}

/// The folder and file name of `target`.
pub(super) fn split(target: &Path) -> Result<(PathBuf, &std::ffi::OsStr), Error> {
    let name = target.file_name().ok_or_else(|| {
        Error::invalid_input(format!(
            "download target {} has no file name",
            target.display()
        ))
    })?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Syncs the folder holding `target` so the rename survives a crash; only
/// where folders can be opened (Unix). A failure is logged, not returned:
/// the file is complete and in place.
async fn sync_dir(target: &Path) {
    #[cfg(unix)]
    if let Ok((dir, _)) = split(target) {
        let done = tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all()).await;
        if let Ok(Err(e)) = done {
            tracing::debug!(error = %e, "cannot sync the download folder");
        }
    }
    #[cfg(not(unix))]
    let _ = target;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_land_in_order_inline_and_through_the_pool() {
        for inline in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("a.bin");
            let mut file = TempFile::create(&target).await.unwrap();
            file.inline = inline;
            // More than two batches, in chunks of odd sizes, one larger
            // than a batch.
            let mut want = Vec::new();
            for i in 0..700u32 {
                let len = if i == 5 {
                    3 * BATCH as u32 + 7
                } else {
                    (i % 13) * 1000 + 1
                };
                let chunk: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                want.extend_from_slice(&chunk);
                file.write(&chunk).await.unwrap();
            }
            file.flush().await.unwrap();
            assert!(
                std::fs::read(file.path()).unwrap() == want,
                "inline {inline}"
            );
            file.truncate().await.unwrap();
            file.write(b"again").await.unwrap();
            file.finish(&target).await.unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), b"again");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }

    #[tokio::test]
    async fn a_kept_file_stays_and_is_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".j_0.part");
        let (mut file, len) = TempFile::open_kept(path.clone()).await.unwrap();
        assert_eq!(len, 0);
        file.write(b"abc").await.unwrap();
        file.flush().await.unwrap();
        drop(file);
        let (mut file, len) = TempFile::open_kept(path.clone()).await.unwrap();
        assert_eq!(len, 3);
        file.write(b"def").await.unwrap();
        file.flush().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdef");
        file.discard();
        drop(file);
        assert!(!path.exists());
    }
}
