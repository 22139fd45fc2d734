//! The baseline users write: the job-detail answer decoded into a
//! `#[derive(Deserialize)]` struct of the documented fields. Shared by the
//! `decode` and `stack` benches so both measure against the same struct.

/// The answer as users decode it by hand: the documented fields, derived.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
pub struct Envelope {
    pub code: i64,
    msg: String,
    pub data: Option<Data>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
pub struct Data {
    img_uuid: String,
    pub status: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    job_type: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    model_id: Option<String>,
    json: Option<Vec<Output>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
pub struct Output {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}
