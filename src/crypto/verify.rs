//! Signature verification (PKCS#11 `C_Verify`, and the module's check of
//! every signature the TSB returns).
//!
//! * RSA PKCS#1 v1.5 (RFC 8017 §8.2.2, EMSA-PKCS1-v1_5 §9.2) and the raw
//!   `CKM_RSA_PKCS` variant without DigestInfo (PKCS#11 v2.40 Current
//!   Mechanisms §2.1.6).
//! * RSASSA-PSS (RFC 8017 §8.1.2, EMSA-PSS §9.1) with MGF1 over the same hash.
//! * ECDSA (ANSI X9.62, FIPS 186-4 §6.4) with PKCS#11 raw `r || s`
//!   signatures (PKCS#11 v2.40 Current Mechanisms §2.3.1).
//! * Ed25519 (RFC 8032 §5.1.7).
//! * ML-DSA (FIPS 204), SLH-DSA (FIPS 205), HSS/LMS (RFC 8554): see `pqc.rs`.

// RSA is verified by a module of its own, below this one; both use `Scheme` and `SignedData`
// from a file beside them.
pub(super) mod rsa;
mod scheme;

use ecdsa::signature::hazmat::PrehashVerifier;

use super::error::{CryptoError, CryptoResult};
use super::hash::HashAlg;
use super::keys::{Curve, PublicKey};
pub use scheme::{Scheme, SignedData};

fn fail(msg: &str) -> CryptoError {
    CryptoError::new(msg)
}

/// What of a public key can be parsed once and kept for every later verification (with the
/// key object): the decompressed Ed25519 point. ring, which verifies ECDSA and RSA here, parses
/// its keys on every call and has no API to keep them.
#[derive(Debug)]
pub struct PreparedKey(Option<ed25519_dalek::VerifyingKey>);

impl PreparedKey {
    /// Parses what can be kept; an unusable key is left for [`verify_with`] to reject.
    pub(crate) fn new(key: &PublicKey) -> PreparedKey {
        PreparedKey(match key {
            PublicKey::Ed25519 { key } => ed25519_dalek::VerifyingKey::from_bytes(key).ok(),
            _ => None,
        })
    }
}

/// Verify `signature` over `data` with `key` under `scheme`.
///
/// Returns `Err` with a short reason on mismatch, wrong key type for the
/// scheme, wrong signature length or wrong digest length.
pub fn verify(
    key: &PublicKey,
    scheme: &Scheme,
    data: SignedData<'_>,
    signature: &[u8],
) -> CryptoResult<()> {
    verify_with(&PreparedKey(None), key, scheme, data, signature)
}

