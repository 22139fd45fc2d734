//! What PostgreSQL itself counts, for the tracking bench: calls per
//! statement from `pg_stat_statements`, commits from `pg_stat_database`
//! and rows written from `pg_stat_user_tables`. Read over a connection
//! to the `postgres` database, so that the reads are not counted with the
//! statements of the database under test.

use std::collections::HashMap;

use tokio_postgres::Client;

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
pub async fn calls(admin: &Client, db: &str) -> HashMap<i64, (i64, String)> {
    admin
        .query(
            "SELECT s.queryid, s.calls, s.query FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = $1 AND s.query NOT LIKE '%bench_probe%'",
            &[&db],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                (r.get::<_, i64>(1), r.get::<_, String>(2)),
            )
        })
        .collect()
}

/// All calls in a snapshot of [`calls`].
pub fn total(snapshot: &HashMap<i64, (i64, String)>) -> i64 {
    snapshot.values().map(|(c, _)| c).sum()
}

/// Calls of statements whose text starts with `prefix`.
pub fn calls_of(snapshot: &HashMap<i64, (i64, String)>, prefix: &str) -> i64 {
    snapshot
        .values()
        .filter(|(_, q)| q.trim_start().starts_with(prefix))
        .map(|(c, _)| c)
        .sum()
}

/// The statements called between two snapshots, most called first:
/// `(calls, text)`.
pub fn delta(
    before: &HashMap<i64, (i64, String)>,
    after: &HashMap<i64, (i64, String)>,
) -> Vec<(i64, String)> {
    let mut v: Vec<(i64, String)> = after
        .iter()
        .map(|(id, (c, q))| (c - before.get(id).map_or(0, |(b, _)| *b), q.clone()))
        .filter(|(c, _)| *c > 0)
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0));
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
