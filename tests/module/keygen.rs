//! Key generation through PKCS#11 (`C_GenerateKeyPair` → `POST /v1/key`) and key deletion
//! (`C_DestroyObject`). Signatures made with the new keys are verified with OpenSSL against the
//! simulator's copy of the public key, never with the module.

use tsb_pkcs11_test_support as common;

use std::path::Path;
use std::process::{Command, Output};

use common::{pkeyutl_verifies, verify, Harness};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::Session;
use tsb_sim::{ApiKeys, AuthConfig, SimConfig};

fn small_sim() -> SimConfig {
    SimConfig {
        time_scale: 0.01,
        approved_execution_delay_ms: 20,
        keys: vec![tsb_sim::KeySpec::ed25519("existing")],
        ..SimConfig::default()
    }
}

fn tool_available() -> bool {
    let ok = Command::new("pkcs11-tool").arg("--help").output().is_ok();
    if !ok {
        eprintln!("!!! pkcs11-tool not installed (Debian package opensc): SKIPPED — scripts/test.sh installs it");
    }
    ok
}

fn pkcs11_tool(h: &Harness, args: &[&str]) -> Output {
    Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&h.module_path)
        .args(args)
        .env("TSB_PKCS11_CONFIG", &h.config_path)
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .output()
        .expect("run pkcs11-tool")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pkcs11_tool_generates_every_key_type_and_signs() {
    if !tool_available() {
        return;
    }
    let h = Harness::with(small_sim(), serde_json::json!({}));
    let data = h.dir.path().join("data.txt");
    std::fs::write(&data, b"a key made through pkcs11-tool\n").unwrap();
    let sig = h.dir.path().join("sig.bin");
    // (label, --key-type, -m for signing, openssl pkeyutl options, input is a digest)
    let cases: [(&str, &str, &str, &[&str]); 6] = [
        (
            "gen-rsa",
            "rsa:2048",
            "SHA256-RSA-PKCS",
            &["-rawin", "-digest", "sha256"],
        ),
        ("gen-p256", "EC:prime256v1", "ECDSA", &[]),
        ("gen-p384", "EC:secp384r1", "ECDSA", &[]),
        ("gen-p521", "EC:secp521r1", "ECDSA", &[]),
        ("gen-k256", "EC:secp256k1", "ECDSA", &[]),
        ("gen-ed", "EC:edwards25519", "EDDSA", &["-rawin"]),
    ];
    let digest = h.dir.path().join("digest.bin");
    std::fs::write(
        &digest,
        openssl::hash::hash(openssl::hash::MessageDigest::sha256(), b"digest input").unwrap(),
    )
    .unwrap();
    for (label, key_type, mech, extra) in cases {
        let out = ok(
            pkcs11_tool(
                &h,
                &[
                    "--keypairgen",
                    "--key-type",
                    key_type,
                    "--label",
                    label,
                    "--usage-sign",
                ],
            ),
            &format!("keypairgen {key_type}"),
        );
        assert!(out.contains(label), "{out}");
        assert!(
            h.sim.key_labels().iter().any(|l| l == label),
            "{label} on the TSB"
        );
        // The new key's CKA_ID is its label's bytes.
        let id_hex: String = label.bytes().map(|b| format!("{b:02x}")).collect();
        // pkcs11-tool signs raw ECDSA (r||s); OpenSSL wants DER: convert for EC.
        let input = if mech == "ECDSA" { &digest } else { &data };
        ok(
            pkcs11_tool(
                &h,
                &[
                    "--sign",
                    "--id",
                    &id_hex,
                    "-m",
                    mech,
                    "-i",
                    s(input),
                    "-o",
                    s(&sig),
                ]
                .into_iter()
                .chain(if mech == "ECDSA" {
                    vec!["--signature-format", "openssl"]
                } else {
                    vec![]
                })
                .collect::<Vec<_>>(),
            ),
            &format!("sign with {label}"),
        );
        assert!(pkeyutl_verifies(&h, label, input, &sig, extra), "{label}");
        // A signature over other data does not verify (the check can fail).
        std::fs::write(h.dir.path().join("other.bin"), b"other").unwrap();
        if mech != "ECDSA" {
            assert!(!pkeyutl_verifies(
                &h,
                label,
                &h.dir.path().join("other.bin"),
                &sig,
                extra
            ));
        }
    }
    // The same label again: refused, the key is unchanged.
    let before = h.sim.public_key_der("gen-p256").unwrap();
    let out = pkcs11_tool(
        &h,
        &[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "gen-p256",
            "--usage-sign",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CKR_TEMPLATE_INCONSISTENT"),
        "{out:?}"
    );
    assert_eq!(h.sim.public_key_der("gen-p256").unwrap(), before);
}

fn rw_session(h: &Harness) -> Session {
    h.pkcs11.open_rw_session(h.slot).expect("rw session")
}

fn rsa_templates(label: &str) -> (Vec<Attribute>, Vec<Attribute>) {
    (
        vec![
            Attribute::Token(true),
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
        vec![
            Attribute::Token(true),
            Attribute::Sign(true),
            Attribute::Sensitive(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )
}

#[test]
fn generated_keys_are_usable_at_once_and_templates_are_checked() {
    let h = Harness::with(small_sim(), serde_json::json!({}));
    let s = rw_session(&h);
    // Search first, so a cached "not there" could hide the new key.
    assert!(s
        .find_objects(&[Attribute::Label(b"fresh".to_vec())])
        .unwrap()
        .is_empty());
    let (public, private) = rsa_templates("fresh");
    let (pub_h, priv_h) = s
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .expect("generate");
    assert_eq!(h.find(&s, "fresh", ObjectClass::PRIVATE_KEY), priv_h);
    assert_eq!(h.find(&s, "fresh", ObjectClass::PUBLIC_KEY), pub_h);
    let msg = b"signed with a brand-new key";
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, priv_h, msg).unwrap();
    assert!(verify::rsa_pkcs1(
        &h.sim_public_key("fresh"),
        verify::Hash::Sha256,
        msg,
        &sig
    ));
    // The modulus the module shows is the TSB's key.
    let modulus = h.attr_bytes(&s, pub_h, cryptoki::object::AttributeType::Modulus);
    let sim_rsa = h.sim_public_key("fresh").rsa().unwrap();
    assert_eq!(modulus, sim_rsa.n().to_vec());

    // Refused templates, with the spec's codes; nothing is created.
    let rv = |public: Vec<Attribute>, private: Vec<Attribute>| match s.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &public,
        &private,
    ) {
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected an error, got {other:?}"),
    };
    use cryptoki::error::RvError::*;
    // What the TSB cannot store (CKA_DECRYPT it can: see pkcs11_tool_tutorial_key_generation).
    let (p, mut k) = rsa_templates("bad");
    k.push(Attribute::SignRecover(true));
    assert_eq!(rv(p, k), TemplateInconsistent);
    // CKA_EXTRACTABLE and CKA_SENSITIVE the TSB stores: as asked, reported truthfully.
    let (p, mut k) = rsa_templates("exportable");
    k.push(Attribute::Extractable(true));
    k[2] = Attribute::Sensitive(false);
    let (_, exportable) = s
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &p, &k)
        .expect("an extractable key is stored as asked");
    use cryptoki::object::AttributeType as A;
    let flags = |key| {
        s.get_attributes(key, &[A::Extractable, A::Sensitive])
            .expect("flags")
    };
    assert_eq!(
        flags(exportable),
        [Attribute::Extractable(true), Attribute::Sensitive(false)]
    );
    assert_eq!(
        flags(priv_h),
        [Attribute::Extractable(false), Attribute::Sensitive(true)]
    );
    let (mut p, k) = rsa_templates("bad");
    p[0] = Attribute::Token(false);
    assert_eq!(rv(p, k), TemplateInconsistent);
    let (mut p, k) = rsa_templates("bad");
    p[1] = Attribute::ModulusBits(1024.into());
    assert_eq!(rv(p, k), AttributeValueInvalid);
    let (mut p, k) = rsa_templates("bad");
    p[2] = Attribute::PublicExponent(vec![3]);
    assert_eq!(rv(p, k), AttributeValueInvalid);
    let (p, k) = rsa_templates("existing");
    assert_eq!(rv(p, k), TemplateInconsistent);
    assert!(!h.sim.key_labels().iter().any(|l| l == "bad"));
    // Without CKA_LABEL a token key gets a generated label.
    let (mut p, mut k) = rsa_templates("bad");
    p.retain(|a| !matches!(a, Attribute::Label(_)));
    k.retain(|a| !matches!(a, Attribute::Label(_)));
    let (_, unlabelled) = s
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &p, &k)
        .expect("generate without CKA_LABEL");
    let label = h.attr_bytes(&s, unlabelled, cryptoki::object::AttributeType::Label);
    let label = String::from_utf8(label).unwrap();
    assert!(label.starts_with("key-"), "{label}");
    assert!(h.sim.key_labels().contains(&label));

    // An unknown curve.
    let ec = s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::EcParams(vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21]), // P-224
            Attribute::Label(b"p224".to_vec()),
        ],
        &[Attribute::Sign(true)],
    );
    assert!(matches!(
        ec,
        Err(cryptoki::error::Error::Pkcs11(CurveNotSupported, _))
    ));

    // A read-only session cannot generate.
    let ro = h.session();
    let (p, k) = rsa_templates("ro");
    assert!(matches!(
        ro.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &p, &k),
        Err(cryptoki::error::Error::Pkcs11(SessionReadOnly, _))
    ));
}

