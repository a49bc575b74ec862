//! Key specs, hash and signing algorithms, and public keys.
//!
//! Implements the algorithm table of the Notary Project signature specification
//! (`specs/signature-specification.md`, "Algorithm Selection") as used by the plugin
//! contract (`specs/plugin-extensibility.md`, "describe-key" and "generate-signature"):
//!
//! | keySpec    | hashAlgorithm | signingAlgorithm     |
//! |------------|---------------|----------------------|
//! | `RSA-2048` | `SHA-256`     | `RSASSA-PSS-SHA-256` |
//! | `RSA-3072` | `SHA-384`     | `RSASSA-PSS-SHA-384` |
//! | `RSA-4096` | `SHA-512`     | `RSASSA-PSS-SHA-512` |
//! | `EC-256`   | `SHA-256`     | `ECDSA-SHA-256`      |
//! | `EC-384`   | `SHA-384`     | `ECDSA-SHA-384`      |
//! | `EC-521`   | `SHA-512`     | `ECDSA-SHA-512`      |
//!
//! RSASSA-PSS uses MGF1 with the same hash and a salt as long as the hash; ECDSA
//! signatures are the fixed-width `r‖s` concatenation used by JWS (RFC 7518 §3.4).

use der::asn1::ObjectIdentifier;
use rsa::pkcs8::DecodePublicKey;
use rsa::{BigUint, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384, Sha512};
use signature::hazmat::PrehashVerifier;

/// OID of `rsaEncryption` (RFC 8017).
pub const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// OID of `id-ecPublicKey` (RFC 5480).
pub const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// A key type and size Notation can sign with ("Algorithm Selection").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    Ec256,
    Ec384,
    Ec521,
}

impl KeySpec {
    /// Every key spec, in the order of the specification's table.
    pub const ALL: [KeySpec; 6] = [
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::Ec256,
        KeySpec::Ec384,
        KeySpec::Ec521,
    ];

    /// The contract's spelling (`describe-key` response `keySpec`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::Rsa2048 => "RSA-2048",
            KeySpec::Rsa3072 => "RSA-3072",
            KeySpec::Rsa4096 => "RSA-4096",
            KeySpec::Ec256 => "EC-256",
            KeySpec::Ec384 => "EC-384",
            KeySpec::Ec521 => "EC-521",
        }
    }

    /// Parses the contract's spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<KeySpec> {
        KeySpec::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The key spec of an RSA key with a modulus of `bits` bits.
    pub fn from_rsa_bits(bits: usize) -> Option<KeySpec> {
        match bits {
            2048 => Some(KeySpec::Rsa2048),
            3072 => Some(KeySpec::Rsa3072),
            4096 => Some(KeySpec::Rsa4096),
            _ => None,
        }
    }

    /// The key spec of an EC key on `curve`.
    pub fn from_curve(curve: Curve) -> KeySpec {
        match curve {
            Curve::P256 => KeySpec::Ec256,
            Curve::P384 => KeySpec::Ec384,
            Curve::P521 => KeySpec::Ec521,
        }
    }

    /// The hash algorithm Notation pairs with this key spec.
    pub fn hash_algorithm(self) -> HashAlgorithm {
        match self {
            KeySpec::Rsa2048 | KeySpec::Ec256 => HashAlgorithm::Sha256,
            KeySpec::Rsa3072 | KeySpec::Ec384 => HashAlgorithm::Sha384,
            KeySpec::Rsa4096 | KeySpec::Ec521 => HashAlgorithm::Sha512,
        }
    }

    /// The `signingAlgorithm` of a `generate-signature` response.
    pub fn signing_algorithm(self) -> &'static str {
        match self {
            KeySpec::Rsa2048 => "RSASSA-PSS-SHA-256",
            KeySpec::Rsa3072 => "RSASSA-PSS-SHA-384",
            KeySpec::Rsa4096 => "RSASSA-PSS-SHA-512",
            KeySpec::Ec256 => "ECDSA-SHA-256",
            KeySpec::Ec384 => "ECDSA-SHA-384",
            KeySpec::Ec521 => "ECDSA-SHA-512",
        }
    }

    /// True for the RSA key specs (signed with RSASSA-PSS).
    pub fn is_rsa(self) -> bool {
        matches!(self, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096)
    }

    /// The curve of an EC key spec.
    pub fn curve(self) -> Option<Curve> {
        match self {
            KeySpec::Ec256 => Some(Curve::P256),
            KeySpec::Ec384 => Some(Curve::P384),
            KeySpec::Ec521 => Some(Curve::P521),
            _ => None,
        }
    }
}

