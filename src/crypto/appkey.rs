//! Application key pair: signature of the TSB request `metaData`.
//!
//! TSB contract: the client signs the raw `metaData` JSON bytes with its
//! application RSA key using RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.1)
//! and sends the signature base64 encoded (`metaDataSignature`).
//!
//! The private key is accepted as DER, PEM or base64 of DER, in PKCS#8
//! (`PrivateKeyInfo`, RFC 5208 §5) or PKCS#1 (`RSAPrivateKey`, RFC 8017
//! Appendix A.1.2) form, with a modulus of 2048 to 4096 bits (what ring signs with).
//!
//! Signing is ring's (`RsaKeyPair`, blinded, constant-time), not the `rsa` crate's
//! (RUSTSEC-2023-0071).

use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

use super::encoding;
use super::error::{CryptoError, CryptoResult};

/// A parsed application private key (RSA). Parse once, sign many times.
#[derive(Clone)]
pub(crate) struct AppKey {
    key: Arc<RsaKeyPair>,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey")
            .field("bits", &(self.key.public().modulus_len() * 8))
            .finish_non_exhaustive()
    }
}

impl AppKey {
    /// Parse an RSA private key given as DER, PEM (`PRIVATE KEY` or
    /// `RSA PRIVATE KEY`) or base64 of DER; PKCS#8 or PKCS#1.
    pub(crate) fn from_any(input: &[u8]) -> CryptoResult<AppKey> {
        let text = input.trim_ascii();
        if text
            .windows(29)
            .any(|w| w == b"BEGIN ENCRYPTED PRIVATE KEY--")
        {
            return Err(CryptoError::new(
                "encrypted application private keys are not supported",
            ));
        }
        let der = encoding::to_der(input, &["PRIVATE KEY", "RSA PRIVATE KEY"])
            .map_err(|_| CryptoError::new("application private key is not DER, PEM or base64"))?;
        let key = match RsaKeyPair::from_pkcs8(&der) {
            Ok(key) => key,
            Err(pkcs8) => RsaKeyPair::from_der(&der).map_err(|pkcs1| {
                // Name the reason of the form the input was in (ring's reasons are fixed
                // words such as "TooSmall", never key material).
                let why = if pkcs8.to_string() == "InvalidEncoding" {
                    pkcs1
                } else {
                    pkcs8
                };
                CryptoError::new(format!(
                    "application private key is not a usable RSA key \
                     (PKCS#8 or PKCS#1, 2048 to 4096 bits): {why}"
                ))
            })?,
        };
        Ok(AppKey { key: Arc::new(key) })
    }

    /// RSASSA-PKCS1-v1_5 SHA-256 signature of `data` (raw bytes, length =
    /// modulus length). Uses blinding.
    pub(crate) fn sign(&self, data: &[u8]) -> CryptoResult<Vec<u8>> {
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), data, &mut sig)
            .map_err(|_| CryptoError::new("application key signature failed"))?;
        Ok(sig)
    }
}

/// Sign the raw `metaData` JSON bytes with the application private key
/// (RSASSA-PKCS1-v1_5 with SHA-256, RFC 8017 §8.2.1). Returns the raw
/// signature bytes (the TSB expects them base64 encoded in `metaDataSignature`).
pub(crate) fn sign_metadata(private_key: &[u8], data: &[u8]) -> CryptoResult<Vec<u8>> {
    AppKey::from_any(private_key)?.sign(data)
}