#[test]
fn mechanisms_list_generation_with_sizes() {
    let h = Harness::with(small_sim(), serde_json::json!({}));
    let list = h.pkcs11.get_mechanism_list(h.slot).unwrap();
    for (m, min, max) in [
        (
            cryptoki::mechanism::MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            2048,
            4096,
        ),
        (
            cryptoki::mechanism::MechanismType::ECC_KEY_PAIR_GEN,
            256,
            521,
        ),
        (
            cryptoki::mechanism::MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            256,
            256,
        ),
    ] {
        assert!(list.contains(&m), "{m:?} listed");
        let info = h.pkcs11.get_mechanism_info(h.slot, m).unwrap();
        assert!(info.generate_key_pair(), "{m:?}");
        assert!(!info.sign(), "{m:?} does not sign");
        assert_eq!((info.min_key_size(), info.max_key_size()), (min, max));
    }
    let token = h.pkcs11.get_token_info(h.slot).unwrap();
    assert!(!token.write_protected());
}

#[test]
fn keys_cannot_be_deleted_without_allow_key_deletion() {
    let h = Harness::with(small_sim(), serde_json::json!({}));
    let s = rw_session(&h);
    let key = h.private_key(&s, "existing");
    assert_eq!(
        s.get_attributes(key, &[cryptoki::object::AttributeType::Destroyable])
            .unwrap(),
        vec![Attribute::Destroyable(false)],
        "not destroyable without pkcs11.allowKeyDeletion"
    );
    match s.destroy_object(key) {
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => {
            assert_eq!(rv, cryptoki::error::RvError::ActionProhibited)
        }
        other => panic!("{other:?}"),
    }
    assert!(h.sim.key_labels().iter().any(|l| l == "existing"));
}

