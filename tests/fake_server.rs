//! Wire tests of the fake GoEnhance server, through a plain hyper client.
#![cfg(feature = "fake")]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use goenhance_jobs::fake::{FakeServer, Fault, FaultPlan, Garbage, RetryAfter, Timeline};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::time::Instant;

type TestClient = Client<HttpConnector, Empty<Bytes>>;

const KEY: &str = "fake-key";
const VIDEO: &str = "https://cdn.example/user/x_0.mp4";

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn detail_uri(server: &FakeServer, id: &str) -> String {
    format!("{}/api/v1/jobs/detail?img_uuid={id}", server.base_url())
}

async fn send(
    client: &TestClient,
    uri: &str,
    key: Option<&str>,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let mut req = Request::get(uri);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    client.request(req.body(Empty::new()).unwrap()).await
}

/// Status and JSON body of a request that must get a whole answer.
async fn fetch(client: &TestClient, uri: &str, key: Option<&str>) -> (StatusCode, Value) {
    let res = send(client, uri, key).await.expect("request failed");
    let status = res.status();
    let body = res.into_body().collect().await.expect("body failed");
    let json = serde_json::from_slice(&body.to_bytes()).expect("body is not json");
    (status, json)
}

async fn poll(client: &TestClient, server: &FakeServer, id: &str) -> (StatusCode, Value) {
    fetch(client, &detail_uri(server, id), Some(KEY)).await
}

/// The `data.status` of a good answer.
async fn status_of(client: &TestClient, server: &FakeServer, id: &str) -> String {
    let (code, body) = poll(client, server, id).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["code"], 0, "{body}");
    body["data"]["status"].as_str().unwrap().to_owned()
}

/// 2024-07-12T12:49:12.541Z
fn fixed_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_720_788_552_541)
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at).await;
}

// The public types are Send, Sync and Debug: checked by the compiler.
const _: fn() = || {
    fn check<T: Send + Sync + std::fmt::Debug>() {}
    check::<FakeServer>();
    check::<goenhance_jobs::fake::FakeServerBuilder>();
    check::<Timeline>();
    check::<Fault>();
    check::<FaultPlan>();
};

#[tokio::test]
async fn timed_steps_give_the_exact_body_of_each_status() {
    let step = Duration::from_millis(300);
    let server = FakeServer::builder()
        .job(
            "job-1",
            Timeline::new("mx-v2v")
                .start_time(fixed_start())
                .model_id("2000")
                .extra("duration", json!(196.629))
                .pending(step)
                .processing(step)
                .succeed("video", VIDEO),
        )
        .start()
        .await
        .unwrap();
    let t0 = Instant::now();
    let client = client();

    let (code, pending) = poll(&client, &server, "job-1").await;
    assert_eq!(code, StatusCode::OK);
    assert!(t0.elapsed() < step, "first answer too slow for the test");
    assert_eq!(pending["code"], 0);
    assert_eq!(pending["msg"], "Success");
    assert!(pending["request_id"].as_str().unwrap().starts_with("req-"));
    assert_eq!(
        pending["data"],
        json!({
            "img_uuid": "job-1",
            "status": "pending",
            "type": "mx-v2v",
            "job_type": "mx-v2v",
            "start_time": "2024-07-12T12:49:12.541Z",
            "model_id": "2000",
            "json": null,
            "duration": 196.629,
        })
    );

    sleep_until(t0 + step + step / 2).await;
    let (_, processing) = poll(&client, &server, "job-1").await;
    let mut expected = pending["data"].clone();
    expected["status"] = json!("processing");
    assert_eq!(processing["data"], expected);

    sleep_until(t0 + step * 2 + step / 2).await;
    let (_, done) = poll(&client, &server, "job-1").await;
    expected["status"] = json!("success");
    expected["end_time"] = json!("2024-07-12T12:49:13.141Z");
    expected["json"] = json!([{"type": "video", "value": VIDEO}]);
    assert_eq!(done["data"], expected);

    assert_eq!(server.status_at("job-1", t0).as_deref(), Some("pending"));
    assert_eq!(
        server.status_at("job-1", t0 + step).as_deref(),
        Some("processing")
    );
    assert_eq!(
        server.status_at("job-1", t0 + step * 2).as_deref(),
        Some("success")
    );
    assert_eq!(server.final_status("job-1").as_deref(), Some("success"));
    assert_eq!(server.hits("job-1"), 3);
    assert_eq!(server.polls_after_terminal("job-1"), 0);
}

