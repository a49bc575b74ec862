//! RSA signature verification without the `rsa` crate (RUSTSEC-2023-0071).
//!
//! Two paths, one answer:
//!
//! * **ring** verifies what it can: a whole message, RSASSA-PKCS1-v1_5 with SHA-1/256/384/512
//!   or RSASSA-PSS with SHA-256/384/512 and a salt as long as the hash, keys of 2048 to 8192
//!   bits. ring takes messages only: it has no entry point for a precomputed digest, for
//!   `CKM_RSA_PKCS` input without a DigestInfo, for SHA-224, for other PSS salt lengths or for
//!   smaller keys.
//! * **Everything** (and whatever ring did not accept) goes through the public-key operation
//!   RSAVP1 (RFC 8017 §5.2.2, `crypto-bigint` modular exponentiation: public values only, so
//!   no constant-time concern) and a check of the recovered encoded message: for PKCS#1 v1.5
//!   the expected encoding is rebuilt and compared (RFC 8017 §8.2.2 steps 2-4, EMSA-PKCS1-v1_5
//!   §9.2); for PSS, EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with MGF1 (§B.2.1).
//!
//! A signature is accepted when either path accepts it; a rejection always comes from the
//! second path, so the error is the same whatever ring supports.

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Limb, Uint, Word};

use super::scheme::{Scheme, SignedData};
use crate::crypto::error::{CryptoError, CryptoResult};
use crate::crypto::hash::{digest_info, HashAlg, Hasher};

/// Largest RSA modulus accepted for verification, in bits.
pub(crate) const RSA_MAX_BITS: usize = 16384;

/// Largest public exponent accepted (as the `rsa` crate and ring: below 2^33).
const MAX_EXPONENT: u64 = (1 << 33) - 1;

fn fail(msg: &str) -> CryptoError {
    CryptoError::new(msg)
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let i = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[i..]
}

/// Verify an RSA `signature` under `scheme` (one of the RSA schemes).
pub(crate) fn verify(
    modulus: &[u8],
    exponent: &[u8],
    scheme: &Scheme,
    data: SignedData<'_>,
    signature: &[u8],
) -> CryptoResult<()> {
    let modulus = strip_zeros(modulus);
    let exponent = strip_zeros(exponent);
    let k = modulus.len();
    if k == 0 || k * 8 > RSA_MAX_BITS || modulus[k - 1] & 1 == 0 {
        return Err(fail("unusable RSA public key"));
    }
    let e = match exponent.len() {
        1..=8 => exponent.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64),
        _ => 0,
    };
    if !(2..=MAX_EXPONENT).contains(&e) {
        return Err(fail("unusable RSA public key"));
    }
    if signature.len() != k {
        return Err(fail("RSA signature length differs from the modulus length"));
    }
    if let (SignedData::Message(m), Some(params)) = (data, ring_params(scheme, k)) {
        let key = ring::signature::RsaPublicKeyComponents {
            n: modulus,
            e: exponent,
        };
        if key.verify(params, m, signature).is_ok() {
            return Ok(());
        }
    }
    verify_recovered(modulus, e, scheme, data, signature)
}

/// The second path of [`verify`]: RSAVP1 and a check of the encoded message. `modulus` has
/// no leading zeros, is odd and as long as `signature`.
pub(in crate::crypto) fn verify_recovered(
    modulus: &[u8],
    e: u64,
    scheme: &Scheme,
    data: SignedData<'_>,
    signature: &[u8],
) -> CryptoResult<()> {
    let k = modulus.len();
    let em = rsavp1(modulus, e, signature)?;
    let mismatch = || fail("RSA signature mismatch");
    match *scheme {
        Scheme::RsaPkcs1v15(h) => {
            let d = hashed(h, data)?;
            if em == emsa_pkcs1_v15(&digest_info(h, &d), k)? {
                return Ok(());
            }
            // DigestInfo with absent instead of NULL parameters (RFC 8017 §9.2 note 2).
            let mut t = h.digest_info_prefix_no_null();
            t.extend_from_slice(&d);
            (em == emsa_pkcs1_v15(&t, k)?)
                .then_some(())
                .ok_or_else(mismatch)
        }
        Scheme::RsaPkcs1v15Raw => {
            let (SignedData::Message(t) | SignedData::Digest(t)) = data else {
                return Err(fail("RSA signatures take no context"));
            };
            if t.len() + 11 > k {
                return Err(fail("CKM_RSA_PKCS input longer than k-11 bytes"));
            }
            (em == emsa_pkcs1_v15(t, k)?)
                .then_some(())
                .ok_or_else(mismatch)
        }
        Scheme::RsaPss(h) => {
            let d = hashed(h, data)?;
            emsa_pss_verify(h, &d, &em, h.output_len(), bit_len(modulus) - 1)
                .then_some(())
                .ok_or_else(mismatch)
        }
        _ => Err(fail("not an RSA scheme")),
    }
}

