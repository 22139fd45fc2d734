//! A fault campaign of durable tracking on PostgreSQL: 1,000 jobs on the
//! fake server, three worker processes each reaching a throwaway cluster
//! through its own fault proxy (connections cut after some bytes, cut
//! right after a commit before its reply, stalled), one worker SIGKILLed
//! and restarted mid-run, one with its clock 30 s ahead. Checked from the
//! handlers' own logs, the proxies' fault logs and the fake server's
//! request log: every job delivered, none handled twice at once, each in
//! time, each with the outcome the server gave.
//!
//! `CAMPAIGN_SEED=N` replays a plan; `CAMPAIGN_SCALE=k` runs a larger one.

mod support;

#[path = "support/campaign/mod.rs"]
mod campaign;
#[path = "support/faultproxy.rs"]
mod faultproxy;

use std::net::SocketAddr;
use std::time::Duration;

use goenhance_jobs::fake::DEFAULT_API_KEY;
use goenhance_jobs::track::{PostgresStore, TrackStore, Tracker};
use goenhance_jobs::{Client, JobQuery};

use campaign::{fleet, Settings, WorkerEnv};
use faultproxy::{FaultProxy, Kind, PlanSpec};
use support::pg::Cluster;

/// The test that runs a worker process.
const ENTRY: &str = "campaign_worker";

