//! The one X.509 certificate builder of the tests (OpenSSL, independent of the module and the
//! simulator): certificate authorities, leaves for signing keys, code signing (Notation) and
//! TLS servers and clients. Used by `tests/*.rs`, the unit tests of `src/tsb` and
//! `notation-pkcs11/tests`.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509NameBuilder, X509};

/// A fresh EC P-256 key.
pub fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// What a certificate is for: its key usage and extended key usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A certificate authority: basicConstraints CA (critical), keyCertSign and cRLSign.
    Ca,
    /// A signing leaf: keyUsage digitalSignature (critical).
    Signing,
    /// A code-signing leaf (the Notary Project's rules): basicConstraints without CA,
    /// digitalSignature (critical), extendedKeyUsage codeSigning.
    CodeSigning,
    /// A TLS server for `localhost` / 127.0.0.1 (serverAuth, subjectAltName).
    TlsServer,
    /// A TLS client (clientAuth).
    TlsClient,
    /// No extensions at all (an old-style self-signed certificate).
    Bare,
}

/// Builds one certificate: `CertBuilder::new("CN").profile(..).self_signed(&key)` or
/// `.issued_by(&subject_key, &ca_cert, &ca_key)`.
#[derive(Clone, Debug)]
pub struct CertBuilder {
    cn: String,
    org: Option<String>,
    profile: Profile,
    days: u32,
    serial: Option<u32>,
    key_ids: bool,
}

impl CertBuilder {
    /// A signing leaf for `cn`, valid from now for 30 days, with a random serial.
    pub fn new(cn: &str) -> CertBuilder {
        CertBuilder {
            cn: cn.to_string(),
            org: None,
            profile: Profile::Signing,
            days: 30,
            serial: None,
            key_ids: false,
        }
    }

    /// The subject's organisation (`O`), before the `CN`.
    pub fn org(mut self, org: &str) -> CertBuilder {
        self.org = Some(org.to_string());
        self
    }

    pub fn profile(mut self, profile: Profile) -> CertBuilder {
        self.profile = profile;
        self
    }

    /// Validity from now, in days.
    pub fn days(mut self, days: u32) -> CertBuilder {
        self.days = days;
        self
    }

    /// A fixed serial number instead of a random one.
    pub fn serial(mut self, serial: u32) -> CertBuilder {
        self.serial = Some(serial);
        self
    }

    /// Adds subjectKeyIdentifier (and authorityKeyIdentifier when issued by a CA).
    pub fn key_ids(mut self) -> CertBuilder {
        self.key_ids = true;
        self
    }

    /// A self-signed certificate of `key`.
    pub fn self_signed(&self, key: &PKey<Private>) -> X509 {
        self.build(key, None, key)
    }

    /// A certificate of `subject_key` issued by `issuer` (signed with `issuer_key`).
    pub fn issued_by(
        &self,
        subject_key: &PKeyRef<impl HasPublic>,
        issuer: &X509,
        issuer_key: &PKey<Private>,
    ) -> X509 {
        self.build(subject_key, Some(issuer), issuer_key)
    }

    fn build(
        &self,
        subject_key: &PKeyRef<impl HasPublic>,
        issuer: Option<&X509>,
        signer: &PKey<Private>,
    ) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        if let Some(org) = &self.org {
            name.append_entry_by_text("O", org).unwrap();
        }
        name.append_entry_by_text("CN", &self.cn).unwrap();
        let name = name.build();
        let serial = match self.serial {
            Some(n) => BigNum::from_u32(n).unwrap(),
            None => {
                let mut bn = BigNum::new().unwrap();
                bn.rand(120, MsbOption::ONE, false).unwrap();
                bn
            }
        };
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map(|i| i.subject_name()).unwrap_or(&name))
            .unwrap();
        b.set_pubkey(subject_key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(self.days).unwrap())
            .unwrap();
        let critical_digital_signature = || {
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap()
        };
        match self.profile {
            Profile::Bare => {}
            Profile::Ca => {
                b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                    .unwrap();
                b.append_extension(
                    KeyUsage::new()
                        .critical()
                        .key_cert_sign()
                        .crl_sign()
                        .build()
                        .unwrap(),
                )
                .unwrap();
            }
            Profile::Signing => b.append_extension(critical_digital_signature()).unwrap(),
            Profile::CodeSigning => {
                b.append_extension(BasicConstraints::new().build().unwrap())
                    .unwrap();
                b.append_extension(critical_digital_signature()).unwrap();
                b.append_extension(ExtendedKeyUsage::new().code_signing().build().unwrap())
                    .unwrap();
            }
            Profile::TlsServer | Profile::TlsClient => {
                b.append_extension(BasicConstraints::new().build().unwrap())
                    .unwrap();
                b.append_extension(KeyUsage::new().digital_signature().build().unwrap())
                    .unwrap();
                let eku = if self.profile == Profile::TlsClient {
                    ExtendedKeyUsage::new().client_auth().build().unwrap()
                } else {
                    ExtendedKeyUsage::new().server_auth().build().unwrap()
                };
                b.append_extension(eku).unwrap();
                let san = SubjectAlternativeName::new()
                    .dns("localhost")
                    .ip("127.0.0.1")
                    .build(&b.x509v3_context(issuer.map(|i| &**i), None))
                    .unwrap();
                b.append_extension(san).unwrap();
            }
        }
        if self.key_ids {
            let ski = SubjectKeyIdentifier::new()
                .build(&b.x509v3_context(None, None))
                .unwrap();
            b.append_extension(ski).unwrap();
            if let Some(issuer) = issuer {
                let aki = AuthorityKeyIdentifier::new()
                    .keyid(true)
                    .build(&b.x509v3_context(Some(issuer), None))
                    .unwrap();
                b.append_extension(aki).unwrap();
            }
        }
        b.sign(signer, MessageDigest::sha256()).unwrap();
        b.build()
    }
}

/// A certificate authority with an EC P-256 key in memory. Its leaves use `leaf` (the
/// builder's name fields and options, with the leaf's CN put in by [`Ca::issue`]).
pub struct Ca {
    pub key: PKey<Private>,
    pub cert: X509,
    template: CertBuilder,
}

impl Ca {
    /// A self-signed root whose leaves are signing certificates (`O=tsb-pkcs11 tests`).
    pub fn root(cn: &str) -> Ca {
        Ca::root_like(cn, CertBuilder::new("").org("tsb-pkcs11 tests"))
    }

    /// A self-signed root built like `template` (its organisation and key IDs); its leaves use
    /// `template`'s profile.
    pub fn root_like(cn: &str, template: CertBuilder) -> Ca {
        let key = ec_key();
        let mut ca = template.clone();
        ca.cn = cn.to_string();
        ca.profile = Profile::Ca;
        let cert = ca.self_signed(&key);
        Ca {
            key,
            cert,
            template,
        }
    }

    /// An intermediate CA issued by `self` (same template).
    pub fn intermediate(&self, cn: &str) -> Ca {
        let key = ec_key();
        let mut ca = self.template.clone();
        ca.cn = cn.to_string();
        ca.profile = Profile::Ca;
        let cert = ca.issued_by(&key, &self.cert, &self.key);
        Ca {
            key,
            cert,
            template: self.template.clone(),
        }
    }

    /// A leaf for `public_key`, issued by this CA.
    pub fn issue(&self, cn: &str, public_key: &PKeyRef<impl HasPublic>) -> X509 {
        let mut leaf = self.template.clone();
        leaf.cn = cn.to_string();
        leaf.issued_by(public_key, &self.cert, &self.key)
    }
}