#[test]
fn generation_without_the_key_management_role_is_a_clear_error() {
    let mut cfg = small_sim();
    cfg.auth = AuthConfig {
        bearer_token: None,
        api_keys: ApiKeys {
            key_management: vec!["km-right".into()],
            key_operation: vec![],
            service: vec![],
        },
    };
    let h = Harness::with_config(cfg, |url| {
        serde_json::json!({
            "restApi": url,
            "apiKeys": {"KeyManagementToken": ["km-wrong"]},
            "pkcs11": {"keys": ["existing", "new-key"]},
        })
    });
    let s = rw_session(&h);
    let (p, k) = rsa_templates("new-key");
    match s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &p, &k) {
        // A configured API key the TSB refuses: the credentials are not good enough.
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => {
            assert_eq!(rv, cryptoki::error::RvError::UserNotLoggedIn)
        }
        other => panic!("{other:?}"),
    }
    assert!(!h.sim.key_labels().iter().any(|l| l == "new-key"));
}

fn ec_templates(label: &str) -> (Vec<Attribute>, Vec<Attribute>) {
    (
        vec![
            // P-256
            Attribute::EcParams(vec![
                0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
            ]),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
        vec![Attribute::Sign(true), Attribute::Token(true)],
    )
}

/// The TSB labels of the temporary keys (session key pairs) on the simulator.
fn temporary_keys(h: &Harness) -> Vec<String> {
    h.sim
        .key_labels()
        .into_iter()
        .filter(|l| l.starts_with("tsb-pkcs11-session-"))
        .collect()
}

/// PKCS#11 v3.0 §4.4: without CKA_TOKEN, C_GenerateKeyPair makes a session key pair (also in a
/// read-only session). It signs (verified by OpenSSL against the simulator's copy of the key),
/// and closing its session leaves no TSB key behind; nor does C_Finalize.
#[test]
fn session_key_pairs_leave_no_tsb_key_behind() {
    let h = Harness::with(small_sim(), serde_json::json!({}));
    let before = h.sim.key_labels();
    let s = h.session();
    let mut p = ec_templates("session-pair").0;
    p.push(Attribute::Verify(true));
    let (pub_h, priv_h) = s
        .generate_key_pair(&Mechanism::EccKeyPairGen, &p, &[Attribute::Sign(true)])
        .expect("a session key pair in a read-only session");
    let created = temporary_keys(&h);
    assert_eq!(created.len(), 1, "{:?}", h.sim.key_labels());
    assert!(
        !h.sim.key_labels().iter().any(|l| l == "session-pair"),
        "no persistent key named after CKA_LABEL"
    );
    match s
        .get_attributes(pub_h, &[cryptoki::object::AttributeType::Token])
        .unwrap()
        .pop()
    {
        Some(Attribute::Token(t)) => assert!(!t, "CKA_TOKEN false"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.attr_bytes(&s, priv_h, cryptoki::object::AttributeType::Label),
        b"session-pair"
    );
    let digest = openssl::sha::sha256(b"session key");
    let sig = s.sign(&Mechanism::Ecdsa, priv_h, &digest).unwrap();
    assert!(verify::ecdsa_digest(
        &h.sim_public_key(&created[0]),
        &digest,
        &sig
    ));
    drop(s); // C_CloseSession
    assert!(
        temporary_keys(&h).is_empty(),
        "deleted when its session closed"
    );

    let s = h.session();
    s.generate_key_pair(&Mechanism::EccKeyPairGen, &p, &[Attribute::Sign(true)])
        .unwrap();
    assert_eq!(temporary_keys(&h).len(), 1);
    h.reinitialize(); // C_Finalize, C_Initialize
    assert!(temporary_keys(&h).is_empty(), "deleted by C_Finalize");
    assert_eq!(h.sim.key_labels(), before);
}

#[test]
fn keys_are_deleted_when_allowed() {
    let h = Harness::with(small_sim(), serde_json::json!({"allowKeyDeletion": true}));
    let s = rw_session(&h);
    let (p, k) = ec_templates("doomed");
    let (pub_h, priv_h) = s
        .generate_key_pair(&Mechanism::EccKeyPairGen, &p, &k)
        .unwrap();
    let destroyable = |h| match s
        .get_attributes(h, &[cryptoki::object::AttributeType::Destroyable])
        .unwrap()
        .pop()
    {
        Some(Attribute::Destroyable(d)) => d,
        other => panic!("{other:?}"),
    };
    assert!(
        destroyable(priv_h) && !destroyable(pub_h),
        "CKA_DESTROYABLE is true on the private key object, false on the public one"
    );
    // Destroying the public key object would delete the pair on the TSB: refused, and the
    // private key still signs (verified by OpenSSL against the simulator's key).
    assert!(matches!(
        s.destroy_object(pub_h),
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::ActionProhibited,
            _
        ))
    ));
    let digest = openssl::sha::sha256(b"after destroying the public key");
    let sig = s.sign(&Mechanism::Ecdsa, priv_h, &digest).unwrap();
    assert!(verify::ecdsa_digest(
        &h.sim_public_key("doomed"),
        &digest,
        &sig
    ));
    s.destroy_object(priv_h).expect("deleted");
    assert!(
        !h.sim.key_labels().iter().any(|l| l == "doomed"),
        "gone on the TSB"
    );
    // Both objects of the pair are gone.
    for handle in [priv_h, pub_h] {
        assert!(matches!(
            s.get_attributes(handle, &[cryptoki::object::AttributeType::Label]),
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::ObjectHandleInvalid,
                _
            ))
        ));
    }
    assert!(matches!(
        s.sign_init(&Mechanism::Ecdsa, priv_h),
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::KeyHandleInvalid
                | cryptoki::error::RvError::ObjectHandleInvalid,
            _
        ))
    ));
    assert!(s
        .find_objects(&[Attribute::Label(b"doomed".to_vec())])
        .unwrap()
        .is_empty());
    // The label can be used again: a new key.
    let (p, k) = ec_templates("doomed");
    s.generate_key_pair(&Mechanism::EccKeyPairGen, &p, &k)
        .expect("the label is free again");

    // A key created with CKA_DESTROYABLE false: the TSB refuses to delete it.
    let (p, mut k) = ec_templates("keeper");
    k.push(Attribute::Destroyable(false));
    let (_, keeper) = s
        .generate_key_pair(&Mechanism::EccKeyPairGen, &p, &k)
        .unwrap();
    assert!(
        !destroyable(keeper),
        "CKA_DESTROYABLE shows the TSB's destroyable false"
    );
    assert!(matches!(
        s.destroy_object(keeper),
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::ActionProhibited,
            _
        ))
    ));
    assert!(h.sim.key_labels().iter().any(|l| l == "keeper"));
}

