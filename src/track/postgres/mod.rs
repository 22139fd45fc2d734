//! [`PostgresStore`]: tracked jobs in PostgreSQL, shared by a fleet.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::store::NewJob;
use crate::error::Error;

mod ops;
use crate::transport::tls::{self, TlsRoots};

mod embedded {
    refinery::embed_migrations!("src/track/migrations/postgres");
}

/// The advisory lock that serialises schema migrations of many workers.
const MIGRATION_LOCK: i64 = 0x6765_6e68_616e_6365;

/// How long a batch of inserts may wait for its answer.
const INSERT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type Inserts = (Vec<NewJob>, oneshot::Sender<Result<(), Error>>);

/// Tracked jobs in PostgreSQL: workers that share it split the jobs
/// between them.
///
/// Claims take due jobs with `SELECT … FOR UPDATE SKIP LOCKED`, so two
/// workers never claim the same job; each worker keeps one heartbeat row
/// alive, and a dead worker's jobs are taken over once its heartbeat
/// lapses. Every time that decides ownership (heartbeats, when a job is
/// due, deadlines) is the database's `now()`: the clocks of the workers'
/// hosts do not matter. Every operation is one statement for a whole batch
/// (ids as arrays), and `track` calls that come together share one
/// `INSERT`. A lost connection (a restarted server) is made again on the
/// next operation, and so is one whose statement was given up on (the
/// tracker's store timeout), so a connection that hangs is never used
/// again; until then operations fail with [`Error::is_store`] and the
/// tracker retries them.
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
    client: Mutex<Option<Arc<Conn>>>,
    statements: AtomicU64,
}

/// A connection and the statements prepared on it: each SQL text is
/// parsed once a connection, then only bound and executed (one round trip
/// instead of two).
struct Conn {
    client: Client,
    prepared: std::sync::Mutex<HashMap<String, Statement>>,
}

impl Conn {
    fn new(client: Client) -> Conn {
        Conn {
            client,
            prepared: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// `sql` prepared on this connection (once).
    async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let cached = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .cloned();
        if let Some(s) = cached {
            return Ok(s);
        }
        let s = self.client.prepare(sql).await?;
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql.to_owned(), s.clone());
        Ok(s)
    }
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
        *inner.client.lock().await = Some(Arc::new(Conn::new(client)));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(insert_loop(Arc::clone(&inner), rx));
        Ok(PostgresStore { inner, inserts: tx })
    }

    /// SQL statements sent so far.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
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
        // Prepared statements are planned for their values at each
        // execution: a generic plan, made for arrays of unknown length,
        // joins a batch of ids to its outcomes by a nested loop. Servers
        // before PostgreSQL 12 have no such setting and plan as they do.
        self.statements.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = client
            .batch_execute("SET plan_cache_mode = force_custom_plan")
            .await
        {
            tracing::debug!(error = %e, "postgres: plan_cache_mode not set");
        }
        Ok(client)
    }

    /// The connection, made again if it was lost.
    async fn client(&self) -> Result<Arc<Conn>, Error> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.client.is_closed() {
                return Ok(Arc::clone(c));
            }
        }
        *slot = None;
        let c = Arc::new(Conn::new(self.open().await?));
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    fn err(&self, e: tokio_postgres::Error) -> Error {
        pg_err(&self.target, e)
    }

    /// One statement that returns rows, on the connection (made again if
    /// it was lost), counted in [`statements`](PostgresStore::statements).
    /// A statement given up on before its answer came (the caller's
    /// timeout) takes the connection with it: one that hangs is never
    /// used again.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        let client = self.client().await?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        let guard = Unanswered {
            inner: self,
            client: Some(Arc::clone(&client)),
        };
        let r = match client.statement(sql).await {
            Ok(s) => client.client.query(&s, params).await,
            Err(e) => Err(e),
        };
        guard.answered();
        r.map_err(|e| self.err(e))
    }

    /// One statement without rows, as [`query`](Inner::query).
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let client = self.client().await?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        let guard = Unanswered {
            inner: self,
            client: Some(Arc::clone(&client)),
        };
        let r = match client.statement(sql).await {
            Ok(s) => client.client.execute(&s, params).await,
            Err(e) => Err(e),
        };
        guard.answered();
        r.map_err(|e| self.err(e))
    }

    /// Stops using `client` (the next statement connects again).
    fn discard(&self, client: &Arc<Conn>) {
        if let Ok(mut slot) = self.client.try_lock() {
            if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
                *slot = None;
            }
        }
    }
}

/// Discards the connection of a statement dropped before its answer.
struct Unanswered<'a> {
    inner: &'a Inner,
    client: Option<Arc<Conn>>,
}

impl Unanswered<'_> {
    fn answered(mut self) {
        self.client = None;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            self.inner.discard(&c);
        }
    }
}

/// `track` calls that come together share one statement.
async fn insert_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Inserts>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = match tokio::time::timeout(
            INSERT_TIMEOUT,
            ops::insert(&inner, batch.iter().flat_map(|(j, _)| j)),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Error::store(format!(
                "postgres at {}: an insert got no answer within {} s",
                inner.target,
                INSERT_TIMEOUT.as_secs()
            ))),
        };
        for (_, reply) in batch {
            let _ = reply.send(result.clone());
        }
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
