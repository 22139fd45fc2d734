//! Property tests: the decoder on arbitrary and on schema-built bodies, the
//! id rules, and ids going into the request URI unchanged.
//!
//! 256 cases per property by default (CI runs on two cores); set
//! `PROPTEST_CASES` for a longer run.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, JobDetail, JobOutput, JobQuery, JobStatus, OutputKind};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        // Shrunk failures are printed; no files are written into the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

const SUCCESS: &str = r#"{"code":0,"msg":"Success","data":{"img_uuid":"37c82d82-8765-4031-8cb3-722df8a668e6","status":"success","type":"mx-image-face-swap","start_time":"2024-10-11T10:55:32.596Z","end_time":"2024-10-11T10:56:00.338Z","model_id":"-1","json":[{"type":"image","value":"https://openapi-static.goenhance.ai/user/2024/10/11/9dfdb4b5_0.jpg?q-sign-time=1728644159;1728687359"}],"job_type":"mx-image-face-swap"}}"#;
const EXTRA: &str = r#"{"code":0,"msg":"Success","request_id":"req-7f3a","data":{"img_uuid":"c1f0e2d3-4b5a-6978-8a9b-0c1d2e3f4a5b","status":"processing","type":"mx-v2v","start_time":"2024-07-12T12:49:12.541Z","model_id":"2000","json":null,"job_type":"mx-v2v","img_url":"","duration":196.629,"link_expired_at":null}}"#;

// ---------------------------------------------------------------------------
// Arbitrary input never panics.