/// [`verify`] with what of `key` was parsed before (`prepared`, made from the same key).
pub fn verify_with(
    prepared: &PreparedKey,
    key: &PublicKey,
    scheme: &Scheme,
    data: SignedData<'_>,
    signature: &[u8],
) -> CryptoResult<()> {
    match (key, scheme) {
        (
            PublicKey::Rsa {
                modulus, exponent, ..
            },
            Scheme::RsaPkcs1v15(_) | Scheme::RsaPkcs1v15Raw | Scheme::RsaPss(_),
        ) => rsa::verify(modulus, exponent, scheme, data, signature),
        (PublicKey::Ec { curve, point }, Scheme::Ecdsa(h)) => {
            if let (SignedData::Message(m), Some(alg)) = (data, ring_ecdsa(*curve, *h)) {
                // The common hash-and-sign pairs go through ring's constant-time, assembly
                // ECDSA: several times faster than the generic path, same result.
                return ring::signature::UnparsedPublicKey::new(alg, point)
                    .verify(m, signature)
                    .map_err(|_| fail("ECDSA signature does not verify"));
            }
            let digest = match data {
                SignedData::Message(m) => h.digest(m),
                SignedData::Digest(d) => d.to_vec(),
                SignedData::MessageInContext(..) => return Err(fail("ECDSA takes no context")),
            };
            verify_ecdsa(*curve, point, &digest, signature)
        }
        (PublicKey::Ed25519 { key }, Scheme::Ed25519) => {
            let msg = match data {
                SignedData::Message(m) => m,
                SignedData::Digest(_) => return Err(fail("Ed25519 signs messages, not digests")),
                SignedData::MessageInContext(..) => {
                    return Err(fail("Ed25519 (pure) takes no context"))
                }
            };
            match &prepared.0 {
                Some(vk) => verify_ed25519_prepared(vk, msg, signature),
                None => verify_ed25519(key, msg, signature),
            }
        }
        (PublicKey::MlDsa { set, key }, Scheme::MlDsa) => {
            let (m, ctx) = message_of(data)?;
            super::pqc::verify_ml_dsa(*set, key, m, ctx, signature)
        }
        (PublicKey::SlhDsa { set, key }, Scheme::SlhDsa) => {
            let (m, ctx) = message_of(data)?;
            super::pqc::verify_slh_dsa(*set, key, m, ctx, signature)
        }
        (PublicKey::Hss(key), Scheme::Hss) => match data {
            SignedData::Message(m) => super::pqc::verify_hss(key, m, signature),
            _ => Err(fail("HSS signs messages, without a context")),
        },
        (k, s) => Err(CryptoError::new(format!(
            "scheme {s:?} does not apply to a {} key",
            k.kind()
        ))),
    }
}

/// The message and context of a pure ML-DSA / SLH-DSA signature (they sign messages, not
/// digests).
fn message_of(data: SignedData<'_>) -> CryptoResult<(&[u8], &[u8])> {
    match data {
        SignedData::Message(m) => Ok((m, &[])),
        SignedData::MessageInContext(m, ctx) => Ok((m, ctx)),
        SignedData::Digest(_) => Err(fail("pure signatures sign messages, not digests")),
    }
}

/// The order L of the Ed25519 base point (RFC 8032 §5.1), little-endian.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Checks that `signature` has the form of a signature by `key`, without the public-key
/// operation (microseconds; what is checked of every signature the TSB returns, also with
/// `verifySignatures: false`):
/// - RSA: exactly the modulus length, and as an integer in [2, n-1] (RFC 8017 §5.2.2: RSAVP1
///   takes s < n; 0 and 1 are their own powers and never a valid encoding);
/// - ECDSA, raw `r || s` (PKCS#11 v2.40 Current Mechanisms §2.3.1): exactly twice the field
///   size, r and s in [1, n-1] (FIPS 186-4 §6.4.2 step 1);
/// - Ed25519: 64 bytes with S < L (RFC 8032 §5.1.7 step 1);
/// - ML-DSA, SLH-DSA: exactly the parameter set's signature length (FIPS 204 Table 1, FIPS 205
///   Table 2); HSS: the length the key's level types give, with Nspk = L - 1 (RFC 8554 §6.2).
pub fn check_form(key: &PublicKey, signature: &[u8]) -> CryptoResult<()> {
    let want = key.signature_len();
    if signature.len() != want {
        return Err(CryptoError::new(format!(
            "{} bytes, expected {want}",
            signature.len()
        )));
    }
    match key {
        PublicKey::Rsa { modulus, .. } => {
            // Both big-endian; the modulus has no leading zero bytes, the signature is
            // left-padded to its length.
            let sig = &signature[signature.len().saturating_sub(modulus.len())..];
            let below_n = signature[..signature.len() - sig.len()]
                .iter()
                .all(|&b| b == 0)
                && sig.len() == modulus.len()
                && sig < modulus.as_slice();
            if !below_n {
                return Err(fail("RSA signature not below the modulus"));
            }
            let small = signature[..signature.len() - 1].iter().all(|&b| b == 0)
                && signature[signature.len() - 1] < 2;
            if small {
                return Err(fail("RSA signature is 0 or 1"));
            }
            Ok(())
        }
        PublicKey::Ec { curve, .. } => {
            let range = |ok: bool| {
                if ok {
                    Ok(())
                } else {
                    Err(fail("ECDSA signature r or s out of range"))
                }
            };
            match curve {
                Curve::P256 => {
                    range(ecdsa::Signature::<p256::NistP256>::from_slice(signature).is_ok())
                }
                Curve::P384 => {
                    range(ecdsa::Signature::<p384::NistP384>::from_slice(signature).is_ok())
                }
                Curve::P521 => {
                    range(ecdsa::Signature::<p521::NistP521>::from_slice(signature).is_ok())
                }
                Curve::Secp256k1 => {
                    range(ecdsa::Signature::<k256::Secp256k1>::from_slice(signature).is_ok())
                }
            }
        }
        PublicKey::Ed25519 { .. } => {
            // S, little-endian, compared from its most significant byte.
            let s = &signature[32..];
            let below_l = s.iter().rev().cmp(ED25519_L.iter().rev()) == std::cmp::Ordering::Less;
            if below_l {
                Ok(())
            } else {
                Err(fail("Ed25519 signature S not below the group order"))
            }
        }
        PublicKey::MlDsa { .. } | PublicKey::SlhDsa { .. } => Ok(()),
        PublicKey::Hss(h) => {
            let nspk = u32::from_be_bytes([signature[0], signature[1], signature[2], signature[3]]);
            if nspk as usize + 1 == h.level_count() {
                Ok(())
            } else {
                Err(fail("HSS signature for another number of levels"))
            }
        }
    }
}

