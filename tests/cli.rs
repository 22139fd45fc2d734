//! The `goenhance-jobs` binary against the fake server on loopback: exit
//! codes, JSON lines, plain lines, `--stdin`, configuration errors, and the
//! key never showing in any output.
#![cfg(feature = "cli")]

use std::collections::HashMap;
use std::time::Duration;

use assert_cmd::assert::{Assert, OutputAssertExt};
use assert_cmd::Command;
use goenhance_jobs::fake::{FakeServer, Timeline};
use predicates::prelude::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_goenhance-jobs");
const KEY: &str = "sk-test-SECRET-1234";
const VIDEO: &str = "https://cdn.example/jobs/v2v-1_0.mp4";
const IMAGE: &str = "https://cdn.example/jobs/swap-2_0.jpg";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A video job that succeeds after about 150 ms.
fn quick_video() -> Timeline {
    Timeline::new("mx-v2v")
        .pending(ms(50))
        .processing(ms(100))
        .succeed("video", VIDEO)
}

/// An image job that succeeds after about 450 ms.
fn slower_image() -> Timeline {
    Timeline::new("mx-image-face-swap")
        .pending(ms(150))
        .processing(ms(300))
        .succeed("image", IMAGE)
}

/// A job that fails after about 200 ms.
fn failing() -> Timeline {
    Timeline::new("mx-text2img").processing(ms(200)).fail()
}

/// A job that stays pending (its last step never ends).
fn stuck() -> Timeline {
    Timeline::new("mx-v2v").pending(Duration::from_secs(3600))
}

async fn server(jobs: &[(&str, Timeline)]) -> FakeServer {
    jobs.iter()
        .fold(FakeServer::builder().api_key(KEY), |b, (id, tl)| {
            b.job(*id, tl.clone())
        })
        .start()
        .await
        .expect("the fake server starts")
}

/// One run of the binary, set up like a user's shell: only the variables
/// given here, never an inherited key.
struct Run {
    args: Vec<String>,
    key: Option<String>,
    base_url: Option<String>,
    stdin: Option<String>,
}

impl Run {
    fn new(args: &[&str]) -> Run {
        Run {
            args: args.iter().map(|a| a.to_string()).collect(),
            key: Some(KEY.to_owned()),
            base_url: None,
            stdin: None,
        }
    }

    fn against(self, server: &FakeServer) -> Run {
        self.base_url(server.base_url())
    }

    fn base_url(mut self, url: &str) -> Run {
        self.base_url = Some(url.to_owned());
        self
    }

    fn key(mut self, key: Option<&str>) -> Run {
        self.key = key.map(str::to_owned);
        self
    }

    fn stdin(mut self, input: &str) -> Run {
        self.stdin = Some(input.to_owned());
        self
    }

    /// Runs the binary on a blocking thread (the fake server keeps running
    /// on the test's runtime) and checks that the key is in no output.
    async fn output(self) -> Assert {
        let output = tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(BIN);
            cmd.args(&self.args)
                .env_remove("GOENHANCE_API_KEY")
                .env_remove("GOENHANCE_BASE_URL")
                .timeout(Duration::from_secs(25));
            if let Some(key) = &self.key {
                cmd.env("GOENHANCE_API_KEY", key);
            }
            if let Some(url) = &self.base_url {
                cmd.env("GOENHANCE_BASE_URL", url);
            }
            if let Some(input) = &self.stdin {
                cmd.write_stdin(input.as_bytes());
            }
            cmd.output().expect("the binary runs")
        })
        .await
        .expect("the blocking task completes");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stdout.contains(KEY), "the key leaked to stdout: {stdout}");
        assert!(!stderr.contains(KEY), "the key leaked to stderr: {stderr}");
        output.assert()
    }
}

