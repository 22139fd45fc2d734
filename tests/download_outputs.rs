//! `Client::download_outputs` against the fake server on loopback: the
//! CLI's file names, fresh links for expired ones, and partial files that
//! resume across calls and clients.
#![cfg(feature = "fake")]

use std::path::Path;
use std::time::Duration;

use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::download::{discard_partial_outputs, output_file_name};
use goenhance_jobs::fake::{FakeFile, FakeServer, FileFault, FileFaults, Timeline};
use goenhance_jobs::{Client, JobDetail, JobOutput, OutputKind, RetryPolicy};

const KEY: &str = "sk-download-outputs-90b3";
const SIZE: u64 = 1_000_000;

fn client(server: &FakeServer, attempts: u32) -> Client {
    Client::builder()
        .base_url(server.base_url())
        .api_key(KEY)
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(attempts)
                .initial_backoff(Duration::from_millis(1))
                .jitter(Jitter::None),
        )
        .build()
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn bytes_of(file: &FakeFile) -> Vec<u8> {
    let mut v = vec![0u8; file.len() as usize];
    file.fill(0, &mut v);
    v
}

/// A stored detail of `id`: a success whose outputs are `urls`, its links
/// expiring at `expires` (RFC 3339), as a store would give it back.
fn stored(id: &str, urls: &[String], expires: Option<&str>) -> JobDetail {
    let outputs: Vec<String> = urls
        .iter()
        .map(|u| format!(r#"{{"type":"video","value":"{u}"}}"#))
        .collect();
    let expires = expires
        .map(|at| format!(r#""link_expired_at":"{at}","#))
        .unwrap_or_default();
    let body = format!(
        r#"{{"code":0,"msg":"Success","data":{{"img_uuid":"{id}","status":"success",{expires}"json":[{}]}}}}"#,
        outputs.join(",")
    );
    JobDetail::from_json(body.as_bytes()).unwrap()
}

#[tokio::test]
async fn a_cut_download_then_an_expired_link_resumes_with_fresh_links() {
    let video = FakeFile::new(SIZE)
        .content_type("video/mp4")
        .faults(FileFaults::script([Some(FileFault::Cut {
            after: 600_000,
        })]));
    let want = bytes_of(&video);
    let server = FakeServer::builder()
        .api_key(KEY)
        .file("/out/clip", video)
        .start()
        .await
        .unwrap();
    server.add_job(
        "job-42",
        Timeline::new("video-to-video").succeed("video", server.file_url("/out/clip?sig=fresh")),
    );
    let dir = tempfile::tempdir().unwrap();

    // First delivery: the link is good, the connection is cut, and this
    // client does not retry. The partial file stays, named by job and
    // output.
    let first = stored("job-42", &[server.file_url("/out/clip?sig=first")], None);
    let err = client(&server, 1)
        .download_outputs(&first, dir.path())
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert_eq!(names(dir.path()), [".job-42_0.part", ".job-42_0.part.meta"]);
    let held = std::fs::metadata(dir.path().join(".job-42_0.part"))
        .unwrap()
        .len();
    assert!(held > 0 && held <= 600_000, "{held} bytes kept");

    // Redelivered later, by a new client (a restart): the stored link has
    // expired, so the job is fetched once for a fresh one, and only the
    // missing bytes are asked for.
    let later = stored(
        "job-42",
        &[server.file_url("/out/clip?sig=first")],
        Some("2020-01-01T00:00:00Z"),
    );
    let saved = client(&server, 1)
        .download_outputs(&later, dir.path())
        .await
        .unwrap();
    assert_eq!(server.hits("job-42"), 1);
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].path(), dir.path().join("job-42_0.mp4"));
    assert_eq!(saved[0].bytes(), SIZE);
    assert_eq!(saved[0].content_type(), Some("video/mp4"));
    assert!(std::fs::read(saved[0].path()).unwrap() == want);
    assert_eq!(names(dir.path()), ["job-42_0.mp4"]);

    let stats = server.file_stats("/out/clip");
    assert_eq!(stats.requests, 2);
    let range = stats.headers[1]["range"].to_str().unwrap();
    assert_eq!(range, format!("bytes={held}-"));
    assert_eq!(stats.headers[1]["if-range"], "\"f4240-0\"");
    assert!(
        stats.bytes_served * 10 <= SIZE * 11,
        "{} bytes served for a {SIZE}-byte file",
        stats.bytes_served
    );

    // A third delivery finds the file in place: nothing is sent.
    let again = client(&server, 1)
        .download_outputs(&later, dir.path())
        .await
        .unwrap();
    assert_eq!(again[0].path(), saved[0].path());
    assert_eq!(again[0].bytes(), SIZE);
    assert_eq!(server.file_stats("/out/clip").requests, 2);
    assert_eq!(server.hits("job-42"), 1);
    assert_eq!(
        discard_partial_outputs(dir.path(), "job-42").await.unwrap(),
        0
    );
    assert_eq!(names(dir.path()), ["job-42_0.mp4"]);
}

#[tokio::test]
async fn a_403_from_storage_fetches_fresh_links_once_for_every_output() {
    let image = FakeFile::new(2000).content_type("image/png");
    let video = FakeFile::new(3000).content_type("video/mp4");
    let server = FakeServer::builder()
        .api_key(KEY)
        .file(
            "/old/0",
            FakeFile::new(2000).faults(FileFaults::always(FileFault::Expired)),
        )
        .file(
            "/old/1.mp4",
            FakeFile::new(3000).faults(FileFaults::always(FileFault::Expired)),
        )
        .file("/new/0", image.clone())
        .file("/new/1.mp4", video.clone())
        .start()
        .await
        .unwrap();
    server.add_job(
        "job-7",
        Timeline::new("mx-text2img").complete(
            "success",
            [
                ("image", server.file_url("/new/0")),
                ("video", server.file_url("/new/1.mp4")),
            ],
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let stale = stored(
        "job-7",
        &[server.file_url("/old/0"), server.file_url("/old/1.mp4")],
        None,
    );
    let saved = client(&server, 3)
        .download_outputs(&stale, dir.path())
        .await
        .unwrap();
    assert_eq!(server.hits("job-7"), 1);
    assert_eq!(server.file_stats("/old/0").requests, 1);
    // Output 1 went straight to its fresh link.
    assert_eq!(server.file_stats("/old/1.mp4").requests, 0);
    assert_eq!(saved[0].path(), dir.path().join("job-7_0.png"));
    assert_eq!(saved[1].path(), dir.path().join("job-7_1.mp4"));
    assert!(std::fs::read(saved[0].path()).unwrap() == bytes_of(&image));
    assert!(std::fs::read(saved[1].path()).unwrap() == bytes_of(&video));
    assert_eq!(names(dir.path()), ["job-7_0.png", "job-7_1.mp4"]);
}

#[tokio::test]
async fn a_link_still_expired_after_the_fresh_fetch_is_the_error() {
    let server = FakeServer::builder()
        .api_key(KEY)
        .file(
            "/gone.mp4",
            FakeFile::new(100).faults(FileFaults::always(FileFault::Expired)),
        )
        .start()
        .await
        .unwrap();
    server.add_job(
        "job-9",
        Timeline::new("video-to-video").succeed("video", server.file_url("/gone.mp4")),
    );
    let dir = tempfile::tempdir().unwrap();
    let stale = stored("job-9", &[server.file_url("/gone.mp4")], None);
    let err = client(&server, 3)
        .download_outputs(&stale, dir.path())
        .await
        .unwrap_err();
    assert!(err.is_expired(), "{err:?}");
    assert_eq!(server.hits("job-9"), 1);
    assert_eq!(server.file_stats("/gone.mp4").requests, 2);
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_partial_file_of_a_file_that_changed_starts_over() {
    let first = FakeFile::new(SIZE).faults(FileFaults::script([Some(FileFault::Cut {
        after: 300_000,
    })]));
    let changed = FakeFile::new(SIZE).seed(9).content_type("video/mp4");
    let server = FakeServer::builder()
        .api_key(KEY)
        .file("/v.mp4", first)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = stored("job-3", &[server.file_url("/v.mp4")], None);
    client(&server, 1)
        .download_outputs(&job, dir.path())
        .await
        .unwrap_err();
    // The file changes (a new ETag) before the next delivery.
    server.add_file("/v.mp4", changed.clone());
    let saved = client(&server, 1)
        .download_outputs(&job, dir.path())
        .await
        .unwrap();
    assert!(std::fs::read(saved[0].path()).unwrap() == bytes_of(&changed));
    let stats = server.file_stats("/v.mp4");
    assert!(stats.headers[0].get("range").is_some());
    assert_eq!(stats.bytes_served, SIZE);
    assert_eq!(names(dir.path()), ["job-3_0.mp4"]);
}

#[tokio::test]
async fn partial_files_stay_until_discarded_and_ids_cannot_leave_the_folder() {
    let server = FakeServer::builder()
        .api_key(KEY)
        .file(
            "/a.mp4",
            FakeFile::new(SIZE).faults(FileFaults::script([
                Some(FileFault::Cut { after: 1000 }),
                Some(FileFault::Status(500)),
            ])),
        )
        .file("/b.mp4", FakeFile::new(10))
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = stored(
        "job-5",
        &[server.file_url("/b.mp4"), server.file_url("/a.mp4")],
        None,
    );
    let err = client(&server, 2)
        .download_outputs(&job, dir.path())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::INTERNAL_SERVER_ERROR));
    // Output 0 is in place; output 1 is kept to resume.
    assert_eq!(
        names(dir.path()),
        [".job-5_1.part", ".job-5_1.part.meta", "job-5_0.mp4"]
    );
    // Another job's partial file is not touched.
    std::fs::write(dir.path().join(".job-55_0.part"), b"x").unwrap();
    assert_eq!(
        discard_partial_outputs(dir.path(), "job-5").await.unwrap(),
        1
    );
    assert_eq!(names(dir.path()), [".job-55_0.part", "job-5_0.mp4"]);

    let evil = stored("../escape", &[server.file_url("/b.mp4")], None);
    let err = client(&server, 1)
        .download_outputs(&evil, dir.path())
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    assert_eq!(server.file_stats("/b.mp4").requests, 1);
    assert!(discard_partial_outputs(dir.path(), "../x")
        .await
        .unwrap_err()
        .is_invalid_input());
}

#[test]
fn the_library_names_files_as_the_cli_does() {
    let out = JobOutput::new(
        OutputKind::Video,
        "https://cdn.example/x/result.MP4?sig=a.b",
    );
    assert_eq!(
        output_file_name("5334c57d", 0, out.url(), None),
        "5334c57d_0.mp4"
    );
    assert_eq!(
        output_file_name(
            "5334c57d",
            2,
            "https://cdn.example/x/result",
            Some("image/webp")
        ),
        "5334c57d_2.webp"
    );
}
