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

// ---------------------------------------------------------------------------------------
// Post-quantum keys (issue 21) through two clients: PyKCS11 with the raw PKCS#11 3.2 mechanism
// numbers, and a C program that takes the "PKCS 11" 3.2 interface from C_GetInterface. Every
// signature is verified by tests/python/pqc_verify.py (dilithium-py, SLH-DSA, hsslms: pure
// Python, independent of the module and of tsb-sim) against the public key the simulator holds.

/// The venv interpreter with PyKCS11 and the three verifiers (scripts/test.sh installs them).
fn pqc_python() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = std::env::var_os("TSB_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target/compat-venv/bin/python"));
    let ok = std::process::Command::new(&p)
        .args(["-c", "import PyKCS11, dilithium_py, slhdsa, hsslms"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("!!! PyKCS11 or the PQC verifiers not found (TSB_PYTHON or target/compat-venv): SKIPPED — scripts/test.sh installs them");
    }
    ok.then_some(p)
}

fn run_ok(cmd: &mut std::process::Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs tests/python/pqc_verify.py with the simulator's public keys.
struct PqcVerifier<'a> {
    python: &'a std::path::Path,
    h: &'a Harness,
    dir: &'a std::path::Path,
}

impl PqcVerifier<'_> {
    /// pqc_verify.py's verdict on `sig` over `msg` by `label`'s key (`context`: FIPS 204/205).
    fn verifies(
        &self,
        (alg, set): (&str, &str),
        label: &str,
        msg: &[u8],
        sig: &[u8],
        context: Option<&str>,
    ) -> bool {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let public = self
            .h
            .sim
            .public_key_der(label)
            .expect("the simulator's public key");
        let (pk, m, s) = (
            self.dir.join("v.pub"),
            self.dir.join("v.msg"),
            self.dir.join("v.sig"),
        );
        std::fs::write(&pk, public).unwrap();
        std::fs::write(&m, msg).unwrap();
        std::fs::write(&s, sig).unwrap();
        let mut cmd = std::process::Command::new(self.python);
        cmd.arg(root.join("tests/python/pqc_verify.py"))
            .args([alg, set])
            .args([&pk, &m, &s]);
        if let Some(c) = context {
            cmd.args(["--context", &hex::encode(c)]);
        }
        let out = cmd.output().expect("pqc_verify.py runs");
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("pqc_verify.py: {}", String::from_utf8_lossy(&out.stderr)),
        }
    }
}