#[tokio::test]
async fn raw_statuses_are_sent_exactly_and_runtime_jobs_are_served() {
    let server = FakeServer::builder().start().await.unwrap();
    let client = client();
    let (code, body) = poll(&client, &server, "later").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        json!({"code": 40004, "msg": "job not found", "request_id": body["request_id"], "data": null})
    );
    assert_eq!(server.hits("later"), 0);

    server.add_job(
        "later",
        Timeline::new("mx-text2img")
            .status_for_answers("WAITING", 1)
            .status_for_answers("queued", 1)
            .status_for_answers("mystery", 1)
            .complete(
                "completed",
                [
                    ("image", "https://cdn.example/a.jpg"),
                    ("image", "https://cdn.example/b.jpg"),
                ],
            ),
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(status_of(&client, &server, "later").await);
    }
    assert_eq!(seen, ["WAITING", "queued", "mystery", "completed"]);
    let (_, done) = poll(&client, &server, "later").await;
    assert_eq!(
        done["data"]["json"],
        json!([
            {"type": "image", "value": "https://cdn.example/a.jpg"},
            {"type": "image", "value": "https://cdn.example/b.jpg"},
        ])
    );
    assert_eq!(done["data"]["type"], "mx-text2img");
    assert_eq!(server.final_status("later").as_deref(), Some("completed"));
    assert_eq!(server.final_status("nope"), None);
    assert_eq!(server.status_at("nope", Instant::now()), None);

    server.add_job(
        "err",
        Timeline::new("x").pending_for_answers(1).finish("error"),
    );
    assert_eq!(status_of(&client, &server, "err").await, "pending");
    let (_, failed) = poll(&client, &server, "err").await;
    assert_eq!(failed["data"]["status"], "error");
    assert_eq!(failed["data"]["json"], Value::Null);
    assert!(failed["data"]["end_time"].is_string());
}

#[tokio::test]
async fn answer_counted_steps_advance_only_on_good_answers() {
    let server = FakeServer::builder()
        .job(
            "job",
            Timeline::new("mx-v2v")
                .pending_for_answers(2)
                .processing_for_answers(1)
                .fail(),
        )
        .job_faults(
            "job",
            FaultPlan::script([
                None,
                Some(Fault::status(500)),
                None,
                Some(Fault::late(Duration::from_millis(10))),
                None,
                Some(Fault::Garbage(Garbage::Html)),
            ]),
        )
        .start()
        .await
        .unwrap();
    let client = client();
    let uri = detail_uri(&server, "job");

    assert_eq!(status_of(&client, &server, "job").await, "pending");
    let (code, _) = fetch(&client, &uri, Some(KEY)).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(status_of(&client, &server, "job").await, "pending");
    // A late answer shows the right status but does not count.
    assert_eq!(status_of(&client, &server, "job").await, "processing");
    assert_eq!(status_of(&client, &server, "job").await, "processing");
    assert_eq!(
        server.status_at("job", Instant::now()).as_deref(),
        Some("failed")
    );
    let res = send(&client, &uri, Some(KEY)).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/html");
    res.into_body().collect().await.unwrap();
    let (_, failed) = poll(&client, &server, "job").await;
    assert_eq!(failed["data"]["status"], "failed");
    assert_eq!(failed["data"]["json"], Value::Null);
    assert!(failed["data"]["end_time"].is_string());
    assert_eq!(server.polls_after_terminal("job"), 0);
    assert_eq!(status_of(&client, &server, "job").await, "failed");
    assert_eq!(server.hits("job"), 8);
    assert_eq!(server.polls_after_terminal("job"), 1);
}

