//! [`conformance`]: the [`TrackStore`] contract as executable checks.

use std::future::Future;
use std::time::Duration;

use crate::track::store::{
    Claim, Claimed, Finished, JobState, Learned, Listing, NewJob, Retry, StatusChange, TrackStore,
    WorkerId,
};

const LONG: Duration = Duration::from_secs(60);

fn job(id: &str, meta: &str) -> NewJob {
    NewJob::new(id, meta, LONG)
}

/// Tracks jobs `ids` now, with `{}` as their meta.
async fn insert<S: TrackStore>(s: &S, ids: &[&str]) {
    let jobs = ids.iter().map(|id| job(id, "{}")).collect();
    s.insert(jobs, s.now())
        .await
        .unwrap_or_else(|e| panic!("insert {ids:?}: {e}"));
}

async fn register<S: TrackStore>(s: &S, name: &str, lease: Duration) -> WorkerId {
    s.register(name, lease, s.now())
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}"))
}

async fn claim<S: TrackStore>(s: &S, w: &WorkerId, waiting: usize, finished: usize) -> Claimed {
    claim_with(s, w, Claim::new(waiting, finished, 1)).await
}

async fn claim_with<S: TrackStore>(s: &S, w: &WorkerId, c: Claim) -> Claimed {
    s.claim(w, c, s.now())
        .await
        .unwrap_or_else(|e| panic!("claim by {}: {e}", w.name))
}

fn ids(c: &Claimed) -> Vec<String> {
    let mut ids: Vec<String> = c.jobs.iter().map(|j| j.id.clone()).collect();
    ids.sort();
    ids
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs the store contract against stores made by `make`, which must give
/// an empty store each call (a new file, a new database, cleared tables).
/// Panics, naming the rule, at the first one broken.
///
/// Every check uses the store's own clock ([`TrackStore::now`]); one waits
/// for a heartbeat of 300 ms to lapse (on the wall clock, or tokio's for a
/// store that follows it), so the suite takes about a second.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use goenhance_jobs::track::MemoryStore;
/// goenhance_jobs::track::testing::conformance(|| async { MemoryStore::new() }).await;
/// # }
/// ```
///
/// # Panics
///
/// When the store breaks a rule of the contract, or fails an operation.
pub async fn conformance<S, F, Fut>(mut make: F)
where
    S: TrackStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    first_insert_wins(&make().await).await;
    claims_are_exclusive_and_bounded(&make().await).await;
    completion_is_idempotent_and_needs_the_lease(&make().await).await;
    registering_again_fences_the_earlier_epoch(&make().await).await;
    a_lapsed_heartbeat_frees_the_jobs(&make().await).await;
    acked_jobs_are_listed_in_pages(&make().await).await;
    retries_dead_jobs_and_releases(&make().await).await;
    a_lost_claim_is_recovered(&make().await).await;
    the_last_status_is_kept(&make().await).await;
    ended_jobs_are_pruned_after_the_retention(&make().await).await;
    learned_comes_back(&make().await).await;
    one_job_is_looked_up_in_every_state(&make().await).await;
    completing_and_acknowledging_at_once_does_both(&make().await).await;
}

async fn first_insert_wins<S: TrackStore>(s: &S) {
    s.insert(vec![job("a", "1")], s.now()).await.unwrap();
    s.insert(vec![job("a", "2"), job("b", "3")], s.now())
        .await
        .unwrap();
    assert_eq!(
        s.pending().await.unwrap(),
        2,
        "an id inserted twice is one job"
    );
    let w = register(s, "w", LONG).await;
    let c = claim(s, &w, 10, 10).await;
    assert_eq!(ids(&c), strs(&["a", "b"]), "claim of two waiting jobs");
    let a = c.jobs.iter().find(|j| j.id == "a").unwrap();
    assert_eq!(a.meta, "1", "the first insert's meta is kept");
    assert_eq!(
        a.deadline.duration_since(a.tracked_at).ok(),
        Some(LONG),
        "the deadline is the timeout after the store's time of tracking"
    );
    assert!(
        a.outcome.is_none() && a.deliveries == 0,
        "a waiting job has no outcome"
    );
}

async fn claims_are_exclusive_and_bounded<S: TrackStore>(s: &S) {
    insert(s, &["a", "b", "c", "d", "e"]).await;
    let w1 = register(s, "w1", LONG).await;
    let w2 = register(s, "w2", LONG).await;
    assert_eq!(
        claim(s, &w1, 2, 2).await.jobs.len(),
        2,
        "at most `waiting` jobs"
    );
    assert_eq!(claim(s, &w2, 10, 10).await.jobs.len(), 3, "the rest");
    assert!(
        claim(s, &w1, 10, 10).await.jobs.is_empty(),
        "held jobs are not claimed again"
    );
}

