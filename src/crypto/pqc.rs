//! Post-quantum signature keys: parameter sets, sizes, public-key encodings and verification.
//!
//! * ML-DSA, FIPS 204 (Table 1 sizes: public key 1312/1952/2592 bytes, signature
//!   2420/3309/4627 bytes); SubjectPublicKeyInfo per RFC 9881 (OIDs 2.16.840.1.101.3.4.3.17-19,
//!   no parameters, the raw public key in the BIT STRING).
//! * SLH-DSA, FIPS 205 (Table 2 sizes); SubjectPublicKeyInfo per RFC 9909 (OIDs
//!   2.16.840.1.101.3.4.3.20-31, no parameters, raw public key).
//! * HSS/LMS, RFC 8554 §5.3 and §6.1 (public key `u32 L || u32 lms_type || u32 ots_type || I ||
//!   T[1]`, signature `u32 Nspk || (signed public keys) || LMS signature`), the SHA-256 (m = n =
//!   32) types of RFC 8554 §3.3 and SP 800-208 §4; SubjectPublicKeyInfo per RFC 9708 (OID
//!   id-alg-hss-lms-hashsig 1.2.840.113549.1.9.16.3.17, raw HSS public key).
//!
//! Verification uses RustCrypto `ml-dsa` and `slh-dsa` and Fraunhofer AISEC's `hbs-lms`: pure
//! signatures (the message itself, no pre-hash), with the empty context (FIPS 204 §5.2, FIPS 205
//! §10.2: ctx of length 0).

use super::error::{CryptoError, CryptoResult};

fn fail(msg: impl Into<String>) -> CryptoError {
    CryptoError::new(msg)
}

/// An ML-DSA parameter set (FIPS 204 §4, Table 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlDsaSet {
    MlDsa44,
    MlDsa65,
    MlDsa87,
}

impl MlDsaSet {
    pub const ALL: [MlDsaSet; 3] = [MlDsaSet::MlDsa44, MlDsaSet::MlDsa65, MlDsaSet::MlDsa87];

    /// The name FIPS 204 and the TSB use: `ML-DSA-65`.
    pub fn name(self) -> &'static str {
        match self {
            MlDsaSet::MlDsa44 => "ML-DSA-44",
            MlDsaSet::MlDsa65 => "ML-DSA-65",
            MlDsaSet::MlDsa87 => "ML-DSA-87",
        }
    }

    /// id-ml-dsa-44/65/87 (RFC 9881 §2, NIST CSOR sigAlgs 17-19).
    pub(crate) fn oid(self) -> &'static str {
        match self {
            MlDsaSet::MlDsa44 => "2.16.840.1.101.3.4.3.17",
            MlDsaSet::MlDsa65 => "2.16.840.1.101.3.4.3.18",
            MlDsaSet::MlDsa87 => "2.16.840.1.101.3.4.3.19",
        }
    }

    pub fn public_key_len(self) -> usize {
        match self {
            MlDsaSet::MlDsa44 => 1312,
            MlDsaSet::MlDsa65 => 1952,
            MlDsaSet::MlDsa87 => 2592,
        }
    }

    pub fn signature_len(self) -> usize {
        match self {
            MlDsaSet::MlDsa44 => 2420,
            MlDsaSet::MlDsa65 => 3309,
            MlDsaSet::MlDsa87 => 4627,
        }
    }

    /// The set named `name` (`ML-DSA-65`, any case, `_` for `-`; the TSB's older
    /// `DILITHIUM_L2/L3/L5` are pre-standard Dilithium, not ML-DSA, and are not matched).
    pub(crate) fn from_name(name: &str) -> Option<MlDsaSet> {
        let n = normalise(name);
        MlDsaSet::ALL.into_iter().find(|s| normalise(s.name()) == n)
    }
}

/// The hash family of an SLH-DSA parameter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlhHash {
    Sha2,
    Shake,
}

/// An SLH-DSA parameter set (FIPS 205 §11, Table 2): hash family, security level n·8 and the
/// small ("s") or fast ("f") variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlhDsaSet {
    pub hash: SlhHash,
    /// 128, 192 or 256.
    pub level: u16,
    /// The "f" (fast, larger signatures) variant; else "s".
    pub fast: bool,
}