#[test]
fn new_keys_get_the_configured_policy_and_sign_after_approval() {
    let approvers = serde_json::json!({"tokens": [{"name": "main", "timelock": 0, "timeout": 0,
        "groups": [{"name": "board", "quorum": 1, "approvals": [
            {"type": "onboarded_approver_certificate", "name": "alice"}]}]}]});
    let h = Harness::with(
        small_sim(),
        serde_json::json!({
            "policyProfiles": {"board": {"ruleUse": approvers}},
        }),
    );
    let s = rw_session(&h);
    // Without a profile: the empty policy, signs at once.
    let (p, k) = ec_templates("plain-new");
    let (_, plain) = s
        .generate_key_pair(&Mechanism::EccKeyPairGen, &p, &k)
        .unwrap();
    let digest = openssl::sha::sha256(b"m");
    let sig = s.sign(&Mechanism::Ecdsa, plain, &digest).unwrap();
    assert!(verify::ecdsa_digest(
        &h.sim_public_key("plain-new"),
        &digest,
        &sig
    ));
    assert!(
        h.sim.requests().iter().all(|r| r.id.is_none()),
        "no approval request"
    );

    // With the profile: the key needs alice's approval.
    let (p, mut k) = ec_templates("board-key");
    k.push(vendor_profile("board"));
    let (_, key) = s
        .generate_key_pair(&Mechanism::EccKeyPairGen, &p, &k)
        .unwrap();
    let sim = &h.sim;
    let approver = std::thread::scope(|scope| {
        let t = scope.spawn(|| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                if let Some(id) = sim
                    .requests()
                    .into_iter()
                    .find(|r| r.key == "board-key")
                    .and_then(|r| r.id)
                {
                    sim.approve(&id, "alice").unwrap();
                    return id;
                }
                assert!(std::time::Instant::now() < deadline, "no approval request");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        let sig = s
            .sign(&Mechanism::Ecdsa, key, &digest)
            .expect("signed after approval");
        assert!(verify::ecdsa_digest(
            &h.sim_public_key("board-key"),
            &digest,
            &sig
        ));
        t.join().unwrap()
    });
    assert_eq!(h.sim.request_status(&approver).as_deref(), Some("EXECUTED"));

    // An unknown profile.
    let (p, mut k) = ec_templates("nope");
    k.push(vendor_profile("nobody"));
    assert!(matches!(
        s.generate_key_pair(&Mechanism::EccKeyPairGen, &p, &k),
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::AttributeValueInvalid,
            _
        ))
    ));
}

