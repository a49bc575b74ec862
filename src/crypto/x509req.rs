//! PKCS#10 certificate requests (RFC 2986) made with a key that signs elsewhere, and the
//! checks of X.509 signatures the `tsb-pkcs11 csr` and `attest` commands need: a request's own
//! signature (RFC 2986 §4.2) and a certificate signed by its issuer (RFC 5280 §4.1.1.3, for the
//! attestation key's certificate chain).
//!
//! Signature algorithms (RFC 4055 §5 for RSA, RFC 5758 §3.2 for ECDSA, RFC 8410 §3 for
//! Ed25519): RSA keys sign with PKCS#1 v1.5 and SHA-256, EC keys with ECDSA and the SHA-2 that
//! matches the curve (P-256/SHA-256, P-384/SHA-384, P-521/SHA-512), Ed25519 keys with Ed25519.

use std::net::IpAddr;
use std::str::FromStr;

use der::asn1::{BitString, Ia5String, OctetString, SetOfVec};
use der::oid::{AssociatedOid, ObjectIdentifier};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

use super::der_sig::ecdsa_der_to_raw;
use super::error::{CryptoError, CryptoResult};
use super::hash::HashAlg;
use super::keys::{Curve, PublicKey};
use super::verify::{verify, Scheme, SignedData};

const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

fn bad(what: impl std::fmt::Display) -> CryptoError {
    CryptoError::new(what.to_string())
}

/// A subjectAltName entry (RFC 5280 §4.2.1.6), written `DNS:name`, `IP:address`,
/// `email:address` or `URI:uri` as OpenSSL does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
    Email(String),
    Uri(String),
}

impl FromStr for San {
    type Err = String;

    fn from_str(s: &str) -> Result<San, String> {
        let (kind, value) = s.split_once(':').ok_or_else(|| {
            format!("'{s}': write DNS:name, IP:address, email:address or URI:uri")
        })?;
        if value.is_empty() || !value.is_ascii() || value.chars().any(|c| c.is_ascii_control()) {
            return Err(format!(
                "'{s}': the value must be printable ASCII (an IDN as its xn-- form)"
            ));
        }
        match kind.to_ascii_lowercase().as_str() {
            "dns" => Ok(San::Dns(value.to_string())),
            "ip" => value
                .parse()
                .map(San::Ip)
                .map_err(|_| format!("'{s}': not an IPv4 or IPv6 address")),
            "email" => Ok(San::Email(value.to_string())),
            "uri" => Ok(San::Uri(value.to_string())),
            _ => Err(format!(
                "'{s}': unknown kind '{kind}' (DNS, IP, email or URI)"
            )),
        }
    }
}

impl San {
    fn general_name(&self) -> CryptoResult<GeneralName> {
        let ia5 = |v: &str| Ia5String::new(v).map_err(|e| bad(format!("subjectAltName: {e}")));
        Ok(match self {
            San::Dns(v) => GeneralName::DnsName(ia5(v)?),
            San::Email(v) => GeneralName::Rfc822Name(ia5(v)?),
            San::Uri(v) => GeneralName::UniformResourceIdentifier(ia5(v)?),
            San::Ip(ip) => {
                let bytes = match ip {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                GeneralName::IpAddress(OctetString::new(bytes).map_err(bad)?)
            }
        })
    }
}

/// How a key signs a request: the PKCS#11 mechanism's scheme, and the AlgorithmIdentifier
/// written into the request.
#[derive(Clone, Debug)]
pub struct RequestAlgorithm {
    pub scheme: Scheme,
    oid: ObjectIdentifier,
}

impl RequestAlgorithm {
    /// The algorithm for `key`: RSA PKCS#1 v1.5 SHA-256, ECDSA with the curve's SHA-2, Ed25519.
    pub fn for_key(key: &PublicKey) -> CryptoResult<RequestAlgorithm> {
        let (scheme, oid) = match key {
            PublicKey::Rsa { .. } => (Scheme::RsaPkcs1v15(HashAlg::Sha256), SHA256_WITH_RSA),
            PublicKey::Ec { curve, .. } => match curve {
                Curve::P256 => (Scheme::Ecdsa(HashAlg::Sha256), ECDSA_SHA256),
                Curve::P384 => (Scheme::Ecdsa(HashAlg::Sha384), ECDSA_SHA384),
                Curve::P521 => (Scheme::Ecdsa(HashAlg::Sha512), ECDSA_SHA512),
                other => {
                    return Err(bad(format!(
                        "no certificate request with a {} key (P-256, P-384, P-521 only)",
                        other.name()
                    )))
                }
            },
            PublicKey::Ed25519 { .. } => (Scheme::Ed25519, ED25519),
            PublicKey::MlDsa { .. } | PublicKey::SlhDsa { .. } | PublicKey::Hss(_) => {
                return Err(bad(format!(
                    "no certificate request with a {} key (RSA, EC, Ed25519 only)",
                    key.kind()
                )))
            }
        };
        Ok(RequestAlgorithm { scheme, oid })
    }

