//! [`SqliteStore`]: tracked jobs in an embedded SQLite file (WAL).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{MigrationDefinitionError, Migrations, M};
use tokio::sync::oneshot;

use super::store::{ClaimedJob, Finished, Learned, NewJob, StatusChange, StoreFuture, TrackStore};
use crate::error::Error;

/// The schema, one migration a version; applied in order by `open`.
const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/sqlite/V1__jobs.sql")),
    M::up(include_str!("migrations/sqlite/V2__status.sql")),
];

type Work = Box<dyn FnOnce(&mut Connection, &AtomicU64) + Send>;

enum Op {
    /// Inserts are written together: many `track` calls, one transaction.
    Insert(Vec<NewJob>, oneshot::Sender<Result<(), Error>>),
    Other(Work),
}

/// Tracked jobs in a SQLite file: the embedded default for one process
/// (or several on one machine).
///
/// The file is opened in WAL mode. Inserts are written with
/// `synchronous = FULL`, so a job is on disk when
/// [`Tracker::track`](super::Tracker::track) returns, and concurrent `track`
/// calls share one transaction; everything else with `NORMAL`, which a
/// process crash cannot undo and a power cut can only make repeat (a poll,
/// a delivery). One thread owns the
/// connection; the schema is created and migrated by [`open`](Self::open).
///
/// ```
/// use goenhance_jobs::track::{SqliteStore, TrackStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), goenhance_jobs::Error> {
/// # let dir = std::env::temp_dir().join(format!("ge-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let store = SqliteStore::open(dir.join("jobs.db")).await?;
/// assert_eq!(store.pending().await?, 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    tx: mpsc::Sender<Op>,
    path: Arc<PathBuf>,
    statements: Arc<AtomicU64>,
}

fn sql_err(e: rusqlite::Error) -> Error {
    Error::store(format!("sqlite: {e}"))
}

fn ms_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (or creates) the store in the file at `path`, and brings its
    /// schema to this crate's version.
    ///
    /// # Errors
    ///
    /// [`Error::is_store`]: the file cannot be opened, or it holds a
    /// schema newer than this crate (written by a later version), or a
    /// migration failed.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, Error> {
        let path = path.as_ref().to_path_buf();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel::<Op>();
        let statements = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&statements);
        let p = path.clone();
        std::thread::Builder::new()
            .name("goenhance-sqlite".to_owned())
            .spawn(move || match open_conn(&p) {
                Ok(mut conn) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(&mut conn, &rx, &count);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::store("cannot start the sqlite thread").with_source(e))?;
        ready_rx
            .await
            .map_err(|_| Error::store("the sqlite thread stopped"))??;
        Ok(SqliteStore {
            tx,
            path: Arc::new(path),
            statements,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQL statements run so far, transaction control included.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &AtomicU64) -> Result<T, Error> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Op::Other(Box::new(move |conn, count| {
            let _ = tx.send(f(conn, count));
        })));
        Box::pin(async move {
            if sent.is_err() {
                return Err(Error::store("the sqlite thread stopped"));
            }
            rx.await
                .map_err(|_| Error::store("the sqlite thread stopped"))?
        })
    }
}

fn open_conn(path: &Path) -> Result<Connection, Error> {
    let mut conn = Connection::open(path).map_err(sql_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_err)?;
    // Completions, acknowledgements and leases lost to a power cut only
    // repeat work (a poll, a delivery); inserts are made durable one by one
    // below, since `track` has promised them.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_err)?;
    Migrations::from_slice(MIGRATIONS)
        .to_latest(&mut conn)
        .map_err(|e| match e {
            rusqlite_migration::Error::MigrationDefinition(
                MigrationDefinitionError::DatabaseTooFarAhead,
            ) => Error::store_schema(
                "the sqlite store has a schema newer than this version of goenhance-jobs",
            ),
            other => Error::store("sqlite migration failed").with_source(other),
        })?;
    Ok(conn)
}

