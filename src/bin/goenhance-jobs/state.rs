//! `wait --state FILE`: waits that survive Ctrl-C, a kill or a reboot.
//!
//! The ids are recorded in a SQLite file before anything is polled. Run
//! again with the same file (ids optional), the command prints the results
//! the file already holds without polling them again, and goes on with the
//! unfinished jobs and what is left of their deadlines. The exit code
//! covers every job in the file.

use std::path::Path;
use std::pin::pin;

use goenhance_jobs::track::{SqliteStore, Tracker};
use goenhance_jobs::{Client, JobQuery, JobStatus};
use tokio::sync::{mpsc, oneshot};

use crate::args::Format;
use crate::report::{code, exit_code, Outcome};
use crate::{complain, print_outcome, Tally};

/// The worker name of the command in its file: a rerun takes back the
/// jobs of the run it follows at once.
const WORKER: &str = "goenhance-jobs-cli";

/// Jobs read from the file at once when listing what it knows.
const PAGE: usize = 500;

fn count(tally: &mut Tally, outcome: &Outcome) {
    tally.code = tally.code.max(exit_code(outcome));
    match outcome {
        Ok(d) if *d.status() == JobStatus::Failed => tally.failed += 1,
        Ok(_) => tally.succeeded += 1,
        Err(_) => tally.errors += 1,
    }
}

/// Records `queries` in the file at `path`, prints what is known, waits on
/// the rest. Returns the exit code.
pub(crate) async fn wait(
    path: &Path,
    client: Client,
    queries: Vec<JobQuery>,
    format: Format,
) -> u8 {
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
    let tracker = Tracker::builder(client, store)
        .worker_id(WORKER)
        .max_handlers(256)
        .build();
    for query in queries {
        if let Err(e) = tracker.track(query, serde_json::Value::Null).await {
            complain(format_args!("cannot record jobs in the state file: {e}"));
            return code::ERROR;
        }
    }
    let mut tally = Tally::default();
    let mut known = 0usize;
    let mut cursor = None;
    loop {
        let page = match tracker.delivered(PAGE, cursor).await {
            Ok(p) => p,
            Err(e) => {
                complain(format_args!("cannot read the state file: {e}"));
                return code::ERROR;
            }
        };
        for job in page.items() {
            let outcome: Outcome = job.detail().cloned().map_err(Clone::clone);
            count(&mut tally, &outcome);
            print_outcome(job.query().img_uuid(), &outcome, format, None);
            known += 1;
        }
        match page.next() {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut left = match tracker.pending().await {
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
    // The handler hands each outcome over and returns once it is printed;
    // the delivery is recorded after that, so a job is printed in every
    // run until one has printed it and recorded so.
    let (tx, mut rx) = mpsc::unbounded_channel::<(JobQuery, Outcome, oneshot::Sender<()>)>();
    let mut run = pin!(tracker.run(move |done| {
        let tx = tx.clone();
        async move {
            let (printed, wait) = oneshot::channel();
            let outcome = done.detail().cloned().map_err(Clone::clone);
            tx.send((done.query().clone(), outcome, printed))?;
            wait.await?;
            Ok(())
        }
    }));
    let mut ctrl_c = pin!(tokio::signal::ctrl_c());
    let mut can_interrupt = true;
    while left > 0 {
        tokio::select! {
            got = rx.recv() => {
                let Some((query, outcome, printed)) = got else { break };
                count(&mut tally, &outcome);
                print_outcome(query.img_uuid(), &outcome, format, None);
                let _ = printed.send(());
                left -= 1;
            }
            ended = &mut run => {
                if let Err(e) = ended {
                    complain(format_args!("the state file cannot be used: {e}"));
                }
                return code::ERROR;
            }
            signal = &mut ctrl_c, if can_interrupt => {
                if signal.is_err() {
                    can_interrupt = false;
                    continue;
                }
                complain(format_args!(
                    "interrupted; run again with --state {} to go on",
                    path.display()
                ));
                return code::INTERRUPTED;
            }
        }
    }
    // Let the last deliveries be recorded before the file is closed.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while tracker.pending().await.is_ok_and(|n| n > 0) {
            tokio::select! {
                _ = &mut run => break,
                () = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
            }
        }
    })
    .await;
    tally.code
}
