//! The worker process of a campaign: one tracker on the store it is given,
//! whose handler logs each delivery to the worker's own file.
//!
//! Each handler appends `start <worker> <pid> <job> <deliveries>
//! <start_ms>` when it starts, then, after taking the time the job's meta
//! asks for, `end <worker> <pid> <job> <deliveries> <start_ms> <end_ms>
//! <outcome>`, and syncs the file before it returns `Ok`. The outcome is
//! `succeeded`, `failed`, `error:deadline` or `error:<kind>`. A handler
//! dropped before it is done (cancelled) writes `cancel <worker> <pid>
//! <job> <deliveries> <start_ms> <at_ms>`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::fake::DEFAULT_API_KEY;
use goenhance_jobs::track::{Completion, TrackStore, Tracker};
use goenhance_jobs::{Client, JobStatus, PollPolicy};

use super::{now_ms, WorkerEnv};

/// The handler log of this process.
pub fn log_path(env: &WorkerEnv) -> PathBuf {
    env.dir
        .join(format!("handlers-{}-{}.log", env.name, std::process::id()))
}

/// What a delivery's outcome is called in the handler log.
pub fn outcome(done: &Completion) -> String {
    match done.detail() {
        Ok(d) => match d.status() {
            JobStatus::Succeeded => "succeeded".to_owned(),
            JobStatus::Failed => "failed".to_owned(),
            other => format!("status:{other}"),
        },
        Err(e) if e.is_deadline() => "error:deadline".to_owned(),
        Err(e) => format!("error:{:?}", e.kind()).replace(' ', "_"),
    }
}

/// Writes `cancel … <at_ms>` when a handler is dropped before it is done
/// (the tracker cancels the handlers of a fenced worker): its work stopped
/// then.
struct Cancelled(Option<(Arc<Mutex<std::fs::File>>, String)>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some((file, head)) = self.0.take() {
            let line = format!("{head} {}\n", now_ms());
            let _ = file.lock().unwrap().write_all(line.as_bytes());
        }
    }
}

/// Logs how late this process's threads are scheduled: a thread that
/// sleeps 10 ms at a time writes `<at_ms> <late_ms>` to
/// `lag-<worker>-<pid>.log` whenever it woke 50 ms or more late (a
/// starved machine, not the tracker's doing).
fn watch_scheduling(env: &WorkerEnv) {
    let path = env
        .dir
        .join(format!("lag-{}-{}.log", env.name, std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    std::thread::spawn(move || loop {
        let asked = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(10));
        let late = asked.elapsed().saturating_sub(Duration::from_millis(10));
        if late >= Duration::from_millis(50) {
            let _ = writeln!(file, "{} {}", now_ms(), late.as_millis());
        }
    });
}

/// Runs the worker until the process is killed; a run that ends (it
/// should not) ends the process with code 3.
pub async fn run(store: impl TrackStore, env: WorkerEnv) -> ! {
    watch_scheduling(&env);
    // The tracker's warnings, with their times, in the worker's stderr file.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("goenhance_jobs=warn")
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let client = Client::builder()
        .base_url(&env.base_url)
        .api_key(DEFAULT_API_KEY)
        .poll_policy(PollPolicy::fixed(Duration::from_millis(env.poll_ms)).jitter(Jitter::None))
        .wait_timeout(Duration::from_millis(env.deadline_ms))
        .build()
        .unwrap();
    let tracker = Tracker::builder(client, store)
        .lease(Duration::from_millis(env.lease_ms))
        .worker_id(env.name.clone())
        // Claims often, so that the store sees steady traffic to fault.
        .claim_interval(Duration::from_millis(250))
        .max_handlers(env.max_handlers)
        .clock_offset(env.offset_ms)
        .build();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(&env))
        .unwrap();
    let file = Arc::new(Mutex::new(file));
    let name = env.name.clone();
    let pid = std::process::id();
    let result = tracker
        .run(move |done: Completion| {
            let file = Arc::clone(&file);
            let name = name.clone();
            async move {
                let start = now_ms();
                let job = done.query().img_uuid().to_owned();
                let n = done.deliveries();
                let line = format!("start {name} {pid} {job} {n} {start}\n");
                file.lock().unwrap().write_all(line.as_bytes())?;
                let mut cancel = Cancelled(Some((
                    Arc::clone(&file),
                    format!("cancel {name} {pid} {job} {n} {start}"),
                )));
                let ms = done.meta()["handler_ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                cancel.0 = None;
                let what = outcome(&done);
                tokio::task::spawn_blocking(move || {
                    let line = format!("end {name} {pid} {job} {n} {start} {} {what}\n", now_ms());
                    let f = file.lock().unwrap();
                    (&*f).write_all(line.as_bytes())?;
                    f.sync_data()
                })
                .await??;
                Ok(())
            }
        })
        .await;
    eprintln!("worker {}: run ended: {result:?}", env.name);
    std::process::exit(3)
}