/// The connection's thread: runs operations in order, inserts that queue
/// up together in one transaction.
fn serve(conn: &mut Connection, rx: &mpsc::Receiver<Op>, count: &AtomicU64) {
    let mut next = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        match op {
            Op::Other(work) => work(conn, count),
            Op::Insert(jobs, reply) => {
                let mut batch = vec![(jobs, reply)];
                while let Ok(op) = rx.try_recv() {
                    match op {
                        Op::Insert(jobs, reply) => batch.push((jobs, reply)),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let result = insert(conn, count, batch.iter().flat_map(|(j, _)| j));
                for (_, reply) in batch {
                    let _ = reply.send(result.clone());
                }
            }
        }
    }
}

fn insert<'a>(
    conn: &mut Connection,
    count: &AtomicU64,
    jobs: impl Iterator<Item = &'a NewJob>,
) -> Result<(), Error> {
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_err)?;
    let result = insert_tx(conn, count, jobs);
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_err)?;
    count.fetch_add(2, Ordering::Relaxed);
    result
}

fn insert_tx<'a>(
    conn: &mut Connection,
    count: &AtomicU64,
    jobs: impl Iterator<Item = &'a NewJob>,
) -> Result<(), Error> {
    let tx = conn.transaction().map_err(sql_err)?;
    let mut n = 2;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at) \
                 VALUES (?1, ?2, ?3, ?4, ?3) ON CONFLICT (id) DO NOTHING",
            )
            .map_err(sql_err)?;
        for j in jobs {
            stmt.execute(params![j.id, j.meta, j.tracked_at, j.deadline])
                .map_err(sql_err)?;
            n += 1;
        }
    }
    tx.commit().map_err(sql_err)?;
    count.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

impl TrackStore for SqliteStore {
    fn insert(&self, jobs: Vec<NewJob>) -> StoreFuture<'_, ()> {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Op::Insert(jobs, tx));
        Box::pin(async move {
            if sent.is_err() {
                return Err(Error::store("the sqlite thread stopped"));
            }
            rx.await
                .map_err(|_| Error::store("the sqlite thread stopped"))?
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
        let worker = worker.to_owned();
        self.run(move |conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE goenhance_jobs SET lease_owner = ?1, lease_until = ?2, due_at = ?2, \
                       deliveries = deliveries + (state = 1) \
                     WHERE id IN (SELECT id FROM goenhance_jobs \
                       WHERE state < 2 AND (due_at <= ?3 OR (?5 AND lease_owner = ?1)) \
                       ORDER BY due_at LIMIT ?4) \
                     RETURNING id, meta, tracked_at, deadline, outcome, deliveries, \
                       last_status, last_change, last_polls",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(
                    params![worker, lease_until, now, limit as i64, take_own],
                    |r| {
                        Ok(ClaimedJob {
                            id: r.get(0)?,
                            meta: r.get(1)?,
                            tracked_at: r.get(2)?,
                            deadline: r.get(3)?,
                            outcome: r.get(4)?,
                            deliveries: ms_u32(r.get(5)?),
                            last_status: r.get(6)?,
                            last_change: r.get(7)?,
                            last_polls: r.get::<_, Option<i64>>(8)?.map(ms_u32),
                        })
                    },
                )
                .map_err(sql_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
        })
    }

