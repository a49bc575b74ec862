//! OpenSC's `pkcs11-tool` (Debian package `opensc`) drives the built module in its own process:
//! listing, reading public keys, and signing with each mechanism. Signatures are verified with
//! the `openssl` command line against the simulator's copy of the public key.

use tsb_pkcs11_test_support as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{pkeyutl_verifies, Harness};

fn tool_available() -> bool {
    let ok = Command::new("pkcs11-tool").arg("--help").output().is_ok();
    if !ok {
        eprintln!("!!! pkcs11-tool not installed (Debian package opensc): SKIPPED — scripts/test.sh installs it");
    }
    ok
}

fn pkcs11_tool(h: &Harness, args: &[&str]) -> Output {
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&h.module_path)
        .args(args)
        .env("TSB_PKCS11_CONFIG", &h.config_path)
        // Not the log settings another test of this process may have set for a moment.
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .output()
        .expect("run pkcs11-tool");
    assert!(
        out.status.success(),
        "pkcs11-tool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The simulator's public key for `label`, written as DER for `openssl -keyform DER`.
fn public_der(h: &Harness, label: &str) -> PathBuf {
    let p = h.dir.path().join(format!("{label}.pub.der"));
    std::fs::write(&p, h.sim.public_key_der(label).unwrap()).unwrap();
    p
}

/// pkcs11-tool selects the signing key by `--id` (hex of CKA_ID): the demo keys' TSB ids.
fn id_of(label: &str) -> &'static str {
    match label {
        "rsa-2048" => "0001",
        "rsa-3072" => "0002",
        "rsa-4096" => "0003",
        "ec-p256" => "0004",
        "ec-p384" => "0005",
        "ec-p521" => "0006",
        "ed25519" => "0007",
        _ => panic!("no id for {label}"),
    }
}

