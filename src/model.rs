//! The job model: statuses, outputs and details, as the API describes a
//! job. [`JobDetail::from_json`] decodes the API's envelope into them.
//!
//! ```
//! use goenhance_jobs::{JobDetail, JobStatus, OutputKind};
//!
//! let body = br#"{"code":0,"msg":"Success","data":{"img_uuid":"37c82d82","status":"success",
//!   "type":"mx-image-face-swap","json":[{"type":"image","value":"https://cdn.example/x.jpg"}]}}"#;
//! let detail = JobDetail::from_json(body)?;
//! assert_eq!(detail.status(), &JobStatus::Succeeded); // "success" and "completed" alike
//! assert!(detail.is_terminal());
//! assert_eq!(detail.outputs()[0].kind(), &OutputKind::Image);
//! # Ok::<(), goenhance_jobs::Error>(())
//! ```

use std::fmt;
use std::time::SystemTime;

use serde_json::{Map, Value};

/// The state of a job.
///
/// The API's documentation says `completed` while the API answers `success`:
/// both are [`Succeeded`](JobStatus::Succeeded). Matching is
/// case-insensitive; `failed` and `error` are [`Failed`](JobStatus::Failed);
/// `pending`, `queued` and `waiting` are [`Pending`](JobStatus::Pending);
/// anything else is kept as [`Unknown`](JobStatus::Unknown), which is not
/// terminal.
///
/// ```
/// use goenhance_jobs::JobStatus;
///
/// assert_eq!(JobStatus::from_raw("SUCCESS"), JobStatus::Succeeded);
/// assert_eq!(JobStatus::from_raw("completed"), JobStatus::Succeeded);
/// assert_eq!(JobStatus::from_raw("WAITING"), JobStatus::Pending);
/// assert_eq!(JobStatus::from_raw("paused"), JobStatus::Unknown("paused".into()));
/// assert!(!JobStatus::from_raw("paused").is_terminal());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobStatus {
    /// Accepted, not started: `pending`, `queued`, `waiting`.
    Pending,
    /// Running: `processing`.
    Processing,
    /// Finished with results: `success` or `completed`.
    Succeeded,
    /// Finished without results: `failed` or `error`.
    Failed,
    /// A status this crate does not know, as the API spelled it.
    Unknown(String),
}

impl JobStatus {
    /// Normalises a status string as the API sends it.
    pub fn from_raw(raw: &str) -> JobStatus {
        const TABLE: [(&str, JobStatus); 9] = [
            ("pending", JobStatus::Pending),
            ("processing", JobStatus::Processing),
            ("success", JobStatus::Succeeded),
            ("completed", JobStatus::Succeeded),
            ("failed", JobStatus::Failed),
            ("error", JobStatus::Failed),
            ("queued", JobStatus::Pending),
            ("waiting", JobStatus::Pending),
            ("succeeded", JobStatus::Succeeded),
        ];
        TABLE
            .iter()
            .find(|(name, _)| raw.eq_ignore_ascii_case(name))
            .map_or_else(|| JobStatus::Unknown(raw.to_owned()), |(_, s)| s.clone())
    }

    /// Whether the job has finished: [`Succeeded`](JobStatus::Succeeded) or
    /// [`Failed`](JobStatus::Failed).
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }

    /// The normalised name: `pending`, `processing`, `succeeded`, `failed`,
    /// or the raw string of an unknown status.
    pub fn as_str(&self) -> &str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Unknown(raw) => raw,
        }
    }

    /// The normalised name, with `unknown` for every status this crate
    /// does not know: one of five values, whatever the server sent, for
    /// metric labels and machine-readable output.
    ///
    /// ```
    /// use goenhance_jobs::JobStatus;
    ///
    /// assert_eq!(JobStatus::from_raw("success").label(), "succeeded");
    /// assert_eq!(JobStatus::from_raw("paused").label(), "unknown");
    /// assert_eq!(JobStatus::from_raw("paused").as_str(), "paused");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a result file is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// `image`
    Image,
    /// `video`
    Video,
    /// Any other kind, as the API spelled it.
    Other(String),
}

impl OutputKind {
    /// Normalises a kind string (case-insensitive).
    pub fn from_raw(raw: &str) -> OutputKind {
        if raw.eq_ignore_ascii_case("image") {
            OutputKind::Image
        } else if raw.eq_ignore_ascii_case("video") {
            OutputKind::Video
        } else {
            OutputKind::Other(raw.to_owned())
        }
    }

