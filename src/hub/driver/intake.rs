//! How waiters come in: the driver's commands, and a waiter joining a job
//! (a new one, or one already followed under the id's canonical form).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use tokio::time::Instant;

use super::{ceil_ms, hash_id, next_generation, offset, Driver, NEVER};
use crate::decode::same_job;
use crate::error::Error;
use crate::hub::job::{Job, JobId, Sink, Waiter, Waiters};
use crate::hub::queue::DEADLINE;
use crate::hub::Command;
use crate::poll::state::WaitState;
use crate::query::JobQuery;
use crate::telemetry::WaitSpan;

impl Driver {
    pub(super) fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        let now_ms = self.queue.floor_ms(now);
        let timeout_ms = ceil_ms(self.policy.timeout);
        match command {
            Command::One(query, tx, parent) => {
                let deadline = now_ms.saturating_add(timeout_ms);
                self.add(query.img_uuid(), now_ms, deadline, Sink::One(tx), &parent);
            }
            Command::Until {
                query,
                started,
                deadline,
                seed,
                tx,
                progress,
                parent,
            } => {
                let start_ms = self.queue.floor_ms(started.min(now));
                let deadline = self.queue.ceil_ms(deadline);
                let key = self.add(
                    query.img_uuid(),
                    start_ms,
                    deadline,
                    Sink::Tracked(Box::new((tx, progress))),
                    &parent,
                );
                if let Some((status, at, polls)) = seed {
                    self.jobs[key].state.resume(&status, at, polls);
                }
            }
            Command::Many {
                changes,
                ids,
                tx,
                taken,
                parent,
            } => {
                let deadline = now_ms.saturating_add(timeout_ms);
                let added = Cell::new(0usize);
                // A panic while taking the chunk in ends the ids not taken
                // in yet with an error; those taken in are the driver's.
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let n = ids.len();
                    self.jobs.reserve(n);
                    let (jobs, hasher) = (&self.jobs, &self.hasher);
                    self.index
                        .reserve(n, |&k| hash_id(hasher, jobs[k as usize].id.as_str()));
                    self.queue.reserve(n);
                    for id in ids.iter() {
                        let sink = if changes {
                            Sink::Watch(tx.clone())
                        } else {
                            Sink::Many(tx.clone())
                        };
                        self.add(id, now_ms, deadline, sink, &parent);
                        added.set(added.get() + 1);
                    }
                }));
                if result.is_err() {
                    let error = Error::closed()
                        .with_message("the wait scheduler failed while taking this job in");
                    for id in ids.iter().skip(added.get()) {
                        let query = JobQuery::from_shared_id(Arc::from(id));
                        let _ = tx.send((query, Err(error.clone())));
                    }
                }
                let _ = taken.send(());
            }
        }
    }

    /// Adds a waiter that joins at `now_ms` with its deadline at
    /// `deadline_ms` (grid times; a wait that starts anew starts at
    /// `start_ms`); returns the job's key.
    fn add(
        &mut self,
        id: &str,
        start_ms: i64,
        deadline_ms: i64,
        sink: Sink,
        parent: &tracing::Span,
    ) -> usize {
        let hash = hash_id(&self.hasher, id);
        let jobs = &self.jobs;
        if let Some(&key) = self
            .index
            .find(hash, |&k| same_job(jobs[k as usize].id.as_str(), id))
        {
            let now_ms = self.queue.floor_ms(Instant::now());
            let job = &mut self.jobs[key as usize];
            let base = self.queue.floor_ms(job.state.started());
            let sink = match sink {
                Sink::Many(_) | Sink::Watch(_) if job.id.as_str() != id => {
                    Sink::Spelled(Box::new((sink, Arc::from(id))))
                }
                sink => sink,
            };
            let deadline = offset(base, deadline_ms);
            if deadline != NEVER {
                job.state
                    .extend_deadline(self.queue.instant_at(base + i64::from(deadline)));
            }
            let untold =
                matches!(&sink, Sink::Watch(_) | Sink::Spelled(_)) && job.state.polls() > 0;
            job.waiters.push(Waiter {
                deadline_ms: deadline,
                joined_ms: offset(base, now_ms.max(base)),
                polls_before: job.state.polls(),
                untold,
                sink,
            });
            // A job left without a next poll (its last one came too close
            // to the deadline of the waiters then) is polled again for this
            // one.
            let idle = job.generation == 0;
            if deadline != NEVER && (job.armed == NEVER || deadline < job.armed) {
                job.armed = deadline;
                self.push_timer((base + i64::from(deadline), DEADLINE, key));
            }
            if idle {
                self.generation = next_generation(self.generation);
                self.jobs[key as usize].generation = self.generation;
                self.queue.ready.push_back((key, self.generation));
            }
            return key as usize;
        }
        let started = self.queue.instant_at(start_ms);
        let mut state = WaitState::new(&self.policy, started);
        state.wakeable();
        let deadline = offset(start_ms, deadline_ms);
        state.set_deadline(if deadline == NEVER {
            crate::clock::far_future(started)
        } else {
            self.queue.instant_at(deadline_ms)
        });
        self.generation = next_generation(self.generation);
        let generation = self.generation;
        let key = self.jobs.insert(Job {
            state,
            id: JobId::new(id),
            waiters: Waiters::One(Waiter {
                deadline_ms: deadline,
                joined_ms: 0,
                polls_before: 0,
                untold: false,
                sink,
            }),
            generation,
            armed: deadline,
            trace: WaitSpan::start(id, parent),
        });
        let (jobs, hasher) = (&self.jobs, &self.hasher);
        self.index.insert_unique(hash, key as u32, |&k| {
            hash_id(hasher, jobs[k as usize].id.as_str())
        });
        self.queue.ready.push_back((key as u32, generation));
        if deadline != NEVER {
            self.push_timer((deadline_ms, DEADLINE, key as u32));
        }
        key
    }
}
