-- Completions write no indexed column: a job finished while its worker
-- holds it keeps state 0 with its outcome set, and is state 1 (finished)
-- once freed. Such an update can stay in its page (a HOT update, with no
-- new index entries) when the page has room: new pages keep some free.
-- Rows of the earlier kind (state 1 while held) are read the same way.
ALTER TABLE goenhance_jobs SET (fillfactor = 70);
