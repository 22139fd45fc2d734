use tokio::sync::oneshot;

use super::super::PackedIds;
use super::*;
use crate::model::{JobDetail, JobStatus};

/// A driver over a stack that answers every job as succeeded at once, but
/// "stays" as pending.
fn driver() -> (Driver, mpsc::UnboundedSender<Command>) {
    let stack = Stack::new(tower::service_fn(|q: JobQuery| async move {
        let status = if q.img_uuid() == "stays" {
            JobStatus::Pending
        } else {
            JobStatus::Succeeded
        };
        Ok::<_, Error>(JobDetail::new(q.img_uuid(), status))
    }));
    let (tx, rx) = mpsc::unbounded_channel();
    let policy = PollPolicy::fixed(Duration::from_secs(5));
    let retry = Arc::new(RetryPolicy::never());
    let driver = Driver::new(stack, retry, policy, HubConfig::default(), rx);
    (driver, tx)
}

fn many(n: usize, tx: &mpsc::UnboundedSender<(JobQuery, Answer)>) -> Command {
    let mut ids = PackedIds::default();
    for i in 0..n {
        ids.push(&format!("job-{i}"));
    }
    Command::Many {
        changes: false,
        ids: Arc::new(ids),
        tx: tx.clone(),
        taken: oneshot::channel().0,
        parent: tracing::Span::none(),
    }
}

/// Runs one turn of the driver.
async fn turn(driver: &mut Driver) {
    let _ = std::future::poll_fn(|cx| match driver.poll(cx) {
        Poll::Pending => Poll::Ready(Yield::Busy),
        ready => ready,
    })
    .await;
    tokio::task::yield_now().await;
}

/// Runs the driver until `n` answers came in.
async fn run_until(
    driver: &mut Driver,
    rx: &mut mpsc::UnboundedReceiver<(JobQuery, Answer)>,
    n: usize,
) {
    let mut got = 0;
    while got < n {
        turn(driver).await;
        while rx.try_recv().is_ok() {
            got += 1;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn memory_is_given_back_once_the_jobs_have_ended() {
    let (mut driver, commands) = driver();
    let (tx, mut rx) = mpsc::unbounded_channel();
    commands.send(many(20_000, &tx)).unwrap();
    run_until(&mut driver, &mut rx, 20_000).await;
    assert!(driver.jobs.is_empty());
    assert_eq!(driver.jobs.capacity(), 0);
    assert_eq!(driver.index.capacity(), 0);
    assert_eq!(driver.queue.capacity(), 0);

    // With one job of many still waiting, most of the room goes back too.
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let (one_tx, _one_rx) = oneshot::channel();
    driver.on_command(Command::One(
        JobQuery::new("stays").unwrap(),
        one_tx,
        tracing::Span::none(),
    ));
    commands.send(many(20_000, &tx2)).unwrap();
    run_until(&mut driver, &mut rx2, 20_000).await;
    assert_eq!(driver.jobs.len(), 1);
    assert!(driver.jobs.capacity() < 1024, "{}", driver.jobs.capacity());
    assert!(
        driver.queue.timers_len() < 1024,
        "{}",
        driver.queue.timers_len()
    );
}

/// Waits on a live job that are given up at once (a long-poll handler's
/// `timeout(wait)`) leave no timer entry and no waiter behind: the cost of
/// the next wait does not grow with them.
#[tokio::test(start_paused = true)]
async fn cancelled_waits_leave_nothing_behind() {
    let (mut driver, _commands) = driver();
    let (live, _live_rx) = oneshot::channel();
    driver.on_command(Command::One(
        JobQuery::new("stays").unwrap(),
        live,
        tracing::Span::none(),
    ));
    turn(&mut driver).await;
    for _ in 0..10_000 {
        let (tx, rx) = oneshot::channel();
        drop(rx);
        driver.on_command(Command::One(
            JobQuery::new("stays").unwrap(),
            tx,
            tracing::Span::none(),
        ));
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(driver.jobs.len(), 1);
    let job = driver.jobs.iter().next().unwrap().1;
    assert!(
        job.waiters.as_slice().len() <= 2,
        "{}",
        job.waiters.as_slice().len()
    );
    // The job's next poll and its one deadline entry.
    assert!(
        driver.queue.timers_len() <= 2,
        "{}",
        driver.queue.timers_len()
    );
}

/// Ids that differ only in the case of a UUID are one job; other ids are
/// compared exactly.
#[tokio::test(start_paused = true)]
async fn a_uuid_is_merged_without_regard_to_case() {
    let (mut driver, _commands) = driver();
    let lower = "5334c57d-8443-4b79-ba24-8539c2163c74";
    for id in [lower, &lower.to_ascii_uppercase(), "job-a", "JOB-A"] {
        let (tx, _rx) = oneshot::channel();
        std::mem::forget(_rx);
        driver.on_command(Command::One(
            JobQuery::new(id).unwrap(),
            tx,
            tracing::Span::none(),
        ));
    }
    assert_eq!(driver.jobs.len(), 3);
}

/// What a waiting job costs the driver in its slab: its id inline, its
/// wait state, one waiter inline, its marks and span handle.
#[test]
fn a_job_is_small() {
    assert!(
        std::mem::size_of::<Waiter>() <= 32,
        "{}",
        std::mem::size_of::<Waiter>()
    );
    assert!(
        std::mem::size_of::<Job>() <= 208,
        "{}",
        std::mem::size_of::<Job>()
    );
}
