//! [`JobQuery`]: a validated job id, and the deadline and attempt number
//! the layers below read from it.
//!
//! ```
//! use goenhance_jobs::JobQuery;
//!
//! let q = JobQuery::new("5334c57d-8443-4b79-ba24-8539c2163c74")?;
//! assert_eq!(q.img_uuid(), "5334c57d-8443-4b79-ba24-8539c2163c74");
//! assert!(JobQuery::new("x\r\nHost: evil").is_err());
//! # Ok::<(), goenhance_jobs::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use tokio::time::Instant;

use crate::error::Error;

/// The longest job id accepted.
pub const MAX_ID_LEN: usize = 128;

/// A validated job id (`img_uuid`) to ask about.
///
/// Ids are 1 to 128 characters from `[A-Za-z0-9._~-]` (URL-unreserved), so
/// they go into the request URI unchanged; anything else is refused before a
/// request is built. Cloning is cheap.
///
/// A query may carry a deadline: [`PollLayer`](crate::PollLayer) sets the
/// wait's deadline here, and the layers below it (retry, timeout) never sleep
/// or wait past it.
///
/// ```
/// use goenhance_jobs::JobQuery;
///
/// let q = JobQuery::new("5334c57d-8443-4b79-ba24-8539c2163c74")?;
/// assert_eq!(q.img_uuid(), "5334c57d-8443-4b79-ba24-8539c2163c74");
/// assert!(JobQuery::new("x\r\nHost: evil").is_err());
/// # Ok::<(), goenhance_jobs::Error>(())
/// ```
#[derive(Clone)]
pub struct JobQuery {
    id: Arc<str>,
    deadline: Option<Instant>,
    attempt: u32,
}

impl JobQuery {
    /// Validates `id` and makes a query of it.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when `id` is empty, longer than 128
    /// characters, or has a character outside `[A-Za-z0-9._~-]`.
    pub fn new(id: impl AsRef<str>) -> Result<JobQuery, Error> {
        let id = id.as_ref();
        validate_id(id)?;
        Ok(JobQuery {
            id: Arc::from(id),
            deadline: None,
            attempt: 1,
        })
    }

    /// The job id.
    pub fn img_uuid(&self) -> &str {
        &self.id
    }

    /// A query of an id that was validated before.
    pub(crate) fn from_shared_id(id: Arc<str>) -> JobQuery {
        JobQuery {
            id,
            deadline: None,
            attempt: 1,
        }
    }

    /// Sets a deadline that the layers below must respect.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// [`set_deadline`](Self::set_deadline) in a chain, inside the crate.
    pub(crate) fn with_deadline(mut self, deadline: Instant) -> JobQuery {
        self.set_deadline(deadline);
        self
    }

    /// The deadline set by [`set_deadline`](JobQuery::set_deadline), if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Which attempt at this query this is: 1 for the first, counted up by
    /// [`RetryLayer`](crate::RetryLayer) for each retry it sends, so the
    /// layers below can tell a retry from a first try.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn set_attempt(&mut self, attempt: u32) {
        self.attempt = attempt;
    }
}

pub(crate) fn validate_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid_input("job id is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid_input(format!(
            "job id is {} bytes long, longer than {MAX_ID_LEN}",
            id.len()
        )));
    }
    if let Some(pos) = id.bytes().position(|b| !is_id_byte(b)) {
        return Err(Error::invalid_input(format!(
            "job id has a character outside [A-Za-z0-9._~-] at byte {pos}"
        )));
    }
    Ok(())
}

fn is_id_byte(b: u8) -> bool {
    ID_BYTES[b as usize]
}

/// `[A-Za-z0-9._~-]` as a table: every call of `Client::get` checks its id.
static ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'-');
        b += 1;
    }
    table
};

impl fmt::Debug for JobQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("JobQuery");
        d.field("img_uuid", &&*self.id);
        if let Some(deadline) = self.deadline {
            d.field("deadline", &deadline);
        }
        d.finish()
    }
}

impl fmt::Display for JobQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Two queries are equal when they name the same job.
impl PartialEq for JobQuery {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for JobQuery {}

impl std::hash::Hash for JobQuery {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl FromStr for JobQuery {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        JobQuery::new(s)
    }
}

impl TryFrom<&str> for JobQuery {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        JobQuery::new(s)
    }
}

impl TryFrom<String> for JobQuery {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        JobQuery::new(s)
    }
}

impl TryFrom<&String> for JobQuery {
    type Error = Error;

    fn try_from(s: &String) -> Result<Self, Error> {
        JobQuery::new(s)
    }
}

/// A query given by reference is cloned (cheap), so `client.wait(&query)`
/// works as `client.wait(query)` does.
impl From<&JobQuery> for JobQuery {
    fn from(query: &JobQuery) -> Self {
        query.clone()
    }
}

/// A conversion that cannot fail, into a query taken as
/// `impl TryInto<JobQuery>` (a `JobQuery` itself).
impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules() {
        for bad in [
            "",
            "a b",
            "x\r\nHost: evil",
            "../x",
            "a&b=c",
            "é",
            "a/b",
            "a?b",
            "a#b",
            "a%20",
        ] {
            let err = JobQuery::new(bad).unwrap_err();
            assert!(err.is_invalid_input(), "{bad:?}");
        }
        assert!(JobQuery::new("x".repeat(129)).is_err());
        assert!(JobQuery::new("x".repeat(128)).is_ok());
        assert!(JobQuery::new("Az09._~-").is_ok());
    }
}