async fn completion_is_idempotent_and_needs_the_lease<S: TrackStore>(s: &S) {
    insert(s, &["a", "b", "c"]).await;
    let w = register(s, "w", LONG).await;
    let other = register(s, "other", LONG).await;
    claim(s, &w, 10, 10).await;
    let done = |id: &str| Finished::new(id, format!("{{\"for\":\"{id}\"}}"));
    let none = s.complete(&other, vec![done("a")], s.now()).await.unwrap();
    assert!(
        none.is_empty(),
        "a worker that does not hold a job cannot complete it"
    );
    let mut got = s
        .complete(&w, vec![done("a"), done("b"), done("c")], s.now())
        .await
        .unwrap();
    got.sort();
    let want = vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)];
    assert_eq!(got, want, "each completion counts one delivery");
    let mut again = s
        .complete(&w, vec![done("a"), done("b"), done("c")], s.now())
        .await
        .unwrap();
    again.sort();
    assert_eq!(
        again, want,
        "completing again answers the same, counting nothing"
    );
    s.release(&w, strs(&["a", "b", "c"])).await.unwrap();
    let c = claim(s, &other, 10, 1).await;
    assert_eq!(c.jobs.len(), 1, "at most `finished` finished jobs");
    let j = &c.jobs[0];
    assert_eq!(
        (j.outcome.clone(), j.deliveries),
        (Some(format!("{{\"for\":\"{}\"}}", j.id)), 2),
        "a finished job comes with its outcome, its claim counting a delivery"
    );
}

async fn registering_again_fences_the_earlier_epoch<S: TrackStore>(s: &S) {
    insert(s, &["a"]).await;
    let old = register(s, "w", LONG).await;
    assert_eq!(claim(s, &old, 10, 10).await.jobs.len(), 1);
    let new = register(s, "w", LONG).await;
    assert!(
        new.epoch > old.epoch,
        "a new registration has a later epoch"
    );
    assert!(
        !s.heartbeat(&old, LONG, s.now()).await.unwrap(),
        "the earlier epoch's heartbeat says it is fenced"
    );
    assert!(
        !claim(s, &old, 10, 10).await.alive,
        "the earlier epoch claims nothing"
    );
    let none = s
        .complete(&old, vec![Finished::new("a", "{}")], s.now())
        .await
        .unwrap();
    assert!(none.is_empty(), "the earlier epoch completes nothing");
    assert!(s.heartbeat(&new, LONG, s.now()).await.unwrap());
    assert_eq!(
        ids(&claim(s, &new, 10, 10).await),
        strs(&["a"]),
        "the earlier epoch's jobs are free for the new one"
    );
}

async fn a_lapsed_heartbeat_frees_the_jobs<S: TrackStore>(s: &S) {
    insert(s, &["a"]).await;
    let short = register(s, "short", Duration::from_millis(300)).await;
    let long = register(s, "long", LONG).await;
    assert_eq!(claim(s, &short, 10, 10).await.jobs.len(), 1);
    assert!(
        claim(s, &long, 10, 10).await.jobs.is_empty(),
        "a live worker's job is not taken"
    );
    let mut taken = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !claim(s, &long, 10, 10).await.jobs.is_empty() {
            taken = true;
            break;
        }
    }
    assert!(
        taken,
        "the job of a worker whose heartbeat lapsed is taken within 10 s"
    );
    assert!(
        !s.heartbeat(&short, LONG, s.now()).await.unwrap(),
        "a lapsed heartbeat cannot be revived"
    );
    let none = s
        .complete(&short, vec![Finished::new("a", "{}")], s.now())
        .await
        .unwrap();
    assert!(none.is_empty(), "a lapsed worker completes nothing");
}