#[test]
fn post_quantum_signatures_through_pykcs11_and_the_3_2_interface() {
    use tsb_sim::{KeyAlgorithm, KeySpec, PolicySpec, SimConfig};
    let Some(python) = pqc_python() else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The simulator keeps an LMS key's used one-time keys in its state directory (shared by
    // test runs): fresh labels give fresh LMS keys.
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let lms = format!("lms-{run}");
    let lms_short = format!("lms-short-{run}");
    let cfg = SimConfig {
        time_scale: 0.01,
        approved_execution_delay_ms: 20,
        keys: vec![
            KeySpec::post_quantum("mldsa-65", KeyAlgorithm::MlDsa65),
            KeySpec::post_quantum("slh-128s", KeyAlgorithm::SlhDsaSha2_128s),
            KeySpec::post_quantum("slh-128f", KeyAlgorithm::SlhDsaSha2_128f),
            KeySpec::lms(&lms, 5, 8),
            KeySpec::lms(&lms_short, 5, 8),
            KeySpec::post_quantum("mldsa-ska", KeyAlgorithm::MlDsa65)
                .with_policy(PolicySpec::single_group(1, &["alice"]))
                .with_auto_approve_after_ms(300),
        ],
        ..SimConfig::default()
    };
    let h = Harness::with(cfg, serde_json::json!({}));
    let dir = tempfile::tempdir().unwrap();
    let v = PqcVerifier {
        python: &python,
        h: &h,
        dir: dir.path(),
    };
    let sets = |label: &str| match label {
        "mldsa-65" | "mldsa-ska" => ("ML-DSA", "ML-DSA-65"),
        "slh-128s" => ("SLH-DSA", "SLH-DSA-SHA2-128s"),
        "slh-128f" => ("SLH-DSA", "SLH-DSA-SHA2-128f"),
        _ => ("LMS", "-"),
    };

    // PyKCS11, raw mechanism numbers.
    let out = run_ok(
        common::child_env(&mut std::process::Command::new(&python))
            .arg(root.join("tests/python/pqc_sign.py"))
            .arg(&h.module_path)
            .arg(dir.path())
            .args([
                "mldsa-65:ML_DSA",
                "slh-128s:SLH_DSA",
                "slh-128f:SLH_DSA",
                &format!("{lms}:HSS"),
                "mldsa-ska:ML_DSA",
            ])
            .env("TSB_PKCS11_CONFIG", &h.config_path),
        "pqc_sign.py",
    );
    let expected = [
        ("mldsa-65", "0x4a 0x2 3309"),
        ("slh-128s", "0x4b 0x1 7856"),
        ("slh-128f", "0x4b 0x3 17088"),
        (lms.as_str(), "0x46 - 1296"),
        ("mldsa-ska", "0x4a 0x2 3309"),
    ];
    for (label, want) in expected {
        assert!(
            out.lines().any(|l| l == format!("{label} {want}")),
            "{label}: key type, parameter set and size {want} in {out}"
        );
        let sig = std::fs::read(dir.path().join(format!("{label}.sig"))).unwrap();
        let msg = b"pykcs11 pqc";
        assert!(
            v.verifies(sets(label), label, msg, &sig, None),
            "{label}: PyKCS11's signature verifies"
        );
        let mut flipped = sig.clone();
        flipped[sig.len() / 3] ^= 0x10;
        assert!(
            !v.verifies(sets(label), label, msg, &flipped, None),
            "{label}: the verifier refuses a flipped byte"
        );
    }

    // The C program on the 3.2 interface: a context, a refused hedging choice, an exhausted
    // LMS key, and a 3.2 function the token does not implement.
    let exe = dir.path().join("pqc32");
    run_ok(
        std::process::Command::new("cc")
            .arg(root.join("tests/c/pqc32.c"))
            .arg("-o")
            .arg(&exe)
            .arg("-ldl"),
        "cc tests/c/pqc32.c",
    );
    let out = run_ok(
        common::child_env(&mut std::process::Command::new(&exe))
            .arg(&h.module_path)
            .arg(dir.path())
            .args([
                "sign:mldsa-65:ML_DSA:firmware-v2",
                "sign:slh-128f:SLH_DSA",
                "deterministic:mldsa-65",
                &format!("exhaust:{lms_short}"),
                "verify-signature",
            ])
            .env("TSB_PKCS11_CONFIG", &h.config_path),
        "pqc32",
    );
    assert!(out.contains("interface PKCS 11 3.2"), "{out}");
    assert!(out.contains("mldsa-65 3309\n"), "{out}");
    assert!(out.contains("slh-128f 17088\n"), "{out}");
    let msg = b"pqc32 message";
    let sig = std::fs::read(dir.path().join("mldsa-65.sig")).unwrap();
    let ml = sets("mldsa-65");
    assert!(
        v.verifies(ml, "mldsa-65", msg, &sig, Some("firmware-v2")),
        "ML-DSA with the context verifies under it"
    );
    assert!(
        !v.verifies(ml, "mldsa-65", msg, &sig, Some("firmware-v3")),
        "and not under a wrong context"
    );
    assert!(
        !v.verifies(ml, "mldsa-65", msg, &sig, None),
        "nor without it"
    );
    let sig = std::fs::read(dir.path().join("slh-128f.sig")).unwrap();
    assert!(v.verifies(sets("slh-128f"), "slh-128f", msg, &sig, None));
    // CKR_MECHANISM_PARAM_INVALID (0x71): the TSB signs hedged.
    assert!(out.contains("deterministic 0x71\n"), "{out}");
    // 32 one-time signatures (H5), then CKR_KEY_EXHAUSTED (0x203).
    assert!(out.contains("exhausted 32 0x203\n"), "{out}");
    // CKR_FUNCTION_NOT_SUPPORTED (0x54).
    assert!(out.contains("verify-signature 0x54\n"), "{out}");
}
