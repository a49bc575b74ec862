//! X.509 made by HSM keys (`POST /v1/certificate/synchronous/selfsign`,
//! `POST /v1/certificate/synchronous/request`), certificate parsing for
//! `POST /v1/certificate/import/plain`, and the simulator's own TLS PKI (rcgen).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::asn1::{
    Any, BitString, GeneralizedTime, Ia5StringRef, ObjectIdentifier, OctetString,
    PrintableStringRef, SetOfVec, UtcTime, Utf8StringRef,
};
use der::{Decode, Encode, EncodePem};
use rand::RngCore;
use rustls::pki_types::pem::PemObject;
use sha1::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::{Attribute, AttributeTypeAndValue};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate};

use crate::config::{ClientAuth, KeyAlgorithm, KeySpec, ServerCertMode, TlsConfig};
use crate::error::{ApiError, SimError};
use crate::keys::{Hash, ParsedAlg, SigAlg, SimKey};

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

/// What a certificate (or CSR) made by an HSM key contains.
#[derive(Debug, Clone)]
pub struct CertParams {
    /// Subject attributes, in order: (OID, value). The first is normally the CN.
    pub subject: Vec<(ObjectIdentifier, String)>,
    pub validity_days: u32,
    /// TSB names: `DIGITAL_SIGNATURE`, `CONTENT_COMMITMENT`/`NON_REPUDIATION`,
    /// `KEY_ENCIPHERMENT`, `DATA_ENCIPHERMENT`, `KEY_AGREEMENT`, `KEY_CERT_SIGN`, `CRL_SIGN`,
    /// `ENCIPHER_ONLY`, `DECIPHER_ONLY`.
    pub key_usage: Vec<String>,
    /// `SERVER_AUTH`, `CLIENT_AUTH`, `CODE_SIGNING`, `EMAIL_PROTECTION`, `TIME_STAMPING`,
    /// `OCSP_SIGNING`, `ANY_EXTENDED_KEY_USAGE` (or dotted OIDs).
    pub extended_key_usage: Vec<String>,
    pub certificate_authority: bool,
    pub signature_algorithm: SigAlg,
}

/// Subject attribute names of `standardCertificateAttributes`, in the order they are put
/// into the subject (the CN last).
pub const SUBJECT_ORDER: [&str; 13] = [
    "country",
    "stateOrProvinceName",
    "locality",
    "organizationName",
    "organizationUnitName",
    "title",
    "surname",
    "givenName",
    "initials",
    "pseudonym",
    "generationQualifier",
    "email",
    "commonName",
];

/// Maps subject attribute names of `standardCertificateAttributes` to OIDs.
pub fn subject_attribute_oid(name: &str) -> Option<ObjectIdentifier> {
    Some(match name {
        "commonName" => oid("2.5.4.3"),
        "country" => oid("2.5.4.6"),
        "stateOrProvinceName" => oid("2.5.4.8"),
        "locality" => oid("2.5.4.7"),
        "organizationName" => oid("2.5.4.10"),
        "organizationUnitName" => oid("2.5.4.11"),
        "email" => oid("1.2.840.113549.1.9.1"),
        "title" => oid("2.5.4.12"),
        "surname" => oid("2.5.4.4"),
        "givenName" => oid("2.5.4.42"),
        "initials" => oid("2.5.4.43"),
        "pseudonym" => oid("2.5.4.65"),
        "generationQualifier" => oid("2.5.4.44"),
        _ => return None,
    })
}

/// The default certificate signature algorithm for a key.
pub fn default_cert_algorithm(key: &SimKey) -> Option<SigAlg> {
    Some(match key.spec.algorithm {
        KeyAlgorithm::Rsa => SigAlg::RsaPkcs1(Hash::Sha256),
        KeyAlgorithm::Ec => match key.spec.effective_curve() {
            crate::config::Curve::P256 | crate::config::Curve::Secp256k1 => {
                SigAlg::Ecdsa(Hash::Sha256)
            }
            crate::config::Curve::P384 => SigAlg::Ecdsa(Hash::Sha384),
            crate::config::Curve::P521 => SigAlg::Ecdsa(Hash::Sha512),
        },
        KeyAlgorithm::Ed => SigAlg::EdDsa,
        // AES keys do not sign; post-quantum keys get no certificates from the simulator.
        _ => return None,
    })
}