    fn identifier(&self) -> CryptoResult<AlgorithmIdentifierOwned> {
        // RFC 4055 §5: the RSA identifiers carry NULL parameters; RFC 5758 §3.2 and RFC 8410
        // §3: ECDSA and Ed25519 identifiers carry none.
        let parameters = match self.scheme {
            Scheme::RsaPkcs1v15(_) => Some(der::Any::null()),
            _ => None,
        };
        Ok(AlgorithmIdentifierOwned {
            oid: self.oid,
            parameters,
        })
    }
}

/// The DER `CertificationRequestInfo` (RFC 2986 §4.1) to be signed: `subject` in RFC 4514
/// text (`CN=host,O=Org`, most significant last as OpenSSL's `-subj` writes it reversed),
/// the key's SubjectPublicKeyInfo, and an extensionRequest with the subjectAltName when
/// `sans` is not empty (RFC 2985 §5.4.2).
pub fn request_info(subject: &str, sans: &[San], spki_der: &[u8]) -> CryptoResult<Vec<u8>> {
    let subject = Name::from_str(subject)
        .map_err(|e| bad(format!("subject '{subject}': {e} (write CN=...,O=...)")))?;
    if subject.0.is_empty() {
        return Err(bad("the subject is empty"));
    }
    let public_key = SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(bad)?;
    let mut attributes = SetOfVec::new();
    if !sans.is_empty() {
        let names = sans
            .iter()
            .map(San::general_name)
            .collect::<CryptoResult<Vec<_>>>()?;
        let value = SubjectAltName(names).to_der().map_err(bad)?;
        let ext = Extension {
            extn_id: SubjectAltName::OID,
            critical: false,
            extn_value: OctetString::new(value).map_err(bad)?,
        };
        let attr = ExtensionReq(vec![ext]).try_into().map_err(bad)?;
        attributes.insert(attr).map_err(bad)?;
    }
    CertReqInfo {
        version: Version::V1,
        subject,
        public_key,
        attributes,
    }
    .to_der()
    .map_err(bad)
}

/// The DER request: `info` (from [`request_info`]) with `signature` as the key made it through
/// PKCS#11 (ECDSA as raw `r || s`, turned into the DER `Ecdsa-Sig-Value` of RFC 3279 §2.2.3).
pub fn assemble(
    info: &[u8],
    algorithm: &RequestAlgorithm,
    signature: &[u8],
) -> CryptoResult<Vec<u8>> {
    let info = CertReqInfo::from_der(info).map_err(bad)?;
    let signature = match algorithm.scheme {
        Scheme::Ecdsa(_) => ecdsa_raw_to_der(signature)?,
        _ => signature.to_vec(),
    };
    CertReq {
        info,
        algorithm: algorithm.identifier()?,
        signature: BitString::from_bytes(&signature).map_err(bad)?,
    }
    .to_der()
    .map_err(bad)
}

/// A raw ECDSA `r || s` as DER `Ecdsa-Sig-Value` (RFC 3279 §2.2.3).
fn ecdsa_raw_to_der(raw: &[u8]) -> CryptoResult<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(bad("ECDSA signature of odd length"));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let uint = |v: &[u8]| {
        der::asn1::UintRef::new(v)
            .and_then(|u| u.to_der())
            .map_err(bad)
    };
    let mut body = uint(r)?;
    body.extend(uint(s)?);
    let mut out = vec![0x30];
    der::Length::try_from(body.len())
        .and_then(|l| l.encode_to_vec(&mut out))
        .map_err(bad)?;
    out.extend(body);
    Ok(out)
}

/// Checks `signature` (as found in an X.509 structure: ECDSA in DER) over `data` under the
/// signature algorithm `oid` with `key`.
fn verify_x509_signature(
    key: &PublicKey,
    oid: ObjectIdentifier,
    data: &[u8],
    signature: &[u8],
) -> CryptoResult<()> {
    let scheme = match oid {
        SHA256_WITH_RSA => Scheme::RsaPkcs1v15(HashAlg::Sha256),
        SHA384_WITH_RSA => Scheme::RsaPkcs1v15(HashAlg::Sha384),
        SHA512_WITH_RSA => Scheme::RsaPkcs1v15(HashAlg::Sha512),
        ECDSA_SHA256 => Scheme::Ecdsa(HashAlg::Sha256),
        ECDSA_SHA384 => Scheme::Ecdsa(HashAlg::Sha384),
        ECDSA_SHA512 => Scheme::Ecdsa(HashAlg::Sha512),
        ED25519 => Scheme::Ed25519,
        other => return Err(bad(format!("signature algorithm {other} is not supported"))),
    };
    let signature = match (scheme, key) {
        (Scheme::Ecdsa(_), PublicKey::Ec { curve, .. }) => ecdsa_der_to_raw(signature, *curve)?,
        _ => signature.to_vec(),
    };
    verify(key, &scheme, SignedData::Message(data), &signature)
}