#[tokio::test]
async fn auth_is_checked_before_anything_else() {
    let server = FakeServer::builder()
        .api_key("sekrit")
        .job("job", Timeline::new("x").pending(Duration::from_secs(60)))
        .start()
        .await
        .unwrap();
    let client = client();
    let unauthorized = json!({"code": 401, "msg": "unauthorized", "data": null});
    let uri = detail_uri(&server, "job");
    let other = format!("{}/nope", server.base_url());
    for (uri, key) in [
        (&uri, None),
        (&uri, Some("fake-key")),
        (&uri, Some("sekrit2")),
        (&other, None),
    ] {
        assert_eq!(
            fetch(&client, uri, key).await,
            (StatusCode::UNAUTHORIZED, unauthorized.clone()),
            "{uri} with {key:?}"
        );
    }
    assert_eq!(server.hits("job"), 0);
    let (code, body) = fetch(&client, &uri, Some("sekrit")).await;
    assert_eq!(
        (code, &body["data"]["status"]),
        (StatusCode::OK, &json!("pending"))
    );
    assert_eq!(server.hits("job"), 1);
    assert_eq!(server.total_requests(), 5);

    let debug = format!("{server:?}");
    assert!(!debug.contains("sekrit"), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
}

#[tokio::test]
async fn routing_errors_have_their_status_and_envelope() {
    let server = FakeServer::builder().start().await.unwrap();
    let client = client();
    let base = server.base_url();

    for query in ["", "?img_uuid=", "?other=1", "?img_uuid"] {
        let (code, body) = fetch(
            &client,
            &format!("{base}/api/v1/jobs/detail{query}"),
            Some(KEY),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["code"], 400);
        assert_eq!(body["data"], Value::Null);
    }
    for path in [
        "/",
        "/api/v1/jobs",
        "/api/v1/jobs/detail/x",
        "/api/v2/jobs/detail",
    ] {
        let (code, body) = fetch(&client, &format!("{base}{path}?img_uuid=a"), Some(KEY)).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["code"], 404);
    }
    let (code, body) = poll(&client, &server, "unknown-id").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["code"], 40004);
    assert_eq!(body["msg"], "job not found");
    assert_eq!(body["data"], Value::Null);

    let post = Request::post(detail_uri(&server, "a"))
        .header("authorization", "Bearer fake-key")
        .body(Empty::new())
        .unwrap();
    let res = client.request(post).await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn path_prefix_serves_under_the_prefix_only() {
    let server = FakeServer::builder()
        .path_prefix("/goenhance/")
        .job("job", Timeline::new("x").succeed("image", "u"))
        .start()
        .await
        .unwrap();
    assert_eq!(
        server.base_url(),
        format!("http://127.0.0.1:{}/goenhance", server.addr().port())
    );
    let client = client();
    assert_eq!(status_of(&client, &server, "job").await, "success");
    let plain = format!("http://{}/api/v1/jobs/detail?img_uuid=job", server.addr());
    let (code, _) = fetch(&client, &plain, Some(KEY)).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(server.hits("job"), 1);
}

