//! Telemetry: the metrics recorded (into metrics-util's debugging recorder,
//! local to each test), on tokio's paused clock over the in-memory
//! transport. The spans are in `telemetry_spans.rs`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::telemetry::{
    HTTP_CLIENT_REQUEST_DURATION, POLLS, POLLS_IN_FLIGHT, RETRIES, RETRY_BUDGET_TOKENS,
    WAITS_ACTIVE, WAIT_DURATION,
};
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, JobQuery, JobStatus, PollPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use support::recorder::with_recorder;
use support::KEY;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// What the recorder holds, added up over snapshots (a snapshot of the
/// debugging recorder takes the values out: counters and gauges start
/// again from zero).
#[derive(Default, Debug)]
struct Totals {
    /// `name{label=value,…}` → counter total or gauge sum of changes.
    values: BTreeMap<String, f64>,
    /// `name{…}` → every value recorded, sorted.
    histograms: BTreeMap<String, Vec<f64>>,
}

fn key_of(key: &metrics::Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Totals {
    /// Adds a snapshot in; returns the gauges as the snapshot has them
    /// (for a gauge that is only ever set, that is the last value set).
    fn take(&mut self, snapshotter: &Snapshotter) -> BTreeMap<String, f64> {
        let mut gauges = BTreeMap::new();
        for (ck, _, _, value) in snapshotter.snapshot().into_vec() {
            let name = key_of(ck.key());
            match value {
                DebugValue::Counter(n) => *self.values.entry(name).or_default() += n as f64,
                DebugValue::Gauge(g) => {
                    gauges.insert(name.clone(), g.into_inner());
                    *self.values.entry(name).or_default() += g.into_inner();
                }
                DebugValue::Histogram(v) => {
                    let all = self.histograms.entry(name).or_default();
                    all.extend(v.into_iter().map(|f| f.into_inner()));
                    all.sort_by(f64::total_cmp);
                }
            }
        }
        gauges
    }

    fn value(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(0.0)
    }
}

fn client(mock: &MockTransport) -> Client {
    support::telemetry_client(mock)
}

fn counters(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

const GET_503: &str = "http.client.request.duration{error.type=503,http.request.method=GET,http.response.status_code=503}";
const GET_200: &str =
    "http.client.request.duration{http.request.method=GET,http.response.status_code=200}";

/// Two 503s then a success; a wait of three polls; a wait that reaches
/// its deadline: every counter and gauge has its exact value, and the
/// gauges are back at zero once the waits are over.
#[test]
fn a_scripted_sequence_leaves_exact_counters_and_gauges() {
    assert_eq!(HTTP_CLIENT_REQUEST_DURATION, "http.client.request.duration");
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let mut totals = Totals::default();
    with_recorder(&recorder, true, || async move {
        let mock = MockTransport::new();
        mock.script(
            "retried",
            [
                MockResponse::status(503).after(ms(250)),
                MockResponse::status(503).after(ms(250)),
                MockResponse::job("retried", "processing").after(ms(250)),
            ],
        );
        mock.script(
            "three",
            [
                MockResponse::job("three", "pending").after(ms(100)),
                MockResponse::job("three", "processing").after(ms(100)),
                MockResponse::job("three", "success").after(ms(100)),
            ],
        );
        mock.timeline("late", &["pending"]);
        let client = client(&mock);

        // 1. One status fetch: 503, 503, then an answer. Each retry takes 5
        // tokens of 500; the success gives back what its retry cost.
        let detail = client.get("retried").await.unwrap();
        assert_eq!(detail.status(), &JobStatus::Processing);
        let gauges = totals.take(&snap);
        assert_eq!(
            gauges,
            counters(&[("goenhance.retry.budget.tokens{}", 495.0)])
        );
        assert_eq!(
            totals.values,
            counters(&[
                ("goenhance.retries{error.type=503}", 2.0),
                ("goenhance.retry.budget.tokens{}", 495.0),
            ])
        );
        assert_eq!(totals.histograms[GET_503], vec![0.25, 0.25]);
        assert_eq!(totals.histograms[GET_200], vec![0.25]);
        assert_eq!(totals.histograms.len(), 2);

        // 2. Two waits at once: "three" answers after 100 ms each time and
        // is done at its third poll; "late" answers at once, pending, until
        // its deadline at 2.5 s.
        let start = tokio::time::Instant::now();
        let three = tokio::spawn({
            let client = client.clone();
            async move { client.wait("three").await }
        });
        let late = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .wait_all([JobQuery::new("late").unwrap()])
                    .collect::<Vec<_>>()
                    .await
            }
        });
        tokio::time::sleep(ms(50)).await;
        // Both waits run; the poll of "three" is out, that of "late" came
        // back pending (and its success put one token back).
        let gauges = totals.take(&snap);
        assert_eq!(totals.value(&format!("{WAITS_ACTIVE}{{}}")), 2.0);
        assert_eq!(totals.value(&format!("{POLLS_IN_FLIGHT}{{}}")), 1.0);
        assert_eq!(gauges[&format!("{RETRY_BUDGET_TOKENS}{{}}")], 496.0);
        assert_eq!(totals.value("goenhance.polls{outcome=pending}"), 1.0);

        let three = three.await.unwrap().unwrap();
        assert_eq!(three.status(), &JobStatus::Succeeded);
        let late = late.await.unwrap();
        assert_eq!(late.len(), 1);
        assert!(late[0].1.as_ref().unwrap_err().is_deadline());
        assert_eq!(tokio::time::Instant::now() - start, ms(2500));

        let gauges = totals.take(&snap);
        // Six successful polls in all: the bucket is full again.
        assert_eq!(gauges[&format!("{RETRY_BUDGET_TOKENS}{{}}")], 500.0);
        totals.values.remove(&format!("{RETRY_BUDGET_TOKENS}{{}}"));
        assert_eq!(
            totals.values,
            counters(&[
                ("goenhance.polls.in_flight{}", 0.0),
                ("goenhance.polls{outcome=pending}", 4.0),
                ("goenhance.polls{outcome=processing}", 1.0),
                ("goenhance.polls{outcome=succeeded}", 1.0),
                ("goenhance.retries{error.type=503}", 2.0),
                ("goenhance.waits.active{}", 0.0),
            ])
        );
        assert_eq!(totals.histograms[GET_503], vec![0.25, 0.25]);
        assert_eq!(
            totals.histograms[GET_200],
            vec![0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.25]
        );
        assert_eq!(
            totals.histograms[&format!("{WAIT_DURATION}{{outcome=succeeded}}")],
            vec![secs(ms(2300))]
        );
        assert_eq!(
            totals.histograms[&format!("{WAIT_DURATION}{{outcome=deadline}}")],
            vec![secs(ms(2500))]
        );
        assert_eq!(totals.histograms.len(), 4);
        assert_eq!(mock.request_count(), 3 + 3 + 3);
    });
    let _ = (POLLS, RETRIES);
}

