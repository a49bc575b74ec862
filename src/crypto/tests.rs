//! Cross-checks against OpenSSL as an independent implementation.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};

use super::hash::digest_info;
use super::keys::Curve;
use super::verify::rsa;
use super::*;

fn rsa2048() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    K.get_or_init(|| PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
}

fn rsa2048_other() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    K.get_or_init(|| PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
}

fn md(h: HashAlg) -> MessageDigest {
    match h {
        HashAlg::Sha1 => MessageDigest::sha1(),
        HashAlg::Sha224 => MessageDigest::sha224(),
        HashAlg::Sha256 => MessageDigest::sha256(),
        HashAlg::Sha384 => MessageDigest::sha384(),
        HashAlg::Sha512 => MessageDigest::sha512(),
    }
}

fn public_of(k: &PKey<Private>) -> PublicKey {
    PublicKey::from_spki(&k.public_key_to_der().unwrap()).unwrap()
}

fn flip(sig: &[u8], bit: usize) -> Vec<u8> {
    let mut s = sig.to_vec();
    let i = bit / 8 % s.len();
    s[i] ^= 1 << (bit % 8);
    s
}

const MSG: &[u8] = b"The quick brown fox jumps over the lazy dog";

// ---------------------------------------------------------------- hashes

#[test]
fn hashes_match_openssl() {
    for h in HashAlg::ALL {
        let d = h.digest(MSG);
        assert_eq!(d.len(), h.output_len());
        assert_eq!(d, openssl::hash::hash(md(h), MSG).unwrap().to_vec());
        let mut inc = Hasher::new(h);
        for chunk in MSG.chunks(7) {
            inc.update(chunk);
        }
        assert_eq!(inc.alg(), h);
        assert_eq!(inc.finalize(), d);
        assert!(h.name().starts_with("SHA"));
    }
    assert_eq!(HashAlg::Sha256.name(), "SHA256");
}

#[test]
fn digest_info_roundtrip() {
    for h in HashAlg::ALL {
        let d = h.digest(MSG);
        let di = digest_info(h, &d);
        assert_eq!(di.len(), h.digest_info_prefix().len() + h.output_len());
        assert_eq!(parse_digest_info(&di), Some((h, &d[..])));
        // the DER is self-consistent: outer length covers everything
        assert_eq!(di[1] as usize + 2, di.len());
        // without NULL parameters
        let mut di2 = h.digest_info_prefix_no_null();
        di2.extend_from_slice(&d);
        assert_eq!(di2[1] as usize + 2, di2.len());
        assert_eq!(parse_digest_info(&di2), Some((h, &d[..])));
        // wrong lengths are rejected
        assert_eq!(parse_digest_info(&di[..di.len() - 1]), None);
        let mut longer = di.clone();
        longer.push(0);
        assert_eq!(parse_digest_info(&longer), None);
    }
    assert_eq!(parse_digest_info(&[0u8; 32]), None);
    assert_eq!(parse_digest_info(&[]), None);
}

#[test]
fn openssl_digest_info_parses() {
    // OpenSSL builds the DigestInfo inside an RSA PKCS#1 v1.5 signature;
    // recover it with the public key and parse it.
    let k = rsa2048();
    let rsa = k.rsa().unwrap();
    for h in HashAlg::ALL {
        let mut signer = Signer::new(md(h), k).unwrap();
        signer.set_rsa_padding(Padding::PKCS1).unwrap();
        let sig = signer.sign_oneshot_to_vec(MSG).unwrap();
        let mut buf = vec![0u8; rsa.size() as usize];
        let n = rsa.public_decrypt(&sig, &mut buf, Padding::PKCS1).unwrap();
        let (alg, d) = parse_digest_info(&buf[..n]).expect("openssl DigestInfo");
        assert_eq!(alg, h);
        assert_eq!(d, h.digest(MSG));
        assert_eq!(&buf[..n], &digest_info(h, &h.digest(MSG))[..]);
    }
}

// ---------------------------------------------------------------- RSA

#[test]
fn rsa_pkcs1v15_openssl_signatures() {
    let k = rsa2048();
    let pk = public_of(k);
    let other = public_of(rsa2048_other());
    assert!(matches!(pk, PublicKey::Rsa { bits: 2048, .. }));
    assert_eq!(pk.signature_len(), 256);
    for h in HashAlg::ALL {
        let mut signer = Signer::new(md(h), k).unwrap();
        signer.set_rsa_padding(Padding::PKCS1).unwrap();
        let sig = signer.sign_oneshot_to_vec(MSG).unwrap();
        let d = h.digest(MSG);
        let s = Scheme::RsaPkcs1v15(h);
        verify(&pk, &s, SignedData::Message(MSG), &sig).unwrap();
        verify(&pk, &s, SignedData::Digest(&d), &sig).unwrap();
        // raw CKM_RSA_PKCS over the DigestInfo
        let di = digest_info(h, &d);
        verify(&pk, &Scheme::RsaPkcs1v15Raw, SignedData::Message(&di), &sig).unwrap();
        // rejections
        for bit in [0, 7, 1000, 2047] {
            assert!(verify(&pk, &s, SignedData::Message(MSG), &flip(&sig, bit)).is_err());
        }
        assert!(verify(&pk, &s, SignedData::Message(b"other"), &sig).is_err());
        assert!(verify(&other, &s, SignedData::Message(MSG), &sig).is_err());
        assert!(verify(&pk, &Scheme::RsaPss(h), SignedData::Message(MSG), &sig).is_err());
        assert!(verify(&pk, &Scheme::RsaPkcs1v15Raw, SignedData::Message(&d), &sig).is_err());
        let wrong_hash = if h == HashAlg::Sha256 {
            HashAlg::Sha384
        } else {
            HashAlg::Sha256
        };
        assert!(verify(
            &pk,
            &Scheme::RsaPkcs1v15(wrong_hash),
            SignedData::Message(MSG),
            &sig
        )
        .is_err());
        // digest of the wrong length
        assert!(verify(&pk, &s, SignedData::Digest(&d[1..]), &sig).is_err());
        // signature of the wrong length
        assert!(verify(&pk, &s, SignedData::Message(MSG), &sig[1..]).is_err());
        let mut longer = vec![0u8];
        longer.extend_from_slice(&sig);
        assert!(verify(&pk, &s, SignedData::Message(MSG), &longer).is_err());
        // wrong key type for the scheme
        assert!(verify(&pk, &Scheme::Ecdsa(h), SignedData::Message(MSG), &sig).is_err());
        assert!(verify(&pk, &Scheme::Ed25519, SignedData::Message(MSG), &sig).is_err());
    }
}

