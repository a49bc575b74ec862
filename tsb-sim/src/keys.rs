//! HSM keys: generation (with in-memory and on-disk PKCS#8 caches), public keys, the key
//! attributes document of `GET /v1/key/{label}/attributes`, and every signature algorithm of
//! `/v1/synchronousSign` and `/v1/sign`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::Mutex as PlMutex;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand::rngs::OsRng;
use rand::RngCore;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, Pss, RsaPrivateKey};
use serde_json::{json, Value};
use sha2::Digest;
use signature::hazmat::PrehashSigner;

use crate::config::{Curve, KeyAlgorithm, KeySpec, ATTRIBUTE_NAMES};
use crate::error::{ApiError, SimError};

/// Hash functions used by the signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    Sha3_512,
    Keccak224,
    Keccak256,
    Keccak384,
    Keccak512,
    /// SHA-256(SHA-256(m)) (`DOUBLE_SHA256_WITH_ECDSA`).
    DoubleSha256,
}

impl Hash {
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Hash::Sha224 => sha2::Sha224::digest(data).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
            Hash::Sha3_224 => sha3::Sha3_224::digest(data).to_vec(),
            Hash::Sha3_256 => sha3::Sha3_256::digest(data).to_vec(),
            Hash::Sha3_384 => sha3::Sha3_384::digest(data).to_vec(),
            Hash::Sha3_512 => sha3::Sha3_512::digest(data).to_vec(),
            Hash::Keccak224 => sha3::Keccak224::digest(data).to_vec(),
            Hash::Keccak256 => sha3::Keccak256::digest(data).to_vec(),
            Hash::Keccak384 => sha3::Keccak384::digest(data).to_vec(),
            Hash::Keccak512 => sha3::Keccak512::digest(data).to_vec(),
            Hash::DoubleSha256 => sha2::Sha256::digest(sha2::Sha256::digest(data)).to_vec(),
        }
    }
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha224 | Hash::Sha3_224 | Hash::Keccak224 => 28,
            Hash::Sha256 | Hash::Sha3_256 | Hash::Keccak256 | Hash::DoubleSha256 => 32,
            Hash::Sha384 | Hash::Sha3_384 | Hash::Keccak384 => 48,
            Hash::Sha512 | Hash::Sha3_512 | Hash::Keccak512 => 64,
        }
    }
}

/// A parsed `signatureAlgorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    /// `SHAx_WITH_RSA`: PKCS#1 v1.5 over the hashed message.
    RsaPkcs1(Hash),
    /// `NONESHAx_WITH_RSA`: PKCS#1 v1.5, payload is the digest; DigestInfo added here.
    RsaPkcs1Prehashed(Hash),
    /// `NONE_WITH_RSA`: PKCS#1 v1.5 type 1 padding of the payload as given.
    RsaPkcs1Raw,
    /// `SHAx_WITH_RSA_PSS`: salt = hash length, MGF1 with the same hash.
    RsaPss(Hash),
    /// `NONESHAx_WITH_RSA_PSS`: like `RsaPss`, payload is the digest.
    RsaPssPrehashed(Hash),
    /// `SHAx_WITH_ECDSA`, `SHA3x_WITH_ECDSA`, `KECCAKx_WITH_ECDSA`, `DOUBLE_SHA256_WITH_ECDSA`,
    /// `SHA256_WITH_ECDSA_DETERMINISTIC`.
    Ecdsa(Hash),
    /// `NONE_WITH_ECDSA`: payload is a digest.
    EcdsaPrehashed,
    /// `EDDSA`: Ed25519 over the message.
    EdDsa,
    /// `DILITHIUM` (documented) or `ML_DSA` (newer clients): pure ML-DSA over the message.
    MlDsa,
    /// `SPHINCS_PLUS` (documented) or `SLH_DSA` (newer clients): pure SLH-DSA over the message.
    SlhDsa,
    /// `LMS`: an HSS signature over the message.
    Lms,
}

/// Result of parsing a `signatureAlgorithm` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedAlg {
    Known(SigAlg),
    /// A TSB algorithm name the simulator does not implement (DSA, BLS, ...): 607.
    Unsupported,
    /// Not a TSB algorithm name: 600.
    Unknown,
}