async fn acked_jobs_are_listed_in_pages<S: TrackStore>(s: &S) {
    let names = ["j1", "j2", "j3", "j4", "j5"];
    for id in names {
        s.insert(vec![job(id, "{}")], s.now()).await.unwrap();
    }
    let w = register(s, "w", LONG).await;
    claim(s, &w, 10, 10).await;
    let done: Vec<Finished> = names
        .iter()
        .map(|id| Finished::new(*id, format!("out-{id}")))
        .collect();
    s.complete(&w, done, s.now()).await.unwrap();
    s.ack(strs(&names), s.now()).await.unwrap();
    s.ack(strs(&names), s.now()).await.unwrap();
    assert_eq!(s.pending().await.unwrap(), 0, "acked jobs are not pending");
    assert!(
        claim(s, &w, 10, 10).await.jobs.is_empty(),
        "acked jobs are never handed out"
    );
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = s.list(Listing::Delivered, after, 2).await.unwrap();
        pages += 1;
        assert!(page.len() <= 2, "a page holds at most `limit`");
        for j in &page {
            assert_eq!(j.outcome.as_deref(), Some(format!("out-{}", j.id).as_str()));
            assert_eq!(j.deliveries, 1);
            seen.push(j.id.clone());
        }
        match page.last() {
            Some(last) if page.len() == 2 => after = Some(last.cursor),
            _ => break,
        }
    }
    assert_eq!(
        seen,
        strs(&names),
        "pages list every job once, in order of tracking"
    );
    assert_eq!(pages, 3);
    assert!(s.list(Listing::Dead, None, 10).await.unwrap().is_empty());
}

async fn retries_dead_jobs_and_releases<S: TrackStore>(s: &S) {
    insert(s, &["a", "b", "c"]).await;
    let w = register(s, "w", LONG).await;
    let v = register(s, "v", LONG).await;
    claim(s, &w, 10, 10).await;
    let done = ["a", "b"].map(|id| Finished::new(id, "{}")).to_vec();
    s.complete(&w, done, s.now()).await.unwrap();
    s.retry(
        &w,
        vec![
            Retry::later("a", "try again", LONG),
            Retry::dead("b", "boom"),
        ],
        s.now(),
    )
    .await
    .unwrap();
    s.release(&w, strs(&["c"])).await.unwrap();
    assert_eq!(s.pending().await.unwrap(), 2, "a dead job is not pending");
    assert_eq!(
        ids(&claim(s, &v, 10, 10).await),
        strs(&["c"]),
        "a released job is free at once; a retried one only when due"
    );
    let dead = s.list(Listing::Dead, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id.as_str(), dead[0].error.as_deref()),
        ("b", Some("boom")),
        "a dead job keeps its last error"
    );
    assert_eq!(
        s.retry_dead(strs(&["a", "b", "zz"]), s.now())
            .await
            .unwrap(),
        1,
        "retry_dead counts the dead jobs it revived"
    );
    let c = claim(s, &v, 10, 10).await;
    assert_eq!(ids(&c), strs(&["b"]));
    assert_eq!(
        (c.jobs[0].outcome.as_deref(), c.jobs[0].deliveries),
        (Some("{}"), 1),
        "a revived job keeps its outcome; its deliveries start over"
    );
}

async fn a_lost_claim_is_recovered<S: TrackStore>(s: &S) {
    insert(s, &["a", "b"]).await;
    let w = register(s, "w", LONG).await;
    // The answer of this claim is "lost".
    let first = claim_with(s, &w, Claim::new(1, 1, 7)).await;
    assert_eq!(first.jobs.len(), 1);
    let again = claim_with(s, &w, Claim::new(10, 10, 8).recover(vec![7])).await;
    assert_eq!(
        ids(&again),
        strs(&["a", "b"]),
        "a claim recovering token 7 hands its jobs out again, with new ones"
    );
    let none = claim_with(s, &w, Claim::new(10, 10, 9)).await;
    assert!(
        none.jobs.is_empty(),
        "without recovery held jobs are not handed out"
    );
}

async fn the_last_status_is_kept<S: TrackStore>(s: &S) {
    insert(s, &["a"]).await;
    let w = register(s, "w", LONG).await;
    claim(s, &w, 10, 10).await;
    let change = StatusChange::new("a", "processing", Duration::from_secs(2), 6);
    s.save_status(&w, vec![change], s.now()).await.unwrap();
    s.release(&w, strs(&["a"])).await.unwrap();
    let v = register(s, "v", LONG).await;
    let c = claim(s, &v, 10, 10).await;
    let (status, since, polls) = c.jobs[0]
        .last_status
        .clone()
        .expect("the saved status comes with the next claim");
    assert_eq!((status.as_str(), polls), ("processing", 6));
    let age = c.now.duration_since(since).unwrap_or_default();
    assert!(
        age >= Duration::from_secs(2) && age < Duration::from_secs(12),
        "the status was first seen its age before the save, by the store's clock: {age:?}"
    );
}