#[test]
fn rsa_private_encrypt_of_handmade_digest_info() {
    let k = rsa2048();
    let rsa = k.rsa().unwrap();
    let pk = public_of(k);
    for h in HashAlg::ALL {
        let d = h.digest(MSG);
        let di = digest_info(h, &d);
        let mut sig = vec![0u8; rsa.size() as usize];
        let n = rsa.private_encrypt(&di, &mut sig, Padding::PKCS1).unwrap();
        assert_eq!(n, 256);
        verify(&pk, &Scheme::RsaPkcs1v15(h), SignedData::Digest(&d), &sig).unwrap();
        verify(&pk, &Scheme::RsaPkcs1v15Raw, SignedData::Message(&di), &sig).unwrap();
        verify(&pk, &Scheme::RsaPkcs1v15Raw, SignedData::Digest(&di), &sig).unwrap();
        assert!(verify(&pk, &Scheme::RsaPkcs1v15Raw, SignedData::Message(&d), &sig).is_err());
        // DigestInfo without NULL parameters (RFC 8017 §9.2 note 2), encoded here from the
        // hash's OID as OpenSSL knows it, is accepted by RsaPkcs1v15(h) too.
        let oid = openssl::asn1::Asn1Object::from_str(match h {
            HashAlg::Sha1 => "1.3.14.3.2.26",
            HashAlg::Sha224 => "2.16.840.1.101.3.4.2.4",
            HashAlg::Sha256 => "2.16.840.1.101.3.4.2.1",
            HashAlg::Sha384 => "2.16.840.1.101.3.4.2.2",
            HashAlg::Sha512 => "2.16.840.1.101.3.4.2.3",
        })
        .unwrap();
        assert_eq!(oid.nid(), md(h).type_(), "{h:?}");
        let oid = oid.as_slice();
        let algorithm_len = 2 + oid.len();
        let mut di2 = vec![0x30, (2 + algorithm_len + 2 + d.len()) as u8];
        di2.extend_from_slice(&[0x30, algorithm_len as u8, 0x06, oid.len() as u8]);
        di2.extend_from_slice(oid);
        di2.extend_from_slice(&[0x04, d.len() as u8]);
        di2.extend_from_slice(&d);
        assert_eq!(
            &di2[..di2.len() - d.len()],
            &h.digest_info_prefix_no_null()[..]
        );
        let n = rsa.private_encrypt(&di2, &mut sig, Padding::PKCS1).unwrap();
        assert_eq!(n, 256);
        verify(&pk, &Scheme::RsaPkcs1v15(h), SignedData::Digest(&d), &sig).unwrap();
    }
    // arbitrary raw input, up to k - 11 bytes
    let input = vec![0x5au8; 256 - 11];
    let mut sig = vec![0u8; 256];
    rsa.private_encrypt(&input, &mut sig, Padding::PKCS1)
        .unwrap();
    verify(
        &pk,
        &Scheme::RsaPkcs1v15Raw,
        SignedData::Message(&input),
        &sig,
    )
    .unwrap();
    assert!(verify(
        &pk,
        &Scheme::RsaPkcs1v15Raw,
        SignedData::Message(&input[1..]),
        &sig
    )
    .is_err());
    let too_long = vec![0x5au8; 256 - 10];
    assert!(verify(
        &pk,
        &Scheme::RsaPkcs1v15Raw,
        SignedData::Message(&too_long),
        &sig
    )
    .is_err());
}

#[test]
fn rsa_pss_openssl_signatures() {
    let k = rsa2048();
    let pk = public_of(k);
    let other = public_of(rsa2048_other());
    for h in HashAlg::ALL {
        let mut signer = Signer::new(md(h), k).unwrap();
        signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        signer
            .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
            .unwrap();
        signer.set_rsa_mgf1_md(md(h)).unwrap();
        let sig = signer.sign_oneshot_to_vec(MSG).unwrap();
        let d = h.digest(MSG);
        let s = Scheme::RsaPss(h);
        verify(&pk, &s, SignedData::Message(MSG), &sig).unwrap();
        verify(&pk, &s, SignedData::Digest(&d), &sig).unwrap();
        assert!(verify(&pk, &s, SignedData::Message(MSG), &flip(&sig, 77)).is_err());
        assert!(verify(&pk, &s, SignedData::Digest(&d[1..]), &sig).is_err());
        assert!(verify(&other, &s, SignedData::Message(MSG), &sig).is_err());
        assert!(verify(&pk, &Scheme::RsaPkcs1v15(h), SignedData::Message(MSG), &sig).is_err());
    }
    // a salt length other than the hash length does not verify (the module only takes
    // sLen = hLen, PKCS#11 v2.40 Current Mechanisms §2.1.11)
    let sig = ossl_rsa_sign(k, HashAlg::Sha256, Some(RsaPssSaltlen::custom(0)));
    let s = Scheme::RsaPss(HashAlg::Sha256);
    assert!(verify(&pk, &s, SignedData::Message(MSG), &sig).is_err());
}

fn ossl_rsa_sign(k: &PKey<Private>, h: HashAlg, pss_salt: Option<RsaPssSaltlen>) -> Vec<u8> {
    let mut signer = Signer::new(md(h), k).unwrap();
    match pss_salt {
        None => signer.set_rsa_padding(Padding::PKCS1).unwrap(),
        Some(salt) => {
            signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            signer.set_rsa_pss_saltlen(salt).unwrap();
            signer.set_rsa_mgf1_md(md(h)).unwrap();
        }
    }
    signer.sign_oneshot_to_vec(MSG).unwrap()
}

fn rsa_parts(pk: &PublicKey) -> (Vec<u8>, u64) {
    match pk {
        PublicKey::Rsa {
            modulus, exponent, ..
        } => (
            modulus.clone(),
            exponent.iter().fold(0u64, |a, &b| (a << 8) | b as u64),
        ),
        _ => panic!("not RSA"),
    }
}

/// Key sizes ring does and does not take (1024 bits, a modulus length that is not a
/// multiple of 8, 3072), exponents 65537 and 3, every hash, PKCS#1 v1.5 and PSS: OpenSSL
/// signs; `verify` (ring where it applies) and the RSAVP1 path alone both accept, and both
/// reject a flipped bit, another message and a PSS salt length other than the hash length.
#[test]
fn rsa_sizes_exponents_salts_both_paths() {
    use openssl::bn::BigNum;
    let e3 = BigNum::from_u32(3).unwrap();
    let keys = [
        PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap(),
        PKey::from_rsa(Rsa::generate_with_e(2049, &e3).unwrap()).unwrap(),
        PKey::from_rsa(Rsa::generate(3072).unwrap()).unwrap(),
    ];
    for k in &keys {
        let pk = public_of(k);
        let (n, e) = rsa_parts(&pk);
        let bits = k.bits() as usize;
        let em_len = (bits - 1).div_ceil(8);
        for h in HashAlg::ALL {
            let d = h.digest(MSG);
            let max_salt = em_len - h.output_len() - 2;
            let mut cases = vec![(Scheme::RsaPkcs1v15(h), ossl_rsa_sign(k, h, None))];
            if h.output_len() <= max_salt {
                // SHA-512 with a 64-byte salt does not fit 1024 bits
                let sig = ossl_rsa_sign(k, h, Some(RsaPssSaltlen::DIGEST_LENGTH));
                cases.push((Scheme::RsaPss(h), sig));
            }
            for salt in [0, 1, max_salt] {
                if salt == h.output_len() || salt > max_salt {
                    continue;
                }
                let sig = ossl_rsa_sign(k, h, Some(RsaPssSaltlen::custom(salt as i32)));
                let what = format!("{bits} bits, salt {salt}, {h:?}");
                let s = Scheme::RsaPss(h);
                assert!(
                    verify(&pk, &s, SignedData::Message(MSG), &sig).is_err(),
                    "{what}"
                );
                assert!(
                    rsa::verify_recovered(&n, e, &s, SignedData::Message(MSG), &sig).is_err(),
                    "{what}"
                );
            }
            for (scheme, sig) in &cases {
                let what = format!("{bits} bits, e={e}, {scheme:?}");
                verify(&pk, scheme, SignedData::Message(MSG), sig).expect(&what);
                verify(&pk, scheme, SignedData::Digest(&d), sig).expect(&what);
                rsa::verify_recovered(&n, e, scheme, SignedData::Message(MSG), sig).expect(&what);
                for bad in [flip(sig, 5), flip(sig, sig.len() * 4)] {
                    assert!(verify(&pk, scheme, SignedData::Message(MSG), &bad).is_err());
                    assert!(
                        rsa::verify_recovered(&n, e, scheme, SignedData::Message(MSG), &bad)
                            .is_err()
                    );
                }
                assert!(verify(&pk, scheme, SignedData::Message(b"other"), sig).is_err());
                assert!(
                    rsa::verify_recovered(&n, e, scheme, SignedData::Message(b"other"), sig)
                        .is_err()
                );
            }
        }
    }
}