fn der_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::hsm(format!("certificate encoding failed: {e}"))
}

/// X.509 AlgorithmIdentifier of a signature algorithm usable in certificates (607 otherwise).
fn cert_algorithm_identifier(alg: SigAlg) -> Result<AlgorithmIdentifierOwned, ApiError> {
    let null = || Some(Any::null());
    let (o, parameters) = match alg {
        SigAlg::RsaPkcs1(h) => (
            match h {
                Hash::Sha1 => "1.2.840.113549.1.1.5",
                Hash::Sha224 => "1.2.840.113549.1.1.14",
                Hash::Sha256 => "1.2.840.113549.1.1.11",
                Hash::Sha384 => "1.2.840.113549.1.1.12",
                _ => "1.2.840.113549.1.1.13",
            },
            null(),
        ),
        SigAlg::RsaPss(h) => {
            let salt = h.output_len() as u8;
            let params = match h {
                Hash::Sha1 => rsa::pkcs1::RsaPssParams::new::<sha1::Sha1>(salt),
                Hash::Sha224 => rsa::pkcs1::RsaPssParams::new::<sha2::Sha224>(salt),
                Hash::Sha256 => rsa::pkcs1::RsaPssParams::new::<sha2::Sha256>(salt),
                Hash::Sha384 => rsa::pkcs1::RsaPssParams::new::<sha2::Sha384>(salt),
                _ => rsa::pkcs1::RsaPssParams::new::<sha2::Sha512>(salt),
            };
            (
                "1.2.840.113549.1.1.10",
                Some(Any::encode_from(&params).map_err(der_err)?),
            )
        }
        SigAlg::Ecdsa(h) => (
            match h {
                Hash::Sha1 => "1.2.840.10045.4.1",
                Hash::Sha224 => "1.2.840.10045.4.3.1",
                Hash::Sha256 => "1.2.840.10045.4.3.2",
                Hash::Sha384 => "1.2.840.10045.4.3.3",
                Hash::Sha512 => "1.2.840.10045.4.3.4",
                Hash::Sha3_224 => "2.16.840.1.101.3.4.3.9",
                Hash::Sha3_256 => "2.16.840.1.101.3.4.3.10",
                Hash::Sha3_384 => "2.16.840.1.101.3.4.3.11",
                Hash::Sha3_512 => "2.16.840.1.101.3.4.3.12",
                _ => {
                    return Err(ApiError::algorithm(format!(
                        "{alg:?} cannot be used for certificates"
                    )))
                }
            },
            None,
        ),
        SigAlg::EdDsa => ("1.3.101.112", None),
        _ => {
            return Err(ApiError::algorithm(format!(
                "{alg:?} cannot be used for certificates (it needs a digest as payload)"
            )))
        }
    };
    Ok(AlgorithmIdentifierOwned {
        oid: oid_runtime(o)?,
        parameters,
    })
}

fn oid_runtime(s: &str) -> Result<ObjectIdentifier, ApiError> {
    ObjectIdentifier::new(s).map_err(der_err)
}

fn build_name(subject: &[(ObjectIdentifier, String)]) -> Result<Name, ApiError> {
    let mut rdns = Vec::new();
    for (o, value) in subject {
        let any = if *o == oid("2.5.4.6") {
            Any::encode_from(&PrintableStringRef::new(value).map_err(|_| {
                ApiError::validation("country must be a printable string (e.g. CH)")
            })?)
        } else if *o == oid("1.2.840.113549.1.9.1") {
            Any::encode_from(
                &Ia5StringRef::new(value)
                    .map_err(|_| ApiError::validation("email must be ASCII"))?,
            )
        } else {
            Any::encode_from(&Utf8StringRef::new(value).map_err(der_err)?)
        }
        .map_err(der_err)?;
        let atv = AttributeTypeAndValue {
            oid: *o,
            value: any,
        };
        rdns.push(RelativeDistinguishedName(
            SetOfVec::try_from(vec![atv]).map_err(der_err)?,
        ));
    }
    Ok(RdnSequence(rdns))
}

fn x509_time(t: SystemTime) -> Result<Time, ApiError> {
    match UtcTime::from_system_time(t) {
        Ok(u) => Ok(Time::UtcTime(u)),
        Err(_) => Ok(Time::GeneralTime(
            GeneralizedTime::from_system_time(t).map_err(der_err)?,
        )),
    }
}

