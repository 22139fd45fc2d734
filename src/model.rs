//! The job model: queries, details, statuses and outputs, and the decoding
//! of the API's envelope.
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

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::error::Error;

/// The longest job id accepted.
pub const MAX_ID_LEN: usize = 128;

/// A validated job id (`img_uuid`) to ask about.
///
/// Ids are 1 to 128 characters from `[A-Za-z0-9._~-]` (URL-unreserved), so
/// they go into the request URI unchanged; anything else is refused before a
/// request is built. Cloning is cheap.
///
/// A query may carry a deadline: [`PollLayer`](crate::PollLayer) sets the
/// wait's deadline here, and the layers below it (retry, timeout) never sleep
/// or wait past it.
///
/// ```
/// use goenhance_jobs::JobQuery;
///
/// let q = JobQuery::new("5334c57d-8443-4b79-ba24-8539c2163c74")?;
/// assert_eq!(q.img_uuid(), "5334c57d-8443-4b79-ba24-8539c2163c74");
/// assert!(JobQuery::new("x\r\nHost: evil").is_err());
/// # Ok::<(), goenhance_jobs::Error>(())
/// ```
#[derive(Clone)]
pub struct JobQuery {
    id: Arc<str>,
    deadline: Option<Instant>,
    pub(crate) attempt: u32,
}

impl JobQuery {
    /// Validates `id` and makes a query of it.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when `id` is empty, longer than 128
    /// characters, or has a character outside `[A-Za-z0-9._~-]`.
    pub fn new(id: impl AsRef<str>) -> Result<JobQuery, Error> {
        let id = id.as_ref();
        validate_id(id)?;
        Ok(JobQuery {
            id: Arc::from(id),
            deadline: None,
            attempt: 1,
        })
    }

    /// The job id.
    pub fn img_uuid(&self) -> &str {
        &self.id
    }

    /// A query of an id that was validated before.
    pub(crate) fn from_shared_id(id: Arc<str>) -> JobQuery {
        JobQuery {
            id,
            deadline: None,
            attempt: 1,
        }
    }

    /// The same query with a deadline that the layers below must respect.
    pub fn with_deadline(mut self, deadline: Instant) -> JobQuery {
        self.deadline = Some(deadline);
        self
    }

    /// The deadline set by [`with_deadline`](JobQuery::with_deadline), if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

pub(crate) fn validate_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid_input("job id is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid_input(format!(
            "job id is {} bytes long, longer than {MAX_ID_LEN}",
            id.len()
        )));
    }
    if let Some(pos) = id.bytes().position(|b| !is_id_byte(b)) {
        return Err(Error::invalid_input(format!(
            "job id has a character outside [A-Za-z0-9._~-] at byte {pos}"
        )));
    }
    Ok(())
}

fn is_id_byte(b: u8) -> bool {
    ID_BYTES[b as usize]
}

/// `[A-Za-z0-9._~-]` as a table: every call of `Client::get` checks its id.
static ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'-');
        b += 1;
    }
    table
};

impl fmt::Debug for JobQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("JobQuery");
        d.field("img_uuid", &&*self.id);
        if let Some(deadline) = self.deadline {
            d.field("deadline", &deadline);
        }
        d.finish()
    }
}

impl fmt::Display for JobQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Two queries are equal when they name the same job.
impl PartialEq for JobQuery {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for JobQuery {}

impl std::hash::Hash for JobQuery {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl FromStr for JobQuery {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        JobQuery::new(s)
    }
}

impl TryFrom<&str> for JobQuery {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        JobQuery::new(s)
    }
}

