//! Pure cryptographic helpers for the PKCS#11 module.
//!
//! Everything here works on plain Rust types (no PKCS#11 structures, no I/O):
//!
//! * [`hash`]: SHA-1/SHA-2 digests and DER `DigestInfo` handling (RFC 8017 §9.2).
//! * [`keys`]: named curves and public keys, SubjectPublicKeyInfo parsing and
//!   encoding (RFC 5280 §4.1.2.7, RFC 3279, RFC 5480, RFC 8410) and the
//!   PKCS#11 attribute encodings `CKA_EC_PARAMS` / `CKA_EC_POINT`
//!   (PKCS#11 v2.40 Current Mechanisms §2.3.3).
//! * [`der_sig`]: ECDSA signature conversion from DER `Ecdsa-Sig-Value`
//!   (RFC 3279 §2.2.3) to the PKCS#11 raw `r || s` form (PKCS#11 v2.40
//!   Current Mechanisms §2.3.1).
//! * [`verify`]: signature verification for RSA PKCS#1 v1.5 / PSS
//!   (RFC 8017 §8; ring, and RSAVP1 plus encoding checks in `verify::rsa`), ECDSA (ANSI X9.62 / FIPS 186-4) and Ed25519 (RFC 8032).
//! * [`pqc`]: ML-DSA (FIPS 204), SLH-DSA (FIPS 205) and HSS/LMS (RFC 8554) parameter sets,
//!   sizes, encodings and verification.
//! * [`cert`]: X.509 certificate parsing for certificate objects (RFC 5280,
//!   PKCS#11 v2.40 Base §4.6).
//! * [`appkey`]: application-key signature of TSB request metadata.
//! * [`encoding`]: DER / PEM (RFC 7468) / base64 input detection.

pub(crate) mod appkey;
pub(crate) mod cert;
pub(crate) mod der_sig;
pub mod encoding;
mod error;
pub(crate) mod hash;
pub(crate) mod keys;
pub(crate) mod pqc;
pub(crate) mod verify;
pub mod x509req;

#[cfg(test)]
mod tests;

pub(crate) use appkey::sign_metadata;
pub use cert::Certificate;
pub(crate) use der_sig::ecdsa_der_to_raw;
pub use error::{CryptoError, CryptoResult};
pub use hash::{parse_digest_info, HashAlg, Hasher};
pub use keys::PublicKey;
pub use verify::{check_form, verify, verify_with, PreparedKey, Scheme, SignedData};
