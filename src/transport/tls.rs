//! Which certificate authorities [`HyperTransport`](super::HyperTransport) trusts.
//!
//! ```
//! use goenhance_jobs::{HyperTransport, TlsRoots};
//!
//! // The platform's store only, plus a private CA of the company.
//! # let company_ca = include_bytes!("../../tests/data/example-ca.pem");
//! let transport = HyperTransport::builder()
//!     .tls_roots(TlsRoots::Native)
//!     .root_certificates_pem(company_ca)?
//!     .build();
//! # drop(transport);
//! # Ok::<(), goenhance_jobs::Error>(())
//! ```

use std::sync::{Arc, OnceLock};

use pki_types::pem::{self, PemObject};
use pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// The certificate authorities a [`HyperTransport`](super::HyperTransport)
/// trusts, besides those given with
/// [`root_certificates_pem`](super::HyperTransportBuilder::root_certificates_pem).
///
/// The default is [`WebPkiAndNative`](TlsRoots::WebPkiAndNative), so that
/// the same build works on a corporate laptop, where a TLS-inspecting
/// gateway's CA sits in the platform store, and in a minimal container,
/// which has no platform store at all: there the web PKI roots alone reach
/// the API, and a missing or empty platform store is not an error.
///
/// Whatever the roots, the server's certificate is always verified: its
/// chain, its validity dates and its host name. No setting turns that off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The Mozilla root program, compiled in (the `webpki-roots` crate):
    /// the same on every machine, blind to private CAs.
    WebPki,
    /// The platform's store, read once per process through
    /// `rustls-native-certs`: the system bundle on Linux (or the file in
    /// `SSL_CERT_FILE` and the directory in `SSL_CERT_DIR` when set), the
    /// keychain on macOS, the certificate store on Windows.
    Native,
    /// Both of the above (the default).
    #[default]
    WebPkiAndNative,
    /// Nothing but the certificates given with
    /// [`root_certificates_pem`](super::HyperTransportBuilder::root_certificates_pem).
    None,
}

/// Extra roots from PEM text: every certificate in it, each checked to be
/// usable as a trust anchor.
pub(crate) fn parse_pem_roots(pem_text: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem_text) {
        let cert = item.map_err(|e| {
            Error::invalid_input(format!(
                "cannot read the root certificates: {}",
                pem_problem(&e)
            ))
        })?;
        let mut scratch = RootCertStore::empty();
        if scratch.add(cert.clone()).is_err() {
            return Err(Error::invalid_input(format!(
                "cannot read the root certificates: certificate {} is not a valid x.509 certificate",
                certs.len() + 1
            )));
        }
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(Error::invalid_input(
            "cannot read the root certificates: no PEM certificate found",
        ));
    }
    Ok(certs)
}

/// What is wrong with a PEM text, without quoting it.
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no end line",
        pem::Error::IllegalSectionStart { .. } => "a PEM section has a malformed begin line",
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64",
        _ => "the PEM text is malformed",
    }
}

/// The rustls client settings for these roots and extra certificates.
pub(crate) fn client_config(roots: TlsRoots, extra: &[CertificateDer<'static>]) -> ClientConfig {
    let mut store = match roots {
        TlsRoots::Native | TlsRoots::WebPkiAndNative => native_roots().clone(),
        TlsRoots::WebPki | TlsRoots::None => RootCertStore::empty(),
    };
    if matches!(roots, TlsRoots::WebPki | TlsRoots::WebPkiAndNative) {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    // Checked by `parse_pem_roots`, so none is dropped here.
    store.add_parsable_certificates(extra.iter().cloned());
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth()
}

/// The platform's roots, loaded on first use. A platform without a store,
/// or with unreadable entries, gives what could be read (maybe nothing).
fn native_roots() -> &'static RootCertStore {
    static NATIVE: OnceLock<RootCertStore> = OnceLock::new();
    NATIVE.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(loaded.certs);
        tracing::debug!(
            added,
            ignored,
            errors = loaded.errors.len(),
            "platform root certificates loaded"
        );
        for error in &loaded.errors {
            tracing::debug!(%error, "part of the platform root certificates could not be read");
        }
        store
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_invalid_input() {
        let err = parse_pem_roots(b"not a certificate").unwrap_err();
        assert!(err.is_invalid_input());
        assert_eq!(
            err.to_string(),
            "invalid input: cannot read the root certificates: no PEM certificate found"
        );
        let err =
            parse_pem_roots(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: cannot read the root certificates: a PEM section is not valid base64"
        );
        let err =
            parse_pem_roots(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: cannot read the root certificates: certificate 1 is not a valid x.509 certificate"
        );
    }
}
