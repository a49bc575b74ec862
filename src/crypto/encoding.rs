//! Input format detection: raw DER, PEM (RFC 7468) or base64 of DER.
//!
//! The TSB answers base64 DER, clients and configuration files often use PEM;
//! the functions here accept all of them.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

use super::error::{CryptoError, CryptoResult};

/// One PEM block: its label (`"CERTIFICATE"`, `"PUBLIC KEY"`, …) and the
/// decoded DER contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemBlock {
    pub(crate) label: String,
    pub(crate) der: Vec<u8>,
}

/// Length of the DER TLV at the start of `data` (tag + length + contents),
/// if the header is well formed (single-byte tag, definite length).
pub fn der_tlv_len(data: &[u8]) -> Option<usize> {
    if data.len() < 2 || data[0] & 0x1f == 0x1f {
        return None;
    }
    let first = data[1];
    if first < 0x80 {
        return Some(2 + first as usize);
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 || data.len() < 2 + n {
        return None;
    }
    let mut len = 0usize;
    for &b in &data[2..2 + n] {
        len = (len << 8) | b as usize;
    }
    Some(2 + n + len)
}

/// True when `data` is exactly one DER SEQUENCE TLV.
pub(crate) fn is_der_sequence(data: &[u8]) -> bool {
    data.first() == Some(&0x30) && der_tlv_len(data) == Some(data.len())
}

/// Decode base64 (standard or URL-safe alphabet, padded or not), ignoring
/// ASCII whitespace.
pub fn decode_base64(text: &[u8]) -> CryptoResult<Vec<u8>> {
    let clean: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if clean.is_empty() {
        return Err(CryptoError::new("empty base64 input"));
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(v) = engine.decode(&clean) {
            return Ok(v);
        }
    }
    Err(CryptoError::new("input is neither DER, PEM nor base64"))
}

/// All PEM blocks of `input`, in order (RFC 7468 §2). Text outside blocks
/// and RFC 1421 style header lines (`Key: value`) are ignored.
pub fn pem_blocks(input: &[u8]) -> CryptoResult<Vec<PemBlock>> {
    let text = std::str::from_utf8(input).map_err(|_| CryptoError::new("PEM is not UTF-8"))?;
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for raw_line in text.lines() {
        let line = raw_line.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            let label = rest
                .strip_suffix("-----")
                .ok_or_else(|| CryptoError::new("malformed PEM header"))?;
            current = Some((label.to_string(), String::new()));
        } else if let Some(rest) = line.strip_prefix("-----END ") {
            let label = rest
                .strip_suffix("-----")
                .ok_or_else(|| CryptoError::new("malformed PEM footer"))?;
            let (begin_label, body) = current
                .take()
                .ok_or_else(|| CryptoError::new("PEM END without BEGIN"))?;
            if begin_label != label {
                return Err(CryptoError::new("PEM BEGIN/END labels differ"));
            }
            let der = decode_base64(body.as_bytes())
                .map_err(|_| CryptoError::new("bad base64 in PEM block"))?;
            blocks.push(PemBlock {
                label: begin_label,
                der,
            });
        } else if let Some((_, body)) = current.as_mut() {
            if !line.contains(':') {
                body.push_str(line);
            }
        }
    }
    if current.is_some() {
        return Err(CryptoError::new("PEM block without END line"));
    }
    Ok(blocks)
}