/// The worker process of the campaign; the campaign starts it.
#[test]
#[ignore = "the worker process of the campaign, started by it: not a test on its own"]
fn campaign_worker() {
    let env = WorkerEnv::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // The proxy may cut the first connection too.
        let store = loop {
            match PostgresStore::connect(&env.store).await {
                Ok(store) => break store,
                Err(e) => {
                    eprintln!("connect: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        campaign::worker::run(store, env).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_campaign_on_postgres_delivers_every_job_once_at_a_time_and_in_time() {
    let s = Settings::from_env();
    let dir = campaign::campaign_dir("campaign-pg");
    let cluster = Cluster::start("campaign");
    let jobs = campaign::draw_jobs(&s);
    let server = campaign::fake_server(&jobs).await;

    // Track every job, straight to the database.
    let direct = PostgresStore::connect(&cluster.url()).await.unwrap();
    let client = Client::builder()
        .base_url(server.base_url())
        .api_key(DEFAULT_API_KEY)
        .wait_timeout(s.deadline)
        .build()
        .unwrap();
    let tracker = Tracker::builder(client, direct.clone()).build();
    let tracked_from = campaign::now_ms();
    let tracks = jobs.iter().map(|j| {
        let t = tracker.clone();
        let meta = serde_json::json!({ "handler_ms": j.handler_ms });
        async move { t.track(JobQuery::new(&j.id)?, meta).await }
    });
    for r in futures_util::future::join_all(tracks).await {
        r.unwrap();
    }
    let tracked = (tracked_from, campaign::now_ms());
    assert_eq!(tracker.pending().await.unwrap(), jobs.len() as u64);

    // A proxy per worker, each with its own plan.
    let upstream = SocketAddr::from(([127, 0, 0, 1], cluster.port));
    let per_proxy = s.faults_per_kind * 3 * 3 / 2 / s.workers;
    let spec = PlanSpec {
        faults: per_proxy,
        // Gaps leave room for each fault to wait for traffic: the
        // workers send few bytes between their batches.
        mean_gap: s.fault_window * 2 / 5 / per_proxy as u32,
        max_cut_bytes: 2048,
        short_stall: Duration::from_millis(400),
        long_share: 0.05,
        long_stall: (s.lease, s.lease * 5 / 4),
    };
    let mut proxies = Vec::new();
    for i in 0..s.workers {
        let name = format!("proxy{i}");
        let log = dir.join(format!("faults-{name}.log"));
        let plan = spec.draw(s.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9));
        proxies.push(FaultProxy::start(&name, upstream, plan, &log).await);
    }
    let env = |i: usize| WorkerEnv {
        name: format!("w{i}"),
        store: format!("postgres://postgres@{}/postgres", proxies[i].addr()),
        base_url: server.base_url().to_owned(),
        dir: dir.clone(),
        lease_ms: s.lease.as_millis() as u64,
        offset_ms: if i == s.workers - 1 { s.skew_ms } else { 0 },
        poll_ms: s.poll.as_millis() as u64,
        deadline_ms: s.deadline.as_millis() as u64,
        seed: s.seed,
        faults_until_ms: 0,
        faults: 0,
        mean_gap_ms: 0,
        max_handlers: s.max_handlers,
    };
    let stop_faults = || proxies.iter().for_each(|p| p.stop_faults());
    let out = fleet::run(
        fleet::Run {
            settings: &s,
            dir: &dir,
            jobs: &jobs,
            server: &server,
            entry: ENTRY,
            env: &env,
            tracked,
        },
        || {
            let direct = direct.clone();
            async move { direct.pending().await.ok() }
        },
        &stop_faults,
    )
    .await;
    drop(proxies);
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    fleet::assert_clean(&s, &out, &kinds, s.faults_per_kind, &dir);
    campaign::remove_dir(&dir);
}

/// The proxy's commit cut: the row is written, the client hears nothing
/// but a closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_cuts_after_a_commit_that_stays_committed() {
    let cluster = Cluster::start("proxy-commit");
    let dir = campaign::campaign_dir("proxy-commit");
    let upstream = SocketAddr::from(([127, 0, 0, 1], cluster.port));
    let plan = vec![faultproxy::Fault {
        gap: Duration::ZERO,
        kind: Kind::AfterCommit,
        bytes: 0,
        stall: Duration::ZERO,
    }];
    let log = dir.join("faults-p.log");
    let proxy = FaultProxy::start("p", upstream, plan, &log).await;
    let url = cluster.url();
    let (direct, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    direct
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();

    let via = format!("postgres://postgres@{}/postgres", proxy.addr());
    let (client, conn) = tokio_postgres::connect(&via, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    // Reads pass; the first write's reply is withheld and the connection cut.
    assert_eq!(client.query("SELECT 1", &[]).await.unwrap().len(), 1);
    let err = client
        .execute("INSERT INTO t VALUES (7)", &[])
        .await
        .unwrap_err();
    assert!(
        err.is_closed() || err.to_string().contains("closed"),
        "{err}"
    );
    let _ = conn.await;
    let rows = direct.query("SELECT v FROM t", &[]).await.unwrap();
    let got: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, vec![7]);
    let lines = campaign::check::read_fault_logs(&dir);
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0].source.as_str(), lines[0].kind.as_str()),
        ("p", "after-commit")
    );
    assert_eq!(proxy.faults_left(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The proxy's other faults: a stall holds the connection and lets it go
/// on; a cut after a number of bytes drops it in the middle of an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_stalls_and_cuts_after_bytes_as_planned() {
    let cluster = Cluster::start("proxy-cut");
    let dir = campaign::campaign_dir("proxy-cut");
    let upstream = SocketAddr::from(([127, 0, 0, 1], cluster.port));
    let fault = |kind, bytes, stall| faultproxy::Fault {
        gap: Duration::ZERO,
        kind,
        bytes,
        stall,
    };
    let plan = vec![
        fault(Kind::Stall, 0, Duration::from_millis(300)),
        fault(Kind::Cut, 100_000, Duration::ZERO),
    ];
    let proxy = FaultProxy::start("p", upstream, plan, &dir.join("faults-p.log")).await;
    let via = format!("postgres://postgres@{}/postgres", proxy.addr());
    let (client, conn) = tokio_postgres::connect(&via, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    // The stall was taken by the first bytes: the connection went on.
    let small = client.query_one("SELECT 'small'::text", &[]).await.unwrap();
    assert_eq!(small.get::<_, String>(0), "small");
    // 200,000 bytes to answer: cut after 100,000 more.
    let err = client
        .query_one("SELECT repeat('x', 200000)", &[])
        .await
        .unwrap_err();
    assert!(
        err.is_closed() || err.to_string().contains("closed"),
        "{err}"
    );
    let _ = conn.await;
    let lines = campaign::check::read_fault_logs(&dir);
    let got: Vec<(&str, u64)> = lines
        .iter()
        .map(|l| (l.kind.as_str(), l.lasted_ms))
        .collect();
    assert_eq!(got, [("stall", 300), ("cut", 0)]);
    assert!(lines[0].at_ms <= lines[1].at_ms);
    assert_eq!(proxy.faults_left(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
