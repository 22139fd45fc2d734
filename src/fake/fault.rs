//! Faults the fake server can inject, and plans that choose them.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::StatusCode;

/// A way for the fake server to answer badly.
///
/// A fault replaces the answer to one request. Constructors take plain
/// numbers; the variants are public so tests can match on them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Any HTTP status, with a JSON envelope
    /// `{"code": <status>, "msg": "<reason>", "data": null}` or an empty body.
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// Whether the body is the JSON envelope (else empty).
        json: bool,
    },
    /// A status (usually 429 or 503) with a `Retry-After` header and a JSON
    /// envelope body.
    RetryAfter {
        /// The HTTP status.
        status: StatusCode,
        /// The `Retry-After` value.
        retry_after: RetryAfter,
    },
    /// HTTP 200 with an API error envelope: `{"code": code, "msg": msg, "data": null}`.
    ApiError {
        /// The envelope `code` (not 0).
        code: i64,
        /// The envelope `msg`.
        msg: String,
    },
    /// The connection is closed without any answer.
    Reset,
    /// The request is held until the client goes away or the server stops.
    NoAnswer,
    /// The right answer, after a delay (on `tokio::time`).
    Late(Duration),
    /// A 200 whose `Content-Length` is that of the right body, but about
    /// half the body is sent before the connection is aborted.
    Truncated,
    /// A 200 whose body is not the JSON envelope.
    Garbage(Garbage),
    /// The right answer, sent a few bytes at a time.
    Dribble {
        /// Bytes per chunk (at least 1).
        chunk: usize,
        /// Pause before each chunk after the first.
        delay: Duration,
    },
}

/// The value of a `Retry-After` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryAfter {
    /// Delay in whole seconds: `Retry-After: 2`.
    Seconds(u64),
    /// A fixed HTTP date: `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
    Date(SystemTime),
    /// An HTTP date this long after the answer is made (wall clock).
    DateIn(Duration),
}

/// What a [`Fault::Garbage`] body looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Garbage {
    /// JSON cut short: `{"code":0,"da` with `Content-Type: application/json`.
    TruncatedJson,
    /// An HTML error page with `Content-Type: text/html`, as a proxy sends.
    Html,
}

impl Fault {
    /// Any HTTP status with the JSON envelope body.
    ///
    /// # Panics
    ///
    /// Panics if `status` is not a valid HTTP status code (100–999).
    pub fn status(status: u16) -> Self {
        Self::Status {
            status: status_code(status),
            json: true,
        }
    }

    /// Any HTTP status with an empty body.
    ///
    /// # Panics
    ///
    /// Panics if `status` is not a valid HTTP status code (100–999).
    pub fn status_empty(status: u16) -> Self {
        Self::Status {
            status: status_code(status),
            json: false,
        }
    }

    /// A status (429, 503, ...) with a `Retry-After` header.
    ///
    /// # Panics
    ///
    /// Panics if `status` is not a valid HTTP status code (100–999).
    pub fn retry_after(status: u16, retry_after: RetryAfter) -> Self {
        Self::RetryAfter {
            status: status_code(status),
            retry_after,
        }
    }

    /// HTTP 429 with `Retry-After: <secs>`.
    pub fn too_many_requests(secs: u64) -> Self {
        Self::retry_after(429, RetryAfter::Seconds(secs))
    }

    /// HTTP 503 with `Retry-After: <secs>`.
    pub fn unavailable(secs: u64) -> Self {
        Self::retry_after(503, RetryAfter::Seconds(secs))
    }

    /// An API error in a 200: `{"code": code, "msg": msg, "data": null}`.
    pub fn api_error(code: i64, msg: impl Into<String>) -> Self {
        Self::ApiError {
            code,
            msg: msg.into(),
        }
    }

    /// The right answer after `delay`.
    pub fn late(delay: Duration) -> Self {
        Self::Late(delay)
    }

    /// The right answer, `chunk` bytes at a time with `delay` between chunks.
    pub fn dribble(chunk: usize, delay: Duration) -> Self {
        Self::Dribble { chunk, delay }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).expect("fault status must be a valid http status code")
}

/// Which requests get a [`Fault`]: none, a script, or a seeded random draw.
///
/// A plan is set for all requests ([`FakeServerBuilder::faults`]) or for one
/// job ([`FakeServerBuilder::job_faults`]); a job's own plan replaces the
/// global plan for that job's requests. Each request that reaches the job
/// handler (after auth and id checks) draws from the plan once.
///
/// [`FakeServerBuilder::faults`]: super::FakeServerBuilder::faults
/// [`FakeServerBuilder::job_faults`]: super::FakeServerBuilder::job_faults
///
/// ```
/// use goenhance_jobs::fake::{Fault, FaultPlan};
///
/// // First request: 503, second: fine, third: reset, then healthy.
/// let script = FaultPlan::script([Some(Fault::unavailable(1)), None, Some(Fault::Reset)]);
/// // A quarter of requests fail, half of those with 500, half with 429.
/// let chaos = FaultPlan::random(0.25, 42, [Fault::status(500), Fault::too_many_requests(1)]);
/// # let _ = (script, chaos);
/// ```
pub struct FaultPlan {
    kind: PlanKind,
}

