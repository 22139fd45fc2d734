//! The response path: a status, a few headers and a body, as a transport
//! might deliver them, through `AuthLayer` and `JobStatusService`.
//!
//! Input layout (bytes read in order; missing bytes read as 0, so any input
//! is valid and `[0, 0, 0, 0] ++ body` is a 200 with that body):
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | status: `< 0x80` → 200; `0xff` → next two bytes, big-endian; else a table of interesting codes |
//! | 1 | flags: 1 `Content-Length` exact, 2 `Content-Length` from a string, 4 `Retry-After`, 8 `Date`, 16 body fails after its chunks, 32 `Content-Type: text/html` |
//! | … | for flags 2, 4, 8 in that order: a length byte and that many bytes |
//! | next | body chunks: low 2 bits = number of cuts, each cut one byte (position) |
//! | next | body cap: 0 → default 1 MiB, else n × 8 bytes |
//! | rest | the body |
//!
//! Checks: never panics; an `Ok` is for a 2xx and for the id asked; a
//! non-2xx is an HTTP error with that status; a body over the cap is
//! refused; a numeric `Retry-After` is reported exactly.
#![no_main]

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use arbitrary::Unstructured;
use bytes::Bytes;
use goenhance_jobs::{AuthLayer, JobQuery, JobStatusService};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, DATE, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt};

const ID: &str = "37c82d82-8765-4031-8cb3-722df8a668e6";
const STATUSES: [u16; 22] = [
    200, 201, 202, 204, 206, 299, 100, 199, 301, 302, 304, 307, 400, 401, 403, 404, 408, 429, 500,
    502, 503, 504,
];

/// A body delivered in chunks, optionally failing at the end (a reset).
struct Chunks {
    chunks: Vec<Bytes>,
    fail: bool,
}

#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset")
    }
}

impl std::error::Error for Reset {}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Reset;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Reset>>> {
        if !self.chunks.is_empty() {
            let chunk = self.chunks.remove(0);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.fail {
            self.fail = false;
            return Poll::Ready(Some(Err(Reset)));
        }
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

struct Case {
    response: Response<Chunks>,
    status: StatusCode,
    body_len: usize,
    fails: bool,
    max_body: usize,
    retry_after_secs: Option<u64>,
}

fn header(u: &mut Unstructured<'_>) -> Option<HeaderValue> {
    let len = u.arbitrary::<u8>().unwrap_or(0) as usize;
    let bytes = u.bytes(len.min(u.len())).unwrap_or(&[]);
    HeaderValue::from_bytes(bytes).ok()
}

fn case(data: &[u8]) -> Case {
    let mut u = Unstructured::new(data);
    let sel = u.arbitrary::<u8>().unwrap_or(0);
    let status = match sel {
        0..=0x7f => 200,
        0xff => u16::from_be_bytes([u.arbitrary().unwrap_or(0), u.arbitrary().unwrap_or(0)]),
        n => STATUSES[n as usize % STATUSES.len()],
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let flags = u.arbitrary::<u8>().unwrap_or(0);
    let content_length = if flags & 2 != 0 { header(&mut u) } else { None };
    let retry_after = if flags & 4 != 0 { header(&mut u) } else { None };
    let date = if flags & 8 != 0 { header(&mut u) } else { None };
    let cuts_byte = u.arbitrary::<u8>().unwrap_or(0);
    let mut cuts: Vec<u8> = (0..cuts_byte & 3)
        .map(|_| u.arbitrary::<u8>().unwrap_or(0))
        .collect();
    let cap = u.arbitrary::<u8>().unwrap_or(0);
    let max_body = if cap == 0 {
        1024 * 1024
    } else {
        cap as usize * 8
    };
    let body = u.take_rest();

    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut at = 0;
    for cut in cuts {
        let cut = (cut as usize).min(body.len());
        if cut > at {
            chunks.push(Bytes::copy_from_slice(&body[at..cut]));
            at = cut;
        }
    }
    chunks.push(Bytes::copy_from_slice(&body[at..]));

    let mut response = Response::new(Chunks {
        chunks,
        fail: flags & 16 != 0,
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if flags & 1 != 0 {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    if let Some(v) = content_length {
        headers.insert(CONTENT_LENGTH, v);
    }
    let retry_after_secs = retry_after
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(v) = retry_after {
        headers.insert(RETRY_AFTER, v);
    }
    if let Some(v) = date {
        headers.insert(DATE, v);
    }
    if flags & 32 != 0 {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    }
    Case {
        response,
        status,
        body_len: body.len(),
        fails: flags & 16 != 0,
        max_body,
        retry_after_secs,
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Case {
        response,
        status,
        body_len,
        fails,
        max_body,
        retry_after_secs,
    } = case(data);
    let mut response = Some(response);
    let transport = tower::service_fn(move |req: Request<Full<Bytes>>| {
        assert!(req.headers().get("authorization").unwrap().is_sensitive());
        let res = response.take().expect("one request");
        async move { Ok::<_, Infallible>(res) }
    });
    let svc = JobStatusService::new(
        "https://api.goenhance.ai",
        AuthLayer::bearer("sk-fuzz-secret").layer(transport),
    )
    .unwrap()
    .max_body_size(max_body);
    let query = JobQuery::new(ID).unwrap();
    let result = runtime().block_on(svc.oneshot(query));

    match &result {
        Ok(detail) => {
            assert!(status.is_success(), "{status}");
            assert!(!fails, "a body that failed was accepted");
            assert!(body_len <= max_body, "{body_len} > {max_body}");
            assert_eq!(detail.img_uuid(), ID);
        }
        Err(e) => {
            if !status.is_success() {
                assert_eq!(e.status(), Some(status), "{e:?}");
                if let Some(secs) = retry_after_secs {
                    assert_eq!(e.retry_after(), Some(Duration::from_secs(secs)), "{e:?}");
                }
            }
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("sk-fuzz-secret"), "{shown}");
        }
    }
    if status.is_success() && body_len > max_body {
        assert!(result.is_err());
    }
});