/// Turn DER, PEM or base64-of-DER input into DER. For PEM the first block
/// whose label is in `labels` is used (any block if `labels` is empty).
pub fn to_der(input: &[u8], labels: &[&str]) -> CryptoResult<Vec<u8>> {
    if is_der_sequence(input) {
        return Ok(input.to_vec());
    }
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        return Err(CryptoError::new("empty input"));
    }
    if trimmed.windows(11).any(|w| w == b"-----BEGIN ") {
        let blocks = pem_blocks(trimmed)?;
        return blocks
            .into_iter()
            .find(|b| labels.is_empty() || labels.contains(&b.label.as_str()))
            .map(|b| b.der)
            .ok_or_else(|| {
                CryptoError::new(format!("no PEM block labelled {}", labels.join(" or ")))
            });
    }
    let der = decode_base64(trimmed)?;
    if !is_der_sequence(&der) {
        return Err(CryptoError::new("decoded base64 is not a DER SEQUENCE"));
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_lengths() {
        assert_eq!(der_tlv_len(&[0x30, 0x00]), Some(2));
        assert_eq!(der_tlv_len(&[0x30, 0x81, 0x80]), Some(131));
        assert_eq!(der_tlv_len(&[0x30, 0x82, 0x01, 0x00]), Some(260));
        assert_eq!(der_tlv_len(&[0x30]), None);
        assert!(is_der_sequence(&[0x30, 0x03, 0x02, 0x01, 0x00]));
        assert!(!is_der_sequence(&[0x30, 0x03, 0x02, 0x01]));
    }

    /// X.690 §8.1.2-§8.1.3: every length form, and the headers that are refused (high tag
    /// numbers, the indefinite form, more than four length octets, a cut length).
    #[test]
    fn tlv_length_forms() {
        assert_eq!(der_tlv_len(&[0x04, 0x7f]), Some(129));
        assert_eq!(der_tlv_len(&[0x04, 0x81, 0x05]), Some(8));
        assert_eq!(der_tlv_len(&[0x04, 0x81, 0xff]), Some(258));
        assert_eq!(der_tlv_len(&[0x04, 0x82, 0x12, 0x34]), Some(4 + 0x1234));
        assert_eq!(
            der_tlv_len(&[0x04, 0x83, 0x01, 0x00, 0x00]),
            Some(5 + 0x1_0000)
        );
        assert_eq!(
            der_tlv_len(&[0x04, 0x84, 0x01, 0x02, 0x03, 0x04]),
            Some(6 + 0x0102_0304)
        );
        assert_eq!(der_tlv_len(&[0x1f, 0x05]), None, "high tag number form");
        assert_eq!(
            der_tlv_len(&[0x3f, 0x05]),
            None,
            "constructed, high tag number"
        );
        assert_eq!(der_tlv_len(&[0x1e, 0x00]), Some(2), "tag 30 is one octet");
        assert_eq!(der_tlv_len(&[0x04, 0x80]), None, "indefinite length");
        assert_eq!(der_tlv_len(&[0x04, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(der_tlv_len(&[0x04, 0x82, 0x01]), None, "cut length");
        assert_eq!(der_tlv_len(&[0x04, 0x82, 0x01, 0x00]), Some(260));
        assert_eq!(der_tlv_len(&[]), None);
        // One whole SEQUENCE, nothing more and nothing less.
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend_from_slice(&[0; 0x80]);
        assert!(is_der_sequence(&long));
        long.push(0);
        assert!(!is_der_sequence(&long));
        assert!(!is_der_sequence(&[0x31, 0x00]), "a SET");
        assert!(!is_der_sequence(&[]));
    }

    /// Base64 in all four alphabets, whitespace ignored; PEM headers, several blocks, and the
    /// malformed PEM that is refused.
    #[test]
    fn base64_alphabets_and_pem_structure() {
        let data = [0xfb, 0xff, 0xfe, 0x01];
        for text in ["+//+AQ==", "+//+AQ", "-__-AQ==", "-__-AQ", " +//+\n AQ==\t"] {
            assert_eq!(decode_base64(text.as_bytes()).unwrap(), data, "{text:?}");
        }
        assert!(decode_base64(b"").is_err());
        assert!(decode_base64(b" \n ").is_err());
        assert!(decode_base64(b"A").is_err());
        let b64 = STANDARD.encode([0x30, 0x00]);
        let two = format!(
            "-----BEGIN A-----\nProc-Type: 4,ENCRYPTED\n{b64}\n-----END A-----\n\
             between\n  -----BEGIN B-----  \n{b64}\n-----END B-----\n"
        );
        let blocks = pem_blocks(two.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[0].label.as_str(), &blocks[0].der[..]),
            ("A", &[0x30, 0][..])
        );
        assert_eq!(blocks[1].label, "B");
        assert_eq!(to_der(two.as_bytes(), &["B", "C"]).unwrap(), vec![0x30, 0]);
        assert_eq!(to_der(two.as_bytes(), &[]).unwrap(), vec![0x30, 0]);
        for bad in [
            "-----BEGIN A\nMAA=\n-----END A-----\n",
            "-----BEGIN A-----\nMAA=\n-----END A\n",
            "-----END A-----\n",
            "-----BEGIN A-----\nMAA=\n",
            "-----BEGIN A-----\n%%%%\n-----END A-----\n",
        ] {
            assert!(pem_blocks(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(pem_blocks(&[0xff, 0xfe]).is_err());
        assert_eq!(pem_blocks(b"no blocks").unwrap(), vec![]);
        // Base64 that decodes to something other than one SEQUENCE is not DER input.
        assert!(to_der(STANDARD.encode([0x04, 0x00]).as_bytes(), &[]).is_err());
        assert!(to_der(b"  \n", &[]).is_err());
        assert_eq!(to_der(b"  MAA=  \n", &[]).unwrap(), vec![0x30, 0]);
    }

    #[test]
    fn pem_and_base64() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let b64 = STANDARD.encode(&der);
        assert_eq!(to_der(&der, &[]).unwrap(), der);
        assert_eq!(to_der(b64.as_bytes(), &[]).unwrap(), der);
        let pem = format!("junk\n-----BEGIN FOO-----\n{b64}\n-----END FOO-----\n");
        assert_eq!(to_der(pem.as_bytes(), &["FOO"]).unwrap(), der);
        assert!(to_der(pem.as_bytes(), &["BAR"]).is_err());
        assert!(to_der(b"not base64 !!", &[]).is_err());
        let bad = "-----BEGIN FOO-----\nMAMCAQU=\n-----END BAR-----\n";
        assert!(pem_blocks(bad.as_bytes()).is_err());
    }
}
