//! Certificate chain ordering.
//!
//! `generate-signature` returns `certificateChain`: "Ordered list of certificates starting
//! with leaf certificate and ending with root certificate" (`specs/plugin-extensibility.md`,
//! "generate-signature"). The signature specification (`specs/signature-specification.md`,
//! "Certificate Requirements", "Other requirements") adds that a valid chain contains a
//! root, must not chain to several parents, and must not contain unrelated certificates.
//! [`build_chain`] therefore walks from the leaf to its issuer, one certificate at a time,
//! taking only certificates that issued the previous one, until a self-issued root.

use der::{Decode, Encode};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};
use x509_cert::Certificate;

use crate::keyspec::PublicKey;

/// Longest chain we will build (guards against pathological token contents).
const MAX_DEPTH: usize = 16;

/// A parsed X.509 certificate with its DER encoding.
#[derive(Clone, Debug)]
pub struct Cert {
    pub der: Vec<u8>,
    pub cert: Certificate,
    subject: Vec<u8>,
    issuer: Vec<u8>,
}

impl PartialEq for Cert {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Cert {
    /// Parses a DER certificate.
    pub fn from_der(der_bytes: &[u8]) -> Result<Cert, String> {
        let cert = Certificate::from_der(der_bytes)
            .map_err(|e| format!("malformed X.509 certificate: {e}"))?;
        Cert::from_cert(cert)
    }

    /// Wraps a parsed certificate.
    pub fn from_cert(cert: Certificate) -> Result<Cert, String> {
        let der = cert
            .to_der()
            .map_err(|e| format!("cannot encode certificate: {e}"))?;
        let subject = cert
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|e| format!("cannot encode subject: {e}"))?;
        let issuer = cert
            .tbs_certificate
            .issuer
            .to_der()
            .map_err(|e| format!("cannot encode issuer: {e}"))?;
        Ok(Cert {
            der,
            cert,
            subject,
            issuer,
        })
    }

    /// Parses a PEM file holding one or more certificates.
    pub fn load_pem_chain(pem: &[u8]) -> Result<Vec<Cert>, String> {
        let certs = Certificate::load_pem_chain(pem)
            .map_err(|e| format!("malformed PEM certificate file: {e}"))?;
        certs.into_iter().map(Cert::from_cert).collect()
    }

    /// The subject as a readable distinguished name.
    pub fn subject_name(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// True if subject and issuer are the same name: a root (or self-issued) certificate.
    pub fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }

    /// The certificate's public key.
    pub fn public_key(&self) -> Result<PublicKey, String> {
        let spki = self
            .cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("cannot encode public key: {e}"))?;
        PublicKey::from_spki_der(&spki)
    }

    /// The latest `notBefore`, used to prefer the newest of several matching certificates.
    pub fn not_before_unix(&self) -> u64 {
        self.cert
            .tbs_certificate
            .validity
            .not_before
            .to_unix_duration()
            .as_secs()
    }

    fn subject_key_id(&self) -> Option<Vec<u8>> {
        match self.cert.tbs_certificate.get::<SubjectKeyIdentifier>() {
            Ok(Some((_, ski))) => Some(ski.0.as_bytes().to_vec()),
            _ => None,
        }
    }

    fn authority_key_id(&self) -> Option<Vec<u8>> {
        match self.cert.tbs_certificate.get::<AuthorityKeyIdentifier>() {
            Ok(Some((_, aki))) => aki.key_identifier.map(|k| k.as_bytes().to_vec()),
            _ => None,
        }
    }

    /// True if `issuer` may have issued `self`: its subject is our issuer name and, when
    /// both certificates carry key identifiers, the identifiers agree (RFC 5280 §4.2.1.1).
    fn issued_by(&self, issuer: &Cert) -> bool {
        if self.issuer != issuer.subject {
            return false;
        }
        match (self.authority_key_id(), issuer.subject_key_id()) {
            (Some(aki), Some(ski)) => aki == ski,
            _ => true,
        }
    }
}