impl SigAlg {
    pub fn parse(name: &str) -> ParsedAlg {
        use Hash::*;
        use SigAlg::*;
        let alg = match name {
            "SHA1_WITH_RSA" => RsaPkcs1(Sha1),
            "SHA224_WITH_RSA" => RsaPkcs1(Sha224),
            "SHA256_WITH_RSA" => RsaPkcs1(Sha256),
            "SHA384_WITH_RSA" => RsaPkcs1(Sha384),
            "SHA512_WITH_RSA" => RsaPkcs1(Sha512),
            "NONESHA1_WITH_RSA" => RsaPkcs1Prehashed(Sha1),
            "NONESHA224_WITH_RSA" => RsaPkcs1Prehashed(Sha224),
            "NONESHA256_WITH_RSA" => RsaPkcs1Prehashed(Sha256),
            "NONESHA384_WITH_RSA" => RsaPkcs1Prehashed(Sha384),
            "NONESHA512_WITH_RSA" => RsaPkcs1Prehashed(Sha512),
            "NONE_WITH_RSA" => RsaPkcs1Raw,
            "SHA1_WITH_RSA_PSS" => RsaPss(Sha1),
            "SHA224_WITH_RSA_PSS" => RsaPss(Sha224),
            "SHA256_WITH_RSA_PSS" => RsaPss(Sha256),
            "SHA384_WITH_RSA_PSS" => RsaPss(Sha384),
            "SHA512_WITH_RSA_PSS" => RsaPss(Sha512),
            "NONESHA224_WITH_RSA_PSS" => RsaPssPrehashed(Sha224),
            "NONESHA256_WITH_RSA_PSS" => RsaPssPrehashed(Sha256),
            "NONESHA384_WITH_RSA_PSS" => RsaPssPrehashed(Sha384),
            "NONESHA512_WITH_RSA_PSS" => RsaPssPrehashed(Sha512),
            "SHA1_WITH_ECDSA" => Ecdsa(Sha1),
            "SHA224_WITH_ECDSA" => Ecdsa(Sha224),
            "SHA256_WITH_ECDSA" | "SHA256_WITH_ECDSA_DETERMINISTIC" => Ecdsa(Sha256),
            "SHA384_WITH_ECDSA" => Ecdsa(Sha384),
            "SHA512_WITH_ECDSA" => Ecdsa(Sha512),
            "SHA3224_WITH_ECDSA" | "SHA3_224_WITH_ECDSA" => Ecdsa(Sha3_224),
            "SHA3256_WITH_ECDSA" | "SHA3_256_WITH_ECDSA" => Ecdsa(Sha3_256),
            "SHA3384_WITH_ECDSA" | "SHA3_384_WITH_ECDSA" => Ecdsa(Sha3_384),
            "SHA3512_WITH_ECDSA" | "SHA3_512_WITH_ECDSA" => Ecdsa(Sha3_512),
            "KECCAK224_WITH_ECDSA" => Ecdsa(Keccak224),
            "KECCAK256_WITH_ECDSA" => Ecdsa(Keccak256),
            "KECCAK384_WITH_ECDSA" => Ecdsa(Keccak384),
            "KECCAK512_WITH_ECDSA" => Ecdsa(Keccak512),
            "DOUBLE_SHA256_WITH_ECDSA" => Ecdsa(DoubleSha256),
            "NONE_WITH_ECDSA" => EcdsaPrehashed,
            "EDDSA" => EdDsa,
            "DILITHIUM" | "ML_DSA" => MlDsa,
            "SPHINCS_PLUS" | "SLH_DSA" => SlhDsa,
            "LMS" => Lms,
            "NONE_WITH_RSA_PSS"
            | "NONE_WITH_DSA"
            | "SHA1_WITH_DSA"
            | "SHA224_WITH_DSA"
            | "SHA256_WITH_DSA"
            | "SHA384_WITH_DSA"
            | "SHA512_WITH_DSA"
            | "BLS"
            | "ISS_KERL"
            | "KYBER"
            | "ML_DSA_M"
            | "XMSS-SHA256_10_256"
            | "XMSS-SHAKE256_10_256" => return ParsedAlg::Unsupported,
            // The pre-hashed ML-DSA and SLH-DSA variants of newer TSBs (`SHA2_256_WITH_ML_DSA`,
            // `SHAKE_256_WITH_SLH_DSA`, ...): names the TSB knows, not implemented here.
            n if n.ends_with("_WITH_ML_DSA") || n.ends_with("_WITH_SLH_DSA") => {
                return ParsedAlg::Unsupported
            }
            _ => return ParsedAlg::Unknown,
        };
        ParsedAlg::Known(alg)
    }

