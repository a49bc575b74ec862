//! SHA-1 / SHA-2 digests (FIPS 180-4) and the DER `DigestInfo` structure of
//! EMSA-PKCS1-v1_5 (RFC 8017 §9.2).

use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// Hash algorithms used by the PKCS#11 mechanisms of this module
/// (PKCS#11 v2.40 Current Mechanisms §2.16 / §2.17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

// DigestInfo prefixes, RFC 8017 §9.2 note 1.
const PREFIX_SHA1: &[u8] = &[
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const PREFIX_SHA224: &[u8] = &[
    0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05,
    0x00, 0x04, 0x1c,
];
const PREFIX_SHA256: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const PREFIX_SHA384: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const PREFIX_SHA512: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

impl HashAlg {
    /// All supported algorithms.
    pub(crate) const ALL: [HashAlg; 5] = [
        HashAlg::Sha1,
        HashAlg::Sha224,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// Digest length in bytes (FIPS 180-4).
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha224 => 28,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// One-shot digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new(self);
        h.update(data);
        h.finalize()
    }

    /// Name as used in TSB algorithm strings (`"SHA256"` in `"SHA256_WITH_RSA"`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA1",
            HashAlg::Sha224 => "SHA224",
            HashAlg::Sha256 => "SHA256",
            HashAlg::Sha384 => "SHA384",
            HashAlg::Sha512 => "SHA512",
        }
    }

    /// DER prefix of `DigestInfo` (with NULL parameters) that precedes the
    /// digest, RFC 8017 §9.2 note 1.
    pub(crate) fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            HashAlg::Sha1 => PREFIX_SHA1,
            HashAlg::Sha224 => PREFIX_SHA224,
            HashAlg::Sha256 => PREFIX_SHA256,
            HashAlg::Sha384 => PREFIX_SHA384,
            HashAlg::Sha512 => PREFIX_SHA512,
        }
    }

    /// `DigestInfo` prefix with the `AlgorithmIdentifier` parameters absent
    /// instead of NULL (permitted by RFC 5754 §2 / RFC 8017 §9.2 note 2).
    pub(crate) fn digest_info_prefix_no_null(self) -> Vec<u8> {
        let with_null = self.digest_info_prefix();
        // 30 L1 30 L2 06 len oid... 05 00 04 hlen
        let oid_tlv = &with_null[4..with_null.len() - 4];
        let mut out = Vec::with_capacity(with_null.len() - 2);
        out.push(0x30);
        out.push(with_null[1] - 2);
        out.push(0x30);
        out.push(with_null[3] - 2);
        out.extend_from_slice(oid_tlv);
        out.push(0x04);
        out.push(self.output_len() as u8);
        out
    }
}

/// Build the DER `DigestInfo` (RFC 8017 §9.2 step 2) for `digest`.
///
/// The caller must pass a digest of `alg.output_len()` bytes.
pub fn digest_info(alg: HashAlg, digest: &[u8]) -> Vec<u8> {
    debug_assert_eq!(digest.len(), alg.output_len());
    let prefix = alg.digest_info_prefix();
    let mut out = Vec::with_capacity(prefix.len() + digest.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(digest);
    out
}

/// Recognise a DER `DigestInfo` (RFC 8017 §9.2) for SHA-1/224/256/384/512
/// and return the hash algorithm and the digest.
///
/// Strict: the input must be exactly one of the canonical prefixes followed
/// by a digest of the right length. The variant with absent (instead of NULL)
/// algorithm parameters is accepted too (RFC 8017 §9.2 note 2).
pub fn parse_digest_info(data: &[u8]) -> Option<(HashAlg, &[u8])> {
    for alg in HashAlg::ALL {
        let prefix = alg.digest_info_prefix();
        if data.len() == prefix.len() + alg.output_len() && data.starts_with(prefix) {
            return Some((alg, &data[prefix.len()..]));
        }
        let prefix = alg.digest_info_prefix_no_null();
        if data.len() == prefix.len() + alg.output_len() && data.starts_with(&prefix) {
            return Some((alg, &data[prefix.len()..]));
        }
    }
    None
}

/// Incremental hashing (for multi-part `C_SignUpdate` / `C_VerifyUpdate`).
#[derive(Clone)]
pub struct Hasher {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Sha1(Sha1),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    /// Start a new digest computation.
    pub(crate) fn new(alg: HashAlg) -> Hasher {
        let inner = match alg {
            HashAlg::Sha1 => Inner::Sha1(Sha1::new()),
            HashAlg::Sha224 => Inner::Sha224(Sha224::new()),
            HashAlg::Sha256 => Inner::Sha256(Sha256::new()),
            HashAlg::Sha384 => Inner::Sha384(Sha384::new()),
            HashAlg::Sha512 => Inner::Sha512(Sha512::new()),
        };
        Hasher { inner }
    }

    /// The algorithm being computed.
    pub(crate) fn alg(&self) -> HashAlg {
        match self.inner {
            Inner::Sha1(_) => HashAlg::Sha1,
            Inner::Sha224(_) => HashAlg::Sha224,
            Inner::Sha256(_) => HashAlg::Sha256,
            Inner::Sha384(_) => HashAlg::Sha384,
            Inner::Sha512(_) => HashAlg::Sha512,
        }
    }

    /// Feed more data.
    pub(crate) fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Sha1(h) => h.update(data),
            Inner::Sha224(h) => h.update(data),
            Inner::Sha256(h) => h.update(data),
            Inner::Sha384(h) => h.update(data),
            Inner::Sha512(h) => h.update(data),
        }
    }

    /// Finish and return the digest.
    pub(crate) fn finalize(self) -> Vec<u8> {
        match self.inner {
            Inner::Sha1(h) => h.finalize().to_vec(),
            Inner::Sha224(h) => h.finalize().to_vec(),
            Inner::Sha256(h) => h.finalize().to_vec(),
            Inner::Sha384(h) => h.finalize().to_vec(),
            Inner::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("alg", &self.alg()).finish()
    }
}
