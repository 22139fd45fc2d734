//! Job timelines: the statuses a fake job goes through.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::time::Instant;

/// How long a [`Timeline`] step lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepLen {
    /// A span of `tokio::time` from the start of the step.
    Time(Duration),
    /// A number of good (unfaulted) answers served during the step.
    Answers(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    status: String,
    len: StepLen,
}

/// One result of a successful job: `{"type": kind, "value": url}` in `data.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Output {
    kind: String,
    url: Url,
}

/// Where an output is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Url {
    /// As given.
    Absolute(String),
    /// A path of the server that answers: `http://<its address><path>`.
    OnServer(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Terminal {
    status: String,
    /// `None` serialises as `"json": null`.
    outputs: Option<Vec<Output>>,
}

/// The statuses a fake job goes through, from registration to its end.
///
/// A timeline is a list of steps, each a raw status string and how long it
/// lasts, optionally ending in a terminal step that lasts forever. A step
/// lasts either a span of time, measured on [`tokio::time::Instant`] from
/// when the previous step ended (the first step starts when the job is
/// added to the server), or a number of good answers: requests for the job
/// that were answered without a [`Fault`](super::Fault). Answer-counted steps
/// are deterministic whatever the clocks do.
///
/// Without a terminal step the last step never ends (a job that hangs).
/// A success's outputs are URLs ([`Timeline::succeed`]) or paths that the
/// server serves itself ([`Timeline::succeed_with_file`], with
/// [`FakeServerBuilder::file`](super::FakeServerBuilder::file)).
///
/// ```
/// use std::time::Duration;
/// use goenhance_jobs::fake::Timeline;
///
/// // 2 s pending, 3 s processing, then success with one video.
/// let timed = Timeline::new("mx-v2v")
///     .pending(Duration::from_secs(2))
///     .processing(Duration::from_secs(3))
///     .succeed("video", "https://cdn.example/x_0.mp4");
///
/// // Queued for the first answer, processing for the next two, then failed.
/// let counted = Timeline::new("mx-text2img")
///     .status_for_answers("queued", 1)
///     .processing_for_answers(2)
///     .fail();
/// # let _ = (timed, counted);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    job_type: String,
    model_id: String,
    start_time: Option<SystemTime>,
    end_time: Option<SystemTime>,
    extra: Map<String, Value>,
    steps: Vec<Step>,
    terminal: Option<Terminal>,
}

impl Timeline {
    /// A timeline for a job of this kind (`type` and `job_type` in the body,
    /// e.g. `mx-v2v`), with no steps yet, `model_id` `"7"` and a
    /// `start_time` of when the job is added to the server.
    pub fn new(job_type: impl Into<String>) -> Self {
        Self {
            job_type: job_type.into(),
            model_id: "7".to_owned(),
            start_time: None,
            end_time: None,
            extra: Map::new(),
            steps: Vec::new(),
            terminal: None,
        }
    }

    /// Sets `data.model_id` (a string in the real API, e.g. `"-1"`).
    pub fn model_id(mut self, model_id: impl Into<String>) -> Self {
        self.model_id = model_id.into();
        self
    }

    /// Sets a fixed `data.start_time` instead of the wall time at which the
    /// job is added; `end_time` is this plus the time the job took.
    pub fn start_time(mut self, start: SystemTime) -> Self {
        self.start_time = Some(start);
        self
    }

    /// Sets a fixed `data.end_time` for the terminal answers instead of
    /// `start_time` plus the time the job took: with a fixed
    /// [`start_time`](Timeline::start_time) it fakes a server whose times
    /// are frozen at some date, whatever the job really took.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use goenhance_jobs::fake::Timeline;
    ///
    /// // Says 5 min 28 s from 2024-07-12T12:49:12Z, takes 2 s.
    /// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_720_788_552);
    /// let frozen = Timeline::new("mx-text2img")
    ///     .processing(Duration::from_secs(2))
    ///     .succeed("image", "https://cdn.example/x_0.png")
    ///     .start_time(start)
    ///     .end_time(start + Duration::from_secs(328));
    /// # let _ = frozen;
    /// ```
    pub fn end_time(mut self, end: SystemTime) -> Self {
        self.end_time = Some(end);
        self
    }