fn active() -> String {
    format!("{WAITS_ACTIVE}{{}}")
}

fn in_flight() -> String {
    format!("{POLLS_IN_FLIGHT}{{}}")
}

/// Waits that end early leave the gauges too: a `wait_all` stream dropped,
/// a `watch` stream dropped, and the hub's scheduler stopped with a poll
/// out and a `wait` pending.
#[test]
fn gauges_return_to_zero_when_waits_are_dropped_or_the_scheduler_stops() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let mut totals = with_recorder(&recorder, true, || async {
        let mut totals = Totals::default();
        let mock = MockTransport::new();
        let minute = Duration::from_secs(60);
        mock.script("slow", [MockResponse::job("slow", "pending").after(minute)]);
        mock.script(
            "watched",
            [MockResponse::job("watched", "pending").after(minute)],
        );
        mock.timeline("a", &["pending"]);
        mock.timeline("b", &["pending"]);
        let client = client(&mock);
        let _waiting = tokio::spawn({
            let client = client.clone();
            async move { client.wait("slow").await }
        });
        let watching = tokio::spawn({
            let client = client.clone();
            async move { Box::pin(client.watch("watched")).next().await }
        });
        let all = client.wait_all(["a", "b"].map(|id| JobQuery::new(id).unwrap()));
        tokio::time::sleep(ms(10)).await;
        totals.take(&snap);
        assert_eq!(totals.value(&active()), 4.0);
        // "a" and "b" answered at once; "slow" and "watched" are out.
        assert_eq!(totals.value(&in_flight()), 2.0);

        drop(all);
        totals.take(&snap);
        assert_eq!(totals.value(&active()), 2.0);
        assert_eq!(
            totals.histograms[&format!("{WAIT_DURATION}{{outcome=cancelled}}")],
            vec![0.01, 0.01]
        );

        watching.abort();
        assert!(watching.await.unwrap_err().is_cancelled());
        totals.take(&snap);
        assert_eq!(totals.value(&active()), 1.0);
        assert_eq!(totals.value(&in_flight()), 1.0);
        assert_eq!(
            totals.histograms[&format!("{WAIT_DURATION}{{outcome=cancelled}}")],
            vec![0.01, 0.01, 0.01]
        );
        totals
    });
    // The runtime is gone: the scheduler stopped with the poll of "slow"
    // out, and the task of its `wait` was dropped.
    totals.take(&snap);
    assert_eq!(totals.value(&active()), 0.0);
    assert_eq!(totals.value(&in_flight()), 0.0);
    assert_eq!(
        totals.histograms[&format!("{WAIT_DURATION}{{outcome=cancelled}}")].len(),
        4
    );
}

