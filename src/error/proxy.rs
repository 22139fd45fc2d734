//! A proxy that refuses the tunnel for want of credentials: told apart
//! from other connect failures, since sending again cannot help.

use std::fmt;

use super::BoxError;

/// The cause of a connect failure whose proxy answered the `CONNECT` with
/// `407 Proxy Authentication Required`; its source is the tunnel's own
/// error. Made by the transport's proxy connector, found here by
/// [`auth_required`].
#[derive(Debug)]
pub(crate) struct ProxyAuthRequired(pub(crate) BoxError);

impl fmt::Display for ProxyAuthRequired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the proxy answered 407 proxy authentication required")
    }
}

impl std::error::Error for ProxyAuthRequired {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Whether a [`ProxyAuthRequired`] is in `err`'s chain of causes (also as
/// the payload of an I/O error, whose `source` skips its payload).
pub(super) fn auth_required(err: &(dyn std::error::Error + 'static)) -> bool {
    super::causes(err).any(|e| e.is::<ProxyAuthRequired>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};

    #[test]
    fn a_407_inside_a_connect_error_is_its_own_kind_and_not_transient() {
        let tunnel = || BoxError::from("tunnel error: proxy authorization required");
        let direct: BoxError = Box::new(ProxyAuthRequired(tunnel()));
        let in_io: BoxError = Box::new(std::io::Error::other(ProxyAuthRequired(tunnel())));
        for connect in [direct, in_io] {
            let err = Error::transport(connect);
            assert_eq!(err.kind(), ErrorKind::ProxyAuth);
            assert!(err.is_transport());
            assert!(!err.is_transient());
            assert_eq!(
                err.to_string(),
                "transport error: proxy authentication required"
            );
        }
    }

    #[test]
    fn other_errors_are_not_proxy_refusals() {
        let err = Error::transport(BoxError::from("tunnel error: unsuccessful"));
        assert_eq!(err.kind(), ErrorKind::Transport);
        assert!(err.is_transient());
    }
}
