//! What a signature is over, and by which scheme: the words of `verify` and `verify/rsa.rs`.

use crate::crypto::hash::HashAlg;

/// What the signed bytes are.
#[derive(Clone, Copy, Debug)]
pub enum SignedData<'a> {
    /// The message itself (the scheme's hash is applied, if it has one).
    Message(&'a [u8]),
    /// A precomputed digest (for `RsaPkcs1v15Raw` the input block itself).
    Digest(&'a [u8]),
    /// The message and a non-empty context string (ML-DSA, SLH-DSA: FIPS 204 §5.2, FIPS 205
    /// §10.2). `Message` is the same with the empty context.
    MessageInContext(&'a [u8], &'a [u8]),
}

/// Signature scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// RSASSA-PKCS1-v1_5 with the DigestInfo of the hash (RFC 8017 §8.2).
    RsaPkcs1v15(HashAlg),
    /// `CKM_RSA_PKCS`: type-1 padding of arbitrary input of at most k-11
    /// bytes, no DigestInfo added (the input usually is a DigestInfo).
    RsaPkcs1v15Raw,
    /// RSASSA-PSS, MGF1 with the same hash, salt length = hash length
    /// (RFC 8017 §8.1, §9.1).
    RsaPss(HashAlg),
    /// ECDSA over hash(message) or over the given digest (X9.62 truncation
    /// to the order length; shorter digests are taken as integers).
    /// Signature is raw `r || s`.
    Ecdsa(HashAlg),
    /// Pure Ed25519 over the message (RFC 8032 §5.1).
    Ed25519,
    /// Pure ML-DSA over the message, empty context (FIPS 204 §5.2).
    MlDsa,
    /// Pure SLH-DSA over the message, empty context (FIPS 205 §10.2).
    SlhDsa,
    /// HSS over the message (RFC 8554 §6.3).
    Hss,
}