    /// Adds a raw field to `data`, e.g. `("duration", json!(196.6))`.
    ///
    /// Extra fields are written last, so they may replace a standard field
    /// (for instance `"json"` or `"end_time"`) to fake an odd body.
    pub fn extra(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// Adds a step with status `pending` lasting `len`.
    pub fn pending(self, len: Duration) -> Self {
        self.status("pending", len)
    }

    /// Adds a step with status `processing` lasting `len`.
    pub fn processing(self, len: Duration) -> Self {
        self.status("processing", len)
    }

    /// Adds a step with any raw status string (`queued`, `WAITING`, an
    /// unknown one) lasting `len`.
    pub fn status(mut self, status: impl Into<String>, len: Duration) -> Self {
        self.steps.push(Step {
            status: status.into(),
            len: StepLen::Time(len),
        });
        self
    }

    /// Adds a step with status `pending` for the next `answers` good answers.
    pub fn pending_for_answers(self, answers: u64) -> Self {
        self.status_for_answers("pending", answers)
    }

    /// Adds a step with status `processing` for the next `answers` good
    /// answers.
    pub fn processing_for_answers(self, answers: u64) -> Self {
        self.status_for_answers("processing", answers)
    }

    /// Adds a step with any raw status string for the next `answers` good
    /// answers. Faulted requests do not count.
    pub fn status_for_answers(mut self, status: impl Into<String>, answers: u64) -> Self {
        self.steps.push(Step {
            status: status.into(),
            len: StepLen::Answers(answers),
        });
        self
    }

    /// Ends the timeline with status `success` and one output of this kind
    /// (`"video"`, `"image"`) at `url`. Add more with [`Timeline::output`].
    pub fn succeed(self, kind: impl Into<String>, url: impl Into<String>) -> Self {
        self.complete("success", [(kind, url)])
    }

    /// Ends the timeline with any raw success status (e.g. `completed`, the
    /// spelling of the API prose) and a list of `(kind, url)` outputs.
    pub fn complete<K, U>(
        mut self,
        status: impl Into<String>,
        outputs: impl IntoIterator<Item = (K, U)>,
    ) -> Self
    where
        K: Into<String>,
        U: Into<String>,
    {
        let outputs = outputs
            .into_iter()
            .map(|(kind, url)| Output {
                kind: kind.into(),
                url: Url::Absolute(url.into()),
            })
            .collect();
        self.terminal = Some(Terminal {
            status: status.into(),
            outputs: Some(outputs),
        });
        self
    }

    /// Adds one more output to a successful end set with
    /// [`Timeline::succeed`] or [`Timeline::complete`].
    ///
    /// # Panics
    ///
    /// Panics if the timeline has no terminal step with outputs yet.
    pub fn output(mut self, kind: impl Into<String>, url: impl Into<String>) -> Self {
        let outputs = self
            .terminal
            .as_mut()
            .and_then(|t| t.outputs.as_mut())
            .expect("output needs a successful terminal step first");
        outputs.push(Output {
            kind: kind.into(),
            url: Url::Absolute(url.into()),
        });
        self
    }

    /// Ends the timeline with status `success` and one output of this kind
    /// at `path` on the server that answers (`/outputs/x_0.mp4`): its URL is
    /// `http://<the server's address><path>`, as
    /// [`FakeServer::file_url`](super::FakeServer::file_url) gives it, made
    /// when the job is answered. So a job can be added before the server
    /// starts, with its file served by [`FakeServerBuilder::file`](super::FakeServerBuilder::file).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use goenhance_jobs::fake::{FakeFile, FakeServer, Timeline};
    ///
    /// let server = FakeServer::builder()
    ///     .job("job-1", Timeline::new("mx-v2v").succeed_with_file("video", "/out/job-1_0.mp4"))
    ///     .file("/out/job-1_0.mp4", FakeFile::new(1000).content_type("video/mp4"))
    ///     .start()
    ///     .await?;
    /// let client = goenhance_jobs::Client::builder()
    ///     .base_url(server.base_url())
    ///     .api_key("fake-key")
    ///     .build()?;
    /// let job = client.wait("job-1").await?;
    /// assert_eq!(job.outputs()[0].url(), server.file_url("/out/job-1_0.mp4"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn succeed_with_file(mut self, kind: impl Into<String>, path: impl Into<String>) -> Self {
        let path = path.into();
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        self.terminal = Some(Terminal {
            status: "success".to_owned(),
            outputs: Some(vec![Output {
                kind: kind.into(),
                url: Url::OnServer(path),
            }]),
        });
        self
    }

    /// Ends the timeline with status `failed` and `"json": null`.
    pub fn fail(self) -> Self {
        self.finish("failed")
    }

    /// Ends the timeline with any raw terminal status (`error`, `failed`,
    /// an unknown one) and `"json": null`.
    pub fn finish(mut self, status: impl Into<String>) -> Self {
        self.terminal = Some(Terminal {
            status: status.into(),
            outputs: None,
        });
        self
    }

    /// The terminal status, if the timeline has one.
    pub fn final_status(&self) -> Option<&str> {
        self.terminal.as_ref().map(|t| t.status.as_str())
    }

