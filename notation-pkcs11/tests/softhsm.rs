//! End-to-end tests: the built `notation-pkcs11` binary driven exactly as Notation drives
//! it, against SoftHSM2. Each test gets its own SoftHSM config and token directory.
//! Signatures and JWS envelopes are verified with OpenSSL, independently of the plugin.
//!
//! If SoftHSM2 is not installed, these tests print a loud SKIPPED banner and pass.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

/// A fresh SoftHSM, or return from the test (after the banner) if it is not installed.
macro_rules! softhsm {
    () => {
        match SoftHsm::new() {
            Some(h) => h,
            None => return,
        }
    };
}

/// Generates a key of `key_type` labelled `label` (id `id`) and stores a certificate for
/// it issued by `ca`; returns the certificate.
fn key_with_cert(
    hsm: &SoftHsm,
    ca: &Ca,
    key_type: &str,
    label: &str,
    id: &str,
) -> openssl::x509::X509 {
    hsm.keygen(key_type, label, id);
    let cert = ca.issue(&format!("leaf {label}"), &hsm.public_key(id));
    hsm.write_cert(&cert, id, label);
    cert
}

/// The full signing flow for one key spec: describe-key, then generate-signature over a
/// JWS signing input, then independent checks of the signature, chain and envelope.
fn sign_and_verify(spec_index: usize) {
    let (spec, hash, alg, jws_alg_name, key_type, field_len) = SPECS[spec_index];
    let hsm = softhsm!();
    let root = code_signing_root("Test Root");
    let leaf_cert = key_with_cert(&hsm, &root, key_type, "signer", "01");
    hsm.write_cert(&root.cert, "a0", "root");
    let t = &hsm.target;

    let described = t.describe_key("signer").ok();
    assert_eq!(described, json!({"keyId": "signer", "keySpec": spec}));

    let jws = JwsToSign::new(jws_alg(alg));
    assert_eq!(jws_alg(alg), jws_alg_name);
    let resp = t
        .generate_signature("signer", spec, hash, &jws.signing_input)
        .ok();
    assert_eq!(resp["keyId"], "signer");
    assert_eq!(resp["signingAlgorithm"], alg);
    let obj = resp.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["certificateChain", "keyId", "signature", "signingAlgorithm"]
    );

    // Chain: leaf (the certificate stored for the key) then root, all DER.
    let chain = decode_chain(&resp);
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].to_der().unwrap(), leaf_cert.to_der().unwrap());
    assert_eq!(chain[1].to_der().unwrap(), root.cert.to_der().unwrap());
    assert_chain_ordered(&chain);

    // Signature over exactly the payload, verified by OpenSSL with the leaf's key.
    let sig = STANDARD
        .decode(resp["signature"].as_str().unwrap())
        .unwrap();
    if field_len > 0 {
        assert_eq!(sig.len(), 2 * field_len, "ECDSA signature must be r‖s");
    }
    assert!(openssl_verify(&chain[0], alg, &jws.signing_input, &sig));
    assert!(!openssl_verify(&chain[0], alg, b"another payload", &sig));

    // The JWS envelope Notation would assemble verifies independently.
    let envelope = jws.envelope(&resp);
    assert!(verify_jws_envelope(&envelope), "JWS does not verify");
}

#[test]
fn get_plugin_metadata() {
    for stdin in [
        &b"{}"[..],
        br#"{"pluginConfig":{"module":"/nonexistent.so"}}"#,
        b"",
    ] {
        let v = run_plugin(&["get-plugin-metadata"], stdin, &[]).ok();
        assert_eq!(v["name"], "pkcs11");
        assert_eq!(v["supportedContractVersions"], json!(["1.0"]));
        assert_eq!(v["capabilities"], json!(["SIGNATURE_GENERATOR.RAW"]));
        for k in ["description", "version", "url"] {
            assert!(
                !v[k].as_str().unwrap_or("").is_empty(),
                "{k} must be a non-empty string"
            );
        }
    }
    // The version and URL are the workspace's (root Cargo.toml `[workspace.package]`), and the
    // description names this project, not a vendor.
    let v = run_plugin(&["get-plugin-metadata"], b"{}", &[]).ok();
    assert_eq!(v["version"], workspace_package_field("version"));
    assert_eq!(v["url"], workspace_package_field("repository"));
    assert!(v["description"].as_str().unwrap().contains("tsb-pkcs11"));
    assert!(!v["url"].as_str().unwrap().contains("securosys"));
    let m = run_plugin(&["get-plugin-metadata"], b"{oops", &[]).err_code("VALIDATION_ERROR");
    assert!(m.contains("malformed"), "{m}");
}

