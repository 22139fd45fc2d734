//! `goenhance-jobs wait --state FILE`: interrupted with SIGINT and run
//! again, every job is printed once per run with its right final status,
//! and no job is polled after its end was stored.
#![cfg(feature = "cli")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use goenhance_jobs::fake::{FakeServer, Timeline};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_goenhance-jobs");
const KEY: &str = "sk-state-SECRET-99";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Starts the binary; its stdout lines come through the receiver.
fn start(base: &str, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("GOENHANCE_API_KEY", KEY)
        .env("GOENHANCE_BASE_URL", base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start goenhance-jobs");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn status_of(line: &str) -> (String, String) {
    let v: Value = serde_json::from_str(line).unwrap();
    let status = match v["error"]["kind"].as_str() {
        Some(kind) => format!("error:{kind}"),
        None => v["status"].as_str().unwrap().to_owned(),
    };
    (v["img_uuid"].as_str().unwrap().to_owned(), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_and_run_again_every_job_is_printed_once_with_its_end() {
    let quick = |kind| Timeline::new(kind).pending(ms(100)).processing(ms(100));
    let server = FakeServer::builder()
        .api_key(KEY)
        .job(
            "q1",
            quick("mx-v2v").succeed("video", "https://cdn.example/q1.mp4"),
        )
        .job("q2", quick("mx-v2v").fail())
        .job(
            "q3",
            quick("mx-v2v").succeed("video", "https://cdn.example/q3.mp4"),
        )
        // Still running when the first run is interrupted.
        .job(
            "s1",
            Timeline::new("mx-v2v")
                .pending(Duration::from_secs(4))
                .succeed("video", "https://cdn.example/s1.mp4"),
        )
        .job(
            "s2",
            Timeline::new("mx-v2v")
                .processing(Duration::from_secs(4))
                .fail(),
        )
        // Never ends: its deadline (6 s from the first run) ends it.
        .job(
            "h1",
            Timeline::new("mx-v2v").pending(Duration::from_secs(3600)),
        )
        .start()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("goenhance-cli-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("state.db");
    let file_s = file.to_str().unwrap().to_owned();
    let base = server.base_url().to_owned();
    let want: HashMap<&str, &str> = HashMap::from([
        ("q1", "succeeded"),
        ("q2", "failed"),
        ("q3", "succeeded"),
        ("s1", "succeeded"),
        ("s2", "failed"),
        ("h1", "error:deadline"),
    ]);

    // First run: interrupted once the quick jobs are printed.
    let (b, f) = (base.clone(), file_s.clone());
    let (first, code) = tokio::task::spawn_blocking(move || {
        let (mut child, lines) = start(
            &b,
            &[
                "wait",
                "--state",
                &f,
                "-o",
                "json",
                "--poll-interval",
                "100ms",
                "--timeout",
                "6s",
                "q1",
                "q2",
                "q3",
                "s1",
                "s2",
                "h1",
            ],
        );
        let mut first = Vec::new();
        while first.len() < 3 {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("quick jobs printed");
            first.push(status_of(&line));
        }
        let kill = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = child.wait().unwrap();
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
            first.push(status_of(&line));
        }
        (first, status.code())
    })
    .await
    .unwrap();
    assert_eq!(code, Some(130));
    let mut got: Vec<_> = first.clone();
    got.sort();
    assert_eq!(
        got,
        [
            ("q1".to_owned(), "succeeded".to_owned()),
            ("q2".to_owned(), "failed".to_owned()),
            ("q3".to_owned(), "succeeded".to_owned()),
        ]
    );
    let quick_hits: Vec<u64> = ["q1", "q2", "q3"]
        .iter()
        .map(|id| server.hits(id))
        .collect();

    // Second run, no ids: prints the three known results without polling
    // them, goes on with the rest, exit code covers all six (a failed job).
    let (b, f) = (base.clone(), file_s.clone());
    let (second, code) = tokio::task::spawn_blocking(move || {
        let (mut child, lines) = start(&b, &["wait", "--state", &f, "-o", "json"]);
        let status = child.wait().unwrap();
        let second: Vec<_> = lines.iter().map(|l| status_of(&l)).collect();
        (second, status.code())
    })
    .await
    .unwrap();
    assert_eq!(code, Some(3), "a deadline is the largest exit code here");
    let mut seen: HashMap<String, String> = HashMap::new();
    for (id, status) in &second {
        assert!(
            seen.insert(id.clone(), status.clone()).is_none(),
            "{id} printed twice"
        );
    }
    assert_eq!(
        seen,
        want.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>()
    );
    // The known ones come first, from the file.
    let mut head: Vec<_> = second[..3].iter().map(|(id, _)| id.as_str()).collect();
    head.sort();
    assert_eq!(head, ["q1", "q2", "q3"]);
    let after: Vec<u64> = ["q1", "q2", "q3"]
        .iter()
        .map(|id| server.hits(id))
        .collect();
    assert_eq!(after, quick_hits, "known jobs polled again");
    for id in want.keys() {
        assert_eq!(
            server.polls_after_terminal(id),
            0,
            "{id} polled after its end"
        );
    }

    // A third run polls nothing and prints the same.
    let total = server.total_requests();
    let (b, f) = (base.clone(), file_s.clone());
    let (third, code) = tokio::task::spawn_blocking(move || {
        let (mut child, lines) = start(&b, &["wait", "--state", &f, "-o", "json"]);
        let status = child.wait().unwrap();
        let third: Vec<_> = lines.iter().map(|l| status_of(&l)).collect();
        (third, status.code())
    })
    .await
    .unwrap();
    assert_eq!(code, Some(3));
    assert_eq!(third.len(), 6);
    assert_eq!(server.total_requests(), total);
    let _ = std::fs::remove_dir_all(&dir);
}
