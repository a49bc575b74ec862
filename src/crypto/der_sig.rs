//! ECDSA signature encodings.
//!
//! * DER `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`
//!   (RFC 3279 §2.2.3, ANSI X9.62), as returned by the TSB / Java.
//! * Raw `r || s`, each left-padded to the field size, as PKCS#11 wants it
//!   (PKCS#11 v2.40 Current Mechanisms §2.3.1: "the signature octets
//!   correspond to the concatenation of the ECDSA values r and s, both
//!   represented as an octet string of equal length of at most nLen").
//!
//! The conversion is the `ecdsa` crate's (`Signature::from_der`, strict DER).

use super::error::{CryptoError, CryptoResult};
use super::keys::Curve;

/// Convert a DER `Ecdsa-Sig-Value` (RFC 3279 §2.2.3) to the PKCS#11 raw form
/// `r || s`, each left-padded with zeros to the curve's field size (32 bytes for P-256
/// and secp256k1, 48 for P-384, 66 for P-521).
///
/// Strict DER (X.690 §10): rejects wrong tags, non-minimal lengths or INTEGERs, trailing
/// data, negative values, and r or s that are zero or not below the group order.
pub fn ecdsa_der_to_raw(der: &[u8], curve: Curve) -> CryptoResult<Vec<u8>> {
    let err = |e: ecdsa::Error| CryptoError::new(format!("bad ECDSA DER signature: {e}"));
    Ok(match curve {
        Curve::P256 => p256::ecdsa::Signature::from_der(der).map_err(err)?.to_vec(),
        Curve::P384 => p384::ecdsa::Signature::from_der(der).map_err(err)?.to_vec(),
        Curve::P521 => p521::ecdsa::Signature::from_der(der).map_err(err)?.to_vec(),
        Curve::Secp256k1 => k256::ecdsa::Signature::from_der(der).map_err(err)?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of SEQUENCE { INTEGER r, INTEGER s } from the INTEGERs' content bytes.
    fn seq(r: &[u8], s: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, r.len() as u8];
        body.extend_from_slice(r);
        body.extend_from_slice(&[0x02, s.len() as u8]);
        body.extend_from_slice(s);
        let mut out = vec![0x30];
        if body.len() >= 0x80 {
            out.push(0x81);
        }
        out.push(body.len() as u8);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn sign_bytes_and_short_values_are_padded() {
        // r with its high bit set needs a sign byte (33 content bytes on P-256); s is short.
        let mut r = vec![0x00, 0x80];
        r.extend_from_slice(&[0x11; 31]);
        let der = seq(&r, &[0x12, 0x34]);
        let raw = ecdsa_der_to_raw(&der, Curve::P256).unwrap();
        assert_eq!(raw.len(), 64);
        assert_eq!(&raw[..32], &r[1..]);
        assert!(raw[32..62].iter().all(|&b| b == 0));
        assert_eq!(&raw[62..], &[0x12, 0x34]);
        // P-521: long-form SEQUENCE length, 65-byte values padded to 66.
        let v = [0x01; 65];
        let der = seq(&v, &v[1..]);
        assert_eq!(der[1], 0x81);
        let raw = ecdsa_der_to_raw(&der, Curve::P521).unwrap();
        assert_eq!(raw.len(), 132);
        assert_eq!(&raw[..2], &[0, 1]);
        assert_eq!(&raw[1..66], &v[..]);
        assert_eq!(&raw[66..68], &[0, 0]);
        assert_eq!(&raw[68..], &v[1..]);
        // secp256k1 keeps its own order: this r is above P-256's order, below secp256k1's.
        let mut r = vec![0x00];
        r.extend_from_slice(&[0xff; 15]);
        r.push(0xfd);
        r.extend_from_slice(&[0x01; 16]);
        let der = seq(&r, &[1]);
        assert!(ecdsa_der_to_raw(&der, Curve::P256).is_err());
        assert_eq!(
            &ecdsa_der_to_raw(&der, Curve::Secp256k1).unwrap()[..32],
            &r[1..]
        );
    }

    #[test]
    fn rejects_malformed() {
        let ok = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02];
        let p256 = |d: &[u8]| ecdsa_der_to_raw(d, Curve::P256);
        assert!(p256(&ok).is_ok());
        let bad: &[&[u8]] = &[
            // wrong outer tag
            &[0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02],
            // trailing data after and inside the SEQUENCE
            &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0x00],
            &[0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0x00],
            // negative, empty, zero, redundant leading zero
            &[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x02],
            &[0x30, 0x05, 0x02, 0x00, 0x02, 0x01, 0x02],
            &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x02],
            &[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x02],
            // non-minimal length
            &[0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02],
            // missing s, truncated, empty
            &[0x30, 0x03, 0x02, 0x01, 0x01],
            &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01],
            &[],
        ];
        for d in bad {
            assert!(p256(d).is_err(), "{d:02x?}");
        }
        // 33 value bytes without a sign byte: too long for P-256, fine for P-384.
        let big = seq(&[0x01; 33], &[0x01]);
        assert!(p256(&big).is_err());
        assert!(ecdsa_der_to_raw(&big, Curve::P384).is_ok());
        let e = p256(&[0x31, 0x00]).unwrap_err();
        assert!(e.to_string().starts_with("bad ECDSA DER signature"), "{e}");
    }
}
