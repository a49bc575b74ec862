//! Named curves and public keys.
//!
//! * SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) for rsaEncryption (RFC 3279
//!   §2.3.1), id-ecPublicKey with namedCurve parameters (RFC 5480 §2) and
//!   id-Ed25519 (RFC 8410 §4).
//! * PKCS#11 attribute encodings: `CKA_EC_PARAMS` (DER of the curve OID) and
//!   `CKA_EC_POINT` (DER OCTET STRING of the point), PKCS#11 v2.40 Current
//!   Mechanisms §2.3.3 and PKCS#11 v3.0 §2.3.5 (Edwards keys).

use der::asn1::{Any, BitString, ObjectIdentifier, OctetString, UintRef};
use der::{Decode, Encode, Sequence, Tag};
use ecdsa::elliptic_curve::sec1::{FromEncodedPoint, ModulusSize, ToEncodedPoint};
use ecdsa::elliptic_curve::{AffinePoint, CurveArithmetic, FieldBytesSize};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};

use super::encoding;
use super::error::{CryptoError, CryptoResult};
use super::pqc::{HssKey, MlDsaSet, SlhDsaSet};

/// rsaEncryption, RFC 3279 §2.3.1.
pub(crate) const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
/// id-ecPublicKey, RFC 5480 §2.1.1.
pub(crate) const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// id-Ed25519, RFC 8410 §3.
pub(crate) const OID_ED25519: &str = "1.3.101.112";
/// id-alg-hss-lms-hashsig, RFC 9708 §3 (RFC 8708).
pub(crate) const OID_HSS_LMS: &str = "1.2.840.113549.1.9.16.3.17";
/// DER of the id-Ed25519 OID: the `CKA_EC_PARAMS` of Ed25519 keys.
pub(crate) const ED25519_PARAMS_DER: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// `RSAPublicKey` (RFC 8017 Appendix A.1.1).
#[derive(Sequence)]
struct RsaPublicKeyDer<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// Named elliptic curves supported for ECDSA (SEC 2, FIPS 186-4 D.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
    Secp256k1,
}

impl Curve {
    /// All supported curves.
    pub const ALL: [Curve; 4] = [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1];

    /// Curve from its dotted OID (RFC 5480 §2.1.1.1, SEC 2 §A.2).
    pub(crate) fn from_oid(oid: &str) -> Option<Curve> {
        Curve::ALL.into_iter().find(|c| c.oid() == oid)
    }

    /// Dotted OID of the named curve.
    pub(crate) fn oid(self) -> &'static str {
        match self {
            Curve::P256 => "1.2.840.10045.3.1.7",
            Curve::P384 => "1.3.132.0.34",
            Curve::P521 => "1.3.132.0.35",
            Curve::Secp256k1 => "1.3.132.0.10",
        }
    }

    /// Curve name as commonly written (`"secp256r1"`, …, SEC 2).
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "secp256r1",
            Curve::P384 => "secp384r1",
            Curve::P521 => "secp521r1",
            Curve::Secp256k1 => "secp256k1",
        }
    }

    /// `CKA_EC_PARAMS`: DER `ECParameters` choice namedCurve, i.e. the DER
    /// OBJECT IDENTIFIER of the curve (PKCS#11 v2.40 Current Mechanisms §2.3.3).
    pub(crate) fn params_der(self) -> Vec<u8> {
        oid_der(self.oid())
    }

    /// Length in bytes of a field element / of each of r and s.
    pub fn field_bytes(self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// Bit length of the group order n.
    pub(crate) fn order_bits(self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }
}

fn oid_der(oid: &str) -> Vec<u8> {
    ObjectIdentifier::new_unwrap(oid)
        .to_der()
        .expect("OID encodes")
}

/// A public key as used by the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA key; modulus and exponent big-endian without leading zeros.
    Rsa {
        modulus: Vec<u8>,
        exponent: Vec<u8>,
        bits: usize,
    },
    /// ECDSA key; `point` is the uncompressed SEC 1 point `0x04 || X || Y`.
    Ec { curve: Curve, point: Vec<u8> },
    /// Ed25519 key (RFC 8032 §5.1.5 encoding).
    Ed25519 { key: [u8; 32] },
    /// ML-DSA key: the FIPS 204 `pkEncode` bytes (Algorithm 22), of the set's length.
    MlDsa { set: MlDsaSet, key: Vec<u8> },
    /// SLH-DSA key: `PK.seed || PK.root` (FIPS 205 §9.1), of the set's length.
    SlhDsa { set: SlhDsaSet, key: Vec<u8> },
    /// HSS/LMS key (RFC 8554 §6.1).
    Hss(HssKey),
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let i = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[i..]
}