/// Bytes that are sometimes nowhere near JSON and sometimes a real body cut,
/// spliced or flipped, so the decoder's deeper paths are reached too.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fixture = prop_oneof![
        Just(SUCCESS.as_bytes().to_vec()),
        Just(EXTRA.as_bytes().to_vec())
    ];
    prop_oneof![
        vec(any::<u8>(), 0..600),
        (fixture.clone(), any::<prop::sample::Index>())
            .prop_map(|(b, cut)| b[..cut.index(b.len() + 1)].to_vec()),
        (
            fixture.clone(),
            vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
        )
            .prop_map(|(mut b, flips)| {
                for (at, byte) in flips {
                    let i = at.index(b.len());
                    b[i] = byte;
                }
                b
            }),
        (
            fixture,
            any::<prop::sample::Index>(),
            vec(any::<u8>(), 0..32)
        )
            .prop_map(|(b, at, insert)| {
                let i = at.index(b.len() + 1);
                [&b[..i], &insert[..], &b[i..]].concat()
            }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(body in body_bytes()) {
        match JobDetail::from_json(&body) {
            Ok(d) => prop_assert!(!d.img_uuid().is_empty() || body.windows(10).any(|w| w == b"\"img_uuid\"")),
            Err(e) => prop_assert!(e.is_decode() || e.is_api(), "{e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Ids: exactly `^[A-Za-z0-9._~-]{1,128}$` is accepted.

/// The rule, written out independently of the crate.
fn id_is_valid(s: &str) -> bool {
    let n = s.chars().count();
    (1..=128).contains(&n)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'))
}

fn valid_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~-]{1,128}"
}

fn any_id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        // Anything at all, unicode and control characters included.
        any::<String>(),
        // Mostly valid characters with now and then one that is not, and
        // lengths around the limit.
        "[A-Za-z0-9._~-]{0,140}",
        "[A-Za-z0-9._~ /?#&=%+\\r\\n\u{e9}\u{0}-]{0,130}",
        (valid_id(), any::<char>(), any::<prop::sample::Index>()).prop_map(|(s, c, at)| {
            let mut chars: Vec<char> = s.chars().collect();
            chars.insert(at.index(chars.len() + 1), c);
            chars.into_iter().collect()
        }),
        (120usize..=136).prop_map(|n| "a".repeat(n)),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ids_are_accepted_exactly_by_the_rule(s in any_id_like()) {
        match JobQuery::new(&s) {
            Ok(q) => {
                prop_assert!(id_is_valid(&s), "accepted {s:?}");
                prop_assert_eq!(q.img_uuid(), s.as_str());
            }
            Err(e) => {
                prop_assert!(!id_is_valid(&s), "refused {s:?}: {e}");
                prop_assert!(e.is_invalid_input());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Valid ids go into the URI unchanged.

fn base_url() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("https://api.goenhance.ai".to_owned()),
            Just("http://127.0.0.1:8080".to_owned()),
            Just("http://localhost".to_owned()),
            Just("http://[::1]:9".to_owned()),
            Just("https://gw.example".to_owned()),
        ],
        vec("[a-z0-9_-]{1,8}", 0..3),
        any::<bool>(),
    )
        .prop_map(|(host, segments, slash)| {
            let mut s = host;
            for seg in segments {
                s.push('/');
                s.push_str(&seg);
            }
            if slash {
                s.push('/');
            }
            s
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_ids_reach_the_uri_unchanged(id in valid_id(), base in base_url()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mock = MockTransport::new();
        mock.script(&id, [MockResponse::job(&id, "processing")]);
        let client = Client::builder()
            .base_url(&base)
            .api_key("sk-prop")
            .transport(mock.clone())
            .build()
            .unwrap();
        let detail = rt.block_on(client.get(&id)).unwrap();
        prop_assert_eq!(detail.img_uuid(), id.as_str());
        let requests = mock.requests();
        prop_assert_eq!(requests.len(), 1);
        let want = format!("{}/api/v1/jobs/detail?img_uuid={id}", base.trim_end_matches('/'));
        prop_assert_eq!(requests[0].uri.to_string(), want);
        prop_assert_eq!(requests[0].img_uuid.as_deref(), Some(id.as_str()));
        prop_assert_eq!(requests[0].method.as_str(), "GET");
        let auth = requests[0].headers.get("authorization").unwrap();
        prop_assert!(auth.is_sensitive());
        prop_assert_eq!(auth, "Bearer sk-prop");
    }
}

// ---------------------------------------------------------------------------
// Bodies built from the schema decode to exactly the values put in.

const KNOWN: [(&str, JobStatus); 9] = [
    ("pending", JobStatus::Pending),
    ("queued", JobStatus::Pending),
    ("waiting", JobStatus::Pending),
    ("processing", JobStatus::Processing),
    ("success", JobStatus::Succeeded),
    ("completed", JobStatus::Succeeded),
    ("succeeded", JobStatus::Succeeded),
    ("failed", JobStatus::Failed),
    ("error", JobStatus::Failed),
];

const DATA_FIELDS: [&str; 8] = [
    "img_uuid",
    "status",
    "job_type",
    "type",
    "model_id",
    "start_time",
    "end_time",
    "json",
];

/// A spelling in random case.
fn random_case(word: &'static str) -> impl Strategy<Value = String> {
    vec(any::<bool>(), word.len()).prop_map(move |upper| {
        word.chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

/// A raw status and what it must decode to.
fn status() -> impl Strategy<Value = (String, JobStatus)> {
    let known = (0..KNOWN.len()).prop_flat_map(|i| {
        let (word, st) = KNOWN[i].clone();
        random_case(word).prop_map(move |raw| (raw, st.clone()))
    });
    let unknown = prop_oneof![
        any::<String>(),
        "[a-zA-Z_ -]{0,16}",
        Just("paused".to_owned())
    ]
    .prop_filter("not a known spelling", |s| {
        !KNOWN.iter().any(|(w, _)| s.eq_ignore_ascii_case(w))
    })
    .prop_map(|s| (s.clone(), JobStatus::Unknown(s)));
    prop_oneof![3 => known, 1 => unknown]
}

#[derive(Debug, Clone)]
enum ModelId {
    Absent,
    Null,
    Text(String),
    Int(i64),
}

/// An instant with whole milliseconds, and an offset in minutes, as sent.
#[derive(Debug, Clone)]
struct Time {
    unix_ms: i64,
    offset_min: i32,
}

impl Time {
    fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_ms as u64)
    }

    /// RFC 3339 with milliseconds, in the offset's local time.
    fn rfc3339(&self) -> String {
        let local_ms = self.unix_ms + i64::from(self.offset_min) * 60_000;
        let days = local_ms.div_euclid(86_400_000);
        let ms_of_day = local_ms.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let (h, min, s, ms) = (
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        );
        let offset = if self.offset_min == 0 {
            "Z".to_owned()
        } else {
            let sign = if self.offset_min < 0 { '-' } else { '+' };
            let o = self.offset_min.abs();
            format!("{sign}{:02}:{:02}", o / 60, o % 60)
        };
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}{offset}")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[test]
fn civil_dates_are_right() {
    let t = Time {
        unix_ms: 1_728_643_732_596,
        offset_min: 0,
    };
    assert_eq!(t.rfc3339(), "2024-10-11T10:48:52.596Z");
    let t = Time {
        unix_ms: 951_782_400_000, // 2000-02-29T00:00:00Z
        offset_min: -90,
    };
    assert_eq!(t.rfc3339(), "2000-02-28T22:30:00.000-01:30");
}

fn time() -> impl Strategy<Value = Time> {
    (
        // 2000-01-01 .. 2100-01-01, whole milliseconds.
        946_684_800_000i64..4_102_444_800_000,
        prop_oneof![3 => Just(0), 1 => -12 * 60..=14 * 60],
    )
        .prop_map(|(unix_ms, offset_min)| Time {
            unix_ms,
            offset_min,
        })
}

#[derive(Debug, Clone)]
enum Outputs {
    Absent,
    Null,
    List(Vec<(String, OutputKind, String)>),
}

fn output() -> impl Strategy<Value = (String, OutputKind, String)> {
    let kind = prop_oneof![
        random_case("image").prop_map(|raw| (raw, OutputKind::Image)),
        random_case("video").prop_map(|raw| (raw, OutputKind::Video)),
        prop_oneof![
            Just("audio".to_owned()),
            "[a-z0-9/+. ]{0,12}",
            any::<String>()
        ]
        .prop_filter("not image or video", |s| {
            !s.eq_ignore_ascii_case("image") && !s.eq_ignore_ascii_case("video")
        })
        .prop_map(|s| (s.clone(), OutputKind::Other(s))),
    ];
    (
        kind,
        prop_oneof![
            "https://cdn\\.example/[a-z0-9/_.?=&;%-]{0,60}",
            any::<String>()
        ],
    )
        .prop_map(|((raw, kind), url)| (raw, kind, url))
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
struct Spec {
    code_msg: String,
    request_id: Option<String>,
    envelope_extra: BTreeMap<String, Value>,
    img_uuid: String,
    status: (String, JobStatus),
    job_type: Option<String>,
    type_: Option<String>,
    model_id: ModelId,
    start: Option<Time>,
    end: Option<Time>,
    outputs: Outputs,
    extra: BTreeMap<String, Value>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let job_type = prop_oneof![
        Just("mx-v2v".to_owned()),
        "[a-z0-9-]{1,20}",
        any::<String>()
    ];
    let job_types = (
        prop::option::of(job_type.clone()),
        prop::option::of(job_type),
        any::<bool>(),
    )
        .prop_map(|(a, b, same)| if same { (a.clone(), a) } else { (a, b) });
    let model_id = prop_oneof![
        Just(ModelId::Absent),
        Just(ModelId::Null),
        prop_oneof!["-?[0-9]{1,6}", any::<String>()].prop_map(ModelId::Text),
        any::<i64>().prop_map(ModelId::Int),
    ];
    let outputs = prop_oneof![
        Just(Outputs::Absent),
        Just(Outputs::Null),
        vec(output(), 0..4).prop_map(Outputs::List),
    ];
    let extra = btree_map("[a-z_]{1,12}", json_value(), 0..4).prop_map(|mut m| {
        m.retain(|k, _| !DATA_FIELDS.contains(&k.as_str()));
        m
    });
    let envelope_extra = btree_map("[a-z_]{1,10}", json_value(), 0..3).prop_map(|mut m| {
        m.retain(|k, _| !["code", "msg", "data", "request_id"].contains(&k.as_str()));
        m
    });
    (
        (
            any::<String>(),
            prop::option::of("[a-z0-9-]{1,16}"),
            envelope_extra,
        ),
        (valid_id(), status(), job_types, model_id),
        (
            prop::option::of(time()),
            prop::option::of(time()),
            outputs,
            extra,
        ),
    )
        .prop_map(
            |(
                (code_msg, request_id, envelope_extra),
                (img_uuid, status, (job_type, type_), model_id),
                (start, end, outputs, extra),
            )| Spec {
                code_msg,
                request_id,
                envelope_extra,
                img_uuid,
                status,
                job_type,
                type_,
                model_id,
                start,
                end,
                outputs,
                extra,
            },
        )
}

impl Spec {
    fn body(&self) -> Vec<u8> {
        let mut data = Map::new();
        data.insert("img_uuid".into(), json!(self.img_uuid));
        data.insert("status".into(), json!(self.status.0));
        if let Some(t) = &self.job_type {
            data.insert("job_type".into(), json!(t));
        }
        if let Some(t) = &self.type_ {
            data.insert("type".into(), json!(t));
        }
        match &self.model_id {
            ModelId::Absent => {}
            ModelId::Null => {
                data.insert("model_id".into(), Value::Null);
            }
            ModelId::Text(s) => {
                data.insert("model_id".into(), json!(s));
            }
            ModelId::Int(n) => {
                data.insert("model_id".into(), json!(n));
            }
        }
        if let Some(t) = &self.start {
            data.insert("start_time".into(), json!(t.rfc3339()));
        }
        if let Some(t) = &self.end {
            data.insert("end_time".into(), json!(t.rfc3339()));
        }
        match &self.outputs {
            Outputs::Absent => {}
            Outputs::Null => {
                data.insert("json".into(), Value::Null);
            }
            Outputs::List(list) => {
                let list = list
                    .iter()
                    .map(|(raw, _, url)| json!({"type": raw, "value": url}))
                    .collect();
                data.insert("json".into(), Value::Array(list));
            }
        }
        for (k, v) in &self.extra {
            data.insert(k.clone(), v.clone());
        }
        let mut env = Map::new();
        env.insert("code".into(), json!(0));
        env.insert("msg".into(), json!(self.code_msg));
        if let Some(r) = &self.request_id {
            env.insert("request_id".into(), json!(r));
        }
        for (k, v) in &self.envelope_extra {
            env.insert(k.clone(), v.clone());
        }
        env.insert("data".into(), Value::Object(data));
        serde_json::to_vec(&Value::Object(env)).unwrap()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn schema_bodies_decode_to_their_values(spec in spec()) {
        let body = spec.body();
        let d = JobDetail::from_json(&body).unwrap();

        prop_assert_eq!(d.img_uuid(), spec.img_uuid.as_str());
        prop_assert_eq!(d.status(), &spec.status.1);
        prop_assert_eq!(d.is_terminal(), matches!(spec.status.1, JobStatus::Succeeded | JobStatus::Failed));

        // `job_type` and `type` are one field; `job_type` wins, and a `type`
        // that differs is kept in `extra`.
        let mut want_extra: Map<String, Value> = spec.extra.clone().into_iter().collect();
        let want_type = match (&spec.job_type, &spec.type_) {
            (Some(a), Some(b)) => {
                if a != b {
                    want_extra.insert("type".into(), json!(b));
                }
                Some(a.as_str())
            }
            (a, b) => a.as_deref().or(b.as_deref()),
        };
        prop_assert_eq!(d.job_type(), want_type);

        let want_model = match &spec.model_id {
            ModelId::Absent | ModelId::Null => None,
            ModelId::Text(s) => Some(s.clone()),
            ModelId::Int(n) => Some(n.to_string()),
        };
        prop_assert_eq!(d.model_id(), want_model.as_deref());

        prop_assert_eq!(d.start_time(), spec.start.as_ref().map(Time::system_time));
        prop_assert_eq!(d.end_time(), spec.end.as_ref().map(Time::system_time));
        if let (Some(s), Some(e)) = (&spec.start, &spec.end) {
            if e.unix_ms >= s.unix_ms {
                prop_assert_eq!(d.run_time(), Some(Duration::from_millis((e.unix_ms - s.unix_ms) as u64)));
            }
        }

        let want_outputs: Vec<JobOutput> = match &spec.outputs {
            Outputs::Absent | Outputs::Null => Vec::new(),
            Outputs::List(list) => list
                .iter()
                .map(|(_, kind, url)| JobOutput::new(kind.clone(), url.clone()))
                .collect(),
        };
        prop_assert_eq!(d.outputs(), &want_outputs[..]);

        prop_assert_eq!(d.request_id(), spec.request_id.as_deref());
        prop_assert_eq!(d.extra(), &want_extra);
    }

    #[test]
    fn api_errors_carry_their_code(code in any::<i64>().prop_filter("not 0", |c| *c != 0),
                                   msg in any::<String>(),
                                   data in prop_oneof![Just(Value::Null), json_value()]) {
        let body = serde_json::to_vec(&json!({"code": code, "msg": msg, "data": data})).unwrap();
        let err = JobDetail::from_json(&body).unwrap_err();
        prop_assert!(err.is_api(), "{err:?}");
        prop_assert_eq!(err.api_code(), Some(code));
        prop_assert!(!err.is_transient());
    }
}

// ---------------------------------------------------------------------------
// `Client::get` retries exactly as the stack's tower service does.

#[derive(Debug, Clone)]
enum Answer {
    Ok,
    Status(u16),
    RetryAfter(u16, u64),
    Garbage,
    Reset,
    ApiError,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        2 => Just(Answer::Ok),
        3 => prop::sample::select(vec![400u16, 401, 403, 404, 408, 429, 500, 502, 503, 504])
            .prop_map(Answer::Status),
        1 => (prop::sample::select(vec![429u16, 503]), 0u64..3)
            .prop_map(|(s, secs)| Answer::RetryAfter(s, secs)),
        1 => Just(Answer::Garbage),
        1 => Just(Answer::Reset),
        1 => Just(Answer::ApiError),
    ]
}

impl Answer {
    fn mock(&self, id: &str) -> MockResponse {
        match self {
            Answer::Ok => MockResponse::job(id, "processing"),
            Answer::Status(s) => MockResponse::status(*s),
            Answer::RetryAfter(s, secs) => {
                MockResponse::status(*s).header("retry-after", &secs.to_string())
            }
            Answer::Garbage => MockResponse::ok("<html>bad gateway</html>"),
            Answer::Reset => MockResponse::error("connection reset"),
            Answer::ApiError => {
                MockResponse::ok(r#"{"code":40004,"msg":"job not found","data":null}"#)
            }
        }
    }

    fn transient(&self) -> bool {
        match self {
            Answer::Ok | Answer::ApiError => false,
            Answer::Status(s) | Answer::RetryAfter(s, _) => {
                matches!(s, 408 | 429 | 500 | 502 | 503 | 504)
            }
            Answer::Garbage | Answer::Reset => true,
        }
    }
}

/// What a caller sees: the status on success, else the error's class.
fn outcome(r: &Result<JobDetail, goenhance_jobs::Error>) -> String {
    match r {
        Ok(d) => format!("ok {}", d.status()),
        Err(e) => format!(
            "err status={:?} api={:?} transport={} decode={}",
            e.status(),
            e.api_code(),
            e.is_transport(),
            e.is_decode()
        ),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn get_retries_exactly_as_the_service(answers in vec(answer(), 1..8)) {
        use tower::ServiceExt;
        let id = "job-r";
        // The script's last answer repeats: end on a good one.
        let script: Vec<MockResponse> = answers
            .iter()
            .chain([&Answer::Ok])
            .map(|a| a.mock(id))
            .collect();
        // The model: 5 attempts at most; stop at the first answer that is
        // good or not transient.
        let mut want_requests = 0;
        for a in answers.iter().chain([&Answer::Ok]) {
            want_requests += 1;
            if !a.transient() || want_requests == 5 {
                break;
            }
        }

        let mut seen = Vec::new();
        for via_service in [false, true] {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            let mock = MockTransport::new();
            mock.script(id, script.clone());
            let client = Client::builder()
                .api_key("sk-prop")
                .transport(mock.clone())
                .build()
                .unwrap();
            let result = rt.block_on(async {
                if via_service {
                    client.service().oneshot(JobQuery::new(id).unwrap()).await
                } else {
                    client.get(id).await
                }
            });
            prop_assert_eq!(mock.count_for(id), want_requests, "via_service={}", via_service);
            seen.push(outcome(&result));
        }
        prop_assert_eq!(&seen[0], &seen[1]);
    }
}

/// Any duration, the extremes included.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX)),
        (0u64..u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..100_000).prop_map(Duration::from_millis),
    ]
}

/// A `Retry-After` value as a server may write it: seconds of any size,
/// an HTTP date in the past or future, or nonsense.
fn retry_after_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|s| s.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("-1".to_owned()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
        Just("Thu, 01 Jan 1970 00:00:00 GMT".to_owned()),
        "[ -~]{0,40}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// However long the settings and whatever the server asks, a wait ends
    /// (by its answer or its deadline) and nothing panics.
    #[test]
    fn extreme_settings_and_retry_after_values_never_panic(
        wait in any_duration(),
        attempt in any_duration(),
        interval in any_duration(),
        stall in any_duration(),
        max_retry_after in any_duration(),
        backoff in any_duration(),
        retry_after in retry_after_value(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let id = "job-x";
        let mock = MockTransport::new();
        mock.script(id, [
            MockResponse::status(503).header("retry-after", &retry_after),
            MockResponse::job(id, "processing"),
            MockResponse::status(429).header("retry-after", &retry_after),
            MockResponse::job(id, "success"),
        ]);
        let client = Client::builder()
            .api_key("sk-prop")
            .transport(mock.clone())
            .wait_timeout(wait)
            .attempt_timeout(attempt)
            .poll_policy(
                goenhance_jobs::PollPolicy::exponential(interval.min(Duration::from_secs(3600)), interval)
                    .stall_after(stall),
            )
            .retry_policy(
                goenhance_jobs::RetryPolicy::default()
                    .max_retry_after(max_retry_after)
                    .max_backoff(backoff)
                    .initial_backoff(backoff),
            )
            .build()
            .unwrap();
        let result = rt.block_on(async {
            // Bounded on the paused clock: far beyond thirty years.
            tokio::time::timeout(Duration::from_secs(86_400 * 365 * 200), client.wait(id)).await
        });
        let result = result.expect("the wait ends");
        if let Err(e) = &result {
            prop_assert!(
                e.is_deadline() || e.is_stall() || e.is_timeout() || e.is_http(),
                "{}", e
            );
        }
        // The next wait on the same client still runs.
        mock.script("job-y", [MockResponse::job("job-y", "success")]);
        let next = rt.block_on(client.wait("job-y"));
        prop_assert!(next.is_ok() || next.as_ref().unwrap_err().is_deadline(), "{:?}", next);
    }

    /// Dates in answers, however far out, never panic the decoder or a wait.
    #[test]
    fn far_dates_never_panic(year in prop_oneof![Just(0i32), Just(9999), 1i32..9999]) {
        let body = format!(
            r#"{{"code":0,"data":{{"img_uuid":"j","status":"processing","start_time":"{year:04}-01-01T00:00:00Z","end_time":"{year:04}-12-31T23:59:59.999Z"}}}}"#
        );
        let detail = JobDetail::from_json(body.as_bytes());
        prop_assert!(detail.is_ok(), "{:?}", detail);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let mock = MockTransport::new();
        mock.script("j", [MockResponse::ok(body.clone()), MockResponse::job("j", "success")]);
        let client = Client::builder().api_key("k").transport(mock).build().unwrap();
        prop_assert!(rt.block_on(client.wait("j")).is_ok());
    }
}
