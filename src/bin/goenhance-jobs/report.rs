//! What a finished job looks like on the way out: exit codes, JSON lines
//! and plain text lines.

use goenhance_jobs::{Error, JobDetail, JobStatus};
use serde::Serialize;

use crate::out::printable;

/// Exit codes; the largest that applies wins.
pub(crate) mod code {
    pub(crate) const OK: u8 = 0;
    pub(crate) const JOB_FAILED: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const DEADLINE: u8 = 3;
    pub(crate) const ERROR: u8 = 4;
    /// Interrupted by Ctrl-C, as shells report a SIGINT.
    pub(crate) const INTERRUPTED: u8 = 130;
}

pub(crate) type Outcome = Result<JobDetail, Error>;

/// The exit code one job's outcome calls for.
pub(crate) fn exit_code(outcome: &Outcome) -> u8 {
    match outcome {
        Ok(d) if *d.status() == JobStatus::Failed => code::JOB_FAILED,
        Ok(_) => code::OK,
        Err(e) if e.is_deadline() || e.is_stall() => code::DEADLINE,
        Err(e) if e.is_invalid_input() => code::USAGE,
        Err(_) => code::ERROR,
    }
}

/// The detail to show for an outcome: the answer, or what a wait saw last
/// before its deadline or stall.
fn detail_of(outcome: &Outcome) -> Option<&JobDetail> {
    match outcome {
        Ok(d) => Some(d),
        Err(e) => e.last_detail(),
    }
}

/// What is said of a job whose wait ended without a result.
pub(crate) const NO_RESULT: &str = "no result: the wait scheduler stopped before this job ended";

/// The JSON line of a job whose wait ended without a result.
pub(crate) fn no_result_json(img_uuid: &str) -> String {
    serde_json::json!({
        "img_uuid": img_uuid,
        "status": null,
        "job_type": null,
        "outputs": [],
        "error": {"kind": "closed", "message": NO_RESULT},
    })
    .to_string()
}

/// An error with its causes on one line: what failed, then why.
pub(crate) fn chain(e: &Error) -> String {
    format!("{e:#}")
}

/// Why a file was not saved.
#[derive(Debug, Serialize)]
pub(crate) struct FileError {
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) http_status: Option<u16>,
}

impl From<Error> for FileError {
    fn from(e: Error) -> Self {
        FileError {
            kind: e.kind().as_str(),
            message: chain(&e),
            http_status: e.status().map(|s| s.as_u16()),
        }
    }
}

/// A file in a JSON line: where it was saved, or why it was not.
#[derive(Debug, Serialize)]
pub(crate) struct FileJson<'a> {
    pub(crate) url: &'a str,
    pub(crate) path: Option<String>,
    pub(crate) bytes: Option<u64>,
    pub(crate) content_type: Option<&'a str>,
    pub(crate) error: Option<&'a FileError>,
}

/// One JSON line: `{"img_uuid", "status", "job_type", "outputs", "error"}`.
#[derive(Debug, Serialize)]
pub(crate) struct JobLine<'a> {
    img_uuid: &'a str,
    status: Option<&'static str>,
    job_type: Option<&'a str>,
    outputs: Vec<OutputJson<'a>>,
    error: Option<ErrorJson>,
    /// With `--download`: the saved files.
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Vec<FileJson<'a>>>,
}

#[derive(Debug, Serialize)]
struct OutputJson<'a> {
    kind: &'a str,
    url: &'a str,
}

#[derive(Debug, Serialize)]
struct ErrorJson {
    kind: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_code: Option<i64>,
}

impl<'a> JobLine<'a> {
    pub(crate) fn new(img_uuid: &'a str, outcome: &'a Outcome) -> Self {
        let detail = detail_of(outcome);
        JobLine {
            img_uuid,
            status: detail.map(|d| d.status().label()),
            job_type: detail.and_then(JobDetail::job_type),
            outputs: detail
                .map(JobDetail::outputs)
                .unwrap_or_default()
                .iter()
                .map(|o| OutputJson {
                    kind: o.kind().as_str(),
                    url: o.url(),
                })
                .collect(),
            error: outcome.as_ref().err().map(|e| ErrorJson {
                kind: e.kind().as_str(),
                message: chain(e),
                http_status: e.status().map(|s| s.as_u16()),
                api_code: e.api_code(),
            }),
            files: None,
        }
    }