fn key_usage_flag(name: &str) -> Option<KeyUsages> {
    Some(match name {
        "DIGITAL_SIGNATURE" => KeyUsages::DigitalSignature,
        "CONTENT_COMMITMENT" | "NON_REPUDIATION" => KeyUsages::NonRepudiation,
        "KEY_ENCIPHERMENT" => KeyUsages::KeyEncipherment,
        "DATA_ENCIPHERMENT" => KeyUsages::DataEncipherment,
        "KEY_AGREEMENT" => KeyUsages::KeyAgreement,
        "KEY_CERT_SIGN" => KeyUsages::KeyCertSign,
        "CRL_SIGN" => KeyUsages::CRLSign,
        "ENCIPHER_ONLY" => KeyUsages::EncipherOnly,
        "DECIPHER_ONLY" => KeyUsages::DecipherOnly,
        _ => return None,
    })
}

fn eku_oid(name: &str) -> Option<ObjectIdentifier> {
    Some(match name {
        "SERVER_AUTH" => oid("1.3.6.1.5.5.7.3.1"),
        "CLIENT_AUTH" => oid("1.3.6.1.5.5.7.3.2"),
        "CODE_SIGNING" => oid("1.3.6.1.5.5.7.3.3"),
        "EMAIL_PROTECTION" => oid("1.3.6.1.5.5.7.3.4"),
        "TIME_STAMPING" => oid("1.3.6.1.5.5.7.3.8"),
        "OCSP_SIGNING" => oid("1.3.6.1.5.5.7.3.9"),
        "ANY_EXTENDED_KEY_USAGE" => oid("2.5.29.37.0"),
        other => return ObjectIdentifier::new(other).ok(),
    })
}

fn extension<T: Encode>(id: &str, critical: bool, value: &T) -> Result<Extension, ApiError> {
    Ok(Extension {
        extn_id: oid_runtime(id)?,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(der_err)?).map_err(der_err)?,
    })
}

/// keyUsage (critical), extendedKeyUsage, basicConstraints (critical) and, when `ski` is
/// given, subject/authority key identifiers.
fn build_extensions(p: &CertParams, ski: Option<&[u8]>) -> Result<Vec<Extension>, ApiError> {
    let mut exts = Vec::new();
    exts.push(extension(
        "2.5.29.19",
        true,
        &BasicConstraints {
            ca: p.certificate_authority,
            path_len_constraint: None,
        },
    )?);
    if !p.key_usage.is_empty() {
        let mut usage: Option<KeyUsage> = None;
        for name in &p.key_usage {
            let flag = key_usage_flag(name)
                .ok_or_else(|| ApiError::validation(format!("Unknown keyUsage '{name}'")))?;
            usage = Some(match usage {
                None => KeyUsage(flag.into()),
                Some(KeyUsage(acc)) => KeyUsage(acc | flag),
            });
        }
        if let Some(usage) = usage {
            exts.push(extension("2.5.29.15", true, &usage)?);
        }
    }
    if !p.extended_key_usage.is_empty() {
        let mut oids = Vec::new();
        for name in &p.extended_key_usage {
            oids.push(eku_oid(name).ok_or_else(|| {
                ApiError::validation(format!("Unknown extendedKeyUsage '{name}'"))
            })?);
        }
        exts.push(extension("2.5.29.37", false, &ExtendedKeyUsage(oids))?);
    }
    if let Some(ski) = ski {
        let id = OctetString::new(ski).map_err(der_err)?;
        exts.push(extension(
            "2.5.29.14",
            false,
            &SubjectKeyIdentifier(id.clone()),
        )?);
        exts.push(extension(
            "2.5.29.35",
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(id),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
        )?);
    }
    Ok(exts)
}

fn key_spki(key: &SimKey) -> Result<SubjectPublicKeyInfoOwned, ApiError> {
    let der = key
        .public_der
        .as_ref()
        .ok_or_else(|| ApiError::forbidden("The key has no public key"))?;
    SubjectPublicKeyInfoOwned::from_der(der).map_err(der_err)
}