/// Public keys and signatures RSAVP1 must refuse (RFC 8017 §5.2.2 step 1): a signature not
/// below the modulus, an even modulus, an exponent past 2^33 - 1.
#[test]
fn rsa_rejects_out_of_range_inputs() {
    let k = rsa2048();
    let pk = public_of(k);
    let (n, e) = rsa_parts(&pk);
    let s = Scheme::RsaPkcs1v15(HashAlg::Sha256);
    let sig = ossl_rsa_sign(k, HashAlg::Sha256, None);
    verify(&pk, &s, SignedData::Message(MSG), &sig).unwrap();
    let err = verify(&pk, &s, SignedData::Message(MSG), &n).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    assert!(verify(&pk, &s, SignedData::Message(MSG), &[0xff; 256]).is_err());
    let mut even = n.clone();
    *even.last_mut().unwrap() &= 0xfe;
    let even = PublicKey::rsa(&even, &[1, 0, 1]).unwrap();
    assert!(verify(&even, &s, SignedData::Message(MSG), &sig).is_err());
    let big_e = PublicKey::rsa(&n, &[2, 0, 0, 0, 1]).unwrap();
    let err = verify(&big_e, &s, SignedData::Message(MSG), &sig).unwrap_err();
    assert!(err.to_string().contains("unusable"), "{err}");
    assert_eq!(e, 65537);
}

/// The largest modulus taken is 16384 bits (rsa::RSA_MAX_BITS): a 16384-bit key is used (a
/// wrong signature is a mismatch), one byte more is an unusable key.
#[test]
fn rsa_modulus_size_limit() {
    let s = Scheme::RsaPkcs1v15(HashAlg::Sha256);
    for (bytes, unusable) in [(2048, false), (2049, true)] {
        let n = vec![0xff; bytes];
        let pk = PublicKey::rsa(&n, &[1, 0, 1]).unwrap();
        let err = verify(&pk, &s, SignedData::Message(MSG), &vec![1; bytes]).unwrap_err();
        assert_eq!(
            err.to_string().contains("unusable"),
            unusable,
            "{bytes} bytes: {err}"
        );
    }
}

#[test]
fn rsa_4096() {
    let k = PKey::from_rsa(Rsa::generate(4096).unwrap()).unwrap();
    let pk = public_of(&k);
    assert!(matches!(pk, PublicKey::Rsa { bits: 4096, .. }));
    assert_eq!(pk.signature_len(), 512);
    let mut signer = Signer::new(MessageDigest::sha512(), &k).unwrap();
    let sig = signer.sign_oneshot_to_vec(MSG).unwrap();
    verify(
        &pk,
        &Scheme::RsaPkcs1v15(HashAlg::Sha512),
        SignedData::Message(MSG),
        &sig,
    )
    .unwrap();
}

// ---------------------------------------------------------------- ECDSA

fn curve_nid(c: Curve) -> Nid {
    match c {
        Curve::P256 => Nid::X9_62_PRIME256V1,
        Curve::P384 => Nid::SECP384R1,
        Curve::P521 => Nid::SECP521R1,
        Curve::Secp256k1 => Nid::SECP256K1,
    }
}

/// Each curve's OID, CKA_EC_PARAMS, sizes and SEC 2 name, as OpenSSL knows the curve.
#[test]
fn curve_properties_match_openssl() {
    let names = ["secp256r1", "secp384r1", "secp521r1", "secp256k1"];
    for (c, name) in Curve::ALL.into_iter().zip(names) {
        let nid = curve_nid(c);
        let group = EcGroup::from_curve_name(nid).unwrap();
        let oid = openssl::asn1::Asn1Object::from_str(c.oid()).unwrap();
        assert_eq!(oid.nid(), nid, "{c:?}");
        let mut der = vec![0x06, oid.as_slice().len() as u8];
        der.extend_from_slice(oid.as_slice());
        assert_eq!(c.params_der(), der);
        assert_eq!(Curve::from_oid(c.oid()), Some(c));
        assert_eq!(c.field_bytes(), (group.degree() as usize).div_ceil(8));
        let mut ctx = BigNumContext::new().unwrap();
        let mut order = openssl::bn::BigNum::new().unwrap();
        group.order(&mut order, &mut ctx).unwrap();
        assert_eq!(c.order_bits(), order.num_bits() as usize);
        assert_eq!(c.name(), name);
    }
    assert_eq!(Curve::from_oid("1.3.101.112"), None);
}

/// A scheme of another key type is refused with a reason naming the key's type.
#[test]
fn schemes_of_another_key_type_are_refused() {
    let rsa = public_of(rsa2048());
    let ec = ec_public(&ec_key(Curve::P256));
    let ed = public_of(&PKey::generate_ed25519().unwrap());
    for (key, scheme, kind) in [
        (&rsa, Scheme::Ecdsa(HashAlg::Sha256), "RSA"),
        (&ec, Scheme::RsaPkcs1v15(HashAlg::Sha256), "EC"),
        (&ed, Scheme::Ecdsa(HashAlg::Sha256), "Ed25519"),
        (&ec, Scheme::Ed25519, "EC"),
    ] {
        let err = verify(key, &scheme, SignedData::Message(MSG), &[0; 64]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(&format!("does not apply to a {kind} key")),
            "{err}"
        );
        assert_eq!(key.kind(), kind);
    }
}

fn ec_key(c: Curve) -> EcKey<Private> {
    EcKey::generate(&EcGroup::from_curve_name(curve_nid(c)).unwrap()).unwrap()
}

fn ec_public(k: &EcKey<Private>) -> PublicKey {
    public_of(&PKey::from_ec_key(k.clone()).unwrap())
}

/// Sign `digest` with OpenSSL (DER), convert with `ecdsa_der_to_raw`; the conversion is
/// checked against OpenSSL's own r and s.
fn ossl_ecdsa_raw(k: &EcKey<Private>, c: Curve, digest: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let der = EcdsaSig::sign(digest, k).unwrap().to_der().unwrap();
    let raw = ecdsa_der_to_raw(&der, c).unwrap();
    assert_eq!(raw, ossl_r_s(&der, c));
    (der, raw)
}

/// r || s of a DER ECDSA signature as OpenSSL reads it, each padded to the field size.
fn ossl_r_s(der: &[u8], c: Curve) -> Vec<u8> {
    let sig = EcdsaSig::from_der(der).unwrap();
    let w = c.field_bytes() as i32;
    let mut raw = sig.r().to_vec_padded(w).unwrap();
    raw.extend(sig.s().to_vec_padded(w).unwrap());
    raw
}

#[test]
fn ecdsa_openssl_signatures_all_curves_and_hashes() {
    for c in Curve::ALL {
        let k = ec_key(c);
        let pk = ec_public(&k);
        let other = ec_public(&ec_key(c));
        assert_eq!(pk.signature_len(), 2 * c.field_bytes());
        for h in HashAlg::ALL {
            let d = h.digest(MSG);
            let (der, raw) = ossl_ecdsa_raw(&k, c, &d);
            assert_eq!(raw.len(), 2 * c.field_bytes());
            let s = Scheme::Ecdsa(h);
            verify(&pk, &s, SignedData::Digest(&d), &raw).unwrap();
            verify(&pk, &s, SignedData::Message(MSG), &raw).unwrap();
            // rejections
            for bit in [0, 100, raw.len() * 8 - 1] {
                assert!(verify(&pk, &s, SignedData::Digest(&d), &flip(&raw, bit)).is_err());
            }
            assert!(verify(&other, &s, SignedData::Digest(&d), &raw).is_err());
            assert!(verify(&pk, &s, SignedData::Message(b"other"), &raw).is_err());
            assert!(verify(&pk, &s, SignedData::Digest(&der), &der).is_err());
            assert!(verify(&pk, &s, SignedData::Digest(&d), &raw[1..]).is_err());
            assert!(verify(&pk, &Scheme::RsaPkcs1v15(h), SignedData::Digest(&d), &raw).is_err());
            assert!(verify(&pk, &Scheme::Ed25519, SignedData::Message(MSG), &raw).is_err());
        }
        // OpenSSL's own message signing path (DER output) with the SHA-2 of the curve size
        let h = match c {
            Curve::P384 => HashAlg::Sha384,
            Curve::P521 => HashAlg::Sha512,
            _ => HashAlg::Sha256,
        };
        let pkey = PKey::from_ec_key(k.clone()).unwrap();
        let der = Signer::new(md(h), &pkey)
            .unwrap()
            .sign_oneshot_to_vec(MSG)
            .unwrap();
        let raw = ecdsa_der_to_raw(&der, c).unwrap();
        assert_eq!(raw, ossl_r_s(&der, c));
        verify(&pk, &Scheme::Ecdsa(h), SignedData::Message(MSG), &raw).unwrap();
    }
}

