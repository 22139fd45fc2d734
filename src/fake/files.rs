//! Output files served by the fake server: deterministic bytes, `Range`,
//! `ETag`, redirects and faults (cut, stall, expired, a status).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE,
    LAST_MODIFIED, LOCATION, RANGE,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use super::body::BodyCut;
use super::{FakeServer, FakeServerBuilder};

/// The period of the bytes of a fake file (a prime, so the content does not
/// repeat on a power-of-two boundary).
const PERIOD: usize = 1_048_573;
/// The most bytes in one frame of a file body.
const CHUNK: usize = 64 * 1024;
/// `Last-Modified` of every fake file.
const LAST_MODIFIED_VALUE: &str = "Sun, 01 Nov 2026 12:00:00 GMT";

/// `PERIOD + CHUNK` pseudo-random bytes: any chunk of a file is one slice.
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut v = vec![0u8; PERIOD + CHUNK];
        rng.fill(&mut v[..PERIOD]);
        v.copy_within(..CHUNK, PERIOD);
        Bytes::from(v)
    })
}

fn start_of(seed: u64, offset: u64) -> usize {
    ((offset + seed.wrapping_mul(7919)) % PERIOD as u64) as usize
}

/// A file the fake server serves at a path, made of deterministic bytes:
/// [`FakeFile::fill`] gives the same bytes, so a test can check what it
/// downloaded without keeping a copy.
///
/// By default it announces `Accept-Ranges: bytes`, a strong `ETag` and a
/// `Last-Modified`, answers `Range: bytes=N-` (and `N-M`) with `206` unless
/// an `If-Range` does not match, and has no faults.
///
/// ```
/// use goenhance_jobs::fake::{FakeFile, FileFault, FileFaults};
///
/// let file = FakeFile::new(8 << 20)
///     .content_type("video/mp4")
///     .faults(FileFaults::script([Some(FileFault::Cut { after: 1 << 20 }), None]));
/// let mut head = [0u8; 4];
/// file.fill(0, &mut head);
/// # let _ = head;
/// ```
#[derive(Clone, Debug)]
pub struct FakeFile {
    len: u64,
    seed: u64,
    content_type: Option<String>,
    ranges: bool,
    etag: bool,
    faults: FileFaults,
}

impl FakeFile {
    /// A file of `len` bytes, `application/octet-stream`.
    pub fn new(len: u64) -> FakeFile {
        FakeFile {
            len,
            seed: 0,
            content_type: Some("application/octet-stream".to_owned()),
            ranges: true,
            etag: true,
            faults: FileFaults::none(),
        }
    }

    /// Another content of the same length (and another `ETag`): what a
    /// file that changed on the server looks like.
    pub fn seed(mut self, seed: u64) -> FakeFile {
        self.seed = seed;
        self
    }

    /// The `Content-Type` sent.
    pub fn content_type(mut self, content_type: impl Into<String>) -> FakeFile {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sends no `Content-Type`.
    pub fn no_content_type(mut self) -> FakeFile {
        self.content_type = None;
        self
    }

    /// A server that cannot resume: no `Accept-Ranges`, and `Range` is
    /// ignored (a full `200` every time).
    pub fn no_ranges(mut self) -> FakeFile {
        self.ranges = false;
        self
    }

    /// Sends no `ETag` (only `Last-Modified`).
    pub fn no_etag(mut self) -> FakeFile {
        self.etag = false;
        self
    }

    /// The faults of the file's requests.
    pub fn faults(mut self, faults: FileFaults) -> FakeFile {
        self.faults = faults;
        self
    }

    /// The file's size.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's bytes from `offset`, as many as `buf` holds (bytes past
    /// the end are filled as if the file went on).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let pattern = pattern();
        let mut done = 0;
        while done < buf.len() {
            let start = start_of(self.seed, offset + done as u64);
            let n = (buf.len() - done).min(PERIOD - start);
            buf[done..done + n].copy_from_slice(&pattern[start..start + n]);
            done += n;
        }
    }

    fn etag_value(&self) -> String {
        format!("\"{:x}-{:x}\"", self.len, self.seed)
    }
}

/// What goes wrong with one request for a [`FakeFile`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileFault {
    /// Sends this many bytes of the body, then drops the connection.
    Cut {
        /// Bytes of this response sent before the cut.
        after: u64,
    },
    /// Sends this many bytes of the body, then nothing more, ever.
    Stall {
        /// Bytes of this response sent before the stall.
        after: u64,
    },
    /// `403 Forbidden` with a storage-style "request has expired" body:
    /// what a signed URL past its time gets.
    Expired,
    /// This HTTP status with an empty body.
    Status(u16),
}