/// A self-signed certificate made by `key` (DER).
pub fn self_signed(key: &SimKey, p: &CertParams) -> Result<Vec<u8>, ApiError> {
    let spki = key_spki(key)?;
    let alg_id = cert_algorithm_identifier(p.signature_algorithm)?;
    let name = build_name(&p.subject)?;
    let ski = sha1::Sha1::digest(spki.subject_public_key.raw_bytes());
    let mut serial = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let now = SystemTime::now();
    let not_before = now - Duration::from_secs(60);
    let not_after = now + Duration::from_secs(u64::from(p.validity_days.max(1)) * 86_400);
    let tbs = TbsCertificate {
        version: x509_cert::Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(der_err)?,
        signature: alg_id.clone(),
        issuer: name.clone(),
        validity: Validity {
            not_before: x509_time(not_before)?,
            not_after: x509_time(not_after)?,
        },
        subject: name,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(build_extensions(p, Some(&ski))?),
    };
    let tbs_der = tbs.to_der().map_err(der_err)?;
    let signature = key.material.sign(p.signature_algorithm, &tbs_der, false)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg_id,
        signature: BitString::from_bytes(&signature).map_err(der_err)?,
    };
    cert.to_der().map_err(der_err)
}

/// A PKCS#10 certificate signing request made by `key` (DER); the key usages are requested in
/// an extensionRequest attribute.
pub fn signing_request(key: &SimKey, p: &CertParams) -> Result<Vec<u8>, ApiError> {
    let spki = key_spki(key)?;
    let alg_id = cert_algorithm_identifier(p.signature_algorithm)?;
    let mut attributes = SetOfVec::new();
    let mut exts = build_extensions(p, None)?;
    if !p.certificate_authority {
        // A leaf CSR does not need to ask for basicConstraints.
        exts.retain(|e| e.extn_id != oid("2.5.29.19"));
    }
    if !exts.is_empty() {
        let value = Any::encode_from(&exts).map_err(der_err)?;
        attributes
            .insert(Attribute {
                oid: oid("1.2.840.113549.1.9.14"),
                values: SetOfVec::try_from(vec![value]).map_err(der_err)?,
            })
            .map_err(der_err)?;
    }
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: build_name(&p.subject)?,
        public_key: spki,
        attributes,
    };
    let info_der = info.to_der().map_err(der_err)?;
    let signature = key.material.sign(p.signature_algorithm, &info_der, false)?;
    let req = CertReq {
        info,
        algorithm: alg_id,
        signature: BitString::from_bytes(&signature).map_err(der_err)?,
    };
    req.to_der().map_err(der_err)
}

/// PEM text of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    match Certificate::from_der(der).and_then(|c| c.to_pem(der::pem::LineEnding::LF)) {
        Ok(pem) => pem,
        Err(_) => pem_wrap("CERTIFICATE", der),
    }
}

