//! `goenhance-jobs`: fetch a GoEnhance job's status, or wait until jobs
//! finish and print their result URLs.
//!
//! ```text
//! goenhance-jobs get <ID> [--output text|json]
//! goenhance-jobs wait <ID>... [--stdin] [--timeout 30m] [--output text|json]
//! goenhance-jobs wait --state FILE [ID]...
//! goenhance-jobs demo
//! ```
//!
//! The key comes from `GOENHANCE_API_KEY`, the base URL from
//! `GOENHANCE_BASE_URL`. Exit codes are listed in `--help` and in
//! [`report::code`].

mod args;
mod demo;
mod live;
mod report;
mod state;

use std::io::{self, BufRead, IsTerminal, Write};
use std::pin::pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use goenhance_jobs::{Client, ClientBuilder, JobQuery, PollPolicy, ENV_API_KEY, ENV_BASE_URL};

use crate::args::{Cli, Command, ConnArgs, Format, GetArgs, WaitArgs};
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

/// Prints a message for the user on stderr.
fn complain(message: impl std::fmt::Display) {
    eprintln!("goenhance-jobs: {message}");
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
        return state::wait(path, client, queries, args.out.output).await;
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let live = live_display(args.out.output).then(|| Live::new(&ids));
    run_waits(&client, queries, args.out.output, live)
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
                complain(format_args!("job id {id:?}: {e}"));
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
    Ok(builder)
}

fn build(builder: ClientBuilder) -> Result<Client, u8> {
    builder.build().map_err(|e| {
        complain(format_args!("cannot set up the client: {e}"));
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
}

/// Waits on every query through the client's scheduler, printing each job
/// as it ends; Ctrl-C stops the waits.
pub(crate) async fn run_waits(
    client: &Client,
    queries: Vec<JobQuery>,
    format: Format,
    mut live: Option<Live>,
) -> Tally {
    let mut tally = Tally::default();
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
    let mut refresh = tokio::time::interval(Duration::from_millis(100));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            next = results.next() => {
                let Some((query, outcome)) = next else { break };
                let id = query.img_uuid();
                if let (Ok(d), Some(live)) = (&outcome, &live) {
                    if !d.is_terminal() {
                        live.update(id, d.status().as_str());
                        continue;
                    }
                }
                tally.code = tally.code.max(exit_code(&outcome));
                match &outcome {
                    Ok(d) if *d.status() == goenhance_jobs::JobStatus::Failed => tally.failed += 1,
                    Ok(_) => tally.succeeded += 1,
                    Err(_) => tally.errors += 1,
                }
                print_outcome(id, &outcome, format, live.as_mut());
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
            complain(format_args!("{id}: {e}"));
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
