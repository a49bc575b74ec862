//! Every mechanism on every key type and size, through the built .so, against the simulator.
//! Each signature is verified by OpenSSL with the public key the simulator holds.

use tsb_pkcs11_test_support as common;

use common::verify::{self, Hash};
use common::{pss_params, raw_sign, Harness};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki_sys::*;

const RSA_KEYS: [&str; 3] = ["rsa-2048", "rsa-3072", "rsa-4096"];
const EC_KEYS: [&str; 3] = ["ec-p256", "ec-p384", "ec-p521"];

fn msg() -> Vec<u8> {
    b"tsb-pkcs11 mechanism test message".to_vec()
}

fn pss(hash: Hash) -> PkcsPssParams {
    let (alg, mgf) = match hash {
        Hash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        Hash::Sha224 => (MechanismType::SHA224, PkcsMgfType::MGF1_SHA224),
        Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    };
    PkcsPssParams {
        hash_alg: alg,
        mgf,
        s_len: (hash.output_len() as u64).into(),
    }
}

#[test]
fn rsa_pkcs1_hash_mechanisms_on_every_rsa_key() {
    let h = Harness::new();
    let s = h.session();
    for label in RSA_KEYS {
        let key = h.private_key(&s, label);
        let pk = h.sim_public_key(label);
        for (mech, hash) in [
            (Mechanism::Sha1RsaPkcs, Hash::Sha1),
            (Mechanism::Sha224RsaPkcs, Hash::Sha224),
            (Mechanism::Sha256RsaPkcs, Hash::Sha256),
            (Mechanism::Sha384RsaPkcs, Hash::Sha384),
            (Mechanism::Sha512RsaPkcs, Hash::Sha512),
        ] {
            let sig = s.sign(&mech, key, &msg()).expect("sign");
            assert!(
                verify::rsa_pkcs1(&pk, hash, &msg(), &sig),
                "{label} {hash:?}"
            );
        }
    }
    let algs: Vec<String> = h
        .sim
        .requests()
        .iter()
        .map(|r| r.algorithm.clone())
        .collect();
    assert!(algs.contains(&"SHA384_WITH_RSA".to_string()), "{algs:?}");
}

#[test]
fn rsa_pkcs_with_digest_info_of_each_hash_and_raw_input() {
    let h = Harness::new();
    let s = h.session();
    let key = h.private_key(&s, "rsa-2048");
    let pk = h.sim_public_key("rsa-2048");
    for hash in verify::ALL {
        let di = hash.digest_info(&hash.digest(&msg()));
        let sig = s
            .sign(&Mechanism::RsaPkcs, key, &di)
            .expect("sign DigestInfo");
        assert!(
            verify::rsa_pkcs1(&pk, hash, &msg(), &sig),
            "DigestInfo {hash:?}"
        );
        let last = h.sim.requests().last().cloned().unwrap();
        assert!(last.algorithm.starts_with("NONESHA"), "{}", last.algorithm);
        assert_eq!(
            last.payload,
            hash.digest(&msg()),
            "bare digest sent for {hash:?}"
        );
    }
    // Input that is not a DigestInfo is signed as given (NONE_WITH_RSA).
    let raw_input = b"not a digest info, just bytes".to_vec();
    let sig = s
        .sign(&Mechanism::RsaPkcs, key, &raw_input)
        .expect("sign raw");
    assert!(verify::rsa_pkcs1_raw(&pk, &raw_input, &sig));
    assert_eq!(h.sim.requests().last().unwrap().algorithm, "NONE_WITH_RSA");
    // Over k-11 bytes: CKR_DATA_LEN_RANGE.
    let too_long = vec![1u8; 256 - 10];
    let err = s.sign(&Mechanism::RsaPkcs, key, &too_long).unwrap_err();
    assert!(format!("{err:?}").contains("DataLenRange"), "{err}");
}

#[test]
fn rsa_pss_mechanisms_on_every_rsa_key() {
    let h = Harness::new();
    let s = h.session();
    for label in RSA_KEYS {
        let key = h.private_key(&s, label);
        let pk = h.sim_public_key(label);
        for (mech, hash) in [
            (Mechanism::Sha256RsaPkcsPss(pss(Hash::Sha256)), Hash::Sha256),
            (Mechanism::Sha384RsaPkcsPss(pss(Hash::Sha384)), Hash::Sha384),
            (Mechanism::Sha512RsaPkcsPss(pss(Hash::Sha512)), Hash::Sha512),
        ] {
            let sig = s.sign(&mech, key, &msg()).expect("sign");
            assert!(
                verify::rsa_pss(&pk, hash, &msg(), &sig),
                "{label} PSS {hash:?}"
            );
        }
        // CKM_RSA_PKCS_PSS over a digest, each hash.
        for hash in [Hash::Sha224, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let d = hash.digest(&msg());
            let sig = s
                .sign(&Mechanism::RsaPkcsPss(pss(hash)), key, &d)
                .expect("sign digest");
            assert!(
                verify::rsa_pss_digest(&pk, hash, &d, &sig),
                "{label} PSS digest {hash:?}"
            );
        }
        // CKM_SHA224_RSA_PKCS_PSS (not in the cryptoki crate's enum): raw call.
        let mut p = pss_params(CKM_SHA224, CKG_MGF1_SHA224, 28);
        let sig = raw_sign(
            &h.raw,
            s.handle(),
            CKM_SHA224_RSA_PKCS_PSS,
            &mut p,
            key.handle(),
            &msg(),
        )
        .expect("SHA224 PSS");
        assert!(
            verify::rsa_pss(&pk, Hash::Sha224, &msg(), &sig),
            "{label} SHA224 PSS"
        );
    }
}

