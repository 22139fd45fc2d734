//! `examples/service.rs` end to end, as a real child process against the
//! fake server: a job that succeeds (its link has expired at the first
//! delivery and its download is cut once), one that fails, and one looked
//! up while it still waits; then SIGTERM.
//!
//! The example's source is compiled into this test (`#[path]`), and the
//! test runs its own binary again as the child, which then calls the
//! example's `main`. So the child is always the example as it is now: a
//! binary under `target/debug/examples/` may be missing, or stale when
//! only this test was built (`cargo test --test service_example` builds no
//! example). This is why the file has no libtest harness: its `main`
//! decides between the two roles before anything else.

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use goenhance_jobs::fake::{FakeFile, FakeServer, FileFault, FileFaults, Timeline};
use serde_json::{json, Value};

#[path = "support/child.rs"]
mod child;
#[path = "../examples/service.rs"]
mod service;

use child::ChildLines;

/// Set in the child's environment: run the example.
const CHILD: &str = "GOENHANCE_TEST_SERVICE_CHILD";
const FILE: &str = "/files/vid-ok.mp4";
const FILE_LEN: u64 = 1_000_000;
const CUT_AFTER: u64 = 400_000;

fn main() {
    if std::env::var_os(CHILD).is_some() {
        if let Err(e) = service::main() {
            eprintln!("service: {e}");
            std::process::exit(1);
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let name = "a_success_a_failure_and_a_waiting_job_then_sigterm";
    println!("test {name} ...");
    rt.block_on(a_success_a_failure_and_a_waiting_job_then_sigterm());
    println!("test {name} ... ok");
}

/// The example, started as a child process; its stdout, line by line.
struct Service {
    proc: ChildLines,
    url: String,
}

impl Service {
    fn start(base_url: &str, data: &Path) -> Service {
        let proc = ChildLines::spawn(
            Command::new(std::env::current_exe().unwrap())
                .env(CHILD, "1")
                .env("GOENHANCE_API_KEY", "fake-key")
                .env("GOENHANCE_BASE_URL", base_url)
                .env("SERVICE_DATA", data)
                .env("SERVICE_LISTEN", "127.0.0.1:0")
                .env("SERVICE_POLL_MS", "100")
                .env("SERVICE_LEASE_MS", "1500")
                .env("SERVICE_GRACE_MS", "5000"),
            "the service",
        );
        let mut service = Service {
            proc,
            url: String::new(),
        };
        let listening = service.wait_line(|l| l.starts_with("listening on "));
        service.url = listening["listening on ".len()..].to_owned();
        service
    }

    fn wait_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        self.proc.wait_line(want)
    }

    fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.proc.terminate()
    }
}