/// ring's verifier for `scheme` with a `k`-byte modulus, where ring has one.
fn ring_params(scheme: &Scheme, k: usize) -> Option<&'static ring::signature::RsaParameters> {
    use ring::signature as r;
    if !(256..=1024).contains(&k) {
        return None;
    }
    let pss = |h: HashAlg| -> Option<&'static r::RsaParameters> {
        match h {
            HashAlg::Sha256 => Some(&r::RSA_PSS_2048_8192_SHA256),
            HashAlg::Sha384 => Some(&r::RSA_PSS_2048_8192_SHA384),
            HashAlg::Sha512 => Some(&r::RSA_PSS_2048_8192_SHA512),
            HashAlg::Sha1 | HashAlg::Sha224 => None,
        }
    };
    match *scheme {
        Scheme::RsaPkcs1v15(h) => match h {
            HashAlg::Sha1 => Some(&r::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY),
            HashAlg::Sha256 => Some(&r::RSA_PKCS1_2048_8192_SHA256),
            HashAlg::Sha384 => Some(&r::RSA_PKCS1_2048_8192_SHA384),
            HashAlg::Sha512 => Some(&r::RSA_PKCS1_2048_8192_SHA512),
            HashAlg::Sha224 => None,
        },
        Scheme::RsaPss(h) => pss(h),
        _ => None,
    }
}

fn hashed(h: HashAlg, data: SignedData<'_>) -> CryptoResult<Vec<u8>> {
    match data {
        SignedData::Message(m) => Ok(h.digest(m)),
        SignedData::Digest(d) if d.len() == h.output_len() => Ok(d.to_vec()),
        SignedData::Digest(_) => Err(CryptoError::new(format!(
            "digest length does not match {}",
            h.name()
        ))),
        SignedData::MessageInContext(..) => Err(CryptoError::new("this scheme takes no context")),
    }
}

fn bit_len(v: &[u8]) -> usize {
    let v = strip_zeros(v);
    match v.first() {
        None => 0,
        Some(&b) => v.len() * 8 - b.leading_zeros() as usize,
    }
}

/// RSAVP1 (RFC 8017 §5.2.2): `s^e mod n` as a `k`-byte string (`k` = modulus length).
/// `modulus` has no leading zero bytes and is odd; `signature` has `k` bytes.
fn rsavp1(modulus: &[u8], e: u64, signature: &[u8]) -> CryptoResult<Vec<u8>> {
    let bits = modulus.len() * 8;
    let out = if bits <= 2048 {
        modpow::<{ crypto_bigint::U2048::LIMBS }>(modulus, e, signature)
    } else if bits <= 3072 {
        modpow::<{ crypto_bigint::U3072::LIMBS }>(modulus, e, signature)
    } else if bits <= 4096 {
        modpow::<{ crypto_bigint::U4096::LIMBS }>(modulus, e, signature)
    } else if bits <= 8192 {
        modpow::<{ crypto_bigint::U8192::LIMBS }>(modulus, e, signature)
    } else {
        modpow::<{ crypto_bigint::U16384::LIMBS }>(modulus, e, signature)
    };
    out.ok_or_else(|| fail("RSA signature representative out of range"))
}

fn to_uint<const L: usize>(bytes: &[u8]) -> Uint<L> {
    let mut buf = vec![0u8; L * Limb::BYTES];
    buf[L * Limb::BYTES - bytes.len()..].copy_from_slice(bytes);
    Uint::from_be_slice(&buf)
}

/// `s^e mod n` in `L` limbs; `None` when `s >= n` (RFC 8017 §5.2.2 step 1).
fn modpow<const L: usize>(n: &[u8], e: u64, s: &[u8]) -> Option<Vec<u8>> {
    let k = n.len();
    let odd = n.last().is_some_and(|b| b & 1 == 1);
    let n = to_uint::<L>(n);
    let s = to_uint::<L>(s);
    if s >= n || !odd {
        return None;
    }
    let params = DynResidueParams::new(&n);
    let exp = crypto_bigint::U64::from_u64(e);
    let m = DynResidue::new(&s, params)
        .pow_bounded_exp(&exp, 64 - e.leading_zeros() as usize)
        .retrieve();
    let be: Vec<u8> = m
        .as_words()
        .iter()
        .rev()
        .flat_map(|w: &Word| w.to_be_bytes())
        .collect();
    Some(be[be.len() - k..].to_vec())
}

