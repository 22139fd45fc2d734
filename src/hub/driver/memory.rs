//! Giving memory back once most jobs have ended.

use slab::Slab;

use super::{hash_id, Driver, SHRINK_MIN};

impl Driver {
    /// Gives memory back once most jobs have ended: a 100,000-job
    /// `wait_all` must not keep its peak for the life of the client.
    ///
    /// It runs when no job is left, or once three quarters of at least
    /// 1024 slots are unused and at least as many jobs (and 64) ended since
    /// the last time as are left, so its cost, linear in the room, is
    /// spread over those ends. A job that stays keeps the slots up to its
    /// own.
    pub(super) fn shrink(&mut self) {
        let len = self.jobs.len();
        let worth_it = if len == 0 {
            self.jobs.capacity() > 0 || self.queue.timers_len() > 0
        } else {
            self.jobs.capacity() >= SHRINK_MIN
                && len * 4 <= self.jobs.capacity()
                && self.removed_since_shrink >= len.max(64)
        };
        if !worth_it {
            return;
        }
        self.removed_since_shrink = 0;
        if self.jobs.is_empty() {
            // Nothing is in flight either: every structure starts afresh.
            self.jobs = Slab::new();
            self.index = hashbrown::HashTable::new();
            self.queue.clear();
            self.retries = std::collections::HashMap::new();
            return;
        }
        // Stale entries go first, so that none is taken for a job that
        // moves into its slot.
        let (jobs, epoch) = (&self.jobs, self.queue.epoch());
        self.queue.sweep(|e| Self::entry_valid(jobs, epoch, e));
        self.queue.ready.retain(|&(key, generation)| {
            jobs.get(key as usize)
                .is_some_and(|j| j.generation == generation)
        });
        // Jobs move down into free slots (not those with a request out,
        // whose answer comes back by key); the index and the queue follow
        // them.
        let mut moved = std::collections::HashMap::new();
        let (index, hasher) = (&mut self.index, &self.hasher);
        self.jobs.compact(|job, from, to| {
            if job.in_flight() {
                return false;
            }
            let hash = hash_id(hasher, job.id.as_str());
            if let Some(k) = index.find_mut(hash, |&k| k as usize == from) {
                *k = to as u32;
            }
            moved.insert(from as u32, to as u32);
            true
        });
        let at = |key: u32| moved.get(&key).copied().unwrap_or(key);
        self.queue.rekey(at);
        self.retries = std::mem::take(&mut self.retries)
            .into_iter()
            .map(|(key, r)| (at(key), r))
            .collect();
        let (jobs, hasher) = (&self.jobs, &self.hasher);
        self.index
            .shrink_to_fit(|&k| hash_id(hasher, jobs[k as usize].id.as_str()));
    }
}
