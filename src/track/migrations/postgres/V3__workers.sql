-- Workers: one heartbeat row each, with the epoch of its latest
-- registration. Jobs point at (lease_owner, lease_epoch); a job is held
-- while that worker's heartbeat is alive and its epoch the latest. Times
-- that decide ownership are the database's (now()).
CREATE TABLE goenhance_workers (
    name        TEXT PRIMARY KEY,
    epoch       BIGINT NOT NULL,
    alive_until BIGINT NOT NULL
);
ALTER TABLE goenhance_jobs ADD COLUMN lease_epoch BIGINT;
ALTER TABLE goenhance_jobs ADD COLUMN claim_token BIGINT;
-- The last handler error, or why the row could not be read (state 3: dead).
ALTER TABLE goenhance_jobs ADD COLUMN last_error TEXT;
-- When the job was delivered or died: what pruning goes by.
ALTER TABLE goenhance_jobs ADD COLUMN ended_at BIGINT;
-- Leases of the per-job kind end here; the jobs stay due as they were.
UPDATE goenhance_jobs SET lease_owner = NULL WHERE state < 2;
UPDATE goenhance_jobs SET ended_at = coalesce(delivered_at, finished_at, tracked_at)
    WHERE state = 2;
DROP INDEX goenhance_jobs_due;
CREATE INDEX goenhance_jobs_free ON goenhance_jobs (state, due_at)
    WHERE state < 2 AND lease_owner IS NULL;
CREATE INDEX goenhance_jobs_ended ON goenhance_jobs (state, seq) WHERE state >= 2;
CREATE INDEX goenhance_jobs_ended_at ON goenhance_jobs (ended_at) WHERE state >= 2;