impl TryFrom<String> for JobQuery {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        JobQuery::new(s)
    }
}

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
    kind: OutputKind,
    url: String,
    expires_at: Option<SystemTime>,
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

    /// Sets when the URL stops working (builder style, for tests and fakes).
    pub fn with_expires_at(mut self, at: SystemTime) -> JobOutput {
        self.expires_at = Some(at);
        self
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
    img_uuid: String,
    status: JobStatus,
    job_type: Option<String>,
    model_id: Option<String>,
    start_time: Option<SystemTime>,
    end_time: Option<SystemTime>,
    outputs: Vec<JobOutput>,
    request_id: Option<String>,
    extra: Map<String, Value>,
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

    /// Sets the job type (builder style, for tests and fakes).
    pub fn with_job_type(mut self, job_type: impl Into<String>) -> JobDetail {
        self.job_type = Some(job_type.into());
        self
    }

    /// Adds an output (builder style, for tests and fakes).
    pub fn with_output(mut self, output: JobOutput) -> JobDetail {
        self.outputs.push(output);
        self
    }

    /// Sets the start and end times (builder style, for tests and fakes).
    pub fn with_times(mut self, start: Option<SystemTime>, end: Option<SystemTime>) -> JobDetail {
        self.start_time = start;
        self.end_time = end;
        self
    }

    /// Decodes a job-detail response body: the envelope
    /// `{"code": 0, "msg": …, "data": {…}}`.
    ///
    /// # Errors
    ///
    /// - [`Error::is_api`] when `code != 0`, with [`Error::api_code`] and the
    ///   message;
    /// - [`Error::is_decode`] when the body is not JSON, has no `code`, has
    ///   `data: null` with code 0, or a field has the wrong type.
    pub fn from_json(body: &[u8]) -> Result<JobDetail, Error> {
        decode(body, None)
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

/// Decodes a body; `expected` is the id that was asked for, used when the
/// body has none and checked when it has one.
///
/// Strings that only feed a decision (the envelope's `msg` on success, the
/// status, a duplicate `type`, the times, the output kinds) are borrowed
/// from the body where it has no escapes; only what [`JobDetail`] keeps is
/// copied out.
pub(crate) fn decode(body: &[u8], expected: Option<&str>) -> Result<JobDetail, Error> {
    let env: Envelope<'_> = match serde_json::from_slice(body) {
        Ok(env) => env,
        Err(e) => {
            return Err(refused_envelope(body)
                .unwrap_or_else(|| Error::decode("invalid body").with_source(e)))
        }
    };
    if env.code != 0 {
        return Err(Error::api(env.code, env.msg.as_deref().unwrap_or("")));
    }
    let data = env
        .data
        .ok_or_else(|| Error::decode("data is null although code is 0"))?;
    let img_uuid = match (data.img_uuid, expected) {
        (Some(got), Some(want)) if got != want => {
            return Err(Error::decode(format!(
                "answer is for job {}, not the one asked for",
                crate::error::truncate(&got, MAX_ID_LEN)
            )))
        }
        (Some(got), _) => got.into_owned(),
        (None, Some(want)) => want.to_owned(),
        (None, None) => return Err(Error::decode("data has no img_uuid")),
    };
    let status = data
        .status
        .ok_or_else(|| Error::decode("data has no status"))?;
    let mut extra = data.extra;
    let start_time = parse_time("start_time", data.start_time, &mut extra);
    let end_time = parse_time("end_time", data.end_time, &mut extra);
    let job_type = match (data.job_type, data.type_) {
        (Some(a), Some(b)) => {
            if a != b {
                extra.insert("type".to_owned(), Value::String(b.into_owned()));
            }
            Some(a.into_owned())
        }
        (a, b) => a.or(b).map(Cow::into_owned),
    };
    let mut outputs = data.outputs;
    if let Some(at) = extra.get("link_expired_at").and_then(expiry_time) {
        for o in &mut outputs {
            o.expires_at = Some(at);
        }
    }
    Ok(JobDetail {
        img_uuid,
        status: JobStatus::from_raw(&status),
        job_type,
        model_id: data.model_id.map(Cow::into_owned),
        start_time,
        end_time,
        outputs,
        request_id: env.request_id.map(Cow::into_owned),
        extra,
    })
}

/// The API's error in a body that did not decode as a job detail: an error
/// envelope (`code != 0`) whose `data` is not a job detail (`""`, `[]`, an
/// object of other fields) is still that error, not a garbled body.
fn refused_envelope(body: &[u8]) -> Option<Error> {
    #[derive(Deserialize)]
    struct Head {
        code: i64,
        #[serde(default)]
        msg: Option<Value>,
    }
    let head: Head = serde_json::from_slice(body).ok()?;
    if head.code == 0 {
        return None;
    }
    let msg = match head.msg {
        Some(Value::String(s)) => s,
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        _ => String::new(),
    };
    Some(Error::api(head.code, &msg))
}

/// `link_expired_at` as a time: RFC 3339, or Unix seconds (milliseconds
/// when the number is that large) as a number or a string.
fn expiry_time(value: &Value) -> Option<SystemTime> {
    let secs = match value {
        Value::String(s) => {
            if let Ok(t) =
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            {
                return Some(t.into());
            }
            s.trim().parse::<f64>().ok()?
        }
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    let secs = if secs > 1e11 { secs / 1000.0 } else { secs };
    if !secs.is_finite() || secs <= 0.0 {
        return None;
    }
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::try_from_secs_f64(secs).ok()?)
}

fn parse_time(
    name: &str,
    raw: Option<Cow<'_, str>>,
    extra: &mut Map<String, Value>,
) -> Option<SystemTime> {
    let raw = raw.filter(|s| !s.is_empty())?;
    match time::OffsetDateTime::parse(&raw, &time::format_description::well_known::Rfc3339) {
        Ok(t) => Some(t.into()),
        Err(_) => {
            tracing::debug!(field = name, "time field is not RFC 3339; kept in extra");
            extra.insert(name.to_owned(), Value::String(raw.into_owned()));
            None
        }
    }
}

/// A string borrowed from the body when it can be, else owned.
type Text<'de> = Option<Cow<'de, str>>;

#[derive(Deserialize)]
struct Envelope<'a> {
    code: i64,
    #[serde(default, borrow, deserialize_with = "lenient_cow")]
    msg: Text<'a>,
    #[serde(default, borrow, deserialize_with = "lenient_cow")]
    request_id: Text<'a>,
    #[serde(default, borrow)]
    data: Option<RawData<'a>>,
}

