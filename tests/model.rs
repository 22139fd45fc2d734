//! Every fixture body decodes to exactly the values it holds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goenhance_jobs::{JobDetail, JobStatus, OutputKind};
use serde_json::json;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn at_ms(ms: u64) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

#[test]
fn success_example_from_the_api_reference() {
    let d = JobDetail::from_json(&fixture("success.json")).unwrap();
    assert_eq!(d.img_uuid(), "37c82d82-8765-4031-8cb3-722df8a668e6");
    assert_eq!(d.status(), &JobStatus::Succeeded);
    assert!(d.is_terminal());
    assert_eq!(d.job_type(), Some("mx-image-face-swap"));
    assert_eq!(d.model_id(), Some("-1"));
    assert_eq!(d.start_time(), at_ms(1_728_644_132_596));
    assert_eq!(d.end_time(), at_ms(1_728_644_160_338));
    assert_eq!(d.run_time(), Some(Duration::from_millis(27_742)));
    assert_eq!(d.outputs().len(), 1);
    assert_eq!(d.outputs()[0].kind(), &OutputKind::Image);
    assert_eq!(
        d.outputs()[0].url(),
        "https://openapi-static.goenhance.ai/user/2024/10/11/9dfdb4b5-7ef7-4fe7-93ff-b9eb76cc431d_0.jpg?q-sign-algorithm=sha1&q-sign-time=1728644159;1728687359&q-key-time=1728644159;1728687359&q-header-list=host&q-url-param-list=&q-signature=cd1e9c6ef14d36c1e034d6bd3a3fe1aaee41b15f"
    );
    assert!(d.extra().is_empty());
    assert_eq!(d.request_id(), None);
}

#[test]
fn pending_example_from_the_api_reference() {
    let d = JobDetail::from_json(&fixture("pending.json")).unwrap();
    assert_eq!(d.img_uuid(), "5334c57d-8443-4b79-ba24-8539c2163c74");
    assert_eq!(d.status(), &JobStatus::Pending);
    assert!(!d.is_terminal());
    assert_eq!(d.job_type(), Some("mx-v2v"));
    assert_eq!(d.model_id(), Some("7"));
    assert_eq!(d.start_time(), at_ms(1_720_788_552_541));
    assert_eq!(d.end_time(), None);
    assert!(d.outputs().is_empty());
    assert!(d.extra().is_empty());
}

#[test]
fn completed_is_succeeded() {
    let d = JobDetail::from_json(&fixture("completed.json")).unwrap();
    assert_eq!(d.img_uuid(), "94c4e27a-d020-4494-9731-7831f2578d61");
    assert_eq!(d.status(), &JobStatus::Succeeded);
    assert_eq!(d.end_time(), at_ms(1_720_788_880_002));
    assert_eq!(d.outputs()[0].kind(), &OutputKind::Video);
    assert_eq!(
        d.outputs()[0].url(),
        "https://openapi-static.goenhance.ai/user/2024/07/12/94c4e27a_0.mp4"
    );
}

#[test]
fn failed_job() {
    let d = JobDetail::from_json(&fixture("failed.json")).unwrap();
    assert_eq!(d.status(), &JobStatus::Failed);
    assert!(d.is_terminal());
    assert_eq!(d.job_type(), Some("mx-text2img"));
    assert_eq!(d.model_id(), Some("5"));
    assert_eq!(d.start_time(), at_ms(1_728_644_400_000));
    assert_eq!(d.end_time(), at_ms(1_728_644_409_500));
    assert!(d.outputs().is_empty());
}

#[test]
fn unknown_fields_are_kept() {
    let d = JobDetail::from_json(&fixture("processing-extra-fields.json")).unwrap();
    assert_eq!(d.status(), &JobStatus::Processing);
    assert_eq!(d.model_id(), Some("2000"));
    assert_eq!(d.request_id(), Some("req-7f3a"));
    assert_eq!(d.extra().len(), 3);
    assert_eq!(d.extra()["img_url"], json!(""));
    assert_eq!(d.extra()["duration"], json!(196.629));
    assert_eq!(d.extra()["link_expired_at"], json!(null));
}

#[test]
fn waiting_in_capitals_is_pending() {
    let d = JobDetail::from_json(&fixture("unknown-status.json")).unwrap();
    assert_eq!(d.status(), &JobStatus::Pending);
    assert!(!d.is_terminal());
}

#[test]
fn an_unknown_status_is_kept_raw_and_not_terminal() {
    let body = br#"{"code":0,"msg":"Success","data":{"img_uuid":"x","status":"Rendering"}}"#;
    let d = JobDetail::from_json(body).unwrap();
    assert_eq!(d.status(), &JobStatus::Unknown("Rendering".into()));
    assert_eq!(d.status().as_str(), "Rendering");
    assert!(!d.is_terminal());
}

#[test]
fn api_error_carries_code_and_message() {
    let err = JobDetail::from_json(&fixture("api-error.json")).unwrap_err();
    assert!(err.is_api());
    assert!(!err.is_transient());
    assert_eq!(err.api_code(), Some(40001));
    assert_eq!(err.status(), None);
    assert_eq!(err.to_string(), "api error code 40001: invalid token");
}

#[test]
fn data_null_with_code_zero_is_a_decode_error() {
    let err = JobDetail::from_json(&fixture("data-null.json")).unwrap_err();
    assert!(err.is_decode());
    assert_eq!(
        err.to_string(),
        "cannot decode the job detail: data is null although code is 0"
    );
}

#[test]
fn garbage_is_a_decode_error_with_a_source() {
    for body in [
        &b""[..],
        b"<html>502</html>",
        b"{\"code\":0,\"da",
        b"[]",
        b"{\"msg\":\"no code\"}",
    ] {
        let err = JobDetail::from_json(body).unwrap_err();
        assert!(err.is_decode(), "{body:?}");
        assert!(err.is_transient());
        assert!(std::error::Error::source(&err).is_some());
    }
}

#[test]
fn a_wrong_field_type_is_a_decode_error() {
    let body = br#"{"code":0,"data":{"img_uuid":"x","status":"pending","json":"not a list"}}"#;
    assert!(JobDetail::from_json(body).unwrap_err().is_decode());
}
