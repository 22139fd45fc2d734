//! Many waits at once, through the client's scheduler: each job printed as
//! it ends, its files saved with `--download`, Ctrl-C to stop.

use std::io::{self, IsTerminal};
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::{Client, JobQuery};

use crate::args::Format;
use crate::download::{self, Saver};
use crate::live::Live;
use crate::out::{complain, emit};
use crate::report::{self, code, exit_code, text_line, JobLine, Outcome};

/// Text output on a terminal gets the live display; other output does not.
pub(crate) fn live_display(format: Format) -> bool {
    format == Format::Text && io::stdout().is_terminal()
}

/// How a run of waits ended.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) code: u8,
    pub(crate) succeeded: usize,
    pub(crate) failed: usize,
    pub(crate) errors: usize,
    /// Jobs with a file that could not be saved.
    pub(crate) download_failures: usize,
}

/// Waits on every query through the client's scheduler, printing each job
/// as it ends; Ctrl-C stops the waits.
pub(crate) async fn run_waits(
    client: &Client,
    queries: Vec<JobQuery>,
    format: Format,
    mut live: Option<Live>,
    mut saver: Option<Saver>,
) -> Tally {
    let mut tally = Tally::default();
    // Every job given gets a line: those the scheduler never answered for
    // are reported at the end, and make the exit code an error.
    let mut unanswered: std::collections::HashMap<String, usize> = Default::default();
    for query in &queries {
        *unanswered.entry(query.img_uuid().to_owned()).or_default() += 1;
    }
    // The live display also shows the statuses on the way; the other
    // outputs need only each job's end.
    let mut results: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = (JobQuery, Outcome)> + Send>,
    > = if live.is_some() {
        Box::pin(client.watch_all(queries))
    } else {
        Box::pin(client.wait_all(queries))
    };
    let mut ctrl_c = pin!(tokio::signal::ctrl_c());
    let mut can_interrupt = true;
    let mut waits_done = false;
    let mut refresh = tokio::time::interval(Duration::from_millis(100));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        if waits_done && !saver.as_ref().is_some_and(Saver::is_busy) {
            break;
        }
        tokio::select! {
            next = results.next(), if !waits_done => {
                let Some((query, outcome)) = next else {
                    waits_done = true;
                    continue;
                };
                let id = query.img_uuid();
                if let (Ok(d), Some(live)) = (&outcome, &live) {
                    if !d.is_terminal() {
                        live.update(id, d.status().as_str());
                        continue;
                    }
                }
                if let Some(n) = unanswered.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        unanswered.remove(id);
                    }
                }
                tally.code = tally.code.max(exit_code(&outcome));
                match &outcome {
                    Ok(d) if *d.status() == goenhance_jobs::JobStatus::Failed => tally.failed += 1,
                    Ok(_) => tally.succeeded += 1,
                    Err(_) => tally.errors += 1,
                }
                if let Some(saver) = saver.as_mut().filter(|s| s.wants(&outcome)) {
                    saver.start(id.to_owned(), outcome);
                    continue;
                }
                print_outcome(id, &outcome, format, live.as_mut());
            }
            Some((id, outcome, saved)) = async { saver.as_mut()?.next().await },
                if saver.as_ref().is_some_and(Saver::is_busy) => {
                let failed = download::exit_code(&saved);
                if failed != code::OK {
                    tally.download_failures += 1;
                }
                tally.code = tally.code.max(failed);
                download::print_saved(&id, &outcome, &saved, format, live.as_mut());
            }
            _ = refresh.tick(), if live.is_some() => {
                if let Some(live) = &live {
                    live.refresh();
                }
            }
            signal = &mut ctrl_c, if can_interrupt => {
                if signal.is_err() {
                    // No signal handler: let Ctrl-C kill the process as usual.
                    can_interrupt = false;
                    continue;
                }
                if let Some(live) = &live {
                    live.close(true);
                }
                complain("interrupted");
                tally.code = code::INTERRUPTED;
                return tally;
            }
        }
    }
    if let Some(live) = &live {
        live.close(false);
    }
    let mut missing: Vec<_> = unanswered.into_iter().collect();
    missing.sort();
    for (id, n) in missing {
        for _ in 0..n {
            tally.code = tally.code.max(code::ERROR);
            tally.errors += 1;
            match format {
                Format::Json => emit(&report::no_result_json(&id)),
                Format::Text => emit(&format!("{id} error: {}", report::NO_RESULT)),
            }
            complain(format_args!("{id}: {}", report::NO_RESULT));
        }
    }
    tally
}

/// Prints one finished job: on stdout as text, JSON or a live line, and an
/// error also on stderr (unless the live display already showed it there).
pub(crate) fn print_outcome(id: &str, outcome: &Outcome, format: Format, live: Option<&mut Live>) {
    let shown_on_terminal = live.is_some() && io::stderr().is_terminal();
    match (format, live) {
        (Format::Json, _) => emit(&JobLine::new(id, outcome).to_json()),
        (Format::Text, Some(live)) => live.finish(id, outcome),
        (Format::Text, None) => emit(&text_line(id, outcome)),
    }
    if let Err(e) = outcome {
        if !shown_on_terminal {
            complain(format_args!("{id}: {}", report::chain(e)));
        }
    }
}