/// Which requests of a [`FakeFile`] get a [`FileFault`].
#[derive(Clone, Debug, Default)]
pub struct FileFaults {
    plan: Plan,
}

#[derive(Clone, Debug, Default)]
enum Plan {
    #[default]
    None,
    Script(VecDeque<Option<FileFault>>),
    RandomCuts {
        p: f64,
        rng: fastrand::Rng,
    },
    Always(FileFault),
}

impl FileFaults {
    /// No faults.
    pub fn none() -> FileFaults {
        FileFaults::default()
    }

    /// One entry a request, in order; requests after the script have no
    /// fault.
    pub fn script(faults: impl IntoIterator<Item = Option<FileFault>>) -> FileFaults {
        FileFaults {
            plan: Plan::Script(faults.into_iter().collect()),
        }
    }

    /// Every request gets `fault`.
    pub fn always(fault: FileFault) -> FileFaults {
        FileFaults {
            plan: Plan::Always(fault),
        }
    }

    /// Each response (of more than one byte) is cut with probability `p`,
    /// after a uniformly drawn share of its bytes; reproducible by `seed`.
    pub fn random_cuts(p: f64, seed: u64) -> FileFaults {
        FileFaults {
            plan: Plan::RandomCuts {
                p: p.clamp(0.0, 1.0),
                rng: fastrand::Rng::with_seed(seed),
            },
        }
    }

    /// The fault of the next response, which would send `len` bytes.
    fn next(&mut self, len: u64) -> Option<FileFault> {
        match &mut self.plan {
            Plan::None => None,
            Plan::Script(script) => script.pop_front().flatten(),
            Plan::Always(fault) => Some(fault.clone()),
            Plan::RandomCuts { p, rng } => {
                let cut = rng.f64() < *p;
                let after = rng.u64(..len.max(1));
                (cut && len > 1).then_some(FileFault::Cut { after })
            }
        }
    }
}

/// What the server saw for one path.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FileStats {
    /// Requests for the path.
    pub requests: u64,
    /// Requests that carried a `Range` header.
    pub range_requests: u64,
    /// Body bytes sent (frames handed to the connection).
    pub bytes_served: u64,
    /// The headers of each request, in order.
    pub headers: Vec<HeaderMap>,
}

enum Route {
    File(FakeFile),
    Redirect(String),
}

