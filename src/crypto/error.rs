//! The error of the crypto layer, used by every file of `crypto`.

use std::fmt;

/// Error of the crypto layer. The message is a short, human readable reason
/// and never contains key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoError(pub String);

impl CryptoError {
    /// Build an error from anything printable.
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        CryptoError(msg.into())
    }
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CryptoError {}

/// Result type of the crypto layer.
pub type CryptoResult<T> = Result<T, CryptoError>;
