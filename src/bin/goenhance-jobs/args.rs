//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Environment:
  GOENHANCE_API_KEY   the API key (required by get and wait; never printed)
  GOENHANCE_BASE_URL  the API base URL (default https://api.goenhance.ai)

Behind a proxy or a private CA:
  HTTPS_PROXY         proxy for https URLs, http://[user:password@]host:port
                      (also https_proxy; ALL_PROXY/all_proxy for any URL); the
                      proxy sees only a CONNECT: the key travels inside TLS
  NO_PROXY            hosts reached directly, comma separated (example.com
                      also matches its subdomains; 10.0.0.0/8; * for all);
                      loopback is always reached directly
  SSL_CERT_FILE       a PEM bundle read instead of the system's CA store
  SSL_CERT_DIR        a directory of PEM certificates, likewise
  --ca-file FILE      also trust the CA certificates in FILE (PEM), such as a
                      TLS-inspecting gateway's; or set GOENHANCE_CA_FILE
  Trusted by default: the Mozilla roots built in plus the system's store.
  Certificates are always verified.

Exit codes (the largest that applies wins):
  0  every job succeeded
  1  some job failed
  2  usage error, invalid job id or missing API key (nothing was sent)
  3  a wait reached its deadline or stalled
  4  any other error: HTTP, API, transport, decode, attempt timeout,
     a failed download";

/// Follow GoEnhance generation jobs: fetch a job's status, or wait until
/// jobs finish and print their result URLs.
#[derive(Debug, Parser)]
#[command(name = "goenhance-jobs", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Fetch a job's status once.
    Get(GetArgs),
    /// Wait until every job is finished, printing each as it ends.
    Wait(WaitArgs),
    /// Run against a built-in fake server on loopback: no account needed.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct GetArgs {
    /// The job id (`img_uuid`).
    pub(crate) id: String,

    /// Save the job's outputs, if it succeeded, in DIR as
    /// <img_uuid>_<n>.<ext> (DIR is made if missing).
    #[arg(long, value_name = "DIR")]
    pub(crate) download: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) conn: ConnArgs,

    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct WaitArgs {
    /// Job ids (`img_uuid`); more can come from --stdin.
    #[arg(required_unless_present_any = ["stdin", "state"])]
    pub(crate) ids: Vec<String>,

    /// Record the jobs in this SQLite file before polling; run again with
    /// the same file (ids optional) after Ctrl-C, a kill or a reboot to go
    /// on with the unfinished ones and print those already done.
    #[arg(long, value_name = "FILE")]
    pub(crate) state: Option<std::path::PathBuf>,

    /// With --state: keep the results of done jobs in the file this long
    /// (e.g. 12h, 7d), printed by every run until then, then pruned.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d", requires = "state")]
    pub(crate) keep: Duration,

    /// Also read job ids from standard input, one a line (blank lines are
    /// skipped, surrounding whitespace trimmed).
    #[arg(long)]
    pub(crate) stdin: bool,

    /// Give up on a job that has not finished after this long (e.g. 90s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30m")]
    pub(crate) timeout: Duration,

    /// Poll every DURATION instead of the adaptive schedule.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) poll_interval: Option<Duration>,

    /// Give up on a job whose status has not changed for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) stall_after: Option<Duration>,

    /// Save each succeeded job's outputs in DIR as <img_uuid>_<n>.<ext>
    /// (DIR is made if missing), as soon as the job ends.
    #[arg(long, value_name = "DIR")]
    pub(crate) download: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) conn: ConnArgs,

    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ConnArgs {
    /// Timeout of one request, body included.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub(crate) attempt_timeout: Duration,

    /// Also trust the CA certificates in this PEM file (a TLS-inspecting
    /// proxy's CA, say).
    #[arg(long, value_name = "FILE", env = "GOENHANCE_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Output format: text, or one JSON object a line.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub(crate) output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