impl SlhDsaSet {
    /// The twelve sets in the order of `CKP_SLH_DSA_*` (PKCS#11 v3.2 pkcs11t.h: SHA2_128S
    /// = 1, SHAKE_128S = 2, SHA2_128F = 3, ... SHAKE_256F = 12).
    pub const ALL: [SlhDsaSet; 12] = {
        const fn s(hash: SlhHash, level: u16, fast: bool) -> SlhDsaSet {
            SlhDsaSet { hash, level, fast }
        }
        use SlhHash::{Sha2, Shake};
        [
            s(Sha2, 128, false),
            s(Shake, 128, false),
            s(Sha2, 128, true),
            s(Shake, 128, true),
            s(Sha2, 192, false),
            s(Shake, 192, false),
            s(Sha2, 192, true),
            s(Shake, 192, true),
            s(Sha2, 256, false),
            s(Shake, 256, false),
            s(Sha2, 256, true),
            s(Shake, 256, true),
        ]
    };

    /// The FIPS 205 name, as the TSB spells it: `SLH-DSA-SHA2-128f`.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 12] = [
            "SLH-DSA-SHA2-128s",
            "SLH-DSA-SHAKE-128s",
            "SLH-DSA-SHA2-128f",
            "SLH-DSA-SHAKE-128f",
            "SLH-DSA-SHA2-192s",
            "SLH-DSA-SHAKE-192s",
            "SLH-DSA-SHA2-192f",
            "SLH-DSA-SHAKE-192f",
            "SLH-DSA-SHA2-256s",
            "SLH-DSA-SHAKE-256s",
            "SLH-DSA-SHA2-256f",
            "SLH-DSA-SHAKE-256f",
        ];
        NAMES[self.index()]
    }

    /// The set named `name` (`SLH-DSA-SHA2-128f`, any case, `_` for `-`).
    pub(crate) fn from_name(name: &str) -> Option<SlhDsaSet> {
        let n = normalise(name);
        SlhDsaSet::ALL
            .into_iter()
            .find(|s| normalise(s.name()) == n)
    }

    /// Position in [`SlhDsaSet::ALL`] (0-based).
    pub fn index(self) -> usize {
        SlhDsaSet::ALL
            .iter()
            .position(|s| *s == self)
            .expect("a set of ALL")
    }

    /// id-slh-dsa-* (RFC 9909 §3; NIST CSOR sigAlgs 20-31: sha2-128s, sha2-128f, sha2-192s,
    /// sha2-192f, sha2-256s, sha2-256f, then the same six for SHAKE).
    pub(crate) fn oid(self) -> String {
        let level = match self.level {
            128 => 0,
            192 => 1,
            _ => 2,
        };
        let hash = match self.hash {
            SlhHash::Sha2 => 0,
            SlhHash::Shake => 6,
        };
        format!(
            "2.16.840.1.101.3.4.3.{}",
            20 + hash + 2 * level + usize::from(self.fast)
        )
    }

    pub fn public_key_len(self) -> usize {
        2 * usize::from(self.level / 8)
    }

    /// FIPS 205 Table 2.
    pub fn signature_len(self) -> usize {
        match (self.level, self.fast) {
            (128, false) => 7856,
            (128, true) => 17088,
            (192, false) => 16224,
            (192, true) => 35664,
            (256, false) => 29792,
            _ => 49856,
        }
    }
}

/// Names compare without case, with `_` and `-` alike.
fn normalise(name: &str) -> String {
    name.trim().to_ascii_uppercase().replace('_', "-")
}

/// LMS types with SHA-256, m = 32 (RFC 8554 §3.3 / IANA "LMS Signatures"): 5..=9, tree height
/// 5, 10, 15, 20, 25.
pub fn lms_height(lms_type: u32) -> Option<u32> {
    match lms_type {
        5..=9 => Some(5 * (lms_type - 4)),
        _ => None,
    }
}

/// LM-OTS types with SHA-256, n = 32 (RFC 8554 §4.1 / IANA "LM-OTS Signatures"): 1..=4, w =
/// 1, 2, 4, 8; the number p of n-byte elements of a signature (RFC 8554 Table 1).
pub fn lmots_p(ots_type: u32) -> Option<usize> {
    match ots_type {
        1 => Some(265),
        2 => Some(133),
        3 => Some(67),
        4 => Some(34),
        _ => None,
    }
}

const LMS_N: usize = 32;
/// An LMS public key: type, OTS type, I (16 bytes), T[1] (RFC 8554 §5.3).
const LMS_PUBLIC_KEY_LEN: usize = 4 + 4 + 16 + LMS_N;
/// The most levels HSS allows (RFC 8554 §6: L from 1 to 8).
pub const HSS_MAX_LEVELS: usize = 8;

