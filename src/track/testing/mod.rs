//! Test support for code that tracks jobs, and for stores written outside
//! this crate (feature `test-util`).
//!
//! - [`FaultyStore`] wraps any store and makes chosen operations fail,
//!   commit and lose their answer, or hang: the partial failures a
//!   database connection produces.
//! - [`conformance`] checks that a store keeps the [`TrackStore`]
//!   contract (leases, epochs, idempotent retries, listings, pruning).
//!
//! [`TrackStore`]: super::TrackStore

mod conformance;
mod faulty;

pub use self::conformance::conformance;
pub use self::faulty::{Fault, FaultyStore, Operation};