#[tokio::test]
async fn status_faults_carry_their_status_body_and_retry_after() {
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let server = FakeServer::builder()
        .job("job", Timeline::new("x").pending(Duration::from_secs(60)))
        .faults(FaultPlan::script([
            Some(Fault::status(500)),
            Some(Fault::status_empty(502)),
            Some(Fault::too_many_requests(2)),
            Some(Fault::retry_after(503, RetryAfter::Date(date))),
            Some(Fault::retry_after(
                429,
                RetryAfter::DateIn(Duration::from_secs(30)),
            )),
            Some(Fault::api_error(40001, "invalid token")),
        ]))
        .start()
        .await
        .unwrap();
    let client = client();
    let uri = detail_uri(&server, "job");
    let mut answers = Vec::new();
    for _ in 0..7 {
        let res = send(&client, &uri, Some(KEY)).await.unwrap();
        let status = res.status();
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        answers.push((status.as_u16(), retry_after, body));
    }
    let json = |b: &Bytes| serde_json::from_slice::<Value>(b).unwrap();

    assert_eq!((answers[0].0, &answers[0].1), (500, &None));
    assert_eq!(
        json(&answers[0].2),
        json!({"code": 500, "msg": "internal server error", "data": null})
    );
    assert_eq!((answers[1].0, &answers[1].1), (502, &None));
    assert!(answers[1].2.is_empty());
    assert_eq!((answers[2].0, answers[2].1.as_deref()), (429, Some("2")));
    assert_eq!(json(&answers[2].2)["code"], 429);
    assert_eq!(
        (answers[3].0, answers[3].1.as_deref()),
        (503, Some("Tue, 14 Nov 2023 22:13:20 GMT"))
    );
    assert_eq!(json(&answers[3].2)["code"], 503);
    assert_eq!(answers[4].0, 429);
    let at = httpdate::parse_http_date(answers[4].1.as_deref().unwrap()).unwrap();
    let ahead = at.duration_since(SystemTime::now()).unwrap();
    assert!(ahead > Duration::from_secs(25) && ahead <= Duration::from_secs(30));
    assert_eq!(answers[5].0, 200);
    assert_eq!(
        json(&answers[5].2),
        json!({"code": 40001, "msg": "invalid token", "data": null})
    );
    assert_eq!(answers[6].0, 200);
    assert_eq!(json(&answers[6].2)["data"]["status"], "pending");
    assert_eq!(server.hits("job"), 7);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn reset_drops_the_connection_without_an_answer() {
    let server = FakeServer::builder()
        .job("job", Timeline::new("x").succeed("video", VIDEO))
        .job_faults("job", FaultPlan::script([Some(Fault::Reset)]))
        .start()
        .await
        .unwrap();
    let client = client();
    let err = send(&client, &detail_uri(&server, "job"), Some(KEY))
        .await
        .expect_err("a reset must fail the request");
    assert!(!err.is_connect(), "{err:?}");
    assert_eq!(server.hits("job"), 1);
    // The reset answer was not terminal: the next poll is not counted.
    assert_eq!(status_of(&client, &server, "job").await, "success");
    assert_eq!(server.polls_after_terminal("job"), 0);
    assert_eq!(server.hits("job"), 2);
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn truncated_body_fails_while_reading() {
    let server = FakeServer::builder()
        .job("job", Timeline::new("x").succeed("video", VIDEO))
        .job_faults("job", FaultPlan::script([Some(Fault::Truncated)]))
        .start()
        .await
        .unwrap();
    let client = client();
    let uri = detail_uri(&server, "job");
    let res = send(&client, &uri, Some(KEY)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let declared: usize = res.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut body = res.into_body();
    let mut got = 0;
    let err = loop {
        match body.frame().await {
            Some(Ok(frame)) => got += frame.into_data().map_or(0, |d| d.len()),
            Some(Err(e)) => break e,
            None => panic!("truncated body ended cleanly after {got} bytes"),
        }
    };
    assert!(format!("{err:?}").contains("IncompleteBody"), "{err:?}");
    // The declared length is the full answer's, about half of it came.
    let full = send(&client, &uri, Some(KEY)).await.unwrap();
    let full = full.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(declared, full.len());
    assert_eq!(got, full.len() / 2);
    assert_eq!(server.hits("job"), 2);
    assert_eq!(server.polls_after_terminal("job"), 0);
}

#[tokio::test]
async fn garbage_bodies_are_not_json() {
    let server = FakeServer::builder()
        .job("job", Timeline::new("x").pending(Duration::from_secs(60)))
        .faults(FaultPlan::script([
            Some(Fault::Garbage(Garbage::TruncatedJson)),
            Some(Fault::Garbage(Garbage::Html)),
        ]))
        .start()
        .await
        .unwrap();
    let client = client();
    let uri = detail_uri(&server, "job");
    for (ctype, start) in [
        ("application/json", "{\"code\":0,\"da"),
        ("text/html", "<html>"),
    ] {
        let res = send(&client, &uri, Some(KEY)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], ctype);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(start.as_bytes()), "{body:?}");
        assert!(serde_json::from_slice::<Value>(&body).is_err());
    }
    assert_eq!(status_of(&client, &server, "job").await, "pending");
}

#[tokio::test]
async fn dribble_sends_the_right_body_in_many_chunks() {
    let delay = Duration::from_millis(10);
    let server = FakeServer::builder()
        .job("job", Timeline::new("mx-v2v").succeed("video", VIDEO))
        .job_faults("job", FaultPlan::script([Some(Fault::dribble(32, delay))]))
        .start()
        .await
        .unwrap();
    let client = client();
    let started = Instant::now();
    let res = send(&client, &detail_uri(&server, "job"), Some(KEY))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            chunks.push(data);
        }
    }
    let all: Vec<u8> = chunks.concat();
    let json: Value = serde_json::from_slice(&all).unwrap();
    assert_eq!(json["data"]["status"], "success");
    assert_eq!(json["data"]["json"][0]["value"], VIDEO);
    let expected_chunks = all.len().div_ceil(32);
    assert!(
        chunks.len() >= expected_chunks / 2,
        "{} chunks",
        chunks.len()
    );
    assert!(chunks.len() > 2);
    assert!(chunks.iter().all(|c| c.len() <= 32 * 4));
    assert!(started.elapsed() >= delay * (expected_chunks as u32 - 1));
    // A dribbled terminal answer is a faulted one.
    assert_eq!(status_of(&client, &server, "job").await, "success");
    assert_eq!(server.polls_after_terminal("job"), 0);
}