/// Orders a chain from `leaf` to a root using certificates from `pool`.
///
/// Each step picks the certificate in `pool` that issued the previous one (see
/// [`Cert::issued_by`]); certificates already in the chain are not reused, and unrelated
/// certificates in `pool` are left out. The walk ends at a self-issued certificate. If no
/// issuer can be found before that, the chain has no root, which Notation rejects, so this
/// is an error naming the certificate whose issuer is missing.
pub fn build_chain(leaf: Cert, pool: &[Cert]) -> Result<Vec<Cert>, String> {
    let mut chain = vec![leaf];
    loop {
        let last = chain.last().expect("chain is never empty");
        if last.is_self_issued() {
            return Ok(chain);
        }
        if chain.len() >= MAX_DEPTH {
            return Err(format!(
                "certificate chain is longer than {MAX_DEPTH} certificates"
            ));
        }
        let candidates: Vec<&Cert> = pool
            .iter()
            .filter(|c| last.issued_by(c) && !chain.contains(c))
            .collect();
        // Several certificates for one issuer (a renewed CA): take the newest.
        let Some(next) = candidates.into_iter().max_by_key(|c| c.not_before_unix()) else {
            return Err(format!(
                "the issuer of '{}' (issuer '{}') was not found, so the chain has no root",
                last.subject_name(),
                last.cert.tbs_certificate.issuer
            ));
        };
        chain.push(next.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{
        AuthorityKeyIdentifier as Aki, BasicConstraints, KeyUsage, SubjectKeyIdentifier as Ski,
    };
    use openssl::x509::{X509NameBuilder, X509};

    fn key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    /// Issues a certificate for `cn` with `key`, signed by `issuer` (self-signed if None).
    fn issue(
        cn: &str,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
        ca: bool,
        serial: u32,
    ) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map(|(c, _)| c.subject_name()).unwrap_or(&name))
            .unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
        }
        let ski = Ski::new().build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(ski).unwrap();
        if let Some((issuer_cert, _)) = issuer {
            let aki = Aki::new()
                .keyid(true)
                .build(&b.x509v3_context(Some(issuer_cert), None))
                .unwrap();
            b.append_extension(aki).unwrap();
        }
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.sign(
            issuer.map(|(_, k)| k).unwrap_or(key),
            MessageDigest::sha256(),
        )
        .unwrap();
        b.build()
    }

    fn c(x: &X509) -> Cert {
        Cert::from_der(&x.to_der().unwrap()).unwrap()
    }

    #[test]
    fn orders_leaf_to_root_and_skips_unrelated() {
        let (rk, ik, lk, ok) = (key(), key(), key(), key());
        let root = issue("root", &rk, None, true, 1);
        let inter = issue("inter", &ik, Some((&root, &rk)), true, 2);
        let leaf = issue("leaf", &lk, Some((&inter, &ik)), false, 3);
        let other = issue("other", &ok, None, true, 4);
        let pool = vec![c(&other), c(&root), c(&leaf), c(&inter)];
        let chain = build_chain(c(&leaf), &pool).unwrap();
        let names: Vec<String> = chain.iter().map(|x| x.subject_name()).collect();
        assert_eq!(names, ["CN=leaf", "CN=inter", "CN=root"]);
    }

    #[test]
    fn self_signed_leaf_is_its_own_chain() {
        let k = key();
        let leaf = issue("solo", &k, None, false, 1);
        let chain = build_chain(c(&leaf), &[]).unwrap();
        assert_eq!(chain.len(), 1);
    }

    #[test]
    fn missing_issuer_is_an_error() {
        let (rk, lk) = (key(), key());
        let root = issue("root", &rk, None, true, 1);
        let leaf = issue("leaf", &lk, Some((&root, &rk)), false, 2);
        let err = build_chain(c(&leaf), &[]).unwrap_err();
        assert!(err.contains("CN=leaf"), "{err}");
    }

    #[test]
    fn same_name_different_key_is_not_the_issuer() {
        let (rk, fake_k, lk) = (key(), key(), key());
        let root = issue("root", &rk, None, true, 1);
        let fake_root = issue("root", &fake_k, None, true, 2);
        let leaf = issue("leaf", &lk, Some((&root, &rk)), false, 3);
        let chain = build_chain(c(&leaf), &[c(&fake_root), c(&root)]).unwrap();
        assert_eq!(chain[1], c(&root));
    }

    #[test]
    fn pem_chain_loads_in_order() {
        let (rk, lk) = (key(), key());
        let root = issue("root", &rk, None, true, 1);
        let leaf = issue("leaf", &lk, Some((&root, &rk)), false, 2);
        let mut pem = leaf.to_pem().unwrap();
        pem.extend(root.to_pem().unwrap());
        let certs = Cert::load_pem_chain(&pem).unwrap();
        assert_eq!(certs, vec![c(&leaf), c(&root)]);
        let pk = certs[0].public_key().unwrap();
        assert_eq!(pk.key_spec().unwrap(), crate::keyspec::KeySpec::Ec256);
    }
}
