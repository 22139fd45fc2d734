//! Opening a SQLite store's file and bringing its schema forward, safely
//! when many processes open it at once.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::sql_err;
use crate::error::Error;

/// The schema, one migration a version; the file's `user_version` counts
/// those applied (as `rusqlite_migration` counted them before).
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/V1__jobs.sql"),
    include_str!("../migrations/sqlite/V2__status.sql"),
    include_str!("../migrations/sqlite/V3__workers.sql"),
];

/// How long a statement waits for another process's lock.
const BUSY: Duration = Duration::from_secs(30);

/// Opens `path`: the busy timeout first, so that every later step waits
/// for other processes instead of failing; then WAL; then the migrations,
/// read and applied inside one exclusive transaction, so that processes
/// opening a new or old file at once apply each migration once.
pub(super) fn open_conn(path: &Path) -> Result<Connection, Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::store(format!(
                "sqlite: cannot create the folder {}",
                parent.display()
            ))
            .with_source(e)
        })?;
    }
    let mut conn = Connection::open(path).map_err(sql_err)?;
    conn.busy_timeout(BUSY).map_err(sql_err)?;
    // Every transaction takes the write lock as it begins, so that one
    // never fails for being unable to upgrade a read.
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    // Turning WAL on, and the first read of a WAL file another process is
    // still setting up, can answer "database is locked" without waiting
    // on the busy timeout: such steps are tried again until it runs out.
    while_busy(|| conn.pragma_update(None, "journal_mode", "WAL"))?;
    // Completions, acknowledgements and heartbeats lost to a power cut
    // only repeat work (a poll, a delivery); inserts are made durable one
    // by one, since `track` has promised them.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_err)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Runs `step` again while it answers that the database is busy, for as
/// long as the busy timeout, with short pauses: for the steps SQLite does
/// not make wait on the busy timeout itself.
fn while_busy<T>(mut step: impl FnMut() -> rusqlite::Result<T>) -> Result<T, Error> {
    let until = std::time::Instant::now() + BUSY;
    let mut pause = Duration::from_millis(5);
    loop {
        match step() {
            Err(e) if is_busy(&e) && std::time::Instant::now() < until => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            r => return r.map_err(sql_err),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn migrate(conn: &mut Connection) -> Result<(), Error> {
    // Begun under `while_busy`, then held to the end: nothing after it can
    // meet another process's lock.
    while_busy(|| conn.execute_batch("BEGIN EXCLUSIVE"))?;
    match migrate_locked(conn) {
        Ok(()) => conn.execute_batch("COMMIT").map_err(sql_err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The migrations still to apply, applied, inside the exclusive
/// transaction `migrate` holds.
fn migrate_locked(tx: &Connection) -> Result<(), Error> {
    let version: i64 = while_busy(|| tx.query_row("PRAGMA user_version", [], |r| r.get(0)))?;
    let version = usize::try_from(version).unwrap_or(0);
    if version > MIGRATIONS.len() {
        return Err(Error::store_schema(
            "the sqlite store has a schema newer than this version of goenhance-jobs",
        ));
    }
    if version == MIGRATIONS.len() {
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql).map_err(|e| {
            Error::store(format!("sqlite migration {} failed", i + 1)).with_source(e)
        })?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
        .map_err(sql_err)?;
    Ok(())
}
