//! `goenhance-jobs`: fetch a GoEnhance job's status, or wait until jobs
//! finish and print their result URLs.
//!
//! ```text
//! goenhance-jobs get <ID> [--download DIR] [--output text|json]
//! goenhance-jobs wait <ID>... [--stdin] [--timeout 30m] [--download DIR] [--output text|json]
//! goenhance-jobs wait --state FILE [ID]...
//! goenhance-jobs demo
//! ```
//!
//! The key comes from `GOENHANCE_API_KEY`, the base URL from
//! `GOENHANCE_BASE_URL`. Exit codes are listed in `--help` and in
//! [`report::code`].

mod args;
mod demo;
mod download;
mod live;
mod report;
mod state;

use std::io::{self, BufRead, IsTerminal, Write};
use std::pin::pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use goenhance_jobs::{
    Client, ClientBuilder, HyperTransport, JobQuery, PollPolicy, ENV_API_KEY, ENV_BASE_URL,
};

use crate::args::{Cli, Command, ConnArgs, Format, GetArgs, WaitArgs};
use crate::download::Saver;
use crate::live::Live;
use crate::report::{code, exit_code, text_line, JobLine, Outcome};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Get(args) => get(args).await,
        Command::Wait(args) => wait(args).await,
        Command::Demo(args) => demo::run(args).await,
    };
    ExitCode::from(code)
}

/// Prints a message for the user on stderr, control characters escaped.
fn complain(message: impl std::fmt::Display) {
    let message = message.to_string();
    eprintln!("goenhance-jobs: {}", report::printable(&message));
}

/// Prints a result line on stdout. A closed pipe (`| head`) is not an
/// error worth reporting.
fn emit(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

async fn get(args: GetArgs) -> u8 {
    let queries = match validate(std::slice::from_ref(&args.id)) {
        Ok(q) => q,
        Err(code) => return code,
    };
    let client = match builder_from_env(&args.conn).and_then(build) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let id = queries[0].img_uuid();
    let outcome = client.get(id).await;
    if let Some(dir) = &args.download {
        let bars = download::bars_on_terminal(args.out.output);
        let saver = match Saver::new(client.clone(), dir, bars.clone()) {
            Ok(s) => s,
            Err(code) => return code,
        };
        if saver.wants(&outcome) {
            let outputs = outcome.as_ref().map(|d| d.outputs()).unwrap_or_default();
            let saved = download::save_all(&client, dir, id, outputs, bars.as_ref()).await;
            download::print_saved(id, &outcome, &saved, args.out.output, None);
            return exit_code(&outcome).max(download::exit_code(&saved));
        }
    }
    print_outcome(id, &outcome, args.out.output, None);
    exit_code(&outcome)
}

async fn wait(args: WaitArgs) -> u8 {
    let mut ids = args.ids.clone();
    if args.stdin {
        match read_ids(io::stdin().lock()) {
            Ok(more) => ids.extend(more),
            Err(e) => {
                complain(format_args!("cannot read job ids from stdin: {e}"));
                return code::USAGE;
            }
        }
    }
    if ids.is_empty() && args.state.is_none() {
        complain("no job ids given");
        return code::USAGE;
    }
    let queries = match validate(&ids) {
        Ok(q) => q,
        Err(code) => return code,
    };
    let mut builder = match builder_from_env(&args.conn) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let mut poll = match args.poll_interval {
        Some(every) => PollPolicy::fixed(every),
        None => PollPolicy::default(),
    };
    if let Some(after) = args.stall_after {
        poll = poll.stall_after(after);
    }
    builder = builder.poll_policy(poll).wait_timeout(args.timeout);
    let client = match build(builder) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(path) = &args.state {
        let run = state::StateRun {
            path,
            download: args.download.as_deref(),
            keep: args.keep,
            format: args.out.output,
        };
        return state::wait(run, client, queries).await;
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let live = live_display(args.out.output).then(|| Live::new(&ids));
    let saver = match &args.download {
        Some(dir) => match Saver::new(client.clone(), dir, live.as_ref().map(Live::multi)) {
            Ok(s) => Some(s),
            Err(code) => return code,
        },
        None => None,
    };
    run_waits(&client, queries, args.out.output, live, saver)
        .await
        .code
}

/// Text output on a terminal gets the live display; other output does not.
pub(crate) fn live_display(format: Format) -> bool {
    format == Format::Text && io::stdout().is_terminal()
}

/// Job ids from a reader, one a line; blank lines are skipped.
fn read_ids(reader: impl BufRead) -> io::Result<Vec<String>> {
    let mut ids = Vec::new();
    for line in reader.lines() {
        let line = line?;
        let id = line.trim();
        if !id.is_empty() {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// Checks every id before anything is sent; reports each bad one.
fn validate(ids: &[String]) -> Result<Vec<JobQuery>, u8> {
    let mut queries = Vec::with_capacity(ids.len());
    let mut bad = false;
    for id in ids {
        match JobQuery::new(id) {
            Ok(q) => queries.push(q),
            Err(e) => {
                // An id can be anything read from stdin: show its start only.
                let shown: String = id.chars().take(64).collect();
                let more = if shown.len() < id.len() { "…" } else { "" };
                complain(format_args!("job id {shown:?}{more}: {e}"));
                bad = true;
            }
        }
    }
    if bad {
        Err(code::USAGE)
    } else {
        Ok(queries)
    }
}

/// A builder with the key and base URL from the environment.
fn builder_from_env(conn: &ConnArgs) -> Result<ClientBuilder, u8> {
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(key) = var(ENV_API_KEY) else {
        complain(format_args!(
            "{ENV_API_KEY} is not set: export your GoEnhance API key in it"
        ));
        return Err(code::USAGE);
    };
    let mut builder = Client::builder()
        .api_key(key)
        .attempt_timeout(conn.attempt_timeout);
    if let Some(url) = var(ENV_BASE_URL) {
        builder = builder.base_url(&url);
    }
    if let Some(path) = &conn.ca_file {
        builder = builder.transport(transport_trusting(path)?);
    }
    Ok(builder)
}

/// The default transport, also trusting the CA certificates in `path`.
fn transport_trusting(path: &std::path::Path) -> Result<HyperTransport, u8> {
    let pem = std::fs::read(path).map_err(|e| {
        complain(format_args!("cannot read {}: {e}", path.display()));
        code::USAGE
    })?;
    let builder = HyperTransport::builder()
        .root_certificates_pem(&pem)
        .map_err(|e| {
            complain(format_args!("{}: {e}", path.display()));
            code::USAGE
        })?;
    Ok(builder.build())
}

fn build(builder: ClientBuilder) -> Result<Client, u8> {
    builder.build().map_err(|e| {
        complain(format_args!(
            "cannot set up the client: {}",
            report::chain(&e)
        ));
        code::USAGE
    })
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
fn print_outcome(id: &str, outcome: &Outcome, format: Format, live: Option<&mut Live>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_lines_skip_blanks_and_trim() {
        let input = "  a1 \n\n\tb2\n   \nc3";
        assert_eq!(read_ids(input.as_bytes()).unwrap(), ["a1", "b2", "c3"]);
    }
}