#[test]
fn rsa_pss_parameters_are_validated() {
    let h = Harness::new();
    let s = h.session();
    let key = h.private_key(&s, "rsa-2048").handle();
    let d = Hash::Sha256.digest(&msg());
    let cases: Vec<(CK_MECHANISM_TYPE, Vec<u8>)> = vec![
        (CKM_RSA_PKCS_PSS, pss_params(CKM_SHA256, CKG_MGF1_SHA256, 0)), // wrong salt
        (CKM_RSA_PKCS_PSS, pss_params(CKM_SHA256, CKG_MGF1_SHA1, 32)),  // wrong MGF
        (CKM_RSA_PKCS_PSS, pss_params(CKM_SHA_1, CKG_MGF1_SHA1, 20)),   // SHA-1 unsupported
        (
            CKM_SHA256_RSA_PKCS_PSS,
            pss_params(CKM_SHA384, CKG_MGF1_SHA384, 48),
        ), // hash mismatch
        (CKM_RSA_PKCS_PSS, vec![0u8; 7]),                               // wrong size
        (CKM_RSA_PKCS_PSS, vec![]),                                     // missing
        (CKM_SHA256_RSA_PKCS, vec![0u8; 8]),                            // takes none
    ];
    for (mech, mut p) in cases {
        let r = raw_sign(&h.raw, s.handle(), mech, &mut p, key, &d);
        assert_eq!(
            r,
            Err(CKR_MECHANISM_PARAM_INVALID),
            "mech 0x{mech:x} params {p:?}"
        );
    }
    assert_eq!(
        h.sim.counter("POST /v1/synchronousSign"),
        0,
        "nothing was sent"
    );
}

#[test]
fn ecdsa_mechanisms_on_every_curve() {
    let h = Harness::new();
    let s = h.session();
    for label in EC_KEYS {
        let key = h.private_key(&s, label);
        let pk = h.sim_public_key(label);
        for (mech, hash) in [
            (Mechanism::EcdsaSha1, Hash::Sha1),
            (Mechanism::EcdsaSha224, Hash::Sha224),
            (Mechanism::EcdsaSha256, Hash::Sha256),
            (Mechanism::EcdsaSha384, Hash::Sha384),
            (Mechanism::EcdsaSha512, Hash::Sha512),
        ] {
            let sig = s.sign(&mech, key, &msg()).expect("sign");
            assert!(verify::ecdsa(&pk, hash, &msg(), &sig), "{label} {hash:?}");
        }
        for hash in verify::ALL {
            let d = hash.digest(&msg());
            let sig = s.sign(&Mechanism::Ecdsa, key, &d).expect("sign digest");
            assert!(
                verify::ecdsa_digest(&pk, &d, &sig),
                "{label} CKM_ECDSA {hash:?}"
            );
        }
    }
}

/// 200+ signatures per curve: r and s are often shorter than the field (P-521 especially),
/// so fixed-width padding bugs show up here.
#[test]
fn ecdsa_signatures_are_fixed_width_r_s_200_per_curve() {
    let h = Harness::new();
    let s = h.session();
    for (label, width) in [("ec-p256", 64), ("ec-p384", 96), ("ec-p521", 132)] {
        let key = h.private_key(&s, label);
        let pk = h.sim_public_key(label);
        for i in 0..200u32 {
            let m = format!("message {i}");
            let sig = s
                .sign(&Mechanism::EcdsaSha256, key, m.as_bytes())
                .expect("sign");
            assert_eq!(sig.len(), width, "{label} #{i}");
            assert!(
                verify::ecdsa(&pk, Hash::Sha256, m.as_bytes(), &sig),
                "{label} #{i}"
            );
        }
    }
}

#[test]
fn eddsa_on_ed25519() {
    let h = Harness::new();
    let s = h.session();
    let key = h.private_key(&s, "ed25519");
    let pk = h.sim_public_key("ed25519");
    let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
    let sig = s.sign(&mech, key, &msg()).expect("sign");
    assert_eq!(sig.len(), 64);
    assert!(verify::ed25519(&pk, &msg(), &sig));
    // Over 64 KiB: CKR_DATA_LEN_RANGE, nothing sent.
    let before = h.sim.counter("POST /v1/synchronousSign");
    let err = s.sign(&mech, key, &vec![0u8; 64 * 1024 + 1]).unwrap_err();
    assert!(format!("{err:?}").contains("DataLenRange"), "{err}");
    assert_eq!(h.sim.counter("POST /v1/synchronousSign"), before);
}

