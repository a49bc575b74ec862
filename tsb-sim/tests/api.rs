//! The non-signing `/v1/` endpoints: service info, keys and attributes, certificates.

mod common;

use common::*;
use openssl::x509::{X509Req, X509};
use serde_json::{json, Value};
use tsb_sim::{CertificateFormat, Curve, KeySpec, SimConfig};

fn setup() -> (tsb_sim::Simulator, Http) {
    let sim = start(test_config());
    let http = Http::new(&sim.url());
    (sim, http)
}

#[test]
fn service_endpoints() {
    let (_sim, http) = setup();
    let r = http.get("/v1/versionInfo");
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("application/json"));
    assert_eq!(r.json(), json!({"Version": "2.2.0"}));
    let v = http.get("/v1/licenseInfo").json();
    assert!(v["clientFlags"].as_array().is_some_and(|a| !a.is_empty()));
    let v = http.get("/v1/keystore/statistics").json();
    assert!(v["keyStoreStatistics"]
        .as_str()
        .unwrap()
        .contains("objects="));
}

#[test]
fn unknown_paths_and_methods() {
    let (_sim, http) = setup();
    let r = http.get("/v1/nothing");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["status"], 404);
    let r = http.delete("/v1/key");
    assert_eq!(r.status, 405);
    let r = http.get("/v1/key/rsa-2048");
    assert_eq!(r.status, 404);
    // POST bodies must be declared as JSON (415 otherwise, like Spring Boot).
    let body = sign_body("ec-p256", "SHA256_WITH_ECDSA", b"x").to_string();
    let url = format!("{}/v1/synchronousSign", http.base);
    let r = http
        .agent
        .post(&url)
        .set("Content-Type", "text/plain")
        .send_string(&body);
    assert!(matches!(r, Err(ureq::Error::Status(415, _))), "{r:?}");
    let r = http.agent.post(&url).send_bytes(body.as_bytes());
    assert!(matches!(r, Err(ureq::Error::Status(415, _))), "{r:?}");
    let r = http
        .agent
        .post(&url)
        .set("Content-Type", "application/json; charset=UTF-8")
        .send_string(&body);
    assert_eq!(r.unwrap().status(), 200);
}

#[test]
fn key_list() {
    let (sim, http) = setup();
    let v = http.get("/v1/key").json();
    let labels: Vec<String> = serde_json::from_value(v).unwrap();
    assert_eq!(labels, sim.key_labels());
    for l in [
        "rsa-2048",
        "ec-p256",
        "ed25519",
        "aes-256",
        "decrypt-only-rsa",
        "m/44'/0'/0'",
    ] {
        assert!(labels.iter().any(|x| x == l), "{l}");
    }
}

fn attrs(http: &Http, path_label: &str) -> Value {
    let r = http.get(&format!("/v1/key/{path_label}/attributes"));
    assert_eq!(r.status, 200, "{path_label}: {}", r.body);
    r.json()
}

#[test]
fn attributes_of_each_key_type() {
    let (sim, http) = setup();
    let v = attrs(&http, "rsa-2048");
    assert!(v["xml"].as_str().unwrap().contains("rsa-2048"));
    assert!(!v["xmlSignature"].as_str().unwrap().is_empty());
    assert!(v["attestationKeyName"].is_string());
    let j = &v["json"];
    assert_eq!(j["label"], "rsa-2048");
    assert_eq!(j["id"], "0001");
    assert_eq!(j["algorithm"], "RSA");
    assert_eq!(j["algorithmOid"], "1.2.840.113549.1.1.1");
    assert_eq!(j["keySize"], 2048);
    assert_eq!(j["curveOid"], Value::Null);
    assert!(j["createTime"].is_string());
    assert_eq!(j["policy"], Value::Null);
    assert_eq!(
        unb64(j["publicKey"].as_str().unwrap()),
        sim.public_key_der("rsa-2048").unwrap()
    );
    let a = &j["attributes"];
    for (name, value) in [
        ("sign", true),
        ("decrypt", false),
        ("unwrap", false),
        ("derive", false),
        ("sensitive", true),
        ("alwaysSensitive", true),
        ("extractable", false),
        ("neverExtractable", true),
        ("modifiable", true),
        ("copyable", false),
        ("destroyable", true),
    ] {
        assert_eq!(a[name], value, "{name}");
    }
    // The public key is a real RSA-2048 SPKI.
    let pk =
        openssl::pkey::PKey::public_key_from_der(&unb64(j["publicKey"].as_str().unwrap())).unwrap();
    assert_eq!(pk.bits(), 2048);

    for (label, oid, bits) in [
        ("ec-p256", "1.2.840.10045.3.1.7", 256),
        ("ec-p384", "1.3.132.0.34", 384),
        ("ec-p521", "1.3.132.0.35", 521),
    ] {
        let j = &attrs(&http, label)["json"];
        assert_eq!(j["algorithm"], "EC");
        assert_eq!(j["algorithmOid"], "1.2.840.10045.2.1");
        assert_eq!(j["curveOid"], oid);
        let pk = openssl::pkey::PKey::public_key_from_der(&unb64(j["publicKey"].as_str().unwrap()))
            .unwrap();
        assert_eq!(pk.bits(), bits);
    }
    let j = &attrs(&http, "ed25519")["json"];
    assert_eq!(j["algorithm"], "ED");
    assert_eq!(j["algorithmOid"], "1.3.101.112");
    assert_eq!(j["curveOid"], Value::Null);
    assert_eq!(unb64(j["publicKey"].as_str().unwrap()).len(), 44);

    let j = &attrs(&http, "aes-256")["json"];
    assert_eq!(j["algorithm"], "AES");
    assert_eq!(j["publicKey"], Value::Null);
    assert_eq!(j["attributes"]["sign"], false);
    assert_eq!(j["attributes"]["decrypt"], true);
    assert_eq!(sim.public_key_der("aes-256"), None);

    let j = &attrs(&http, "decrypt-only-rsa")["json"];
    assert_eq!(j["attributes"]["sign"], false);
    assert_eq!(j["attributes"]["decrypt"], true);
    assert!(j["publicKey"].is_string());

    let j = &attrs(&http, "blocked-ec-p256")["json"];
    assert_eq!(j["policy"]["keyStatus"]["blocked"], true);
    assert_eq!(j["attributes"]["sign"], true);
}

