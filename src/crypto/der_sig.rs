//! ECDSA signature encodings.
//!
//! * DER `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`
//!   (RFC 3279 §2.2.3, ANSI X9.62), as returned by the TSB / Java.
//! * Raw `r || s`, each left-padded to the field size, as PKCS#11 wants it
//!   (PKCS#11 v2.40 Current Mechanisms §2.3.1: "the signature octets
//!   correspond to the concatenation of the ECDSA values r and s, both
//!   represented as an octet string of equal length of at most nLen").

use super::{CryptoError, CryptoResult};

fn err(msg: &str) -> CryptoError {
    CryptoError::new(format!("bad ECDSA DER signature: {msg}"))
}

/// Read one DER TLV header at `data[pos..]`; returns (tag, content range end, content start).
fn read_tlv(data: &[u8], pos: usize) -> CryptoResult<(u8, usize, usize)> {
    let tag = *data.get(pos).ok_or_else(|| err("truncated"))?;
    let first = *data.get(pos + 1).ok_or_else(|| err("truncated"))?;
    let (len, start) = if first < 0x80 {
        (first as usize, pos + 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 2 {
            return Err(err("unsupported length encoding"));
        }
        let bytes = data
            .get(pos + 2..pos + 2 + n)
            .ok_or_else(|| err("truncated"))?;
        let mut len = 0usize;
        for &b in bytes {
            len = (len << 8) | b as usize;
        }
        // DER: minimal length encoding.
        if len < 0x80 || (n == 2 && len < 0x100) {
            return Err(err("non-minimal length"));
        }
        (len, pos + 2 + n)
    };
    let end = start
        .checked_add(len)
        .ok_or_else(|| err("length overflow"))?;
    if end > data.len() {
        return Err(err("truncated"));
    }
    Ok((tag, end, start))
}

/// Convert a DER `Ecdsa-Sig-Value` (RFC 3279 §2.2.3) to the PKCS#11 raw form
/// `r || s`, each left-padded with zeros to `field_bytes` (32 for P-256 and
/// secp256k1, 48 for P-384, 66 for P-521).
///
/// Handles the sign byte (a leading `0x00` before a value with the high bit
/// set, e.g. 33-byte P-256 values) and short values (e.g. 65-byte P-521
/// values) which must be left-padded. Rejects wrong tags, bad lengths,
/// trailing data, negative integers and values longer than `field_bytes`.
/// Redundant leading zero bytes are tolerated (BER-style), the value is what
/// counts.
pub fn ecdsa_der_to_raw(der: &[u8], field_bytes: usize) -> CryptoResult<Vec<u8>> {
    if field_bytes == 0 {
        return Err(CryptoError::new("field size is zero"));
    }
    let (tag, seq_end, mut pos) = read_tlv(der, 0)?;
    if tag != 0x30 {
        return Err(err("not a SEQUENCE"));
    }
    if seq_end != der.len() {
        return Err(err("trailing data"));
    }
    let mut out = vec![0u8; 2 * field_bytes];
    for i in 0..2 {
        let (tag, end, start) = read_tlv(der, pos)?;
        if tag != 0x02 {
            return Err(err("not an INTEGER"));
        }
        if end > seq_end {
            return Err(err("INTEGER overruns SEQUENCE"));
        }
        let content = &der[start..end];
        if content.is_empty() {
            return Err(err("empty INTEGER"));
        }
        if content[0] & 0x80 != 0 {
            return Err(err("negative INTEGER"));
        }
        let first_nonzero = content
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(content.len());
        let value = &content[first_nonzero..];
        if value.len() > field_bytes {
            return Err(err("INTEGER longer than the field size"));
        }
        let slot = &mut out[i * field_bytes..(i + 1) * field_bytes];
        slot[field_bytes - value.len()..].copy_from_slice(value);
        pos = end;
    }
    if pos != seq_end {
        return Err(err("trailing data in SEQUENCE"));
    }
    Ok(out)
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.push(0x81);
        out.push(len as u8);
    } else {
        out.push(0x82);
        out.push((len >> 8) as u8);
        out.push(len as u8);
    }
}

fn push_uint(out: &mut Vec<u8>, value: &[u8]) {
    let first_nonzero = value.iter().position(|&b| b != 0).unwrap_or(value.len());
    let v = &value[first_nonzero..];
    let pad = v.first().is_none_or(|&b| b & 0x80 != 0);
    out.push(0x02);
    push_len(out, v.len() + pad as usize);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(v);
}

/// Convert a raw `r || s` signature (two equal halves, PKCS#11 v2.40 Current
/// Mechanisms §2.3.1) to a DER `Ecdsa-Sig-Value` (RFC 3279 §2.2.3) with
/// minimal INTEGER encodings.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> CryptoResult<Vec<u8>> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(CryptoError::new(
            "raw ECDSA signature must have two equal non-empty halves",
        ));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::with_capacity(raw.len() + 8);
    push_uint(&mut body, r);
    push_uint(&mut body, s);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_sign_bytes_and_short_values() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a sign byte
        raw[31] = 1;
        raw[40] = 0x12; // s has 8 leading zero bytes
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der[2..5], [0x02, 0x21, 0x00]);
        assert_eq!(ecdsa_der_to_raw(&der, 32).unwrap(), raw);

        // P-521: long-form SEQUENCE length, 65-byte values.
        let mut raw = vec![0u8; 132];
        raw[1] = 0xff;
        raw[65] = 7;
        raw[66 + 1] = 0x01;
        raw[131] = 9;
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der[1], 0x81);
        assert_eq!(ecdsa_der_to_raw(&der, 66).unwrap(), raw);
    }

    #[test]
    fn zero_values() {
        let raw = vec![0u8; 64];
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der, [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
        assert_eq!(ecdsa_der_to_raw(&der, 32).unwrap(), raw);
    }

    #[test]
    fn rejects_malformed() {
        let ok = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02];
        assert!(ecdsa_der_to_raw(&ok, 32).is_ok());
        // wrong outer tag
        assert!(ecdsa_der_to_raw(&[0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02], 32).is_err());
        // trailing data
        assert!(
            ecdsa_der_to_raw(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0x00], 32).is_err()
        );
        // inner trailing data
        assert!(
            ecdsa_der_to_raw(&[0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0x00], 32).is_err()
        );
        // negative
        assert!(ecdsa_der_to_raw(&[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x02], 32).is_err());
        // empty integer
        assert!(ecdsa_der_to_raw(&[0x30, 0x05, 0x02, 0x00, 0x02, 0x01, 0x02], 32).is_err());
        // missing s
        assert!(ecdsa_der_to_raw(&[0x30, 0x03, 0x02, 0x01, 0x01], 32).is_err());
        // truncated
        assert!(ecdsa_der_to_raw(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01], 32).is_err());
        assert!(ecdsa_der_to_raw(&[], 32).is_err());
        // oversize: 33 value bytes without sign byte for P-256
        let mut big = vec![0x30, 0x26, 0x02, 0x21];
        big.extend_from_slice(&[0x01; 33]);
        big.extend_from_slice(&[0x02, 0x01, 0x01]);
        assert!(ecdsa_der_to_raw(&big, 32).is_err());
        assert!(ecdsa_der_to_raw(&big, 48).is_ok());
        // odd raw
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
        assert!(ecdsa_raw_to_der(&[]).is_err());
    }
}
