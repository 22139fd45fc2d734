//! `--download DIR`: each succeeded job's outputs saved as
//! `DIR/<img_uuid>_<n>.<ext>`, with a byte progress bar per file on a
//! terminal and plain lines otherwise.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::future::{join_all, BoxFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use goenhance_jobs::download::{extension_from_content_type, extension_from_url, DownloadOptions};
use goenhance_jobs::{Client, JobOutput, JobStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::Format;
use crate::live::Live;
use crate::out::{complain, emit, printable};
use crate::report::{code, FileError, FileJson, JobLine, Outcome};

/// One output of a job, saved or not.
#[derive(Debug)]
pub(crate) struct Saved {
    url: String,
    path: PathBuf,
    result: Result<(u64, Option<String>), FileError>,
}

type Pending = BoxFuture<'static, (String, Outcome, Vec<Saved>)>;

/// Saves the outputs of jobs as they end, several at once (as many as the
/// client's download cap allows).
pub(crate) struct Saver {
    client: Client,
    dir: PathBuf,
    bars: Option<MultiProgress>,
    pending: FuturesUnordered<Pending>,
}

impl Saver {
    /// A saver into `dir`, made if missing. Byte bars are drawn on `bars`
    /// (the live display's); without it, plain lines go to stderr.
    ///
    /// # Errors
    ///
    /// The folder cannot be made: the message is printed, the exit code
    /// returned.
    pub(crate) fn new(
        client: Client,
        dir: &Path,
        bars: Option<MultiProgress>,
    ) -> Result<Saver, u8> {
        if let Err(e) = std::fs::create_dir_all(dir) {
            complain(format_args!("cannot create {}: {e}", dir.display()));
            return Err(code::USAGE);
        }
        Ok(Saver {
            client,
            dir: dir.to_owned(),
            bars,
            pending: FuturesUnordered::new(),
        })
    }

    /// Whether this outcome has files to save.
    pub(crate) fn wants(&self, outcome: &Outcome) -> bool {
        matches!(outcome, Ok(d) if *d.status() == JobStatus::Succeeded && !d.outputs().is_empty())
    }

    /// Starts saving the outputs of a job.
    pub(crate) fn start(&mut self, id: String, outcome: Outcome) {
        let client = self.client.clone();
        let dir = self.dir.clone();
        let bars = self.bars.clone();
        self.pending.push(Box::pin(async move {
            let outputs = match &outcome {
                Ok(d) => d.outputs().to_vec(),
                Err(_) => Vec::new(),
            };
            let saved = save_all(&client, &dir, &id, &outputs, bars.as_ref()).await;
            (id, outcome, saved)
        }));
    }

    /// Whether saves are running.
    pub(crate) fn is_busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next job whose files are all saved (or failed).
    pub(crate) async fn next(&mut self) -> Option<(String, Outcome, Vec<Saved>)> {
        self.pending.next().await
    }
}

/// Saves every output of one job, at once.
pub(crate) async fn save_all(
    client: &Client,
    dir: &Path,
    id: &str,
    outputs: &[JobOutput],
    bars: Option<&MultiProgress>,
) -> Vec<Saved> {
    join_all(
        outputs
            .iter()
            .enumerate()
            .map(|(n, out)| save_one(client, dir, id, n, out, bars)),
    )
    .await
}

async fn save_one(
    client: &Client,
    dir: &Path,
    id: &str,
    n: usize,
    output: &JobOutput,
    bars: Option<&MultiProgress>,
) -> Saved {
    let stem = format!("{id}_{n}");
    let url_ext = extension_from_url(output.url());
    // Without an extension in the URL, the content type names it: the file
    // is saved under a hidden name first, then renamed.
    let target = match &url_ext {
        Some(ext) => dir.join(format!("{stem}.{ext}")),
        None => dir.join(format!(".{stem}.download")),
    };
    let bar = bars.map(|mp| {
        // Until the first answer: no size to show yet.
        let bar = mp.add(ProgressBar::no_length());
        bar.set_style(
            ProgressStyle::with_template("  {prefix} waiting")
                .expect("the waiting template is valid"),
        );
        bar.set_prefix(stem.clone());
        bar
    });
    let mut options = DownloadOptions::new();
    if let Some(bar) = bar.clone() {
        let bytes_style = ProgressStyle::with_template(
            "  {prefix} [{bar:24}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("the download template is valid")
        .progress_chars("=> ");
        let started = std::sync::Once::new();
        options = options.on_progress(move |p| {
            started.call_once(|| bar.set_style(bytes_style.clone()));
            if let Some(total) = p.total {
                bar.set_length(total);
            }
            bar.set_position(p.bytes);
        });
    } else {
        complain(format_args!("downloading {stem}"));
    }
    let started = Instant::now();
    let result = client.download_with(output, &target, options).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let result = match result {
        Ok(d) if url_ext.is_none() => {
            let ext = d
                .content_type()
                .and_then(extension_from_content_type)
                .unwrap_or("bin");
            let path = dir.join(format!("{stem}.{ext}"));
            match std::fs::rename(&target, &path) {
                Ok(()) => Ok((path, d.bytes(), d.content_type().map(str::to_owned))),
                Err(e) => {
                    let _ = std::fs::remove_file(&target);
                    Err(FileError {
                        kind: "io",
                        message: format!("cannot rename {}: {e}", target.display()),
                        http_status: None,
                    })
                }
            }
        }
        Ok(d) => Ok((
            target.clone(),
            d.bytes(),
            d.content_type().map(str::to_owned),
        )),
        Err(e) => Err(FileError::from(e)),
    };
    match result {
        Ok((path, bytes, content_type)) => {
            if bars.is_none() {
                let secs = started.elapsed().as_secs_f64();
                complain(format_args!(
                    "saved {} ({bytes} bytes in {secs:.1}s)",
                    path.display()
                ));
            }
            Saved {
                url: output.url().to_owned(),
                path,
                result: Ok((bytes, content_type)),
            }
        }
        Err(e) => Saved {
            url: output.url().to_owned(),
            path: target,
            result: Err(e),
        },
    }
}

/// Prints a job whose files were saved: the line (text, JSON or live),
/// and each failed download on stderr.
pub(crate) fn print_saved(
    id: &str,
    outcome: &Outcome,
    saved: &[Saved],
    format: Format,
    live: Option<&mut Live>,
) {
    match (format, live) {
        (Format::Json, _) => {
            let files = saved.iter().map(file_json).collect();
            emit(&JobLine::new(id, outcome).with_files(files).to_json());
        }
        (Format::Text, Some(live)) => {
            live.finish(id, outcome);
            let mp = live.multi();
            for s in saved.iter().filter(|s| s.result.is_ok()) {
                let line = format!("  saved {}", s.path.display());
                let _ = mp.println(printable(&line));
            }
        }
        (Format::Text, None) => emit(&text_line(id, outcome, saved)),
    }
    for s in saved {
        if let Err(e) = &s.result {
            complain(format_args!(
                "{id}: download of {} failed: {}",
                s.url, e.message
            ));
        }
    }
}

/// The exit code of a job's saves: [`code::ERROR`] when one failed.
pub(crate) fn exit_code(saved: &[Saved]) -> u8 {
    if saved.iter().any(|s| s.result.is_err()) {
        code::ERROR
    } else {
        code::OK
    }
}

/// `<id> succeeded <path> <path>…`; a file that failed shows as
/// `download-failed:<url>`.
fn text_line(id: &str, outcome: &Outcome, saved: &[Saved]) -> String {
    let status = match outcome {
        Ok(d) => d.status().as_str().to_owned(),
        Err(e) => return format!("{id} error: {e}"),
    };
    let mut line = format!("{id} {status}");
    for s in saved {
        line.push(' ');
        match &s.result {
            Ok(_) => line.push_str(&s.path.display().to_string()),
            Err(_) => {
                line.push_str("download-failed:");
                line.push_str(&s.url);
            }
        }
    }
    line
}

fn file_json(s: &Saved) -> FileJson<'_> {
    match &s.result {
        Ok((bytes, content_type)) => FileJson {
            url: &s.url,
            path: Some(s.path.display().to_string()),
            bytes: Some(*bytes),
            content_type: content_type.as_deref(),
            error: None,
        },
        Err(e) => FileJson {
            url: &s.url,
            path: None,
            bytes: None,
            content_type: None,
            error: Some(e),
        },
    }
}

/// Whether byte bars can be drawn: stdout and stderr on a terminal.
pub(crate) fn bars_on_terminal(format: Format) -> Option<MultiProgress> {
    (format == Format::Text && std::io::stdout().is_terminal())
        .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()))
}
