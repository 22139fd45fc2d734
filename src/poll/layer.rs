use tower::Layer;

use super::{PollPolicy, Poller};

/// Turns a status query into a wait for the job's terminal state.
///
/// Services made by one layer share what the adaptive schedule learns.
#[derive(Debug, Clone, Default)]
pub struct PollLayer {
    policy: PollPolicy,
}

impl PollLayer {
    /// A layer with this policy.
    pub fn new(policy: PollPolicy) -> Self {
        PollLayer { policy }
    }
}

impl<S> Layer<S> for PollLayer {
    type Service = Poller<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Poller::new(inner, self.policy.clone())
    }
}