    /// Whether the algorithm signs with a key of type `key`.
    pub fn fits(self, key: KeyAlgorithm) -> bool {
        use crate::pqc::Family;
        match self {
            SigAlg::RsaPkcs1(_)
            | SigAlg::RsaPkcs1Prehashed(_)
            | SigAlg::RsaPkcs1Raw
            | SigAlg::RsaPss(_)
            | SigAlg::RsaPssPrehashed(_) => key == KeyAlgorithm::Rsa,
            SigAlg::Ecdsa(_) | SigAlg::EcdsaPrehashed => key == KeyAlgorithm::Ec,
            SigAlg::EdDsa => key == KeyAlgorithm::Ed,
            SigAlg::MlDsa => crate::pqc::family(key) == Some(Family::MlDsa),
            SigAlg::SlhDsa => crate::pqc::family(key) == Some(Family::SlhDsa),
            SigAlg::Lms => crate::pqc::family(key) == Some(Family::Lms),
        }
    }
}

/// Private key material of one HSM key.
pub enum KeyMaterial {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(Box<p521::ecdsa::SigningKey>),
    K256(k256::ecdsa::SigningKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
    /// AES key bytes (never used: the simulator does not encrypt).
    Secret(Vec<u8>),
    /// ML-DSA, SLH-DSA or LMS.
    Pqc(Box<crate::pqc::PqcKey>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        let kind = match self {
            KeyMaterial::Rsa(k) => format!("RSA-{}", k.size() * 8),
            KeyMaterial::P256(_) => "EC P-256".to_string(),
            KeyMaterial::P384(_) => "EC P-384".to_string(),
            KeyMaterial::P521(_) => "EC P-521".to_string(),
            KeyMaterial::K256(_) => "EC secp256k1".to_string(),
            KeyMaterial::Ed25519(_) => "Ed25519".to_string(),
            KeyMaterial::Secret(k) => format!("AES-{}", k.len() * 8),
            KeyMaterial::Pqc(k) => k.algorithm().as_str().to_string(),
        };
        write!(f, "KeyMaterial({kind})")
    }
}

fn key_err(e: impl std::fmt::Display) -> SimError {
    SimError::Key(e.to_string())
}

impl KeyMaterial {
    /// Generates fresh key material for `spec`.
    pub fn generate(spec: &KeySpec) -> Result<KeyMaterial, SimError> {
        let mut rng = OsRng;
        Ok(match spec.algorithm {
            KeyAlgorithm::Rsa => KeyMaterial::Rsa(Box::new(
                RsaPrivateKey::new(&mut rng, spec.effective_size() as usize).map_err(key_err)?,
            )),
            KeyAlgorithm::Ec => match spec.effective_curve() {
                Curve::P256 => KeyMaterial::P256(p256::ecdsa::SigningKey::random(&mut rng)),
                Curve::P384 => KeyMaterial::P384(p384::ecdsa::SigningKey::random(&mut rng)),
                Curve::P521 => {
                    KeyMaterial::P521(Box::new(p521::ecdsa::SigningKey::random(&mut rng)))
                }
                Curve::Secp256k1 => KeyMaterial::K256(k256::ecdsa::SigningKey::random(&mut rng)),
            },
            KeyAlgorithm::Ed => {
                KeyMaterial::Ed25519(Box::new(ed25519_dalek::SigningKey::generate(&mut rng)))
            }
            KeyAlgorithm::Aes => {
                let mut bytes = vec![0u8; spec.effective_size() as usize / 8];
                rng.fill_bytes(&mut bytes);
                KeyMaterial::Secret(bytes)
            }
            _ => KeyMaterial::Pqc(Box::new(crate::pqc::PqcKey::generate(spec)?)),
        })
    }

    /// PKCS#8 PEM of the private key (`None` for AES keys); for post-quantum keys the
    /// simulator's own cache text (`PqcKey::to_cache_text`).
    pub fn to_pkcs8_pem(&self) -> Result<Option<String>, SimError> {
        let pem = match self {
            KeyMaterial::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF).map_err(key_err)?,
            KeyMaterial::P256(k) => p256::SecretKey::from(k.as_nonzero_scalar())
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(key_err)?,
            KeyMaterial::P384(k) => p384::SecretKey::from(k.as_nonzero_scalar())
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(key_err)?,
            KeyMaterial::P521(k) => p521::SecretKey::from_bytes(&k.to_bytes())
                .map_err(key_err)?
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(key_err)?,
            KeyMaterial::K256(k) => k256::SecretKey::from(k.as_nonzero_scalar())
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(key_err)?,
            KeyMaterial::Ed25519(k) => k.to_pkcs8_pem(LineEnding::LF).map_err(key_err)?,
            KeyMaterial::Secret(_) => return Ok(None),
            KeyMaterial::Pqc(k) => return Ok(Some(k.to_cache_text())),
        };
        Ok(Some(pem.to_string()))
    }

