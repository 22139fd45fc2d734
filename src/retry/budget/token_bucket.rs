use std::sync::atomic::{AtomicU32, Ordering};

use super::RetryBudget;
use crate::error::Error;

/// An AWS-style token bucket.
///
/// It starts full (`capacity`, default 500). Each retry takes
/// `retry_cost` tokens (default 5), or `timeout_cost` after an attempt
/// timeout (default 10); a first attempt is free. A success puts back
/// 1 token, or what the retry that succeeded cost (5, or 10 when it was
/// sent after a timeout). When the bucket
/// cannot pay, the retry is not sent and the error says the budget ran out.
///
/// The bound is simple: during an outage in which nothing succeeds, the
/// retries of all callers together cost at most `capacity` tokens, so at most
/// `capacity / retry_cost` retries (100 with the defaults) are sent on top of
/// the first attempts, however many callers there are. Time alone does not
/// refill it; successes do.
///
/// ```
/// use goenhance_jobs::retry::{RetryBudget, TokenBucket};
/// # let transient = goenhance_jobs::JobDetail::from_json(b"garbage").unwrap_err();
///
/// let bucket = TokenBucket::new(10, 5, 10);
/// assert!(bucket.withdraw(&transient));
/// assert!(bucket.withdraw(&transient));
/// assert!(!bucket.withdraw(&transient)); // empty: the retry is not sent
/// bucket.deposit(Some(&transient)); // a retry succeeded: its cost comes back
/// assert_eq!(bucket.available(), 5);
/// ```
#[derive(Debug)]
pub struct TokenBucket {
    tokens: AtomicU32,
    capacity: u32,
    retry_cost: u32,
    timeout_cost: u32,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, retry_cost: u32, timeout_cost: u32) -> Self {
        crate::telemetry::budget_tokens(capacity);
        TokenBucket {
            tokens: AtomicU32::new(capacity),
            capacity,
            retry_cost,
            timeout_cost,
        }
    }

    /// Tokens left.
    pub fn available(&self) -> u32 {
        self.tokens.load(Ordering::Acquire)
    }

    /// The cost of a retry after an ordinary transient error.
    pub fn retry_cost(&self) -> u32 {
        self.retry_cost
    }

    /// The cost of a retry after an attempt timeout.
    pub fn timeout_cost(&self) -> u32 {
        self.timeout_cost
    }

    /// What a retry after `error` costs.
    fn cost(&self, error: &Error) -> u32 {
        if error.is_timeout() {
            self.timeout_cost
        } else {
            self.retry_cost
        }
    }
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket::new(500, 5, 10)
    }
}

impl RetryBudget for TokenBucket {
    fn withdraw(&self, error: &Error) -> bool {
        let cost = self.cost(error);
        match self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(cost))
        {
            Ok(before) => {
                crate::telemetry::budget_tokens(before - cost);
                true
            }
            Err(_) => false,
        }
    }

    fn deposit(&self, retried_after: Option<&Error>) {
        // The common case, a first attempt succeeding while the bucket is
        // full, changes nothing: read only, so that concurrent callers do
        // not contend for the cache line.
        if self.tokens.load(Ordering::Acquire) >= self.capacity {
            return;
        }
        let amount = retried_after.map_or(1, |e| self.cost(e));
        let refill = |t: u32| t.saturating_add(amount).min(self.capacity);
        if let Ok(before) = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(refill(t)))
        {
            crate::telemetry::budget_tokens(refill(before));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_success_refunds_what_its_retry_cost() {
        let bucket = TokenBucket::new(100, 5, 10);
        let timeout = Error::timeout(Duration::from_secs(1));
        let reset = Error::decode("garbled");
        assert!(bucket.withdraw(&timeout));
        assert_eq!(bucket.available(), 90);
        bucket.deposit(Some(&timeout));
        assert_eq!(bucket.available(), 100);
        assert!(bucket.withdraw(&reset));
        assert_eq!(bucket.available(), 95);
        bucket.deposit(Some(&reset));
        assert_eq!(bucket.available(), 100);
        assert!(bucket.withdraw(&timeout));
        bucket.deposit(None);
        assert_eq!(bucket.available(), 91);
    }
}
