//! What a tracking run tells when things go wrong: the `WARN` events
//! (captured by a `tracing` layer of the test's own) name the store and
//! the operation that failed, never a password; the `goenhance.track.*`
//! metrics (into metrics-util's debugging recorder, local to each test)
//! have exact values. On tokio's paused clock where the store allows it
//! (the memory store, a SQLite file), on real time against PostgreSQL.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goenhance_jobs::telemetry::{
    TRACK_DELIVERIES, TRACK_FENCINGS, TRACK_HEARTBEATS, TRACK_JOBS_HELD, TRACK_REGISTRATIONS,
    TRACK_STORE_ERRORS,
};
use goenhance_jobs::track::testing::{Fault, FaultyStore, Operation};
use goenhance_jobs::track::{Completion, MemoryStore, SqliteStore, TrackStore, Tracker};
use goenhance_jobs::transport::mock::MockTransport;
use goenhance_jobs::{BoxError, Client, PollPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use support::{mock_client, q, secs};

/// One event as the capturing layer saw it: level, message and fields.
#[derive(Clone, Debug, Default)]
struct Seen {
    level: String,
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Seen {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Seen {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }

    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// A layer that keeps every event of every level.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut seen = Seen {
            level: event.metadata().level().to_string(),
            ..Seen::default()
        };
        event.record(&mut seen);
        self.0.lock().unwrap().push(seen);
    }
}

impl Capture {
    fn events(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// The `WARN` events with this message.
    fn warnings(&self, message: &str) -> Vec<Seen> {
        self.events()
            .into_iter()
            .filter(|e| e.level == "WARN" && e.message == message)
            .collect()
    }
}

/// Everything the `fmt` layer wrote, every level included.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Written {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Written {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs `test` on a current-thread runtime (its clock paused when
/// `paused`), every metric going to `recorder` and every event to
/// `capture` and to a `fmt` layer writing into `written`; the runtime is
/// shut down before the recorder and the subscriber are let go.
fn with_telemetry<T, F: Future<Output = T>>(
    recorder: &DebuggingRecorder,
    capture: &Capture,
    written: &Written,
    paused: bool,
    test: impl FnOnce() -> F,
) -> T {
    let w = written.clone();
    let subscriber = tracing_subscriber::registry().with(capture.clone()).with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
    );
    tracing::subscriber::with_default(subscriber, || {
        support::recorder::with_recorder(recorder, paused, test)
    })
}

/// The `goenhance.track.*` values, added up over snapshots (a snapshot
/// of the debugging recorder takes the values out).
#[derive(Default, Debug)]
struct Totals(BTreeMap<String, f64>);