/// The length of an LMS signature of these types (RFC 8554 §5.4: q, LM-OTS signature of
/// `4 + n + p·n` bytes, type, h path nodes of m bytes).
fn lms_signature_len(lms_type: u32, ots_type: u32) -> Option<usize> {
    let h = lms_height(lms_type)? as usize;
    let p = lmots_p(ots_type)?;
    Some(4 + (4 + LMS_N + p * LMS_N) + 4 + h * LMS_N)
}

/// An HSS public key (RFC 8554 §6.1) and the LMS/LM-OTS types of each level. The key names only
/// the top level's types; lower levels are taken to have the same (the TSB reports no others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HssKey {
    /// The HSS public key, `u32 L || LMS public key`.
    pub key: Vec<u8>,
    /// `(lms_type, ots_type)` for level 1..=L.
    pub levels: Vec<(u32, u32)>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl HssKey {
    /// Parses an HSS public key; a bare LMS public key (RFC 8554 §5.3, the form a single-tree
    /// "LMS" key may be given in) is taken as HSS with L = 1 (RFC 8554 §6: an HSS key of one
    /// level is `u32 1 || LMS public key`).
    pub(crate) fn from_raw(raw: &[u8]) -> CryptoResult<HssKey> {
        let key = match raw.len() {
            LMS_PUBLIC_KEY_LEN => [&1u32.to_be_bytes()[..], raw].concat(),
            n if n == 4 + LMS_PUBLIC_KEY_LEN => raw.to_vec(),
            n => {
                return Err(fail(format!(
                    "an HSS public key with SHA-256/M32 is {} bytes, not {n}",
                    4 + LMS_PUBLIC_KEY_LEN
                )))
            }
        };
        let l = be32(&key[0..4]) as usize;
        if !(1..=HSS_MAX_LEVELS).contains(&l) {
            return Err(fail(format!("HSS with {l} levels")));
        }
        let (lms, ots) = (be32(&key[4..8]), be32(&key[8..12]));
        if lms_height(lms).is_none() {
            return Err(fail(format!("unsupported LMS type {lms}")));
        }
        if lmots_p(ots).is_none() {
            return Err(fail(format!("unsupported LM-OTS type {ots}")));
        }
        Ok(HssKey {
            key,
            levels: vec![(lms, ots); l],
        })
    }

    /// L.
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// RFC 8554 §6.2: `u32 Nspk`, then for each of the L-1 upper levels an LMS signature and the
    /// next level's LMS public key, then the bottom level's LMS signature.
    pub fn signature_len(&self) -> usize {
        let sig = |(l, o): (u32, u32)| lms_signature_len(l, o).expect("types checked at parse");
        4 + self.levels[..self.levels.len() - 1]
            .iter()
            .map(|&lv| sig(lv) + LMS_PUBLIC_KEY_LEN)
            .sum::<usize>()
            + sig(*self.levels.last().expect("at least one level"))
    }

    /// A signature as the TSB may give it for a one-level key: a bare LMS signature (no Nspk)
    /// becomes the HSS signature `u32 0 || LMS signature` (RFC 8554 §6.2 with L = 1). Anything
    /// else is left as it is.
    pub(crate) fn normalise_signature(&self, raw: &[u8]) -> Vec<u8> {
        if self.levels.len() == 1 && raw.len() + 4 == self.signature_len() {
            return [&0u32.to_be_bytes()[..], raw].concat();
        }
        raw.to_vec()
    }
}

/// Verifies a pure ML-DSA signature under context `ctx` (FIPS 204 Algorithm 3).
pub(crate) fn verify_ml_dsa(
    set: MlDsaSet,
    key: &[u8],
    msg: &[u8],
    ctx: &[u8],
    sig: &[u8],
) -> CryptoResult<()> {
    use ml_dsa::{MlDsa44, MlDsa65, MlDsa87, MlDsaParams};
    fn with<P: MlDsaParams>(key: &[u8], msg: &[u8], ctx: &[u8], sig: &[u8]) -> CryptoResult<()> {
        if ctx.len() > 255 {
            return Err(fail("an ML-DSA context is at most 255 bytes"));
        }
        let enc = ml_dsa::EncodedVerifyingKey::<P>::try_from(key)
            .map_err(|_| fail("ML-DSA public key of the wrong length"))?;
        let vk = ml_dsa::VerifyingKey::<P>::decode(&enc);
        let sig = ml_dsa::Signature::<P>::try_from(sig)
            .map_err(|_| fail("malformed ML-DSA signature"))?;
        if vk.verify_with_context(msg, ctx, &sig) {
            Ok(())
        } else {
            Err(fail("ML-DSA signature does not verify"))
        }
    }
    match set {
        MlDsaSet::MlDsa44 => with::<MlDsa44>(key, msg, ctx, sig),
        MlDsaSet::MlDsa65 => with::<MlDsa65>(key, msg, ctx, sig),
        MlDsaSet::MlDsa87 => with::<MlDsa87>(key, msg, ctx, sig),
    }
}