async fn post(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let res = http.post(url).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let res = http.get(url).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// `GET` until `done` accepts the answer (the store is written by the
/// worker as it goes), failing after 30 s.
async fn get_until(http: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (code, body) = get(http, url).await;
        assert_eq!(code, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{url} never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The answer's fields, with the times (which only need to be numbers)
/// checked and taken out.
fn without_times(mut body: Value) -> (Value, u64, u64) {
    let obj = body.as_object_mut().unwrap();
    let tracked = obj.remove("tracked_at_ms").unwrap().as_u64().unwrap();
    let deadline = obj.remove("deadline_ms").unwrap().as_u64().unwrap();
    (body, tracked, deadline)
}

async fn a_success_a_failure_and_a_waiting_job_then_sigterm() {
    let ms = Duration::from_millis;
    let faults = FileFaults::script([
        Some(FileFault::Expired),
        Some(FileFault::Cut { after: CUT_AFTER }),
    ]);
    let server = FakeServer::builder()
        .api_key("fake-key")
        .file(
            FILE,
            FakeFile::new(FILE_LEN)
                .content_type("video/mp4")
                .faults(faults),
        )
        .job(
            "vid-ok",
            Timeline::new("mx-v2v")
                .pending(ms(300))
                .processing(ms(300))
                .succeed_with_file("video", FILE),
        )
        .job(
            "vid-failed",
            Timeline::new("mx-v2v").processing(ms(300)).fail(),
        )
        .job(
            "vid-waiting",
            Timeline::new("mx-v2v").pending(Duration::from_secs(3600)),
        )
        .start()
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut service =
        tokio::task::block_in_place(|| Service::start(server.base_url(), data.path()));
    let http = reqwest::Client::new();
    let videos = format!("{}/videos", service.url);

    // Tracking: new, then known; an id the API could not have made.
    assert_eq!(
        post(&http, &format!("{videos}/vid-waiting")).await,
        (201, json!({ "id": "vid-waiting", "tracked": "new" }))
    );
    assert_eq!(
        post(&http, &format!("{videos}/vid-waiting")).await,
        (
            200,
            json!({ "id": "vid-waiting", "tracked": "already_tracked" })
        )
    );
    let (code, body) = post(&http, &format!("{videos}/bad%20id")).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        get(&http, &format!("{videos}/vid-unknown")).await,
        (404, json!({ "id": "vid-unknown", "error": "not tracked" }))
    );
    for id in ["vid-ok", "vid-failed"] {
        assert_eq!(
            post(&http, &format!("{videos}/{id}")).await,
            (201, json!({ "id": id, "tracked": "new" }))
        );
    }

    // The worker delivers both, each once.
    tokio::task::block_in_place(|| {
        service.wait_line(|l| l == "delivered vid-ok succeeded delivery=1 files=1");
        service.wait_line(|l| l == "delivered vid-failed failed delivery=1")
    });

    // A waiting job: what the last poll saw, saved with the heartbeats.
    let body = get_until(&http, &format!("{videos}/vid-waiting"), |b| {
        b["status"] == "pending"
    })
    .await;
    let polls = body["polls"].as_u64().unwrap();
    assert!(polls >= 1, "{body}");
    let (body, tracked_at, deadline) = without_times(body);
    assert_eq!(
        body,
        json!({
            "id": "vid-waiting", "state": "waiting", "status": "pending", "polls": polls,
            "deliveries": 0, "outcome": null, "last_error": null,
        })
    );
    // The client's default wait timeout, from the track.
    assert_eq!(deadline - tracked_at, 30 * 60 * 1000);

    // The delivered jobs, once their acknowledgements are recorded.
    let delivered = |b: &Value| b["state"] == "delivered";
    let body = get_until(&http, &format!("{videos}/vid-ok"), delivered).await;
    let polls = body["polls"].as_u64().unwrap();
    let (body, _, _) = without_times(body);
    assert_eq!(
        body,
        json!({
            "id": "vid-ok", "state": "delivered", "status": "succeeded", "polls": polls,
            "deliveries": 1, "last_error": null,
            "outcome": {
                "status": "succeeded",
                "outputs": [{ "kind": "video", "url": server.file_url(FILE) }],
            },
        })
    );
    let body = get_until(&http, &format!("{videos}/vid-failed"), delivered).await;
    let polls = body["polls"].as_u64().unwrap();
    let (body, _, _) = without_times(body);
    assert_eq!(
        body,
        json!({
            "id": "vid-failed", "state": "delivered", "status": "failed", "polls": polls,
            "deliveries": 1, "last_error": null,
            "outcome": { "status": "failed", "outputs": [] },
        })
    );
    assert_eq!(
        post(&http, &format!("{videos}/vid-ok")).await,
        (
            200,
            json!({ "id": "vid-ok", "tracked": "already_delivered" })
        )
    );

    // The file: byte for byte, and no partial file left.
    let outputs = data.path().join("outputs");
    let saved = std::fs::read(outputs.join("vid-ok_0.mp4")).unwrap();
    let mut want = vec![0u8; FILE_LEN as usize];
    FakeFile::new(FILE_LEN).fill(0, &mut want);
    assert!(saved == want, "the saved file differs from the served one");
    let mut names: Vec<String> = std::fs::read_dir(&outputs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["vid-ok_0.mp4"]);

    // What the storage host saw: the expired link (403), the cut answer,
    // and one resume of the missing bytes under the file's ETag.
    let stats = server.file_stats(FILE);
    assert_eq!(stats.requests, 3, "{stats:?}");
    assert_eq!(stats.range_requests, 1, "{stats:?}");
    let resume = &stats.headers[2];
    assert_eq!(resume["range"], format!("bytes={CUT_AFTER}-"));
    assert!(resume.contains_key("if-range"), "{resume:?}");
    assert!(
        stats.bytes_served >= FILE_LEN && stats.bytes_served * 10 <= FILE_LEN * 11,
        "served {} bytes for a file of {FILE_LEN}",
        stats.bytes_served
    );

    // SIGTERM: a graceful stop, status 0 well within the grace period.
    let (status, took) = tokio::task::block_in_place(|| service.terminate());
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let said = tokio::task::block_in_place(|| {
        service.wait_line(|l| l == "stopped");
        service.proc.seen.clone()
    });
    assert!(
        said.iter()
            .any(|l| l.starts_with("stopping on SIGTERM: finishing running downloads")),
        "{said:#?}"
    );
    // Each job delivered once.
    let deliveries = said.iter().filter(|l| l.starts_with("delivered ")).count();
    assert_eq!(deliveries, 2, "{said:#?}");
    server.shutdown().await;
}