#[tokio::test]
async fn late_answer_comes_after_the_delay() {
    let delay = Duration::from_millis(250);
    let server = FakeServer::builder()
        .job("job", Timeline::new("x").pending(Duration::from_secs(60)))
        .faults(FaultPlan::script([Some(Fault::late(delay))]))
        .start()
        .await
        .unwrap();
    let client = client();
    let started = Instant::now();
    let (code, body) = poll(&client, &server, "job").await;
    assert!(started.elapsed() >= delay);
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["data"]["status"], "pending");
    let started = Instant::now();
    assert_eq!(status_of(&client, &server, "job").await, "pending");
    assert!(started.elapsed() < delay);
}

#[tokio::test]
async fn no_answer_holds_until_the_client_times_out() {
    let server = FakeServer::builder()
        .job("job", Timeline::new("x").pending(Duration::from_secs(60)))
        .job_faults(
            "job",
            FaultPlan::script([Some(Fault::NoAnswer), None, Some(Fault::NoAnswer)]),
        )
        .start()
        .await
        .unwrap();
    let client = client();
    let held = tokio::time::timeout(
        Duration::from_millis(200),
        send(&client, &detail_uri(&server, "job"), Some(KEY)),
    )
    .await;
    assert!(held.is_err(), "the held request was answered");
    assert_eq!(server.hits("job"), 1);
    // The client gave up and closed the connection: the server lets go.
    let released = Instant::now() + Duration::from_secs(2);
    while server.in_flight() > 0 {
        assert!(
            Instant::now() < released,
            "held request outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A fresh request is answered on a new connection.
    assert_eq!(status_of(&client, &server, "job").await, "pending");
    assert_eq!(server.connections(), 2);
    // Shutting down releases a held request: its client sees an error.
    let uri = detail_uri(&server, "job");
    let held = tokio::spawn(async move { send(&client, &uri, Some(KEY)).await.map(|_| ()) });
    while server.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.hits("job"), 3);
    tokio::time::timeout(Duration::from_secs(2), server.shutdown())
        .await
        .expect("shutdown hung on a held request");
    let outcome = tokio::time::timeout(Duration::from_secs(2), held)
        .await
        .expect("held request outlived the server")
        .unwrap();
    assert!(outcome.is_err());
}

#[tokio::test]
async fn seeded_random_plan_repeats_its_fault_sequence() {
    async fn run(seed: u64) -> Vec<u16> {
        let kinds = [
            Fault::status(500),
            Fault::status(503),
            Fault::too_many_requests(1),
        ];
        let server = FakeServer::builder()
            .job("job", Timeline::new("x").pending(Duration::from_secs(60)))
            .faults(FaultPlan::random(0.5, seed, kinds))
            .start()
            .await
            .unwrap();
        let client = client();
        let uri = detail_uri(&server, "job");
        let mut seen = Vec::new();
        for _ in 0..24 {
            let res = send(&client, &uri, Some(KEY)).await.unwrap();
            seen.push(res.status().as_u16());
            res.into_body().collect().await.unwrap();
        }
        assert_eq!(server.hits("job"), 24);
        seen
    }
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert_ne!(a, run(43).await);
    assert!(a.contains(&200), "{a:?}");
    assert!(a.iter().any(|&s| s != 200), "{a:?}");
    assert!(a.iter().all(|s| [200, 429, 500, 503].contains(s)), "{a:?}");
}

#[tokio::test]
async fn job_plan_replaces_the_global_plan() {
    let server = FakeServer::builder()
        .job("calm", Timeline::new("x").pending(Duration::from_secs(60)))
        .job("other", Timeline::new("x").pending(Duration::from_secs(60)))
        .faults(FaultPlan::random(1.0, 7, [Fault::status(503)]))
        .job_faults("calm", FaultPlan::script([Some(Fault::status(418))]))
        .start()
        .await
        .unwrap();
    let client = client();
    let (code, _) = poll(&client, &server, "calm").await;
    assert_eq!(code, StatusCode::IM_A_TEAPOT);
    assert_eq!(status_of(&client, &server, "calm").await, "pending");
    let (code, _) = poll(&client, &server, "other").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let (code, _) = poll(&client, &server, "unknown").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    server.set_faults(FaultPlan::none());
    assert_eq!(status_of(&client, &server, "other").await, "pending");
    server.set_job_faults("calm", FaultPlan::script([Some(Fault::status(500))]));
    let (code, _) = poll(&client, &server, "calm").await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let server = FakeServer::builder()
        .job(
            "job",
            Timeline::new("x")
                .pending_for_answers(2)
                .succeed("video", VIDEO),
        )
        .start()
        .await
        .unwrap();
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(status_of(&client, &server, "job").await);
    }
    assert_eq!(seen, ["pending", "pending", "success", "success"]);
    assert_eq!(server.connections(), 1);
    assert_eq!(server.total_requests(), 4);
    assert_eq!(server.hits("job"), 4);
    assert_eq!(server.max_in_flight(), 1);
    assert_eq!(server.polls_after_terminal("job"), 1);
}