    /// Status of step `idx`, where `idx == steps.len()` is the end.
    fn status_of(&self, idx: usize) -> &str {
        if let Some(step) = self.steps.get(idx) {
            return &step.status;
        }
        match (&self.terminal, self.steps.last()) {
            (Some(t), _) => &t.status,
            (None, Some(last)) => &last.status,
            (None, None) => "pending",
        }
    }

    /// Whether step `idx` is the terminal step.
    fn is_terminal_idx(&self, idx: usize) -> bool {
        idx >= self.steps.len() && self.terminal.is_some()
    }

    /// Moves `(idx, start)` forward over steps that end by `now` on time
    /// alone (and empty answer-counted steps). Returns each new
    /// `(idx, start)`.
    fn run_time(
        &self,
        idx: &mut usize,
        start: &mut Instant,
        now: Instant,
    ) -> Vec<(usize, Instant)> {
        let mut moved = Vec::new();
        // Without a terminal step the last step lasts forever.
        let last = if self.terminal.is_some() {
            self.steps.len()
        } else {
            self.steps.len().saturating_sub(1)
        };
        while *idx < last {
            match self.steps[*idx].len {
                StepLen::Time(d) => match start.checked_add(d) {
                    Some(end) if end <= now => *start = end,
                    _ => break,
                },
                StepLen::Answers(0) => {}
                StepLen::Answers(_) => break,
            }
            *idx += 1;
            moved.push((*idx, *start));
        }
        moved
    }
}

/// A job registered on the server: its timeline and where it is in it.
#[derive(Debug)]
pub(super) struct JobState {
    timeline: Timeline,
    registered: Instant,
    start_wall: SystemTime,
    /// Current step index (`steps.len()` is the terminal step).
    idx: usize,
    /// When the current step started.
    step_start: Instant,
    /// Good answers served during the current step.
    answers: u64,
    /// Every step change: `(idx, start)`, the first being `(0, registered)`.
    history: Vec<(usize, Instant)>,
    /// `http://<address>` of the server, for outputs on it.
    pub(super) origin: String,
    pub(super) hits: u64,
    pub(super) terminal_served: bool,
    pub(super) polls_after_terminal: u64,
}

/// What one answer shows: the status and the `data` object.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) data: Value,
    pub(super) terminal: bool,
}

impl JobState {
    pub(super) fn new(timeline: Timeline, now: Instant) -> Self {
        let start_wall = timeline.start_time.unwrap_or_else(SystemTime::now);
        Self {
            timeline,
            registered: now,
            start_wall,
            idx: 0,
            step_start: now,
            answers: 0,
            history: vec![(0, now)],
            origin: String::new(),
            hits: 0,
            terminal_served: false,
            polls_after_terminal: 0,
        }
    }

    pub(super) fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    fn advance(&mut self, now: Instant) {
        let moved = self
            .timeline
            .run_time(&mut self.idx, &mut self.step_start, now);
        if !moved.is_empty() {
            self.answers = 0;
            self.history.extend(moved);
        }
    }

    /// The answer as of `now`, without counting it as served.
    pub(super) fn snapshot(&mut self, id: &str, now: Instant) -> Snapshot {
        self.advance(now);
        let terminal = self.timeline.is_terminal_idx(self.idx);
        let tl = &self.timeline;
        let mut data = Map::new();
        data.insert("img_uuid".into(), id.into());
        data.insert("status".into(), tl.status_of(self.idx).into());
        data.insert("type".into(), tl.job_type.as_str().into());
        data.insert("job_type".into(), tl.job_type.as_str().into());
        data.insert("start_time".into(), rfc3339_millis(self.start_wall).into());
        data.insert("model_id".into(), tl.model_id.as_str().into());
        let mut json = Value::Null;
        if terminal {
            let took = self.step_start.saturating_duration_since(self.registered);
            let end = tl
                .end_time
                .unwrap_or_else(|| self.start_wall.checked_add(took).unwrap_or(self.start_wall));
            data.insert("end_time".into(), rfc3339_millis(end).into());
            if let Some(outputs) = tl.terminal.as_ref().and_then(|t| t.outputs.as_ref()) {
                json = outputs
                    .iter()
                    .map(|o| {
                        let url = match &o.url {
                            Url::Absolute(url) => url.clone(),
                            Url::OnServer(path) => format!("{}{path}", self.origin),
                        };
                        serde_json::json!({"type": o.kind, "value": url})
                    })
                    .collect::<Vec<_>>()
                    .into();
            }
        }
        data.insert("json".into(), json);
        for (k, v) in &tl.extra {
            data.insert(k.clone(), v.clone());
        }
        Snapshot {
            data: Value::Object(data),
            terminal,
        }
    }