    /// Parses a PKCS#8 PEM private key that must match `spec`'s type.
    pub fn from_pkcs8_pem(spec: &KeySpec, pem: &str) -> Result<KeyMaterial, SimError> {
        let material = match spec.algorithm {
            KeyAlgorithm::Rsa => {
                let key = RsaPrivateKey::from_pkcs8_pem(pem).map_err(key_err)?;
                if key.size() * 8 != spec.effective_size() as usize {
                    return Err(SimError::Key(format!(
                        "key '{}': RSA key has {} bits, expected {}",
                        spec.label,
                        key.size() * 8,
                        spec.effective_size()
                    )));
                }
                KeyMaterial::Rsa(Box::new(key))
            }
            KeyAlgorithm::Ec => match spec.effective_curve() {
                Curve::P256 => KeyMaterial::P256(p256::ecdsa::SigningKey::from(
                    p256::SecretKey::from_pkcs8_pem(pem).map_err(key_err)?,
                )),
                Curve::P384 => KeyMaterial::P384(p384::ecdsa::SigningKey::from(
                    p384::SecretKey::from_pkcs8_pem(pem).map_err(key_err)?,
                )),
                Curve::P521 => {
                    let secret = p521::SecretKey::from_pkcs8_pem(pem).map_err(key_err)?;
                    KeyMaterial::P521(Box::new(
                        p521::ecdsa::SigningKey::from_bytes(&secret.to_bytes()).map_err(key_err)?,
                    ))
                }
                Curve::Secp256k1 => KeyMaterial::K256(k256::ecdsa::SigningKey::from(
                    k256::SecretKey::from_pkcs8_pem(pem).map_err(key_err)?,
                )),
            },
            KeyAlgorithm::Ed => KeyMaterial::Ed25519(Box::new(
                ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(key_err)?,
            )),
            KeyAlgorithm::Aes => {
                return Err(SimError::Key(format!(
                    "key '{}': AES keys cannot be loaded from PEM",
                    spec.label
                )))
            }
            _ => KeyMaterial::Pqc(Box::new(crate::pqc::PqcKey::from_cache_text(spec, pem)?)),
        };
        Ok(material)
    }

    /// DER SubjectPublicKeyInfo (`None` for AES keys).
    pub fn public_key_der(&self) -> Result<Option<Vec<u8>>, SimError> {
        let doc = match self {
            KeyMaterial::Rsa(k) => k.to_public_key().to_public_key_der().map_err(key_err)?,
            KeyMaterial::P256(k) => k.verifying_key().to_public_key_der().map_err(key_err)?,
            KeyMaterial::P384(k) => k.verifying_key().to_public_key_der().map_err(key_err)?,
            KeyMaterial::P521(k) => p521::SecretKey::from_bytes(&k.to_bytes())
                .map_err(key_err)?
                .public_key()
                .to_public_key_der()
                .map_err(key_err)?,
            KeyMaterial::K256(k) => k.verifying_key().to_public_key_der().map_err(key_err)?,
            KeyMaterial::Ed25519(k) => k.verifying_key().to_public_key_der().map_err(key_err)?,
            KeyMaterial::Secret(_) => return Ok(None),
            KeyMaterial::Pqc(k) => return Ok(Some(k.public_key_der()?)),
        };
        Ok(Some(doc.as_bytes().to_vec()))
    }

    fn kind(&self) -> KeyAlgorithm {
        match self {
            KeyMaterial::Rsa(_) => KeyAlgorithm::Rsa,
            KeyMaterial::P256(_)
            | KeyMaterial::P384(_)
            | KeyMaterial::P521(_)
            | KeyMaterial::K256(_) => KeyAlgorithm::Ec,
            KeyMaterial::Ed25519(_) => KeyAlgorithm::Ed,
            KeyMaterial::Secret(_) => KeyAlgorithm::Aes,
            KeyMaterial::Pqc(k) => k.algorithm(),
        }
    }

    /// The post-quantum key, if this is one.
    pub fn pqc(&self) -> Option<&crate::pqc::PqcKey> {
        match self {
            KeyMaterial::Pqc(k) => Some(k),
            _ => None,
        }
    }

