//! The store's operations as SQL on the connection's thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{sql_err, to_u32, SqliteStore};
use crate::error::Error;
use crate::track::store::{
    dur_ms, from_ms, to_ms, Claim, Claimed, ClaimedJob, EndedJob, Finished, JobState, Learned,
    Listing, NewJob, Retry, StatusChange, StoreFuture, StoredJob, TrackStore, WorkerId,
};

/// Jobs as claims hand them out.
const CLAIMED: &str = "id, meta, tracked_at, deadline, outcome, deliveries, \
                       last_status, last_change, last_polls";

fn text(r: &Row<'_>, i: usize) -> String {
    match r.get_ref(i) {
        Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
        _ => String::new(),
    }
}

fn claimed(r: &Row<'_>) -> rusqlite::Result<ClaimedJob> {
    let mut job = ClaimedJob::new(
        text(r, 0),
        text(r, 1),
        from_ms(r.get(2)?),
        from_ms(r.get(3)?),
    )
    .with_deliveries(to_u32(r.get(5)?));
    if let Some(o) = r.get::<_, Option<String>>(4).ok().flatten() {
        let d = job.deliveries;
        job = job.with_outcome(o, d);
    }
    if let (Some(s), Some(at)) = (
        r.get::<_, Option<String>>(6).ok().flatten(),
        r.get::<_, Option<i64>>(7).ok().flatten(),
    ) {
        let polls = r.get::<_, Option<i64>>(8).ok().flatten().unwrap_or(0);
        job = job.with_last_status(s, from_ms(at), to_u32(polls));
    }
    Ok(job)
}

fn ids_json(ids: &[String]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

fn claim_tx(
    conn: &mut Connection,
    count: &AtomicU64,
    worker: &WorkerId,
    claim: &Claim,
    now: i64,
) -> rusqlite::Result<Option<Vec<ClaimedJob>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut n = 4;
    // Jobs of workers whose heartbeat lapsed are free again.
    tx.prepare_cached(
        "UPDATE goenhance_jobs SET lease_owner = NULL, lease_epoch = NULL \
         WHERE state < 2 AND lease_owner IN \
           (SELECT name FROM goenhance_workers WHERE alive_until <= ?1)",
    )?
    .execute(params![now])?;
    let alive = tx
        .prepare_cached(
            "SELECT 1 FROM goenhance_workers WHERE name = ?1 AND epoch = ?2 AND alive_until > ?3",
        )?
        .query_row(params![worker.name, worker.epoch, now], |_| Ok(()))
        .optional()?
        .is_some();
    if !alive {
        tx.commit()?;
        count.fetch_add(n, Ordering::Relaxed);
        return Ok(None);
    }
    let mut jobs = Vec::new();
    if !claim.recover.is_empty() {
        n += 1;
        let tokens = serde_json::to_string(&claim.recover).unwrap_or_else(|_| "[]".to_owned());
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {CLAIMED} FROM goenhance_jobs WHERE lease_owner = ?1 AND lease_epoch = ?2 \
               AND state < 2 AND claim_token IN (SELECT value FROM json_each(?3))"
        ))?;
        let rows = stmt.query_map(params![worker.name, worker.epoch, tokens], claimed)?;
        for r in rows {
            jobs.push(r?);
        }
    }
    for (state, limit) in [(0, claim.waiting), (1, claim.finished)] {
        if limit == 0 {
            continue;
        }
        n += 1;
        let mut stmt = tx.prepare_cached(&format!(
            "UPDATE goenhance_jobs SET lease_owner = ?1, lease_epoch = ?2, claim_token = ?3, \
               deliveries = deliveries + (state = 1) \
             WHERE id IN (SELECT id FROM goenhance_jobs \
               WHERE state = ?4 AND lease_owner IS NULL AND due_at <= ?5 \
               ORDER BY due_at LIMIT ?6) \
             RETURNING {CLAIMED}"
        ))?;
        let rows = stmt.query_map(
            params![
                worker.name,
                worker.epoch,
                claim.token as i64,
                state,
                now,
                limit as i64
            ],
            claimed,
        )?;
        for r in rows {
            jobs.push(r?);
        }
    }
    tx.commit()?;
    count.fetch_add(n, Ordering::Relaxed);
    Ok(Some(jobs))
}

