//! X.509 certificates (RFC 5280 §4.1) for PKCS#11 certificate objects
//! (PKCS#11 v2.40 Base §4.6 "Certificate objects", §4.6.3 X.509 public key
//! certificate objects).

use der::{Decode, Encode};

use super::encoding;
use super::error::{CryptoError, CryptoResult};
use super::hash::HashAlg;
use super::keys::PublicKey;

/// A parsed X.509 certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The whole certificate, DER (`CKA_VALUE`).
    pub der: Vec<u8>,
    /// DER of the subject Name (`CKA_SUBJECT`).
    pub(crate) subject_der: Vec<u8>,
    /// DER of the issuer Name (`CKA_ISSUER`).
    pub(crate) issuer_der: Vec<u8>,
    /// DER INTEGER of the serial number, tag and length included
    /// (`CKA_SERIAL_NUMBER`).
    pub(crate) serial_der: Vec<u8>,
    /// Subject public key.
    pub public_key: PublicKey,
    /// notAfter as Unix seconds (`CKA_END_DATE` source).
    pub not_after_unix: i64,
    /// Subject as RFC 4514 text, for labels and logs.
    pub subject_text: String,
}

impl Certificate {
    /// Parse a DER certificate (RFC 5280 §4.1).
    pub fn from_der(der: &[u8]) -> CryptoResult<Certificate> {
        let bad = |what: &str| CryptoError::new(format!("bad X.509 certificate: {what}"));
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| CryptoError::new(format!("bad X.509 certificate: {e}")))?;
        let tbs = &cert.tbs_certificate;
        let subject_der = tbs.subject.to_der().map_err(|_| bad("subject"))?;
        let issuer_der = tbs.issuer.to_der().map_err(|_| bad("issuer"))?;
        let serial_der = tbs.serial_number.to_der().map_err(|_| bad("serial"))?;
        let spki_der = tbs
            .subject_public_key_info
            .to_der()
            .map_err(|_| bad("public key"))?;
        let public_key = PublicKey::from_spki_der(&spki_der)?;
        let secs = |t: x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
        Ok(Certificate {
            der: der.to_vec(),
            subject_der,
            issuer_der,
            serial_der,
            public_key,
            not_after_unix: secs(tbs.validity.not_after),
            subject_text: tbs.subject.to_string(),
        })
    }

    /// Parse a certificate given as PEM (the first `CERTIFICATE` block),
    /// base64 of DER, or DER.
    pub fn from_any(input: &[u8]) -> CryptoResult<Certificate> {
        let der = encoding::to_der(input, &["CERTIFICATE"])?;
        Certificate::from_der(&der)
    }

    /// All certificates of a PEM bundle (RFC 7468 §5), in order. Blocks with
    /// other labels are skipped. Input without PEM markers is taken as one
    /// certificate in DER or base64.
    pub fn chain_from_pem(pem: &[u8]) -> CryptoResult<Vec<Certificate>> {
        if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
            return Ok(vec![Certificate::from_any(pem)?]);
        }
        let certs = encoding::pem_blocks(pem)?
            .into_iter()
            .filter(|b| b.label == "CERTIFICATE")
            .map(|b| Certificate::from_der(&b.der))
            .collect::<CryptoResult<Vec<_>>>()?;
        if certs.is_empty() {
            return Err(CryptoError::new("no CERTIFICATE in PEM input"));
        }
        Ok(certs)
    }

    /// `CKA_CHECK_VALUE` of a certificate: the first three bytes of the
    /// SHA-1 hash of the DER certificate (PKCS#11 v2.40 Base §4.6.3).
    pub fn check_value(&self) -> [u8; 3] {
        let h = HashAlg::Sha1.digest(&self.der);
        [h[0], h[1], h[2]]
    }
}