async fn ended_jobs_are_pruned_after_the_retention<S: TrackStore>(s: &S) {
    insert(s, &["a", "b"]).await;
    let w = register(s, "w", LONG).await;
    claim(s, &w, 10, 10).await;
    s.complete(&w, vec![Finished::new("a", "{}")], s.now())
        .await
        .unwrap();
    s.ack(strs(&["a"]), s.now()).await.unwrap();
    assert_eq!(
        s.prune(Duration::from_secs(3600), s.now()).await.unwrap(),
        0,
        "a job delivered now is kept for an hour's retention"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        s.prune(Duration::ZERO, s.now()).await.unwrap(),
        1,
        "with no retention the delivered job goes, the waiting one stays"
    );
    assert!(s
        .list(Listing::Delivered, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.pending().await.unwrap(), 1);
}

async fn learned_comes_back<S: TrackStore>(s: &S) {
    let l = Learned::from_row(("mx-v2v".to_owned(), 3, 2.5, 0.25));
    s.save_learned(vec![l.clone()]).await.unwrap();
    let m = Learned::from_row(("mx-v2v".to_owned(), 4, 2.0, 0.5));
    s.save_learned(vec![m.clone()]).await.unwrap();
    assert_eq!(
        s.load_learned().await.unwrap(),
        vec![m],
        "what was learned comes back as last saved, one row a type"
    );
}

async fn one_job_is_looked_up_in_every_state<S: TrackStore>(s: &S) {
    s.insert(vec![job("a", "{\"n\":1}"), job("b", "{}")], s.now())
        .await
        .unwrap();
    assert!(
        s.job("zz").await.unwrap().is_none(),
        "an unknown id is None"
    );
    let a = s.job("a").await.unwrap().expect("a tracked job is found");
    assert_eq!(
        (a.id.as_str(), a.meta.as_str(), a.state, a.deliveries),
        ("a", "{\"n\":1}", JobState::Waiting, 0)
    );
    assert_eq!(a.deadline.duration_since(a.tracked_at).ok(), Some(LONG));
    assert!(a.outcome.is_none() && a.ended_at.is_none() && a.last_status.is_none());
    let w = register(s, "w", LONG).await;
    claim(s, &w, 10, 10).await;
    let change = StatusChange::new("a", "processing", Duration::ZERO, 3);
    s.save_status(&w, vec![change], s.now()).await.unwrap();
    let a = s.job("a").await.unwrap().unwrap();
    let (status, _, polls) = a.last_status.expect("the saved status");
    assert_eq!((status.as_str(), polls), ("processing", 3));
    s.complete(&w, vec![Finished::new("b", "out")], s.now())
        .await
        .unwrap();
    let b = s.job("b").await.unwrap().unwrap();
    assert_eq!(
        (b.state, b.outcome.as_deref(), b.deliveries),
        (JobState::Finished, Some("out"), 1)
    );
    s.ack(strs(&["b"]), s.now()).await.unwrap();
    let b = s.job("b").await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Delivered);
    assert!(b.ended_at.is_some(), "a delivered job has ended");
    s.retry(&w, vec![Retry::dead("a", "gone wrong")], s.now())
        .await
        .unwrap();
    let a = s.job("a").await.unwrap().unwrap();
    assert_eq!(
        (a.state, a.error.as_deref()),
        (JobState::Dead, Some("gone wrong"))
    );
}

async fn completing_and_acknowledging_at_once_does_both<S: TrackStore>(s: &S) {
    insert(s, &["a", "b", "c"]).await;
    let w = register(s, "w", LONG).await;
    claim(s, &w, 10, 10).await;
    s.complete(&w, vec![Finished::new("a", "out-a")], s.now())
        .await
        .unwrap();
    let state = |id: &'static str| async move {
        let j = s.job(id).await.unwrap().unwrap();
        (j.state, j.outcome, j.deliveries)
    };
    let mut answers = Vec::new();
    // The second call is a replay of the first, whose answer was lost.
    for _ in 0..2 {
        let got = s
            .complete_and_ack(
                &w,
                vec![Finished::new("b", "out-b")],
                strs(&["a", "c"]),
                s.now(),
            )
            .await
            .unwrap();
        answers.push(got);
        assert_eq!(
            state("a").await,
            (JobState::Delivered, Some("out-a".into()), 1),
            "the finished job acknowledged is delivered"
        );
        assert_eq!(
            state("b").await,
            (JobState::Finished, Some("out-b".into()), 1),
            "the job completed is finished, not delivered, counted once"
        );
        assert_eq!(
            state("c").await,
            (JobState::Waiting, None, 0),
            "acknowledging a job that is not finished does nothing"
        );
    }
    let want = vec![("b".to_owned(), 1)];
    assert_eq!(answers, [want.clone(), want], "answered as complete is");
}