#[test]
fn ecdsa_p521_many_signatures_through_der_to_raw() {
    // ~3/4 of P-521 DER signatures have a 65-byte r or s; all must convert
    // (left padding) and verify.
    let c = Curve::P521;
    let k = ec_key(c);
    let pk = ec_public(&k);
    let mut short = 0;
    for i in 0..200u32 {
        let msg = i.to_be_bytes();
        let d = HashAlg::Sha512.digest(&msg);
        let (der, raw) = ossl_ecdsa_raw(&k, c, &d);
        if der.len() < 2 + 3 + 2 * (2 + 66) {
            short += 1;
        }
        verify(
            &pk,
            &Scheme::Ecdsa(HashAlg::Sha512),
            SignedData::Digest(&d),
            &raw,
        )
        .unwrap_or_else(|e| panic!("signature {i}: {e}"));
        verify(
            &pk,
            &Scheme::Ecdsa(HashAlg::Sha512),
            SignedData::Message(&msg),
            &raw,
        )
        .unwrap();
    }
    assert!(short > 50, "expected many short P-521 values, got {short}");
}

#[test]
fn ecdsa_p256_many_signatures_through_der_to_raw() {
    let c = Curve::P256;
    let k = ec_key(c);
    let pk = ec_public(&k);
    for i in 0..200u32 {
        let d = HashAlg::Sha256.digest(&i.to_be_bytes());
        let (_, raw) = ossl_ecdsa_raw(&k, c, &d);
        verify(
            &pk,
            &Scheme::Ecdsa(HashAlg::Sha256),
            SignedData::Digest(&d),
            &raw,
        )
        .unwrap();
    }
}

#[test]
fn ecdsa_odd_digest_lengths_match_openssl() {
    // X9.62: longer digests are truncated to the order's bit length, shorter
    // ones are used as integers. OpenSSL implements exactly that.
    for c in Curve::ALL {
        let k = ec_key(c);
        let pk = ec_public(&k);
        for len in [
            1usize, 8, 15, 16, 20, 31, 32, 33, 47, 48, 64, 65, 66, 67, 100,
        ] {
            let d: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(37).wrapping_add(0xa5))
                .collect();
            let (_, raw) = ossl_ecdsa_raw(&k, c, &d);
            verify(
                &pk,
                &Scheme::Ecdsa(HashAlg::Sha256),
                SignedData::Digest(&d),
                &raw,
            )
            .unwrap_or_else(|e| panic!("{c:?} digest len {len}: {e}"));
        }
    }
}

// ---------------------------------------------------------------- Ed25519

#[test]
fn ed25519_openssl_signatures() {
    // Both paths: ring's (key parsed per call) and the key object's (parsed once).
    for prepared in [false, true] {
        ed25519_openssl_signatures_on(prepared);
    }
}

fn ed25519_openssl_signatures_on(prepared: bool) {
    let verify = |pk: &PublicKey, scheme: &Scheme, data: SignedData<'_>, sig: &[u8]| {
        if prepared {
            verify_with(&PreparedKey::new(pk), pk, scheme, data, sig)
        } else {
            verify(pk, scheme, data, sig)
        }
    };
    let k = PKey::generate_ed25519().unwrap();
    let pk = public_of(&k);
    let other = public_of(&PKey::generate_ed25519().unwrap());
    assert_eq!(pk.signature_len(), 64);
    let sig = Signer::new_without_digest(&k)
        .unwrap()
        .sign_oneshot_to_vec(MSG)
        .unwrap();
    verify(&pk, &Scheme::Ed25519, SignedData::Message(MSG), &sig).unwrap();
    assert!(verify(
        &pk,
        &Scheme::Ed25519,
        SignedData::Message(MSG),
        &flip(&sig, 3)
    )
    .is_err());
    assert!(verify(
        &pk,
        &Scheme::Ed25519,
        SignedData::Message(MSG),
        &flip(&sig, 300)
    )
    .is_err());
    assert!(verify(&pk, &Scheme::Ed25519, SignedData::Message(b"x"), &sig).is_err());
    assert!(verify(&other, &Scheme::Ed25519, SignedData::Message(MSG), &sig).is_err());
    assert!(verify(&pk, &Scheme::Ed25519, SignedData::Digest(MSG), &sig).is_err());
    assert!(verify(&pk, &Scheme::Ed25519, SignedData::Message(MSG), &sig[..63]).is_err());
    // S + L (the group order): the same point equation, but RFC 8032 §5.1.7 wants S < L,
    // and OpenSSL refuses it too.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut malleable = sig.clone();
    let mut carry = 0u16;
    for (b, l) in malleable[32..].iter_mut().zip(L) {
        let v = *b as u16 + l as u16 + carry;
        *b = v as u8;
        carry = v >> 8;
    }
    let mut ossl = openssl::sign::Verifier::new_without_digest(&k).unwrap();
    assert!(!ossl.verify_oneshot(&malleable, MSG).unwrap_or(false));
    assert!(verify(&pk, &Scheme::Ed25519, SignedData::Message(MSG), &malleable).is_err());
    assert!(verify(
        &pk,
        &Scheme::Ecdsa(HashAlg::Sha256),
        SignedData::Message(MSG),
        &sig
    )
    .is_err());
}

// ---------------------------------------------------------------- SPKI

fn all_forms(der: &[u8], pem: &[u8]) -> Vec<Vec<u8>> {
    let b64 = STANDARD.encode(der);
    let wrapped: String = b64
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    vec![
        der.to_vec(),
        pem.to_vec(),
        b64.clone().into_bytes(),
        format!("  {b64}\r\n").into_bytes(),
        wrapped.into_bytes(),
    ]
}

#[test]
fn spki_forms_and_reencoding() {
    let rsa = rsa2048().clone();
    let ed = PKey::generate_ed25519().unwrap();
    let mut keys: Vec<PKey<Private>> = vec![rsa, ed];
    for c in Curve::ALL {
        keys.push(PKey::from_ec_key(ec_key(c)).unwrap());
    }
    for k in &keys {
        let der = k.public_key_to_der().unwrap();
        let pem = k.public_key_to_pem().unwrap();
        let expected = PublicKey::from_spki(&der).unwrap();
        for form in all_forms(&der, &pem) {
            assert_eq!(PublicKey::from_spki(&form).unwrap(), expected);
        }
        // canonical re-encoding equals OpenSSL's
        assert_eq!(expected.spki_der(), der);
        assert_eq!(
            PublicKey::from_spki_der(&expected.spki_der()).unwrap(),
            expected
        );
    }
}