#[tokio::test]
async fn concurrent_requests_are_counted_in_flight() {
    let late = Some(Fault::late(Duration::from_millis(200)));
    let server = FakeServer::builder()
        .job("job", Timeline::new("x").pending(Duration::from_secs(60)))
        .job_faults("job", FaultPlan::script([late.clone(), late.clone(), late]))
        .start()
        .await
        .unwrap();
    let client = client();
    let (a, b, c) = tokio::join!(
        status_of(&client, &server, "job"),
        status_of(&client, &server, "job"),
        status_of(&client, &server, "job"),
    );
    assert_eq!([a, b, c], ["pending", "pending", "pending"]);
    assert_eq!(server.max_in_flight(), 3);
    assert_eq!(server.connections(), 3);
    assert_eq!(server.hits("job"), 3);
}

#[tokio::test]
async fn a_late_terminal_answer_does_not_count_for_polls_after_terminal() {
    let server = FakeServer::builder()
        .job("job", Timeline::new("x").succeed("image", "u"))
        .job_faults(
            "job",
            FaultPlan::script([Some(Fault::late(Duration::from_millis(1)))]),
        )
        .start()
        .await
        .unwrap();
    let client = client();
    for expected_after in [0, 0, 1, 2] {
        assert_eq!(status_of(&client, &server, "job").await, "success");
        assert_eq!(server.polls_after_terminal("job"), expected_after);
    }
    assert_eq!(server.hits("job"), 4);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let server = FakeServer::builder()
        .job("job", Timeline::new("x").pending(Duration::from_secs(60)))
        .start()
        .await
        .unwrap();
    let client: TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let res = send(&client, &detail_uri(&server, "job"), Some(KEY))
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let server = FakeServer::builder().start().await.unwrap();
    let addr = server.addr();
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let server = FakeServer::builder().start().await.unwrap();
    let addr = server.addr();
    let client = client();
    poll(&client, &server, "x").await;
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let uri = format!("http://{addr}/api/v1/jobs/detail?img_uuid=x");
    assert!(send(&client, &uri, Some(KEY)).await.is_err());
}