/// The files and redirects of a server, by path.
#[derive(Default)]
pub(super) struct Files {
    routes: Mutex<HashMap<String, (Route, FileStats)>>,
    served: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl fmt::Debug for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Files")
            .field("paths", &self.routes().len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Files {
    fn routes(&self) -> MutexGuard<'_, HashMap<String, (Route, FileStats)>> {
        lock(&self.routes)
    }

    fn insert(&self, path: String, route: Route) {
        self.routes().insert(path, (route, FileStats::default()));
    }

    /// Whether `path` is one of the files or redirects.
    pub(super) fn serves(&self, path: &str) -> bool {
        self.routes().contains_key(path)
    }

    fn served_counter(&self, path: &str) -> Arc<AtomicU64> {
        Arc::clone(lock(&self.served).entry(path.to_owned()).or_default())
    }

    fn stats(&self, path: &str) -> FileStats {
        let mut stats = self
            .routes()
            .get(path)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        stats.bytes_served = self.served_counter(path).load(Ordering::SeqCst);
        stats
    }

    /// Answers a request for one of the paths.
    pub(super) fn handle<B>(&self, req: Request<B>) -> Response<FileBody> {
        let path = req.uri().path().to_owned();
        let counter = self.served_counter(&path);
        let mut routes = self.routes();
        let Some((route, stats)) = routes.get_mut(&path) else {
            return status_only(StatusCode::NOT_FOUND);
        };
        stats.requests += 1;
        if req.headers().contains_key(RANGE) {
            stats.range_requests += 1;
        }
        stats.headers.push(req.headers().clone());
        let file = match route {
            Route::Redirect(location) => {
                let mut res = status_only(StatusCode::FOUND);
                if let Ok(v) = HeaderValue::from_str(location) {
                    res.headers_mut().insert(LOCATION, v);
                }
                return res;
            }
            Route::File(file) => file,
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return status_only(StatusCode::METHOD_NOT_ALLOWED);
        }
        let len = file.len;
        let range = file
            .ranges
            .then(|| requested_range(req.headers(), file))
            .flatten();
        let (status, first, end) = match range {
            Some((first, _)) if first >= len => {
                let mut res = status_only(StatusCode::RANGE_NOT_SATISFIABLE);
                res.headers_mut().insert(
                    CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
                );
                return res;
            }
            Some((first, last)) => (
                StatusCode::PARTIAL_CONTENT,
                first,
                last.map_or(len, |l| (l + 1).min(len)),
            ),
            None => (StatusCode::OK, 0, len),
        };
        let fault = file.faults.next(end - first);
        let (mut cut, mut stall) = (None, None);
        match fault {
            Some(FileFault::Expired) => {
                let mut res = Response::new(FileBody::text(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                     <Message>Request has expired</Message></Error>\n",
                ));
                *res.status_mut() = StatusCode::FORBIDDEN;
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
                return res;
            }
            Some(FileFault::Status(code)) => {
                return status_only(
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                )
            }
            Some(FileFault::Cut { after }) => cut = Some(first + after),
            Some(FileFault::Stall { after }) => stall = Some(first + after),
            None => {}
        }
        let body = if req.method() == Method::HEAD {
            FileBody::text("")
        } else {
            FileBody {
                seed: file.seed,
                pos: first,
                end,
                cut,
                stall,
                counter: Some(counter),
                text: None,
                sleep: None,
            }
        };
        let mut res = Response::new(body);
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(CONTENT_LENGTH, HeaderValue::from(end - first));
        if let Some(ct) = file
            .content_type
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            h.insert(CONTENT_TYPE, ct);
        }
        if file.ranges {
            h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        if file.etag {
            h.insert(
                ETAG,
                HeaderValue::from_str(&file.etag_value()).expect("ascii"),
            );
        }
        h.insert(LAST_MODIFIED, HeaderValue::from_static(LAST_MODIFIED_VALUE));
        if status == StatusCode::PARTIAL_CONTENT {
            h.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {first}-{}/{len}", end - 1)).expect("ascii"),
            );
        }
        res
    }
}

/// The range asked for, `(first, last inclusive)`, unless an `If-Range`
/// does not match the file.
fn requested_range(headers: &HeaderMap, file: &FakeFile) -> Option<(u64, Option<u64>)> {
    let spec = headers.get(RANGE)?.to_str().ok()?.trim();
    if let Some(if_range) = headers.get(IF_RANGE) {
        let v = if_range.to_str().ok()?;
        let matches = if v.starts_with('"') {
            file.etag && v == file.etag_value()
        } else {
            v == LAST_MODIFIED_VALUE
        };
        if !matches {
            return None;
        }
    }
    let spec = spec.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last = match last.trim() {
        "" => None,
        l => Some(l.parse::<u64>().ok()?),
    };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    Some((first, last))
}

fn status_only(status: StatusCode) -> Response<FileBody> {
    let mut res = Response::new(FileBody::text(""));
    *res.status_mut() = status;
    res
}

/// The body of a file answer: generated slice by slice, with an optional
/// cut or stall.
pub(super) struct FileBody {
    seed: u64,
    pos: u64,
    end: u64,
    cut: Option<u64>,
    stall: Option<u64>,
    counter: Option<Arc<AtomicU64>>,
    text: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl FileBody {
    fn text(text: &'static str) -> FileBody {
        FileBody {
            seed: 0,
            pos: 0,
            end: 0,
            cut: None,
            stall: None,
            counter: None,
            text: Some(Bytes::from_static(text.as_bytes())).filter(|t| !t.is_empty()),
            sleep: None,
        }
    }
}

impl fmt::Debug for FileBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBody")
            .field("pos", &self.pos)
            .field("end", &self.end)
            .field("cut", &self.cut)
            .field("stall", &self.stall)
            .finish()
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyCut>>> {
        let this = &mut *self;
        if let Some(text) = this.text.take() {
            return Poll::Ready(Some(Ok(Frame::data(text))));
        }
        if this.stall == Some(this.pos) {
            // Stalled: nothing more, ever (until the server shuts down).
            return Poll::Pending;
        }
        if this.cut == Some(this.pos) {
            // Give the connection a moment to flush what was sent.
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(20))));
            ready!(sleep.as_mut().poll(cx));
            this.cut = None;
            this.end = this.pos;
            return Poll::Ready(Some(Err(BodyCut)));
        }
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let mut stop = this.end;
        for at in [this.cut, this.stall].into_iter().flatten() {
            if at > this.pos {
                stop = stop.min(at);
            }
        }
        let start = start_of(this.seed, this.pos);
        let n = (stop - this.pos).min(CHUNK as u64) as usize;
        let chunk = pattern().slice(start..start + n);
        this.pos += n as u64;
        if let Some(counter) = &this.counter {
            counter.fetch_add(n as u64, Ordering::SeqCst);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.text.is_none() && self.pos >= self.end && self.cut.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.text, self.cut.or(self.stall)) {
            (Some(t), _) => SizeHint::with_exact(t.len() as u64),
            (None, None) => SizeHint::with_exact(self.end - self.pos),
            (None, Some(_)) => SizeHint::default(),
        }
    }
}

