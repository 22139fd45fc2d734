-- The last status a wait saw, when it changed and the polls until then, so that a restart
-- resumes the wait instead of starting it over.
ALTER TABLE goenhance_jobs ADD COLUMN last_status TEXT;
ALTER TABLE goenhance_jobs ADD COLUMN last_change BIGINT;
ALTER TABLE goenhance_jobs ADD COLUMN last_polls INTEGER;
