//! How a finished wait is kept in a store: a detail as the API's own
//! envelope, an error as its kind and what it said.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, Kind, WaitReport};
use crate::model::JobDetail;

fn rfc3339(t: SystemTime) -> Value {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .map_or(Value::Null, Value::String)
}

fn detail_value(d: &JobDetail) -> Value {
    let mut data: Map<String, Value> = d.extra().clone();
    data.insert("img_uuid".into(), d.img_uuid().into());
    data.insert("status".into(), d.status().as_str().into());
    if let Some(t) = d.job_type() {
        data.insert("type".into(), t.into());
    }
    if let Some(m) = d.model_id() {
        data.insert("model_id".into(), m.into());
    }
    if let Some(t) = d.start_time() {
        data.insert("start_time".into(), rfc3339(t));
    }
    if let Some(t) = d.end_time() {
        data.insert("end_time".into(), rfc3339(t));
    }
    let outputs: Vec<Value> = d
        .outputs()
        .iter()
        .map(|o| json!({"type": o.kind().as_str(), "value": o.url()}))
        .collect();
    data.insert(
        "json".into(),
        if outputs.is_empty() {
            Value::Null
        } else {
            Value::Array(outputs)
        },
    );
    let mut env = json!({"code": 0, "msg": "success", "data": data});
    if let Some(r) = d.request_id() {
        env["request_id"] = r.into();
    }
    env
}

fn kind_name(kind: Kind) -> &'static str {
    kind.as_str()
}

fn kind_of(name: &str) -> Kind {
    Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == name)
        .unwrap_or(Kind::Closed)
}

/// The stored text of a wait's end.
pub(crate) fn encode(answer: &Result<JobDetail, Error>) -> String {
    let v = match answer {
        Ok(d) => json!({"detail": detail_value(d)}),
        Err(e) => {
            let mut err = json!({"kind": kind_name(e.kind())});
            // A transport error's message lives in its source: keep the
            // line so that a redelivery says the same.
            let message = match e.kind() {
                Kind::Transport | Kind::Certificate | Kind::ProxyAuth | Kind::Io => {
                    // What failed and why, the causes included.
                    let mut line = e.message().unwrap_or_default().to_owned();
                    let mut cause = std::error::Error::source(e);
                    while let Some(c) = cause {
                        if !line.is_empty() {
                            line.push_str(": ");
                        }
                        line.push_str(&c.to_string());
                        cause = c.source();
                    }
                    Some(line)
                }
                _ => e.message().map(str::to_owned),
            };
            if let Some(m) = message {
                err["message"] = m.into();
            }
            if let Some(s) = e.status() {
                err["status"] = s.as_u16().into();
            }
            if let Some(c) = e.api_code() {
                err["api_code"] = c.into();
            }
            if let Some(w) = e.wait_report() {
                err["waited_ms"] = u64::try_from(w.waited.as_millis())
                    .unwrap_or(u64::MAX)
                    .into();
                err["polls"] = w.polls.into();
                if let Some(d) = &w.last_detail {
                    err["last_detail"] = detail_value(d);
                }
                if let Some(s) = w.stalled_for {
                    err["stalled_ms"] = u64::try_from(s.as_millis()).unwrap_or(u64::MAX).into();
                }
            }
            json!({ "error": err })
        }
    };
    v.to_string()
}

/// The wait's end from its stored text; `Err` with the reason when the
/// text cannot be read (a corrupt row).
pub(crate) fn read(text: &str) -> Result<Result<JobDetail, Error>, String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("the stored outcome is not valid json: {e}"))?;
    if let Some(d) = v.get("detail") {
        return JobDetail::from_json(d.to_string().as_bytes())
            .map(Ok)
            .map_err(|e| format!("the stored detail cannot be read: {e}"));
    }
    if v.get("error").is_none_or(|e| !e.is_object()) {
        return Err("the stored outcome has neither detail nor error".to_owned());
    }
    Ok(decode(text))
}

/// The wait's end from its stored text.
pub(crate) fn decode(text: &str) -> Result<JobDetail, Error> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::store("a stored outcome is not valid json").with_source(e))?;
    if let Some(d) = v.get("detail") {
        return JobDetail::from_json(d.to_string().as_bytes())
            .map_err(|e| Error::store("a stored detail cannot be read").with_source(e));
    }
    let e = v
        .get("error")
        .ok_or_else(|| Error::store("a stored outcome has neither detail nor error"))?;
    let kind = kind_of(e.get("kind").and_then(Value::as_str).unwrap_or(""));
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(|m| m.to_owned().into_boxed_str());
    let status = e
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok());
    let api_code = e.get("api_code").and_then(Value::as_i64);
    let wait = matches!(kind, Kind::Deadline | Kind::Stall).then(|| WaitReport {
        waited: Duration::from_millis(e.get("waited_ms").and_then(Value::as_u64).unwrap_or(0)),
        polls: e
            .get("polls")
            .and_then(Value::as_u64)
            .map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX)),
        last_detail: e
            .get("last_detail")
            .and_then(|d| JobDetail::from_json(d.to_string().as_bytes()).ok()),
        history: Vec::new(),
        stalled_for: e
            .get("stalled_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis),
    });
    Err(Error::from_parts(kind, message, status, api_code, wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobOutput, JobStatus, OutputKind};

    #[test]
    fn a_detail_comes_back_equal() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_720_788_552_541);
        let d = JobDetail::new("job-1", JobStatus::Succeeded)
            .with_job_type("mx-v2v")
            .with_times(Some(start), Some(start + Duration::from_secs(27)))
            .with_output(JobOutput::new(
                OutputKind::Video,
                "https://cdn.example/x.mp4",
            ));
        let back = decode(&encode(&Ok(d.clone()))).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn an_error_keeps_its_kind_status_and_message() {
        let e = Error::http(StatusCode::UNAUTHORIZED, None);
        let back = decode(&encode(&Err(e.clone()))).unwrap_err();
        assert_eq!(back.status(), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(back.to_string(), e.to_string());
        let e = Error::api(40004, "job not found");
        let back = decode(&encode(&Err(e.clone()))).unwrap_err();
        assert!(back.is_api());
        assert_eq!(back.to_string(), "api error code 40004: job not found");
    }
}