impl std::fmt::Display for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hash algorithms of the contract (`generate-signature` request `hashAlgorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "SHA-256",
            HashAlgorithm::Sha384 => "SHA-384",
            HashAlgorithm::Sha512 => "SHA-512",
        }
    }

    /// Parses the contract's spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<HashAlgorithm> {
        [
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
    }

    /// Length of the digest in bytes (also the RSASSA-PSS salt length).
    pub fn len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlgorithm::Sha256 => Sha256::digest(data).to_vec(),
            HashAlgorithm::Sha384 => Sha384::digest(data).to_vec(),
            HashAlgorithm::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// The NIST curves Notation supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// OIDs of the named curves (RFC 5480 §2.1.1.1).
    pub const P256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    pub const P384_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
    pub const P521_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

    /// The curve named by `oid`, if Notation supports it.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Curve> {
        match *oid {
            Curve::P256_OID => Some(Curve::P256),
            Curve::P384_OID => Some(Curve::P384),
            Curve::P521_OID => Some(Curve::P521),
            _ => None,
        }
    }

    /// Width in bytes of a field element, so of `r` and `s` in an `r‖s` signature.
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// A name for a curve Notation does not support, for error messages.
pub fn unsupported_curve_name(oid: &ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.3.132.0.10" => "secp256k1",
        "1.2.840.10045.3.1.1" => "P-192",
        "1.3.132.0.33" => "P-224",
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1",
        "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1",
        "1.3.36.3.3.2.8.1.1.13" => "brainpoolP512r1",
        "1.2.156.10197.1.301" => "SM2",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        _ => return format!("EC on curve {oid}"),
    };
    name.to_string()
}

/// A public key of a supported type, compared by value (not by encoding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    P521(p521::PublicKey),
}

impl PublicKey {
    /// Parses a DER `SubjectPublicKeyInfo` (RFC 5280 §4.1.2.7).
    pub fn from_spki_der(der_bytes: &[u8]) -> Result<PublicKey, String> {
        use der::Decode;
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der_bytes)
            .map_err(|e| format!("malformed SubjectPublicKeyInfo: {e}"))?;
        let alg = spki.algorithm.oid;
        if alg == OID_RSA_ENCRYPTION {
            return RsaPublicKey::from_public_key_der(der_bytes)
                .map(PublicKey::Rsa)
                .map_err(|e| format!("malformed RSA public key: {e}"));
        }
        if alg != OID_EC_PUBLIC_KEY {
            return Err(format!(
                "public key algorithm {} is not supported by Notation",
                algorithm_name(&alg)
            ));
        }
        let curve_oid: ObjectIdentifier = spki
            .algorithm
            .parameters
            .ok_or("EC public key without curve parameters")?
            .decode_as()
            .map_err(|_| "EC public key parameters are not a named curve".to_string())?;
        let curve = Curve::from_oid(&curve_oid).ok_or_else(|| {
            format!(
                "{} is not supported by Notation",
                unsupported_curve_name(&curve_oid)
            )
        })?;
        PublicKey::from_ec_point(curve, spki.subject_public_key.raw_bytes())
    }

    /// Builds an RSA public key from big-endian modulus and exponent (`CKA_MODULUS`,
    /// `CKA_PUBLIC_EXPONENT`).
    pub fn from_rsa_components(modulus: &[u8], exponent: &[u8]) -> Result<PublicKey, String> {
        RsaPublicKey::new(
            BigUint::from_bytes_be(modulus),
            BigUint::from_bytes_be(exponent),
        )
        .map(PublicKey::Rsa)
        .map_err(|e| format!("invalid RSA public key: {e}"))
    }

    /// Builds an EC public key from a SEC1 encoded point.
    pub fn from_ec_point(curve: Curve, point: &[u8]) -> Result<PublicKey, String> {
        let bad = |_| format!("invalid {curve:?} public key point");
        Ok(match curve {
            Curve::P256 => PublicKey::P256(p256::PublicKey::from_sec1_bytes(point).map_err(bad)?),
            Curve::P384 => PublicKey::P384(p384::PublicKey::from_sec1_bytes(point).map_err(bad)?),
            Curve::P521 => PublicKey::P521(p521::PublicKey::from_sec1_bytes(point).map_err(bad)?),
        })
    }

    /// The key spec of this key, or why Notation cannot use it.
    pub fn key_spec(&self) -> Result<KeySpec, String> {
        match self {
            PublicKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                let bits = k.n().bits();
                KeySpec::from_rsa_bits(bits).ok_or_else(|| {
                    format!("RSA-{bits}; Notation supports RSA 2048, 3072 and 4096 bits")
                })
            }
            PublicKey::P256(_) => Ok(KeySpec::Ec256),
            PublicKey::P384(_) => Ok(KeySpec::Ec384),
            PublicKey::P521(_) => Ok(KeySpec::Ec521),
        }
    }

    /// Verifies `signature` over `payload` with the algorithm of `spec`, exactly as
    /// Notation does after `generate-signature` ("Signing workflow using plugin", step 4).
    pub fn verify(&self, spec: KeySpec, payload: &[u8], signature: &[u8]) -> Result<(), String> {
        let hash = spec.hash_algorithm();
        let digest = hash.digest(payload);
        let fail = |e: &dyn std::fmt::Display| format!("signature does not verify: {e}");
        match self {
            PublicKey::Rsa(k) => {
                let scheme = match hash {
                    HashAlgorithm::Sha256 => rsa::Pss::new::<Sha256>(),
                    HashAlgorithm::Sha384 => rsa::Pss::new::<Sha384>(),
                    HashAlgorithm::Sha512 => rsa::Pss::new::<Sha512>(),
                };
                k.verify(scheme, &digest, signature).map_err(|e| fail(&e))
            }
            PublicKey::P256(k) => {
                let sig = p256::ecdsa::Signature::from_slice(signature).map_err(|e| fail(&e))?;
                p256::ecdsa::VerifyingKey::from(k)
                    .verify_prehash(&digest, &sig)
                    .map_err(|e| fail(&e))
            }
            PublicKey::P384(k) => {
                let sig = p384::ecdsa::Signature::from_slice(signature).map_err(|e| fail(&e))?;
                p384::ecdsa::VerifyingKey::from(k)
                    .verify_prehash(&digest, &sig)
                    .map_err(|e| fail(&e))
            }
            PublicKey::P521(k) => {
                let sig = p521::ecdsa::Signature::from_slice(signature).map_err(|e| fail(&e))?;
                let point = k.to_sec1_bytes();
                p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|e| fail(&e))?
                    .verify_prehash(&digest, &sig)
                    .map_err(|e| fail(&e))
            }
        }
    }
}

/// Converts an ECDSA signature that a token returned DER-encoded (RFC 3279 `Ecdsa-Sig-Value`)
/// instead of `r‖s` into the fixed-width `r‖s` form; returns `None` if it is neither.
pub fn ecdsa_to_raw(curve: Curve, sig: &[u8]) -> Option<Vec<u8>> {
    if sig.len() == 2 * curve.field_len() {
        return Some(sig.to_vec());
    }
    match curve {
        Curve::P256 => p256::ecdsa::Signature::from_der(sig)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
        Curve::P384 => p384::ecdsa::Signature::from_der(sig)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
        Curve::P521 => p521::ecdsa::Signature::from_der(sig)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
    }
}

/// A readable name for a public key algorithm OID, for error messages.
fn algorithm_name(oid: &ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        "1.2.840.113549.1.1.10" => "RSASSA-PSS (restricted RSA key)".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_specification() {
        let expect = [
            ("RSA-2048", "SHA-256", "RSASSA-PSS-SHA-256"),
            ("RSA-3072", "SHA-384", "RSASSA-PSS-SHA-384"),
            ("RSA-4096", "SHA-512", "RSASSA-PSS-SHA-512"),
            ("EC-256", "SHA-256", "ECDSA-SHA-256"),
            ("EC-384", "SHA-384", "ECDSA-SHA-384"),
            ("EC-521", "SHA-512", "ECDSA-SHA-512"),
        ];
        for (spec, hash, alg) in expect {
            let k = KeySpec::parse(spec).unwrap();
            assert_eq!(k.as_str(), spec);
            assert_eq!(k.hash_algorithm().as_str(), hash);
            assert_eq!(HashAlgorithm::parse(hash), Some(k.hash_algorithm()));
            assert_eq!(k.signing_algorithm(), alg);
            assert_eq!(
                k.hash_algorithm().digest(b"x").len(),
                k.hash_algorithm().len()
            );
        }
        assert_eq!(KeySpec::parse("RSA-1024"), None);
        assert_eq!(KeySpec::parse("rsa-2048"), None);
        assert_eq!(HashAlgorithm::parse("SHA-1"), None);
    }

    #[test]
    fn rsa_bits() {
        assert_eq!(KeySpec::from_rsa_bits(3072), Some(KeySpec::Rsa3072));
        assert_eq!(KeySpec::from_rsa_bits(1024), None);
    }

    #[test]
    fn ecdsa_der_to_raw() {
        // SEQUENCE { INTEGER 1, INTEGER 0x80 } -> r = 1, s = 0x80, each padded to 32 bytes.
        let der = [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80];
        let raw = ecdsa_to_raw(Curve::P256, &der).unwrap();
        assert_eq!(raw.len(), 64);
        assert_eq!(raw[31], 1);
        assert_eq!(raw[63], 0x80);
        assert_eq!(
            ecdsa_to_raw(Curve::P256, &[0u8; 64]).unwrap(),
            vec![0u8; 64]
        );
        assert!(ecdsa_to_raw(Curve::P256, &[1, 2, 3]).is_none());
    }
}
