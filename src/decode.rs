//! Decoding of the API's envelope, `{"code": 0, "msg": …, "data": {…}}`,
//! into a [`JobDetail`]: lenient where the API is loose (numbers for
//! strings, a byte order mark, a null output), strict where a wrong answer
//! would mislead (another job's id, `data: null` with code 0).

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::model::{JobDetail, JobOutput, JobStatus, OutputKind};
use crate::query::MAX_ID_LEN;

impl JobDetail {
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
}

/// Decodes a body; `expected` is the id that was asked for, used when the
/// body has none and checked when it has one.
///
/// Strings that only feed a decision (the envelope's `msg` on success, the
/// status, a duplicate `type`, the times, the output kinds) are borrowed
/// from the body where it has no escapes; only what [`JobDetail`] keeps is
/// copied out.
pub(crate) fn decode(body: &[u8], expected: Option<&str>) -> Result<JobDetail, Error> {
    // A byte order mark before the JSON is noise some servers add.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
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
        (Some(got), Some(want)) if !same_job(&got, want) => {
            return Err(Error::decode(format!(
                "answer is for job {}, not the one asked for",
                crate::text::truncate(&got, MAX_ID_LEN)
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

/// Whether an answer's id names the job asked about: UUIDs compare without
/// regard to case (RFC 9562, section 4), other ids exactly.
pub(crate) fn same_job(got: &str, want: &str) -> bool {
    got == want || (is_uuid(got) && is_uuid(want) && got.eq_ignore_ascii_case(want))
}

/// The 8-4-4-4-12 hex form of a UUID.
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The API's error in a body that did not decode as a job detail: an error
/// envelope (`code != 0`) whose `data` is not a job detail (`""`, `[]`, an
/// object of other fields) is still that error, not a garbled body.
fn refused_envelope(body: &[u8]) -> Option<Error> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(deserialize_with = "lenient_code")]
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
    #[serde(deserialize_with = "lenient_code")]
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
                    // An output without a URL (`"value": null`) is not one
                    // that can be fetched: it is left out, not fatal.
                    let Some(url) = o.value else {
                        tracing::debug!("output without a url left out");
                        continue;
                    };
                    outputs.push(JobOutput {
                        kind: OutputKind::from_raw(o.kind.as_deref().unwrap_or("")),
                        url,
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
    #[serde(default)]
    value: Option<String>,
}

/// The envelope's `code`: a number, or a number written as a string
/// (`"0"`), as some gateways re-encode it.
pub(crate) fn lenient_code<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct CodeVisitor;
    impl Visitor<'_> for CodeVisitor {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer code")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("code out of range"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.trim()
                .parse()
                .map_err(|_| E::custom("code is a string that is not an integer"))
        }
    }
    d.deserialize_any(CodeVisitor)
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
