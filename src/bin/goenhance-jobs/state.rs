//! `wait --state FILE`: waits that survive Ctrl-C, a kill or a reboot.
//!
//! The ids are recorded in a SQLite file before anything is polled. Run
//! again with the same file (ids optional), the command prints the results
//! the file already holds without polling them again, and goes on with the
//! unfinished jobs and what is left of their deadlines. Two runs on one
//! file at once cooperate: each is a worker of its own, each job is
//! printed (and its files saved) by one of them, and both end once the
//! file has no unfinished job. Results are kept in the file for `--keep`
//! (7 days by default), then pruned. Ctrl-C or SIGTERM stops a run
//! gracefully: deliveries under way finish (2 s at most) and the jobs it
//! held are released, so another run goes on with them at once.

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::Duration;

use goenhance_jobs::track::{SqliteStore, Tracker};
use goenhance_jobs::{Client, JobQuery, JobStatus};
use tokio::sync::{mpsc, oneshot};

use crate::args::Format;
use crate::download::{self, Saved};
use crate::report::{code, exit_code, Outcome};
use crate::{complain, print_outcome, Tally};

/// Jobs read from the file at once when listing what it knows.
const PAGE: usize = 500;

/// How long deliveries under way may take to finish after Ctrl-C.
const GRACE: Duration = Duration::from_secs(2);

/// How often a run looks whether the file still has unfinished jobs
/// (another run may have finished them).
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// What `wait --state` was asked.
pub(crate) struct StateRun<'a> {
    pub(crate) path: &'a Path,
    pub(crate) download: Option<&'a Path>,
    pub(crate) keep: Duration,
    pub(crate) format: Format,
}

/// This process's worker name in the file: its own, so that two runs on
/// one file are two workers.
fn worker_id() -> String {
    format!("goenhance-jobs-cli-{}", std::process::id())
}

fn count(tally: &mut Tally, outcome: &Outcome) {
    tally.code = tally.code.max(exit_code(outcome));
    match outcome {
        Ok(d) if *d.status() == JobStatus::Failed => tally.failed += 1,
        Ok(_) => tally.succeeded += 1,
        Err(_) => tally.errors += 1,
    }
}

fn wants_files(outcome: &Outcome) -> bool {
    matches!(outcome, Ok(d) if *d.status() == JobStatus::Succeeded && !d.outputs().is_empty())
}

/// One delivery, handed from the handler to the printer.
type Delivered = (JobQuery, Outcome, Option<Vec<Saved>>, oneshot::Sender<()>);

