//! What PostgreSQL itself counts, for the tracking bench: calls per
//! statement from `pg_stat_statements`, commits from `pg_stat_database`
//! and rows written from `pg_stat_user_tables`. Read over a connection
//! to the `postgres` database, so that the reads are not counted with the
//! statements of the database under test.

use std::collections::HashMap;

use tokio_postgres::Client;

/// Per query id: calls, milliseconds spent executing, shared buffers
/// read or hit, the text.
pub type Snapshot = HashMap<i64, (i64, f64, i64, String)>;

/// Loads `pg_stat_statements` into the cluster (a restart) and creates the
/// extension; `false` when the server has no such library.
pub async fn enable(admin: &Client) -> bool {
    admin
        .batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        .await
        .is_ok()
}

/// Calls of each statement of database `db` so far, by query id, with
/// the statement's text; statements whose text holds `bench_probe` (the
/// bench's own reads) are left out.
pub async fn calls(admin: &Client, db: &str) -> Snapshot {
    admin
        .query(
            "SELECT s.queryid, s.calls, s.total_exec_time, \
             s.shared_blks_hit + s.shared_blks_read, s.query FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = $1 AND s.query NOT LIKE '%bench_probe%'",
            &[&db],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let id: i64 = r.get(0);
            (id, (r.get(1), r.get(2), r.get(3), r.get(4)))
        })
        .collect()
}

/// All calls in a snapshot of [`calls`].
pub fn total(snapshot: &Snapshot) -> i64 {
    snapshot.values().map(|(c, ..)| c).sum()
}

/// Calls of statements whose text starts with `prefix`.
pub fn calls_of(snapshot: &Snapshot, prefix: &str) -> i64 {
    snapshot
        .values()
        .filter(|(.., q)| q.trim_start().starts_with(prefix))
        .map(|(c, ..)| c)
        .sum()
}

/// The statements called between two snapshots, most called first:
/// `(calls, milliseconds executing, buffers, text)`.
pub fn delta(before: &Snapshot, after: &Snapshot) -> Vec<(i64, f64, i64, String)> {
    let mut v: Vec<(i64, f64, i64, String)> = after
        .iter()
        .map(|(id, (c, ms, b, q))| {
            let (bc, bms, bb) = before
                .get(id)
                .map_or((0, 0.0, 0), |(c, ms, b, _)| (*c, *ms, *b));
            (c - bc, ms - bms, b - bb, q.clone())
        })
        .filter(|(c, ..)| *c > 0)
        .collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.0));
    v
}

/// Commits of database `db` so far (`pg_stat_database.xact_commit`).
pub async fn commits(admin: &Client, db: &str) -> i64 {
    admin
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0)
}

/// One line of a statement's text, cut to `n` characters.
pub fn short(q: &str, n: usize) -> String {
    let one: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > n {
        format!("{}…", one.chars().take(n).collect::<String>())
    } else {
        one
    }
}

/// Milliseconds spent executing the bench's own reads (`bench_probe`) in
/// database `db` so far.
pub async fn probe_ms(admin: &Client, db: &str) -> f64 {
    admin
        .query_one(
            "SELECT coalesce(sum(s.total_exec_time), 0)::float8 FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = $1 AND s.query LIKE '%bench_probe%'",
            &[&db],
        )
        .await
        .unwrap()
        .get(0)
}