    /// The answer as of `now`, counted as a good answer: it may end an
    /// answer-counted step.
    pub(super) fn answer(&mut self, id: &str, now: Instant) -> Snapshot {
        let snap = self.snapshot(id, now);
        if let Some(Step {
            len: StepLen::Answers(n),
            ..
        }) = self.timeline.steps.get(self.idx)
        {
            self.answers += 1;
            let last_forever =
                self.timeline.terminal.is_none() && self.idx + 1 == self.timeline.steps.len();
            if self.answers >= *n && !last_forever {
                self.idx += 1;
                self.step_start = now;
                self.answers = 0;
                self.history.push((self.idx, now));
                // Following steps of zero length end at once.
                self.advance(now);
            }
        }
        if snap.terminal {
            self.terminal_served = true;
        }
        snap
    }

    /// The raw status the timeline shows at `at`, given the answers served
    /// so far. Instants before the job was added give the first status.
    pub(super) fn status_at(&self, at: Instant) -> String {
        let pos = self.history.partition_point(|&(_, start)| start <= at);
        let (mut idx, mut start) = self.history[pos.saturating_sub(1)];
        self.timeline.run_time(&mut idx, &mut start, at);
        self.timeline.status_of(idx).to_owned()
    }
}

/// `2024-07-12T12:49:12.541Z`.
fn rfc3339_millis(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_millis() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_720_788_552_541);
        assert_eq!(rfc3339_millis(t), "2024-07-12T12:49:12.541Z");
    }

    #[tokio::test(start_paused = true)]
    async fn time_steps_follow_the_paused_clock() {
        let t0 = Instant::now();
        let tl = Timeline::new("mx-v2v")
            .pending(Duration::from_secs(2))
            .processing(Duration::from_secs(3))
            .fail();
        let mut job = JobState::new(tl, t0);
        assert_eq!(job.status_at(t0), "pending");
        assert_eq!(job.status_at(t0 + Duration::from_secs(2)), "processing");
        assert_eq!(job.status_at(t0 + Duration::from_secs(5)), "failed");
        tokio::time::advance(Duration::from_secs(4)).await;
        let snap = job.snapshot("a", Instant::now());
        assert_eq!(snap.data["status"], "processing");
        tokio::time::advance(Duration::from_secs(1)).await;
        let snap = job.snapshot("a", Instant::now());
        assert_eq!(snap.data["status"], "failed");
        assert!(snap.terminal);
        // History is kept: earlier instants still give earlier statuses.
        assert_eq!(job.status_at(t0 + Duration::from_secs(1)), "pending");
    }

    #[tokio::test(start_paused = true)]
    async fn answer_steps_mix_with_time_steps() {
        let t0 = Instant::now();
        let tl = Timeline::new("x")
            .pending_for_answers(2)
            .processing(Duration::from_secs(1))
            .succeed("image", "u");
        let mut job = JobState::new(tl, t0);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(job.answer("a", Instant::now()).data["status"], "pending");
        assert_eq!(job.snapshot("a", Instant::now()).data["status"], "pending");
        assert_eq!(job.answer("a", Instant::now()).data["status"], "pending");
        let t1 = Instant::now();
        assert_eq!(job.answer("a", t1).data["status"], "processing");
        tokio::time::advance(Duration::from_secs(1)).await;
        let done = job.answer("a", Instant::now());
        assert_eq!(done.data["status"], "success");
        assert_eq!(done.data["json"][0]["type"], "image");
        assert_eq!(job.status_at(t0), "pending");
        assert_eq!(job.status_at(t1), "processing");
        assert_eq!(job.status_at(Instant::now()), "success");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_end_time_is_shown_whatever_the_job_took() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_720_788_552_541);
        let tl = Timeline::new("x")
            .processing(Duration::from_secs(2))
            .succeed("image", "u")
            .start_time(start)
            .end_time(start + Duration::from_secs(328));
        let mut job = JobState::new(tl, Instant::now());
        let running = job.snapshot("a", Instant::now());
        assert_eq!(running.data.get("end_time"), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        let done = job.snapshot("a", Instant::now());
        assert_eq!(done.data["start_time"], "2024-07-12T12:49:12.541Z");
        assert_eq!(done.data["end_time"], "2024-07-12T12:54:40.541Z");
    }

    #[tokio::test(start_paused = true)]
    async fn last_step_without_end_lasts_forever() {
        let t0 = Instant::now();
        let mut job = JobState::new(Timeline::new("x").status_for_answers("WAITING", 1), t0);
        for _ in 0..3 {
            let snap = job.answer("a", Instant::now());
            assert_eq!(snap.data["status"], "WAITING");
            assert!(!snap.terminal);
        }
    }
}
