//! An `https` URL met by a build without TLS: refused before any
//! connection, so nothing meant for TLS is ever sent in clear.

use std::fmt;

/// The cause of a connect failure for an `https` URL in a build without a
/// TLS feature. Made by the transport's connector, found here by
/// [`tls_unavailable`].
#[derive(Debug)]
#[cfg_attr(feature = "rustls", allow(dead_code))]
pub(crate) struct TlsUnavailable;

/// What the error says: which feature to enable.
pub(super) const MESSAGE: &str =
    "https needs tls, and this build has none: enable the `rustls` feature of goenhance-jobs";

impl fmt::Display for TlsUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MESSAGE)
    }
}

impl std::error::Error for TlsUnavailable {}

/// Whether a [`TlsUnavailable`] is in `err`'s chain of causes.
pub(super) fn tls_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    super::causes(err).any(|e| e.is::<TlsUnavailable>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn an_https_refusal_is_invalid_input_that_names_the_feature() {
        let wrapped = std::io::Error::other(TlsUnavailable);
        let err = Error::transport(wrapped);
        assert!(err.is_invalid_input());
        assert!(!err.is_transient());
        assert_eq!(err.to_string(), format!("invalid input: {MESSAGE}"));
    }
}
