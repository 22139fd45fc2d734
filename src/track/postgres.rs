//! [`PostgresStore`]: tracked jobs in PostgreSQL, shared by a fleet.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::store::{ClaimedJob, Finished, Learned, NewJob, StatusChange, StoreFuture, TrackStore};
use crate::error::Error;
use crate::transport::tls::{self, TlsRoots};

mod embedded {
    refinery::embed_migrations!("src/track/migrations/postgres");
}

/// The advisory lock that serialises schema migrations of many workers.
const MIGRATION_LOCK: i64 = 0x6765_6e68_616e_6365;

type Inserts = (Vec<NewJob>, oneshot::Sender<Result<(), Error>>);

/// Tracked jobs in PostgreSQL: workers that share it split the jobs by
/// leases.
///
/// Claims take due jobs with `SELECT … FOR UPDATE SKIP LOCKED`, so two
/// workers never claim the same job; leases are renewed while held and a
/// dead worker's jobs are taken over once its leases lapse. Every operation
/// is one statement for a whole batch (ids as arrays), and `track` calls
/// that come together share one `INSERT`. A lost connection (a restarted
/// server) is made again on the next operation; until then operations fail
/// with [`Error::is_store`] and the tracker retries them.
///
/// The connection string is never shown: `Debug` and errors name only the
/// host, port and database.
///
/// # TLS
///
/// With `sslmode=require` in the connection string, the connection is made
/// over TLS (rustls, as the transport's) and the server's certificate is
/// verified: it must chain to the web PKI roots, the platform's store
/// (which honours `SSL_CERT_FILE`) or a CA given to
/// [`connect_trusting`](PostgresStore::connect_trusting) — a managed
/// database's CA, say — and name the host connected to. That is stricter
/// than libpq's `require`, which encrypts without verifying. Without
/// `sslmode`, or with `prefer` or `disable`, the connection is plain, as
/// with earlier versions of this crate (libpq's `prefer` would try TLS
/// first, unverified); `verify-ca` and `verify-full` are not accepted by
/// the driver's parser: `require` is what they mean here.
///
/// ```no_run
/// use goenhance_jobs::track::{PostgresStore, Tracker};
/// use goenhance_jobs::Client;
///
/// # #[tokio::main] async fn main() -> Result<(), goenhance_jobs::Error> {
/// let store = PostgresStore::connect("postgres://jobs:secret@db.internal/jobs").await?;
/// let tracker = Tracker::builder(Client::from_env()?, store).build();
/// # drop(tracker);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    inserts: mpsc::UnboundedSender<Inserts>,
}

struct Inner {
    config: Config,
    /// TLS for `sslmode=require`; `None` connects in plain.
    tls: Option<MakeRustlsConnect>,
    /// Where, for messages: host, port and database, never the password.
    target: String,
    client: Mutex<Option<Arc<Client>>>,
    statements: AtomicU64,
}

