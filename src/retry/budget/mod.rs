//! Retry budgets: a shared limit on retries, so that an outage does not turn
//! every caller into a retry storm.

mod token_bucket;

pub use self::token_bucket::TokenBucket;

use crate::error::Error;

/// Decides whether a retry may be sent. Shared (behind an `Arc`) by every
/// clone of a client.
pub trait RetryBudget: std::fmt::Debug + Send + Sync {
    /// Pays for one retry after `error`; `false` when the budget cannot (the
    /// retry is not sent).
    fn withdraw(&self, error: &Error) -> bool;

    /// Records a success. `retried_after` is the error after which the
    /// retry that succeeded was paid for, or `None` when the first attempt
    /// succeeded; a budget refunds what that retry cost.
    fn deposit(&self, retried_after: Option<&Error>);
}