/// EMSA-PKCS1-v1_5 encoding of `t` (a DigestInfo, or the raw `CKM_RSA_PKCS` input) into
/// `k` bytes: `00 01 FF..FF 00 || t` with at least 8 `FF` bytes (RFC 8017 §9.2 steps 3-5).
fn emsa_pkcs1_v15(t: &[u8], k: usize) -> CryptoResult<Vec<u8>> {
    if t.len() + 11 > k {
        return Err(fail("RSA modulus too short for this digest"));
    }
    let mut em = vec![0xffu8; k];
    em[0] = 0;
    em[1] = 1;
    em[k - t.len() - 1] = 0;
    em[k - t.len()..].copy_from_slice(t);
    Ok(em)
}

/// MGF1 (RFC 8017 §B.2.1) with hash `h`: `len` bytes from `seed`.
fn mgf1(h: HashAlg, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + h.output_len());
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut hasher = Hasher::new(h);
        hasher.update(seed);
        hasher.update(&counter.to_be_bytes());
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// EMSA-PSS-VERIFY (RFC 8017 §9.1.2) of the `k`-byte RSAVP1 output `em` against the digest
/// `m_hash`, MGF1 with the same hash, salt of exactly `s_len` bytes; `em_bits` is the
/// modulus length in bits minus one.
fn emsa_pss_verify(h: HashAlg, m_hash: &[u8], em: &[u8], s_len: usize, em_bits: usize) -> bool {
    let h_len = h.output_len();
    let em_len = em_bits.div_ceil(8);
    // RFC 8017 §8.1.2 step 2c: EM is the emLen-byte string; a k-byte output has one
    // more (zero) leading byte when emBits is a multiple of 8.
    let (lead, em) = em.split_at(em.len() - em_len);
    if lead.iter().any(|&b| b != 0) {
        return false;
    }
    // Step 3.
    if em_len < h_len + s_len + 2 {
        return false;
    }
    // Step 4.
    if em[em_len - 1] != 0xbc {
        return false;
    }
    // Step 5.
    let (masked_db, rest) = em.split_at(em_len - h_len - 1);
    let hash = &rest[..h_len];
    // Step 6: the top 8*emLen - emBits bits must be zero.
    let top_mask = 0xffu8 >> (8 * em_len - em_bits);
    if masked_db[0] & !top_mask != 0 {
        return false;
    }
    // Steps 7-9.
    let mut db: Vec<u8> = masked_db
        .iter()
        .zip(mgf1(h, hash, masked_db.len()))
        .map(|(a, b)| a ^ b)
        .collect();
    db[0] &= top_mask;
    // Step 10: PS zeros, then 0x01.
    let ps_len = em_len - h_len - s_len - 2;
    if db[..ps_len].iter().any(|&b| b != 0) || db[ps_len] != 0x01 {
        return false;
    }
    // Steps 11-14.
    let salt = &db[db.len() - s_len..];
    let mut hasher = Hasher::new(h);
    hasher.update(&[0u8; 8]);
    hasher.update(m_hash);
    hasher.update(salt);
    hasher.finalize() == hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs1_encoding_layout() {
        let em = emsa_pkcs1_v15(&[7, 8, 9], 16).unwrap();
        assert_eq!(
            em,
            [0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 7, 8, 9]
        );
        assert!(emsa_pkcs1_v15(&[0; 6], 16).is_err());
        assert!(emsa_pkcs1_v15(&[0; 5], 16).is_ok());
    }

    #[test]
    fn modpow_small_numbers() {
        // 3^3 mod 11 = 5; 4^3 mod 11 = 9; s >= n is out of range.
        assert_eq!(modpow::<1>(&[11], 3, &[3]).unwrap(), [5]);
        assert_eq!(modpow::<1>(&[11], 3, &[4]).unwrap(), [9]);
        assert!(modpow::<1>(&[11], 3, &[11]).is_none());
        // two-byte modulus keeps the leading zero byte of the result
        assert_eq!(modpow::<1>(&[0x01, 0x01], 3, &[0, 2]).unwrap(), [0, 8]);
    }
}
