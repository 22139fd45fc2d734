//! [`SqliteStore`]: tracked jobs in an embedded SQLite file (WAL).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::SystemTime;

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::store::{dur_ms, to_ms, NewJob, StoreFuture};
use crate::error::Error;

mod ops;
mod schema;

use self::schema::open_conn;

type Work = Box<dyn FnOnce(&mut Connection, &AtomicU64) + Send>;

enum Op {
    /// Inserts are written together: many `track` calls, one transaction.
    Insert(Vec<NewJob>, i64, oneshot::Sender<Result<(), Error>>),
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
/// Several processes may share a file: each waits for the others' locks
/// (the busy timeout is set before anything else), and the schema is read
/// and migrated inside one exclusive transaction, so processes opening a
/// new or old file at once all succeed. Times are the system's wall clock,
/// read at each operation.
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
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    statements: Arc<AtomicU64>,
}

/// The connection thread's answer. Waited for on tokio's blocking pool,
/// which tells a paused test clock that work is under way (it would
/// otherwise jump ahead and time the operation out).
async fn reply<T: Send + 'static>(rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
    let stopped = || Error::store("the sqlite thread stopped");
    tokio::task::spawn_blocking(move || rx.blocking_recv())
        .await
        .map_err(|_| stopped())?
        .map_err(|_| stopped())?
}

fn sql_err(e: rusqlite::Error) -> Error {
    Error::store(format!("sqlite: {e}"))
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (or creates) the store in the file at `path`, its folder
    /// included, and brings its schema to this crate's version.
    ///
    /// # Errors
    ///
    /// [`Error::is_store`]: the folder cannot be made (the error names
    /// it), the file cannot be opened, or it holds a
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
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn insert_jobs(&self, jobs: Vec<NewJob>, now: SystemTime) -> StoreFuture<'_, ()> {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Op::Insert(jobs, to_ms(now), tx));
        Box::pin(async move {
            if sent.is_err() {
                return Err(Error::store("the sqlite thread stopped"));
            }
            reply(rx).await
        })
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
            reply(rx).await
        })
    }
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
            Op::Insert(jobs, now, reply) => {
                let mut batch = vec![(jobs, now, reply)];
                while let Ok(op) = rx.try_recv() {
                    match op {
                        Op::Insert(jobs, now, reply) => batch.push((jobs, now, reply)),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let result = insert(
                    conn,
                    count,
                    batch
                        .iter()
                        .flat_map(|(j, now, _)| j.iter().map(|j| (j, *now))),
                );
                for (_, _, reply) in batch {
                    let _ = reply.send(result.clone());
                }
            }
        }
    }
}

fn insert<'a>(
    conn: &mut Connection,
    count: &AtomicU64,
    jobs: impl Iterator<Item = (&'a NewJob, i64)>,
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
    jobs: impl Iterator<Item = (&'a NewJob, i64)>,
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
        for (j, now) in jobs {
            let deadline = now.saturating_add(dur_ms(j.timeout));
            stmt.execute(params![j.id, j.meta, now, deadline])
                .map_err(sql_err)?;
            n += 1;
        }
    }
    tx.commit().map_err(sql_err)?;
    count.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