/// `CKA_VENDOR_DEFINED | 0x54530003`: the policy profile of a new key.
fn vendor_profile(name: &str) -> Attribute {
    let t = cryptoki_sys::CKA_VENDOR_DEFINED | 0x5453_0003;
    Attribute::VendorDefined((
        cryptoki::object::AttributeType::VendorDefined(t),
        name.as_bytes().to_vec(),
    ))
}

/// The Python interpreter with python-pkcs11: `TSB_PYTHON`, else the venv scripts/test.sh
/// fills (`target/compat-venv`).
fn python_with_pkcs11() -> Option<std::path::PathBuf> {
    let candidates = std::env::var_os("TSB_PYTHON")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compat-venv/bin/python")]);
    for p in candidates {
        let ok = Command::new(&p)
            .args(["-c", "import pkcs11"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(p);
        }
    }
    eprintln!("!!! python-pkcs11 not found (TSB_PYTHON or target/compat-venv): SKIPPED — scripts/test.sh installs it");
    None
}

#[test]
fn python_pkcs11_generates_key_pairs() {
    let Some(python) = python_with_pkcs11() else {
        return;
    };
    let h = Harness::with(small_sim(), serde_json::json!({}));
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/keygen.py"))
        .arg(&h.module_path)
        .arg(h.dir.path())
        .env("TSB_PKCS11_CONFIG", &h.config_path)
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .output()
        .unwrap();
    let text = ok(out, "tests/python/keygen.py");
    assert!(text.contains("signed with py-default"), "{text}");
    assert!(text.contains("signed with a session key pair"), "{text}");
    assert!(
        temporary_keys(&h).is_empty(),
        "the session key pair left nothing on the TSB: {:?}",
        h.sim.key_labels()
    );
    let default = h.sim.key_attributes_json("py-default").unwrap();
    for flag in ["sign", "decrypt", "unwrap"] {
        assert_eq!(default["attributes"][flag], true, "{flag}: {default}");
    }
    let sig = std::fs::read(h.dir.path().join("py-default.sig")).unwrap();
    assert!(verify::rsa_pkcs1(
        &h.sim_public_key("py-default"),
        verify::Hash::Sha256,
        b"python-pkcs11",
        &sig
    ));
    let generated = text
        .lines()
        .find_map(|l| l.strip_prefix("generated label "))
        .expect("a generated label");
    let sig = std::fs::read(h.dir.path().join("py-nolabel.sig")).unwrap();
    assert!(verify::ecdsa_digest(
        &h.sim_public_key(generated),
        &openssl::sha::sha384(b"python-pkcs11"),
        &sig
    ));
    let msg = b"python-pkcs11";
    let sig = std::fs::read(h.dir.path().join("py-rsa.sig")).unwrap();
    assert!(verify::rsa_pkcs1(
        &h.sim_public_key("py-rsa"),
        verify::Hash::Sha256,
        msg,
        &sig
    ));
    let sig = std::fs::read(h.dir.path().join("py-p384.sig")).unwrap();
    let digest = openssl::sha::sha384(msg);
    assert!(verify::ecdsa_digest(
        &h.sim_public_key("py-p384"),
        &digest,
        &sig
    ));
}

/// The module's WARN lines in a pkcs11-tool run (the module logs to stderr, `warn` by default).
fn warn_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(" WARN "))
        .map(str::to_string)
        .collect()
}