impl Totals {
    fn take(&mut self, snapshotter: &Snapshotter) {
        for (ck, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = ck.key();
            if !key.name().starts_with("goenhance.track.") {
                continue;
            }
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let v = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(_) => panic!("{name} is no histogram"),
            };
            *self.0.entry(name).or_default() += v;
        }
    }

    /// Every value, zeros left out (a gauge back at zero).
    fn nonzero(&self) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .filter(|(_, v)| **v != 0.0)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn value(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

fn want(pairs: &[(String, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().cloned().collect()
}

fn key(name: &str, label: &str) -> String {
    format!("{name}{{{label}}}")
}

/// A poll a second, a minute's deadline, no retries.
fn client(mock: &MockTransport) -> Client {
    mock_client(mock)
        .poll_policy(PollPolicy::fixed(secs(1)))
        .wait_timeout(secs(60))
        .build()
        .unwrap()
}

/// Failing claim, complete and ack calls on a SQLite file: each failed
/// pass is one `WARN` naming the file and the operation, each failed call
/// one count of `goenhance.track.store.errors` by operation, and the run
/// goes on to deliver every job once.
#[test]
fn store_failures_are_told_with_the_store_and_operation_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let (capture, written) = (Capture::default(), Written::default());
    let p = path.clone();
    let delivered = with_telemetry(&recorder, &capture, &written, true, || async move {
        let mock = MockTransport::new();
        for id in ["a", "b", "c"] {
            mock.timeline(id, &["success"]);
        }
        let store = FaultyStore::new(SqliteStore::open(&p).await.unwrap());
        assert_eq!(store.location(), p.display().to_string());
        let tracker = Tracker::builder(client(&mock), store.clone()).build();
        for id in ["a", "b", "c"] {
            tracker.track(q(id), json!({})).await.unwrap();
        }
        store.inject(Operation::Claim, Fault::Error, 1);
        store.inject(Operation::Complete, Fault::Error, 2);
        store.inject(Operation::Ack, Fault::CommitThenError, 1);
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&delivered);
        let run = tracker.run(move |c: Completion| {
            seen.lock()
                .unwrap()
                .push((c.query().img_uuid().to_owned(), c.deliveries()));
            async { Ok::<(), BoxError>(()) }
        });
        // 35 s: three heartbeats after the registration (one each 10 s).
        tokio::select! {
            r = run => panic!("the run ended: {r:?}"),
            () = tokio::time::sleep(secs(35)) => {}
        }
        assert_eq!(tracker.pending().await.unwrap(), 0);
        assert_eq!(store.injected(), 4);
        let mut d = delivered.lock().unwrap().clone();
        d.sort();
        d
    });
    let ids = |v: &[&str]| v.iter().map(|s| (s.to_string(), 1)).collect::<Vec<_>>();
    assert_eq!(delivered, ids(&["a", "b", "c"]));

    let warned: Vec<(String, String, String)> = capture
        .warnings("tracking store failed; retrying")
        .into_iter()
        .map(|e| {
            (
                e.field("store").to_owned(),
                e.field("operation").to_owned(),
                e.field("error").to_owned(),
            )
        })
        .collect();
    let file = path.display().to_string();
    let w = |op: &str, error: &str| (file.clone(), op.to_owned(), error.to_owned());
    assert_eq!(
        warned,
        [
            w("claim", "store error: injected fault: Claim failed"),
            w("complete", "store error: injected fault: Complete failed"),
            w("complete", "store error: injected fault: Complete failed"),
            w("ack", "store error: injected fault: Ack lost its answer"),
        ]
    );

    let mut totals = Totals::default();
    totals.take(&snap);
    assert_eq!(
        totals.nonzero(),
        want(&[
            (key(TRACK_DELIVERIES, "outcome=ok"), 3.0),
            (key(TRACK_HEARTBEATS, "outcome=alive"), 3.0),
            (key(TRACK_REGISTRATIONS, ""), 1.0),
            (key(TRACK_STORE_ERRORS, "operation=ack"), 1.0),
            (key(TRACK_STORE_ERRORS, "operation=claim"), 1.0),
            (key(TRACK_STORE_ERRORS, "operation=complete"), 2.0),
        ])
    );
    assert_eq!(totals.value(&key(TRACK_JOBS_HELD, "")), 0.0);
}

/// A heartbeat that hangs past the lease fences the worker (`unanswered`)
/// and it registers again; a job held when that happened is delivered
/// once after; the jobs-held gauge follows the run and is back at zero.
#[test]
fn a_hung_heartbeat_is_counted_as_a_fencing_and_a_registration() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let (capture, written) = (Capture::default(), Written::default());
    let mut totals = with_telemetry(&recorder, &capture, &written, true, || async {
        let mut totals = Totals::default();
        let mock = MockTransport::new();
        mock.timeline("held", &["pending"]);
        let store = FaultyStore::new(MemoryStore::new());
        let tracker = Tracker::builder(client(&mock), store.clone())
            .store_timeout(secs(60))
            .build();
        tracker.track(q("held"), json!({})).await.unwrap();
        // The first heartbeat (at 10 s) hangs for a minute; the lease of
        // the registration covers this worker until 25 s.
        store.inject(Operation::Heartbeat, Fault::Hang(secs(60)), 1);
        let run = tracker.run(|_c: Completion| async { Ok::<(), BoxError>(()) });
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("the run ended: {r:?}"),
            () = tokio::time::sleep(secs(5)) => {}
        }
        totals.take(&snap);
        assert_eq!(totals.value(&key(TRACK_JOBS_HELD, "")), 1.0);
        // 40 s: fenced at 25 s, registered again, heartbeat at 35 s.
        tokio::select! {
            r = &mut run => panic!("the run ended: {r:?}"),
            () = tokio::time::sleep(secs(35)) => {}
        }
        totals.take(&snap);
        assert_eq!(totals.value(&key(TRACK_JOBS_HELD, "")), 1.0);
        totals
    });
    totals.take(&snap);
    assert_eq!(
        totals.nonzero(),
        want(&[
            (key(TRACK_FENCINGS, "reason=unanswered"), 1.0),
            (key(TRACK_HEARTBEATS, "outcome=alive"), 1.0),
            (key(TRACK_REGISTRATIONS, ""), 2.0),
        ])
    );
    let fenced =
        capture.warnings("tracking worker fenced; stopping its work and registering again");
    assert_eq!(fenced.len(), 1, "{fenced:#?}");
    assert_eq!(fenced[0].field("store"), "memory");
    assert_eq!(
        fenced[0].field("reason"),
        "the store did not answer before the lease ran out"
    );
}

