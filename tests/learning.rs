//! What the adaptive schedule learns when the server's times are wrong, and
//! how it recovers from a fit its jobs contradict: on the paused clock with
//! the in-memory transport.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use goenhance_jobs::backoff::Jitter;
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, JobStatus, PollPolicy};
use tokio::time::Instant;

mod support;

use support::time::rfc3339;

/// What the server says of a job's times.
#[derive(Clone, Copy)]
enum Times {
    /// `start_time` when the job started, `end_time` when it ended (by the
    /// test's wall clock less the job's age), shifted by `skew` seconds.
    ///
    /// A skew of 0 is taken as 1 s ahead: the age the client reads from
    /// the start time is then 0, not the few microseconds (or, on a busy
    /// machine, milliseconds) of real time between the answer and its
    /// reading, which would shift every later poll by as much.
    True { skew: i64 },
    /// Always 2024-07-12T12:49:12Z to 12:54:40Z (5 min 28 s).
    Frozen,
}

/// Job `j{n}` starts at n × 1000 s (virtual) and runs `runs[n]`, with
/// server times `times`, except those in `except`: `(n, start, times)`.
struct Jobs {
    runs: Vec<Duration>,
    times: Times,
    except: Vec<(usize, Duration, Times)>,
}

impl Jobs {
    fn new(runs: Vec<Duration>, times: Times) -> Self {
        Jobs {
            runs,
            times,
            except: Vec::new(),
        }
    }

    /// When job `n` starts, and what the server says of its times.
    fn of(&self, n: usize) -> (Duration, Times) {
        match self.except.iter().find(|e| e.0 == n) {
            Some(&(_, begin, times)) => (begin, times),
            None => (Duration::from_secs(n as u64 * 1000), self.times),
        }
    }
}

fn shifted(t: SystemTime, skew: i64) -> SystemTime {
    if skew >= 0 {
        t + Duration::from_secs(skew.unsigned_abs())
    } else {
        t - Duration::from_secs(skew.unsigned_abs())
    }
}

/// A server for `jobs`, and a client with the default schedule, without
/// jitter.
fn setup(jobs: Jobs) -> (Client, MockTransport, Instant) {
    let origin = Instant::now();
    let jobs = Arc::new(jobs);
    let mock = MockTransport::from_fn(move |req| {
        let id = req.img_uuid.clone().unwrap();
        let n: usize = id.trim_start_matches('j').parse().unwrap();
        let (begin, times) = jobs.of(n);
        let age = (req.at - origin).saturating_sub(begin);
        let run = jobs.runs[n];
        let done = age >= run;
        let (start, end) = match times {
            Times::True { skew } => {
                // The job started `age` ago by the wall clock.
                let skew = if skew == 0 { 1 } else { skew };
                let start = shifted(SystemTime::now() - age, skew);
                (start, start + run)
            }
            Times::Frozen => {
                let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_720_788_552);
                (start, start + Duration::from_secs(328))
            }
        };
        let status = if done { "success" } else { "processing" };
        let end = if done {
            format!(r#","end_time":"{}""#, rfc3339(end))
        } else {
            String::new()
        };
        MockResponse::ok(format!(
            r#"{{"code":0,"data":{{"img_uuid":"{id}","status":"{status}","job_type":"t","start_time":"{}"{end}}}}}"#,
            rfc3339(start)
        ))
    });
    let client = Client::builder()
        .api_key("sk-learning-test")
        .poll_policy(PollPolicy::adaptive().jitter(Jitter::None))
        .transport(mock.clone())
        .build()
        .unwrap();
    (client, mock, origin)
}