/// Stores outcomes of jobs `w` holds; `(id, deliveries)` of those it holds.
fn complete_in(
    tx: &Connection,
    w: &WorkerId,
    jobs: &[Finished],
    now: i64,
    n: &mut u64,
) -> Result<Vec<(String, u32)>, Error> {
    let mut held = Vec::with_capacity(jobs.len());
    let mut set = tx
        .prepare_cached(
            "UPDATE goenhance_jobs SET state = 1, outcome = ?2, finished_at = ?5, \
               deliveries = deliveries + 1 \
             WHERE id = ?1 AND state = 0 AND lease_owner = ?3 AND lease_epoch = ?4 \
             RETURNING deliveries",
        )
        .map_err(sql_err)?;
    let mut again = tx
        .prepare_cached(
            "SELECT deliveries FROM goenhance_jobs \
             WHERE id = ?1 AND state = 1 AND lease_owner = ?2 AND lease_epoch = ?3",
        )
        .map_err(sql_err)?;
    for f in jobs {
        *n += 1;
        let mut d: Option<i64> = set
            .query_row(params![f.id, f.outcome, w.name, w.epoch, now], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        if d.is_none() {
            // Stored before and the answer lost: say it again.
            *n += 1;
            d = again
                .query_row(params![f.id, w.name, w.epoch], |r| r.get(0))
                .optional()
                .map_err(sql_err)?;
        }
        if let Some(d) = d {
            held.push((f.id.clone(), to_u32(d)));
        }
    }
    Ok(held)
}

/// Marks finished jobs delivered.
fn ack_in(conn: &Connection, ids: &[String], now: i64) -> Result<(), Error> {
    conn.prepare_cached(
        "UPDATE goenhance_jobs SET state = 2, delivered_at = ?2, ended_at = ?2, \
           lease_owner = NULL, lease_epoch = NULL \
         WHERE state = 1 AND id IN (SELECT value FROM json_each(?1))",
    )
    .and_then(|mut s| s.execute(params![ids_json(ids), now]))
    .map_err(sql_err)?;
    Ok(())
}

impl TrackStore for SqliteStore {
    fn location(&self) -> String {
        self.path().display().to_string()
    }

    fn insert(&self, jobs: Vec<NewJob>, now: SystemTime) -> StoreFuture<'_, ()> {
        self.insert_jobs(jobs, now)
    }

    fn register<'a>(
        &'a self,
        name: &'a str,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, WorkerId> {
        let name = name.to_owned();
        let until = to_ms(now).saturating_add(dur_ms(lease));
        self.run(move |conn, count| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            let epoch: i64 = tx
                .prepare_cached(
                    "INSERT INTO goenhance_workers (name, epoch, alive_until) VALUES (?1, 1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET epoch = epoch + 1, \
                       alive_until = excluded.alive_until \
                     RETURNING epoch",
                )
                .and_then(|mut s| s.query_row(params![name, until], |r| r.get(0)))
                .map_err(sql_err)?;
            tx.prepare_cached(
                "UPDATE goenhance_jobs SET lease_owner = NULL, lease_epoch = NULL \
                 WHERE lease_owner = ?1 AND state < 2",
            )
            .and_then(|mut s| s.execute(params![name]))
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)?;
            count.fetch_add(4, Ordering::Relaxed);
            Ok(WorkerId::new(name, epoch))
        })
    }

    fn heartbeat<'a>(
        &'a self,
        worker: &'a WorkerId,
        lease: Duration,
        now: SystemTime,
    ) -> StoreFuture<'a, bool> {
        let w = worker.clone();
        let now = to_ms(now);
        let until = now.saturating_add(dur_ms(lease));
        self.run(move |conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            let n = conn
                .prepare_cached(
                    "UPDATE goenhance_workers SET alive_until = ?3 \
                     WHERE name = ?1 AND epoch = ?2 AND alive_until > ?4",
                )
                .and_then(|mut s| s.execute(params![w.name, w.epoch, until, now]))
                .map_err(sql_err)?;
            Ok(n == 1)
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a WorkerId,
        claim: Claim,
        now: SystemTime,
    ) -> StoreFuture<'a, Claimed> {
        let w = worker.clone();
        self.run(move |conn, count| {
            match claim_tx(conn, count, &w, &claim, to_ms(now)).map_err(sql_err)? {
                Some(jobs) => Ok(Claimed::new(now, jobs)),
                None => Ok(Claimed::fenced(now)),
            }
        })
    }

    fn complete<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Finished>,
        now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        self.complete_and_ack(worker, jobs, Vec::new(), now)
    }

    fn complete_and_ack<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Finished>,
        delivered: Vec<String>,
        now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        let w = worker.clone();
        let now = to_ms(now);
        self.run(move |conn, count| {
            // One transaction (one commit) for both.
            let tx = conn.transaction().map_err(sql_err)?;
            let mut n = 2;
            if !delivered.is_empty() {
                n += 1;
                ack_in(&tx, &delivered, now)?;
            }
            let held = complete_in(&tx, &w, &jobs, now, &mut n)?;
            tx.commit().map_err(sql_err)?;
            count.fetch_add(n, Ordering::Relaxed);
            Ok(held)
        })
    }

    fn save_status<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<StatusChange>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        let w = worker.clone();
        let now = to_ms(now);
        self.run(move |conn, count| {
            let tx = conn.transaction().map_err(sql_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE goenhance_jobs SET last_status = ?2, last_change = ?3, \
                           last_polls = ?4 \
                         WHERE id = ?1 AND state = 0 AND lease_owner = ?5 AND lease_epoch = ?6",
                    )
                    .map_err(sql_err)?;
                for c in &jobs {
                    let at = now.saturating_sub(dur_ms(c.age));
                    stmt.execute(params![c.id, c.status, at, c.polls, w.name, w.epoch])
                        .map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)?;
            count.fetch_add(jobs.len() as u64 + 2, Ordering::Relaxed);
            Ok(())
        })
    }

    fn ack(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, ()> {
        let now = to_ms(now);
        self.run(move |conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            ack_in(conn, &ids, now)
        })
    }

    fn retry<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Retry>,
        now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        let w = worker.clone();
        let now = to_ms(now);
        self.run(move |conn, count| {
            let tx = conn.transaction().map_err(sql_err)?;
            {
                let mut later = tx
                    .prepare_cached(
                        "UPDATE goenhance_jobs SET due_at = ?2, last_error = ?3, \
                           lease_owner = NULL, lease_epoch = NULL \
                         WHERE id = ?1 AND state = 1 AND lease_owner = ?4 AND lease_epoch = ?5",
                    )
                    .map_err(sql_err)?;
                let mut dead = tx
                    .prepare_cached(
                        "UPDATE goenhance_jobs SET state = 3, ended_at = ?2, last_error = ?3, \
                           lease_owner = NULL, lease_epoch = NULL \
                         WHERE id = ?1 AND state < 2 AND lease_owner = ?4 AND lease_epoch = ?5",
                    )
                    .map_err(sql_err)?;
                for j in &jobs {
                    match j.delay {
                        Some(d) => later.execute(params![
                            j.id,
                            now.saturating_add(dur_ms(d)),
                            j.error,
                            w.name,
                            w.epoch
                        ]),
                        None => dead.execute(params![j.id, now, j.error, w.name, w.epoch]),
                    }
                    .map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)?;
            count.fetch_add(jobs.len() as u64 + 2, Ordering::Relaxed);
            Ok(())
        })
    }

    fn release<'a>(&'a self, worker: &'a WorkerId, ids: Vec<String>) -> StoreFuture<'a, ()> {
        let w = worker.clone();
        self.run(move |conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            conn.prepare_cached(
                "UPDATE goenhance_jobs SET lease_owner = NULL, lease_epoch = NULL \
                 WHERE state < 2 AND lease_owner = ?2 AND lease_epoch = ?3 \
                   AND id IN (SELECT value FROM json_each(?1))",
            )
            .and_then(|mut s| s.execute(params![ids_json(&ids), w.name, w.epoch]))
            .map_err(sql_err)?;
            Ok(())
        })
    }

    fn retry_dead(&self, ids: Vec<String>, now: SystemTime) -> StoreFuture<'_, u64> {
        let now = to_ms(now);
        self.run(move |conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            let n = conn
                .prepare_cached(
                    "UPDATE goenhance_jobs SET state = CASE WHEN outcome IS NULL THEN 0 ELSE 1 END, \
                       deliveries = 0, due_at = ?2, lease_owner = NULL, lease_epoch = NULL \
                     WHERE state = 3 AND id IN (SELECT value FROM json_each(?1))",
                )
                .and_then(|mut s| s.execute(params![ids_json(&ids), now]))
                .map_err(sql_err)?;
            Ok(n as u64)
        })
    }

    fn prune(&self, retention: Duration, now: SystemTime) -> StoreFuture<'_, u64> {
        let before = to_ms(now).saturating_sub(dur_ms(retention));
        self.run(move |conn, count| {
            count.fetch_add(2, Ordering::Relaxed);
            let n = conn
                .prepare_cached("DELETE FROM goenhance_jobs WHERE state >= 2 AND ended_at <= ?1")
                .and_then(|mut s| s.execute(params![before]))
                .map_err(sql_err)?;
            // Workers gone for as long hold nothing.
            conn.prepare_cached(
                "DELETE FROM goenhance_workers WHERE alive_until <= ?1 AND NOT EXISTS \
                   (SELECT 1 FROM goenhance_jobs WHERE state < 2 AND lease_owner = name)",
            )
            .and_then(|mut s| s.execute(params![before]))
            .map_err(sql_err)?;
            Ok(n as u64)
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

    fn list(
        &self,
        listing: Listing,
        after: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<EndedJob>> {
        let state = match listing {
            Listing::Delivered => 2,
            Listing::Dead => 3,
        };
        let after = after.map_or(0, |a| i64::try_from(a).unwrap_or(i64::MAX));
        self.run(move |conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT rowid, id, outcome, last_error, deliveries, ended_at \
                     FROM goenhance_jobs WHERE state = ?1 AND rowid > ?2 ORDER BY rowid LIMIT ?3",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![state, after, limit as i64], |r| {
                    Ok(EndedJob::new(
                        u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        text(r, 1),
                        from_ms(r.get::<_, Option<i64>>(5)?.unwrap_or(0)),
                    )
                    .with(
                        r.get(2).ok().flatten(),
                        r.get(3).ok().flatten(),
                        to_u32(r.get(4)?),
                    ))
                })
                .map_err(sql_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
        })
    }

    fn job(&self, id: &str) -> StoreFuture<'_, Option<StoredJob>> {
        let id = id.to_owned();
        self.run(move |conn, count| {
            count.fetch_add(1, Ordering::Relaxed);
            conn.prepare_cached(
                "SELECT id, meta, state, tracked_at, deadline, outcome, deliveries, \
                   last_status, last_change, last_polls, last_error, ended_at \
                 FROM goenhance_jobs WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![id], |r| {
                    let state = JobState::from_code(r.get(2)?);
                    let mut job = StoredJob::new(
                        text(r, 0),
                        text(r, 1),
                        state,
                        from_ms(r.get(3)?),
                        from_ms(r.get(4)?),
                    )
                    .with_outcome(r.get(5).ok().flatten(), to_u32(r.get(6)?))
                    .with_end(
                        r.get(10).ok().flatten(),
                        r.get::<_, Option<i64>>(11)?
                            .filter(|_| matches!(state, JobState::Delivered | JobState::Dead))
                            .map(from_ms),
                    );
                    if let (Some(s), Some(at)) = (
                        r.get::<_, Option<String>>(7).ok().flatten(),
                        r.get::<_, Option<i64>>(8).ok().flatten(),
                    ) {
                        let polls = r.get::<_, Option<i64>>(9).ok().flatten().unwrap_or(0);
                        job = job.with_last_status(s, from_ms(at), to_u32(polls));
                    }
                    Ok(job)
                })
                .optional()
            })
            .map_err(sql_err)
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
                    Ok(Learned::from_row((
                        r.get(0)?,
                        to_u32(r.get(1)?),
                        r.get(2)?,
                        r.get(3)?,
                    )))
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
                    let (t, samples, mean, m2) = l.to_row();
                    stmt.execute(params![t, samples, mean, m2])
                        .map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)?;
            count.fetch_add(learned.len() as u64 + 2, Ordering::Relaxed);
            Ok(())
        })
    }
}