#[test]
fn wrong_key_type_for_mechanism_is_refused() {
    let h = Harness::new();
    let s = h.session();
    let ec = h.private_key(&s, "ec-p256");
    let rsa = h.private_key(&s, "rsa-2048");
    assert!(format!(
        "{:?}",
        s.sign(&Mechanism::Sha256RsaPkcs, ec, b"x").unwrap_err()
    )
    .contains("KeyTypeInconsistent"));
    assert!(format!(
        "{:?}",
        s.sign(&Mechanism::EcdsaSha256, rsa, b"x").unwrap_err()
    )
    .contains("KeyTypeInconsistent"));
}

#[test]
fn multi_part_equals_single_part() {
    let h = Harness::new();
    let s = h.session();
    let key = h.private_key(&s, "rsa-2048");
    let pk = h.sim_public_key("rsa-2048");
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let single = s.sign(&Mechanism::Sha256RsaPkcs, key, &data).unwrap();
    s.sign_init(&Mechanism::Sha256RsaPkcs, key).unwrap();
    for chunk in data.chunks(777) {
        s.sign_update(chunk).unwrap();
    }
    let multi = s.sign_final().unwrap();
    assert_eq!(
        single, multi,
        "PKCS#1 v1.5 is deterministic: same signature"
    );
    assert!(verify::rsa_pkcs1(&pk, Hash::Sha256, &data, &multi));

    let ec = h.private_key(&s, "ec-p384");
    let ecpk = h.sim_public_key("ec-p384");
    s.sign_init(&Mechanism::EcdsaSha384, ec).unwrap();
    for chunk in data.chunks(1000) {
        s.sign_update(chunk).unwrap();
    }
    let sig = s.sign_final().unwrap();
    assert!(verify::ecdsa(&ecpk, Hash::Sha384, &data, &sig));
}

/// Over 64 KiB, hash-and-sign mechanisms hash locally and send the digest with the pre-hashed
/// TSB algorithm; at or under 64 KiB the message itself goes (so approvers see it).
#[test]
fn large_input_is_hashed_locally() {
    let h = Harness::new();
    let s = h.session();
    let key = h.private_key(&s, "rsa-3072");
    let pk = h.sim_public_key("rsa-3072");
    let exact: Vec<u8> = vec![7u8; 64 * 1024];
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, key, &exact).unwrap();
    assert!(verify::rsa_pkcs1(&pk, Hash::Sha256, &exact, &sig));
    let last = h.sim.requests().last().cloned().unwrap();
    assert_eq!(last.algorithm, "SHA256_WITH_RSA");
    assert_eq!(last.payload.len(), 64 * 1024);

    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let sig = s
        .sign(&Mechanism::Sha512RsaPkcsPss(pss(Hash::Sha512)), key, &big)
        .unwrap();
    assert!(verify::rsa_pss(&pk, Hash::Sha512, &big, &sig));
    let last = h.sim.requests().last().cloned().unwrap();
    assert_eq!(last.algorithm, "NONESHA512_WITH_RSA_PSS");
    assert_eq!(last.payload, Hash::Sha512.digest(&big));

    // Multi-part crossing the limit.
    let ec = h.private_key(&s, "ec-p256");
    let ecpk = h.sim_public_key("ec-p256");
    s.sign_init(&Mechanism::EcdsaSha256, ec).unwrap();
    for chunk in big.chunks(30_000) {
        s.sign_update(chunk).unwrap();
    }
    let sig = s.sign_final().unwrap();
    assert!(verify::ecdsa(&ecpk, Hash::Sha256, &big, &sig));
    assert_eq!(
        h.sim.requests().last().unwrap().algorithm,
        "NONE_WITH_ECDSA"
    );
}

#[test]
fn local_verify_accepts_good_and_rejects_bad_signatures() {
    let h = Harness::new();
    let s = h.session();
    for (label, mech) in [
        ("rsa-2048", Mechanism::Sha256RsaPkcs),
        ("ec-p521", Mechanism::EcdsaSha512),
        (
            "ed25519",
            Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        ),
    ] {
        let key = h.private_key(&s, label);
        let public = h.find(&s, label, cryptoki::object::ObjectClass::PUBLIC_KEY);
        let mut sig = s.sign(&mech, key, &msg()).unwrap();
        s.verify(&mech, public, &msg(), &sig).expect("verifies");
        sig[5] ^= 1;
        let err = s.verify(&mech, public, &msg(), &sig).unwrap_err();
        assert!(
            format!("{err:?}").contains("SignatureInvalid"),
            "{label}: {err}"
        );
    }
}