/// Issue 22 items 2 and 3: the tutorials' commands, exactly: `--keypairgen` with pkcs11-tool's
/// default usage flags (no `--usage-sign`), with and without `--id`, for RSA, EC and Ed25519;
/// the key is then found by `--id` (its CKA_ID is the TSB key's `id`) or by its label, and
/// signs (verified by OpenSSL). A successful generation writes no WARN line; a refusal writes
/// exactly one, naming the attribute and the reason.
#[test]
fn pkcs11_tool_tutorial_key_generation() {
    if !tool_available() {
        return;
    }
    let h = Harness::with(small_sim(), serde_json::json!({}));
    let data = h.dir.path().join("data.txt");
    std::fs::write(&data, b"tutorial\n").unwrap();
    let digest = h.dir.path().join("digest.bin");
    std::fs::write(
        &digest,
        openssl::hash::hash(openssl::hash::MessageDigest::sha256(), b"tutorial").unwrap(),
    )
    .unwrap();
    let sig = h.dir.path().join("sig.bin");
    // (label, --key-type, --id, -m, openssl pkeyutl options)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, &'a [&'a str]);
    let cases: [Case; 6] = [
        (
            "tut-rsa",
            "rsa:2048",
            Some("01"),
            "SHA256-RSA-PKCS",
            &["-rawin", "-digest", "sha256"],
        ),
        ("tut-ec", "EC:prime256v1", Some("02"), "ECDSA", &[]),
        (
            "tut-ed",
            "EC:edwards25519",
            Some("a0b1"),
            "EDDSA",
            &["-rawin"],
        ),
        (
            "tut-rsa-noid",
            "rsa:2048",
            None,
            "SHA256-RSA-PKCS",
            &["-rawin", "-digest", "sha256"],
        ),
        ("tut-ec-noid", "EC:prime256v1", None, "ECDSA", &[]),
        ("tut-ed-noid", "EC:edwards25519", None, "EDDSA", &["-rawin"]),
    ];
    for (label, key_type, id, mech, extra) in cases {
        let mut args = vec!["--keypairgen", "--key-type", key_type, "--label", label];
        if let Some(id) = id {
            args.extend(["--id", id]);
        }
        let out = pkcs11_tool(&h, &args);
        assert!(
            warn_lines(&out).is_empty(),
            "{label}: no WARN line: {:?}",
            warn_lines(&out)
        );
        ok(out, &format!("keypairgen {key_type} {label}"));
        let attrs = h
            .sim
            .key_attributes_json(label)
            .expect("the key is on the TSB");
        // The TSB id is the CKA_ID's bytes in lowercase hex.
        assert_eq!(attrs["id"].as_str(), id, "{label}: {attrs}");
        let input = if mech == "ECDSA" { &digest } else { &data };
        let mut sign = vec!["--sign", "-m", mech, "-i", s(input), "-o", s(&sig)];
        // Without an id, CKA_ID is the label's bytes (pkcs11-tool --sign selects by --id).
        let label_hex: String = label.bytes().map(|b| format!("{b:02x}")).collect();
        sign.extend(["--id", id.unwrap_or(&label_hex)]);
        if mech == "ECDSA" {
            sign.extend(["--signature-format", "openssl"]);
        }
        ok(pkcs11_tool(&h, &sign), &format!("sign with {label}"));
        assert!(pkeyutl_verifies(&h, label, input, &sig, extra), "{label}");
    }
    // The objects list shows the ids.
    let listed = ok(pkcs11_tool(&h, &["--list-objects"]), "list objects");
    assert!(listed.contains("ID:         01"), "{listed}");
    assert!(listed.contains("ID:         a0b1"), "{listed}");
    // A refusal: the label is in use. One WARN line naming the attribute and the reason.
    let out = pkcs11_tool(
        &h,
        &[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "tut-ec",
        ],
    );
    assert!(!out.status.success());
    let warned = warn_lines(&out);
    assert_eq!(warned.len(), 1, "one WARN line: {warned:#?}");
    assert!(
        warned[0].contains("CKA_LABEL") && warned[0].contains("already exists"),
        "{}",
        warned[0]
    );
    // Deletion without pkcs11.allowKeyDeletion, and an object the token does not create: one
    // WARN line each, naming the object or attribute and the reason.
    let out = pkcs11_tool(&h, &["--delete-object", "--type", "privkey", "--id", "01"]);
    assert!(!out.status.success());
    let warned = warn_lines(&out);
    assert_eq!(warned.len(), 1, "one WARN line: {warned:#?}");
    assert!(
        warned[0].contains("C_DestroyObject") && warned[0].contains("allowKeyDeletion"),
        "{}",
        warned[0]
    );
    assert!(h.sim.key_labels().iter().any(|l| l == "tut-rsa"));
    let out = pkcs11_tool(
        &h,
        &["--write-object", s(&data), "--type", "data", "--label", "d"],
    );
    assert!(!out.status.success());
    let warned = warn_lines(&out);
    assert_eq!(warned.len(), 1, "one WARN line: {warned:#?}");
    assert!(
        warned[0].contains("C_CreateObject") && warned[0].contains("CKA_CLASS"),
        "{}",
        warned[0]
    );
}

