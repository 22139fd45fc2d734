//! A fake GoEnhance server on loopback, with scripted job timelines and faults.

mod fault;
mod timeline;

pub use fault::{Fault, FaultPlan, Garbage, RetryAfter};
pub use timeline::Timeline;