    fn renew<'a>(&'a self, worker: &'a str, lease_until: i64) -> StoreFuture<'a, Vec<String>> {
        let worker = worker.to_owned();
        self.run(move |conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE goenhance_jobs SET lease_until = ?2, due_at = ?2 \
                     WHERE lease_owner = ?1 AND state < 2 RETURNING id",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![worker, lease_until], |r| r.get(0))
                .map_err(sql_err)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(sql_err)
        })
    }

    fn complete<'a>(
        &'a self,
        worker: &'a str,
        now: i64,
        jobs: Vec<Finished>,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        let worker = worker.to_owned();
        self.run(move |conn, count| {
            let tx = conn.transaction().map_err(sql_err)?;
            let mut held = Vec::with_capacity(jobs.len());
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE goenhance_jobs SET state = 1, outcome = ?2, finished_at = ?4, \
                           deliveries = deliveries + 1 \
                         WHERE id = ?1 AND state = 0 AND lease_owner = ?3 RETURNING deliveries",
                    )
                    .map_err(sql_err)?;
                for f in &jobs {
                    let d: Option<i64> = stmt
                        .query_row(params![f.id, f.outcome, worker, now], |r| r.get(0))
                        .optional()
                        .map_err(sql_err)?;
                    if let Some(d) = d {
                        held.push((f.id.clone(), ms_u32(d)));
                    }
                }
            }
            tx.commit().map_err(sql_err)?;
            count.fetch_add(jobs.len() as u64 + 2, Ordering::Relaxed);
            Ok(held)
        })
    }

    fn save_status<'a>(&'a self, worker: &'a str, jobs: Vec<StatusChange>) -> StoreFuture<'a, ()> {
        let worker = worker.to_owned();
        self.run(move |conn, count| {
            let tx = conn.transaction().map_err(sql_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE goenhance_jobs SET last_status = ?2, last_change = ?3, \
                           last_polls = ?5 \
                         WHERE id = ?1 AND state = 0 AND lease_owner = ?4",
                    )
                    .map_err(sql_err)?;
                for c in &jobs {
                    stmt.execute(params![c.id, c.status, c.at, worker, c.polls])
                        .map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)?;
            count.fetch_add(jobs.len() as u64 + 2, Ordering::Relaxed);
            Ok(())
        })
    }

    fn ack(&self, ids: Vec<String>, now: i64) -> StoreFuture<'_, ()> {
        self.run(move |conn, count| {
            // One statement a batch: the ids as a JSON array.
            let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
            count.fetch_add(1, Ordering::Relaxed);
            conn.prepare_cached(
                "UPDATE goenhance_jobs SET state = 2, delivered_at = ?2, lease_owner = NULL \
                 WHERE state = 1 AND id IN (SELECT value FROM json_each(?1))",
            )
            .and_then(|mut s| s.execute(params![list, now]))
            .map_err(sql_err)?;
            Ok(())
        })
    }

    fn retry<'a>(&'a self, worker: &'a str, jobs: Vec<(String, i64)>) -> StoreFuture<'a, ()> {
        let worker = worker.to_owned();
        self.run(move |conn, count| {
            let tx = conn.transaction().map_err(sql_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE goenhance_jobs SET due_at = ?2, lease_owner = NULL, lease_until = 0 \
                         WHERE id = ?1 AND state = 1 AND lease_owner = ?3",
                    )
                    .map_err(sql_err)?;
                for (id, at) in &jobs {
                    stmt.execute(params![id, at, worker]).map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)?;
            count.fetch_add(jobs.len() as u64 + 2, Ordering::Relaxed);
            Ok(())
        })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        self.run(|conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM goenhance_jobs WHERE state < 2",
                    [],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn delivered(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        self.run(|conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, outcome FROM goenhance_jobs WHERE state = 2 \
                     ORDER BY tracked_at, rowid",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    ))
                })
                .map_err(sql_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
        })
    }

    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>> {
        self.run(|conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            let mut stmt = conn
                .prepare_cached("SELECT job_type, samples, mean, m2 FROM goenhance_learned")
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Learned {
                        job_type: r.get(0)?,
                        samples: ms_u32(r.get(1)?),
                        mean: r.get(2)?,
                        m2: r.get(3)?,
                    })
                })
                .map_err(sql_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
        })
    }

    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()> {
        self.run(move |conn, count| {
            let tx = conn.transaction().map_err(sql_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO goenhance_learned (job_type, samples, mean, m2) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (job_type) DO UPDATE SET \
                         samples = excluded.samples, mean = excluded.mean, m2 = excluded.m2",
                    )
                    .map_err(sql_err)?;
                for l in &learned {
                    stmt.execute(params![l.job_type, l.samples, l.mean, l.m2])
                        .map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)?;
            count.fetch_add(learned.len() as u64 + 2, Ordering::Relaxed);
            Ok(())
        })
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