    /// Adds the saved files (`--download`).
    pub(crate) fn with_files(mut self, files: Vec<FileJson<'a>>) -> Self {
        self.files = Some(files);
        self
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job line always serialises")
    }
}

/// One plain line: `<id> <status> <url> <url>…`, or `<id> error: <message>`,
/// escaped for a terminal ([`printable`]).
pub(crate) fn text_line(img_uuid: &str, outcome: &Outcome) -> String {
    let line = match outcome {
        Ok(d) => {
            let mut line = format!("{img_uuid} {}", d.status().as_str());
            for out in d.outputs() {
                line.push(' ');
                line.push_str(out.url());
            }
            line
        }
        Err(e) => format!("{img_uuid} error: {}", chain(e)),
    };
    printable(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use goenhance_jobs::{JobOutput, OutputKind};
    use serde_json::{json, Value};

    fn parse(line: &JobLine<'_>) -> Value {
        serde_json::from_str(&line.to_json()).unwrap()
    }

    #[test]
    fn success_line_lists_outputs() {
        let mut detail = JobDetail::new("a1", JobStatus::Succeeded);
        detail.set_job_type("mx-v2v");
        detail.push_output(JobOutput::new(
            OutputKind::Video,
            "https://cdn.example/a1.mp4",
        ));
        let outcome = Ok(detail);
        assert_eq!(
            parse(&JobLine::new("a1", &outcome)),
            json!({"img_uuid": "a1", "status": "succeeded", "job_type": "mx-v2v",
                   "outputs": [{"kind": "video", "url": "https://cdn.example/a1.mp4"}],
                   "error": null})
        );
        assert_eq!(
            text_line("a1", &outcome),
            "a1 succeeded https://cdn.example/a1.mp4"
        );
        assert_eq!(exit_code(&outcome), code::OK);
    }

    #[test]
    fn unknown_status_is_unknown_in_json_and_raw_in_text() {
        let outcome = Ok(JobDetail::new("b2", JobStatus::Unknown("paused".into())));
        assert_eq!(parse(&JobLine::new("b2", &outcome))["status"], "unknown");
        assert_eq!(text_line("b2", &outcome), "b2 paused");
    }

    #[test]
    fn text_lines_escape_what_the_server_sent() {
        let mut detail = JobDetail::new("a1", JobStatus::Succeeded);
        detail.push_output(JobOutput::new(
            OutputKind::Video,
            "https://cdn.example/x\nb2 succeeded https://evil.example/\u{1b}[2J",
        ));
        assert_eq!(
            text_line("a1", &Ok(detail)),
            "a1 succeeded https://cdn.example/x\\nb2 succeeded https://evil.example/\\u001b[2J"
        );
    }

    #[test]
    fn failed_job_exits_one() {
        let outcome = Ok(JobDetail::new("c3", JobStatus::Failed));
        assert_eq!(exit_code(&outcome), code::JOB_FAILED);
        assert_eq!(parse(&JobLine::new("c3", &outcome))["outputs"], json!([]));
    }

    #[test]
    fn error_without_detail_has_null_status() {
        let err = goenhance_jobs::JobQuery::new("bad id").unwrap_err();
        let outcome = Err(err);
        let v = parse(&JobLine::new("bad id", &outcome));
        assert_eq!(v["status"], Value::Null);
        assert_eq!(v["job_type"], Value::Null);
        assert_eq!(v["error"]["kind"], "invalid_input");
        assert!(v["error"].get("http_status").is_none());
        assert_eq!(exit_code(&outcome), code::USAGE);
    }
}
