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
mod out;
mod report;
mod state;
mod waits;

use std::io::{self, BufRead};
use std::process::ExitCode;

use clap::Parser;
use goenhance_jobs::{
    Client, ClientBuilder, HyperTransport, JobQuery, PollPolicy, ENV_API_KEY, ENV_BASE_URL,
};

use crate::args::{Cli, Command, ConnArgs, GetArgs, WaitArgs};
use crate::download::Saver;
use crate::live::Live;
use crate::out::complain;
use crate::report::{code, exit_code};
use crate::waits::{live_display, print_outcome, run_waits};

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
    // The folder is checked (made if missing) before anything is sent: a
    // folder that cannot be used exits 2, which says nothing was sent.
    let bars = args
        .download
        .as_ref()
        .and_then(|_| download::bars_on_terminal(args.out.output));
    let saver = match &args.download {
        Some(dir) => match Saver::new(client.clone(), dir, bars.clone()) {
            Ok(s) => Some(s),
            Err(code) => return code,
        },
        None => None,
    };
    let outcome = client.get(id).await;
    if let (Some(dir), Some(saver)) = (&args.download, &saver) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_lines_skip_blanks_and_trim() {
        let input = "  a1 \n\n\tb2\n   \nc3";
        assert_eq!(read_ids(input.as_bytes()).unwrap(), ["a1", "b2", "c3"]);
    }
}