#[test]
fn describe_key_every_key_spec() {
    let hsm = softhsm!();
    for (i, (spec, _, _, _, key_type, _)) in SPECS.iter().enumerate() {
        hsm.keygen(key_type, &format!("key-{spec}"), &format!("{:02x}", i + 1));
    }
    for (spec, ..) in SPECS {
        let v = hsm.target.describe_key(&format!("key-{spec}")).ok();
        assert_eq!(v["keyId"], format!("key-{spec}"));
        assert_eq!(v["keySpec"], spec);
    }
}

#[test]
fn generate_signature_rsa_2048() {
    sign_and_verify(0);
}

#[test]
fn generate_signature_rsa_3072() {
    sign_and_verify(1);
}

#[test]
fn generate_signature_rsa_4096() {
    sign_and_verify(2);
}

#[test]
fn generate_signature_ec_256() {
    sign_and_verify(3);
}

#[test]
fn generate_signature_ec_384() {
    sign_and_verify(4);
}

#[test]
fn generate_signature_ec_521() {
    sign_and_verify(5);
}

#[test]
fn ec_521_signatures_are_always_fixed_width() {
    // r or s of P-521 is often shorter than 66 bytes; the plugin must still pad both.
    let hsm = softhsm!();
    let root = code_signing_root("Root");
    let leaf = key_with_cert(&hsm, &root, "EC:secp521r1", "p521", "01");
    hsm.write_cert(&root.cert, "a0", "root");
    for i in 0..8 {
        let payload = format!("payload {i}");
        let resp = hsm
            .target
            .generate_signature("p521", "EC-521", "SHA-512", payload.as_bytes())
            .ok();
        let sig = STANDARD
            .decode(resp["signature"].as_str().unwrap())
            .unwrap();
        assert_eq!(sig.len(), 132);
        assert!(openssl_verify(
            &leaf,
            "ECDSA-SHA-512",
            payload.as_bytes(),
            &sig
        ));
    }
}

#[test]
fn chain_with_intermediate_is_ordered_leaf_to_root() {
    let hsm = softhsm!();
    let root = code_signing_root("Root CA");
    let inter = root.intermediate("Intermediate CA");
    let other = code_signing_root("Unrelated CA");
    let leaf = key_with_cert(&hsm, &inter, "EC:prime256v1", "k", "01");
    // Stored in scrambled order, with an unrelated CA that must be left out.
    hsm.write_cert(&root.cert, "c1", "root");
    hsm.write_cert(&other.cert, "c2", "other");
    hsm.write_cert(&inter.cert, "c3", "intermediate");
    let resp = hsm
        .target
        .generate_signature("k", "EC-256", "SHA-256", b"payload")
        .ok();
    let chain = decode_chain(&resp);
    let ders: Vec<Vec<u8>> = chain.iter().map(|c| c.to_der().unwrap()).collect();
    assert_eq!(
        ders,
        vec![
            leaf.to_der().unwrap(),
            inter.cert.to_der().unwrap(),
            root.cert.to_der().unwrap()
        ]
    );
    assert_chain_ordered(&chain);
}

#[test]
fn leaf_found_by_label_when_ids_differ() {
    let hsm = softhsm!();
    let root = code_signing_root("Root");
    hsm.keygen("EC:prime256v1", "k", "01");
    let leaf = root.issue("leaf", &hsm.public_key("01"));
    hsm.write_cert(&leaf, "99", "k");
    hsm.write_cert(&root.cert, "a0", "root");
    let resp = hsm
        .target
        .generate_signature("k", "EC-256", "SHA-256", b"x")
        .ok();
    assert_eq!(
        decode_chain(&resp)[0].to_der().unwrap(),
        leaf.to_der().unwrap()
    );
}