/// Verifies a pure SLH-DSA signature under context `ctx` (FIPS 205 Algorithm 24).
pub(crate) fn verify_slh_dsa(
    set: SlhDsaSet,
    key: &[u8],
    msg: &[u8],
    ctx: &[u8],
    sig: &[u8],
) -> CryptoResult<()> {
    use slh_dsa::ParameterSet;
    fn with<P: ParameterSet>(key: &[u8], msg: &[u8], ctx: &[u8], sig: &[u8]) -> CryptoResult<()> {
        let vk = slh_dsa::VerifyingKey::<P>::try_from(key)
            .map_err(|_| fail("SLH-DSA public key of the wrong length"))?;
        let sig = slh_dsa::Signature::<P>::try_from(sig)
            .map_err(|_| fail("malformed SLH-DSA signature"))?;
        vk.try_verify_with_context(msg, ctx, &sig)
            .map_err(|_| fail("SLH-DSA signature does not verify"))
    }
    use slh_dsa::*;
    match (set.hash, set.level, set.fast) {
        (SlhHash::Sha2, 128, false) => with::<Sha2_128s>(key, msg, ctx, sig),
        (SlhHash::Sha2, 128, true) => with::<Sha2_128f>(key, msg, ctx, sig),
        (SlhHash::Sha2, 192, false) => with::<Sha2_192s>(key, msg, ctx, sig),
        (SlhHash::Sha2, 192, true) => with::<Sha2_192f>(key, msg, ctx, sig),
        (SlhHash::Sha2, _, false) => with::<Sha2_256s>(key, msg, ctx, sig),
        (SlhHash::Sha2, _, true) => with::<Sha2_256f>(key, msg, ctx, sig),
        (SlhHash::Shake, 128, false) => with::<Shake128s>(key, msg, ctx, sig),
        (SlhHash::Shake, 128, true) => with::<Shake128f>(key, msg, ctx, sig),
        (SlhHash::Shake, 192, false) => with::<Shake192s>(key, msg, ctx, sig),
        (SlhHash::Shake, 192, true) => with::<Shake192f>(key, msg, ctx, sig),
        (SlhHash::Shake, _, false) => with::<Shake256s>(key, msg, ctx, sig),
        (SlhHash::Shake, _, true) => with::<Shake256f>(key, msg, ctx, sig),
    }
}

/// Verifies an HSS signature (RFC 8554 §6.3) with SHA-256/M32.
pub(crate) fn verify_hss(key: &HssKey, msg: &[u8], sig: &[u8]) -> CryptoResult<()> {
    // hbs-lms unwraps while it parses a signature (an unknown type, a short one, more levels
    // than it has room for all panic): it only ever sees one whose layout is sound.
    if !hss_well_formed(key.level_count(), sig) {
        return Err(fail("malformed HSS signature"));
    }
    hbs_lms::verify::<hbs_lms::Sha256_256>(msg, sig, &key.key)
        .map_err(|_| fail("HSS signature does not verify"))
}

/// Whether `sig` has the layout of an HSS signature of `levels` levels (RFC 8554 §6.2, each
/// LMS signature as in §5.4.2 Algorithm 6a): Nspk = L - 1; every LMS signature with a known
/// LM-OTS type and LMS type, and of their length; every signed public key with known types;
/// nothing left over.
fn hss_well_formed(levels: usize, sig: &[u8]) -> bool {
    let u32_at = |at: usize| sig.get(at..at + 4).map(be32);
    if u32_at(0).map(|nspk| nspk as usize + 1) != Some(levels) {
        return false;
    }
    let mut at = 4;
    for level in 0..levels {
        // q, then the LM-OTS signature: type, C (n bytes), p n-byte elements.
        let Some(p) = u32_at(at + 4).and_then(lmots_p) else {
            return false;
        };
        at += 4 + 4 + LMS_N + p * LMS_N;
        // The LMS type, then h path nodes of m bytes.
        let Some(h) = u32_at(at).and_then(lms_height) else {
            return false;
        };
        at += 4 + h as usize * LMS_N;
        if level + 1 < levels {
            // The next level's LMS public key.
            if u32_at(at).and_then(lms_height).is_none()
                || u32_at(at + 4).and_then(lmots_p).is_none()
            {
                return false;
            }
            at += LMS_PUBLIC_KEY_LEN;
        }
    }
    at == sig.len()
}