/// Deliveries by outcome: `ok`, `failed` then `dead` for a handler that
/// always fails (with `max_deliveries(2)`), `timed_out` then `ok` for one
/// slower than the handler timeout once; the gauge counts the three jobs
/// held while their handlers run.
#[test]
fn deliveries_are_counted_by_outcome() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let (capture, written) = (Capture::default(), Written::default());
    let mut totals = with_telemetry(&recorder, &capture, &written, true, || async {
        let mut totals = Totals::default();
        let mock = MockTransport::new();
        for id in ["ok", "bad", "slow"] {
            mock.timeline(id, &["success"]);
        }
        let store = MemoryStore::new();
        let tracker = Tracker::builder(client(&mock), store.clone())
            .max_deliveries(2)
            .handler_timeout(secs(5))
            .handler_retry(secs(1), secs(1))
            .build();
        for id in ["ok", "bad", "slow"] {
            tracker.track(q(id), json!({})).await.unwrap();
        }
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let (go_tx, go) = tokio::sync::watch::channel(false);
        let run = tracker.run(move |c: Completion| {
            let (started_tx, mut go) = (started_tx.clone(), go.clone());
            async move {
                let (id, n) = (c.query().img_uuid().to_owned(), c.deliveries());
                if n == 1 {
                    started_tx.send(id.clone()).unwrap();
                    go.wait_for(|go| *go).await.unwrap();
                }
                match (id.as_str(), n) {
                    ("bad", _) => Err::<(), BoxError>("refused".into()),
                    ("slow", 1) => {
                        tokio::time::sleep(secs(10)).await;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        });
        tokio::pin!(run);
        let mut first = Vec::new();
        while first.len() < 3 {
            tokio::select! {
                r = &mut run => panic!("the run ended: {r:?}"),
                Some(id) = started.recv() => first.push(id),
            }
        }
        totals.take(&snap);
        assert_eq!(totals.value(&key(TRACK_JOBS_HELD, "")), 3.0);
        go_tx.send(true).unwrap();
        tokio::select! {
            r = &mut run => panic!("the run ended: {r:?}"),
            () = async {
                while tracker.pending().await.unwrap() > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            } => {}
        }
        let dead = tracker.dead(10, None).await.unwrap();
        let dead: Vec<(&str, &str, u32)> = dead
            .items()
            .iter()
            .map(|d| (d.id(), d.error(), d.deliveries()))
            .collect();
        assert_eq!(dead, [("bad", "refused", 2)]);
        totals
    });
    totals.take(&snap);
    assert_eq!(
        totals.nonzero(),
        want(&[
            (key(TRACK_DELIVERIES, "outcome=dead"), 1.0),
            (key(TRACK_DELIVERIES, "outcome=failed"), 1.0),
            (key(TRACK_DELIVERIES, "outcome=ok"), 2.0),
            (key(TRACK_DELIVERIES, "outcome=timed_out"), 1.0),
            (key(TRACK_REGISTRATIONS, ""), 1.0),
        ])
    );
}

/// A PostgreSQL store whose connection string carries a password, made to
/// fail by stopping the server: the warning names
/// `postgres://user@host:port/db`, and the password is nowhere in what
/// was logged (every level, every field) nor in the errors.
#[cfg(feature = "postgres")]
#[test]
fn a_failing_postgres_store_is_named_without_its_password() {
    use goenhance_jobs::track::PostgresStore;
    use support::pg::Cluster;

    const PASSWORD: &str = "pw-Zq81-never-logged";
    let cluster = Cluster::start("telemetry-secret");
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        cluster.port
    );
    let target = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let (capture, written) = (Capture::default(), Written::default());
    let (warned, errors) = with_telemetry(&recorder, &capture, &written, false, || async {
        let store = PostgresStore::connect(&url).await.unwrap();
        assert_eq!(store.location(), target);
        let mock = MockTransport::new();
        mock.timeline("p-1", &["success"]);
        let tracker = Tracker::builder(client(&mock), store.clone())
            .claim_interval(Duration::from_millis(50))
            .store_timeout(secs(5))
            .build();
        tracker.track(q("p-1"), json!({})).await.unwrap();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let run = tracker.run(move |c: Completion| {
            seen_tx.send(c.query().img_uuid().to_owned()).unwrap();
            async { Ok::<(), BoxError>(()) }
        });
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("the run ended: {r:?}"),
            Some(id) = seen.recv() => assert_eq!(id, "p-1"),
        }
        // The server goes away under the run.
        cluster.pg_ctl(&["-m", "immediate", "stop"]);
        let warned = loop {
            let w = capture.warnings("tracking store failed; retrying");
            if let Some(first) = w.into_iter().next() {
                break first;
            }
            tokio::select! {
                r = &mut run => panic!("the run ended: {r:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        };
        // What callers of the tracker see while it is down.
        let err = tracker.track(q("p-2"), json!({})).await.unwrap_err();
        (warned, format!("{err} | {err:#} | {err:?} | {store:?}"))
    });
    assert_eq!(warned.field("store"), target, "{warned:#?}");
    let operation = warned.field("operation").to_owned();
    assert!(
        ["heartbeat", "claim", "save_status", "ack", "prune"].contains(&operation.as_str()),
        "{warned:#?}"
    );
    let everything = format!("{}{:?}{errors}", written.text(), capture.events());
    assert!(everything.contains(&target), "{everything}");
    assert!(
        !everything.contains(PASSWORD),
        "the password was logged: {everything}"
    );
    let mut totals = Totals::default();
    totals.take(&snap);
    assert!(
        totals.value(&key(TRACK_STORE_ERRORS, &format!("operation={operation}"))) >= 1.0,
        "{totals:?}"
    );
    assert!(
        totals.value(&key(TRACK_STORE_ERRORS, "operation=job")) >= 1.0,
        "{totals:?}"
    );
}
