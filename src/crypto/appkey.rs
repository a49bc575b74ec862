//! Application key pair: signature of the TSB request `metaData`.
//!
//! TSB contract: the client signs the raw `metaData` JSON bytes with its
//! application RSA key using RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.1)
//! and sends the signature base64 encoded (`metaDataSignature`).
//!
//! The private key is accepted as DER, PEM or base64 of DER, in PKCS#8
//! (`PrivateKeyInfo`, RFC 5208 §5) or PKCS#1 (`RSAPrivateKey`, RFC 8017
//! Appendix A.1.2) form.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};

use super::encoding;
use super::hash::{digest_info, HashAlg};
use super::keys::PublicKey;
use super::{CryptoError, CryptoResult};

/// A parsed application private key (RSA). Parse once, sign many times.
#[derive(Clone)]
pub struct AppKey {
    key: RsaPrivateKey,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey")
            .field("bits", &(self.key.size() * 8))
            .finish_non_exhaustive()
    }
}

impl AppKey {
    /// Parse an RSA private key given as DER, PEM (`PRIVATE KEY` or
    /// `RSA PRIVATE KEY`) or base64 of DER; PKCS#8 or PKCS#1.
    pub fn from_any(input: &[u8]) -> CryptoResult<AppKey> {
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
        let key = RsaPrivateKey::from_pkcs8_der(&der)
            .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
            .map_err(|_| {
                CryptoError::new("application private key is not an RSA PKCS#8 or PKCS#1 key")
            })?;
        Ok(AppKey { key })
    }

    /// RSASSA-PKCS1-v1_5 SHA-256 signature of `data` (raw bytes, length =
    /// modulus length). Uses blinding.
    pub fn sign(&self, data: &[u8]) -> CryptoResult<Vec<u8>> {
        let t = digest_info(HashAlg::Sha256, &HashAlg::Sha256.digest(data));
        self.key
            .sign_with_rng(
                &mut rsa::rand_core::OsRng,
                Pkcs1v15Sign::new_unprefixed(),
                &t,
            )
            .map_err(|_| CryptoError::new("application key signature failed"))
    }

    /// The public half (to show / register with the TSB).
    pub fn public_key(&self) -> PublicKey {
        PublicKey::rsa(&self.key.n().to_bytes_be(), &self.key.e().to_bytes_be())
            .expect("valid RSA key")
    }
}

/// Sign the raw `metaData` JSON bytes with the application private key
/// (RSASSA-PKCS1-v1_5 with SHA-256, RFC 8017 §8.2.1). Returns the raw
/// signature bytes; see [`sign_metadata_base64`] for the base64 text the TSB
/// expects in `metaDataSignature`.
pub fn sign_metadata(private_key: &[u8], data: &[u8]) -> CryptoResult<Vec<u8>> {
    AppKey::from_any(private_key)?.sign(data)
}

/// [`sign_metadata`], base64 encoded (standard alphabet, padded).
pub fn sign_metadata_base64(private_key: &[u8], data: &[u8]) -> CryptoResult<String> {
    Ok(STANDARD.encode(sign_metadata(private_key, data)?))
}