/// Generic PEM armour.
pub fn pem_wrap(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Checks that `der` is one X.509 certificate.
pub fn parse_certificate(der: &[u8]) -> Result<(), String> {
    Certificate::from_der(der)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Reads a PEM or DER certificate file (config `certificate.file`).
pub fn read_certificate_file(path: &Path) -> Result<Vec<u8>, SimError> {
    let bytes =
        std::fs::read(path).map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?;
    let der = if bytes.starts_with(b"-----") {
        let first = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes).next();
        first
            .ok_or_else(|| SimError::Config(format!("{}: no certificate", path.display())))?
            .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?
            .to_vec()
    } else {
        bytes
    };
    parse_certificate(&der).map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?;
    Ok(der)
}

// ---------------------------------------------------------------------------------------------
// TLS PKI of the simulator itself

/// Certificates and keys the TLS listener uses, plus the files written for clients.
pub struct TlsMaterial {
    pub server_config: std::sync::Arc<rustls::ServerConfig>,
    pub ca_cert_path: PathBuf,
    pub client_cert_paths: Option<(PathBuf, PathBuf)>,
}

fn tls_err(e: impl std::fmt::Display) -> SimError {
    SimError::Tls(e.to_string())
}

fn offset_time(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn ca_params(cn: &str) -> Result<rcgen::CertificateParams, SimError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    dn.push(rcgen::DnType::OrganizationName, "tsb-sim");
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = offset_time(now - Duration::from_secs(86_400));
    params.not_after = offset_time(now + Duration::from_secs(10 * 365 * 86_400));
    Ok(params)
}

/// A CA (key + certificate); the key is reused from `dir/<name>.key` when present so a
/// persistent state directory keeps the same trust anchor.
fn load_or_make_ca(
    dir: &Path,
    name: &str,
    cn: &str,
    cert_path: &Path,
) -> Result<(rcgen::Certificate, rcgen::KeyPair), SimError> {
    let key_path = dir.join(format!("{name}.key"));
    let existing = std::fs::read_to_string(&key_path)
        .ok()
        .and_then(|pem| rcgen::KeyPair::from_pem(&pem).ok());
    let reuse = existing.is_some() && cert_path.exists();
    let key = match existing {
        Some(k) => k,
        None => {
            let k = rcgen::KeyPair::generate().map_err(tls_err)?;
            write_file(&key_path, &k.serialize_pem(), true)?;
            k
        }
    };
    let cert = ca_params(cn)?.self_signed(&key).map_err(tls_err)?;
    if !reuse {
        write_file(cert_path, &cert.pem(), false)?;
    }
    Ok((cert, key))
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), SimError> {
    if let Some(parent) = path.parent() {
        crate::util::create_private_dir(parent)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts
        .open(path)
        .map_err(|e| SimError::Tls(format!("{}: {e}", path.display())))?;
    std::io::Write::write_all(&mut f, contents.as_bytes())?;
    Ok(())
}

/// Builds the TLS PKI: the server CA (written to `ca_cert_path`), the server certificate
/// according to `serverCertMode`, and for mTLS the client CA and a client certificate + key.
pub fn build_tls(cfg: &TlsConfig, dir: &Path) -> Result<TlsMaterial, SimError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let ca_cert_path = cfg
        .ca_cert_path
        .clone()
        .unwrap_or_else(|| dir.join("ca.pem"));
    let (ca_cert, ca_key) = load_or_make_ca(dir, "ca", "tsb-sim CA", &ca_cert_path)?;

    // Server certificate.
    let now = SystemTime::now();
    let names: Vec<String> = match cfg.server_cert_mode {
        ServerCertMode::WrongHost => vec!["wrong-host.invalid".to_string()],
        _ => vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ],
    };
    let mut params = rcgen::CertificateParams::new(names).map_err(tls_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tsb-sim server");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    if cfg.server_cert_mode == ServerCertMode::Expired {
        params.not_before = offset_time(now - Duration::from_secs(30 * 86_400));
        params.not_after = offset_time(now - Duration::from_secs(86_400));
    } else {
        params.not_before = offset_time(now - Duration::from_secs(86_400));
        params.not_after = offset_time(now + Duration::from_secs(365 * 86_400));
    }
    let server_key = rcgen::KeyPair::generate().map_err(tls_err)?;
    let server_cert = if cfg.server_cert_mode == ServerCertMode::Untrusted {
        let other_key = rcgen::KeyPair::generate().map_err(tls_err)?;
        let other = ca_params("tsb-sim untrusted CA")?
            .self_signed(&other_key)
            .map_err(tls_err)?;
        params
            .signed_by(&server_key, &other, &other_key)
            .map_err(tls_err)?
    } else {
        params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .map_err(tls_err)?
    };
    let chain = vec![server_cert.der().clone()];
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(server_key.serialize_der()),
    );

    // Client certificates (mTLS).
    let mut client_cert_paths = None;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = if cfg.client_auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(file) = &cfg.client_ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| SimError::Tls(format!("{}: {e}", file.display())))?;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.map_err(tls_err)?).map_err(tls_err)?;
            }
        } else {
            let (client_ca, client_ca_key) = load_or_make_ca(
                dir,
                "client-ca",
                "tsb-sim client CA",
                &dir.join("client-ca.pem"),
            )?;
            roots.add(client_ca.der().clone()).map_err(tls_err)?;
            let mut cp = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
            cp.distinguished_name
                .push(rcgen::DnType::CommonName, "tsb-sim client");
            cp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            cp.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
            cp.not_before = offset_time(now - Duration::from_secs(86_400));
            cp.not_after = offset_time(now + Duration::from_secs(365 * 86_400));
            let client_key = rcgen::KeyPair::generate().map_err(tls_err)?;
            let client_cert = cp
                .signed_by(&client_key, &client_ca, &client_ca_key)
                .map_err(tls_err)?;
            let cert_path = cfg
                .client_cert_path
                .clone()
                .unwrap_or_else(|| dir.join("client.pem"));
            let key_path = cfg
                .client_key_path
                .clone()
                .unwrap_or_else(|| dir.join("client.key"));
            write_file(&cert_path, &client_cert.pem(), false)?;
            write_file(&key_path, &client_key.serialize_pem(), true)?;
            client_cert_paths = Some((cert_path, key_path));
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        );
        let verifier = if cfg.client_auth == ClientAuth::Optional {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        builder.with_client_cert_verifier(verifier.build().map_err(tls_err)?)
    };
    let mut server_config = builder.with_single_cert(chain, key_der).map_err(tls_err)?;
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        server_config: std::sync::Arc::new(server_config),
        ca_cert_path,
        client_cert_paths,
    })
}