#[test]
fn cert_chain_pem_used_when_token_has_no_certificate() {
    let hsm = softhsm!();
    let root = code_signing_root("Root");
    let inter = root.intermediate("Intermediate");
    hsm.keygen("rsa:2048", "k", "01");
    let leaf = inter.issue("leaf", &hsm.public_key("01"));
    let pem = hsm.write_pem("chain.pem", &[&leaf, &inter.cert, &root.cert]);
    let mut req = hsm
        .target
        .sign_request("k", "RSA-2048", "SHA-256", b"payload");
    req["pluginConfig"]["certChain"] = json!(pem.to_str().unwrap());
    let resp = hsm.target.run("generate-signature", &req).ok();
    let chain = decode_chain(&resp);
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[0].to_der().unwrap(), leaf.to_der().unwrap());
    assert_chain_ordered(&chain);
    let sig = STANDARD
        .decode(resp["signature"].as_str().unwrap())
        .unwrap();
    assert!(openssl_verify(
        &leaf,
        "RSASSA-PSS-SHA-256",
        b"payload",
        &sig
    ));
}

#[test]
fn cert_chain_pem_completes_a_token_leaf() {
    let hsm = softhsm!();
    let root = code_signing_root("Root");
    let leaf = key_with_cert(&hsm, &root, "EC:secp384r1", "k", "01");
    let pem = hsm.write_pem("ca.pem", &[&root.cert]);
    let mut req = hsm.target.sign_request("k", "EC-384", "SHA-384", b"p");
    req["pluginConfig"]["certChain"] = json!(pem.to_str().unwrap());
    let chain = decode_chain(&hsm.target.run("generate-signature", &req).ok());
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].to_der().unwrap(), leaf.to_der().unwrap());
    assert_chain_ordered(&chain);
}

#[test]
fn no_certificate_is_a_validation_error() {
    let hsm = softhsm!();
    hsm.keygen("EC:prime256v1", "k", "01");
    let m = hsm
        .target
        .generate_signature("k", "EC-256", "SHA-256", b"p")
        .err_code("VALIDATION_ERROR");
    assert!(m.contains("no certificate"), "{m}");
}

#[test]
fn chain_without_root_is_a_validation_error() {
    let hsm = softhsm!();
    let root = code_signing_root("Root");
    key_with_cert(&hsm, &root, "EC:prime256v1", "k", "01");
    let m = hsm
        .target
        .generate_signature("k", "EC-256", "SHA-256", b"p")
        .err_code("VALIDATION_ERROR");
    assert!(m.contains("no root"), "{m}");
}

#[test]
fn certificate_of_another_key_is_an_error() {
    let hsm = softhsm!();
    let root = code_signing_root("Root");
    hsm.keygen("EC:prime256v1", "k", "01");
    hsm.keygen("EC:prime256v1", "other", "02");
    // The certificate stored with key k's CKA_ID certifies the other key.
    let wrong = root.issue("wrong", &hsm.public_key("02"));
    hsm.write_cert(&wrong, "01", "k");
    hsm.write_cert(&root.cert, "a0", "root");
    let m = hsm
        .target
        .generate_signature("k", "EC-256", "SHA-256", b"p")
        .err_code("ERROR");
    assert!(m.contains("does not belong to key 'k'"), "{m}");
}

#[test]
fn unknown_key_is_a_validation_error() {
    let hsm = softhsm!();
    hsm.keygen("EC:prime256v1", "k", "01");
    let m = hsm.target.describe_key("nope").err_code("VALIDATION_ERROR");
    assert!(m.contains("'nope' not found"), "{m}");
    hsm.target
        .generate_signature("nope", "EC-256", "SHA-256", b"p")
        .err_code("VALIDATION_ERROR");
}

#[test]
fn wrong_key_spec_or_hash_is_a_validation_error() {
    let hsm = softhsm!();
    let root = code_signing_root("Root");
    key_with_cert(&hsm, &root, "EC:prime256v1", "k", "01");
    hsm.write_cert(&root.cert, "a0", "root");
    let t = &hsm.target;
    let m = t
        .generate_signature("k", "EC-384", "SHA-384", b"p")
        .err_code("VALIDATION_ERROR");
    assert!(m.contains("does not match key 'k'"), "{m}");
    let m = t
        .generate_signature("k", "EC-256", "SHA-512", b"p")
        .err_code("VALIDATION_ERROR");
    assert!(m.contains("hashAlgorithm"), "{m}");
    t.generate_signature("k", "EC-999", "SHA-256", b"p")
        .err_code("VALIDATION_ERROR");
    t.generate_signature("k", "EC-256", "MD5", b"p")
        .err_code("VALIDATION_ERROR");
    // The right request still works.
    t.generate_signature("k", "EC-256", "SHA-256", b"p").ok();
}

