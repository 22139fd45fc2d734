//! Which transport errors are a server certificate that failed
//! verification, and what is wrong with it, in words for users.

#[cfg(feature = "rustls")]
use rustls::CertificateError;

/// When an error (or one of its causes) is a failed verification of the
/// server's certificate, what is wrong with it, in words for users.
///
/// Such a failure is not transient: the same certificate fails the same way
/// on the next attempt.
#[cfg(feature = "rustls")]
pub(crate) fn certificate_failure(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    super::causes(err).find_map(|e| match e.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(cert)) => Some(describe(cert)),
        _ => None,
    })
}

#[cfg(feature = "rustls")]
fn describe(cert: &CertificateError) -> &'static str {
    match cert {
        CertificateError::UnknownIssuer => "certificate not trusted (unknown issuer)",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "certificate is for another host"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate expired"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate not valid yet"
        }
        CertificateError::Revoked => "certificate revoked",
        _ => "certificate not trusted",
    }
}

/// Without rustls no certificate is ever checked here.
#[cfg(not(feature = "rustls"))]
pub(crate) fn certificate_failure(
    _err: &(dyn std::error::Error + 'static),
) -> Option<&'static str> {
    None
}

#[cfg(all(test, feature = "rustls"))]
mod tests {
    use super::*;

    #[test]
    fn failure_is_found_inside_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(inner);
        assert_eq!(
            certificate_failure(&outer),
            Some("certificate not trusted (unknown issuer)")
        );
    }

    #[test]
    fn other_errors_are_not_certificate_failures() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(certificate_failure(&reset), None);
        let alert = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert_eq!(certificate_failure(&alert), None);
    }
}