/// ring's fixed-width (r‖s) ECDSA verifier for a curve and message hash, where it has one.
fn ring_ecdsa(
    curve: Curve,
    hash: HashAlg,
) -> Option<&'static ring::signature::EcdsaVerificationAlgorithm> {
    match (curve, hash) {
        (Curve::P256, HashAlg::Sha256) => Some(&ring::signature::ECDSA_P256_SHA256_FIXED),
        (Curve::P384, HashAlg::Sha384) => Some(&ring::signature::ECDSA_P384_SHA384_FIXED),
        _ => None,
    }
}

/// The ECDSA hash input as an integer encoded in exactly
/// `curve.field_bytes()` bytes (ANSI X9.62 §7.4.1 / FIPS 186-4 §6.4 step 2 /
/// SEC 1 §4.1.4 step 5): a digest longer than the order is truncated to its
/// leftmost `order_bits` bits; shorter digests keep their integer value
/// (left-padded with zero bytes).
pub(crate) fn ecdsa_hash_to_field(curve: Curve, digest: &[u8]) -> Vec<u8> {
    let fb = curve.field_bytes();
    let ob = curve.order_bits();
    let mut value: Vec<u8>;
    if digest.len() * 8 > ob {
        let nbytes = ob.div_ceil(8);
        let shift = nbytes * 8 - ob;
        let top = &digest[..nbytes];
        value = top.to_vec();
        if shift > 0 {
            for i in (0..nbytes).rev() {
                let lower = top[i] >> shift;
                let carry = if i > 0 { top[i - 1] << (8 - shift) } else { 0 };
                value[i] = lower | carry;
            }
        }
    } else {
        value = digest.to_vec();
    }
    // value.len() <= fb here: either <= ob bits, or nbytes <= fb.
    let mut out = vec![0u8; fb - value.len()];
    out.append(&mut value);
    out
}

