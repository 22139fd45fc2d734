//! The poll history of a wait, in 8 bytes a poll.

use crate::error::PollRecord;
use crate::model::JobStatus;

use std::time::Duration;

/// History entries kept per wait; older ones are dropped first.
const MAX_HISTORY: usize = 1000;

/// Poll history in 8 bytes a poll: milliseconds since the wait began and a
/// status code; the raw text of unknown statuses is kept aside.
#[derive(Debug, Default)]
pub(super) struct History {
    entries: Vec<(u32, u8)>,
    /// Where the oldest entry is once the history is full (a ring).
    head: usize,
    // Boxed: 8 bytes in every wait instead of 24, for a list that is almost
    // always absent.
    #[allow(clippy::box_collection)]
    unknown: Option<Box<Vec<Box<str>>>>,
}

const FAILED_POLL: u8 = 0;

pub(super) fn code_of(status: &JobStatus) -> u8 {
    match status {
        JobStatus::Pending => 1,
        JobStatus::Processing => 2,
        JobStatus::Succeeded => 3,
        JobStatus::Failed => 4,
        _ => FIRST_UNKNOWN,
    }
}

fn status_of(code: u8) -> Option<JobStatus> {
    Some(match code {
        1 => JobStatus::Pending,
        2 => JobStatus::Processing,
        3 => JobStatus::Succeeded,
        4 => JobStatus::Failed,
        _ => return None,
    })
}
pub(super) const FIRST_UNKNOWN: u8 = 5;
const MAX_UNKNOWN: usize = (u8::MAX - FIRST_UNKNOWN) as usize;

impl History {
    /// Records a poll; returns the status code it was stored under.
    pub(super) fn push(&mut self, since_ms: u32, status: Option<&JobStatus>) -> u8 {
        let code = match status {
            None => FAILED_POLL,
            Some(JobStatus::Unknown(raw)) => {
                let unknown = self.unknown.get_or_insert_with(Default::default);
                let idx = match unknown.iter().position(|u| **u == **raw) {
                    Some(i) => i,
                    None if unknown.len() < MAX_UNKNOWN => {
                        unknown.push(raw.as_str().into());
                        unknown.len() - 1
                    }
                    None => MAX_UNKNOWN - 1,
                };
                FIRST_UNKNOWN + idx as u8
            }
            Some(known) => code_of(known),
        };
        let entry = (since_ms, code);
        if self.entries.len() < MAX_HISTORY {
            // Most waits see few polls: start with room for two.
            if self.entries.capacity() == 0 {
                self.entries.reserve_exact(2);
            }
            self.entries.push(entry);
        } else {
            self.entries[self.head] = entry;
            self.head = (self.head + 1) % MAX_HISTORY;
        }
        code
    }

    /// The status stored under `code` (`None` for a failed poll).
    pub(super) fn status_of(&self, code: u8) -> Option<JobStatus> {
        match code {
            FAILED_POLL => None,
            n if n < FIRST_UNKNOWN => status_of(n),
            n => {
                let raw = self
                    .unknown
                    .as_ref()
                    .map(|u| u[usize::from(n - FIRST_UNKNOWN)].to_string())
                    .unwrap_or_default();
                Some(JobStatus::Unknown(raw))
            }
        }
    }

    pub(super) fn records(&self) -> Vec<PollRecord> {
        let (newer, older) = self.entries.split_at(self.head);
        older
            .iter()
            .chain(newer)
            .map(|&(ms, code)| PollRecord {
                at: Duration::from_millis(u64::from(ms)),
                status: self.status_of(code),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_a_bounded_ring_in_order() {
        let mut h = History::default();
        for i in 0..(MAX_HISTORY as u32 + 5) {
            h.push(i, Some(&JobStatus::Pending));
        }
        let r = h.records();
        assert_eq!(r.len(), MAX_HISTORY);
        assert_eq!(r[0].at, Duration::from_millis(5));
        assert_eq!(
            r[MAX_HISTORY - 1].at,
            Duration::from_millis(MAX_HISTORY as u64 + 4)
        );
    }

    #[test]
    fn unknown_statuses_keep_their_text() {
        let mut h = History::default();
        h.push(1, Some(&JobStatus::Unknown("Rendering".into())));
        h.push(2, None);
        h.push(3, Some(&JobStatus::Unknown("Rendering".into())));
        let r = h.records();
        assert_eq!(r[0].status, Some(JobStatus::Unknown("Rendering".into())));
        assert_eq!(r[1].status, None);
        assert_eq!(h.unknown.as_ref().unwrap().len(), 1);
    }
}