#[test]
fn unsupported_contract_version() {
    // Checked before the module is loaded, so no token is needed.
    let t = Target {
        module: "/nonexistent/module.so".into(),
        token: None,
        pin: None,
        env: vec![],
    };
    let mut req =
        json!({"contractVersion": "2.0", "keyId": "k", "pluginConfig": t.plugin_config()});
    t.run("describe-key", &req)
        .err_code("UNSUPPORTED_CONTRACT_VERSION");
    req = t.sign_request("k", "EC-256", "SHA-256", b"p");
    req["contractVersion"] = json!("2.0");
    t.run("generate-signature", &req)
        .err_code("UNSUPPORTED_CONTRACT_VERSION");
}

#[test]
fn malformed_requests_are_validation_errors() {
    let hsm = softhsm!();
    hsm.keygen("EC:prime256v1", "k", "01");
    let env = &hsm.target.env;
    for (command, stdin) in [
        ("describe-key", &b"{not json"[..]),
        ("describe-key", b""),
        ("describe-key", b"[]"),
        ("generate-signature", b"{\"contractVersion\":\"1.0\""),
        // Missing contractVersion, keyId, or keySpec/hashAlgorithm/payload.
        ("describe-key", br#"{"keyId":"k"}"#),
        ("describe-key", br#"{"contractVersion":"1.0"}"#),
        (
            "generate-signature",
            br#"{"contractVersion":"1.0","keyId":"k"}"#,
        ),
        // pluginConfig values must be strings.
        (
            "describe-key",
            br#"{"contractVersion":"1.0","keyId":"k","pluginConfig":{"pin":1234}}"#,
        ),
    ] {
        let run = run_plugin(&[command], stdin, env);
        run.err_code("VALIDATION_ERROR");
    }
    // Empty keyId, payload not base64, empty payload.
    let t = &hsm.target;
    let mut req = json!({"contractVersion": "1.0", "keyId": "", "pluginConfig": t.plugin_config()});
    t.run("describe-key", &req).err_code("VALIDATION_ERROR");
    req = t.sign_request("k", "EC-256", "SHA-256", b"p");
    req["payload"] = json!("not base64!");
    t.run("generate-signature", &req)
        .err_code("VALIDATION_ERROR");
    req["payload"] = json!("");
    t.run("generate-signature", &req)
        .err_code("VALIDATION_ERROR");
}

#[test]
fn unknown_attributes_are_ignored() {
    let hsm = softhsm!();
    hsm.keygen("EC:prime256v1", "k", "01");
    let mut config = hsm.target.plugin_config();
    config["someFutureKey"] = json!("x");
    let req = json!({
        "contractVersion": "1.0",
        "keyId": "k",
        "pluginConfig": config,
        "someFutureAttribute": {"nested": [1, 2]},
    });
    assert_eq!(
        hsm.target.run("describe-key", &req).ok()["keySpec"],
        "EC-256"
    );
}

#[test]
fn unknown_or_missing_command_is_a_validation_error() {
    let m = run_plugin(&["sign-everything"], b"{}", &[]).err_code("VALIDATION_ERROR");
    assert!(m.contains("unknown command"), "{m}");
    run_plugin(&[], b"{}", &[]).err_code("VALIDATION_ERROR");
    run_plugin(&["describe-key", "extra"], b"{}", &[]).err_code("VALIDATION_ERROR");
}

#[test]
fn pin_handling() {
    let hsm = softhsm!();
    hsm.keygen("EC:prime256v1", "k", "01");
    let t = &hsm.target;
    // Wrong PIN.
    let m = t
        .with_pin(Some("0000"))
        .describe_key("k")
        .err_code("ACCESS_DENIED");
    assert!(m.contains("CKR_PIN_INCORRECT"), "{m}");
    // No PIN at all, and SoftHSM tokens require a login.
    let m = t.with_pin(None).describe_key("k").err_code("ACCESS_DENIED");
    assert!(m.contains("NOTATION_PKCS11_PIN"), "{m}");
    // PIN from the environment.
    let mut env_target = t.with_pin(None);
    env_target
        .env
        .push(("NOTATION_PKCS11_PIN".into(), USER_PIN.into()));
    assert_eq!(env_target.describe_key("k").ok()["keySpec"], "EC-256");
    // pluginConfig wins over the environment.
    let mut both = t.with_pin(Some(USER_PIN));
    both.env.push(("NOTATION_PKCS11_PIN".into(), "0000".into()));
    both.describe_key("k").ok();
}

#[test]
fn token_selection_by_label() {
    let hsm = softhsm!();
    hsm.init_token("second");
    hsm.keygen("EC:prime256v1", "k", "01");
    hsm.keygen_on("second", "rsa:2048", "k", "01");
    let t = &hsm.target;
    assert_eq!(
        t.with_token(Some("test")).describe_key("k").ok()["keySpec"],
        "EC-256"
    );
    assert_eq!(
        t.with_token(Some("second")).describe_key("k").ok()["keySpec"],
        "RSA-2048"
    );
    let m = t
        .with_token(Some("third"))
        .describe_key("k")
        .err_code("VALIDATION_ERROR");
    assert!(m.contains("no token labelled 'third'"), "{m}");
    // Default: the first slot with an initialized token.
    let spec = t.with_token(None).describe_key("k").ok()["keySpec"].clone();
    assert!(spec == "EC-256" || spec == "RSA-2048", "{spec}");
}

#[test]
fn unsupported_keys_are_validation_errors() {
    let hsm = softhsm!();
    hsm.keygen("EC:edwards25519", "ed", "01");
    hsm.keygen("rsa:1024", "small", "02");
    hsm.keygen("EC:secp256k1", "k1", "03");
    let t = &hsm.target;
    let m = t.describe_key("ed").err_code("VALIDATION_ERROR");
    assert!(
        m.contains("key 'ed' is Ed25519, which Notation does not support"),
        "{m}"
    );
    let m = t.describe_key("small").err_code("VALIDATION_ERROR");
    assert!(m.contains("RSA-1024"), "{m}");
    let m = t.describe_key("k1").err_code("VALIDATION_ERROR");
    assert!(m.contains("secp256k1"), "{m}");
    t.generate_signature("ed", "EC-256", "SHA-256", b"p")
        .err_code("VALIDATION_ERROR");
}

#[test]
fn module_that_cannot_be_loaded_is_an_error() {
    let t = Target {
        module: "/nonexistent/libpkcs11.so".into(),
        token: None,
        pin: None,
        env: vec![],
    };
    let m = t.describe_key("k").err_code("ERROR");
    assert!(m.contains("cannot load the PKCS#11 module"), "{m}");
}

/// A PKCS#11 module that prints to stdout when loaded and when called: its output must go
/// to stderr, leaving stdout with the response alone. Built with the system C compiler.
#[test]
fn module_output_never_reaches_stdout() {
    let hsm = softhsm!();
    let root = code_signing_root("Root");
    key_with_cert(&hsm, &root, "EC:prime256v1", "k", "01");
    hsm.write_cert(&root.cert, "a0", "root");

    let src = hsm.dir.path().join("noisy.c");
    let lib = hsm.dir.path().join("libnoisy.so");
    std::fs::write(
        &src,
        format!(
            r#"
#include <stdio.h>
#include <unistd.h>
#include <dlfcn.h>
typedef unsigned long (*get_list_fn)(void **);
__attribute__((constructor)) static void noisy_load(void) {{
    printf("NOISE: module loaded (buffered)\n");
    write(1, "NOISE: raw write to fd 1\n", 25);
}}
unsigned long C_GetFunctionList(void **list) {{
    void *h = dlopen("{SOFTHSM_MODULE}", RTLD_NOW | RTLD_LOCAL);
    if (!h) return 5; /* CKR_GENERAL_ERROR */
    get_list_fn f = (get_list_fn)dlsym(h, "C_GetFunctionList");
    printf("NOISE: C_GetFunctionList\n");
    fflush(stdout);
    return f(list);
}}
"#
        ),
    )
    .unwrap();
    let cc = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output();
    match cc {
        Ok(out) if out.status.success() => {}
        other => {
            eprintln!(
                "!!! SKIPPED module_output_never_reaches_stdout: cannot build a C shim: {other:?}"
            );
            return;
        }
    }
    let noisy = Target {
        module: lib.display().to_string(),
        ..hsm.target.clone()
    };

    let run = noisy.describe_key("k");
    assert_eq!(run.ok()["keySpec"], "EC-256");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("NOISE: raw write to fd 1"), "{stderr}");
    assert!(stderr.contains("NOISE: C_GetFunctionList"), "{stderr}");

    let run = noisy.generate_signature("k", "EC-256", "SHA-256", b"payload");
    let v: Value = run.ok();
    assert_eq!(v["signingAlgorithm"], "ECDSA-SHA-256");

    // Errors: stdout stays empty and the JSON error is still the last line of stderr.
    let (code, m) = noisy.describe_key("missing").err_after_noise();
    assert_eq!(code, "VALIDATION_ERROR");
    assert!(m.contains("not found"), "{m}");

    // With NOTATION_PKCS11_LOG, the noise goes to that file and stderr carries only the
    // JSON error, which Notation can then parse.
    let log = hsm.dir.path().join("plugin.log");
    let mut logged = noisy.clone();
    logged
        .env
        .push(("NOTATION_PKCS11_LOG".into(), log.display().to_string()));
    let run = logged.describe_key("k");
    assert_eq!(run.ok()["keySpec"], "EC-256");
    assert!(
        run.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&run.stderr)
    );
    let m = logged.describe_key("missing").err_code("VALIDATION_ERROR");
    assert!(m.contains("not found"), "{m}");
    let logged_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged_text.contains("NOISE: raw write to fd 1"),
        "{logged_text}"
    );
    assert!(
        logged_text.contains("NOISE: module loaded (buffered)"),
        "{logged_text}"
    );
}

