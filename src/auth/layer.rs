//! [`AuthLayer`]: the key, made into a header once, and the layer that
//! adds it.

use std::fmt;

use http::header::HeaderValue;
use tower::Layer;

use super::{AddAuthorization, ApiKey, SentKey};
use crate::error::Error;

/// Adds `Authorization: Bearer <key>` to every request of the transport it
/// wraps.
#[derive(Clone)]
pub struct AuthLayer {
    header: HeaderValue,
}

impl AuthLayer {
    /// A layer that authorizes with this key.
    ///
    /// # Panics
    ///
    /// If the key is not valid in a header (empty, surrounding whitespace, a
    /// control character). Use [`AuthLayer::try_bearer`] for keys that come
    /// from outside the program.
    pub fn bearer(key: impl Into<ApiKey>) -> AuthLayer {
        match AuthLayer::try_bearer(key) {
            Ok(layer) => layer,
            Err(e) => panic!("{e}"),
        }
    }

    /// A layer that authorizes with this key.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when the key is not valid in a header.
    pub fn try_bearer(key: impl Into<ApiKey>) -> Result<AuthLayer, Error> {
        Ok(AuthLayer {
            header: key.into().bearer_header()?,
        })
    }

    /// The transport wrapped without marking its answers with the key, for
    /// a stack whose service was given the key to redact with
    /// (`JobStatusService::redacting`): the mark is a map insert per answer
    /// that such a stack does not need.
    pub(crate) fn layer_unmarked<S>(&self, inner: S) -> AddAuthorization<S> {
        AddAuthorization {
            inner,
            header: self.header.clone(),
            mark: false,
        }
    }

    /// The key this layer sends, to redact with.
    pub(crate) fn sent_key(&self) -> SentKey {
        SentKey::new(self.header.clone())
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("authorization", &"Bearer [redacted]")
            .finish()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AddAuthorization<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddAuthorization {
            inner,
            header: self.header.clone(),
            mark: true,
        }
    }
}