fn stdout(out: &Assert) -> String {
    String::from_utf8(out.get_output().stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Assert) -> String {
    String::from_utf8(out.get_output().stderr.clone()).expect("stderr is UTF-8")
}

/// The JSON lines of stdout, in order.
fn json_lines(output: &Assert) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn by_id(lines: &[Value]) -> HashMap<String, Value> {
    lines
        .iter()
        .map(|v| (v["img_uuid"].as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_succeed_exit_0_with_json_lines_in_completion_order() {
    let server = server(&[("swap-2", slower_image()), ("v2v-1", quick_video())]).await;
    let out = Run::new(&[
        "wait",
        "swap-2",
        "v2v-1",
        "--output",
        "json",
        "--poll-interval",
        "50ms",
        "--timeout",
        "10s",
    ])
    .against(&server)
    .output()
    .await
    .code(0)
    .stderr("");

    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    // The quicker job comes first although it was named second.
    assert_eq!(lines[0]["img_uuid"], "v2v-1");
    assert_eq!(lines[1]["img_uuid"], "swap-2");

    let video = &lines[0];
    assert_eq!(video["status"], "succeeded");
    assert_eq!(video["job_type"], "mx-v2v");
    assert_eq!(video["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(video["outputs"][0]["kind"], "video");
    assert_eq!(video["outputs"][0]["url"], VIDEO);
    assert_eq!(video["error"], Value::Null);

    let image = &lines[1];
    assert_eq!(image["status"], "succeeded");
    assert_eq!(image["job_type"], "mx-image-face-swap");
    assert_eq!(image["outputs"][0]["kind"], "image");
    assert_eq!(image["outputs"][0]["url"], IMAGE);
    assert_eq!(image["error"], Value::Null);
    let fields: Vec<&str> = image
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields.len(),
        5,
        "img_uuid, status, job_type, outputs, error: {fields:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_exits_1_and_plain_lines_list_urls() {
    let server = server(&[("v2v-1", quick_video()), ("t2i-3", failing())]).await;
    let out = Run::new(&["wait", "v2v-1", "t2i-3", "--poll-interval", "50ms"])
        .against(&server)
        .output()
        .await
        .code(1);
    let text = stdout(&out);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["t2i-3 failed", &format!("v2v-1 succeeded {VIDEO}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_job_in_json_has_status_failed_and_no_outputs() {
    let server = server(&[("t2i-3", failing())]).await;
    let out = Run::new(&["wait", "t2i-3", "-o", "json", "--poll-interval", "50ms"])
        .against(&server)
        .output()
        .await
        .code(1);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["status"], "failed");
    assert_eq!(lines[0]["job_type"], "mx-text2img");
    assert_eq!(lines[0]["outputs"], serde_json::json!([]));
    assert_eq!(lines[0]["error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_exits_3_with_the_last_status_seen() {
    let server = server(&[("stuck-4", stuck())]).await;
    let out = Run::new(&[
        "wait",
        "stuck-4",
        "--timeout",
        "1s",
        "--poll-interval",
        "200ms",
        "--output",
        "json",
    ])
    .against(&server)
    .output()
    .await
    .code(3)
    .stderr(predicate::str::contains("stuck-4: wait deadline reached"));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["img_uuid"], "stuck-4");
    assert_eq!(line["status"], "pending");
    assert_eq!(line["job_type"], "mx-v2v");
    assert_eq!(line["outputs"], serde_json::json!([]));
    assert_eq!(line["error"]["kind"], "deadline");
    assert!(line["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("wait deadline reached"));
    assert!(server.hits("stuck-4") >= 2, "it polled until the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_exits_3() {
    let server = server(&[(
        "slow-5",
        Timeline::new("mx-v2v").processing(Duration::from_secs(3600)),
    )])
    .await;
    let out = Run::new(&[
        "wait",
        "slow-5",
        "--stall-after",
        "300ms",
        "--poll-interval",
        "100ms",
        "--timeout",
        "20s",
        "-o",
        "json",
    ])
    .against(&server)
    .output()
    .await
    .code(3);
    let lines = json_lines(&out);
    assert_eq!(lines[0]["error"]["kind"], "stall");
    assert_eq!(lines[0]["status"], "processing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_exit_code_wins() {
    let server = server(&[
        ("v2v-1", quick_video()),
        ("t2i-3", failing()),
        ("stuck-4", stuck()),
    ])
    .await;
    let out = Run::new(&[
        "wait",
        "v2v-1",
        "t2i-3",
        "stuck-4",
        "--timeout",
        "1s",
        "--poll-interval",
        "100ms",
        "-o",
        "json",
    ])
    .against(&server)
    .output()
    .await
    .code(3);
    let lines = by_id(&json_lines(&out));
    assert_eq!(lines["v2v-1"]["status"], "succeeded");
    assert_eq!(lines["t2i-3"]["status"], "failed");
    assert_eq!(lines["stuck-4"]["error"]["kind"], "deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_id_is_an_api_error_exit_4() {
    let server = server(&[("v2v-1", quick_video())]).await;
    let out = Run::new(&["wait", "no-such-job", "-o", "json"])
        .against(&server)
        .output()
        .await
        .code(4)
        .stderr(predicate::str::contains(
            "no-such-job: api error code 40004: job not found",
        ));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["img_uuid"], "no-such-job");
    assert_eq!(lines[0]["status"], Value::Null);
    assert_eq!(lines[0]["job_type"], Value::Null);
    assert_eq!(lines[0]["error"]["kind"], "api");
    assert_eq!(lines[0]["error"]["api_code"], 40004);
    // Not transient: the wait ends at the first answer.
    assert_eq!(server.total_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_plain_text_go_to_stdout_and_stderr() {
    let server = server(&[]).await;
    Run::new(&["wait", "no-such-job"])
        .against(&server)
        .output()
        .await
        .code(4)
        .stdout("no-such-job error: api error code 40004: job not found\n")
        .stderr(predicate::str::contains(
            "no-such-job: api error code 40004",
        ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_an_http_401_exit_4() {
    let server = server(&[("v2v-1", quick_video())]).await;
    let out = Run::new(&["get", "v2v-1", "--output", "json"])
        .against(&server)
        .key(Some("sk-test-WRONG-5678"))
        .output()
        .await
        .code(4);
    let lines = json_lines(&out);
    assert_eq!(lines[0]["error"]["kind"], "http");
    assert_eq!(lines[0]["error"]["http_status"], 401);
    assert!(lines[0]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("http status 401 unauthorized"));
    assert_eq!(server.total_requests(), 1, "a 401 is not retried");
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("sk-test-WRONG-5678"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_fetches_once() {
    let server = server(&[
        ("stuck-4", stuck()),
        (
            "odd-6",
            Timeline::new("mx-v2v").status("paused", Duration::from_secs(3600)),
        ),
    ])
    .await;
    let out = Run::new(&["get", "stuck-4", "--output", "json"])
        .against(&server)
        .output()
        .await
        .code(0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["img_uuid"], "stuck-4");
    assert_eq!(lines[0]["status"], "pending");
    assert_eq!(lines[0]["job_type"], "mx-v2v");
    assert_eq!(lines[0]["error"], Value::Null);
    assert_eq!(server.hits("stuck-4"), 1);

    let out = Run::new(&["get", "odd-6", "-o", "json"])
        .against(&server)
        .output()
        .await
        .code(0);
    assert_eq!(json_lines(&out)[0]["status"], "unknown");

    Run::new(&["get", "odd-6"])
        .against(&server)
        .output()
        .await
        .code(0)
        .stdout("odd-6 paused\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_come_from_stdin_too() {
    let server = server(&[("v2v-1", quick_video()), ("swap-2", slower_image())]).await;
    let out = Run::new(&["wait", "--stdin", "-o", "json", "--poll-interval", "50ms"])
        .against(&server)
        .stdin("  v2v-1 \n\n\t\n swap-2\n")
        .output()
        .await
        .code(0);
    let lines = by_id(&json_lines(&out));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines["v2v-1"]["outputs"][0]["url"], VIDEO);
    assert_eq!(lines["swap-2"]["outputs"][0]["url"], IMAGE);

    // Positional ids and stdin together.
    let out = Run::new(&[
        "wait",
        "v2v-1",
        "--stdin",
        "-o",
        "json",
        "--poll-interval",
        "50ms",
    ])
    .against(&server)
    .stdin("swap-2\n")
    .output()
    .await
    .code(0);
    assert_eq!(json_lines(&out).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_id_exits_2_before_any_request() {
    let server = server(&[("v2v-1", quick_video())]).await;
    Run::new(&["wait", "v2v-1", "bad id", "--timeout", "5s"])
        .against(&server)
        .output()
        .await
        .code(2)
        .stdout("")
        .stderr(
            predicate::str::contains("\"bad id\"").and(predicate::str::contains(
                "job id has a character outside [A-Za-z0-9._~-]",
            )),
        );

    Run::new(&["wait", "--stdin"])
        .against(&server)
        .stdin("v2v-1\nx/../../admin\n")
        .output()
        .await
        .code(2);

    Run::new(&["get", &"a".repeat(129)])
        .against(&server)
        .output()
        .await
        .code(2);
    assert_eq!(server.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_exits_2_and_names_the_variable() {
    let server = server(&[("v2v-1", quick_video())]).await;
    for args in [&["wait", "v2v-1"][..], &["get", "v2v-1"]] {
        Run::new(args)
            .against(&server)
            .key(None)
            .output()
            .await
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains("GOENHANCE_API_KEY"));
    }
    Run::new(&["wait", "v2v-1"])
        .against(&server)
        .key(Some(""))
        .output()
        .await
        .code(2)
        .stderr(predicate::str::contains("GOENHANCE_API_KEY"));
    assert_eq!(server.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let server = server(&[("v2v-1", quick_video())]).await;
    for args in [
        &["wait", "v2v-1", "--frobnicate"][..],
        &["wait", "v2v-1", "--timeout", "soon"],
        &["wait", "v2v-1", "--timeout", "0s"],
        &["wait", "v2v-1", "--output", "yaml"],
        &["wait"],
        &["get"],
        &["launch"],
        &[],
    ] {
        Run::new(args)
            .against(&server)
            .output()
            .await
            .code(2)
            .stdout("");
    }
    // Empty stdin: no ids at all.
    Run::new(&["wait", "--stdin"])
        .against(&server)
        .stdin("\n  \n")
        .output()
        .await
        .code(2)
        .stderr(predicate::str::contains("no job ids"));
    assert_eq!(server.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_base_url_exits_2() {
    Run::new(&["get", "v2v-1"])
        .base_url("http://example.com")
        .output()
        .await
        .code(2)
        .stderr(predicate::str::contains("cannot set up the client"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_exits_0_and_downloads_the_outputs() {
    // The demo ignores GOENHANCE_*: a dead base URL must not matter.
    let out = Run::new(&["demo"])
        .base_url("http://127.0.0.1:9")
        .output()
        .await
        .code(0)
        .stderr(predicate::str::contains("4 succeeded, 1 failed, 0 errors"));
    let err = stderr(&out);
    let dir = err
        .lines()
        .find_map(|l| l.strip_prefix("demo: 5 files in "))
        .and_then(|l| l.strip_suffix(':'))
        .unwrap_or_else(|| panic!("no folder listing: {err}"))
        .to_owned();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        names,
        [
            "37c82d82-2f1b-4f5e-9d0a-6b1e0c9a4d21_0.jpg",
            "5334c57d-8443-4b79-ba24-8539c2163c74_0.mp4",
            "7d3b9e41-0a8c-4e6f-9b2d-5c1a3e7f9d04_0.mp4",
            "9f1e6a20-5c3d-4b7e-8a19-2d4f6b8c0e13_0.png",
            "9f1e6a20-5c3d-4b7e-8a19-2d4f6b8c0e13_1.png",
        ]
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(text.matches(&format!(" {dir}/")).count(), 5);
    assert_eq!(lines.iter().filter(|l| l.contains(" failed")).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_ends_only_its_job_and_every_job_gets_a_line() {
    use goenhance_jobs::fake::{Fault, FaultPlan, RetryAfter};
    let server = FakeServer::builder()
        .api_key(KEY)
        .job("ok-1", quick_video())
        .job("poison-2", quick_video())
        .job_faults(
            "poison-2",
            FaultPlan::random(
                1.0,
                7,
                [Fault::retry_after(
                    503,
                    RetryAfter::Seconds(i64::MAX as u64),
                )],
            ),
        )
        .start()
        .await
        .unwrap();
    let out = Run::new(&["wait", "ok-1", "poison-2", "--timeout", "2s", "-o", "json"])
        .against(&server)
        .output()
        .await
        .code(3);
    let lines = by_id(&json_lines(&out));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines["ok-1"]["status"], "succeeded");
    assert_eq!(lines["poison-2"]["error"]["kind"], "deadline");
    // The wall clock decides the milliseconds of "after 2s": the rest is
    // exact.
    let message = lines["poison-2"]["error"]["message"].as_str().unwrap();
    let (head, tail) = message.split_once(" (").unwrap();
    assert!(
        head.starts_with("wait deadline reached after 2"),
        "{message}"
    );
    assert_eq!(
        tail,
        "1 polls, last status none, last poll failed: http): \
         server asked to retry after 9223372036854775807s, longer than allowed: \
         http status 503 service unavailable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_cannot_stretch_the_deadline() {
    use goenhance_jobs::fake::{Fault, FaultPlan};
    let ids: Vec<String> = (0..200).map(|i| format!("hang-{i}")).collect();
    let mut builder =
        FakeServer::builder()
            .api_key(KEY)
            .faults(FaultPlan::random(1.0, 3, [Fault::NoAnswer]));
    for id in &ids {
        builder = builder.job(id.clone(), stuck());
    }
    let server = builder.start().await.unwrap();
    let started = std::time::Instant::now();
    let out = Run::new(&["wait", "--stdin", "--timeout", "3s", "-o", "json"])
        .stdin(&ids.join("\n"))
        .against(&server)
        .output()
        .await
        .code(3);
    let elapsed = started.elapsed();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().all(|l| l["error"]["kind"] == "deadline"));
    // The 64 polls in flight were cut at the deadline; the 136 jobs queued
    // behind them ended there without a request.
    assert_eq!(server.total_requests(), 64);
    // Not a schedule check: a bound far above the deadline and far below
    // the 40 s a queue of late polls took, to show the run did not stretch.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_escapes_what_the_server_sent() {
    let forged = "https://cdn.example/x.mp4\nforged-9 succeeded https://evil.example/\u{1b}[2J";
    let server = server(&[(
        "esc-1",
        Timeline::new("mx-v2v")
            .pending(ms(50))
            .succeed("video", forged),
    )])
    .await;
    let out = Run::new(&["wait", "esc-1"])
        .against(&server)
        .output()
        .await
        .code(0);
    let text = stdout(&out);
    assert_eq!(
        text,
        "esc-1 succeeded https://cdn.example/x.mp4\\nforged-9 succeeded https://evil.example/\\u001b[2J\n"
    );
}

/// Whether a character of the output would act on a terminal instead of
/// showing: a control character other than the line ends, a bidi control,
/// a zero-width character.
fn acts_on_a_terminal(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_control_or_bidi_character_reaches_the_terminal() {
    // A clipboard write (OSC 52 … BEL), a screen wipe, a right-to-left
    // override and a zero-width space in the output URL; the URL cannot be
    // fetched, so `--download` prints it in its failure lines too.
    let hostile = "http://127.0.0.1:9/a\u{1b}]52;c;aGk=\u{7}\u{1b}[2J\u{202e}4pm.exe\u{200b}";
    let server = server(&[(
        "esc-2",
        Timeline::new("mx-v2v")
            .pending(ms(20))
            .succeed("video", hostile),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    let runs: [&[&str]; 6] = [
        &["wait", "esc-2"],
        &["get", "esc-2"],
        &["wait", "esc-2", "-o", "json"],
        &["wait", "esc-2", "--download", dir],
        &["get", "esc-2", "--download", dir],
        &["wait", "esc-2", "--download", dir, "-o", "json"],
    ];
    for args in runs {
        // The first run waits for the job's end, so `get` sees it ended.
        let out = Run::new(args).against(&server).output().await;
        let (stdout, stderr) = (stdout(&out), stderr(&out));
        for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            let raw: Vec<char> = text.chars().filter(|c| acts_on_a_terminal(*c)).collect();
            assert!(raw.is_empty(), "{args:?}: raw {raw:?} on {name}: {text:?}");
        }
        // The URL was shown, escaped.
        let shown = format!("{stdout}{stderr}");
        assert!(
            shown.contains("a\\u001b]52;c;aGk=\\u0007\\u001b[2J\\u202e4pm.exe\\u200b"),
            "{args:?}: {shown:?}"
        );
        if args.contains(&"json") {
            for line in stdout.lines() {
                let v: Value = serde_json::from_str(line).expect("each line is JSON");
                assert_eq!(v["outputs"][0]["url"], hostile, "{args:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_download_checks_the_folder_before_sending() {
    let server = server(&[("dl-1", quick_video())]).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    let not_a_dir = file.path().to_str().unwrap();
    let out = Run::new(&["get", "dl-1", "--download", not_a_dir])
        .against(&server)
        .output()
        .await
        .code(2);
    assert!(
        stderr(&out).starts_with(&format!("goenhance-jobs: cannot create {not_a_dir}: ")),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(server.total_requests(), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_invalid_id_is_not_echoed_whole() {
    let id = "x".repeat(1 << 20) + " ";
    let out = Run::new(&["wait", "--stdin"])
        .stdin(&format!("{id}\n"))
        .base_url("http://127.0.0.1:9")
        .output()
        .await
        .code(2);
    let err = stderr(&out);
    assert!(err.len() < 400, "{} bytes on stderr", err.len());
    assert!(
        err.starts_with(&format!(
            "goenhance-jobs: job id \"{}\"…: invalid input",
            "x".repeat(64)
        )),
        "{err}"
    );
}

mod download {
    use super::*;
    use goenhance_jobs::fake::{FakeFile, FileFault, FileFaults};

    /// A server whose jobs' outputs are files it serves itself.
    async fn server_with_files() -> FakeServer {
        let server = FakeServer::builder()
            .api_key(KEY)
            .file(
                "/out/v.mp4",
                FakeFile::new(300_000).content_type("video/mp4"),
            )
            .file("/out/thumb", FakeFile::new(5_000).content_type("image/png"))
            .file(
                "/out/gone.jpg",
                FakeFile::new(1_000).faults(FileFaults::always(FileFault::Expired)),
            )
            .start()
            .await
            .expect("the fake server starts");
        server.add_job(
            "v2v-1",
            Timeline::new("mx-v2v")
                .processing_for_answers(1)
                .succeed("video", server.file_url("/out/v.mp4"))
                .output("image", server.file_url("/out/thumb")),
        );
        server.add_job(
            "old-3",
            Timeline::new("mx-image-face-swap").succeed("image", server.file_url("/out/gone.jpg")),
        );
        server.add_job("fail-2", failing());
        server
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_saves_outputs_as_id_n_ext_and_lists_them_in_json() {
        let server = server_with_files().await;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("new-folder");
        let d = folder.to_str().unwrap();
        let out = Run::new(&["wait", "v2v-1", "fail-2", "--download", d, "-o", "json"])
            .against(&server)
            .output()
            .await
            .code(1);
        assert_eq!(names(&folder), ["v2v-1_0.mp4", "v2v-1_1.png"]);
        let video = std::fs::read(folder.join("v2v-1_0.mp4")).unwrap();
        let mut want = vec![0u8; 300_000];
        FakeFile::new(300_000).fill(0, &mut want);
        assert!(video == want, "the saved video differs from the served one");
        assert_eq!(
            std::fs::metadata(folder.join("v2v-1_1.png")).unwrap().len(),
            5_000
        );

        let lines = by_id(&json_lines(&out));
        assert_eq!(
            lines["v2v-1"]["files"],
            serde_json::json!([
                {"url": server.file_url("/out/v.mp4"), "path": format!("{d}/v2v-1_0.mp4"),
                 "bytes": 300_000, "content_type": "video/mp4", "error": null},
                {"url": server.file_url("/out/thumb"), "path": format!("{d}/v2v-1_1.png"),
                 "bytes": 5_000, "content_type": "image/png", "error": null},
            ])
        );
        assert_eq!(lines["fail-2"]["status"], "failed");
        assert!(lines["fail-2"].get("files").is_none());
        for h in server.file_stats("/out/v.mp4").headers {
            assert!(h.get("authorization").is_none());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_download_exits_4_and_leaves_no_file() {
        let server = server_with_files().await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = server.file_url("/out/gone.jpg");
        let out = Run::new(&["wait", "old-3", "--download", d])
            .against(&server)
            .output()
            .await
            .code(4);
        assert_eq!(
            stdout(&out),
            format!("old-3 succeeded download-failed:{url}\n")
        );
        assert!(stderr(&out).contains(&format!(
            "old-3: download of {url} failed: output url expired: \
             the storage host refused the signed url (403 forbidden)"
        )));
        assert_eq!(names(dir.path()), Vec::<String>::new());
        assert_eq!(server.file_stats("/out/gone.jpg").requests, 1);

        let out = Run::new(&["wait", "old-3", "--download", d, "-o", "json"])
            .against(&server)
            .output()
            .await
            .code(4);
        let line = &json_lines(&out)[0];
        assert_eq!(line["files"][0]["error"]["kind"], "expired");
        assert_eq!(line["files"][0]["error"]["http_status"], 403);
        assert_eq!(line["files"][0]["path"], Value::Null);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_saves_the_outputs_of_a_finished_job() {
        let server = server_with_files().await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        // Not finished yet: nothing to save.
        Run::new(&["get", "v2v-1", "--download", d])
            .against(&server)
            .output()
            .await
            .code(0)
            .stdout("v2v-1 processing\n");
        assert_eq!(names(dir.path()), Vec::<String>::new());
        Run::new(&["wait", "v2v-1"])
            .against(&server)
            .output()
            .await
            .code(0);
        Run::new(&["get", "v2v-1", "--download", d])
            .against(&server)
            .output()
            .await
            .code(0)
            .stdout(format!("v2v-1 succeeded {d}/v2v-1_0.mp4 {d}/v2v-1_1.png\n"));
        assert_eq!(names(dir.path()), ["v2v-1_0.mp4", "v2v-1_1.png"]);
    }
}