fn bit_len(v: &[u8]) -> usize {
    let v = strip_zeros(v);
    match v.first() {
        None => 0,
        Some(&b) => (v.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    }
}

/// Validate a SEC 1 point (compressed or uncompressed) on curve `C` and
/// return its uncompressed encoding (SEC 1 §2.3.3 / §2.3.4).
fn normalize_point_on<C>(bytes: &[u8]) -> CryptoResult<Vec<u8>>
where
    C: CurveArithmetic,
    AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C>,
    FieldBytesSize<C>: ModulusSize,
{
    let pk = ecdsa::elliptic_curve::PublicKey::<C>::from_sec1_bytes(bytes)
        .map_err(|_| CryptoError::new("invalid EC point"))?;
    Ok(pk.to_encoded_point(false).as_bytes().to_vec())
}

/// Validate an EC point for `curve` and return it uncompressed.
pub(crate) fn normalize_point(curve: Curve, bytes: &[u8]) -> CryptoResult<Vec<u8>> {
    match curve {
        Curve::P256 => normalize_point_on::<p256::NistP256>(bytes),
        Curve::P384 => normalize_point_on::<p384::NistP384>(bytes),
        Curve::P521 => normalize_point_on::<p521::NistP521>(bytes),
        Curve::Secp256k1 => normalize_point_on::<k256::Secp256k1>(bytes),
    }
}

impl PublicKey {
    /// RSA key from big-endian modulus and public exponent (leading zeros
    /// are removed, `bits` is computed).
    pub(crate) fn rsa(modulus: &[u8], exponent: &[u8]) -> CryptoResult<PublicKey> {
        let modulus = strip_zeros(modulus).to_vec();
        let exponent = strip_zeros(exponent).to_vec();
        if modulus.is_empty() || exponent.is_empty() {
            return Err(CryptoError::new("RSA modulus or exponent is zero"));
        }
        let bits = bit_len(&modulus);
        Ok(PublicKey::Rsa {
            modulus,
            exponent,
            bits,
        })
    }

    /// EC key from a SEC 1 point (compressed or uncompressed); the point is
    /// checked to be on the curve and stored uncompressed.
    pub(crate) fn ec(curve: Curve, point: &[u8]) -> CryptoResult<PublicKey> {
        Ok(PublicKey::Ec {
            curve,
            point: normalize_point(curve, point)?,
        })
    }

    /// Parse a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) given as DER, PEM
    /// (`-----BEGIN PUBLIC KEY-----`) or base64 of DER.
    ///
    /// Supported algorithms: rsaEncryption (RFC 3279 §2.3.1), id-ecPublicKey
    /// with namedCurve (RFC 5480 §2; compressed points are decompressed) and
    /// id-Ed25519 (RFC 8410 §4).
    pub fn from_spki(input: &[u8]) -> CryptoResult<PublicKey> {
        let der = encoding::to_der(input, &["PUBLIC KEY"])?;
        Self::from_spki_der(&der)
    }

    /// The `CKA_ID` NSS gives a certificate (and the keys it creates) for this public key: the
    /// SHA-1 of the modulus (big-endian, no leading zeros) for RSA, of the uncompressed point
    /// for EC, of the 32-byte key for Ed25519 (NSS `pk11_mkcertKeyID` /
    /// `PK11_MakeIDFromPubKey`).
    pub(crate) fn nss_key_id(&self) -> Vec<u8> {
        let value: &[u8] = match self {
            PublicKey::Rsa { modulus, .. } => strip_zeros(modulus),
            PublicKey::Ec { point, .. } => point,
            PublicKey::Ed25519 { key } => key,
            PublicKey::MlDsa { key, .. } | PublicKey::SlhDsa { key, .. } => key,
            PublicKey::Hss(h) => &h.key,
        };
        super::HashAlg::Sha1.digest(value)
    }

    /// Parse a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> CryptoResult<PublicKey> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| CryptoError::new(format!("bad SubjectPublicKeyInfo: {e}")))?;
        let key_bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| CryptoError::new("public key BIT STRING has unused bits"))?;
        let oid = spki.algorithm.oid.to_string();
        match oid.as_str() {
            OID_RSA_ENCRYPTION => {
                let k = RsaPublicKeyDer::from_der(key_bytes)
                    .map_err(|e| CryptoError::new(format!("bad RSAPublicKey: {e}")))?;
                PublicKey::rsa(k.modulus.as_bytes(), k.public_exponent.as_bytes())
            }
            OID_EC_PUBLIC_KEY => {
                let params = spki
                    .algorithm
                    .parameters
                    .ok_or_else(|| CryptoError::new("EC key without curve parameters"))?;
                let curve_oid = params
                    .decode_as::<ObjectIdentifier>()
                    .map_err(|_| CryptoError::new("EC parameters are not a named curve"))?
                    .to_string();
                let curve = Curve::from_oid(&curve_oid)
                    .ok_or_else(|| CryptoError::new(format!("unsupported EC curve {curve_oid}")))?;
                PublicKey::ec(curve, key_bytes)
            }
            OID_ED25519 => {
                let key: [u8; 32] = key_bytes
                    .try_into()
                    .map_err(|_| CryptoError::new("Ed25519 key must be 32 bytes"))?;
                Ok(PublicKey::Ed25519 { key })
            }
            OID_HSS_LMS => {
                // RFC 9708: the raw HSS public key; RFC 8708's examples wrapped it in a DER
                // OCTET STRING (an HSS key starts with 00, an OCTET STRING with 04).
                let raw = match key_bytes.first() {
                    Some(0x04) => OctetString::from_der(key_bytes)
                        .map_err(|e| CryptoError::new(format!("bad HSS public key: {e}")))?
                        .into_bytes(),
                    _ => key_bytes.to_vec(),
                };
                Ok(PublicKey::Hss(HssKey::from_raw(&raw)?))
            }
            other => {
                if let Some(set) = MlDsaSet::ALL.into_iter().find(|s| s.oid() == other) {
                    return PublicKey::ml_dsa(set, key_bytes);
                }
                if let Some(set) = SlhDsaSet::ALL.into_iter().find(|s| s.oid() == other) {
                    return PublicKey::slh_dsa(set, key_bytes);
                }
                Err(CryptoError::new(format!(
                    "unsupported public key algorithm {other}"
                )))
            }
        }
    }

    /// An ML-DSA key from its raw encoding (checked for the set's length).
    pub(crate) fn ml_dsa(set: MlDsaSet, raw: &[u8]) -> CryptoResult<PublicKey> {
        if raw.len() != set.public_key_len() {
            return Err(CryptoError::new(format!(
                "an {} public key is {} bytes, not {}",
                set.name(),
                set.public_key_len(),
                raw.len()
            )));
        }
        Ok(PublicKey::MlDsa {
            set,
            key: raw.to_vec(),
        })
    }

    /// An SLH-DSA key from its raw encoding (checked for the set's length).
    pub(crate) fn slh_dsa(set: SlhDsaSet, raw: &[u8]) -> CryptoResult<PublicKey> {
        if raw.len() != set.public_key_len() {
            return Err(CryptoError::new(format!(
                "an {} public key is {} bytes, not {}",
                set.name(),
                set.public_key_len(),
                raw.len()
            )));
        }
        Ok(PublicKey::SlhDsa {
            set,
            key: raw.to_vec(),
        })
    }

    /// A key from the TSB's `publicKey` (already base64-decoded, or PEM text) and its
    /// `algorithm`: a SubjectPublicKeyInfo (DER, PEM or base64) of any supported algorithm, or,
    /// for post-quantum keys, the raw public key the `algorithm` names the parameter set of
    /// (`ML-DSA-65`, `SLH-DSA-SHA2-128f`, `LMS`/`HSS`; a bare `ML-DSA` is told by the key's
    /// length, which differs for the three sets). See docs/tsb-api.md.
    pub(crate) fn from_tsb(algorithm: &str, input: &[u8]) -> CryptoResult<PublicKey> {
        let spki = PublicKey::from_spki(input);
        if spki.is_ok() {
            return spki;
        }
        let alg = algorithm.trim().to_ascii_uppercase().replace('_', "-");
        if let Some(set) = MlDsaSet::from_name(&alg) {
            return PublicKey::ml_dsa(set, input);
        }
        if let Some(set) = SlhDsaSet::from_name(&alg) {
            return PublicKey::slh_dsa(set, input);
        }
        if matches!(alg.as_str(), "ML-DSA" | "MLDSA") {
            if let Some(set) = MlDsaSet::ALL
                .into_iter()
                .find(|s| s.public_key_len() == input.len())
            {
                return PublicKey::ml_dsa(set, input);
            }
        }
        if matches!(alg.as_str(), "LMS" | "HSS" | "HSS-LMS" | "LMS-HSS") {
            return Ok(PublicKey::Hss(HssKey::from_raw(input)?));
        }
        spki
    }

    /// True for ML-DSA, SLH-DSA and HSS keys.
    pub fn is_post_quantum(&self) -> bool {
        matches!(
            self,
            PublicKey::MlDsa { .. } | PublicKey::SlhDsa { .. } | PublicKey::Hss(_)
        )
    }

    /// `CKA_VALUE` of a post-quantum public key: the raw public key (PKCS#11 v3.2, ML-DSA
    /// and SLH-DSA public key objects; RFC 8554 §6.1 HSS public key for `CKK_HSS`).
    pub fn raw_public_key(&self) -> Option<&[u8]> {
        match self {
            PublicKey::MlDsa { key, .. } | PublicKey::SlhDsa { key, .. } => Some(key),
            PublicKey::Hss(h) => Some(&h.key),
            _ => None,
        }
    }

    /// Canonical DER SubjectPublicKeyInfo (`CKA_PUBLIC_KEY_INFO`).
    pub fn spki_der(&self) -> Vec<u8> {
        let (oid, parameters, key): (&str, Option<Any>, Vec<u8>) = match self {
            PublicKey::Rsa {
                modulus, exponent, ..
            } => {
                let k = RsaPublicKeyDer {
                    modulus: UintRef::new(modulus).expect("modulus"),
                    public_exponent: UintRef::new(exponent).expect("exponent"),
                };
                (
                    OID_RSA_ENCRYPTION,
                    Some(Any::new(Tag::Null, Vec::new()).expect("NULL")),
                    k.to_der().expect("RSAPublicKey encodes"),
                )
            }
            PublicKey::Ec { curve, point } => (
                OID_EC_PUBLIC_KEY,
                Some(Any::from_der(&curve.params_der()).expect("OID")),
                point.clone(),
            ),
            PublicKey::Ed25519 { key } => (OID_ED25519, None, key.to_vec()),
            PublicKey::MlDsa { set, key } => (set.oid(), None, key.clone()),
            PublicKey::SlhDsa { set, key } => {
                let oid = set.oid();
                return spki_of(&oid, key);
            }
            PublicKey::Hss(h) => (OID_HSS_LMS, None, h.key.clone()),
        };
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap(oid),
                parameters,
            },
            subject_public_key: BitString::from_bytes(&key).expect("BIT STRING"),
        };
        spki.to_der().expect("SPKI encodes")
    }

    /// Signature length in bytes: RSA modulus bytes, EC `2 * field_bytes`
    /// (PKCS#11 raw r||s), Ed25519 64.
    pub fn signature_len(&self) -> usize {
        match self {
            PublicKey::Rsa { bits, .. } => bits.div_ceil(8),
            PublicKey::Ec { curve, .. } => 2 * curve.field_bytes(),
            PublicKey::Ed25519 { .. } => 64,
            PublicKey::MlDsa { set, .. } => set.signature_len(),
            PublicKey::SlhDsa { set, .. } => set.signature_len(),
            PublicKey::Hss(h) => h.signature_len(),
        }
    }

    /// `CKA_EC_PARAMS`: the curve OID in DER (EC), or the id-Ed25519 OID
    /// `06 03 2B 65 70` (Ed25519). `None` for RSA.
    pub fn ec_params_der(&self) -> Option<Vec<u8>> {
        match self {
            PublicKey::Rsa { .. }
            | PublicKey::MlDsa { .. }
            | PublicKey::SlhDsa { .. }
            | PublicKey::Hss(_) => None,
            PublicKey::Ec { curve, .. } => Some(curve.params_der()),
            PublicKey::Ed25519 { .. } => Some(ED25519_PARAMS_DER.to_vec()),
        }
    }

    /// `CKA_EC_POINT`: DER OCTET STRING wrapping the uncompressed point (EC)
    /// or the 32-byte key (Ed25519). `None` for RSA.
    pub fn ec_point_der(&self) -> Option<Vec<u8>> {
        let raw: &[u8] = match self {
            PublicKey::Rsa { .. }
            | PublicKey::MlDsa { .. }
            | PublicKey::SlhDsa { .. }
            | PublicKey::Hss(_) => return None,
            PublicKey::Ec { point, .. } => point,
            PublicKey::Ed25519 { key } => key,
        };
        Some(
            OctetString::new(raw)
                .expect("OCTET STRING")
                .to_der()
                .expect("encodes"),
        )
    }

    /// Short algorithm name for messages / logs ("RSA", "EC", "Ed25519").
    pub fn kind(&self) -> &'static str {
        match self {
            PublicKey::Rsa { .. } => "RSA",
            PublicKey::Ec { .. } => "EC",
            PublicKey::Ed25519 { .. } => "Ed25519",
            PublicKey::MlDsa { .. } => "ML-DSA",
            PublicKey::SlhDsa { .. } => "SLH-DSA",
            PublicKey::Hss(_) => "HSS",
        }
    }
}

/// A SubjectPublicKeyInfo without algorithm parameters (RFC 9881, RFC 9909, RFC 9708).
fn spki_of(oid: &str, key: &[u8]) -> Vec<u8> {
    SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap(oid),
            parameters: None,
        },
        subject_public_key: BitString::from_bytes(key).expect("BIT STRING"),
    }
    .to_der()
    .expect("SPKI encodes")
}