    /// Signs `payload` with `alg`. ECDSA signatures are DER unless `raw_ecdsa` (fixed-width
    /// r‖s). Payload errors give 612, an algorithm that does not fit the key 607.
    pub fn sign(&self, alg: SigAlg, payload: &[u8], raw_ecdsa: bool) -> Result<Vec<u8>, ApiError> {
        self.sign_with_context(alg, payload, raw_ecdsa, &[])
    }

    /// [`KeyMaterial::sign`] with a FIPS 204/205 `context` (ML-DSA and SLH-DSA keys only; an
    /// empty one for every other key).
    pub fn sign_with_context(
        &self,
        alg: SigAlg,
        payload: &[u8],
        raw_ecdsa: bool,
        context: &[u8],
    ) -> Result<Vec<u8>, ApiError> {
        if !alg.fits(self.kind()) {
            return Err(ApiError::algorithm(format!(
                "Signature algorithm {alg:?} is not supported by a {} key",
                self.kind().as_str()
            )));
        }
        match self {
            KeyMaterial::Rsa(key) => rsa_sign(key, alg, payload),
            KeyMaterial::P256(key) => {
                let z = ec_prehash(Curve::P256, alg, payload)?;
                let sig: p256::ecdsa::Signature = key.sign_prehash(&z).map_err(hsm_err)?;
                Ok(if raw_ecdsa {
                    sig.to_bytes().to_vec()
                } else {
                    sig.to_der().as_bytes().to_vec()
                })
            }
            KeyMaterial::P384(key) => {
                let z = ec_prehash(Curve::P384, alg, payload)?;
                let sig: p384::ecdsa::Signature = key.sign_prehash(&z).map_err(hsm_err)?;
                Ok(if raw_ecdsa {
                    sig.to_bytes().to_vec()
                } else {
                    sig.to_der().as_bytes().to_vec()
                })
            }
            KeyMaterial::P521(key) => {
                let z = ec_prehash(Curve::P521, alg, payload)?;
                let sig: p521::ecdsa::Signature = key.sign_prehash(&z).map_err(hsm_err)?;
                Ok(if raw_ecdsa {
                    sig.to_bytes().to_vec()
                } else {
                    sig.to_der().as_bytes().to_vec()
                })
            }
            KeyMaterial::K256(key) => {
                let z = ec_prehash(Curve::Secp256k1, alg, payload)?;
                let sig: k256::ecdsa::Signature = key.sign_prehash(&z).map_err(hsm_err)?;
                // Low-S form, as Bitcoin/Ethereum verifiers want (still a valid ECDSA signature).
                let sig = sig.normalize_s().unwrap_or(sig);
                Ok(if raw_ecdsa {
                    sig.to_bytes().to_vec()
                } else {
                    sig.to_der().as_bytes().to_vec()
                })
            }
            KeyMaterial::Ed25519(key) => {
                use ed25519_dalek::Signer;
                Ok(key.sign(payload).to_bytes().to_vec())
            }
            KeyMaterial::Secret(_) => Err(ApiError::algorithm("AES keys cannot sign")),
            KeyMaterial::Pqc(key) => key.sign(payload, context),
        }
    }
}

fn hsm_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::hsm(format!("signing failed: {e}"))
}

fn pkcs1_padding(hash: Hash) -> Pkcs1v15Sign {
    match hash {
        Hash::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
        Hash::Sha224 => Pkcs1v15Sign::new::<sha2::Sha224>(),
        Hash::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
        Hash::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
        _ => Pkcs1v15Sign::new::<sha2::Sha512>(),
    }
}

fn pss_padding(hash: Hash) -> Pss {
    match hash {
        Hash::Sha1 => Pss::new::<sha1::Sha1>(),
        Hash::Sha224 => Pss::new::<sha2::Sha224>(),
        Hash::Sha256 => Pss::new::<sha2::Sha256>(),
        Hash::Sha384 => Pss::new::<sha2::Sha384>(),
        _ => Pss::new::<sha2::Sha512>(),
    }
}

fn check_digest_len(hash: Hash, payload: &[u8]) -> Result<(), ApiError> {
    if payload.len() != hash.output_len() {
        return Err(ApiError::payload(format!(
            "Payload must be a {}-byte {hash:?} digest, got {} bytes",
            hash.output_len(),
            payload.len()
        )));
    }
    Ok(())
}