enum PlanKind {
    None,
    Script(VecDeque<Option<Fault>>),
    Random {
        p: f64,
        seed: u64,
        rng: fastrand::Rng,
        kinds: Vec<(Fault, u32)>,
        total: u64,
    },
}

impl FaultPlan {
    /// No faults: every request is answered properly.
    pub fn none() -> Self {
        Self {
            kind: PlanKind::None,
        }
    }

    /// Faults in order, one entry a request (`None` for a good answer);
    /// once the list is used up, every request is answered properly.
    pub fn script(faults: impl IntoIterator<Item = Option<Fault>>) -> Self {
        Self {
            kind: PlanKind::Script(faults.into_iter().collect()),
        }
    }

    /// Each request gets a fault with probability `p`, chosen uniformly
    /// from `kinds`, drawn from an RNG seeded with `seed`: the same seed
    /// gives the same sequence of faults on sequential requests.
    ///
    /// # Panics
    ///
    /// Panics if `p` is not within `0.0..=1.0`, or if `kinds` is empty.
    pub fn random(p: f64, seed: u64, kinds: impl IntoIterator<Item = Fault>) -> Self {
        Self::random_weighted(p, seed, kinds.into_iter().map(|f| (f, 1)))
    }

    /// Like [`FaultPlan::random`], choosing among `(fault, weight)` pairs
    /// in proportion to their weights.
    ///
    /// # Panics
    ///
    /// Panics if `p` is not within `0.0..=1.0`, or if the weights add up
    /// to zero.
    pub fn random_weighted(
        p: f64,
        seed: u64,
        kinds: impl IntoIterator<Item = (Fault, u32)>,
    ) -> Self {
        assert!(
            (0.0..=1.0).contains(&p),
            "fault probability must be within 0.0..=1.0"
        );
        let kinds: Vec<_> = kinds.into_iter().collect();
        let total = kinds.iter().map(|&(_, w)| u64::from(w)).sum();
        assert!(total > 0, "random fault plan needs a fault with a weight");
        Self {
            kind: PlanKind::Random {
                p,
                seed,
                rng: fastrand::Rng::with_seed(seed),
                kinds,
                total,
            },
        }
    }

    /// The fault for the next request, if any.
    pub(super) fn next_fault(&mut self) -> Option<Fault> {
        match &mut self.kind {
            PlanKind::None => None,
            PlanKind::Script(queue) => queue.pop_front().flatten(),
            PlanKind::Random {
                p,
                rng,
                kinds,
                total,
                ..
            } => {
                if rng.f64() >= *p {
                    return None;
                }
                let mut pick = rng.u64(0..*total);
                for (fault, w) in kinds.iter() {
                    let w = u64::from(*w);
                    if pick < w {
                        return Some(fault.clone());
                    }
                    pick -= w;
                }
                None
            }
        }
    }
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PlanKind::None => f.write_str("FaultPlan::None"),
            PlanKind::Script(queue) => f
                .debug_struct("FaultPlan::Script")
                .field("remaining", queue)
                .finish(),
            PlanKind::Random { p, seed, kinds, .. } => f
                .debug_struct("FaultPlan::Random")
                .field("p", p)
                .field("seed", seed)
                .field("kinds", kinds)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(plan: &mut FaultPlan, n: usize) -> Vec<Option<Fault>> {
        (0..n).map(|_| plan.next_fault()).collect()
    }

    #[test]
    fn script_runs_out_into_health() {
        let mut plan = FaultPlan::script([Some(Fault::Reset), None, Some(Fault::NoAnswer)]);
        assert_eq!(
            draw(&mut plan, 5),
            [Some(Fault::Reset), None, Some(Fault::NoAnswer), None, None]
        );
    }

    #[test]
    fn random_is_seeded_and_weighted() {
        let kinds = [
            (Fault::status(500), 3),
            (Fault::Reset, 1),
            (Fault::NoAnswer, 0),
        ];
        let a = draw(&mut FaultPlan::random_weighted(0.5, 7, kinds.clone()), 400);
        let b = draw(&mut FaultPlan::random_weighted(0.5, 7, kinds), 400);
        assert_eq!(a, b);
        let faults = a.iter().flatten().count();
        assert!((120..280).contains(&faults), "{faults} faults of 400");
        assert!(!a.contains(&Some(Fault::NoAnswer)));
        let resets = a.iter().filter(|f| **f == Some(Fault::Reset)).count();
        assert!(resets * 2 < faults, "{resets} resets of {faults}");
        let all = draw(&mut FaultPlan::random(1.0, 1, [Fault::Truncated]), 10);
        assert!(all.iter().all(|f| *f == Some(Fault::Truncated)));
        let never = draw(&mut FaultPlan::random(0.0, 1, [Fault::Truncated]), 10);
        assert!(never.iter().all(Option::is_none));
    }

    #[test]
    #[should_panic(expected = "fault probability")]
    fn random_rejects_bad_probability() {
        let _ = FaultPlan::random(1.5, 1, [Fault::Reset]);
    }
}