    /// `image`, `video` or the raw name.
    pub fn as_str(&self) -> &str {
        match self {
            OutputKind::Image => "image",
            OutputKind::Video => "video",
            OutputKind::Other(raw) => raw,
        }
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One result of a finished job: a signed URL that expires (12 to 24
/// hours), so download it soon.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobOutput {
    pub(crate) kind: OutputKind,
    pub(crate) url: String,
    pub(crate) expires_at: Option<SystemTime>,
}

impl JobOutput {
    /// Makes an output, for tests and fakes.
    pub fn new(kind: OutputKind, url: impl Into<String>) -> JobOutput {
        JobOutput {
            kind,
            url: url.into(),
            expires_at: None,
        }
    }

    /// Sets when the URL stops working (for tests and fakes).
    pub fn set_expires_at(&mut self, at: SystemTime) {
        self.expires_at = Some(at);
    }

    /// When the signed URL stops working, if the API said so
    /// (`link_expired_at` of the job detail, RFC 3339 or Unix seconds).
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Image, video or another kind.
    pub fn kind(&self) -> &OutputKind {
        &self.kind
    }

    /// The signed URL of the file.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// What the API says about one job.
///
/// Fields the crate does not know are kept in [`extra`](JobDetail::extra),
/// so nothing the API adds is lost.
#[derive(Clone, Debug, PartialEq)]
pub struct JobDetail {
    pub(crate) img_uuid: String,
    pub(crate) status: JobStatus,
    pub(crate) job_type: Option<String>,
    pub(crate) model_id: Option<String>,
    pub(crate) start_time: Option<SystemTime>,
    pub(crate) end_time: Option<SystemTime>,
    pub(crate) outputs: Vec<JobOutput>,
    pub(crate) request_id: Option<String>,
    pub(crate) extra: Map<String, Value>,
}

impl JobDetail {
    /// Makes a detail with a status and nothing else, for tests and fakes.
    pub fn new(img_uuid: impl Into<String>, status: JobStatus) -> JobDetail {
        JobDetail {
            img_uuid: img_uuid.into(),
            status,
            job_type: None,
            model_id: None,
            start_time: None,
            end_time: None,
            outputs: Vec::new(),
            request_id: None,
            extra: Map::new(),
        }
    }

    /// Sets the job type (for tests and fakes).
    pub fn set_job_type(&mut self, job_type: impl Into<String>) {
        self.job_type = Some(job_type.into());
    }

    /// Adds an output (for tests and fakes).
    pub fn push_output(&mut self, output: JobOutput) {
        self.outputs.push(output);
    }

    /// Sets the start and end times (for tests and fakes).
    pub fn set_times(&mut self, start: Option<SystemTime>, end: Option<SystemTime>) {
        self.start_time = start;
        self.end_time = end;
    }

    /// [`set_job_type`](Self::set_job_type) in a chain, inside the crate.
    pub(crate) fn with_job_type(mut self, job_type: impl Into<String>) -> JobDetail {
        self.set_job_type(job_type);
        self
    }

    /// [`push_output`](Self::push_output) in a chain, inside the crate.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_output(mut self, output: JobOutput) -> JobDetail {
        self.push_output(output);
        self
    }

    /// [`set_times`](Self::set_times) in a chain, inside the crate.
    pub(crate) fn with_times(
        mut self,
        start: Option<SystemTime>,
        end: Option<SystemTime>,
    ) -> JobDetail {
        self.set_times(start, end);
        self
    }

    /// The job id.
    pub fn img_uuid(&self) -> &str {
        &self.img_uuid
    }

    /// The normalised status.
    pub fn status(&self) -> &JobStatus {
        &self.status
    }

    /// The result files: empty until the job succeeded.
    pub fn outputs(&self) -> &[JobOutput] {
        &self.outputs
    }

    /// The job kind (`type` or `job_type` in the body), e.g. `mx-v2v`.
    pub fn job_type(&self) -> Option<&str> {
        self.job_type.as_deref()
    }

    /// The model id, e.g. `"7"` (numbers are kept as their decimal text).
    pub fn model_id(&self) -> Option<&str> {
        self.model_id.as_deref()
    }

    /// When the job started, by the server's clock.
    pub fn start_time(&self) -> Option<SystemTime> {
        self.start_time
    }

    /// When the job ended, by the server's clock; `None` until it has.
    pub fn end_time(&self) -> Option<SystemTime> {
        self.end_time
    }

    /// Whether the status is terminal (succeeded or failed).
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// The envelope's `request_id`, when the API sent one.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The fields of `data` this crate does not model (e.g. `img_url`,
    /// `duration`, `link_expired_at`), and any time field that was not valid
    /// RFC 3339, as sent.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }

    /// How long the job ran by the server's clock, once it has ended.
    pub fn run_time(&self) -> Option<std::time::Duration> {
        self.end_time?.duration_since(self.start_time?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases = [
            ("pending", JobStatus::Pending),
            ("PENDING", JobStatus::Pending),
            ("queued", JobStatus::Pending),
            ("Waiting", JobStatus::Pending),
            ("processing", JobStatus::Processing),
            ("success", JobStatus::Succeeded),
            ("Completed", JobStatus::Succeeded),
            ("failed", JobStatus::Failed),
            ("ERROR", JobStatus::Failed),
            ("", JobStatus::Unknown(String::new())),
            ("Paused", JobStatus::Unknown("Paused".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(JobStatus::from_raw(raw), want, "{raw}");
        }
    }
}