fn rsa_sign(key: &RsaPrivateKey, alg: SigAlg, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut rng = OsRng;
    let k = key.size();
    match alg {
        SigAlg::RsaPkcs1(h) => key
            .sign_with_rng(&mut rng, pkcs1_padding(h), &h.digest(payload))
            .map_err(hsm_err),
        SigAlg::RsaPkcs1Prehashed(h) => {
            check_digest_len(h, payload)?;
            key.sign_with_rng(&mut rng, pkcs1_padding(h), payload)
                .map_err(hsm_err)
        }
        SigAlg::RsaPkcs1Raw => {
            if payload.is_empty() || payload.len() + 11 > k {
                return Err(ApiError::payload(format!(
                    "NONE_WITH_RSA payload must be 1..={} bytes for this {}-bit key, got {}",
                    k - 11,
                    k * 8,
                    payload.len()
                )));
            }
            key.sign_with_rng(&mut rng, Pkcs1v15Sign::new_unprefixed(), payload)
                .map_err(hsm_err)
        }
        SigAlg::RsaPss(h) => key
            .sign_with_rng(&mut rng, pss_padding(h), &h.digest(payload))
            .map_err(hsm_err),
        SigAlg::RsaPssPrehashed(h) => {
            check_digest_len(h, payload)?;
            key.sign_with_rng(&mut rng, pss_padding(h), payload)
                .map_err(hsm_err)
        }
        _ => Err(ApiError::algorithm("not an RSA algorithm")),
    }
}