/// Waits on each job in turn; per job, the offsets (ms from its start) of
/// its polls.
async fn waits(client: &Client, mock: &MockTransport, origin: Instant, n: usize) -> Vec<Vec<u64>> {
    let mut all = Vec::new();
    for i in 0..n {
        let begin = origin + Duration::from_secs(i as u64 * 1000);
        tokio::time::sleep_until(begin).await;
        let d = client.wait(&format!("j{i}")).await.unwrap();
        assert_eq!(d.status(), &JobStatus::Succeeded);
        let id = format!("j{i}");
        all.push(
            mock.requests()
                .iter()
                .filter(|r| r.img_uuid.as_deref() == Some(id.as_str()))
                .map(|r| u64::try_from((r.at - begin).as_millis()).unwrap())
                .collect(),
        );
    }
    all
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Before five jobs of a type finished: 1 s × 1.5ⁿ.
const FALLBACK_TO_3S: [u64; 4] = [0, 1000, 2500, 4750];

#[tokio::test(start_paused = true)]
async fn frozen_server_times_are_not_learned() {
    // 3 s jobs; the server says 5 min 28 s.
    let (client, mock, origin) = setup(Jobs::new(vec![secs(3); 10], Times::Frozen));
    let polls = waits(&client, &mock, origin, 10).await;
    for p in &polls[..5] {
        assert_eq!(p, &FALLBACK_TO_3S);
    }
    // Learned: what the waits saw, 2.5 s to 4.75 s, taken at its middle
    // (3.625 s, σ at its floor, 0.1), then each wait's window [0, second
    // poll] taken at the fit's median in it: the fit moves to the true 3 s,
    // and each job is seen done within 1 s of its end. Trusting the server
    // (5 min 28 s) the second poll came at 60 s.
    assert_eq!(
        polls[5..],
        [
            &[0, 3187][..],
            &[0, 3104],
            &[0, 3036],
            &[0, 2978, 3978],
            &[0, 2980, 3980]
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn true_server_times_are_learned() {
    // The same 3 s jobs, the server's times right: 3 s is learned (not what
    // the waits saw, 3.625 s), and polls come at 2.7 s and 3.7 s.
    let (client, mock, origin) = setup(Jobs::new(vec![secs(3); 7], Times::True { skew: 0 }));
    let polls = waits(&client, &mock, origin, 7).await;
    for p in &polls[..5] {
        assert_eq!(p, &FALLBACK_TO_3S);
    }
    let learned = [0, 2663, 3663];
    assert_eq!(polls[5], learned);
    assert_eq!(polls[6], learned);
}

#[tokio::test(start_paused = true)]
async fn a_server_clock_that_is_off_still_gives_true_run_times() {
    // Start and end 1 h late or 1 h early: the run time is still right,
    // and learned as with a true clock.
    for skew in [3600, -3600] {
        let (client, mock, origin) = setup(Jobs::new(vec![secs(3); 7], Times::True { skew }));
        let polls = waits(&client, &mock, origin, 7).await;
        assert_eq!(polls[5], [0, 2663, 3663], "skew {skew} s");
        assert_eq!(polls[6], [0, 2663, 3663], "skew {skew} s");
    }
}

#[tokio::test(start_paused = true)]
async fn a_fit_its_jobs_contradict_recovers_within_a_few_jobs() {
    // Six 90 s jobs, then the type's jobs take 3 s (true server times).
    let mut runs = vec![secs(90); 6];
    runs.extend([secs(3); 7]);
    let (client, mock, origin) = setup(Jobs::new(runs, Times::True { skew: 0 }));
    let polls = waits(&client, &mock, origin, 13).await;
    // The 90 s fit skips the young part of the job: the first 3 s job is
    // seen late, the one cost of the change.
    let first = &polls[6];
    // It contradicted the fit (3 s against 90 s, σ 0.1): the next jobs are
    // polled as if nothing was known; after three contradicting jobs in a
    // row (6, 7, 8) the fit restarts from them, and is used once it has
    // five run times (from job 11).
    assert_eq!(first, &[0, 60_000]);
    for p in &polls[7..11] {
        assert_eq!(p, &FALLBACK_TO_3S);
    }
    assert_eq!(polls[11], [0, 2663, 3663]);
    assert_eq!(polls[12], [0, 2663, 3663]);
}

#[tokio::test(start_paused = true)]
async fn watches_in_the_callers_task_learn_the_same() {
    // `Client::watch` polls in the caller's task, not in the hub: the same
    // rules, the same polls as `frozen_server_times_are_not_learned`.
    let (client, mock, origin) = setup(Jobs::new(vec![secs(3); 7], Times::Frozen));
    for i in 0..7u64 {
        tokio::time::sleep_until(origin + Duration::from_secs(i * 1000)).await;
        let seen: Vec<_> = futures_util::StreamExt::collect(client.watch(&format!("j{i}"))).await;
        let last = seen.last().unwrap().as_ref().unwrap();
        assert_eq!(last.status(), &JobStatus::Succeeded);
    }
    let polls_of = |id: &str, n: u64| -> Vec<u64> {
        let begin = origin + Duration::from_secs(n * 1000);
        mock.requests()
            .iter()
            .filter(|r| r.img_uuid.as_deref() == Some(id))
            .map(|r| u64::try_from((r.at - begin).as_millis()).unwrap())
            .collect()
    };
    assert_eq!(polls_of("j4", 4), FALLBACK_TO_3S);
    assert_eq!(polls_of("j5", 5), [0, 3187]);
    assert_eq!(polls_of("j6", 6), [0, 3104]);
}

#[tokio::test(start_paused = true)]
async fn jobs_already_finished_when_first_seen_are_not_learned() {
    // Ten jobs finished before their first poll (a restart finding them
    // done), the server claiming 5 min 28 s each: the wait saw nothing of
    // their run, so nothing is learned, and the next job is polled as one
    // of a type never seen. Learning the claim made its second poll 60 s
    // late.
    let mut runs = vec![secs(0); 10];
    runs.push(secs(3));
    let (client, mock, origin) = setup(Jobs::new(runs, Times::Frozen));
    let polls = waits(&client, &mock, origin, 11).await;
    for p in &polls[..10] {
        assert_eq!(p, &[0]);
    }
    assert_eq!(polls[10], FALLBACK_TO_3S);
}

/// The offsets (ms from `begin`) of the polls of job `id`.
fn polls_of(mock: &MockTransport, id: &str, begin: Instant) -> Vec<u64> {
    mock.requests()
        .iter()
        .filter(|r| r.img_uuid.as_deref() == Some(id))
        .map(|r| u64::try_from((r.at - begin).as_millis()).unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_age_refused_once_is_never_used_later_in_the_wait() {
    // Five 60 s jobs with true times teach 60 s (σ 0.1: 99.9 % end by
    // 82 s). Job 5 runs 120 s, and the server's clock is an hour behind:
    // it says the job was an hour old when first seen. That is refused at
    // once, and held against the server's times; job 6 (60 s, true times,
    // started 10 s later) ends agreeing, and the server's times are
    // believed again. Job 5's age stays refused: it is polled as a job new
    // when first seen, sparsely at first, then, past the tail, every tenth
    // of the time since first seen.
    let mut runs = vec![secs(60); 7];
    runs[5] = secs(120);
    let mut jobs = Jobs::new(runs, Times::True { skew: 0 });
    jobs.except = vec![
        (5, secs(5000), Times::True { skew: -3600 }),
        (6, secs(5010), Times::True { skew: 0 }),
    ];
    let (client, mock, origin) = setup(jobs);
    waits(&client, &mock, origin, 5).await;
    let (c5, c6) = (client.clone(), client.clone());
    let job5 = tokio::spawn(async move {
        tokio::time::sleep_until(origin + secs(5000)).await;
        c5.wait("j5").await.unwrap()
    });
    let job6 = tokio::spawn(async move {
        tokio::time::sleep_until(origin + secs(5010)).await;
        c6.wait("j6").await.unwrap()
    });
    assert_eq!(job6.await.unwrap().status(), &JobStatus::Succeeded);
    assert_eq!(job5.await.unwrap().status(), &JobStatus::Succeeded);
    let polls6 = polls_of(&mock, "j6", origin + secs(5010));
    // Job 6 ended (by 70 s of virtual time) before job 5's seventh poll.
    assert_eq!(polls6, [0, 46930, 51832, 54640, 56799, 58630, 60259]);
    let polls5 = polls_of(&mock, "j5", origin + secs(5000));
    // Sparse while young, dense near 60 s, every second near the tail,
    // then every tenth of the time since first seen. Taking the server's
    // word again once its times were believed (from 70.3 s), the job was
    // late at once and polled every 7 s; taking it once past the tail, as
    // the schedule did before, every 60 s (a tenth of an hour, clamped).
    assert_eq!(
        polls5,
        [
            0, 46930, 51832, 54640, 56799, 58630, 60259, 61750, 63139, 64451, 65700, 66899, 68055,
            69176, 70266, 71359, 72426, 73469, 74491, 75495, 76495, 77495, 78495, 79495, 80495,
            81495, 82495, 83495, 91845, 101030, 111133, 122247
        ]
    );
}
