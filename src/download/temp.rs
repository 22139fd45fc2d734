//! The temporary file a download is written to, beside its target.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::error::Error;

/// Bytes gathered before one write to the file. The file itself buffers at
/// most one write while the previous one runs on the blocking pool, so a
/// download holds at most about twice this much.
const WRITE_BUFFER: usize = 256 * 1024;

/// A hidden file `.NAME.part-XXXXXXXX` in the target's folder, removed when
/// dropped unless [`finish`](TempFile::finish) moved it into place.
pub(super) struct TempFile {
    path: PathBuf,
    file: Option<BufWriter<File>>,
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
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => {
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

    fn file(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("the file is open until finish")
    }

    /// Appends `data`.
    pub(super) async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        let file = self.file.as_mut().expect("the file is open until finish");
        match file.write_all(data).await {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::io(
                format!("cannot write {}", self.path.display()),
                e,
            )),
        }
    }

    /// Empties the file, to start over.
    pub(super) async fn truncate(&mut self) -> Result<(), Error> {
        let path = self.path.display().to_string();
        let fail = |e| Error::io(format!("cannot truncate {path}"), e);
        let file = self.file();
        file.flush().await.map_err(fail)?;
        let inner = file.get_mut();
        inner.set_len(0).await.map_err(fail)?;
        inner.seek(SeekFrom::Start(0)).await.map_err(fail)?;
        Ok(())
    }

    /// Flushes and syncs the file, then renames it to `target` (replacing
    /// what was there) and syncs the folder, so the name and the bytes are
    /// durable together.
    pub(super) async fn finish(mut self, target: &Path) -> Result<(), Error> {
        let path = self.path.display().to_string();
        let mut file = self.file.take().expect("the file is open until finish");
        file.flush()
            .await
            .map_err(|e| Error::io(format!("cannot write {path}"), e))?;
        let file = file.into_inner();
        file.sync_all()
            .await
            .map_err(|e| Error::io(format!("cannot sync {path}"), e))?;
        drop(file);
        tokio::fs::rename(&self.path, target)
            .await
            .map_err(|e| Error::io(format!("cannot move {path} to {}", target.display()), e))?;
        // Renamed: nothing left to remove.
        self.path = PathBuf::new();
        sync_dir(target).await;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            drop(self.file.take());
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::debug!(path = %self.path.display(), error = %e, "cannot remove a temporary download file");
            }
        }
    }
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
