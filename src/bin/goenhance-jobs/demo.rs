//! `goenhance-jobs demo`: the tool against a fake GoEnhance server on
//! loopback, with a few jobs of different kinds, one that fails, and some
//! transient faults to show the retries; the outputs are downloaded (through
//! cut connections, resumed) into a temporary folder. No account, no network.

use std::time::{Duration, Instant};

use goenhance_jobs::fake::{
    FakeFile, FakeServer, Fault, FaultPlan, FileFault, FileFaults, Timeline,
};
use goenhance_jobs::{Client, JobQuery, PollPolicy};

use crate::args::DemoArgs;
use crate::download::Saver;
use crate::live::Live;
use crate::out::{complain, note};
use crate::report::code;
use crate::waits::{live_display, run_waits};

/// The fake server's key; the demo never reads `GOENHANCE_*`.
const DEMO_KEY: &str = "demo-key";
/// The share of requests that get a transient fault.
const FAULT_RATE: f64 = 0.12;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The demo's output files: path, size, content type, faults.
fn files() -> Vec<(&'static str, FakeFile)> {
    const MIB: u64 = 1 << 20;
    vec![
        (
            "/goenhance-demo/5334c57d_0.mp4",
            FakeFile::new(24 * MIB)
                .content_type("video/mp4")
                .faults(FileFaults::random_cuts(0.3, 11)),
        ),
        (
            "/goenhance-demo/37c82d82_0.jpg",
            FakeFile::new(600_000).content_type("image/jpeg"),
        ),
        (
            "/goenhance-demo/9f1e6a20_0.png",
            FakeFile::new(900_000).content_type("image/png"),
        ),
        (
            "/goenhance-demo/9f1e6a20_1.png",
            FakeFile::new(900_000).content_type("image/png").seed(1),
        ),
        (
            "/goenhance-demo/7d3b9e41_0.mp4",
            // A storage host that cannot resume: the cut download starts over.
            FakeFile::new(16 * MIB)
                .content_type("video/mp4")
                .no_ranges()
                .faults(FileFaults::script([Some(FileFault::Cut {
                    after: 5 * MIB,
                })])),
        ),
    ]
}

fn jobs(server: &FakeServer) -> Vec<(&'static str, Timeline)> {
    let cdn = |name: &str| server.file_url(&format!("/goenhance-demo/{name}"));
    vec![
        (
            "5334c57d-8443-4b79-ba24-8539c2163c74",
            Timeline::new("mx-v2v")
                .pending(ms(1_000))
                .processing(ms(4_000))
                .succeed("video", cdn("5334c57d_0.mp4")),
        ),
        (
            "37c82d82-2f1b-4f5e-9d0a-6b1e0c9a4d21",
            Timeline::new("mx-image-face-swap")
                .pending(ms(500))
                .processing(ms(2_000))
                .succeed("image", cdn("37c82d82_0.jpg")),
        ),
        (
            "9f1e6a20-5c3d-4b7e-8a19-2d4f6b8c0e13",
            Timeline::new("mx-text2img")
                .processing(ms(1_500))
                .succeed("image", cdn("9f1e6a20_0.png"))
                .output("image", cdn("9f1e6a20_1.png")),
        ),
        (
            "c0ffee00-1d2e-4f3a-b4c5-d6e7f8a9b0c1",
            Timeline::new("mx-text2img")
                .pending(ms(1_000))
                .processing(ms(2_000))
                .fail(),
        ),
        (
            "7d3b9e41-0a8c-4e6f-9b2d-5c1a3e7f9d04",
            Timeline::new("mx-v2v")
                .pending(ms(2_000))
                .processing(ms(4_000))
                .succeed("video", cdn("7d3b9e41_0.mp4")),
        ),
    ]
}

pub(crate) async fn run(args: DemoArgs) -> u8 {
    let faults = FaultPlan::random(
        FAULT_RATE,
        7,
        [Fault::status(503), Fault::status(502), Fault::Reset],
    );
    let builder = files()
        .into_iter()
        .fold(
            FakeServer::builder().api_key(DEMO_KEY),
            |b, (path, file)| b.file(path, file),
        )
        .faults(faults);
    let server = match builder.start().await {
        Ok(server) => server,
        Err(e) => {
            complain(format_args!("cannot start the fake server: {e}"));
            return code::ERROR;
        }
    };
    let jobs = jobs(&server);
    for (id, timeline) in &jobs {
        server.add_job(*id, timeline.clone());
    }
    let dir = std::env::temp_dir().join(format!("goenhance-jobs-demo-{}", std::process::id()));
    note(format_args!(
        "demo: a fake GoEnhance server on {} with {} jobs; one of them fails, \
         and about 1 request in 8 gets a 503, a 502 or a reset to show the retries; \
         the outputs are downloaded into {} through cut connections",
        server.base_url(),
        jobs.len(),
        dir.display()
    ));

    let format = args.out.output;
    let builder = Client::builder()
        .base_url(server.base_url())
        .api_key(DEMO_KEY)
        .poll_policy(PollPolicy::exponential(ms(250), ms(1_000)))
        .wait_timeout(Duration::from_secs(30));
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => {
            complain(format_args!("cannot set up the client: {e}"));
            return code::ERROR;
        }
    };

    let ids: Vec<&str> = jobs.iter().map(|(id, _)| *id).collect();
    let queries = ids
        .iter()
        .map(|id| JobQuery::new(id).expect("the demo's ids are valid"))
        .collect();
    let live = live_display(format).then(|| Live::new(&ids));
    let saver = match Saver::new(client.clone(), &dir, live.as_ref().map(Live::multi)) {
        Ok(saver) => saver,
        Err(code) => return code,
    };
    let started = Instant::now();
    let tally = run_waits(&client, queries, format, live, Some(saver)).await;
    if tally.code == code::INTERRUPTED {
        return tally.code;
    }
    note(format_args!(
        "demo: {} succeeded, {} failed, {} errors in {:.1}s; the server answered {} requests",
        tally.succeeded,
        tally.failed,
        tally.errors,
        started.elapsed().as_secs_f64(),
        server.total_requests()
    ));
    show_folder(&dir);
    server.shutdown().await;
    // The failed job is part of the script; only an error is a failed demo.
    if tally.errors > 0 || tally.download_failures > 0 {
        code::ERROR
    } else {
        code::OK
    }
}

/// Lists the downloaded files on stderr.
fn show_folder(dir: &std::path::Path) {
    let mut files: Vec<(String, u64)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect(),
        Err(e) => {
            complain(format_args!("cannot list {}: {e}", dir.display()));
            return;
        }
    };
    files.sort();
    note(format_args!(
        "demo: {} files in {}:",
        files.len(),
        dir.display()
    ));
    for (name, len) in files {
        note(format_args!("  {name:24} {len:>10} bytes"));
    }
}