/// Without `pluginConfig.module`, the plugin loads `libtsb_pkcs11.so` from its own
/// directory, else through the library search path. (SoftHSM copied under that name.)
#[test]
fn default_module_location() {
    let hsm = softhsm!();
    hsm.keygen("EC:prime256v1", "k", "01");
    let request = json!({
        "contractVersion": "1.0",
        "keyId": "k",
        "pluginConfig": {"pin": USER_PIN},
    });
    let run_copy = |plugin: &std::path::Path, extra_env: &[(String, String)]| {
        let mut env = hsm.target.env.clone();
        env.extend_from_slice(extra_env);
        run_plugin_at(
            plugin,
            &["describe-key"],
            serde_json::to_string(&request).unwrap().as_bytes(),
            &env,
        )
    };

    // Next to the plugin executable.
    let beside = hsm.dir.path().join("beside");
    std::fs::create_dir(&beside).unwrap();
    let plugin = beside.join("notation-pkcs11");
    std::fs::copy(PLUGIN, &plugin).unwrap();
    std::fs::copy(SOFTHSM_MODULE, beside.join("libtsb_pkcs11.so")).unwrap();
    assert_eq!(run_copy(&plugin, &[]).ok()["keySpec"], "EC-256");

    // Through LD_LIBRARY_PATH.
    let alone = hsm.dir.path().join("alone");
    let libs = hsm.dir.path().join("libs");
    std::fs::create_dir(&alone).unwrap();
    std::fs::create_dir(&libs).unwrap();
    let plugin = alone.join("notation-pkcs11");
    std::fs::copy(PLUGIN, &plugin).unwrap();
    std::fs::copy(SOFTHSM_MODULE, libs.join("libtsb_pkcs11.so")).unwrap();
    let ld = ("LD_LIBRARY_PATH".to_string(), libs.display().to_string());
    assert_eq!(run_copy(&plugin, &[ld]).ok()["keySpec"], "EC-256");

    // Neither (Cargo's LD_LIBRARY_PATH, which may hold the project's own module, is
    // replaced): a clear error naming the module.
    let no_ld = ("LD_LIBRARY_PATH".to_string(), alone.display().to_string());
    let m = run_copy(&plugin, &[no_ld]).err_code("ERROR");
    assert!(m.contains("libtsb_pkcs11.so"), "{m}");
}

/// A string field of `[workspace.package]` in the root Cargo.toml, read as text.
fn workspace_package_field(name: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let text = std::fs::read_to_string(root).unwrap();
    let section = text
        .split("\n[")
        .find(|s| s.starts_with("workspace.package]"))
        .expect("[workspace.package] in the root Cargo.toml");
    section
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("{name} in [workspace.package]"))
}
