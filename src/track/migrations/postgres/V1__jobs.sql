-- Tracked jobs: waiting (state 0), finished and not yet delivered (1),
-- delivered (2). Times are milliseconds since the Unix epoch.
CREATE TABLE goenhance_jobs (
    id           TEXT PRIMARY KEY,
    seq          BIGSERIAL NOT NULL,
    meta         TEXT NOT NULL,
    tracked_at   BIGINT NOT NULL,
    deadline     BIGINT NOT NULL,
    due_at       BIGINT NOT NULL,
    state        SMALLINT NOT NULL DEFAULT 0,
    outcome      TEXT,
    deliveries   INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  BIGINT NOT NULL DEFAULT 0,
    finished_at  BIGINT,
    delivered_at BIGINT
);
CREATE INDEX goenhance_jobs_due ON goenhance_jobs (due_at) WHERE state < 2;
CREATE INDEX goenhance_jobs_owner ON goenhance_jobs (lease_owner) WHERE state < 2;

-- What the adaptive poll schedule learned per job type.
CREATE TABLE goenhance_learned (
    job_type TEXT PRIMARY KEY,
    samples  INTEGER NOT NULL,
    mean     DOUBLE PRECISION NOT NULL,
    m2       DOUBLE PRECISION NOT NULL
);