/// Checks a DER request's own signature (RFC 2986 §4.2, what `openssl req -verify` checks)
/// and returns its SubjectPublicKeyInfo (DER).
pub fn verify_request(der: &[u8]) -> CryptoResult<Vec<u8>> {
    let req = CertReq::from_der(der).map_err(bad)?;
    let spki = req.info.public_key.to_der().map_err(bad)?;
    let key = PublicKey::from_spki_der(&spki)?;
    let info = req.info.to_der().map_err(bad)?;
    let sig = req
        .signature
        .as_bytes()
        .ok_or_else(|| bad("signature of unused bits"))?;
    verify_x509_signature(&key, req.algorithm.oid, &info, sig)?;
    Ok(spki)
}

/// Checks that the DER certificate `cert` is signed by the key of `issuer` (DER certificate),
/// and that `cert` names `issuer`'s subject as its issuer (RFC 5280 §6.1.3 (a)(1), (a)(4)).
pub fn verify_issued_by(cert: &[u8], issuer: &[u8]) -> CryptoResult<()> {
    let cert = x509_cert::Certificate::from_der(cert).map_err(bad)?;
    let issuer = x509_cert::Certificate::from_der(issuer).map_err(bad)?;
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(bad(format!(
            "'{}' is not issued by '{}'",
            cert.tbs_certificate.subject, issuer.tbs_certificate.subject
        )));
    }
    let spki = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(bad)?;
    let key = PublicKey::from_spki_der(&spki)?;
    let tbs = cert.tbs_certificate.to_der().map_err(bad)?;
    let sig = cert
        .signature
        .as_bytes()
        .ok_or_else(|| bad("signature of unused bits"))?;
    verify_x509_signature(&key, cert.signature_algorithm.oid, &tbs, sig).map_err(|e| {
        bad(format!(
            "the signature of '{}' by '{}' does not verify: {e}",
            cert.tbs_certificate.subject, issuer.tbs_certificate.subject
        ))
    })
}

/// Whether the DER certificate's validity period includes `now` (Unix seconds).
pub fn valid_at(cert: &[u8], now: u64) -> CryptoResult<bool> {
    let cert = x509_cert::Certificate::from_der(cert).map_err(bad)?;
    let v = &cert.tbs_certificate.validity;
    Ok(v.not_before.to_unix_duration().as_secs() <= now
        && now <= v.not_after.to_unix_duration().as_secs())
}

/// The subject of a DER certificate in RFC 4514 text.
pub fn subject_text(cert: &[u8]) -> CryptoResult<String> {
    let cert = x509_cert::Certificate::from_der(cert).map_err(bad)?;
    Ok(cert.tbs_certificate.subject.to_string())
}

/// Checks a signature made by an attestation key (Securosys: RSA with SHA-256, PKCS#1 v1.5
/// or PSS; or ECDSA with SHA-256, DER or raw) over `data`.
pub fn verify_attestation_signature(
    key: &PublicKey,
    data: &[u8],
    signature: &[u8],
) -> CryptoResult<()> {
    match key {
        PublicKey::Rsa { .. } => verify(
            key,
            &Scheme::RsaPkcs1v15(HashAlg::Sha256),
            SignedData::Message(data),
            signature,
        )
        .or_else(|_| {
            verify(
                key,
                &Scheme::RsaPss(HashAlg::Sha256),
                SignedData::Message(data),
                signature,
            )
        }),
        PublicKey::Ec { curve, .. } => {
            let raw = if signature.first() == Some(&0x30) {
                ecdsa_der_to_raw(signature, *curve)?
            } else {
                signature.to_vec()
            };
            verify(
                key,
                &Scheme::Ecdsa(HashAlg::Sha256),
                SignedData::Message(data),
                &raw,
            )
        }
        PublicKey::Ed25519 { .. } => {
            verify(key, &Scheme::Ed25519, SignedData::Message(data), signature)
        }
        PublicKey::MlDsa { .. } | PublicKey::SlhDsa { .. } | PublicKey::Hss(_) => Err(bad(
            format!("{} attestation keys are not supported", key.kind()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_parse_as_openssl_writes_them() {
        assert_eq!(
            "DNS:a.example".parse::<San>(),
            Ok(San::Dns("a.example".into()))
        );
        assert_eq!(
            "IP:1.2.3.4".parse::<San>(),
            Ok(San::Ip("1.2.3.4".parse().unwrap()))
        );
        assert!("IP:1.2.3".parse::<San>().is_err());
        assert!("a.example".parse::<San>().is_err());
        assert!("DNS:a\nb".parse::<San>().is_err());
        assert!("X400:x".parse::<San>().is_err());
    }

    #[test]
    fn raw_ecdsa_becomes_der_with_minimal_integers() {
        let mut raw = vec![0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its top bit set: a leading zero byte in DER
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 0x21, 0x00]);
        assert_eq!(ecdsa_der_to_raw(&der, Curve::P256).unwrap(), raw);
    }
}