/// Builds one key: material (cached), public key, and the configured certificate.
pub(crate) fn build_key(spec: KeySpec, cache_dir: Option<&Path>) -> Result<SimKey, SimError> {
    let material = crate::keys::obtain(&spec, cache_dir)?;
    let cert_spec = spec.certificate.clone();
    let key = SimKey::new(spec, material)?;
    if let Some(c) = cert_spec {
        let der = if let Some(file) = &c.file {
            read_certificate_file(file)?
        } else {
            let alg = match &c.signature_algorithm {
                Some(name) => match SigAlg::parse(name) {
                    ParsedAlg::Known(a) => a,
                    _ => {
                        return Err(SimError::Config(format!(
                            "key '{}': unknown certificate signatureAlgorithm '{name}'",
                            key.label()
                        )))
                    }
                },
                None => default_cert_algorithm(&key).ok_or_else(|| {
                    SimError::Config(format!("key '{}' cannot have a certificate", key.label()))
                })?,
            };
            let params = CertParams {
                subject: vec![(
                    subject_attribute_oid("commonName").expect("known"),
                    c.common_name
                        .clone()
                        .unwrap_or_else(|| key.label().to_string()),
                )],
                validity_days: c.validity_days,
                key_usage: c.key_usage.clone(),
                extended_key_usage: c.extended_key_usage.clone(),
                certificate_authority: c.certificate_authority,
                signature_algorithm: alg,
            };
            self_signed(&key, &params).map_err(|e| {
                SimError::Config(format!(
                    "key '{}': certificate generation failed: {}",
                    key.label(),
                    e.message
                ))
            })?
        };
        *key.certificate.lock() = Some(der);
    }
    Ok(key)
}

/// The attestation key's certificate chain, as a Primus HSM's: a root ("tsb-sim attestation
/// root", self-signed), a device certificate it issues, and the attestation key's certificate
/// the device issues. DER, attestation key first, root last. `key` is the attestation key,
/// `common_name` its name.
pub fn attestation_chain(
    key: &p256::ecdsa::SigningKey,
    common_name: &str,
) -> Result<Vec<Vec<u8>>, SimError> {
    use pkcs8::EncodePrivateKey;
    let root_key = rcgen::KeyPair::generate().map_err(tls_err)?;
    let root = ca_params("tsb-sim attestation root")?
        .self_signed(&root_key)
        .map_err(tls_err)?;
    let device_key = rcgen::KeyPair::generate().map_err(tls_err)?;
    let device = ca_params("tsb-sim HSM device")?
        .signed_by(&device_key, &root, &root_key)
        .map_err(tls_err)?;
    let pkcs8 = key.to_pkcs8_der().map_err(tls_err)?;
    let leaf_key = rcgen::KeyPair::try_from(pkcs8.as_bytes()).map_err(tls_err)?;
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    leaf.distinguished_name
        .push(rcgen::DnType::OrganizationName, "tsb-sim");
    leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let now = SystemTime::now();
    leaf.not_before = offset_time(now - Duration::from_secs(86_400));
    leaf.not_after = offset_time(now + Duration::from_secs(10 * 365 * 86_400));
    let leaf = leaf
        .signed_by(&leaf_key, &device, &device_key)
        .map_err(tls_err)?;
    Ok(vec![
        leaf.der().to_vec(),
        device.der().to_vec(),
        root.der().to_vec(),
    ])
}