/// Records `queries` in the file, prints what is known, waits on the rest.
/// Returns the exit code.
pub(crate) async fn wait(run: StateRun<'_>, client: Client, queries: Vec<JobQuery>) -> u8 {
    let path = run.path;
    let format = run.format;
    if let Some(dir) = run.download {
        if let Err(e) = std::fs::create_dir_all(dir) {
            complain(format_args!("cannot create {}: {e}", dir.display()));
            return code::USAGE;
        }
    }
    let store = match SqliteStore::open(path).await {
        Ok(s) => s,
        Err(e) => {
            complain(format_args!(
                "cannot open the state file {}: {e}",
                path.display()
            ));
            return code::ERROR;
        }
    };
    let tracker = Tracker::builder(client.clone(), store)
        .worker_id(worker_id())
        .max_handlers(256)
        .retention(Some(run.keep))
        .shutdown_grace(GRACE)
        .build();
    for query in queries {
        if let Err(e) = tracker.track(query, serde_json::Value::Null).await {
            complain(format_args!("cannot record jobs in the state file: {e}"));
            return code::ERROR;
        }
    }
    // Results older than --keep are dropped before the rest is printed.
    if let Err(e) = tracker.prune().await {
        complain(format_args!("cannot prune the state file: {e}"));
        return code::ERROR;
    }
    let mut tally = Tally::default();
    let known = match print_known(&tracker, format, &mut tally).await {
        Ok(n) => n,
        Err(code) => return code,
    };
    let left = match tracker.pending().await {
        Ok(n) => n,
        Err(e) => {
            complain(format_args!("cannot read the state file: {e}"));
            return code::ERROR;
        }
    };
    if known == 0 && left == 0 {
        complain("no job ids given and none in the state file");
        return code::USAGE;
    }
    // The handler saves the files and hands the outcome over, and returns
    // once it is printed; the delivery is recorded after that, so a job is
    // printed in every run until one has printed it and recorded so.
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivered>();
    let dir: Option<PathBuf> = run.download.map(Path::to_owned);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    let stop = async move {
        let _ = stop_rx.await;
    };
    let mut run_fut = pin!(tracker.run_until(
        move |done| {
            let (tx, client, dir) = (tx.clone(), client.clone(), dir.clone());
            async move {
                let outcome: Outcome = done.detail().cloned().map_err(Clone::clone);
                let id = done.query().img_uuid();
                let saved = match (&dir, &outcome) {
                    (Some(dir), Ok(d)) if wants_files(&outcome) => {
                        Some(download::save_all(&client, dir, id, d.outputs(), None).await)
                    }
                    (Some(_), _) => Some(Vec::new()),
                    (None, _) => None,
                };
                let (printed, wait) = oneshot::channel();
                tx.send((done.query().clone(), outcome, saved, printed))?;
                wait.await?;
                Ok(())
            }
        },
        stop
    ));
    let mut ctrl_c = pin!(interrupted());
    let mut can_interrupt = true;
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            got = rx.recv() => {
                let Some((query, outcome, saved, printed)) = got else { break };
                count(&mut tally, &outcome);
                let id = query.img_uuid();
                match saved {
                    Some(saved) => {
                        let failed = download::exit_code(&saved);
                        if failed != code::OK {
                            tally.download_failures += 1;
                        }
                        tally.code = tally.code.max(failed);
                        download::print_saved(id, &outcome, &saved, format, None);
                    }
                    None => print_outcome(id, &outcome, format, None),
                }
                let _ = printed.send(());
            }
            ended = &mut run_fut => {
                if stop_tx.is_none() {
                    // Stopped after Ctrl-C: what it held is released, so
                    // the next run goes on at once.
                    return code::INTERRUPTED;
                }
                if let Err(e) = ended {
                    complain(format_args!("the state file cannot be used: {e}"));
                }
                return code::ERROR;
            }
            signal = &mut ctrl_c, if can_interrupt && stop_tx.is_some() => {
                if signal.is_err() {
                    can_interrupt = false;
                    continue;
                }
                complain(format_args!(
                    "interrupted; run again with --state {} to go on",
                    path.display()
                ));
                if let Some(tx) = stop_tx.take() {
                    let _ = tx.send(());
                }
            }
            _ = check.tick(), if stop_tx.is_some() => {
                // Done when the file has no unfinished job: this run's
                // deliveries recorded, and any other run's too.
                if tracker.pending().await.is_ok_and(|n| n == 0) {
                    break;
                }
            }
        }
    }
    tally.code
}

/// Prints the results the file holds from earlier runs; returns how many.
async fn print_known(tracker: &Tracker, format: Format, tally: &mut Tally) -> Result<usize, u8> {
    let mut known = 0;
    let mut cursor = None;
    loop {
        let page = match tracker.delivered(PAGE, cursor).await {
            Ok(p) => p,
            Err(e) => {
                complain(format_args!("cannot read the state file: {e}"));
                return Err(code::ERROR);
            }
        };
        for job in page.items() {
            let outcome: Outcome = job.detail().cloned().map_err(Clone::clone);
            count(tally, &outcome);
            print_outcome(job.query().img_uuid(), &outcome, format, None);
            known += 1;
        }
        match page.next() {
            Some(next) => cursor = Some(next),
            None => return Ok(known),
        }
    }
}

/// Ctrl-C, or (on Unix) SIGTERM, as a supervisor stops a process.
async fn interrupted() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
