//! Decoding cost: each fixture body into `JobDetail` (the crate's decoder,
//! `JobDetail::from_json`), into a `#[derive(Deserialize)]` struct of the
//! API's fields (what users write by hand: strings for the times, no
//! checks) and into `serde_json::Value` (a generic JSON parse), in
//! nanoseconds per body.
//!
//! ```text
//! cargo bench --bench decode -- [--iters N] [--rounds N]
//! ```
//!
//! Each (fixture, decoder) pair runs `iters` decodes per round; rounds
//! alternate the three decoders and the figure is the median round. Bodies
//! that the decoder refuses (`api-error`, `data-null`) are timed too: an
//! error is an answer the client must produce just as fast.

use std::hint::black_box;
use std::time::Instant;

use goenhance_jobs::JobDetail;

/// The response bodies of `fixtures/` (API reference examples and bodies
/// built from its schema), verbatim.
const FIXTURES: &[(&str, &[u8])] = &[
    ("api-error", br#"{"code":40001,"msg":"invalid token","data":null}"#),
    ("completed", br#"{"code":0,"msg":"Success","data":{"img_uuid":"94c4e27a-d020-4494-9731-7831f2578d61","status":"completed","type":"mx-v2v","start_time":"2024-07-12T12:49:12.541Z","end_time":"2024-07-12T12:54:40.002Z","model_id":"7","json":[{"type":"video","value":"https://openapi-static.goenhance.ai/user/2024/07/12/94c4e27a_0.mp4"}],"job_type":"mx-v2v"}}"#),
    ("data-null", br#"{"code":0,"msg":"Success","data":null}"#),
    ("failed", br#"{"code":0,"msg":"Success","data":{"img_uuid":"0b9d4a1e-3f52-4c7e-9a61-2d8e5f7c1b30","status":"failed","type":"mx-text2img","start_time":"2024-10-11T11:00:00.000Z","end_time":"2024-10-11T11:00:09.500Z","model_id":"5","json":null,"job_type":"mx-text2img"}}"#),
    ("pending", br#"{"code":0,"msg":"Success","data":{"img_uuid":"5334c57d-8443-4b79-ba24-8539c2163c74","status":"pending","type":"mx-v2v","start_time":"2024-07-12T12:49:12.541Z","model_id":"7","json":null,"job_type":"mx-v2v"}}"#),
    ("processing-extra-fields", br#"{"code":0,"msg":"Success","request_id":"req-7f3a","data":{"img_uuid":"c1f0e2d3-4b5a-6978-8a9b-0c1d2e3f4a5b","status":"processing","type":"mx-v2v","start_time":"2024-07-12T12:49:12.541Z","model_id":"2000","json":null,"job_type":"mx-v2v","img_url":"","duration":196.629,"link_expired_at":null}}"#),
    ("success", br#"{"code":0,"msg":"Success","data":{"img_uuid":"37c82d82-8765-4031-8cb3-722df8a668e6","status":"success","type":"mx-image-face-swap","start_time":"2024-10-11T10:55:32.596Z","end_time":"2024-10-11T10:56:00.338Z","model_id":"-1","json":[{"type":"image","value":"https://openapi-static.goenhance.ai/user/2024/10/11/9dfdb4b5-7ef7-4fe7-93ff-b9eb76cc431d_0.jpg?q-sign-algorithm=sha1&q-sign-time=1728644159;1728687359&q-key-time=1728644159;1728687359&q-header-list=host&q-url-param-list=&q-signature=cd1e9c6ef14d36c1e034d6bd3a3fe1aaee41b15f"}],"job_type":"mx-image-face-swap"}}"#),
    ("unknown-status", br#"{"code":0,"msg":"Success","data":{"img_uuid":"e2d1c0b9-a8f7-4e6d-9c5b-4a3f2e1d0c9b","status":"WAITING","type":"mx-v2v","start_time":"2024-07-12T12:49:12.541Z","model_id":"7","json":null,"job_type":"mx-v2v"}}"#),
];

#[path = "common/typed.rs"]
mod typed;
use typed::Envelope;

fn args() -> (u32, usize) {
    let (mut iters, mut rounds) = (100_000u32, 7usize);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--iters" => iters = it.next().and_then(|v| v.parse().ok()).expect("--iters N"),
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            _ => {}
        }
    }
    (iters, rounds)
}

fn time_per_body(iters: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let (iters, rounds) = args();
    println!("decode bench: {rounds} rounds x {iters} decodes per fixture and decoder; ns per body, median round");
    println!(
        "{:<26} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "fixture", "bytes", "JobDetail", "derived", "Value", "÷ derived", "÷ Value"
    );
    let (mut sum_d, mut sum_s, mut sum_v) = (0.0, 0.0, 0.0);
    for &(name, body) in FIXTURES {
        // Outcome check, so that a decoder that fails early cannot look fast.
        let ok = JobDetail::from_json(body).is_ok();
        assert_eq!(ok, !matches!(name, "api-error" | "data-null"), "{name}");
        serde_json::from_slice::<serde_json::Value>(body).expect(name);
        serde_json::from_slice::<Envelope>(body).expect(name);

        let (mut d, mut st, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            d.push(time_per_body(iters, || {
                let _ = black_box(JobDetail::from_json(black_box(body)));
            }));
            st.push(time_per_body(iters, || {
                let _ = black_box(serde_json::from_slice::<Envelope>(black_box(body)));
            }));
            v.push(time_per_body(iters, || {
                let _ = black_box(serde_json::from_slice::<serde_json::Value>(black_box(body)));
            }));
        }
        let (d, st, v) = (median(d), median(st), median(v));
        sum_d += d;
        sum_s += st;
        sum_v += v;
        println!(
            "{:<26} {:>6} {:>10.0}ns {:>10.0}ns {:>10.0}ns {:>10.2} {:>10.2}",
            name,
            body.len(),
            d,
            st,
            v,
            d / st,
            d / v
        );
    }
    println!(
        "{:<26} {:>6} {:>10.0}ns {:>10.0}ns {:>10.0}ns {:>10.2} {:>10.2}",
        "all (sum)",
        "",
        sum_d,
        sum_s,
        sum_v,
        sum_d / sum_s,
        sum_d / sum_v
    );
}