/// Verify on a concrete curve type (a macro rather than a generic function:
/// the generic bounds would need the deprecated generic-array 0.14 traits).
macro_rules! ecdsa_verify_on {
    ($curve:ty, $point:expr, $z:expr, $sig:expr) => {{
        let vk = ecdsa::VerifyingKey::<$curve>::from_sec1_bytes($point)
            .map_err(|_| fail("invalid EC public key"))?;
        let sig = ecdsa::Signature::<$curve>::from_slice($sig)
            .map_err(|_| fail("ECDSA signature r or s out of range"))?;
        // (r, s) and (r, n - s) are both valid; k256 only accepts low s
        // (BIP 62), the HSM need not normalise, so normalise here.
        let sig = sig.normalize_s().unwrap_or(sig);
        vk.verify_prehash($z, &sig)
            .map_err(|_| fail("ECDSA signature mismatch"))
    }};
}

/// ECDSA verification of a raw `r || s` signature over `digest`
/// (any non-empty length, see [`ecdsa_hash_to_field`]). High-s signatures
/// are accepted.
pub(crate) fn verify_ecdsa(
    curve: Curve,
    point: &[u8],
    digest: &[u8],
    sig: &[u8],
) -> CryptoResult<()> {
    if sig.len() != 2 * curve.field_bytes() {
        return Err(fail("ECDSA signature must be r||s of 2*field size bytes"));
    }
    if digest.is_empty() {
        return Err(fail("empty ECDSA digest"));
    }
    let z = ecdsa_hash_to_field(curve, digest);
    match curve {
        Curve::P256 => ecdsa_verify_on!(p256::NistP256, point, &z, sig),
        Curve::P384 => ecdsa_verify_on!(p384::NistP384, point, &z, sig),
        Curve::P521 => ecdsa_verify_on!(p521::NistP521, point, &z, sig),
        Curve::Secp256k1 => ecdsa_verify_on!(k256::Secp256k1, point, &z, sig),
    }
}

/// Ed25519 verification (RFC 8032 §5.1.7), ring's.
pub(crate) fn verify_ed25519(key: &[u8; 32], msg: &[u8], sig: &[u8]) -> CryptoResult<()> {
    if sig.len() != 64 {
        return Err(fail("Ed25519 signature must be 64 bytes"));
    }
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(msg, sig)
        .map_err(|_| fail("Ed25519 signature mismatch"))
}

/// Ed25519 verification (RFC 8032 §5.1.7, cofactorless like ring's: S must be canonical,
/// the encoding of [S]B - [k]A must equal R) with the point decompressed before.
fn verify_ed25519_prepared(
    key: &ed25519_dalek::VerifyingKey,
    msg: &[u8],
    sig: &[u8],
) -> CryptoResult<()> {
    use ed25519_dalek::Verifier;
    let sig = ed25519_dalek::Signature::from_slice(sig)
        .map_err(|_| fail("Ed25519 signature must be 64 bytes"))?;
    key.verify(msg, &sig)
        .map_err(|_| fail("Ed25519 signature mismatch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_to_field_p521() {
        // 64-byte digest on P-521: integer unchanged, padded to 66 bytes.
        let d = [0xffu8; 64];
        let z = ecdsa_hash_to_field(Curve::P521, &d);
        assert_eq!(z.len(), 66);
        assert_eq!(&z[..2], &[0, 0]);
        assert_eq!(&z[2..], &d[..]);
        // 66-byte digest: leftmost 521 bits, i.e. shifted right by 7.
        let mut d = vec![0u8; 66];
        d[0] = 0x80;
        let z = ecdsa_hash_to_field(Curve::P521, &d);
        assert_eq!(z.len(), 66);
        assert_eq!(z[0], 0x01);
        assert!(z[1..].iter().all(|&b| b == 0));
        // P-256 with a 48-byte digest: leftmost 32 bytes.
        let d: Vec<u8> = (0..48).collect();
        assert_eq!(ecdsa_hash_to_field(Curve::P256, &d), d[..32].to_vec());
        // short digest: left padding.
        let z = ecdsa_hash_to_field(Curve::P384, &[1, 2, 3]);
        assert_eq!(z.len(), 48);
        assert_eq!(&z[45..], &[1, 2, 3]);
    }
}