/// Waits in the caller's task (a `PollLayer` service, `Client::watch`)
/// that end on a stall and on an error that is not transient leave the
/// gauges at zero and are timed by outcome.
#[test]
fn waits_in_the_callers_task_are_counted_to_their_end() {
    use goenhance_jobs::{AuthLayer, JobStatusService, PollLayer};
    use tower::{ServiceBuilder, ServiceExt};

    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    with_recorder(&recorder, true, || async move {
        let mut totals = Totals::default();
        let mock = MockTransport::new();
        mock.timeline("stuck", &["processing"]);
        mock.script("refused", [MockResponse::status(401)]);
        let transport = ServiceBuilder::new()
            .layer(AuthLayer::bearer(KEY))
            .service(mock.clone());
        let poller = ServiceBuilder::new()
            .layer(PollLayer::new(
                PollPolicy::fixed(Duration::from_secs(1))
                    .jitter(Jitter::None)
                    .stall_after(Duration::from_secs(3)),
            ))
            .service(JobStatusService::new("https://api.goenhance.ai", transport).unwrap());
        let stalled = tokio::spawn(poller.oneshot(JobQuery::new("stuck").unwrap()));
        let client = client(&mock);
        let mut watch = Box::pin(client.watch("refused"));
        tokio::time::sleep(ms(500)).await;
        totals.take(&snap);
        // The watch stream has not been polled yet, but it is a wait.
        assert_eq!(totals.value(&active()), 2.0);

        let refused = watch.next().await.unwrap().unwrap_err();
        assert_eq!(refused.status().map(|s| s.as_u16()), Some(401));
        assert!(watch.next().await.is_none());
        assert!(stalled.await.unwrap().unwrap_err().is_stall());
        totals.take(&snap);
        assert_eq!(totals.value(&active()), 0.0);
        assert_eq!(totals.value(&in_flight()), 0.0);
        assert_eq!(totals.value("goenhance.polls{outcome=processing}"), 4.0);
        assert_eq!(
            totals.value("goenhance.polls{error.type=401,outcome=error}"),
            1.0
        );
        assert_eq!(
            totals.histograms[&format!("{WAIT_DURATION}{{outcome=stall}}")],
            vec![3.0]
        );
        assert_eq!(
            totals.histograms[&format!("{WAIT_DURATION}{{outcome=http}}")],
            vec![0.5]
        );
    });
}

/// Downloads count their bytes and their outcomes.
#[test]
fn downloads_count_bytes_and_outcomes() {
    use bytes::Bytes;
    use goenhance_jobs::{JobOutput, OutputKind};
    use http_body_util::Full;

    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    metrics::with_local_recorder(&recorder, || {
        // Not on the paused clock: files are written on tokio's blocking
        // threads, and nothing here is timed.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let storage = tower::service_fn(|req: http::Request<Full<Bytes>>| async move {
                let res = if req.uri().path() == "/gone.mp4" {
                    http::Response::builder()
                        .status(403)
                        .body(Full::new(Bytes::new()))
                } else {
                    http::Response::builder()
                        .header("content-length", "5")
                        .body(Full::new(Bytes::from_static(b"hello")))
                };
                Ok::<_, http::Error>(res.unwrap())
            });
            let client = Client::builder()
                .api_key(KEY)
                .transport(storage)
                .build()
                .unwrap();
            let ok = JobOutput::new(OutputKind::Video, "https://cdn.example/a.mp4?sig=1");
            let gone = JobOutput::new(OutputKind::Video, "https://cdn.example/gone.mp4?sig=1");
            let file = client
                .download(&ok, dir.path().join("a.mp4"))
                .await
                .unwrap();
            assert_eq!(file.bytes(), 5);
            let err = client
                .download(&gone, dir.path().join("gone.mp4"))
                .await
                .unwrap_err();
            assert!(err.is_expired());
        });
    });
    let mut totals = Totals::default();
    totals.take(&snap);
    assert_eq!(
        totals.values,
        counters(&[
            ("goenhance.download.bytes{}", 5.0),
            ("goenhance.downloads{outcome=expired}", 1.0),
            ("goenhance.downloads{outcome=ok}", 1.0),
            ("goenhance.retry.budget.tokens{}", 500.0),
        ])
    );
}