fn describe(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:pass@host/db`
    /// or `host=… user=…`), and brings its schema to this crate's version
    /// (several workers may do so at once). TLS as `sslmode` says (see
    /// [TLS](PostgresStore#tls)).
    ///
    /// # Errors
    ///
    /// [`Error::is_store`]: the string is not valid (its text is not
    /// repeated), the server cannot be reached or refuses the connection,
    /// its certificate is not trusted, or its schema is newer than this
    /// crate.
    pub async fn connect(url: &str) -> Result<PostgresStore, Error> {
        PostgresStore::open(url, &[]).await
    }

    /// [`connect`](PostgresStore::connect), also trusting the CA
    /// certificates in `ca_pem` (one or more `CERTIFICATE` sections) for
    /// `sslmode=require`: the CA of a managed database, or of your own.
    ///
    /// ```no_run
    /// use goenhance_jobs::track::PostgresStore;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), goenhance_jobs::Error> {
    /// let ca = std::fs::read("/etc/ssl/db-ca.pem").expect("the database's CA");
    /// let store = PostgresStore::connect_trusting(
    ///     "postgres://jobs:secret@db.internal/jobs?sslmode=require",
    ///     &ca,
    /// )
    /// .await?;
    /// # drop(store);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when `ca_pem` holds no certificate or a
    /// malformed one; else as [`connect`](PostgresStore::connect).
    pub async fn connect_trusting(url: &str, ca_pem: &[u8]) -> Result<PostgresStore, Error> {
        let roots = tls::parse_pem_roots(ca_pem)?;
        PostgresStore::open(url, &roots).await
    }

    async fn open(url: &str, roots: &[CertificateDer<'static>]) -> Result<PostgresStore, Error> {
        let config: Config = url
            .parse()
            .map_err(|_| Error::store("postgres: invalid connection string"))?;
        let target = describe(&config);
        let tls = (config.get_ssl_mode() == SslMode::Require)
            .then(|| MakeRustlsConnect::new(tls::client_config(TlsRoots::default(), roots)));
        let inner = Arc::new(Inner {
            config,
            tls,
            target,
            client: Mutex::new(None),
            statements: AtomicU64::new(0),
        });
        let mut client = inner.open().await?;
        migrate(&mut client, &inner.target).await?;
        *inner.client.lock().await = Some(Arc::new(client));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(insert_loop(Arc::clone(&inner), rx));
        Ok(PostgresStore { inner, inserts: tx })
    }

    /// SQL statements sent so far.
    pub fn statements(&self) -> u64 {
        self.inner.statements.load(Ordering::Relaxed)
    }
}

async fn migrate(client: &mut Client, target: &str) -> Result<(), Error> {
    let err = |e: tokio_postgres::Error| pg_err(target, e);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    let result = embedded::migrations::runner()
        .set_abort_missing(true)
        .run_async(client)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    match result {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            refinery::error::Kind::MissingVersion(_) => Err(Error::store_schema(format!(
                "the postgres store at {target} has a schema newer than this version of goenhance-jobs"
            ))),
            _ => Err(Error::store(format!("postgres migration failed at {target}")).with_source(e)),
        },
    }
}

/// Runs a connection until it ends.
async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "postgres connection ended");
    }
}

fn pg_err(target: &str, e: tokio_postgres::Error) -> Error {
    // The driver's messages name no password; the source keeps the detail.
    let what = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    };
    Error::store(format!("postgres at {target}: {what}")).with_source(e)
}

impl Inner {
    async fn open(&self) -> Result<Client, Error> {
        let err = |e| pg_err(&self.target, e);
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(err)?;
                tokio::spawn(drive(connection));
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(err)?;
                tokio::spawn(drive(connection));
                client
            }
        };
        Ok(client)
    }

    /// The connection, made again if it was lost.
    async fn client(&self) -> Result<Arc<Client>, Error> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(Arc::clone(c));
            }
        }
        *slot = None;
        let c = Arc::new(self.open().await?);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    fn err(&self, e: tokio_postgres::Error) -> Error {
        pg_err(&self.target, e)
    }

    /// One statement that returns rows, on the connection (made again if
    /// it was lost), counted in [`statements`](PostgresStore::statements).
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        let client = self.client().await?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        client.query(sql, params).await.map_err(|e| self.err(e))
    }

    /// One statement without rows, as [`query`](Inner::query).
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let client = self.client().await?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        client.execute(sql, params).await.map_err(|e| self.err(e))
    }
}

/// `track` calls that come together share one statement.
async fn insert_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Inserts>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = insert(&inner, batch.iter().flat_map(|(j, _)| j)).await;
        for (_, reply) in batch {
            let _ = reply.send(result.clone());
        }
    }
}