#[test]
fn policies_in_attributes() {
    let (_sim, http) = setup();
    let j = &attrs(&http, "ska-quorum")["json"];
    let p = &j["policy"];
    assert_eq!(p["keyStatus"]["blocked"], false);
    for rule in ["ruleUse", "ruleBlock", "ruleUnblock", "ruleModify"] {
        assert!(p[rule]["tokens"].is_array(), "{rule}");
    }
    let token = &p["ruleUse"]["tokens"][0];
    assert_eq!(token["timelock"], 0);
    assert_eq!(token["timeout"], 0);
    let groups = token["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["quorum"], 2);
    assert_eq!(groups[1]["quorum"], 1);
    let names: Vec<&str> = groups[0]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let approval = &groups[1]["approvals"][0];
    assert_eq!(approval["type"], "public_key");
    assert_eq!(approval["name"], "dave");
    let pk = openssl::pkey::PKey::public_key_from_der(&unb64(approval["value"].as_str().unwrap()))
        .expect("approver key is an SPKI");
    assert!(pk.ec_key().is_ok());

    let t = &attrs(&http, "ska-timelock")["json"]["policy"]["ruleUse"]["tokens"][0];
    assert_eq!(t["timelock"], 60);
    // Always-satisfiable policies.
    let p = &attrs(&http, "ec-p256")["json"]["policy"];
    assert_eq!(p["ruleUse"]["tokens"][0]["groups"], json!([]));
    let p = &attrs(&http, "ec-p384")["json"]["policy"];
    assert_eq!(p["ruleUse"]["tokens"], json!([]));
}

#[test]
fn labels_with_slashes() {
    let (_sim, http) = setup();
    let j = &attrs(&http, "m%2F44'%2F0'%2F0'")["json"];
    assert_eq!(j["label"], "m/44'/0'/0'");
    assert_eq!(j["id"], "path-key");
    // Not encoded: still found.
    let j = &attrs(&http, "m/44'/0'/0'")["json"];
    assert_eq!(j["label"], "m/44'/0'/0'");
    assert_eq!(
        http.get("/sim/counters").json()["GET /v1/key/attributes"],
        2
    );
}

#[test]
fn password_protected_attributes() {
    let (_sim, http) = setup();
    let r = http.get("/v1/key/ec-p256-pw/attributes");
    assert_eq!((r.status, r.error_code()), (400, 620));
    let pw: Vec<String> = "secret-pw".chars().map(String::from).collect();
    let r = http.post(
        "/v1/key/attributes",
        &json!({"label": "ec-p256-pw", "password": pw}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["json"]["label"], "ec-p256-pw");
    let r = http.post(
        "/v1/key/attributes",
        &json!({"label": "ec-p256-pw", "password": ["x"]}),
    );
    assert_eq!((r.status, r.error_code()), (400, 620));
    assert_eq!(r.json()["reason"], "res.error.key.password.mismatch");
    // Keys without password: POST works without one.
    let r = http.post("/v1/key/attributes", &json!({"label": "rsa-2048"}));
    assert_eq!(r.status, 200);
    let r = http.post("/v1/key/attributes", &json!({"label": "nope"}));
    assert_eq!((r.status, r.error_code()), (404, 650));
    let r = http.post("/v1/key/attributes", &json!({"password": ["x"]}));
    assert_eq!((r.status, r.error_code()), (400, 600));
    let r = http.post_raw("/v1/key/attributes", "not json");
    assert_eq!((r.status, r.error_code()), (400, 621));
    let r = http.get("/v1/key/missing-key/attributes");
    assert_eq!((r.status, r.error_code()), (404, 650));
    assert_eq!(r.json()["reason"], "res.error.key.not.existent");
}

fn openssl_self_signed() -> X509 {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::x509::X509NameBuilder;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = openssl::pkey::PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "imported").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(10).unwrap())
        .unwrap();
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    b.build()
}