#[derive(Default)]
struct RawData<'de> {
    img_uuid: Text<'de>,
    status: Text<'de>,
    job_type: Text<'de>,
    type_: Text<'de>,
    model_id: Text<'de>,
    start_time: Text<'de>,
    end_time: Text<'de>,
    outputs: Vec<JobOutput>,
    extra: Map<String, Value>,
}

enum Field {
    ImgUuid,
    Status,
    JobType,
    Type,
    ModelId,
    StartTime,
    EndTime,
    Json,
    Other(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "img_uuid" => Field::ImgUuid,
                    "status" => Field::Status,
                    "job_type" => Field::JobType,
                    "type" => Field::Type,
                    "model_id" => Field::ModelId,
                    "start_time" => Field::StartTime,
                    "end_time" => Field::EndTime,
                    "json" => Field::Json,
                    other => Field::Other(other.to_owned()),
                })
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Field, E> {
                match self.visit_str::<E>(&v)? {
                    Field::Other(_) => Ok(Field::Other(v)),
                    known => Ok(known),
                }
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawData<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DataVisitor;
        impl<'de> Visitor<'de> for DataVisitor {
            type Value = RawData<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a job detail object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawData<'de>, A::Error> {
                let mut data = RawData::default();
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::ImgUuid => data.img_uuid = map.next_value::<Lenient<'de>>()?.0,
                        Field::Status => data.status = map.next_value::<Lenient<'de>>()?.0,
                        Field::JobType => data.job_type = map.next_value::<Lenient<'de>>()?.0,
                        Field::Type => data.type_ = map.next_value::<Lenient<'de>>()?.0,
                        Field::ModelId => data.model_id = map.next_value::<Lenient<'de>>()?.0,
                        Field::StartTime => data.start_time = map.next_value::<Lenient<'de>>()?.0,
                        Field::EndTime => data.end_time = map.next_value::<Lenient<'de>>()?.0,
                        Field::Json => data.outputs = map.next_value::<Outputs>()?.0,
                        Field::Other(name) => {
                            let value: Value = map.next_value()?;
                            data.extra.insert(name, value);
                        }
                    }
                }
                Ok(data)
            }
        }
        let data: RawData<'de> = d.deserialize_map(DataVisitor)?;
        Ok(data)
    }
}

/// The `json` list of outputs, or null (no outputs).
struct Outputs(Vec<JobOutput>);