#[test]
fn list_token_slots_and_objects() {
    if !tool_available() {
        return;
    }
    let h = Harness::new();
    let out = pkcs11_tool(&h, &["-L"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("token label        : TSB"), "{text}");
    assert!(text.contains("Securosys"), "{text}");
    let out = pkcs11_tool(&h, &["-O"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for label in [
        "rsa-2048",
        "rsa-4096",
        "ec-p256",
        "ec-p521",
        "ed25519",
        "ska-ec-p256",
    ] {
        assert!(
            text.contains(&format!("label:      {label}")),
            "{label} in:\n{text}"
        );
    }
    assert!(text.contains("Private Key Object; RSA"), "{text}");
    assert!(text.contains("Private Key Object; EC"), "{text}");
    assert!(
        !text.contains("decrypt-only-rsa"),
        "non-signing keys are left out"
    );
    let out = pkcs11_tool(&h, &["-M"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for m in ["SHA256-RSA-PKCS-PSS", "ECDSA-SHA384", "RSA-PKCS"] {
        assert!(text.contains(m), "{m} in:\n{text}");
    }
}

#[test]
fn read_public_keys() {
    if !tool_available() {
        return;
    }
    let h = Harness::new();
    for label in ["rsa-2048", "ec-p256"] {
        let out_path = h.dir.path().join(format!("{label}.read.der"));
        pkcs11_tool(
            &h,
            &[
                "--read-object",
                "--type",
                "pubkey",
                "--label",
                label,
                "-o",
                s(&out_path),
            ],
        );
        let read = std::fs::read(&out_path).unwrap();
        assert_eq!(
            read,
            h.sim.public_key_der(label).unwrap(),
            "{label}: SPKI read back"
        );
    }
}

#[test]
fn sign_with_each_mechanism_verified_by_openssl() {
    if !tool_available() {
        return;
    }
    let h = Harness::new();
    let data = h.dir.path().join("data.txt");
    std::fs::write(&data, b"signed through pkcs11-tool and the TSB simulator\n").unwrap();
    let sig = h.dir.path().join("sig.bin");
    let dgst = |alg: &str| -> PathBuf {
        let p = h.dir.path().join(format!("digest.{alg}"));
        let out = openssl(&[
            "dgst",
            &format!("-{alg}"),
            "-binary",
            "-out",
            s(&p),
            s(&data),
        ]);
        assert!(out.status.success());
        p
    };
    let verify = |label: &str, args: &[&str]| {
        let key = public_der(&h, label);
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["-keyform", "DER"]);
        let out = Command::new("openssl")
            .args(&a)
            .args(["-verify", s(&key), "-signature", s(&sig), s(&data)])
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
            "{label} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // RSA PKCS#1 v1.5 with each hash.
    for (mech, alg) in [
        ("SHA1-RSA-PKCS", "sha1"),
        ("SHA224-RSA-PKCS", "sha224"),
        ("SHA256-RSA-PKCS", "sha256"),
        ("SHA384-RSA-PKCS", "sha384"),
        ("SHA512-RSA-PKCS", "sha512"),
    ] {
        pkcs11_tool(
            &h,
            &[
                "--sign",
                "--id",
                id_of("rsa-2048"),
                "-m",
                mech,
                "-i",
                s(&data),
                "-o",
                s(&sig),
            ],
        );
        verify("rsa-2048", &["dgst", &format!("-{alg}")]);
    }
    // RSA-PSS with each hash.
    for (mech, alg) in [
        ("SHA256-RSA-PKCS-PSS", "sha256"),
        ("SHA384-RSA-PKCS-PSS", "sha384"),
        ("SHA512-RSA-PKCS-PSS", "sha512"),
    ] {
        pkcs11_tool(
            &h,
            &[
                "--sign",
                "--id",
                id_of("rsa-3072"),
                "-m",
                mech,
                "-i",
                s(&data),
                "-o",
                s(&sig),
            ],
        );
        verify(
            "rsa-3072",
            &[
                "dgst",
                &format!("-{alg}"),
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ],
        );
    }
    // ECDSA with each hash, DER output for openssl.
    for (label, mech, alg) in [
        ("ec-p256", "ECDSA-SHA256", "sha256"),
        ("ec-p384", "ECDSA-SHA384", "sha384"),
        ("ec-p521", "ECDSA-SHA512", "sha512"),
        ("ec-p256", "ECDSA-SHA1", "sha1"),
    ] {
        pkcs11_tool(
            &h,
            &[
                "--sign",
                "--id",
                id_of(label),
                "-m",
                mech,
                "--signature-format",
                "openssl",
                "-i",
                s(&data),
                "-o",
                s(&sig),
            ],
        );
        verify(label, &["dgst", &format!("-{alg}")]);
    }
    // CKM_ECDSA and CKM_RSA_PKCS over a digest the caller computed.
    let d = dgst("sha256");
    pkcs11_tool(
        &h,
        &[
            "--sign",
            "--id",
            id_of("ec-p384"),
            "-m",
            "ECDSA",
            "--signature-format",
            "openssl",
            "-i",
            s(&d),
            "-o",
            s(&sig),
        ],
    );
    assert!(pkeyutl_verifies(&h, "ec-p384", &d, &sig, &[]), "ec-p384");
    pkcs11_tool(
        &h,
        &[
            "--sign",
            "--id",
            id_of("rsa-4096"),
            "-m",
            "RSA-PKCS",
            "-i",
            s(&d),
            "-o",
            s(&sig),
        ],
    );
    assert!(pkeyutl_verifies(&h, "rsa-4096", &d, &sig, &[]), "rsa-4096");
    // Ed25519.
    pkcs11_tool(
        &h,
        &[
            "--sign",
            "--id",
            id_of("ed25519"),
            "-m",
            "EDDSA",
            "-i",
            s(&data),
            "-o",
            s(&sig),
        ],
    );
    assert!(
        pkeyutl_verifies(&h, "ed25519", &data, &sig, &["-rawin"]),
        "ed25519"
    );
}

/// `pkcs11-tool --test` (its self-test of digests, signatures, verification and random
/// numbers) ends without an error: the token answers `CKR_RANDOM_NO_RNG` (no `CKF_RNG`), which
/// pkcs11-tool takes as "no RNG", and lists the digest mechanisms it tests.
#[test]
fn pkcs11_tool_self_test_passes() {
    if !tool_available() {
        return;
    }
    // Keys that sign at once (no approval policy): the self-test signs with every RSA key.
    let h = Harness::with(
        tsb_sim::SimConfig::demo(),
        serde_json::json!({ "keys": ["rsa-2048", "ec-p256"] }),
    );
    let out = pkcs11_tool(&h, &["--test"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(text.contains("No errors"), "{text}");
    assert!(!text.to_lowercase().contains("error:"), "{text}");
    assert!(!text.contains("failed"), "{text}");
}

/// OpenSC's pkcs11-spy (the usual PKCS#11 tracer) loaded over the module: it writes its own
/// function list into the `CK_INTERFACE` that `C_GetInterface` returns (PKCS#11 v3.0 §5.4.6),
/// which crashed pkcs11-tool with SIGSEGV while the module kept that structure in read-only
/// memory. Listing and an ECDSA signature (checked with OpenSSL) go through the spy.
#[test]
fn pkcs11_spy_traces_the_module() {
    if !tool_available() {
        return;
    }
    let spy = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("pkcs11/pkcs11-spy.so"))
        .find(|p| p.exists());
    let Some(spy) = spy else {
        eprintln!("!!! pkcs11-spy.so not found (Debian package opensc): SKIPPED — scripts/test.sh installs it");
        return;
    };
    let h = Harness::new();
    let log = h.dir.path().join("spy.log");
    let data = h.dir.path().join("data.txt");
    std::fs::write(&data, b"signed through pkcs11-spy\n").unwrap();
    let sig = h.dir.path().join("sig.der");
    let run = |args: &[&str]| -> String {
        let out = common::child_env(&mut Command::new("pkcs11-tool"))
            .arg("--module")
            .arg(&spy)
            .args(args)
            .env("PKCS11SPY", &h.module_path)
            .env("PKCS11SPY_OUTPUT", &log)
            .env("TSB_PKCS11_CONFIG", &h.config_path)
            .output()
            .expect("run pkcs11-tool");
        assert!(
            out.status.success(),
            "pkcs11-tool over pkcs11-spy {args:?}: {:?}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = run(&["-L"]);
    assert!(listing.contains("token label        : TSB"), "{listing}");
    run(&[
        "--sign",
        "--id",
        id_of("ec-p256"),
        "-m",
        "ECDSA-SHA256",
        "--signature-format",
        "openssl",
        "-i",
        s(&data),
        "-o",
        s(&sig),
    ]);
    let key = public_der(&h, "ec-p256");
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-keyform",
        "DER",
        "-verify",
        s(&key),
        "-signature",
        s(&sig),
        s(&data),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = std::fs::read_to_string(&log).unwrap();
    for call in ["C_GetInterface", "C_SignInit", "C_Sign"] {
        assert!(trace.contains(call), "{call} in the spy's trace:\n{trace}");
    }
}
