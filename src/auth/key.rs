//! [`ApiKey`]: the key, redacted wherever it is shown.

use std::fmt;

use http::header::HeaderValue;

use crate::error::Error;

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into().into_boxed_str())
    }

    /// The key itself. Handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Builds the sensitive `Bearer` header value.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_input`] when the key is empty, has surrounding
    /// whitespace, or has a character not allowed in a header (such as a
    /// newline).
    pub fn bearer_header(&self) -> Result<HeaderValue, Error> {
        if self.0.is_empty() {
            return Err(Error::invalid_input("api key is empty"));
        }
        if self.0.trim() != &*self.0 {
            return Err(Error::invalid_input("api key has surrounding whitespace"));
        }
        let mut value = HeaderValue::try_from(format!("Bearer {}", self.0))
            .map_err(|_| Error::invalid_input("api key has a character not allowed in a header"))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey::new(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        ApiKey::new(key)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