/// Issue 22 item 3: Java's `KeyPairGenerator` through SunPKCS11 (session key pairs with
/// SunPKCS11's default attributes) generates EC and RSA keys that sign; the signatures are
/// verified by OpenSSL with the public keys Java read.
#[test]
fn java_key_pair_generator_generates_key_pairs() {
    if Command::new("java").arg("-version").output().is_err() {
        eprintln!("!!! java not installed: SKIPPED — scripts/test.sh installs it");
        return;
    }
    let h = Harness::with(small_sim(), serde_json::json!({}));
    let cfg = h.dir.path().join("java-pkcs11.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = TSB\nlibrary = {}\nslotListIndex = 0\n",
            h.module_path.display()
        ),
    )
    .unwrap();
    let out = Command::new("java")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/KeyGen.java"))
        .arg(&cfg)
        .arg(h.dir.path())
        .env("TSB_PKCS11_CONFIG", &h.config_path)
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .output()
        .unwrap();
    let text = ok(out, "tests/java/KeyGen.java");
    let msg = h.dir.path().join("java.txt");
    std::fs::write(&msg, b"java").unwrap();
    for (name, extra) in [
        ("ec", &["-rawin", "-digest", "sha256"][..]),
        ("rsa", &["-rawin", "-digest", "sha256"][..]),
    ] {
        assert!(
            text.contains(&format!("signed with a generated {name} key")),
            "{text}"
        );
        let key = h.dir.path().join(format!("java-{name}.pub.der"));
        let sig = h.dir.path().join(format!("java-{name}.sig"));
        let verified = Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey"])
            .arg(&key)
            .args(extra)
            .arg("-in")
            .arg(&msg)
            .arg("-sigfile")
            .arg(&sig)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&verified.stdout).contains("Verified Successfully"),
            "{name}: {verified:?}"
        );
    }
    // The JVM exits without C_Finalize (SunPKCS11 never finalizes the library), so the
    // temporary keys of these session key pairs stay on the TSB: not asserted here.
}

