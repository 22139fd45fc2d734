//! The store's operations as SQL: one statement a batch, every time that
//! decides ownership from the database's clock.

use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{Inner, PostgresStore};
use crate::error::Error;
use crate::track::store::{
    dur_ms, from_ms, Claim, Claimed, ClaimedJob, EndedJob, Finished, JobState, Learned, Listing,
    NewJob, Retry, StatusChange, StoreFuture, StoredJob, TrackStore, WorkerId,
};

/// The database's clock in milliseconds since the Unix epoch.
const NOW: &str = "(extract(epoch from now()) * 1000)::int8";

/// The state of a job as it is freed. A job finished while a worker holds
/// it keeps `state` 0 with its outcome set: the completion then changes no
/// indexed column, so PostgreSQL can update the row in place (a HOT
/// update, no new index entries). Freed, it is `state` 1 (finished), so
/// that a claim finds it among the finished jobs.
const FREED: &str = "state = CASE WHEN outcome IS NULL THEN 0 ELSE 1 END";

/// A job that is finished and not delivered, held or not.
const FINISHED: &str = "state < 2 AND outcome IS NOT NULL";

fn u32_of(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn i64_of(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Inserts jobs tracked now by the database's clock.
pub(super) async fn insert<'a>(
    inner: &Inner,
    jobs: impl Iterator<Item = &'a NewJob>,
) -> Result<(), Error> {
    let (mut ids, mut metas, mut timeouts) = (Vec::new(), Vec::new(), Vec::new());
    for j in jobs {
        ids.push(j.id.as_str());
        metas.push(j.meta.as_str());
        timeouts.push(dur_ms(j.timeout));
    }
    inner
        .execute(
            &format!(
                "INSERT INTO goenhance_jobs (id, meta, tracked_at, deadline, due_at) \
                 SELECT id, meta, {NOW}, {NOW} + t, {NOW} \
                 FROM unnest($1::text[], $2::text[], $3::int8[]) \
                   WITH ORDINALITY AS j(id, meta, t, n) ORDER BY n \
                 ON CONFLICT (id) DO NOTHING"
            ),
            &[&ids, &metas, &timeouts],
        )
        .await?;
    Ok(())
}

fn claimed(r: &Row, at: usize) -> ClaimedJob {
    let mut job = ClaimedJob::new(
        r.get::<_, String>(at),
        r.get::<_, String>(at + 1),
        from_ms(r.get(at + 2)),
        from_ms(r.get(at + 3)),
    )
    .with_deliveries(u32_of(r.get(at + 5)));
    if let Some(o) = r.get::<_, Option<String>>(at + 4) {
        let d = job.deliveries;
        job = job.with_outcome(o, d);
    }
    if let (Some(s), Some(since)) = (
        r.get::<_, Option<String>>(at + 6),
        r.get::<_, Option<i64>>(at + 7),
    ) {
        let polls = r.get::<_, Option<i32>>(at + 8).map_or(0, u32_of);
        job = job.with_last_status(s, from_ms(since), polls);
    }
    job
}

impl TrackStore for PostgresStore {
    fn location(&self) -> String {
        // The user and the host, port and database: never the password.
        match self.inner.config.get_user() {
            Some(user) => format!("postgres://{user}@{}", self.inner.target),
            None => format!("postgres://{}", self.inner.target),
        }
    }

    fn insert(&self, jobs: Vec<NewJob>, _now: SystemTime) -> StoreFuture<'_, ()> {
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

    fn register<'a>(
        &'a self,
        name: &'a str,
        lease: Duration,
        _now: SystemTime,
    ) -> StoreFuture<'a, WorkerId> {
        Box::pin(async move {
            let lease = dur_ms(lease);
            let rows = self
                .inner
                .query(
                    &format!(
                        "WITH w AS ( \
                           INSERT INTO goenhance_workers (name, epoch, alive_until) \
                           VALUES ($1, 1, {NOW} + $2) \
                           ON CONFLICT (name) DO UPDATE SET epoch = goenhance_workers.epoch + 1, \
                             alive_until = excluded.alive_until \
                           RETURNING epoch), \
                         f AS (UPDATE goenhance_jobs SET lease_owner = NULL, lease_epoch = NULL, \
                             {FREED} \
                           WHERE lease_owner = $1 AND state < 2) \
                         SELECT epoch FROM w"
                    ),
                    &[&name, &lease],
                )
                .await?;
            let epoch: i64 = rows
                .first()
                .map(|r| r.get(0))
                .ok_or_else(|| Error::store("postgres: a registration returned no epoch"))?;
            Ok(WorkerId::new(name, epoch))
        })
    }

    fn heartbeat<'a>(
        &'a self,
        worker: &'a WorkerId,
        lease: Duration,
        _now: SystemTime,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let n = self
                .inner
                .execute(
                    &format!(
                        "UPDATE goenhance_workers SET alive_until = {NOW} + $3 \
                         WHERE name = $1 AND epoch = $2 AND alive_until > {NOW}"
                    ),
                    &[&worker.name, &worker.epoch, &dur_ms(lease)],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a WorkerId,
        claim: Claim,
        _now: SystemTime,
    ) -> StoreFuture<'a, Claimed> {
        Box::pin(async move {
            const COLS: &str = "id, meta, tracked_at, deadline, outcome, deliveries, \
                                last_status, last_change, last_polls";
            let tokens: Vec<i64> = claim.recover.iter().map(|&t| t as i64).collect();
            // The rows to take are found by the partial index of free due
            // jobs and locked there, then updated by primary key: joined
            // to the table instead, the update was planned as a hash of
            // every row (a sequential scan growing with the table). Jobs
            // of lost claims are looked for only when there are some.
            let again = if tokens.is_empty() {
                String::new()
            } else {
                format!(
                    " UNION ALL SELECT {COLS} FROM goenhance_jobs \
                     WHERE lease_owner = $1 AND lease_epoch = $2 AND state < 2 \
                       AND claim_token = ANY($6) AND EXISTS (SELECT 1 FROM me)"
                )
            };
            let sql = format!(
                "WITH t AS (SELECT {NOW} AS now), \
                 freed AS (UPDATE goenhance_jobs SET lease_owner = NULL, lease_epoch = NULL, \
                     {FREED} \
                   WHERE state < 2 AND lease_owner IN \
                     (SELECT name FROM goenhance_workers, t WHERE alive_until <= t.now) \
                   RETURNING id), \
                 me AS (SELECT 1 FROM goenhance_workers, t \
                   WHERE name = $1 AND epoch = $2 AND alive_until > t.now), \
                 due_w AS (SELECT id FROM goenhance_jobs, t WHERE state = 0 \
                   AND lease_owner IS NULL AND due_at <= t.now AND EXISTS (SELECT 1 FROM me) \
                   ORDER BY due_at LIMIT $3 FOR UPDATE OF goenhance_jobs SKIP LOCKED), \
                 due_f AS (SELECT id FROM goenhance_jobs, t WHERE state = 1 \
                   AND lease_owner IS NULL AND due_at <= t.now AND EXISTS (SELECT 1 FROM me) \
                   ORDER BY due_at LIMIT $4 FOR UPDATE OF goenhance_jobs SKIP LOCKED), \
                 taken AS (UPDATE goenhance_jobs j SET lease_owner = $1, lease_epoch = $2, \
                     claim_token = $5, \
                     deliveries = j.deliveries + CASE WHEN j.state = 1 THEN 1 ELSE 0 END \
                   WHERE j.id = ANY(ARRAY(SELECT id FROM due_w UNION ALL SELECT id FROM due_f)) \
                   RETURNING j.id, j.meta, j.tracked_at, j.deadline, j.outcome, \
                     j.deliveries, j.last_status, j.last_change, j.last_polls) \
                 SELECT t.now, EXISTS (SELECT 1 FROM me), (SELECT count(*) FROM freed), x.* \
                 FROM t LEFT JOIN (SELECT * FROM taken{again}) x ON true"
            );
            let (waiting, finished, token) = (
                i64_of(claim.waiting),
                i64_of(claim.finished),
                claim.token as i64,
            );
            let mut params: Vec<&(dyn ToSql + Sync)> =
                vec![&worker.name, &worker.epoch, &waiting, &finished, &token];
            if !tokens.is_empty() {
                params.push(&tokens);
            }
            let rows = self.inner.query(&sql, &params).await?;
            let Some(first) = rows.first() else {
                return Err(Error::store("postgres: a claim returned no row"));
            };
            let now = from_ms(first.get(0));
            if !first.get::<_, bool>(1) {
                return Ok(Claimed::fenced(now));
            }
            let jobs = rows
                .iter()
                .filter(|r| r.get::<_, Option<String>>(3).is_some())
                .map(|r| claimed(r, 3))
                .collect();
            Ok(Claimed::new(now, jobs))
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
        _now: SystemTime,
    ) -> StoreFuture<'a, Vec<(String, u32)>> {
        Box::pin(async move {
            let ids: Vec<&str> = jobs.iter().map(|f| f.id.as_str()).collect();
            let outcomes: Vec<&str> = jobs.iter().map(|f| f.outcome.as_str()).collect();
            // The acknowledgements ride in the same statement. Rows are
            // looked up again (a completion stored before, its answer
            // lost) only for the ids the update did not take.
            let ack = if delivered.is_empty() {
                String::new()
            } else {
                format!(
                    "a AS (UPDATE goenhance_jobs SET state = 2, delivered_at = {NOW}, \
                       ended_at = {NOW}, lease_owner = NULL, lease_epoch = NULL \
                     WHERE {FINISHED} AND id = ANY($5)), "
                )
            };
            let sql = format!(
                "WITH {ack}s AS (UPDATE goenhance_jobs j SET outcome = f.outcome, \
                     finished_at = {NOW}, deliveries = j.deliveries + 1 \
                   FROM unnest($1::text[], $2::text[]) AS f(id, outcome) \
                   WHERE j.id = ANY($1) AND j.id = f.id AND j.state = 0 AND j.outcome IS NULL \
                     AND j.lease_owner = $3 AND j.lease_epoch = $4 \
                   RETURNING j.id, j.deliveries), \
                 again AS (SELECT id, deliveries FROM goenhance_jobs \
                   WHERE id = ANY(ARRAY(SELECT unnest($1::text[]) EXCEPT SELECT id FROM s)) \
                     AND {FINISHED} AND lease_owner = $3 AND lease_epoch = $4) \
                 SELECT * FROM s UNION ALL SELECT * FROM again"
            );
            let mut params: Vec<&(dyn ToSql + Sync)> =
                vec![&ids, &outcomes, &worker.name, &worker.epoch];
            if !delivered.is_empty() {
                params.push(&delivered);
            }
            let rows = self.inner.query(&sql, &params).await?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get(0), u32_of(r.get(1))))
                .collect())
        })
    }

    fn save_status<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<StatusChange>,
        _now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let ids: Vec<&str> = jobs.iter().map(|c| c.id.as_str()).collect();
            let statuses: Vec<&str> = jobs.iter().map(|c| c.status.as_str()).collect();
            let ages: Vec<i64> = jobs.iter().map(|c| dur_ms(c.age)).collect();
            let polls: Vec<i32> = jobs
                .iter()
                .map(|c| i32::try_from(c.polls).unwrap_or(i32::MAX))
                .collect();
            self.inner
                .execute(
                    &format!(
                        "UPDATE goenhance_jobs j SET last_status = f.status, \
                           last_change = {NOW} - f.age, last_polls = f.polls \
                         FROM unnest($1::text[], $2::text[], $3::int8[], $4::int4[]) \
                           AS f(id, status, age, polls) \
                         WHERE j.id = ANY($1) AND j.id = f.id AND j.state = 0 AND j.outcome IS NULL \
                           AND j.lease_owner = $5 AND j.lease_epoch = $6"
                    ),
                    &[&ids, &statuses, &ages, &polls, &worker.name, &worker.epoch],
                )
                .await?;
            Ok(())
        })
    }

    fn ack(&self, ids: Vec<String>, _now: SystemTime) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.inner
                .execute(
                    &format!(
                        "UPDATE goenhance_jobs SET state = 2, delivered_at = {NOW}, \
                           ended_at = {NOW}, lease_owner = NULL, lease_epoch = NULL \
                         WHERE {FINISHED} AND id = ANY($1)"
                    ),
                    &[&ids],
                )
                .await?;
            Ok(())
        })
    }

    fn retry<'a>(
        &'a self,
        worker: &'a WorkerId,
        jobs: Vec<Retry>,
        _now: SystemTime,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            let errors: Vec<&str> = jobs.iter().map(|j| j.error.as_str()).collect();
            let delays: Vec<i64> = jobs.iter().map(|j| j.delay.map_or(-1, dur_ms)).collect();
            self.inner
                .execute(
                    &format!(
                        "UPDATE goenhance_jobs j SET \
                           state = CASE WHEN f.delay < 0 THEN 3 \
                             WHEN j.outcome IS NULL THEN 0 ELSE 1 END, \
                           due_at = CASE WHEN f.delay < 0 THEN j.due_at ELSE {NOW} + f.delay END, \
                           ended_at = CASE WHEN f.delay < 0 THEN {NOW} ELSE j.ended_at END, \
                           last_error = f.error, lease_owner = NULL, lease_epoch = NULL \
                         FROM unnest($1::text[], $2::text[], $3::int8[]) AS f(id, error, delay) \
                         WHERE j.id = ANY($1) AND j.id = f.id \
                           AND j.lease_owner = $4 AND j.lease_epoch = $5 \
                           AND j.state < 2 AND (j.outcome IS NOT NULL OR f.delay < 0)"
                    ),
                    &[&ids, &errors, &delays, &worker.name, &worker.epoch],
                )
                .await?;
            Ok(())
        })
    }

    fn release<'a>(&'a self, worker: &'a WorkerId, ids: Vec<String>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.inner
                .execute(
                    &format!(
                        "UPDATE goenhance_jobs SET lease_owner = NULL, lease_epoch = NULL, \
                           {FREED} \
                         WHERE state < 2 AND id = ANY($1) AND lease_owner = $2 \
                           AND lease_epoch = $3"
                    ),
                    &[&ids, &worker.name, &worker.epoch],
                )
                .await?;
            Ok(())
        })
    }

    fn retry_dead(&self, ids: Vec<String>, _now: SystemTime) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            self.inner
                .execute(
                    &format!(
                        "UPDATE goenhance_jobs SET \
                           state = CASE WHEN outcome IS NULL THEN 0 ELSE 1 END, deliveries = 0, \
                           due_at = {NOW}, lease_owner = NULL, lease_epoch = NULL \
                         WHERE state = 3 AND id = ANY($1)"
                    ),
                    &[&ids],
                )
                .await
        })
    }

    fn prune(&self, retention: Duration, _now: SystemTime) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let keep = dur_ms(retention);
            let n = self
                .inner
                .execute(
                    &format!(
                        "DELETE FROM goenhance_jobs WHERE state >= 2 AND ended_at <= {NOW} - $1"
                    ),
                    &[&keep],
                )
                .await?;
            self.inner
                .execute(
                    &format!(
                        "DELETE FROM goenhance_workers w WHERE alive_until <= {NOW} - $1 \
                         AND NOT EXISTS (SELECT 1 FROM goenhance_jobs \
                           WHERE state < 2 AND lease_owner = w.name)"
                    ),
                    &[&keep],
                )
                .await?;
            Ok(n)
        })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let rows = self
                .inner
                .query("SELECT count(*) FROM goenhance_jobs WHERE state < 2", &[])
                .await?;
            let count: i64 = rows.first().map_or(0, |r| r.get(0));
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn list(
        &self,
        listing: Listing,
        after: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<EndedJob>> {
        let state: i16 = match listing {
            Listing::Delivered => 2,
            Listing::Dead => 3,
        };
        let after = after.map_or(0, |a| i64::try_from(a).unwrap_or(i64::MAX));
        Box::pin(async move {
            let rows = self
                .inner
                .query(
                    "SELECT seq, id, outcome, last_error, deliveries, coalesce(ended_at, 0) \
                     FROM goenhance_jobs WHERE state = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&state, &after, &i64_of(limit)],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    EndedJob::new(
                        u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                        r.get::<_, String>(1),
                        from_ms(r.get(5)),
                    )
                    .with(r.get(2), r.get(3), u32_of(r.get(4)))
                })
                .collect())
        })
    }

    fn job(&self, id: &str) -> StoreFuture<'_, Option<StoredJob>> {
        let id = id.to_owned();
        Box::pin(async move {
            let rows = self
                .inner
                .query(
                    "SELECT id, meta, \
                       CASE WHEN state = 0 AND outcome IS NOT NULL THEN 1::int2 ELSE state END, \
                       tracked_at, deadline, outcome, deliveries, \
                       last_status, last_change, last_polls, last_error, ended_at \
                     FROM goenhance_jobs WHERE id = $1",
                    &[&id],
                )
                .await?;
            Ok(rows.first().map(|r| {
                let state = JobState::from_code(i64::from(r.get::<_, i16>(2)));
                let mut job = StoredJob::new(
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    state,
                    from_ms(r.get(3)),
                    from_ms(r.get(4)),
                )
                .with_outcome(r.get(5), u32_of(r.get(6)))
                .with_end(
                    r.get(10),
                    r.get::<_, Option<i64>>(11)
                        .filter(|_| matches!(state, JobState::Delivered | JobState::Dead))
                        .map(from_ms),
                );
                if let (Some(s), Some(at)) =
                    (r.get::<_, Option<String>>(7), r.get::<_, Option<i64>>(8))
                {
                    let polls = r.get::<_, Option<i32>>(9).map_or(0, u32_of);
                    job = job.with_last_status(s, from_ms(at), polls);
                }
                job
            }))
        })
    }

    fn load_learned(&self) -> StoreFuture<'_, Vec<Learned>> {
        Box::pin(async move {
            let rows = self
                .inner
                .query(
                    "SELECT job_type, samples, mean, m2 FROM goenhance_learned",
                    &[],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| Learned::from_row((r.get(0), u32_of(r.get(1)), r.get(2), r.get(3))))
                .collect())
        })
    }

    fn save_learned(&self, learned: Vec<Learned>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let rows: Vec<_> = learned.iter().map(Learned::to_row).collect();
            let types: Vec<&str> = rows.iter().map(|l| l.0.as_str()).collect();
            let samples: Vec<i32> = rows
                .iter()
                .map(|l| i32::try_from(l.1).unwrap_or(i32::MAX))
                .collect();
            let means: Vec<f64> = rows.iter().map(|l| l.2).collect();
            let m2s: Vec<f64> = rows.iter().map(|l| l.3).collect();
            self.inner
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