#[test]
fn spki_rsa_fields() {
    let k = rsa2048();
    let rsa = k.rsa().unwrap();
    match public_of(k) {
        PublicKey::Rsa {
            modulus,
            exponent,
            bits,
        } => {
            assert_eq!(modulus, rsa.n().to_vec());
            assert_eq!(exponent, vec![1, 0, 1]);
            assert_eq!(bits, 2048);
            assert_ne!(modulus[0], 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(public_of(k).ec_params_der(), None);
    assert_eq!(public_of(k).ec_point_der(), None);
    // leading zeros are removed
    let pk = PublicKey::rsa(&[0, 0, 0x80, 1], &[0, 3]).unwrap();
    assert_eq!(
        pk,
        PublicKey::Rsa {
            modulus: vec![0x80, 1],
            exponent: vec![3],
            bits: 16
        }
    );
}

#[test]
fn spki_ec_fields_and_compressed_points() {
    let mut ctx = BigNumContext::new().unwrap();
    for c in Curve::ALL {
        let k = ec_key(c);
        let group = k.group();
        let uncompressed = k
            .public_key()
            .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        let compressed = k
            .public_key()
            .to_bytes(group, PointConversionForm::COMPRESSED, &mut ctx)
            .unwrap();
        let pk = ec_public(&k);
        assert_eq!(
            pk,
            PublicKey::Ec {
                curve: c,
                point: uncompressed.clone()
            }
        );
        assert_eq!(uncompressed.len(), 1 + 2 * c.field_bytes());
        // CKA_EC_PARAMS / CKA_EC_POINT
        let params = pk.ec_params_der().unwrap();
        assert_eq!(params, c.params_der());
        assert_eq!(params[0], 0x06);
        let point_der = pk.ec_point_der().unwrap();
        assert_eq!(point_der[0], 0x04);
        assert!(point_der.ends_with(&uncompressed));
        // SPKI with a compressed point
        let compressed_spki = spki::SubjectPublicKeyInfoOwned {
            algorithm: spki::AlgorithmIdentifierOwned {
                oid: der::asn1::ObjectIdentifier::new_unwrap(keys::OID_EC_PUBLIC_KEY),
                parameters: Some(der::Decode::from_der(&params).unwrap()),
            },
            subject_public_key: der::asn1::BitString::from_bytes(&compressed).unwrap(),
        };
        let cder = der::Encode::to_der(&compressed_spki).unwrap();
        assert_eq!(PublicKey::from_spki(&cder).unwrap(), pk);
        assert_eq!(PublicKey::ec(c, &compressed).unwrap(), pk);
        // a point that is not on the curve
        let mut bad = uncompressed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(PublicKey::ec(c, &bad).is_err());
    }
    assert_eq!(
        Curve::P256.params_der(),
        [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
    );
    assert_eq!(
        Curve::P384.params_der(),
        [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]
    );
    assert_eq!(
        Curve::P521.params_der(),
        [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23]
    );
    assert_eq!(
        Curve::Secp256k1.params_der(),
        [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a]
    );
    for c in Curve::ALL {
        assert_eq!(Curve::from_oid(c.oid()), Some(c));
    }
    assert_eq!(Curve::from_oid("1.2.3"), None);
    assert_eq!(
        [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1]
            .map(|c| (c.field_bytes(), c.order_bits())),
        [(32, 256), (48, 384), (66, 521), (32, 256)]
    );
}

#[test]
fn spki_ed25519_fields() {
    let k = PKey::generate_ed25519().unwrap();
    let raw = k.raw_public_key().unwrap();
    let pk = public_of(&k);
    assert_eq!(
        pk,
        PublicKey::Ed25519 {
            key: raw.clone().try_into().unwrap()
        }
    );
    assert_eq!(pk.ec_params_der().unwrap(), [0x06, 0x03, 0x2b, 0x65, 0x70]);
    let point = pk.ec_point_der().unwrap();
    assert_eq!(&point[..2], &[0x04, 0x20]);
    assert_eq!(&point[2..], &raw[..]);
}

#[test]
fn spki_rejects_unknown_and_garbage() {
    let x = PKey::generate_x25519().unwrap();
    let e = PublicKey::from_spki(&x.public_key_to_der().unwrap()).unwrap_err();
    assert!(e.to_string().contains("1.3.101.110"), "{e}");
    assert!(PublicKey::from_spki(b"").is_err());
    assert!(PublicKey::from_spki(b"hello world").is_err());
    assert!(PublicKey::from_spki(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    let mut der = rsa2048().public_key_to_der().unwrap();
    der.truncate(der.len() - 1);
    assert!(PublicKey::from_spki(&der).is_err());
}

#[test]
fn ecdsa_high_and_low_s_accepted() {
    use openssl::bn::BigNum;
    for c in Curve::ALL {
        let k = ec_key(c);
        let pk = ec_public(&k);
        let mut order = BigNum::new().unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        k.group().order(&mut order, &mut ctx).unwrap();
        let d = HashAlg::Sha256.digest(MSG);
        let (_, raw) = ossl_ecdsa_raw(&k, c, &d);
        let fb = c.field_bytes();
        let s = BigNum::from_slice(&raw[fb..]).unwrap();
        let mut neg = BigNum::new().unwrap();
        neg.checked_sub(&order, &s).unwrap();
        let mut other = raw[..fb].to_vec();
        other.extend_from_slice(&neg.to_vec_padded(fb as i32).unwrap());
        let scheme = Scheme::Ecdsa(HashAlg::Sha256);
        verify(&pk, &scheme, SignedData::Digest(&d), &raw).unwrap();
        verify(&pk, &scheme, SignedData::Digest(&d), &other).unwrap();
        // r = 0 / s = 0 are rejected
        let zero_s = [&raw[..fb], &vec![0u8; fb][..]].concat();
        assert!(verify(&pk, &scheme, SignedData::Digest(&d), &zero_s).is_err());
        // s = n is out of range
        let n_s = [&raw[..fb], &order.to_vec_padded(fb as i32).unwrap()[..]].concat();
        assert!(verify(&pk, &scheme, SignedData::Digest(&d), &n_s).is_err());
    }
}

// ---------------------------------------------------------------- app key

#[test]
fn sign_metadata_verified_by_openssl() {
    use openssl::sign::Verifier;
    let k = rsa2048();
    let rsa = k.rsa().unwrap();
    let data = br#"{"metaData":"example","time":"2024-01-01T00:00:00Z"}"#;
    let pkcs8_der = k.private_key_to_pkcs8().unwrap();
    let pkcs1_der = rsa.private_key_to_der().unwrap();
    let forms: Vec<Vec<u8>> = vec![
        k.private_key_to_pem_pkcs8().unwrap(),
        rsa.private_key_to_pem().unwrap(),
        STANDARD.encode(&pkcs8_der).into_bytes(),
        STANDARD.encode(&pkcs1_der).into_bytes(),
        pkcs8_der,
        pkcs1_der,
    ];
    for form in &forms {
        let sig = sign_metadata(form, data).unwrap();
        assert_eq!(sig.len(), 256);
        let mut v = Verifier::new(MessageDigest::sha256(), k).unwrap();
        v.set_rsa_padding(Padding::PKCS1).unwrap();
        assert!(v.verify_oneshot(&sig, data).unwrap());
        // and by our verifier
        verify(
            &public_of(k),
            &Scheme::RsaPkcs1v15(HashAlg::Sha256),
            SignedData::Message(data),
            &sig,
        )
        .unwrap();
    }
    let app = appkey::AppKey::from_any(&forms[0]).unwrap();
    // Debug shows the size only, never key material.
    assert_eq!(format!("{app:?}"), "AppKey { bits: 2048, .. }");
    // not a key / not RSA / encrypted
    assert!(sign_metadata(b"garbage", data).is_err());
    let ec = PKey::from_ec_key(ec_key(Curve::P256)).unwrap();
    assert!(sign_metadata(&ec.private_key_to_pem_pkcs8().unwrap(), data).is_err());
    let enc = k
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"pw")
        .unwrap();
    let e = sign_metadata(&enc, data).unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
}

/// ring signs with 2048- to 4096-bit keys: a 3072-bit key signs (OpenSSL verifies), a
/// 1024-bit key in either form is refused with a reason, not a panic.
#[test]
fn sign_metadata_key_sizes() {
    use openssl::sign::Verifier;
    let data = b"{}";
    let k3072 = PKey::from_rsa(Rsa::generate(3072).unwrap()).unwrap();
    let sig = sign_metadata(&k3072.private_key_to_pem_pkcs8().unwrap(), data).unwrap();
    assert_eq!(sig.len(), 384);
    let mut v = Verifier::new(MessageDigest::sha256(), &k3072).unwrap();
    assert!(v.verify_oneshot(&sig, data).unwrap());
    let small = Rsa::generate(1024).unwrap();
    let small_pkcs8 = PKey::from_rsa(small.clone()).unwrap();
    for form in [
        small_pkcs8.private_key_to_pem_pkcs8().unwrap(),
        small.private_key_to_pem().unwrap(),
    ] {
        let e = sign_metadata(&form, data).unwrap_err().to_string();
        assert!(
            e.contains("2048 to 4096 bits") && e.contains("TooSmall"),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------- certificates

mod certs {
    use openssl::asn1::{Asn1Integer, Asn1Time};
    use openssl::bn::BigNum;
    use openssl::x509::extension::{BasicConstraints, KeyUsage};
    use openssl::x509::{X509Name, X509};

    use super::*;

    pub(super) struct Made {
        pub(crate) x509: X509,
        pub(crate) key: PKey<Private>,
    }

    fn name(cn: &str) -> X509Name {
        let mut b = X509Name::builder().unwrap();
        b.append_entry_by_text("C", "CH").unwrap();
        b.append_entry_by_text("O", "Example").unwrap();
        b.append_entry_by_text("CN", cn).unwrap();
        b.build()
    }

    pub(super) fn make(
        cn: &str,
        key: PKey<Private>,
        issuer: Option<&Made>,
        ca: Option<bool>,
        serial: &[u8],
        not_after: i64,
    ) -> Made {
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let sn = Asn1Integer::from_bn(&BigNum::from_slice(serial).unwrap()).unwrap();
        b.set_serial_number(&sn).unwrap();
        b.set_subject_name(&name(cn)).unwrap();
        match issuer {
            Some(i) => b.set_issuer_name(i.x509.subject_name()).unwrap(),
            None => b.set_issuer_name(&name(cn)).unwrap(),
        }
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(1_600_000_000).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
            .unwrap();
        match ca {
            Some(true) => {
                b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                    .unwrap();
                b.append_extension(KeyUsage::new().key_cert_sign().build().unwrap())
                    .unwrap();
            }
            Some(false) => {
                b.append_extension(BasicConstraints::new().build().unwrap())
                    .unwrap();
            }
            None => {}
        }
        let signer = issuer.map(|i| &i.key).unwrap_or(&key);
        b.sign(signer, MessageDigest::sha256()).unwrap();
        Made {
            x509: b.build(),
            key,
        }
    }

    fn der_integer(v: &[u8]) -> Vec<u8> {
        let mut v = v.to_vec();
        while v.len() > 1 && v[0] == 0 {
            v.remove(0);
        }
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend_from_slice(&v);
        out
    }

    #[test]
    fn self_signed_and_issued_certificates() {
        let ca = make(
            "Root CA",
            rsa2048().clone(),
            None,
            Some(true),
            &[0x01, 0x02],
            1_900_000_000,
        );
        let leaf_key = PKey::from_ec_key(ec_key(Curve::P256)).unwrap();
        let leaf_serial = [0x9a, 0xbc, 0xde, 0xf0, 0x11, 0x22, 0x33, 0x44, 0x55];
        let leaf = make(
            "Leaf",
            leaf_key.clone(),
            Some(&ca),
            Some(false),
            &leaf_serial,
            2_000_000_000,
        );

        let ca_der = ca.x509.to_der().unwrap();
        let leaf_der = leaf.x509.to_der().unwrap();
        let c = Certificate::from_der(&ca_der).unwrap();
        let l = Certificate::from_der(&leaf_der).unwrap();

        assert_eq!(c.der, ca_der);
        assert_eq!(c.subject_der, ca.x509.subject_name().to_der().unwrap());
        assert_eq!(c.issuer_der, c.subject_der);
        assert_eq!(c.serial_der, [0x02, 0x02, 0x01, 0x02]);
        assert_eq!(c.public_key, public_of(rsa2048()));
        assert_eq!(c.not_after_unix, 1_900_000_000);
        assert!(c.subject_text.contains("CN=Root CA"), "{}", c.subject_text);

        assert_eq!(l.subject_der, leaf.x509.subject_name().to_der().unwrap());
        assert_eq!(l.issuer_der, c.subject_der);
        assert_eq!(l.serial_der, der_integer(&leaf_serial));
        assert_eq!(l.serial_der[..3], [0x02, 0x0a, 0x00]);
        assert_eq!(l.public_key, public_of(&leaf_key));
        assert_eq!(l.not_after_unix, 2_000_000_000);

        for (cert, der) in [(&c, &ca_der), (&l, &leaf_der)] {
            let sha1 = openssl::hash::hash(MessageDigest::sha1(), der).unwrap();
            assert_eq!(cert.check_value(), [sha1[0], sha1[1], sha1[2]]);
        }

        // the CA's key verifies the leaf's signature (PKCS#1 v1.5 SHA-256 over the TBS)
        let parsed: x509_cert::Certificate = der::Decode::from_der(&leaf_der).unwrap();
        let tbs = der::Encode::to_der(&parsed.tbs_certificate).unwrap();
        let sig = parsed.signature.as_bytes().unwrap();
        verify(
            &c.public_key,
            &Scheme::RsaPkcs1v15(HashAlg::Sha256),
            SignedData::Message(&tbs),
            sig,
        )
        .unwrap();
    }

    #[test]
    fn certificate_input_forms_and_chains() {
        let ca_key = PKey::from_ec_key(ec_key(Curve::P384)).unwrap();
        let ca = make("EC CA", ca_key, None, Some(true), &[0x7f], 1_900_000_000);
        let ed = PKey::generate_ed25519().unwrap();
        // OpenSSL cannot sign with SHA-256 using Ed25519; issue an Ed25519 leaf from the EC CA.
        let leaf = make("Ed leaf", ed, Some(&ca), None, &[0x05], 1_900_000_000);
        let ca_der = ca.x509.to_der().unwrap();
        let ca_pem = ca.x509.to_pem().unwrap();
        let leaf_pem = leaf.x509.to_pem().unwrap();
        let expected = Certificate::from_der(&ca_der).unwrap();
        for form in all_forms(&ca_der, &ca_pem) {
            assert_eq!(Certificate::from_any(&form).unwrap(), expected);
        }
        let mut bundle = leaf_pem.clone();
        bundle.extend_from_slice(b"\n# comment\n");
        bundle.extend_from_slice(&ca_pem);
        let chain = Certificate::chain_from_pem(&bundle).unwrap();
        assert_eq!(chain.len(), 2);
        assert!(matches!(chain[0].public_key, PublicKey::Ed25519 { .. }));
        assert_eq!(chain[1], expected);
        assert_eq!(chain[0].issuer_der, chain[1].subject_der);
        // non-PEM input to chain_from_pem: one certificate
        assert_eq!(
            Certificate::chain_from_pem(&ca_der).unwrap(),
            vec![expected.clone()]
        );
        // errors
        assert!(
            Certificate::chain_from_pem(b"-----BEGIN FOO-----\nMAA=\n-----END FOO-----\n").is_err()
        );
        assert!(Certificate::from_any(b"nonsense").is_err());
        let mut truncated = ca_der.clone();
        truncated.pop();
        assert!(Certificate::from_der(&truncated).is_err());
        assert!(Certificate::from_der(&rsa2048().public_key_to_der().unwrap()).is_err());
    }
}

/// Issue 19 item 3: the form check of a signature against its key at the edges of each range
/// (the values computed with OpenSSL's big numbers): n-1 and 2 pass, n, 1, 0 do not (RSA); r, s
/// = n-1 and 1 pass, 0 and n do not (ECDSA on each curve); S = L-1 passes, L does not (Ed25519);
/// one byte more or less never passes. A real signature of each kind passes.
#[test]
fn signature_forms_at_the_edges() {
    use openssl::bn::BigNum;
    let padded = |v: &BigNum, len: usize| v.to_vec_padded(len as i32).unwrap();
    // RSA
    let key = public_of(rsa2048());
    let PublicKey::Rsa { modulus, .. } = &key else {
        unreachable!()
    };
    let n = BigNum::from_slice(modulus).unwrap();
    let len = modulus.len();
    let minus = |v: &BigNum, d: u32| {
        let mut out = BigNum::new().unwrap();
        out.checked_sub(v, &BigNum::from_u32(d).unwrap()).unwrap();
        out
    };
    assert!(check_form(&key, &padded(&minus(&n, 1), len)).is_ok());
    assert!(check_form(&key, &padded(&BigNum::from_u32(2).unwrap(), len)).is_ok());
    for bad in [
        n.to_vec(),
        padded(&BigNum::from_u32(1).unwrap(), len),
        vec![0; len],
    ] {
        assert!(check_form(&key, &bad).is_err());
    }
    let mut signer = Signer::new(MessageDigest::sha256(), rsa2048()).unwrap();
    let sig = signer.sign_oneshot_to_vec(b"m").unwrap();
    assert!(check_form(&key, &sig).is_ok());
    assert!(check_form(&key, &sig[1..]).is_err());
    assert!(check_form(&key, &[&[0u8][..], &sig].concat()).is_err());
    // ECDSA
    for (curve, nid) in [
        (Curve::P256, Nid::X9_62_PRIME256V1),
        (Curve::P384, Nid::SECP384R1),
        (Curve::P521, Nid::SECP521R1),
        (Curve::Secp256k1, Nid::SECP256K1),
    ] {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let point = ec
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        let key = PublicKey::Ec { curve, point };
        let mut order = BigNum::new().unwrap();
        group.order(&mut order, &mut ctx).unwrap();
        let w = curve.field_bytes();
        let rs = |r: &BigNum, s: &BigNum| [padded(r, w), padded(s, w)].concat();
        let one = BigNum::from_u32(1).unwrap();
        let zero = BigNum::from_u32(0).unwrap();
        let top = minus(&order, 1);
        assert!(check_form(&key, &rs(&top, &top)).is_ok(), "{curve:?}");
        assert!(check_form(&key, &rs(&one, &one)).is_ok(), "{curve:?}");
        for (r, s) in [(&zero, &one), (&one, &zero), (&order, &one), (&one, &order)] {
            assert!(check_form(&key, &rs(r, s)).is_err(), "{curve:?}");
        }
        assert!(check_form(&key, &rs(&one, &one)[1..]).is_err(), "{curve:?}");
        let sig = EcdsaSig::sign(&[7u8; 32], &ec).unwrap();
        assert!(
            check_form(
                &key,
                &rs(&sig.r().to_owned().unwrap(), &sig.s().to_owned().unwrap())
            )
            .is_ok(),
            "{curve:?}"
        );
    }
    // Ed25519: L = 2^252 + 27742317777372353535851937790883648493 (RFC 8032 §5.1).
    let ed = PKey::generate_ed25519().unwrap();
    let key = PublicKey::Ed25519 {
        key: ed.raw_public_key().unwrap().try_into().unwrap(),
    };
    let mut l = BigNum::new().unwrap();
    l.lshift(&BigNum::from_u32(1).unwrap(), 252).unwrap();
    let mut l_full = BigNum::new().unwrap();
    l_full
        .checked_add(
            &l,
            &BigNum::from_dec_str("27742317777372353535851937790883648493").unwrap(),
        )
        .unwrap();
    let le = |v: &BigNum| {
        let mut b = padded(v, 32);
        b.reverse();
        b
    };
    let with_s = |s: &[u8]| [&[0x11u8; 32][..], s].concat();
    assert!(check_form(&key, &with_s(&le(&minus(&l_full, 1)))).is_ok());
    assert!(check_form(&key, &with_s(&le(&l_full))).is_err());
    assert!(check_form(&key, &with_s(&[0xff; 32])).is_err());
    let mut signer = Signer::new_without_digest(&ed).unwrap();
    let sig = signer.sign_oneshot_to_vec(b"m").unwrap();
    assert!(check_form(&key, &sig).is_ok());
    assert!(check_form(&key, &sig[..63]).is_err());
}

// ---------------------------------------------------------------- post-quantum

use super::pqc::{lmots_p, lms_height, HssKey, MlDsaSet, SlhDsaSet, HSS_MAX_LEVELS};

#[test]
fn ml_dsa_sets_sign_with_and_without_context() {
    // Signed by RustCrypto `ml-dsa` (deterministic, FIPS 204 Algorithm 2), verified by the
    // module's wrapper: each set with its own parameters, the context honoured.
    fn case<P: ml_dsa::MlDsaParams>(set: MlDsaSet) {
        let seed = ml_dsa::Seed::try_from(&[7u8; 32][..]).unwrap();
        let sk = ml_dsa::SigningKey::<P>::from_seed(&seed);
        let raw = ml_dsa::Keypair::verifying_key(&sk).encode().to_vec();
        let pk = PublicKey::ml_dsa(set, &raw).unwrap();
        let sign = |m: &[u8], ctx: &[u8]| {
            sk.expanded_key()
                .sign_deterministic(m, ctx)
                .unwrap()
                .encode()
                .to_vec()
        };
        let v = |data: SignedData<'_>, sig: &[u8]| verify(&pk, &Scheme::MlDsa, data, sig);
        let plain = sign(MSG, b"");
        assert_eq!(plain.len(), pk.signature_len(), "{set:?}");
        check_form(&pk, &plain).unwrap();
        v(SignedData::Message(MSG), &plain).unwrap();
        v(SignedData::MessageInContext(MSG, b""), &plain).unwrap();
        assert!(v(SignedData::Message(b"other"), &plain).is_err());
        assert!(v(SignedData::Message(MSG), &flip(&plain, 1000)).is_err());
        assert!(
            v(SignedData::Digest(MSG), &plain).is_err(),
            "pure: no digests"
        );
        let in_ctx = sign(MSG, b"context");
        v(SignedData::MessageInContext(MSG, b"context"), &in_ctx).unwrap();
        assert!(v(SignedData::Message(MSG), &in_ctx).is_err());
        assert!(v(SignedData::MessageInContext(MSG, b"contexT"), &in_ctx).is_err());
        assert!(v(SignedData::MessageInContext(MSG, &[0; 256]), &plain).is_err());
        // A key of another set's length is refused.
        assert!(PublicKey::ml_dsa(set, &raw[1..]).is_err());
        assert_eq!(PublicKey::from_spki_der(&pk.spki_der()).unwrap(), pk);
    }
    case::<ml_dsa::MlDsa44>(MlDsaSet::MlDsa44);
    case::<ml_dsa::MlDsa65>(MlDsaSet::MlDsa65);
    case::<ml_dsa::MlDsa87>(MlDsaSet::MlDsa87);
}

#[test]
fn ml_dsa_and_slh_dsa_tables() {
    // FIPS 204 Table 1 and RFC 9881 (OIDs ...3.4.3.17-19).
    for (set, name, oid, pk, sig) in [
        (
            MlDsaSet::MlDsa44,
            "ML-DSA-44",
            "2.16.840.1.101.3.4.3.17",
            1312,
            2420,
        ),
        (
            MlDsaSet::MlDsa65,
            "ML-DSA-65",
            "2.16.840.1.101.3.4.3.18",
            1952,
            3309,
        ),
        (
            MlDsaSet::MlDsa87,
            "ML-DSA-87",
            "2.16.840.1.101.3.4.3.19",
            2592,
            4627,
        ),
    ] {
        assert_eq!(
            (
                set.name(),
                set.oid(),
                set.public_key_len(),
                set.signature_len()
            ),
            (name, oid, pk, sig)
        );
        assert_eq!(
            MlDsaSet::from_name(&name.to_lowercase().replace('-', "_")),
            Some(set)
        );
    }
    assert_eq!(MlDsaSet::from_name("DILITHIUM_L3"), None);
    // FIPS 205 Table 2, RFC 9909 §3 (OIDs ...3.4.3.20-31), in the order of CKP_SLH_DSA_*.
    let table = [
        ("SLH-DSA-SHA2-128s", 20, 32, 7856),
        ("SLH-DSA-SHAKE-128s", 26, 32, 7856),
        ("SLH-DSA-SHA2-128f", 21, 32, 17088),
        ("SLH-DSA-SHAKE-128f", 27, 32, 17088),
        ("SLH-DSA-SHA2-192s", 22, 48, 16224),
        ("SLH-DSA-SHAKE-192s", 28, 48, 16224),
        ("SLH-DSA-SHA2-192f", 23, 48, 35664),
        ("SLH-DSA-SHAKE-192f", 29, 48, 35664),
        ("SLH-DSA-SHA2-256s", 24, 64, 29792),
        ("SLH-DSA-SHAKE-256s", 30, 64, 29792),
        ("SLH-DSA-SHA2-256f", 25, 64, 49856),
        ("SLH-DSA-SHAKE-256f", 31, 64, 49856),
    ];
    for (i, (set, (name, arc, pk, sig))) in SlhDsaSet::ALL.into_iter().zip(table).enumerate() {
        assert_eq!(set.index(), i);
        assert_eq!(set.name(), name);
        assert_eq!(set.oid(), format!("2.16.840.1.101.3.4.3.{arc}"));
        assert_eq!(
            (set.public_key_len(), set.signature_len()),
            (pk, sig),
            "{name}"
        );
        assert_eq!(
            SlhDsaSet::from_name(&name.to_uppercase().replace('-', "_")),
            Some(set)
        );
        let key = PublicKey::slh_dsa(set, &vec![0x5a; pk]).unwrap();
        assert_eq!(key.signature_len(), sig);
        assert_eq!(PublicKey::from_spki_der(&key.spki_der()).unwrap(), key);
        assert!(PublicKey::slh_dsa(set, &vec![0x5a; pk + 1]).is_err());
        // Each set verifies with its own parameters: a signature of the right length is
        // parsed and checked (and does not verify), not refused as malformed.
        let e = verify(
            &key,
            &Scheme::SlhDsa,
            SignedData::Message(MSG),
            &vec![0; sig],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not verify"), "{name}: {e}");
    }
    assert_eq!(SlhDsaSet::from_name("SPHINCS_PLUS"), None);
}

#[test]
fn slh_dsa_signature_verifies_in_context() {
    let sk = slh_dsa::SigningKey::<slh_dsa::Sha2_128f>::slh_keygen_internal(
        &[1; 16], &[2; 16], &[3; 16],
    );
    let raw = AsRef::<slh_dsa::VerifyingKey<_>>::as_ref(&sk).to_vec();
    let pk = PublicKey::slh_dsa(SlhDsaSet::ALL[2], &raw).unwrap();
    let sig = sk
        .try_sign_with_context(MSG, b"ctx", None)
        .unwrap()
        .to_vec();
    let v = |data: SignedData<'_>, sig: &[u8]| verify(&pk, &Scheme::SlhDsa, data, sig);
    v(SignedData::MessageInContext(MSG, b"ctx"), &sig).unwrap();
    assert!(v(SignedData::Message(MSG), &sig).is_err());
    assert!(v(SignedData::MessageInContext(b"other", b"ctx"), &sig).is_err());
    assert!(v(SignedData::Digest(MSG), &sig).is_err());
}

#[test]
fn hss_keys_levels_and_signature_lengths() {
    // RFC 8554 §5.3: an LMS public key is type, OTS type, I (16 bytes), T[1] (32 bytes).
    let lms = |lms_type: u32, ots: u32| -> Vec<u8> {
        [
            &lms_type.to_be_bytes()[..],
            &ots.to_be_bytes(),
            &[0x11; 16],
            &[0x22; 32],
        ]
        .concat()
    };
    let hss =
        |l: u32, lms_type: u32, ots: u32| [&l.to_be_bytes()[..], &lms(lms_type, ots)].concat();
    // A bare LMS key is an HSS key of one level (RFC 8554 §6).
    let one = HssKey::from_raw(&lms(5, 4)).unwrap();
    assert_eq!(one.key, hss(1, 5, 4));
    assert_eq!(one.level_count(), 1);
    // LMS_SHA256_M32_H5 with LMOTS_SHA256_N32_W8 (p = 34): q + (type, C, 34 y) + type + 5
    // path nodes = 4 + 1124 + 4 + 160 = 1292 bytes; HSS adds Nspk.
    assert_eq!(one.signature_len(), 4 + 1292);
    // Two levels of LMS_SHA256_M32_H10 with LMOTS_SHA256_N32_W4 (p = 67): an LMS signature
    // is 4 + (4 + 32 + 67 * 32) + 4 + 10 * 32 = 2508; HSS: Nspk, the upper signature and the
    // lower public key (56), the lower signature.
    let two = HssKey::from_raw(&hss(2, 6, 3)).unwrap();
    assert_eq!(two.level_count(), 2);
    assert_eq!(two.signature_len(), 4 + 2508 + 56 + 2508);
    assert_eq!(
        HssKey::from_raw(&hss(8, 9, 1)).unwrap().level_count(),
        HSS_MAX_LEVELS
    );
    for bad in [
        hss(0, 5, 4),
        hss(9, 5, 4),
        hss(1, 4, 4),
        hss(1, 10, 4),
        hss(1, 5, 0),
        hss(1, 5, 5),
        lms(5, 4)[1..].to_vec(),
        [hss(1, 5, 4), vec![0]].concat(),
    ] {
        assert!(HssKey::from_raw(&bad).is_err(), "{bad:02x?}");
    }
    // RFC 8554 Table 1 (p by w) and the LMS heights of types 5..=9.
    assert_eq!(
        (0..=5).map(lmots_p).collect::<Vec<_>>(),
        [None, Some(265), Some(133), Some(67), Some(34), None]
    );
    assert_eq!(
        (4..=10).map(lms_height).collect::<Vec<_>>(),
        [None, Some(5), Some(10), Some(15), Some(20), Some(25), None]
    );
    // A bare LMS signature of a one-level key gets Nspk = 0; anything else is left alone.
    let bare = vec![0xab; 1292];
    assert_eq!(
        one.normalise_signature(&bare),
        [&[0u8; 4][..], &bare].concat()
    );
    let full = [&[0u8; 4][..], &bare].concat();
    assert_eq!(one.normalise_signature(&full), full);
    assert_eq!(two.normalise_signature(&bare), bare);
    // The form check wants Nspk = L - 1.
    let key = PublicKey::Hss(two.clone());
    let mut sig = vec![0u8; two.signature_len()];
    assert!(check_form(&key, &sig).is_err());
    sig[3] = 1;
    check_form(&key, &sig).unwrap();
    assert!(check_form(&key, &sig[1..]).is_err());
    // HSS signs messages without a context.
    let e = verify(&key, &Scheme::Hss, SignedData::Digest(MSG), &sig).unwrap_err();
    assert!(e.to_string().contains("without a context"), "{e}");
    // A signature of the right length with types no LMS signature has, a short one, one
    // with more levels than the key: refused (hbs-lms, which panics on these, never sees them).
    for bad in [
        sig.clone(),
        sig[..100].to_vec(),
        [&[0, 0, 0, 9][..], &sig[4..]].concat(),
    ] {
        let e = verify(&key, &Scheme::Hss, SignedData::Message(MSG), &bad).unwrap_err();
        assert!(e.to_string().contains("malformed"), "{e}");
    }
    let one_key = PublicKey::Hss(one.clone());
    let mut lone = vec![0u8; one.signature_len()];
    let e = verify(&one_key, &Scheme::Hss, SignedData::Message(MSG), &lone).unwrap_err();
    assert!(e.to_string().contains("malformed"), "{e}");
    // Right types (W8 at offset 8, H5 after the LM-OTS signature): parsed, and not valid.
    lone[8..12].copy_from_slice(&4u32.to_be_bytes());
    lone[4 + 4 + 4 + 32 + 34 * 32..][..4].copy_from_slice(&5u32.to_be_bytes());
    let e = verify(&one_key, &Scheme::Hss, SignedData::Message(MSG), &lone).unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
}
