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

/// Waits for the process to end (killing it and failing after `within`);
/// its stdout lines and exit code.
fn finish(
    mut child: std::process::Child,
    lines: mpsc::Receiver<String>,
    within: Duration,
) -> (Vec<String>, Option<i32>) {
    let end = std::time::Instant::now() + within;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("goenhance-jobs still running after {within:?}");
        }
        std::thread::sleep(ms(20));
    };
    (lines.iter().collect(), code)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("goenhance-cli-state-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_on_one_file_cooperate_both_end_and_print_each_job_once() {
    let mut builder = FakeServer::builder().api_key(KEY);
    let ids: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    for id in &ids {
        builder = builder.job(
            id.clone(),
            Timeline::new("mx-v2v")
                .pending(Duration::from_secs(4))
                .succeed("video", format!("https://cdn.example/{id}.mp4")),
        );
    }
    let server = builder.start().await.unwrap();
    let dir = temp_dir("two");
    let file = dir.join("state.db");
    let (f, base) = (
        file.to_str().unwrap().to_owned(),
        server.base_url().to_owned(),
    );
    let ids2 = ids.clone();
    let (first, second) = tokio::task::spawn_blocking(move || {
        let mut args = vec![
            "wait",
            "--state",
            &f,
            "-o",
            "json",
            "--poll-interval",
            "200ms",
        ];
        args.extend(ids2.iter().map(String::as_str));
        let (one, lines_one) = start(&base, &args);
        // The second starts a second after the first, on the same file,
        // with the same ids.
        std::thread::sleep(Duration::from_secs(1));
        let (two, lines_two) = start(&base, &args);
        let first = std::thread::spawn(move || finish(one, lines_one, Duration::from_secs(30)));
        let second = finish(two, lines_two, Duration::from_secs(30));
        (first.join().unwrap(), second)
    })
    .await
    .unwrap();
    assert_eq!(
        (first.1, second.1),
        (Some(0), Some(0)),
        "both end, all succeeded"
    );
    let mut printed: Vec<(String, String)> = first
        .0
        .iter()
        .chain(second.0.iter())
        .map(|l| status_of(l))
        .collect();
    printed.sort();
    let want: Vec<(String, String)> = ids
        .iter()
        .map(|id| (id.clone(), "succeeded".to_owned()))
        .collect();
    assert_eq!(printed, want, "every job printed once, by one of the two");
    for id in &ids {
        assert_eq!(
            server.polls_after_terminal(id),
            0,
            "{id} polled after its end"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_with_download_saves_the_outputs_once() {
    use goenhance_jobs::fake::FakeFile;
    let server = FakeServer::builder()
        .api_key(KEY)
        .file(
            "/out/v.mp4",
            FakeFile::new(200_000).content_type("video/mp4"),
        )
        .start()
        .await
        .unwrap();
    server.add_job(
        "d1",
        Timeline::new("mx-v2v")
            .processing(ms(200))
            .succeed("video", server.file_url("/out/v.mp4")),
    );
    server.add_job("d2", Timeline::new("mx-v2v").processing(ms(200)).fail());
    let dir = temp_dir("download");
    let file = dir.join("state.db");
    let out = dir.join("out");
    let (f, o, base) = (
        file.to_str().unwrap().to_owned(),
        out.to_str().unwrap().to_owned(),
        server.base_url().to_owned(),
    );
    let (lines, code) = tokio::task::spawn_blocking(move || {
        let (child, lines) = start(
            &base,
            &[
                "wait",
                "--state",
                &f,
                "--download",
                &o,
                "-o",
                "json",
                "--poll-interval",
                "100ms",
                "d1",
                "d2",
            ],
        );
        finish(child, lines, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "a failed job");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["d1_0.mp4"]);
    let mut want = vec![0u8; 200_000];
    FakeFile::new(200_000).fill(0, &mut want);
    assert!(
        std::fs::read(out.join("d1_0.mp4")).unwrap() == want,
        "the saved file differs from the served one"
    );
    let by_id: HashMap<String, Value> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["img_uuid"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    assert_eq!(by_id.len(), 2);
    assert_eq!(by_id["d1"]["files"][0]["bytes"], 200_000);
    assert_eq!(by_id["d2"]["status"], "failed");
    assert_eq!(
        server.file_stats("/out/v.mp4").requests,
        1,
        "downloaded once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_older_than_keep_are_pruned_and_not_printed_again() {
    let server = FakeServer::builder()
        .api_key(KEY)
        .job(
            "p1",
            Timeline::new("mx-v2v")
                .processing(ms(100))
                .succeed("video", "https://cdn.example/p1.mp4"),
        )
        .job(
            "p2",
            Timeline::new("mx-v2v")
                .processing(ms(100))
                .succeed("video", "https://cdn.example/p2.mp4"),
        )
        .start()
        .await
        .unwrap();
    let dir = temp_dir("keep");
    let file = dir.join("state.db");
    let (f, base) = (
        file.to_str().unwrap().to_owned(),
        server.base_url().to_owned(),
    );
    let run = move |args: Vec<&'static str>| {
        let (f, base) = (f.clone(), base.clone());
        move || {
            let mut all = vec![
                "wait",
                "--state",
                &f,
                "-o",
                "json",
                "--poll-interval",
                "50ms",
            ];
            all.extend(args);
            let (child, lines) = start(&base, &all);
            let (lines, code) = finish(child, lines, Duration::from_secs(30));
            let ids: Vec<String> = lines.iter().map(|l| status_of(l).0).collect();
            (ids, code)
        }
    };
    let first = tokio::task::spawn_blocking(run(vec!["--keep", "2s", "p1"]))
        .await
        .unwrap();
    assert_eq!(first, (vec!["p1".to_owned()], Some(0)));
    // Within --keep a rerun prints the result again, without polling.
    let again = tokio::task::spawn_blocking(run(vec!["--keep", "2s", "p2"]))
        .await
        .unwrap();
    assert_eq!(again, (vec!["p1".to_owned(), "p2".to_owned()], Some(0)));
    let hits = server.hits("p1");
    // Once older than --keep, the results are gone from the file.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let after = tokio::task::spawn_blocking(run(vec!["--keep", "2s"]))
        .await
        .unwrap();
    assert_eq!(
        after,
        (vec![], Some(2)),
        "nothing old, and no job to wait on"
    );
    assert_eq!(server.hits("p1"), hits);
    let conn = rusqlite::Connection::open(&file).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM goenhance_jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "pruned from the file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_run_and_the_next_goes_on_at_once() {
    let server = FakeServer::builder()
        .api_key(KEY)
        .job(
            "t1",
            Timeline::new("mx-v2v")
                .pending(Duration::from_secs(3))
                .succeed("video", "https://cdn.example/t1.mp4"),
        )
        .start()
        .await
        .unwrap();
    let dir = temp_dir("sigterm");
    let file = dir.join("state.db");
    let (f, base) = (
        file.to_str().unwrap().to_owned(),
        server.base_url().to_owned(),
    );
    let server = std::sync::Arc::new(server);
    let server_hits = {
        let s = server.clone();
        move || s.hits("t1")
    };
    let (first, second) = tokio::task::spawn_blocking(move || {
        let args = [
            "wait",
            "--state",
            &f,
            "-o",
            "json",
            "--poll-interval",
            "200ms",
        ];
        let (one, lines_one) = start(&base, &[&args[..], &["t1"]].concat());
        // Once the job is being polled, the run holds it.
        while server_hits() == 0 {
            std::thread::sleep(ms(10));
        }
        let term = Command::new("kill")
            .args(["-TERM", &one.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let first = finish(one, lines_one, Duration::from_secs(5));
        // Without the release the job would wait for the first run's
        // heartbeat (30 s) to lapse.
        let (two, lines_two) = start(&base, &args);
        (first, finish(two, lines_two, Duration::from_secs(10)))
    })
    .await
    .unwrap();
    assert_eq!(first, (vec![], Some(130)));
    let printed: Vec<(String, String)> = second.0.iter().map(|l| status_of(l)).collect();
    assert_eq!(
        (printed, second.1),
        (vec![("t1".to_owned(), "succeeded".to_owned())], Some(0))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
