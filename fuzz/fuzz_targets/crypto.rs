//! Pure parsers of `crypto`: SubjectPublicKeyInfo (DER or PEM), ECDSA DER -> r||s,
//! DigestInfo, base64/PEM helpers, and verification of arbitrary signatures. No panic;
//! round trips hold.
#![no_main]

mod keys;

use libfuzzer_sys::fuzz_target;
use tsb_pkcs11::fuzzing::{
    digest_info, ecdsa_der_to_raw, encoding, parse_digest_info, verify, Curve, HashAlg, PublicKey,
    Scheme, SignedData,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => {
            if let Ok(key) = PublicKey::from_spki(rest) {
                let der = key.spki_der();
                let again = PublicKey::from_spki(&der).expect("own SPKI parses");
                assert_eq!(again, key);
                assert!(key.signature_len() > 0);
                let _ = (key.ec_params_der(), key.ec_point_der(), key.kind());
            }
        }
        1 => {
            for curve in Curve::ALL {
                if let Ok(raw) = ecdsa_der_to_raw(rest, curve) {
                    assert_eq!(raw.len(), 2 * curve.field_bytes());
                }
            }
        }
        2 => {
            if let Some((alg, digest)) = parse_digest_info(rest) {
                assert_eq!(digest.len(), alg.output_len());
                let canonical = digest_info(alg, digest);
                assert_eq!(parse_digest_info(&canonical), Some((alg, digest)));
            }
        }
        3 => {
            let _ = encoding::decode_base64(rest);
            if let Ok(blocks) = encoding::pem_blocks(rest) {
                let _ = blocks.len();
            }
            let _ = encoding::to_der(rest, &["PUBLIC KEY", "CERTIFICATE"]);
            let _ = encoding::der_tlv_len(rest);
        }
        _ => {
            // Arbitrary signatures over arbitrary data never verify (and never panic).
            let (sig, msg) = rest.split_at(rest.len() / 2);
            for (_, key) in keys::keys() {
                for scheme in [
                    Scheme::RsaPkcs1v15(HashAlg::Sha256),
                    Scheme::RsaPkcs1v15Raw,
                    Scheme::RsaPss(HashAlg::Sha384),
                    Scheme::Ecdsa(HashAlg::Sha256),
                    Scheme::Ed25519,
                ] {
                    for signed in [SignedData::Message(msg), SignedData::Digest(msg)] {
                        assert!(verify(key, &scheme, signed, sig).is_err());
                    }
                }
            }
        }
    }
});