async fn insert<'a>(inner: &Inner, jobs: impl Iterator<Item = &'a NewJob>) -> Result<(), Error> {
    let (mut ids, mut metas, mut tracked, mut deadlines) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for j in jobs {
        ids.push(j.id.as_str());
        metas.push(j.meta.as_str());
        tracked.push(j.tracked_at);
        deadlines.push(j.deadline);
    }
    inner
        .execute(
            "INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at) \
             SELECT id, meta, t, d, t FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) \
               WITH ORDINALITY AS j(id, meta, t, d, n) ORDER BY n \
             ON CONFLICT (id) DO NOTHING",
            &[&ids, &metas, &tracked, &deadlines],
        )
        .await?;
    Ok(())
}

impl TrackStore for PostgresStore {
    fn insert(&self, jobs: Vec<NewJob>) -> StoreFuture<'_, ()> {
        let (tx, rx) = oneshot::channel();
        let sent = self.inserts.send((jobs, tx));
        Box::pin(async move {
            if sent.is_err() {
                return Err(Error::store("the postgres insert task stopped"));
            }
            rx.await
                .map_err(|_| Error::store("the postgres insert task stopped"))?
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        now: i64,
        lease_until: i64,
        limit: usize,
        take_own: bool,
    ) -> StoreFuture<'a, Vec<ClaimedJob>> {
        Box::pin(async move {
            let inner = &self.inner;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = inner
                .query(
                    "WITH due AS ( \
                       SELECT id FROM goenhance_jobs \
                       WHERE state < 2 AND (due_at <= $3 OR ($5 AND lease_owner = $1)) \
                       ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
                     UPDATE goenhance_jobs j SET lease_owner = $1, lease_until = $2, due_at = $2, \
                       deliveries = j.deliveries + CASE WHEN j.state = 1 THEN 1 ELSE 0 END \
                     FROM due WHERE j.id = due.id \
                     RETURNING j.id, j.meta, j.tracked_at, j.deadline, j.outcome, j.deliveries, \
                       j.last_status, j.last_change, j.last_polls",
                    &[&worker, &lease_until, &now, &limit, &take_own],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| ClaimedJob {
                    id: r.get(0),
                    meta: r.get(1),
                    tracked_at: r.get(2),
                    deadline: r.get(3),
                    outcome: r.get(4),
                    deliveries: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
                    last_status: r.get(6),
                    last_change: r.get(7),
                    last_polls: r
                        .get::<_, Option<i32>>(8)
                        .and_then(|p| u32::try_from(p).ok()),
                })
                .collect())
        })
    }

    fn renew<'a>(&'a self, worker: &'a str, lease_until: i64) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let inner = &self.inner;
            let rows = inner
                .query(
                    "UPDATE goenhance_jobs SET lease_until = $2, due_at = $2 \
                     WHERE lease_owner = $1 AND state < 2 RETURNING id",
                    &[&worker, &lease_until],
                )
                .await?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    fn complete<'a>(
        &'a self,
        worker: &'a str,
        now: i64,
        jobs: Vec<Finished>,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        Box::pin(async move {
            let inner = &self.inner;
            let ids: Vec<&str> = jobs.iter().map(|f| f.id.as_str()).collect();
            let outcomes: Vec<&str> = jobs.iter().map(|f| f.outcome.as_str()).collect();
            let rows = inner.query(
                    "UPDATE goenhance_jobs j SET state = 1, outcome = f.outcome, finished_at = $3, \
                       deliveries = j.deliveries + 1 \
                     FROM unnest($1::text[], $2::text[]) AS f(id, outcome) \
                     WHERE j.id = ANY($1) AND j.id = f.id AND j.state = 0 AND j.lease_owner = $4 \
                     RETURNING j.id, j.deliveries",
                    &[&ids, &outcomes, &now, &worker],
            ).await?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get(0), u32::try_from(r.get::<_, i32>(1)).unwrap_or(0)))
                .collect())
        })
    }

    fn save_status<'a>(&'a self, worker: &'a str, jobs: Vec<StatusChange>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let ids: Vec<&str> = jobs.iter().map(|c| c.id.as_str()).collect();
            let statuses: Vec<&str> = jobs.iter().map(|c| c.status.as_str()).collect();
            let ats: Vec<i64> = jobs.iter().map(|c| c.at).collect();
            let polls: Vec<i32> = jobs
                .iter()
                .map(|c| i32::try_from(c.polls).unwrap_or(i32::MAX))
                .collect();
            inner
                .execute(
                    "UPDATE goenhance_jobs j SET last_status = f.status, last_change = f.at, \
                       last_polls = f.polls \
                     FROM unnest($1::text[], $2::text[], $3::int8[], $5::int4[]) \
                       AS f(id, status, at, polls) \
                     WHERE j.id = ANY($1) AND j.id = f.id AND j.state = 0 AND j.lease_owner = $4",
                    &[&ids, &statuses, &ats, &worker, &polls],
                )
                .await?;
            Ok(())
        })
    }

    fn ack(&self, ids: Vec<String>, now: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            inner
                .execute(
                    "UPDATE goenhance_jobs SET state = 2, delivered_at = $2, lease_owner = NULL \
                     WHERE state = 1 AND id = ANY($1)",
                    &[&ids, &now],
                )
                .await?;
            Ok(())
        })
    }

    fn retry<'a>(&'a self, worker: &'a str, jobs: Vec<(String, i64)>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let ids: Vec<&str> = jobs.iter().map(|(id, _)| id.as_str()).collect();
            let ats: Vec<i64> = jobs.iter().map(|(_, at)| *at).collect();
            inner.execute(
                    "UPDATE goenhance_jobs j SET due_at = f.at, lease_owner = NULL, lease_until = 0 \
                     FROM unnest($1::text[], $2::int8[]) AS f(id, at) \
                     WHERE j.id = ANY($1) AND j.id = f.id AND j.state = 1 AND j.lease_owner = $3",
                    &[&ids, &ats, &worker],
            ).await?;
            Ok(())
        })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let inner = &self.inner;
            let rows = inner
                .query("SELECT count(*) FROM goenhance_jobs WHERE state < 2", &[])
                .await?;
            let count: i64 = rows.first().map_or(0, |r| r.get(0));
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn delivered(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            let inner = &self.inner;
            let rows = inner
                .query(
                    "SELECT id, coalesce(outcome, '') FROM goenhance_jobs WHERE state = 2 \
                     ORDER BY tracked_at, seq",
                    &[],
                )
                .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>> {
        Box::pin(async move {
            let inner = &self.inner;
            let rows = inner
                .query(
                    "SELECT job_type, samples, mean, m2 FROM goenhance_learned",
                    &[],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| Learned {
                    job_type: r.get(0),
                    samples: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
                    mean: r.get(2),
                    m2: r.get(3),
                })
                .collect())
        })
    }

    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let types: Vec<&str> = learned.iter().map(|l| l.job_type.as_str()).collect();
            let samples: Vec<i32> = learned
                .iter()
                .map(|l| i32::try_from(l.samples).unwrap_or(i32::MAX))
                .collect();
            let means: Vec<f64> = learned.iter().map(|l| l.mean).collect();
            let m2s: Vec<f64> = learned.iter().map(|l| l.m2).collect();
            inner
                .execute(
                    "INSERT INTO goenhance_learned (job_type, samples, mean, m2) \
                     SELECT * FROM unnest($1::text[], $2::int4[], $3::float8[], $4::float8[]) \
                     ON CONFLICT (job_type) DO UPDATE SET samples = excluded.samples, \
                       mean = excluded.mean, m2 = excluded.m2",
                    &[&types, &samples, &means, &m2s],
                )
                .await?;
            Ok(())
        })
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .field("password", &"[redacted]")
            .finish_non_exhaustive()
    }
}