/// Runs a JDK tool (`keytool`, `jarsigner`) with the module's configuration.
fn jdk_tool(h: &Harness, tool: &str, args: &[&str]) -> Output {
    common::child_env(&mut Command::new(tool))
        .args(args)
        .env("TSB_PKCS11_CONFIG", &h.config_path)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

/// The public key (DER SubjectPublicKeyInfo) of a PEM certificate or request, read by OpenSSL.
fn openssl_public_key(kind: &str, pem: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args([kind, "-noout", "-pubkey", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    let pem = ok(out, "openssl -pubkey");
    openssl::pkey::PKey::public_key_from_pem(pem.as_bytes())
        .unwrap()
        .public_key_to_der()
        .unwrap()
}

/// Issue 22 item 3: Java keytool through SunPKCS11, as Oracle's PKCS#11 guide writes it.
/// keytool generates a session key pair and SunPKCS11's key store then copies it to a token
/// object under the alias (`C_CopyObject` with `CKA_TOKEN` true and `CKA_ID` = alias); the TSB
/// cannot rename a key, so that copy is refused with one WARN line naming `C_CopyObject` and
/// the way out. With the configuration docs/clients.md gives (generate token keys labelled with
/// the alias), keytool makes the key on the TSB under the alias, `keytool -list` shows it,
/// jarsigner signs with it (checked by `jarsigner -verify`, which uses the JDK's own
/// providers, and the certificate's key is the TSB key), and `keytool -certreq` writes an
/// RSA request that OpenSSL verifies.
#[test]
fn java_keytool_generates_keys_under_their_alias_and_signs() {
    if Command::new("keytool").arg("-help").output().is_err() {
        eprintln!("!!! keytool not installed: SKIPPED — scripts/test.sh installs it");
        return;
    }
    let h = Harness::with(small_sim(), serde_json::json!({}));
    let dir = h.dir.path();
    let cfg = |name: &str, alias: Option<&str>| -> String {
        let mut text = format!(
            "name = TSB\nlibrary = {}\nslotListIndex = 0\n",
            h.module_path.display()
        );
        if let Some(alias) = alias {
            text.push_str(&format!(
                "attributes(generate, *, *) = {{\n  CKA_TOKEN = true\n  CKA_LABEL = 0h{}\n}}\n",
                hex::encode(alias)
            ));
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let keystore = |cfg: &str| -> Vec<String> {
        [
            "-keystore",
            "NONE",
            "-storetype",
            "PKCS11",
            "-providerClass",
            "sun.security.pkcs11.SunPKCS11",
            "-providerArg",
            cfg,
            "-storepass",
            "1234",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |tool: &str, cfg: &str, args: &[&str]| -> Output {
        let mut all = keystore(cfg);
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        jdk_tool(&h, tool, &all)
    };
    let plain = cfg("plain.cfg", None);

    // Oracle's guide, verbatim: refused at C_CopyObject with one WARN line, nothing stored.
    let out = run(
        "keytool",
        &plain,
        &[
            "-genkeypair",
            "-alias",
            "guide",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-dname",
            "CN=test",
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    let warned = warn_lines(&out);
    assert_eq!(warned.len(), 1, "one WARN line: {warned:#?}");
    assert!(
        warned[0].contains("C_CopyObject")
            && warned[0].contains("CKA_COPYABLE")
            && warned[0].contains("docs/clients.md"),
        "{}",
        warned[0]
    );
    assert!(!h.sim.key_labels().iter().any(|l| l == "guide"));

    // EC P-256 with the documented configuration: generated under the alias, listed, signs.
    let ec_cfg = cfg("ec.cfg", Some("mykey"));
    let generate = |cfg: &str, alias: &str, alg: &[&str]| {
        let mut args = vec![
            "-genkeypair",
            "-providerName",
            "SunPKCS11-TSB",
            "-alias",
            alias,
            "-dname",
            "CN=test",
        ];
        args.extend_from_slice(alg);
        let out = run("keytool", cfg, &args);
        ok(out.clone(), &format!("keytool -genkeypair {alias}"));
        assert!(warn_lines(&out).is_empty(), "{out:?}");
    };
    generate(
        &ec_cfg,
        "mykey",
        &["-keyalg", "EC", "-groupname", "secp256r1"],
    );
    assert!(h.sim.key_labels().iter().any(|l| l == "mykey"));
    let listing = ok(run("keytool", &plain, &["-list"]), "keytool -list");
    assert!(listing.contains("mykey, PrivateKeyEntry"), "{listing}");
    let cert = dir.join("mykey.pem");
    ok(
        run(
            "keytool",
            &plain,
            &[
                "-exportcert",
                "-rfc",
                "-alias",
                "mykey",
                "-file",
                cert.to_str().unwrap(),
            ],
        ),
        "keytool -exportcert",
    );
    assert_eq!(
        openssl_public_key("x509", &cert),
        h.sim_public_key("mykey").public_key_to_der().unwrap(),
        "the certificate holds the TSB key"
    );
    let content = dir.join("hello.txt");
    std::fs::write(&content, b"signed by a TSB key through jarsigner\n").unwrap();
    let jar = dir.join("hello.jar");
    let zipped = Command::new("jar")
        .arg("cf")
        .arg(&jar)
        .arg("-C")
        .arg(dir)
        .arg("hello.txt")
        .output()
        .unwrap();
    ok(zipped, "jar cf");
    let signed = dir.join("signed.jar");
    ok(
        run(
            "jarsigner",
            &plain,
            &[
                "-signedjar",
                signed.to_str().unwrap(),
                jar.to_str().unwrap(),
                "mykey",
            ],
        ),
        "jarsigner",
    );
    let verified = ok(
        Command::new("jarsigner")
            .args(["-verify", "-certs"])
            .arg(&signed)
            .output()
            .unwrap(),
        "jarsigner -verify",
    );
    assert!(verified.contains("jar verified."), "{verified}");

    // RSA 2048: keytool -certreq signs a PKCS#10 request that OpenSSL verifies.
    let rsa_cfg = cfg("rsa.cfg", Some("myrsa"));
    generate(&rsa_cfg, "myrsa", &["-keyalg", "RSA", "-keysize", "2048"]);
    let csr = dir.join("myrsa.csr");
    ok(
        run(
            "keytool",
            &plain,
            &[
                "-certreq",
                "-alias",
                "myrsa",
                "-file",
                csr.to_str().unwrap(),
            ],
        ),
        "keytool -certreq",
    );
    let checked = Command::new("openssl")
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&csr)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains("verify OK")
            || String::from_utf8_lossy(&checked.stdout).contains("verify OK"),
        "{checked:?}"
    );
    assert_eq!(
        openssl_public_key("req", &csr),
        h.sim_public_key("myrsa").public_key_to_der().unwrap()
    );
}

#[test]
fn keys_are_read_and_deleted_by_body_with_a_fallback_per_node() {
    let cfg = SimConfig {
        keys: vec![
            tsb_sim::KeySpec::ec("pw-key", tsb_sim::Curve::P256).with_password("secret-pw"),
            tsb_sim::KeySpec::ed25519("plain-a"),
            tsb_sim::KeySpec::ed25519("plain-b"),
        ],
        ..small_sim()
    };
    let h = Harness::with(
        cfg,
        serde_json::json!({"allowKeyDeletion": true, "keyPasswords": {"pw-key": "secret-pw"}}),
    );
    let s = rw_session(&h);
    // Attributes are read with POST /v1/key/attributes, as Securosys' clients do.
    let pw_key = h.private_key(&s, "pw-key");
    assert!(h.sim.counter("POST /v1/key/attributes") >= 1);
    assert_eq!(h.sim.counter("GET /v1/key/attributes"), 0);
    // A key with a password is deleted with POST /v1/key/deleteKey (carrying the password).
    s.destroy_object(pw_key).expect("deleted");
    assert_eq!(h.sim.counter("POST /v1/key/deleteKey"), 1);
    assert_eq!(h.sim.counter("DELETE /v1/key"), 0);
    assert!(!h.sim.key_labels().iter().any(|l| l == "pw-key"));
    drop(s);

    // A TSB that does not know the POST form (405): one POST, then GET for every read.
    h.reinitialize();
    h.sim.inject(tsb_sim::Fault::unknown_endpoint(
        "POST /v1/key/attributes",
        405,
    ));
    h.sim.reset_counters();
    let s = h.session();
    h.private_key(&s, "plain-a");
    h.private_key(&s, "plain-b");
    assert_eq!(h.sim.counter("POST /v1/key/attributes"), 1, "tried once");
    assert!(h.sim.counter("GET /v1/key/attributes") >= 2);
    h.sim.clear_faults();
}