impl<'de> Deserialize<'de> for Outputs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OutputsVisitor;
        impl<'de> Visitor<'de> for OutputsVisitor {
            type Value = Outputs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of outputs or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Outputs, E> {
                Ok(Outputs(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Outputs, E> {
                Ok(Outputs(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Outputs, D::Error> {
                d.deserialize_seq(OutputsVisitor)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Outputs, A::Error> {
                let mut outputs = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(o) = seq.next_element::<RawOutput<'de>>()? {
                    outputs.push(JobOutput {
                        kind: OutputKind::from_raw(o.kind.as_deref().unwrap_or("")),
                        url: o.value,
                        expires_at: None,
                    });
                }
                Ok(Outputs(outputs))
            }
        }
        d.deserialize_option(OutputsVisitor)
    }
}

#[derive(Deserialize)]
struct RawOutput<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "lenient_cow")]
    kind: Text<'a>,
    value: String,
}

/// A string field that also accepts a number (kept as its decimal text), a
/// boolean, or null; borrowed from the body when it has no escapes.
struct Lenient<'de>(Text<'de>);

impl<'de> Deserialize<'de> for Lenient<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient_cow(d).map(Lenient)
    }
}

fn lenient_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Text<'de>, D::Error> {
    struct LenientVisitor;
    impl<'de> Visitor<'de> for LenientVisitor {
        type Value = Text<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, a number or null")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(LenientVisitor)
        }
    }
    d.deserialize_option(LenientVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules() {
        for bad in [
            "",
            "a b",
            "x\r\nHost: evil",
            "../x",
            "a&b=c",
            "é",
            "a/b",
            "a?b",
            "a#b",
            "a%20",
        ] {
            let err = JobQuery::new(bad).unwrap_err();
            assert!(err.is_invalid_input(), "{bad:?}");
        }
        assert!(JobQuery::new("x".repeat(129)).is_err());
        assert!(JobQuery::new("x".repeat(128)).is_ok());
        assert!(JobQuery::new("Az09._~-").is_ok());
    }

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

    #[test]
    fn numbers_are_kept_as_text_and_type_mismatch_is_kept() {
        let d = JobDetail::from_json(
            br#"{"code":0,"data":{"img_uuid":"a","status":"pending","model_id":7,"type":"x","job_type":"y"}}"#,
        )
        .unwrap();
        assert_eq!(d.model_id(), Some("7"));
        assert_eq!(d.job_type(), Some("y"));
        assert_eq!(d.extra().get("type"), Some(&Value::String("x".into())));
    }

    #[test]
    fn bad_time_is_kept_in_extra() {
        let d = JobDetail::from_json(
            br#"{"code":0,"data":{"img_uuid":"a","status":"pending","start_time":"yesterday"}}"#,
        )
        .unwrap();
        assert_eq!(d.start_time(), None);
        assert_eq!(
            d.extra().get("start_time"),
            Some(&Value::String("yesterday".into()))
        );
    }

    #[test]
    fn an_error_envelope_is_the_api_error_whatever_its_data() {
        for body in [
            &br#"{"code":40001,"msg":"invalid token","data":""}"#[..],
            br#"{"data":[],"msg":"invalid token","code":40001}"#,
            br#"{"code":40001,"msg":"invalid token","data":{"status":[1]}}"#,
        ] {
            let err = JobDetail::from_json(body).unwrap_err();
            assert!(err.is_api(), "{err:?}");
            assert_eq!(err.api_code(), Some(40001));
            assert!(err.to_string().contains("invalid token"), "{err}");
            assert!(!err.is_transient());
        }
        let err = JobDetail::from_json(br#"{"code":0,"data":[]}"#).unwrap_err();
        assert!(err.is_decode());
    }

    #[test]
    fn answer_for_another_job_is_refused() {
        let body = br#"{"code":0,"data":{"img_uuid":"other","status":"success"}}"#;
        let err = decode(body, Some("mine")).unwrap_err();
        assert!(err.is_decode());
        assert!(err.is_transient());
        let d = decode(br#"{"code":0,"data":{"status":"success"}}"#, Some("mine")).unwrap();
        assert_eq!(d.img_uuid(), "mine");
    }
}