impl FakeServerBuilder {
    /// Serves `file` at `path` (e.g. `/outputs/x_0.mp4`), whatever the
    /// path prefix, without asking for a key (as a storage host does).
    pub fn file(self, path: impl Into<String>, file: FakeFile) -> Self {
        self.files.insert(path.into(), Route::File(file));
        self
    }

    /// Answers `path` with `302 Found` to `location`.
    pub fn redirect(self, path: impl Into<String>, location: impl Into<String>) -> Self {
        self.files
            .insert(path.into(), Route::Redirect(location.into()));
        self
    }
}

impl FakeServer {
    /// Serves `file` at `path`, replacing what was there (its counters
    /// start again).
    pub fn add_file(&self, path: impl Into<String>, file: FakeFile) {
        let path = path.into();
        lock(&self.files.served).remove(&path);
        self.files.insert(path, Route::File(file));
    }

    /// Answers `path` with `302 Found` to `location`.
    pub fn add_redirect(&self, path: impl Into<String>, location: impl Into<String>) {
        self.files
            .insert(path.into(), Route::Redirect(location.into()));
    }

    /// The full URL of a path served by this server:
    /// `http://127.0.0.1:<port><path>`.
    pub fn file_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the server saw and sent for `path` so far.
    pub fn file_stats(&self, path: &str) -> FileStats {
        self.files.stats(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_the_served_content_at_any_offset() {
        let f = FakeFile::new(3 * PERIOD as u64);
        let mut whole = vec![0u8; 3 * PERIOD];
        f.fill(0, &mut whole);
        let mut part = vec![0u8; 100_000];
        f.fill(PERIOD as u64 - 50_000, &mut part);
        assert_eq!(part[..], whole[PERIOD - 50_000..PERIOD + 50_000]);
        assert_eq!(whole[..10], whole[PERIOD..PERIOD + 10]);
        let mut other = vec![0u8; 1000];
        f.clone().seed(1).fill(0, &mut other);
        assert_ne!(other[..], whole[..1000]);
    }

    #[test]
    fn served_chunks_are_the_filled_bytes() {
        let f = FakeFile::new(3 * PERIOD as u64).seed(3);
        let mut body = FileBody {
            seed: 3,
            pos: PERIOD as u64 - 1000,
            end: PERIOD as u64 + 200_000,
            cut: None,
            stall: None,
            counter: None,
            text: None,
            sleep: None,
        };
        let mut served = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(Ok(frame))) =
            http_body::Body::poll_frame(Pin::new(&mut body), &mut cx)
        {
            served.extend_from_slice(&frame.into_data().unwrap());
        }
        let mut want = vec![0u8; 201_000];
        f.fill(PERIOD as u64 - 1000, &mut want);
        assert_eq!(served, want);
    }

    #[test]
    fn ranges_and_if_range() {
        let f = FakeFile::new(1000);
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_static("bytes=10-"));
        assert_eq!(requested_range(&h, &f), Some((10, None)));
        h.insert(RANGE, HeaderValue::from_static("bytes=10-19"));
        assert_eq!(requested_range(&h, &f), Some((10, Some(19))));
        h.insert(IF_RANGE, HeaderValue::from_static("\"3e8-0\""));
        assert_eq!(requested_range(&h, &f), Some((10, Some(19))));
        h.insert(IF_RANGE, HeaderValue::from_static("\"3e8-1\""));
        assert_eq!(requested_range(&h, &f), None);
        h.insert(IF_RANGE, HeaderValue::from_static(LAST_MODIFIED_VALUE));
        assert_eq!(requested_range(&h, &f), Some((10, Some(19))));
    }
}