/// The value ECDSA signs, as exactly `field_bytes` big-endian bytes: the (message hash or
/// given) digest, left-padded with zeros when shorter (value unchanged), or its leftmost
/// field-size bits when longer (X9.62 truncation; P-521 needs a 7-bit shift).
fn ec_prehash(curve: Curve, alg: SigAlg, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    let digest = match alg {
        SigAlg::Ecdsa(h) => h.digest(payload),
        SigAlg::EcdsaPrehashed => {
            if payload.is_empty() {
                return Err(ApiError::payload(
                    "NONE_WITH_ECDSA needs a non-empty digest as payload",
                ));
            }
            payload.to_vec()
        }
        _ => return Err(ApiError::algorithm("not an ECDSA algorithm")),
    };
    let fb = curve.field_bytes();
    let bits = curve.bits() as usize;
    if digest.len() * 8 > bits {
        let mut out = digest[..fb].to_vec();
        let shift = fb * 8 - bits;
        if shift > 0 {
            let mut carry = 0u8;
            for byte in out.iter_mut() {
                let next = *byte << (8 - shift);
                *byte = (*byte >> shift) | carry;
                carry = next;
            }
        }
        Ok(out)
    } else {
        let mut out = vec![0u8; fb - digest.len()];
        out.extend_from_slice(&digest);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Caches

type CacheKey = (String, KeyAlgorithm, u32);
type CacheSlot = Arc<Mutex<Option<Arc<KeyMaterial>>>>;

static MEMORY_CACHE: LazyLock<Mutex<HashMap<CacheKey, CacheSlot>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn cache_file_name(spec: &KeySpec) -> String {
    let sanitized: String = spec
        .label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let hash = sha2::Sha256::digest(spec.label.as_bytes());
    format!(
        "{sanitized}-{:02x}{:02x}{:02x}{:02x}-{}-{}.pem",
        hash[0],
        hash[1],
        hash[2],
        hash[3],
        spec.algorithm.as_str(),
        spec.effective_size()
    )
}

/// Loads or generates the key material of `spec`: `privateKeyFile` if given; else the
/// process-wide memory cache keyed by (label, algorithm, size); else the disk cache in
/// `cache_dir`; else a fresh key (written to the disk cache).
pub fn obtain(spec: &KeySpec, cache_dir: Option<&Path>) -> Result<Arc<KeyMaterial>, SimError> {
    if let Some(file) = &spec.private_key_file {
        let pem = std::fs::read_to_string(file)
            .map_err(|e| SimError::Key(format!("{}: {e}", file.display())))?;
        return Ok(Arc::new(KeyMaterial::from_pkcs8_pem(spec, &pem)?));
    }
    if spec.algorithm == KeyAlgorithm::Aes {
        return Ok(Arc::new(KeyMaterial::generate(spec)?));
    }
    let key: CacheKey = (spec.label.clone(), spec.algorithm, spec.effective_size());
    let slot = lock(&MEMORY_CACHE).entry(key).or_default().clone();
    let mut slot = lock(&slot);
    let path: Option<PathBuf> = cache_dir.map(|d| d.join(cache_file_name(spec)));
    if let Some(material) = slot.as_ref() {
        // Keep the state directory complete even when the key came from memory.
        if let Some(path) = path.as_ref().filter(|p| !p.exists()) {
            store(path, material);
        }
        return Ok(material.clone());
    }
    if let Some(path) = &path {
        if let Ok(pem) = std::fs::read_to_string(path) {
            match KeyMaterial::from_pkcs8_pem(spec, &pem) {
                Ok(material) => {
                    let material = Arc::new(material);
                    keep_state_in(&material, Some(path));
                    *slot = Some(material.clone());
                    return Ok(material);
                }
                Err(e) => log::warn!("ignoring unusable cached key {}: {e}", path.display()),
            }
        }
    }
    let material = Arc::new(KeyMaterial::generate(spec)?);
    if let Some(path) = &path {
        store(path, &material);
    }
    keep_state_in(&material, path.as_ref());
    *slot = Some(material.clone());
    Ok(material)
}

/// An LMS key writes its state (the one-time key counter) to its cache file after every
/// signature.
fn keep_state_in(material: &KeyMaterial, path: Option<&PathBuf>) {
    if let (Some(pqc), Some(path)) = (material.pqc(), path) {
        pqc.set_state_path(path.clone());
    }
}

/// Writes key material to the disk cache (errors are only logged).
fn store(path: &Path, material: &KeyMaterial) {
    let pem = match material.to_pkcs8_pem() {
        Ok(Some(pem)) => pem,
        _ => return,
    };
    let written = path
        .parent()
        .map(crate::util::create_private_dir)
        .unwrap_or(Ok(()))
        .and_then(|_| crate::util::write_private_file(path, &pem));
    if let Err(e) = written {
        log::warn!("cannot write key cache {}: {e}", path.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Keys as the HSM shows them

/// One key of the simulated HSM.
#[derive(Debug)]
pub struct SimKey {
    pub spec: KeySpec,
    pub material: Arc<KeyMaterial>,
    pub public_der: Option<Vec<u8>>,
    pub create_time: String,
    /// DER certificate stored for the key (`/v1/certificate/**`).
    pub certificate: PlMutex<Option<Vec<u8>>>,
    /// The policy document a key was created with (`POST /v1/key`), shown as given.
    pub(crate) policy_doc: Option<crate::policy::TsbPolicy>,
}

impl SimKey {
    pub fn new(spec: KeySpec, material: Arc<KeyMaterial>) -> Result<SimKey, SimError> {
        let public_der = material.public_key_der()?;
        Ok(SimKey {
            spec,
            material,
            public_der,
            create_time: crate::util::rfc3339(std::time::SystemTime::now()),
            certificate: PlMutex::new(None),
            policy_doc: None,
        })
    }

    pub fn label(&self) -> &str {
        &self.spec.label
    }

    /// Checks a password given as `keyPassword`/`password` (620 on mismatch). Keys without a
    /// password ignore a given one.
    pub fn check_password(&self, given: Option<&str>) -> Result<(), ApiError> {
        match &self.spec.password {
            None => Ok(()),
            Some(expected) if given == Some(expected.as_str()) => Ok(()),
            Some(_) => Err(ApiError::password(&self.spec.label)),
        }
    }

    /// Whether the key is allowed to sign at all (614 otherwise).
    pub fn check_can_sign(&self) -> Result<(), ApiError> {
        if !self.spec.can_sign_attribute() {
            return Err(ApiError::forbidden(format!(
                "Key '{}' does not have the sign attribute",
                self.spec.label
            )));
        }
        if self.spec.blocked {
            return Err(ApiError::forbidden(format!(
                "Key '{}' is blocked",
                self.spec.label
            )));
        }
        Ok(())
    }

    /// The key needs SKA approvals (some `ruleUse` token has groups).
    pub fn needs_approval(&self) -> bool {
        self.spec
            .policy
            .as_ref()
            .is_some_and(|p| p.needs_approval())
    }

    /// The value of one attribute boolean (`sign`, `destroyable`, ...), defaults applied.
    pub fn attribute(&self, name: &str) -> bool {
        self.attribute_values()
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn attribute_values(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        for name in ATTRIBUTE_NAMES {
            let default = match name {
                "sign" => self.spec.can_sign_attribute(),
                "decrypt" | "unwrap" | "derive" | "extractable" | "copyable" => false,
                "sensitive" | "alwaysSensitive" | "neverExtractable" | "modifiable"
                | "destroyable" => true,
                _ => false,
            };
            let value = self.spec.attributes.get(name).copied().unwrap_or(default);
            m.insert(name.to_string(), Value::Bool(value));
        }
        m
    }

    fn policy_json(&self) -> Value {
        let blocked = self.spec.blocked;
        if let Some(doc) = &self.policy_doc {
            return doc.to_json(blocked);
        }
        let tokens = match &self.spec.policy {
            None if !blocked => return Value::Null,
            None => Vec::new(),
            Some(p) => p.tokens.clone(),
        };
        let rule = json!({
            "tokens": tokens.iter().map(|t| json!({
                "name": t.name,
                "timelock": t.timelock,
                "timeout": t.timeout,
                "groups": t.groups.iter().map(|g| json!({
                    "name": g.name,
                    "quorum": g.quorum,
                    "approvals": g.approvers.iter().map(|a| json!({
                        "type": "public_key",
                        "name": a,
                        "value": approver_public_key(a),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()
        });
        json!({
            "ruleUse": rule,
            "ruleBlock": rule,
            "ruleUnblock": rule,
            "ruleModify": rule,
            "keyStatus": {"blocked": blocked},
        })
    }

    /// The `json` object of the attributes response.
    pub fn attributes_json(&self) -> Value {
        let (algorithm_oid, curve_oid, key_size): (&str, Option<&str>, Option<u32>) =
            match self.spec.algorithm {
                KeyAlgorithm::Rsa => (
                    "1.2.840.113549.1.1.1",
                    None,
                    Some(self.spec.effective_size()),
                ),
                // `keySize` is "only set if the algorithm is RSA, DSA or ISS" (the TSB's
                // `KeyAttributesDto`): an EC key's size is its curve.
                KeyAlgorithm::Ec => (
                    "1.2.840.10045.2.1",
                    Some(self.spec.effective_curve().oid()),
                    None,
                ),
                KeyAlgorithm::Ed => ("1.3.101.112", None, None),
                KeyAlgorithm::Aes => (
                    "2.16.840.1.101.3.4.1",
                    None,
                    Some(self.spec.effective_size()),
                ),
                pq => (crate::pqc::oid(pq).unwrap_or_default(), None, None),
            };
        let mut json = json!({
            "label": self.spec.label,
            "id": self.spec.id,
            "algorithm": crate::pqc::attributes_name(self.spec.algorithm),
            "algorithmOid": algorithm_oid,
            "curveOid": curve_oid,
            "keySize": key_size,
            "createTime": self.create_time,
            "attributes": Value::Object(self.attribute_values()),
            "publicKey": self.public_der.as_ref().map(|d| B64.encode(d)),
            "policy": self.policy_json(),
        });
        // LMS keys: the one-time signatures left (the simulator's choice of field, see
        // docs/tsb-api.md, "Post-quantum keys").
        if let Some(left) = self.material.pqc().and_then(|k| k.remaining_signatures()) {
            json["remainingSignatures"] = json!(left);
        }
        json
    }
}

/// A stable, real-looking approver public key (base64 DER SPKI of a P-256 key derived from the
/// approver name).
pub fn approver_public_key(name: &str) -> String {
    let mut seed = sha2::Sha256::digest(format!("tsb-sim approver {name}").as_bytes());
    loop {
        if let Ok(secret) = p256::SecretKey::from_slice(&seed) {
            if let Ok(der) = secret.public_key().to_public_key_der() {
                return B64.encode(der.as_bytes());
            }
        }
        seed = sha2::Sha256::digest(seed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p521_truncation_takes_leftmost_521_bits() {
        let digest = vec![0xffu8; 66];
        let z = ec_prehash(Curve::P521, SigAlg::EcdsaPrehashed, &digest).unwrap();
        assert_eq!(z.len(), 66);
        assert_eq!(z[0], 0x01);
        assert!(z[1..].iter().all(|b| *b == 0xff));
    }

    #[test]
    fn short_digest_is_left_padded() {
        let z = ec_prehash(Curve::P384, SigAlg::EcdsaPrehashed, &[1, 2, 3]).unwrap();
        assert_eq!(z.len(), 48);
        assert_eq!(&z[45..], &[1, 2, 3]);
        assert!(z[..45].iter().all(|b| *b == 0));
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(
            SigAlg::parse("SHA3256_WITH_ECDSA"),
            ParsedAlg::Known(SigAlg::Ecdsa(Hash::Sha3_256))
        );
        assert_eq!(SigAlg::parse("SHA256_WITH_DSA"), ParsedAlg::Unsupported);
        assert_eq!(SigAlg::parse("sha256"), ParsedAlg::Unknown);
    }
}