#[test]
fn certificate_import_get_delete() {
    let (sim, http) = setup();
    let r = http.get("/v1/certificate/ec-p256");
    assert_eq!((r.status, r.error_code()), (404, 652));
    let r = http.get("/v1/certificate/nope");
    assert_eq!((r.status, r.error_code()), (404, 650));

    let der = openssl_self_signed().to_der().unwrap();
    let r = http.post(
        "/v1/certificate/import/plain",
        &json!({"label": "ec-p256", "certificate": b64(&der)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"label": "ec-p256", "certificate": b64(&der)})
    );
    let r = http.get("/v1/certificate/ec-p256");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"label": "ec-p256", "certificate": b64(&der)})
    );
    assert_eq!(sim.certificate_der("ec-p256"), Some(der.clone()));

    // Labels with '/' work percent-encoded.
    let r = http.post(
        "/v1/certificate/import/plain",
        &json!({"label": "m/44'/0'/0'", "certificate": b64(&der)}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(http.get("/v1/certificate/m%2F44'%2F0'%2F0'").status, 200);

    assert_eq!(http.delete("/v1/certificate/ec-p256").status, 200);
    let r = http.get("/v1/certificate/ec-p256");
    assert_eq!((r.status, r.error_code()), (404, 652));
    let r = http.delete("/v1/certificate/ec-p256");
    assert_eq!((r.status, r.error_code()), (404, 652));

    // Invalid input.
    for cert in [
        b64(b"not a certificate"),
        "%%%".to_string(),
        X509::from_der(&der)
            .unwrap()
            .to_pem()
            .map(|p| String::from_utf8(p).unwrap())
            .unwrap(),
    ] {
        let r = http.post(
            "/v1/certificate/import/plain",
            &json!({"label": "ec-p256", "certificate": cert}),
        );
        assert_eq!((r.status, r.error_code()), (400, 600), "{}", r.body);
    }
    let r = http.post(
        "/v1/certificate/import/plain",
        &json!({"label": "nope", "certificate": b64(&der)}),
    );
    assert_eq!((r.status, r.error_code()), (404, 650));
}

fn selfsign(http: &Http, body: Value) -> X509 {
    let r = http.post("/v1/certificate/synchronous/selfsign", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["label"], body["signKeyName"]);
    assert!(v.get("keyVersion").is_some());
    X509::from_pem(v["certificate"].as_str().unwrap().as_bytes()).expect("PEM certificate")
}

#[test]
fn selfsigned_code_signing_certificate() {
    let (sim, http) = setup();
    let cert = selfsign(
        &http,
        json!({
            "signKeyName": "ec-p256",
            "signatureAlgorithm": "SHA256_WITH_ECDSA",
            "validity": 30,
            "commonName": "Test Code Signer",
            "keyUsage": ["DIGITAL_SIGNATURE"],
            "extendedKeyUsage": ["CODE_SIGNING"],
            "certificateAuthority": false,
        }),
    );
    let spki = sim.public_key_der("ec-p256").unwrap();
    assert_eq!(
        cert.public_key().unwrap().public_key_to_der().unwrap(),
        spki
    );
    assert!(
        cert.verify(&cert.public_key().unwrap()).unwrap(),
        "signed by the key"
    );
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    assert_eq!(cn, "Test Code Signer");
    let days = cert.not_before().diff(cert.not_after()).unwrap().days;
    assert!((30..=31).contains(&days), "{days}");
    let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
    assert!(text.contains("X509v3 Key Usage: critical"), "{text}");
    assert!(text.contains("Digital Signature"));
    assert!(text.contains("Code Signing"));
    assert!(text.contains("X509v3 Basic Constraints: critical"));
    assert!(text.contains("CA:FALSE"));
    assert!(text.contains("ecdsa-with-SHA256"));
    // Stored as the key's certificate.
    let stored = http.get("/v1/certificate/ec-p256").json();
    assert_eq!(
        unb64(stored["certificate"].as_str().unwrap()),
        cert.to_der().unwrap()
    );
}

#[test]
fn selfsigned_variants() {
    let (sim, http) = setup();
    let cert = selfsign(
        &http,
        json!({
            "signKeyName": "rsa-2048",
            "signatureAlgorithm": "SHA256_WITH_RSA_PSS",
            "validity": 365,
            "commonName": "Test CA",
            "keyUsage": ["KEY_CERT_SIGN", "CRL_SIGN"],
            "certificateAuthority": true,
        }),
    );
    assert!(cert.verify(&cert.public_key().unwrap()).unwrap());
    let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign"));
    assert!(text.contains("rsassaPss"));

    for (key, alg) in [
        ("rsa-2048", Some("SHA512_WITH_RSA")),
        ("ec-p384", None),
        ("ec-p521", None),
        ("ed25519", Some("EDDSA")),
        ("ed25519", None),
    ] {
        let mut body = json!({"signKeyName": key, "commonName": format!("cn {key}")});
        if let Some(a) = alg {
            body["signatureAlgorithm"] = json!(a);
        }
        let cert = selfsign(&http, body);
        assert_eq!(
            cert.public_key().unwrap().public_key_to_der().unwrap(),
            sim.public_key_der(key).unwrap()
        );
        assert!(
            cert.verify(&cert.public_key().unwrap()).unwrap(),
            "{key} {alg:?}"
        );
    }
    // SHA3 ECDSA: OpenSSL 3.0's X509_verify does not know the OID; verify TBS + signature.
    let cert = selfsign(
        &http,
        json!({"signKeyName": "ec-p521", "commonName": "sha3", "signatureAlgorithm": "SHA3512_WITH_ECDSA"}),
    );
    let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
    assert!(
        text.contains("2.16.840.1.101.3.4.3.12") || text.contains("SHA3-512"),
        "{text}"
    );
    let parsed = {
        use der::{Decode, Encode};
        let c = x509_cert::Certificate::from_der(&cert.to_der().unwrap()).unwrap();
        (
            c.tbs_certificate.to_der().unwrap(),
            c.signature.raw_bytes().to_vec(),
        )
    };
    let spki = sim.public_key_der("ec-p521").unwrap();
    assert!(verify(
        &spki,
        "SHA3512_WITH_ECDSA",
        &parsed.0,
        &parsed.1,
        false
    ));
    // Password-protected key.
    let pw: Vec<String> = "secret-pw".chars().map(String::from).collect();
    selfsign(
        &http,
        json!({"signKeyName": "ec-p256-pw", "keyPassword": pw, "commonName": "pw"}),
    );
}

#[test]
fn selfsign_errors() {
    let (_sim, http) = setup();
    for (body, status, code) in [
        (
            json!({"signKeyName": "ska-ec-p256", "commonName": "x"}),
            400,
            401,
        ),
        (json!({"signKeyName": "ec-p256"}), 400, 600),
        (
            json!({"signKeyName": "ec-p256", "commonName": "x", "keyUsage": ["FLY"]}),
            400,
            600,
        ),
        (
            json!({"signKeyName": "ec-p256", "commonName": "x", "validity": 0}),
            400,
            600,
        ),
        (
            json!({"signKeyName": "ec-p256", "commonName": "x", "signatureAlgorithm": "NONE_WITH_ECDSA"}),
            400,
            607,
        ),
        (
            json!({"signKeyName": "ec-p256", "commonName": "x", "signatureAlgorithm": "SHA256_WITH_RSA"}),
            400,
            607,
        ),
        (
            json!({"signKeyName": "blocked-ec-p256", "commonName": "x"}),
            400,
            614,
        ),
        (
            json!({"signKeyName": "decrypt-only-rsa", "commonName": "x"}),
            400,
            614,
        ),
        (
            json!({"signKeyName": "ec-p256-pw", "commonName": "x"}),
            400,
            620,
        ),
        (json!({"signKeyName": "nope", "commonName": "x"}), 404, 650),
    ] {
        let r = http.post("/v1/certificate/synchronous/selfsign", &body);
        assert_eq!(
            (r.status, r.error_code()),
            (status, code),
            "{body}: {}",
            r.body
        );
    }
}

#[test]
fn certificate_signing_request() {
    let (sim, http) = setup();
    let r = http.post(
        "/v1/certificate/synchronous/request",
        &json!({
            "signKeyName": "ec-p384",
            "signatureAlgorithm": "SHA384_WITH_ECDSA",
            "validity": 365,
            "standardCertificateAttributes": {
                "commonName": "CSR Signer", "country": "CH", "organizationName": "Example AG"
            },
            "keyUsage": ["DIGITAL_SIGNATURE"],
            "extendedKeyUsage": ["CODE_SIGNING"],
        }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["label"], "ec-p384");
    let req =
        X509Req::from_pem(v["certificateSigningRequest"].as_str().unwrap().as_bytes()).unwrap();
    let pk = req.public_key().unwrap();
    assert!(req.verify(&pk).unwrap());
    assert_eq!(
        pk.public_key_to_der().unwrap(),
        sim.public_key_der("ec-p384").unwrap()
    );
    let subject: Vec<String> = req
        .subject_name()
        .entries()
        .map(|e| e.data().to_string().unwrap())
        .collect();
    assert_eq!(subject, ["CH", "Example AG", "CSR Signer"]);
    // No certificate is stored by a CSR.
    assert_eq!(http.get("/v1/certificate/ec-p384").status, 404);
}

#[test]
fn configured_certificates_and_formats() {
    let mut cfg = SimConfig::default();
    cfg.keys
        .push(KeySpec::ec("with-cert", Curve::P256).with_self_signed_certificate("Configured"));
    cfg.certificate_format = CertificateFormat::Pem;
    let sim = start(cfg.clone());
    let http = Http::new(&sim.url());
    let v = http.get("/v1/certificate/with-cert").json();
    let cert = X509::from_pem(v["certificate"].as_str().unwrap().as_bytes()).unwrap();
    assert!(cert.verify(&cert.public_key().unwrap()).unwrap());
    let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
    assert!(
        text.contains("CN=Configured") || text.contains("CN = Configured"),
        "{text}"
    );
    assert!(text.contains("Code Signing"));
    drop(sim);

    cfg.certificate_format = CertificateFormat::RawCertificate;
    let sim = start(cfg);
    let v = Http::new(&sim.url())
        .get("/v1/certificate/with-cert")
        .json();
    assert!(v.get("certificate").is_none());
    X509::from_der(&unb64(v["rawCertificate"].as_str().unwrap())).unwrap();
}

#[test]
fn keys_can_change_at_run_time() {
    let (sim, http) = setup();
    sim.add_key(KeySpec::ed25519("added-ed").with_id("added"))
        .unwrap();
    let labels: Vec<String> = serde_json::from_value(http.get("/v1/key").json()).unwrap();
    assert_eq!(labels.last().map(String::as_str), Some("added-ed"));
    let spki = sim.public_key_der("added-ed").unwrap();
    let sig = sign_sync(&http, "added-ed", "EDDSA", b"new key");
    assert!(verify(&spki, "EDDSA", b"new key", &sig, false));
    sim.remove_key("ec-p256");
    assert_eq!(sim.public_key_der("ec-p256"), None);
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("ec-p256", "SHA256_WITH_ECDSA", b"x"),
    );
    assert_eq!((r.status, r.error_code()), (404, 650));
    let labels: Vec<String> = serde_json::from_value(http.get("/v1/key").json()).unwrap();
    assert!(!labels.contains(&"ec-p256".to_string()));
    // Invalid specs are refused.
    assert!(sim.add_key(KeySpec::rsa("tiny", 512)).is_err());
    // The control interface can do the same.
    let r = http.post(
        "/sim/keys",
        &json!({"label": "ctl-key", "algorithm": "EC", "curve": "P-384"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(attrs(&http, "ctl-key")["json"]["curveOid"], "1.3.132.0.34");
    assert_eq!(http.delete("/sim/keys/ctl-key").status, 204);
    assert_eq!(http.get("/v1/key/ctl-key/attributes").status, 404);
    assert_eq!(http.delete("/sim/keys/ctl-key").status, 404);
}

// ---------------------------------------------------------------------------------------------
// Requests shaped exactly as Securosys' own clients shape them (docs/tsb-api.md, "Securosys'
// clients"). The Go client (`securosys-com/tsb-client-go`, also used by the Vault plugin
// `securosys-com/hcvault-plugin-secrets-engine`) builds its bodies as text templates, so the
// whitespace below is theirs too.

/// A password as `tsb-client-go` (`helpers/functions.go`, `StringToCharArray`) marshals it: one
/// JSON string per *byte*, each byte read as a code point (so a non-ASCII character becomes
/// several Latin-1 characters).
fn go_chars(password: &str) -> String {
    let chars: Vec<String> = password
        .bytes()
        .map(|b| char::from(b).to_string())
        .collect();
    serde_json::to_string(&chars).unwrap()
}

/// `CreateOrUpdateKey` (tsb-client-go `key.go`): `keySize` and `curveOid` lines left empty when
/// unset, `password` only when given, the attribute map marshalled with sorted keys, and
/// `"policy":null` for a key without policy.
fn go_create_key(label: &str, algorithm: &str, password: &str, curve_oid: &str) -> String {
    let password = if password.is_empty() {
        String::new()
    } else {
        format!("\"password\": {},", go_chars(password))
    };
    let curve = format!("\"curveOid\": \"{curve_oid}\",");
    // The Go client's own tests create keys with these attributes (`key_test.go`).
    let attributes = r#"{"decrypt":false,"destroyable":true,"encrypt":true,"extractable":false,"sign":true,"unwrap":false,"verify":true,"wrap":true}"#;
    format!(
        "{{\n\t\"label\": \"{label}\",\n    \"algorithm\": \"{algorithm}\",\t\n    {password}\n\t\n\t{curve}\n\t\"attributes\": {attributes},\"policy\":null}}"
    )
}

/// `GetKey` (tsb-client-go `key.go`): always `POST /v1/key/attributes`.
fn go_get_key(label: &str, password: &str) -> String {
    let password = if password.is_empty() {
        String::new()
    } else {
        format!("\"password\": {},", go_chars(password))
    };
    format!("{{\n\t\t\t{password}\n\t\t\t\"label\":\"{label}\"\t\t\n\t\t}}")
}

/// `RemoveKey` (tsb-client-go `key.go`): `POST /v1/key/deleteKey`.
fn go_remove_key(label: &str, password: &str) -> String {
    let password = if password.is_empty() {
        String::new()
    } else {
        format!(",\"password\": {}", go_chars(password))
    };
    format!("{{\n\t\t\"label\": \"{label}\"{password}\n\t}}")
}

/// `Sign` (tsb-client-go `sign.go`): `POST /v1/synchronousSign`, `payloadType` as given,
/// `keyPassword` only when given, `signatureType` `DER` unless asked otherwise, no
/// `requestSignature`.
fn go_sign(label: &str, password: &str, payload: &[u8], alg: &str, sig_type: &str) -> String {
    let password = if password.is_empty() {
        String::new()
    } else {
        format!("\"keyPassword\": {},", go_chars(password))
    };
    format!(
        "{{\n\t\t\"signRequest\": {{\n\t\t\"payload\": \"{}\",\n\t\t\"payloadType\": \"UNSPECIFIED\",\n\t\t{password}\n\t\t\"signKeyName\": \"{label}\",\n\t\t\"signatureAlgorithm\": \"{alg}\",\n  \t\t\"signatureType\":\"{sig_type}\"\n\n\t\t}}\n\t  }}",
        b64(payload)
    )
}

fn public_key_of(attributes: &Value) -> Vec<u8> {
    unb64(attributes["json"]["publicKey"].as_str().expect("publicKey"))
}

#[test]
fn go_client_key_lifecycle() {
    let (sim, http) = setup();
    let r = http.post_raw(
        "/v1/key",
        &go_create_key("go-ec", "EC", "pw-1", "1.2.840.10045.3.1.7"),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = http.post_raw("/v1/key", &go_create_key("go-ed", "ED", "", "1.3.101.112"));
    assert_eq!(r.status, 201, "{}", r.body);

    // GetKey: the Go client type-asserts these fields and panics on any other JSON type.
    let r = http.post_raw("/v1/key/attributes", &go_get_key("go-ec", "pw-1"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    for field in ["xml", "xmlSignature", "attestationKeyName"] {
        assert!(v[field].is_string(), "{field}");
    }
    let j = &v["json"];
    assert_eq!(j["label"], "go-ec");
    assert_eq!(j["algorithm"], "EC");
    assert!(j["algorithmOid"].is_string());
    assert_eq!(j["curveOid"], "1.2.840.10045.3.1.7");
    assert_eq!(j["keySize"], Value::Null, "only RSA keys have a keySize");
    assert!(j["attributes"].is_object());
    assert_eq!(j["attributes"]["sign"], true);
    let spki = public_key_of(&v);
    let r = http.post_raw("/v1/key/attributes", &go_get_key("go-ec", ""));
    assert_eq!((r.status, r.error_code()), (400, 620));

    // Sign: the Go client's tests sign EC keys with signatureType RAW.
    let r = http.post_raw(
        "/v1/synchronousSign",
        &go_sign("go-ec", "pw-1", b"go payload", "SHA256_WITH_ECDSA", "RAW"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let sig = unb64(r.json()["signature"].as_str().unwrap());
    assert!(verify(
        &spki,
        "SHA256_WITH_ECDSA",
        b"go payload",
        &sig,
        true
    ));
    let r = http.post_raw(
        "/v1/synchronousSign",
        &go_sign("go-ed", "", b"go payload", "EDDSA", "DER"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let ed_spki = public_key_of(
        &http
            .post_raw("/v1/key/attributes", &go_get_key("go-ed", ""))
            .json(),
    );
    let sig = unb64(r.json()["signature"].as_str().unwrap());
    assert!(verify(&ed_spki, "EDDSA", b"go payload", &sig, false));

    // RemoveKey: a wrong or missing password is refused and leaves the key in place.
    for bad in [go_remove_key("go-ec", "pw-2"), go_remove_key("go-ec", "")] {
        let r = http.post_raw("/v1/key/deleteKey", &bad);
        assert_eq!((r.status, r.error_code()), (400, 620), "{bad}: {}", r.body);
    }
    assert!(sim.key_labels().iter().any(|l| l == "go-ec"));
    let r = http.post_raw("/v1/key/deleteKey", &go_remove_key("go-ec", "pw-1"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http.post_raw("/v1/key/deleteKey", &go_remove_key("go-ed", ""));
    assert_eq!(r.status, 200, "{}", r.body);
    for label in ["go-ec", "go-ed"] {
        let r = http.post_raw("/v1/key/attributes", &go_get_key(label, ""));
        assert_eq!((r.status, r.error_code()), (404, 650), "{label}");
        let r = http.post_raw("/v1/key/deleteKey", &go_remove_key(label, ""));
        assert_eq!((r.status, r.error_code()), (404, 650), "{label}");
    }
    assert_eq!(sim.counter("POST /v1/key/deleteKey"), 6);
    // The body form still refuses a key that is not destroyable.
    let r = http.post(
        "/v1/key",
        &json!({"label": "keep", "algorithm": "ED", "attributes": {"sign": true, "destroyable": false}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = http.post_raw("/v1/key/deleteKey", &go_remove_key("keep", ""));
    assert_eq!((r.status, r.error_code()), (400, 614));
    let r = http.post_raw("/v1/key/deleteKey", "{\"password\": [\"x\"]}");
    assert_eq!((r.status, r.error_code()), (400, 600));
}

/// The Go client sends a non-ASCII password byte by byte ("ä" as `["Ã","¤"]`), where this
/// module sends one string per character (`["ä"]`): a key made by one cannot be opened with the
/// password as the other writes it. The simulator compares the characters as sent, as the
/// TSB's `char[]` fields do.
#[test]
fn go_client_non_ascii_password_is_sent_per_byte() {
    let (_sim, http) = setup();
    let r = http.post_raw(
        "/v1/key",
        &go_create_key("go-umlaut", "EC", "pä", "1.2.840.10045.3.1.7"),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(go_chars("pä").contains("\"Ã\",\"¤\""));
    let r = http.post_raw("/v1/key/attributes", &go_get_key("go-umlaut", "pä"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http.post(
        "/v1/key/attributes",
        &json!({"label": "go-umlaut", "password": ["p", "ä"]}),
    );
    assert_eq!((r.status, r.error_code()), (400, 620));
}

/// `AsyncSign` (tsb-client-go `sign.go`, `tsb_client.go`): the body is minified, `metaData` is
/// base64 JSON signed with the application key (`metaDataSignature`), and with an application
/// key pair `requestSignature` is `{"signature", "digestAlgorithm": "SHA-256", "publicKey"}`
/// over the compact `signRequest` text.
#[test]
fn go_client_async_sign_with_request_signature() {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::sign::Signer;

    let (_sim, http) = setup();
    let app = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let app_public = b64(&app.public_key_to_der().unwrap());
    let rsa_sign = |data: &[u8]| {
        let mut s = Signer::new(MessageDigest::sha256(), &app).unwrap();
        s.update(data).unwrap();
        b64(&s.sign_to_vec().unwrap())
    };
    let meta =
        br#"{"app":"OpenBao - Securosys HSM KMS","time":"2026-01-01T00:00:00Z","type":"Sign"}"#;
    let sign_request = format!(
        r#"{{"payload":"{}","payloadType":"UNSPECIFIED","signKeyName":"ec-p256","signatureAlgorithm":"SHA256_WITH_ECDSA","signatureType":"DER","metaData":"{}","metaDataSignature":"{}"}}"#,
        b64(b"async payload"),
        b64(meta),
        rsa_sign(meta)
    );
    let request_signature = format!(
        r#"{{"signature":"{}","digestAlgorithm":"SHA-256","publicKey":"{app_public}"}}"#,
        rsa_sign(sign_request.as_bytes())
    );
    let body =
        format!(r#"{{"signRequest":{sign_request},"requestSignature":{request_signature}}}"#);
    let r = http.post_raw("/v1/sign", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["signRequestId"].as_str().unwrap().to_string();
    let status = wait_terminal(&http, &id, std::time::Duration::from_secs(10));
    assert_eq!(status["status"], "EXECUTED");
    let spki = public_key_of(&attrs(&http, "ec-p256"));
    let sig = unb64(status["result"].as_str().unwrap());
    assert!(verify(
        &spki,
        "SHA256_WITH_ECDSA",
        b"async payload",
        &sig,
        false
    ));
    // Without an application key pair the client sends "requestSignature":null.
    let r = http.post_raw(
        "/v1/sign",
        &format!(r#"{{"signRequest":{sign_request},"requestSignature":null}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // The TSB reads requestSignature as its SignatureDto: other shapes are refused.
    for bad in [
        r#""signed""#.to_string(),
        "[]".to_string(),
        format!(
            r#"{{"signature":"{}","digestAlgorithm":"SHA-256"}}"#,
            b64(b"s")
        ),
        format!(r#"{{"digestAlgorithm":"SHA-256","publicKey":"{app_public}"}}"#),
        format!(
            r#"{{"signature":"not base64!","digestAlgorithm":"SHA-256","publicKey":"{app_public}"}}"#
        ),
        format!(
            r#"{{"signature":"{}","digestAlgorithm":"SHA256withRSA","publicKey":"{app_public}"}}"#,
            b64(b"s")
        ),
    ] {
        for endpoint in ["/v1/sign", "/v1/synchronousSign"] {
            let body = format!(r#"{{"signRequest":{sign_request},"requestSignature":{bad}}}"#);
            let r = http.post_raw(endpoint, &body);
            assert_eq!(
                (r.status, r.error_code()),
                (400, 600),
                "{endpoint} {bad}: {}",
                r.body
            );
        }
    }
}

/// Key creation bodies as the TSB documentation writes them: `id` (optional for RSA, EC and
/// ED keys: `tsb/Concepts/key/Algorithms.md`), the public-key and derivation flags
/// (`tsb/Concepts/key/CreateKey.md`), the nulls of `tsb/Tutorials/Blockchain/slip10.md`, and a
/// key named by `algorithmOid` only (`CreateKeyDto`: "either the algorithm or the algorithm_oid
/// must be set").
#[test]
fn documented_key_creation_forms() {
    let (_sim, http) = setup();
    let r = http.post(
        "/v1/key",
        &json!({
            "label": "with-id", "id": "pkcs11-id-0042", "password": ["R","E","P","L","A","C","E"],
            "algorithm": "EC", "curveOid": "1.3.132.0.10",
            "attributes": {"encrypt": true, "decrypt": true, "verify": true, "sign": true,
                "wrap": true, "unwrap": true, "derive": false, "bip32": false, "slip10": false,
                "extractable": false, "modifiable": true, "destroyable": true, "sensitive": true,
                "copyable": false}
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = http
        .post(
            "/v1/key/attributes",
            &json!({"label": "with-id", "password": ["R","E","P","L","A","C","E"]}),
        )
        .json();
    assert_eq!(v["json"]["id"], "pkcs11-id-0042");
    assert_eq!(v["json"]["curveOid"], "1.3.132.0.10");
    let r = http.post(
        "/v1/key",
        &json!({
            "label": "slip10-shaped", "password": null, "id": null, "algorithm": "ED",
            "algorithmOid": null, "curveOid": "1.3.101.112", "keySize": null,
            "addressFormat": null,
            "attributes": {"encrypt": null, "decrypt": true, "verify": null, "sign": true,
                "wrap": null, "unwrap": true, "derive": true, "bip32": true, "slip10": true,
                "extractable": false, "modifiable": true, "destroyable": true,
                "sensitive": null, "copyable": false},
            "policy": {"ruleUse": null, "ruleBlock": null, "ruleUnblock": null,
                "ruleModify": null, "keyStatus": {"blocked": false}}
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(attrs(&http, "slip10-shaped")["json"]["id"], Value::Null);
    let r = http.post(
        "/v1/key",
        &json!({"label": "by-oid", "algorithmOid": "1.3.101.112",
            "attributes": {"sign": true, "decrypt": false, "unwrap": false}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = attrs(&http, "by-oid");
    assert_eq!(v["json"]["algorithm"], "ED");
    let spki = public_key_of(&v);
    let sig = sign_sync(&http, "by-oid", "EDDSA", b"oid");
    assert!(verify(&spki, "EDDSA", b"oid", &sig, false));
    for bad in [
        json!({"label": "x", "algorithm": "ED", "id": ""}),
        json!({"label": "x", "algorithm": "ED", "id": 42}),
        json!({"label": "x", "algorithmOid": "1.2.840.10040.4.1"}),
        json!({"label": "x", "algorithm": "ED", "attributes": {"verify": "yes"}}),
    ] {
        let r = http.post("/v1/key", &bad);
        assert_eq!((r.status, r.error_code()), (400, 600), "{bad}: {}", r.body);
    }
}

/// The Keycloak provider (`securosys-com/keycloak-securosys-hsm-provider`,
/// `client/tsb/key/KeyOperations.java`, `client/tsb/dto/request/SynchronousSignRequest.java`)
/// sends passwords as plain strings or `null`, and `signedApprovals: []` in sign requests.
#[test]
fn keycloak_provider_request_shapes() {
    let (_sim, http) = setup();
    let r = http.post(
        "/v1/key/attributes",
        &json!({"password": null, "label": "rsa-2048"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http.post(
        "/v1/key/attributes",
        &json!({"password": "secret-pw", "label": "ec-p256-pw"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let spki = public_key_of(&r.json());
    let body = json!({"signRequest": {
        "payload": b64(b"keycloak"), "payloadType": "UNSPECIFIED", "signKeyName": "ec-p256-pw",
        "keyPassword": "secret-pw", "signatureAlgorithm": "SHA256_WITH_ECDSA",
        "signatureType": null, "signedApprovals": []}});
    let r = http.post("/v1/synchronousSign", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let sig = unb64(r.json()["signature"].as_str().unwrap());
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"keycloak", &sig, false));
    let mut wrong = body.clone();
    wrong["signRequest"]["keyPassword"] = json!("nope");
    let r = http.post("/v1/synchronousSign", &wrong);
    assert_eq!((r.status, r.error_code()), (400, 620));
}

/// "When a key is deleted the associated requests are set to the new status CANCELLED"
/// (dev-securosys-docs `tsb/Download/release_notes.md`, TSB 1.12.0), whichever form deletes it.
#[test]
fn deleting_a_key_cancels_its_open_requests() {
    let (_sim, http) = setup();
    let policy = json!({"ruleUse": {"tokens": [{"name": "t", "timelock": 0, "timeout": 0,
        "groups": [{"name": "g", "quorum": 1, "approvals": [
            {"type": "public_key", "name": "alice", "value": "QUJD"}]}]}]},
        "keyStatus": {"blocked": false}});
    for (label, delete_by_body) in [("ska-del-a", false), ("ska-del-b", true)] {
        let r = http.post(
            "/v1/key",
            &json!({"label": label, "algorithm": "EC", "curveOid": "1.2.840.10045.3.1.7",
                "attributes": {"sign": true, "decrypt": false, "unwrap": false,
                    "destroyable": true},
                "policy": policy}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let open = sign_async(&http, &sign_body(label, "SHA256_WITH_ECDSA", b"open"));
        let other = sign_async(&http, &sign_body("ska-timeout", "SHA256_WITH_ECDSA", b"x"));
        let done = sign_async(&http, &sign_body("ec-p256", "SHA256_WITH_ECDSA", b"done"));
        assert_eq!(
            http.get(&format!("/v1/request/{open}")).json()["status"],
            "PENDING"
        );
        let r = if delete_by_body {
            http.post_raw("/v1/key/deleteKey", &go_remove_key(label, ""))
        } else {
            http.delete(&format!("/v1/key/{label}"))
        };
        assert_eq!(r.status, 200, "{}", r.body);
        for (id, status) in [
            (&open, "CANCELLED"),
            (&other, "PENDING"),
            (&done, "EXECUTED"),
        ] {
            assert_eq!(
                http.get(&format!("/v1/request/{id}")).json()["status"],
                status,
                "{label}"
            );
        }
        assert_eq!(http.delete(&format!("/v1/request/{other}")).status, 200);
    }
}
