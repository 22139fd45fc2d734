-- The last status a wait saw and when it changed, so that a restart
-- resumes the wait instead of starting it over.
ALTER TABLE goenhance_jobs ADD COLUMN last_status TEXT;
ALTER TABLE goenhance_jobs ADD COLUMN last_change INTEGER;
