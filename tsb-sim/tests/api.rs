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
