//! A tracking worker on a SQLite file, SIGKILLed mid-run and started
//! again: every job is delivered, only jobs whose delivery was not
//! recorded are delivered twice, and deadlines count the time it was down.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goenhance_jobs::fake::{FakeServer, Timeline};
use goenhance_jobs::track::{SqliteStore, Tracker};
use goenhance_jobs::{Client, JobQuery};

const JOBS: usize = 500;
const HANGING: usize = 5;
const DEADLINE_MS: u64 = 6000;

fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join("track_worker");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --examples --features sqlite,fake` \
         (cargo test builds it)",
        bin.display()
    );
    bin
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One `deliver` line of the worker.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    deliveries: u32,
    what: String,
    at_ms: u64,
}

struct Worker {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    fn start(db: &std::path::Path, base: &str) -> Worker {
        let mut child = Command::new(worker_binary())
            .arg(db)
            .arg(base)
            .args(["--poll-ms", "200", "--handler-ms", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start track_worker");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let w = Worker { child, lines };
        let first = w.next_line().expect("worker printed nothing");
        assert!(first.starts_with("ready "), "{first}");
        w
    }

    fn next_line(&self) -> Option<String> {
        self.lines.recv_timeout(Duration::from_secs(60)).ok()
    }

    fn next_delivery(&self) -> Delivery {
        let line = self.next_line().expect("worker went silent");
        parse(&line)
    }

    /// SIGKILL, then the lines it printed before dying.
    fn kill(mut self) -> Vec<Delivery> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(parse(&line));
        }
        rest
    }
}

fn parse(line: &str) -> Delivery {
    let parts: Vec<&str> = line.splitn(6, ' ').collect();
    assert_eq!(parts[0], "deliver", "{line}");
    Delivery {
        id: parts[1].to_owned(),
        deliveries: parts[2].parse().unwrap(),
        what: parts[3].to_owned(),
        at_ms: parts[4].parse().unwrap(),
    }
}

fn delivered_in_file(db: &std::path::Path) -> HashSet<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id FROM goenhance_jobs WHERE state = 2")
        .unwrap();
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<HashSet<_>, _>>()
        .unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_and_redelivers_only_unrecorded_jobs() {
    let ms = Duration::from_millis;
    let mut builder = FakeServer::builder();
    let mut want = HashMap::new();
    for i in 0..JOBS {
        let id = format!("job-{i:04}");
        let t = Timeline::new("mx-v2v").pending(ms(100 + (i as u64 % 30) * 100));
        let (t, what) = if i < HANGING {
            (t, "error")
        } else if i % 10 == 7 {
            (t.processing(ms(300)).fail(), "failed")
        } else {
            (
                t.processing(ms(300))
                    .succeed("video", format!("https://cdn.example/{id}.mp4")),
                "succeeded",
            )
        };
        want.insert(id.clone(), what);
        builder = builder.job(id, t);
    }
    let server = builder.start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("goenhance-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("jobs.db");

    // Track every job (durable once track returns), then let workers run.
    let tracked_at = now_ms();
    {
        let store = SqliteStore::open(&db).await.unwrap();
        let client = Client::builder()
            .api_key("fake-key")
            .base_url(server.base_url())
            .wait_timeout(ms(DEADLINE_MS))
            .build()
            .unwrap();
        let tracker = Tracker::builder(client, store).build();
        let tracks = want.keys().map(|id| {
            let t = tracker.clone();
            let id = id.clone();
            async move { t.track(JobQuery::new(&id)?, serde_json::json!(id)).await }
        });
        for r in futures_util::future::join_all(tracks).await {
            r.unwrap();
        }
        assert_eq!(tracker.pending().await.unwrap(), JOBS as u64);
    }

    let (db2, base) = (db.clone(), server.base_url().to_owned());
    let (first, killed_at, recorded) = tokio::task::spawn_blocking(move || {
        let w = Worker::start(&db2, &base);
        let mut first = Vec::new();
        while first.len() < JOBS / 2 {
            first.push(w.next_delivery());
        }
        first.extend(w.kill());
        (first, now_ms(), delivered_in_file(&db2))
    })
    .await
    .unwrap();
    assert!(
        first.len() < JOBS,
        "the kill came too late to test anything"
    );
    // Down for a while: the hanging jobs' deadline runs on.
    tokio::time::sleep(ms(1500)).await;
    let restarted_at = now_ms();

    let (db2, base) = (db.clone(), server.base_url().to_owned());
    let ids: HashSet<String> = want.keys().cloned().collect();
    let first_ids: HashSet<String> = first.iter().map(|d| d.id.clone()).collect();
    let second = tokio::task::spawn_blocking(move || {
        let w = Worker::start(&db2, &base);
        let mut second = Vec::new();
        let mut seen = first_ids;
        while !ids.is_subset(&seen) {
            let d = w.next_delivery();
            seen.insert(d.id.clone());
            second.push(d);
        }
        // Until the last deliveries are recorded.
        while delivered_in_file(&db2).len() < JOBS {
            std::thread::sleep(ms(20));
        }
        second.extend(w.kill());
        second
    })
    .await
    .unwrap();

    // Every job delivered, with its right outcome.
    let mut last: HashMap<&str, &Delivery> = HashMap::new();
    for d in first.iter().chain(&second) {
        last.insert(&d.id, d);
    }
    assert_eq!(last.len(), JOBS);
    for (id, what) in &want {
        let d = last[id.as_str()];
        if *what == "error" {
            assert!(
                d.what.starts_with("error:wait_deadline_reached"),
                "{id}: {}",
                d.what
            );
        } else {
            assert_eq!(d.what, *what, "{id}");
        }
    }
    // Delivered twice: only jobs delivered before the kill whose delivery
    // was not yet recorded; and those say so.
    let first_ids: HashSet<&str> = first.iter().map(|d| d.id.as_str()).collect();
    let unrecorded: HashSet<&str> = first_ids
        .iter()
        .copied()
        .filter(|id| !recorded.contains(*id))
        .collect();
    let twice: HashSet<&str> = second
        .iter()
        .map(|d| d.id.as_str())
        .filter(|id| first_ids.contains(id))
        .collect();
    assert!(twice.is_subset(&unrecorded), "{twice:?} ⊄ {unrecorded:?}");
    assert!(unrecorded.len() <= 16 + 16, "{}", unrecorded.len());
    for d in second.iter().filter(|d| twice.contains(d.id.as_str())) {
        assert_eq!(d.deliveries, 2, "{}", d.id);
    }
    // A job whose outcome was stored just before the kill, before its
    // handler was called, counts that as a delivery.
    for d in second.iter().filter(|d| !twice.contains(d.id.as_str())) {
        assert!(matches!(d.deliveries, 1 | 2), "{} {}", d.id, d.deliveries);
    }
    // The hanging jobs ended 6 s after they were tracked, down time
    // included, not 6 s after the restart.
    assert!(killed_at < tracked_at + DEADLINE_MS);
    for i in 0..HANGING {
        let d = last[format!("job-{i:04}").as_str()];
        assert!(
            d.at_ms >= tracked_at + DEADLINE_MS && d.at_ms < restarted_at + DEADLINE_MS - 500,
            "delivered {} ms after track, restart at {} ms",
            d.at_ms - tracked_at,
            restarted_at - tracked_at
        );
    }
    // No job polled after its outcome was stored: at most the jobs whose
    // terminal answer came just before the kill were asked again.
    let polled_again = want
        .keys()
        .filter(|id| server.polls_after_terminal(id) > 0)
        .count();
    assert!(
        polled_again <= 20,
        "{polled_again} jobs polled after their end"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn processes_opening_one_new_or_old_file_at_once_all_start() {
    // Each worker opens the file (creating and migrating it, or taking it
    // as it is) before it prints `ready`; several start at the same time.
    let dir = std::env::temp_dir().join(format!("goenhance-opens-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..10 {
        let db = dir.join(format!("r{round}.db"));
        if round % 2 == 1 {
            // A file of the earlier schema, with no job in it.
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch(concat!(
                include_str!("../src/track/migrations/sqlite/V1__jobs.sql"),
                include_str!("../src/track/migrations/sqlite/V2__status.sql"),
                "PRAGMA user_version = 2;"
            ))
            .unwrap();
        }
        let n = 2 + round % 3;
        let mut children: Vec<Child> = (0..n)
            .map(|i| {
                Command::new(worker_binary())
                    .arg(&db)
                    .arg("http://127.0.0.1:9")
                    .args(["--worker-id", &format!("w{i}")])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start track_worker")
            })
            .collect();
        for (i, child) in children.iter_mut().enumerate() {
            let mut first = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut first)
                .unwrap();
            if !first.starts_with("ready ") {
                let _ = child.kill();
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("round {round}: worker {i} of {n} did not start: {err}");
            }
        }
        for mut child in children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let conn = rusqlite::Connection::open(&db).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 3, "round {round}: each migration applied once");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
