//! Certificate objects (PKCS#11 v2.40 §4.6.3) against the TSB simulator: the TSB's
//! certificates (`GET /v1/certificate/{label}`) and the chains of `pkcs11.certificates` as
//! `CKO_CERTIFICATE` objects, checked against OpenSSL's parse of the same DER; `C_CreateObject`
//! (`POST /v1/certificate/import/plain`) and `C_DestroyObject` (`DELETE /v1/certificate/{label}`)
//! in-process and through OpenSC's `pkcs11-tool`, with the simulator's state and counters as
//! proof of what reached the TSB.

use tsb_pkcs11_test_support as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::pki::{ec_key, Ca};
use common::*;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use cryptoki_sys::*;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509NameBuilder, X509};
use serde_json::json;
use tsb_sim::{CertificateFormat, Curve, KeySpec, SimConfig};

// ---------------------------------------------------------------- helpers

/// A creation or search template: (attribute type, value bytes).
type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn as_ulong(v: &[u8]) -> CK_ULONG {
    CK_ULONG::from_ne_bytes(v.try_into().expect("CK_ULONG"))
}

/// One attribute through the raw function list: its bytes, or the return value.
fn raw_attr(
    raw: &Raw,
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_TYPE,
) -> Result<Vec<u8>, CK_RV> {
    let mut a = CK_ATTRIBUTE {
        type_: t,
        pValue: std::ptr::null_mut(),
        ulValueLen: 0,
    };
    // SAFETY: valid pointers; the second call's buffer has the announced length.
    unsafe {
        let rv = (raw.f.C_GetAttributeValue.unwrap())(session, object, &mut a, 1);
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut buf = vec![0u8; a.ulValueLen as usize];
        a.pValue = buf.as_mut_ptr().cast();
        let rv = (raw.f.C_GetAttributeValue.unwrap())(session, object, &mut a, 1);
        if rv != CKR_OK {
            return Err(rv);
        }
        buf.truncate(a.ulValueLen as usize);
        Ok(buf)
    }
}

/// `C_CreateObject` with a (type, value) template.
fn raw_create(
    raw: &Raw,
    session: CK_SESSION_HANDLE,
    template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut attrs: Vec<CK_ATTRIBUTE> = template
        .iter()
        .map(|(t, v)| CK_ATTRIBUTE {
            type_: *t,
            pValue: v.as_ptr() as *mut _,
            ulValueLen: v.len() as CK_ULONG,
        })
        .collect();
    let mut handle: CK_OBJECT_HANDLE = 0;
    // SAFETY: the template points into `template`, alive for the call.
    let rv = unsafe {
        (raw.f.C_CreateObject.unwrap())(
            session,
            attrs.as_mut_ptr(),
            attrs.len() as CK_ULONG,
            &mut handle,
        )
    };
    if rv == CKR_OK {
        Ok(handle)
    } else {
        Err(rv)
    }
}

fn raw_destroy(raw: &Raw, session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> CK_RV {
    // SAFETY: plain values.
    unsafe { (raw.f.C_DestroyObject.unwrap())(session, object) }
}

/// The template `pkcs11-tool --write-object --type cert` sends, with the given label/id.
fn cert_template(
    der: &[u8],
    label: Option<&str>,
    id: Option<&[u8]>,
) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    let mut t = vec![
        (CKA_TOKEN, vec![CK_TRUE]),
        (CKA_VALUE, der.to_vec()),
        (CKA_CLASS, ulong(CKO_CERTIFICATE)),
        (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
        (CKA_PRIVATE, vec![CK_FALSE]),
    ];
    if let Some(l) = label {
        t.push((CKA_LABEL, l.as_bytes().to_vec()));
    }
    if let Some(i) = id {
        t.push((CKA_ID, i.to_vec()));
    }
    t
}

/// Handles of the objects matching a raw template.
fn raw_find(
    raw: &Raw,
    session: CK_SESSION_HANDLE,
    template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Vec<CK_OBJECT_HANDLE> {
    let mut attrs: Vec<CK_ATTRIBUTE> = template
        .iter()
        .map(|(t, v)| CK_ATTRIBUTE {
            type_: *t,
            pValue: v.as_ptr() as *mut _,
            ulValueLen: v.len() as CK_ULONG,
        })
        .collect();
    let mut out = Vec::new();
    // SAFETY: valid pointers for each call.
    unsafe {
        assert_eq!(
            (raw.f.C_FindObjectsInit.unwrap())(
                session,
                attrs.as_mut_ptr(),
                attrs.len() as CK_ULONG
            ),
            CKR_OK
        );
        loop {
            let mut buf = [0 as CK_OBJECT_HANDLE; 16];
            let mut n: CK_ULONG = 0;
            assert_eq!(
                (raw.f.C_FindObjects.unwrap())(session, buf.as_mut_ptr(), 16, &mut n),
                CKR_OK
            );
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        assert_eq!((raw.f.C_FindObjectsFinal.unwrap())(session), CKR_OK);
    }
    out
}

fn class_template(class: CK_OBJECT_CLASS) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    vec![(CKA_CLASS, ulong(class))]
}

fn cert_of(raw: &Raw, s: CK_SESSION_HANDLE, label: &str) -> Vec<CK_OBJECT_HANDLE> {
    raw_find(
        raw,
        s,
        &[
            (CKA_CLASS, ulong(CKO_CERTIFICATE)),
            (CKA_LABEL, label.as_bytes().to_vec()),
        ],
    )
}

/// DER INTEGER of a positive serial number, built from OpenSSL's big-endian magnitude.
fn serial_der(cert: &X509) -> Vec<u8> {
    let mut content = cert.serial_number().to_bn().unwrap().to_vec();
    if content.is_empty() || content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    assert!(content.len() < 128);
    [vec![0x02, content.len() as u8], content].concat()
}

/// What a certificate object must hold.
struct Expected<'a> {
    der: &'a [u8],
    label: &'a str,
    id: &'a [u8],
    category: CK_ULONG,
    destroyable: bool,
}

/// Checks every certificate attribute of `object` against OpenSSL's parse of the DER.
fn assert_cert_attributes(raw: &Raw, s: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, e: Expected) {
    let Expected {
        der,
        label,
        id,
        category,
        destroyable,
    } = e;
    let parsed = X509::from_der(der).expect("OpenSSL parses the certificate");
    let get = |t| raw_attr(raw, s, object, t).unwrap_or_else(|rv| panic!("{t:#x}: {rv:#x}"));
    assert_eq!(as_ulong(&get(CKA_CLASS)), CKO_CERTIFICATE);
    assert_eq!(as_ulong(&get(CKA_CERTIFICATE_TYPE)), CKC_X_509);
    assert_eq!(get(CKA_VALUE), der);
    assert_eq!(get(CKA_SUBJECT), parsed.subject_name().to_der().unwrap());
    assert_eq!(get(CKA_ISSUER), parsed.issuer_name().to_der().unwrap());
    assert_eq!(get(CKA_SERIAL_NUMBER), serial_der(&parsed));
    let sha1 = openssl::hash::hash(MessageDigest::sha1(), der).unwrap();
    assert_eq!(get(CKA_CHECK_VALUE), sha1[..3].to_vec());
    assert_eq!(
        get(CKA_PUBLIC_KEY_INFO),
        parsed.public_key().unwrap().public_key_to_der().unwrap()
    );
    assert_eq!(get(CKA_LABEL), label.as_bytes());
    assert_eq!(get(CKA_ID), id);
    assert_eq!(as_ulong(&get(CKA_CERTIFICATE_CATEGORY)), category);
    assert_eq!(get(CKA_TRUSTED), vec![CK_FALSE]);
    assert_eq!(get(CKA_TOKEN), vec![CK_TRUE]);
    assert_eq!(get(CKA_PRIVATE), vec![CK_FALSE]);
    assert_eq!(get(CKA_MODIFIABLE), vec![CK_FALSE]);
    assert_eq!(
        get(CKA_DESTROYABLE),
        vec![if destroyable { CK_TRUE } else { CK_FALSE }]
    );
}

/// Writes `certs` as one PEM file.
fn write_pem(dir: &Path, name: &str, certs: &[&X509]) -> PathBuf {
    let path = dir.join(name);
    let pem: Vec<u8> = certs.iter().flat_map(|c| c.to_pem().unwrap()).collect();
    std::fs::write(&path, pem).unwrap();
    path
}

/// An EC P-256 key written as PKCS#8 PEM, for a simulator key whose public key the test
/// knows before the simulator starts.
fn key_file(dir: &Path, name: &str) -> (PKey<Private>, PathBuf) {
    let key = ec_key();
    let path = dir.join(name);
    std::fs::write(&path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (key, path)
}

fn small_sim(format: CertificateFormat) -> SimConfig {
    SimConfig {
        certificate_format: format,
        keys: vec![
            KeySpec::rsa("rsa-2048", 2048)
                .with_id("0001")
                .with_self_signed_certificate("RSA code signing"),
            KeySpec::ec("ec-p256", Curve::P256)
                .with_id("0004")
                .with_self_signed_certificate("EC code signing"),
            KeySpec::ec("ec-p384", Curve::P384).with_id("0005"),
        ],
        ..SimConfig::default()
    }
}

/// The key's `CKA_ID` as the module shows it on the private key.
fn key_id(h: &Harness, s: CK_SESSION_HANDLE, label: &str) -> Vec<u8> {
    let key = raw_find(
        &h.raw,
        s,
        &[
            (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
            (CKA_LABEL, label.as_bytes().to_vec()),
        ],
    );
    assert_eq!(key.len(), 1, "private key {label}");
    raw_attr(&h.raw, s, key[0], CKA_ID).unwrap()
}

// ---------------------------------------------------------------- certificates from the TSB

#[test]
fn tsb_certificates_are_objects_in_every_encoding() {
    // GET /v1/certificate answers base64 DER, PEM, or a rawCertificate field: all three
    // give the same objects.
    for format in [
        CertificateFormat::Base64,
        CertificateFormat::Pem,
        CertificateFormat::RawCertificate,
    ] {
        let h = Harness::with(small_sim(format), json!({}));
        let s = h.session();
        let sh = s.handle();
        // A search by class alone finds exactly the keys' certificates.
        let certs = raw_find(&h.raw, sh, &class_template(CKO_CERTIFICATE));
        assert_eq!(certs.len(), 2, "{format:?}: rsa-2048 and ec-p256 have one");
        for (label, id) in [("rsa-2048", [0u8, 1]), ("ec-p256", [0, 4])] {
            let der = h.sim.certificate_der(label).expect("sim certificate");
            let found = cert_of(&h.raw, sh, label);
            assert_eq!(found.len(), 1, "{format:?} {label}");
            assert!(certs.contains(&found[0]));
            assert_eq!(key_id(&h, sh, label), id.to_vec());
            assert_cert_attributes(
                &h.raw,
                sh,
                found[0],
                Expected {
                    der: &der,
                    label,
                    id: &id,
                    category: 1,
                    destroyable: true,
                },
            );
            // By CKA_ID too: the key pair and its certificate share it.
            let by_id = raw_find(
                &h.raw,
                sh,
                &[(CKA_CLASS, ulong(CKO_CERTIFICATE)), (CKA_ID, id.to_vec())],
            );
            assert_eq!(by_id, found);
            // The certificate holds the key's public key (the simulator's, parsed by OpenSSL).
            let parsed = X509::from_der(&der).unwrap();
            assert!(parsed
                .public_key()
                .unwrap()
                .public_eq(&h.sim_public_key(label)));
        }
        assert!(cert_of(&h.raw, sh, "ec-p384").is_empty());
    }
}

#[test]
fn certificates_are_fetched_lazily_with_their_key() {
    let h = Harness::with(small_sim(CertificateFormat::Base64), json!({}));
    let s = h.session();
    let sh = s.handle();
    assert_eq!(
        h.sim.counter("GET /v1/certificate"),
        0,
        "nothing before a query"
    );
    assert_eq!(cert_of(&h.raw, sh, "ec-p256").len(), 1);
    assert_eq!(h.sim.counter("GET /v1/certificate"), 1, "only ec-p256's");
    assert_eq!(h.sim.counter("GET /v1/key"), 0, "no key list for a label");
    // Cached with the key: a second search and attribute reads make no request.
    assert_eq!(cert_of(&h.raw, sh, "ec-p256").len(), 1);
    assert_eq!(h.sim.counter("GET /v1/certificate"), 1);
    // A search by class loads the other keys, each with its certificate.
    assert_eq!(
        raw_find(&h.raw, sh, &class_template(CKO_CERTIFICATE)).len(),
        2
    );
    assert_eq!(h.sim.counter("GET /v1/certificate"), 3);
}

// ---------------------------------------------------------------- pkcs11.certificates chains

#[test]
fn configured_chain_gives_leaf_and_authority_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (key, key_path) = key_file(dir.path(), "chain-key.p8.pem");
    let root = Ca::root("Test Root");
    let inter = root.intermediate("Test Intermediate");
    let leaf = inter.issue("chain signer", &key);
    let chain = write_pem(dir.path(), "chain.pem", &[&leaf, &inter.cert, &root.cert]);
    let mut spec = KeySpec::ec("chain-key", Curve::P256).with_id("00c1");
    spec.private_key_file = Some(key_path);
    let cfg = SimConfig {
        keys: vec![spec, KeySpec::ec("ec-p256", Curve::P256).with_id("0004")],
        ..SimConfig::default()
    };
    let h = Harness::with(cfg, json!({ "certificates": { "chain-key": chain } }));
    let rw = h.pkcs11.open_rw_session(h.slot).unwrap();
    let sh = rw.handle();

    // The leaf is the key's certificate (category 1, the key's CKA_ID), read-only.
    let found = cert_of(&h.raw, sh, "chain-key");
    assert_eq!(found.len(), 1);
    let leaf_der = leaf.to_der().unwrap();
    assert_cert_attributes(
        &h.raw,
        sh,
        found[0],
        Expected {
            der: &leaf_der,
            label: "chain-key",
            id: &[0, 0xc1],
            category: 1,
            destroyable: false,
        },
    );
    assert_eq!(
        h.sim.counter("GET /v1/certificate"),
        0,
        "a configured chain needs no TSB certificate"
    );

    // The intermediate and the root are authority certificates (category 2).
    let authorities = raw_find(
        &h.raw,
        sh,
        &[
            (CKA_CLASS, ulong(CKO_CERTIFICATE)),
            (CKA_CERTIFICATE_CATEGORY, ulong(2)),
        ],
    );
    assert_eq!(authorities.len(), 2);
    let mut values: Vec<Vec<u8>> = authorities
        .iter()
        .map(|o| raw_attr(&h.raw, sh, *o, CKA_VALUE).unwrap())
        .collect();
    values.sort();
    let mut expected = vec![inter.cert.to_der().unwrap(), root.cert.to_der().unwrap()];
    expected.sort();
    assert_eq!(values, expected);
    for o in &authorities {
        let der = raw_attr(&h.raw, sh, *o, CKA_VALUE).unwrap();
        let label = String::from_utf8(raw_attr(&h.raw, sh, *o, CKA_LABEL).unwrap()).unwrap();
        let id = raw_attr(&h.raw, sh, *o, CKA_ID).unwrap();
        assert_cert_attributes(
            &h.raw,
            sh,
            *o,
            Expected {
                der: &der,
                label: &label,
                id: &id,
                category: 2,
                destroyable: false,
            },
        );
    }
    // All of them appear in a search by class (with no certificate for ec-p256).
    assert_eq!(
        raw_find(&h.raw, sh, &class_template(CKO_CERTIFICATE)).len(),
        3
    );

    // Configured certificates cannot be destroyed or replaced through PKCS#11.
    for o in authorities.iter().chain(&found) {
        assert_eq!(raw_destroy(&h.raw, sh, *o), CKR_ACTION_PROHIBITED);
    }
    let other = inter.issue("another leaf", &key);
    assert_eq!(
        raw_create(
            &h.raw,
            sh,
            &cert_template(&other.to_der().unwrap(), Some("chain-key"), None)
        ),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    assert_eq!(h.sim.counter("POST /v1/certificate/import/plain"), 0);
    assert_eq!(h.sim.counter("DELETE /v1/certificate"), 0);
}

#[test]
fn mismatched_configured_leaf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::root("Mismatch Root");
    let stranger = ec_key();
    let wrong_leaf = root.issue("not the key's", &stranger);
    let chain = write_pem(dir.path(), "wrong.pem", &[&wrong_leaf, &root.cert]);
    let h = Harness::with(
        small_sim(CertificateFormat::Base64),
        // ec-p384 has no TSB certificate; ec-p256 has one, which is used instead.
        json!({ "certificates": { "ec-p384": chain, "ec-p256": chain } }),
    );
    let s = h.session();
    let sh = s.handle();
    assert!(
        cert_of(&h.raw, sh, "ec-p384").is_empty(),
        "a leaf with another public key is not the key's certificate"
    );
    let found = cert_of(&h.raw, sh, "ec-p256");
    assert_eq!(found.len(), 1);
    let tsb_der = h.sim.certificate_der("ec-p256").unwrap();
    assert_eq!(raw_attr(&h.raw, sh, found[0], CKA_VALUE).unwrap(), tsb_der);
    assert_ne!(tsb_der, wrong_leaf.to_der().unwrap());
    // The wrong leaf is no object at all; the root (shared by both chains) appears once.
    let all = raw_find(&h.raw, sh, &class_template(CKO_CERTIFICATE));
    let values: Vec<Vec<u8>> = all
        .iter()
        .map(|o| raw_attr(&h.raw, sh, *o, CKA_VALUE).unwrap())
        .collect();
    assert!(!values.contains(&wrong_leaf.to_der().unwrap()));
    assert_eq!(
        values
            .iter()
            .filter(|v| **v == root.cert.to_der().unwrap())
            .count(),
        1
    );
}

// ---------------------------------------------------------------- C_CreateObject / C_DestroyObject

#[test]
fn create_and_destroy_certificate_objects() {
    let h = Harness::with(small_sim(CertificateFormat::Base64), json!({}));
    let ro = h.session();
    let rw = h.pkcs11.open_rw_session(h.slot).unwrap();
    let (ro, rw) = (ro.handle(), rw.handle());
    let ca = Ca::root("Issuing CA");
    let p384 = h.sim_public_key("ec-p384");
    let cert = ca.issue("ec-p384 signer", &p384).to_der().unwrap();
    let template = cert_template(&cert, Some("ec-p384"), None);

    // Read-only session: refused before anything reaches the TSB.
    assert_eq!(
        raw_create(&h.raw, ro, &template),
        Err(CKR_SESSION_READ_ONLY)
    );

    // Refused templates.
    let for_other_key = ca
        .issue("rsa", &h.sim_public_key("rsa-2048"))
        .to_der()
        .unwrap();
    let refused: Vec<(&str, Template, CK_RV)> = vec![
        (
            "a certificate for another key",
            cert_template(&for_other_key, Some("ec-p384"), None),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            "CKA_ID of another key",
            cert_template(&cert, Some("ec-p384"), Some(&[0, 4])),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            "a label that names no key",
            cert_template(&cert, Some("no-such-key"), None),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            "a data object",
            vec![
                (CKA_CLASS, ulong(CKO_DATA)),
                (CKA_TOKEN, vec![CK_TRUE]),
                (CKA_VALUE, b"data".to_vec()),
            ],
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            "a private key",
            vec![
                (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
                (CKA_KEY_TYPE, ulong(CKK_EC)),
            ],
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            "no class",
            vec![(CKA_VALUE, cert.clone())],
            CKR_TEMPLATE_INCOMPLETE,
        ),
        (
            "no value",
            vec![
                (CKA_CLASS, ulong(CKO_CERTIFICATE)),
                (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
                (CKA_LABEL, b"ec-p384".to_vec()),
            ],
            CKR_TEMPLATE_INCOMPLETE,
        ),
        (
            "a value that is no certificate",
            cert_template(b"not DER", Some("ec-p384"), None),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            "a wrong check value",
            [
                cert_template(&cert, Some("ec-p384"), None),
                vec![(CKA_CHECK_VALUE, vec![1, 2, 3])],
            ]
            .concat(),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            "another subject",
            [
                cert_template(&cert, Some("ec-p384"), None),
                vec![(CKA_SUBJECT, ca.cert.subject_name().to_der().unwrap())],
            ]
            .concat(),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            "a session object",
            [
                vec![(CKA_TOKEN, vec![CK_FALSE])],
                cert_template(&cert, Some("ec-p384"), None)[1..].to_vec(),
            ]
            .concat(),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            "an unknown attribute",
            [
                cert_template(&cert, Some("ec-p384"), None),
                vec![(CKA_MODULUS, vec![1])],
            ]
            .concat(),
            CKR_ATTRIBUTE_TYPE_INVALID,
        ),
    ];
    for (what, t, rv) in refused {
        assert_eq!(raw_create(&h.raw, rw, &t), Err(rv), "{what}");
    }
    assert_eq!(
        h.sim.counter("POST /v1/certificate/import/plain"),
        0,
        "nothing refused reached the TSB"
    );
    assert!(h.sim.certificate_der("ec-p384").is_none());

    // Stored, with the attributes OpenSSL reads from the same DER; found at once (the cache
    // is updated without another GET).
    let gets = h.sim.counter("GET /v1/certificate");
    let handle = raw_create(&h.raw, rw, &template).expect("C_CreateObject");
    assert_eq!(h.sim.counter("POST /v1/certificate/import/plain"), 1);
    assert_eq!(h.sim.certificate_der("ec-p384").as_deref(), Some(&cert[..]));
    assert_cert_attributes(
        &h.raw,
        ro,
        handle,
        Expected {
            der: &cert,
            label: "ec-p384",
            id: &[0, 5],
            category: 1,
            destroyable: true,
        },
    );
    assert_eq!(cert_of(&h.raw, ro, "ec-p384"), vec![handle]);
    assert_eq!(h.sim.counter("GET /v1/certificate"), gets);

    // A new certificate replaces it (the TSB keeps one per key); CKA_ID alone names the key;
    // CKA_SUBJECT/ISSUER/SERIAL_NUMBER as pkcs11-tool sends them are accepted.
    let renewed = ca.issue("ec-p384 renewed", &p384);
    let renewed_der = renewed.to_der().unwrap();
    let t = [
        cert_template(&renewed_der, None, Some(&[0, 5])),
        vec![
            (CKA_SUBJECT, renewed.subject_name().to_der().unwrap()),
            (CKA_ISSUER, renewed.issuer_name().to_der().unwrap()),
            (CKA_SERIAL_NUMBER, serial_der(&renewed)),
        ],
    ]
    .concat();
    assert_eq!(raw_create(&h.raw, rw, &t), Ok(handle));
    assert_eq!(h.sim.certificate_der("ec-p384"), Some(renewed_der.clone()));
    assert_eq!(
        raw_attr(&h.raw, ro, handle, CKA_VALUE).unwrap(),
        renewed_der
    );

    // Destroy: not in a read-only session, never a key; then removed from the TSB.
    assert_eq!(raw_destroy(&h.raw, ro, handle), CKR_SESSION_READ_ONLY);
    let private = raw_find(
        &h.raw,
        ro,
        &[
            (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
            (CKA_LABEL, b"ec-p384".to_vec()),
        ],
    );
    let public = raw_find(
        &h.raw,
        ro,
        &[
            (CKA_CLASS, ulong(CKO_PUBLIC_KEY)),
            (CKA_LABEL, b"ec-p384".to_vec()),
        ],
    );
    assert_eq!(raw_destroy(&h.raw, rw, private[0]), CKR_ACTION_PROHIBITED);
    assert_eq!(raw_destroy(&h.raw, rw, public[0]), CKR_ACTION_PROHIBITED);
    assert_eq!(raw_destroy(&h.raw, rw, 0x7777), CKR_OBJECT_HANDLE_INVALID);
    assert_eq!(h.sim.counter("DELETE /v1/certificate"), 0);
    assert_eq!(raw_destroy(&h.raw, rw, handle), CKR_OK);
    assert_eq!(h.sim.counter("DELETE /v1/certificate"), 1);
    assert!(h.sim.certificate_der("ec-p384").is_none());
    assert!(cert_of(&h.raw, ro, "ec-p384").is_empty());
    assert_eq!(
        raw_attr(&h.raw, ro, handle, CKA_VALUE),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    assert_eq!(raw_destroy(&h.raw, rw, handle), CKR_OBJECT_HANDLE_INVALID);
    // The key itself is untouched.
    assert_eq!(
        raw_attr(&h.raw, ro, private[0], CKA_LABEL).unwrap(),
        b"ec-p384"
    );

    // Neither CKA_LABEL nor CKA_ID: the key holding the certificate's public key.
    assert_eq!(
        raw_create(&h.raw, rw, &cert_template(&cert, None, None)),
        Ok(handle)
    );
    assert_eq!(h.sim.certificate_der("ec-p384"), Some(cert.clone()));
}

#[test]
fn changes_need_a_login_when_the_token_has_a_pin() {
    const JWT: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.";
    let mut cfg = small_sim(CertificateFormat::Base64);
    cfg.auth.bearer_token = Some(JWT.to_string());
    let h = Harness::with(cfg, json!({ "pinIs": "token" }));
    let rw = h.pkcs11.open_rw_session(h.slot).unwrap();
    let ca = Ca::root("CA");
    let cert = ca
        .issue("p384", &h.sim_public_key("ec-p384"))
        .to_der()
        .unwrap();
    let t = cert_template(&cert, Some("ec-p384"), None);
    assert_eq!(
        raw_create(&h.raw, rw.handle(), &t),
        Err(CKR_USER_NOT_LOGGED_IN)
    );
    rw.login(UserType::User, Some(&AuthPin::new(JWT.into())))
        .unwrap();
    let handle = raw_create(&h.raw, rw.handle(), &t).expect("created after login");
    rw.logout().unwrap();
    assert_eq!(
        raw_destroy(&h.raw, rw.handle(), handle),
        CKR_USER_NOT_LOGGED_IN
    );
    assert!(h.sim.certificate_der("ec-p384").is_some());
}

#[test]
fn cryptoki_create_object_round_trip() {
    // The same through the `cryptoki` crate's typed API, as a Rust application would do it.
    let h = Harness::with(small_sim(CertificateFormat::Base64), json!({}));
    let rw = h.pkcs11.open_rw_session(h.slot).unwrap();
    let ca = Ca::root("CA");
    let cert = ca.issue("p384", &h.sim_public_key("ec-p384"));
    let der = cert.to_der().unwrap();
    let handle = rw
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Label(b"ec-p384".to_vec()),
            Attribute::Value(der.clone()),
        ])
        .expect("C_CreateObject");
    let found = rw
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(vec![0, 5]),
        ])
        .unwrap();
    assert_eq!(found, vec![handle]);
    rw.destroy_object(handle).expect("C_DestroyObject");
    assert!(h.sim.certificate_der("ec-p384").is_none());
}

// ---------------------------------------------------------------- pkcs11-tool

/// Runs OpenSC's pkcs11-tool on the harness's module and configuration, or `None` when
/// pkcs11-tool is not installed (the test then says so loudly and passes).
fn pkcs11_tool(h: &Harness, args: &[&str]) -> Option<Output> {
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&h.module_path)
        .args(args)
        .env("TSB_PKCS11_CONFIG", &h.config_path)
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .output();
    match out {
        Ok(o) => Some(o),
        Err(e) => {
            eprintln!("\n!!! SKIPPED: pkcs11-tool cannot run ({e}): apt-get install opensc\n");
            None
        }
    }
}

fn check(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The blocks of `pkcs11-tool -O` output describing certificate objects.
fn listed_certificates(listing: &str) -> Vec<String> {
    listing
        .split("Certificate Object")
        .skip(1)
        .map(|b| b.split("Object;").next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn pkcs11_tool_writes_lists_and_deletes_certificates() {
    let h = Harness::with(small_sim(CertificateFormat::Base64), json!({}));
    let ca = Ca::root("pkcs11-tool CA");
    let cert = ca.issue("pkcs11-tool signer", &h.sim_public_key("ec-p384"));
    let der = cert.to_der().unwrap();
    let path = h.dir.path().join("cert.der");
    std::fs::write(&path, &der).unwrap();
    let path = path.to_str().unwrap();

    let Some(out) = pkcs11_tool(
        &h,
        &[
            "--write-object",
            path,
            "--type",
            "cert",
            "--label",
            "ec-p384",
        ],
    ) else {
        return;
    };
    check("pkcs11-tool --write-object", out);
    assert_eq!(h.sim.counter("POST /v1/certificate/import/plain"), 1);
    assert_eq!(h.sim.certificate_der("ec-p384"), Some(der.clone()));

    // -O lists it (a new process: the certificate comes from the TSB).
    let listing = check("pkcs11-tool -O", pkcs11_tool(&h, &["-O"]).unwrap());
    let certs = listed_certificates(&listing);
    let ours: Vec<&String> = certs.iter().filter(|b| b.contains("ec-p384")).collect();
    assert_eq!(ours.len(), 1, "{listing}");
    assert!(ours[0].contains("pkcs11-tool signer"), "{listing}");
    assert!(
        ours[0].contains("ID:         0005"),
        "CKA_ID 00 05: {listing}"
    );
    // The TSB's own certificates of the other keys are listed too.
    assert_eq!(certs.len(), 3, "{listing}");

    // --read-object gives back the DER.
    let read = pkcs11_tool(
        &h,
        &["--read-object", "--type", "cert", "--label", "ec-p384"],
    )
    .unwrap();
    assert!(read.status.success());
    assert_eq!(read.stdout, der);

    check(
        "pkcs11-tool --delete-object",
        pkcs11_tool(
            &h,
            &["--delete-object", "--type", "cert", "--label", "ec-p384"],
        )
        .unwrap(),
    );
    assert_eq!(h.sim.counter("DELETE /v1/certificate"), 1);
    assert!(h.sim.certificate_der("ec-p384").is_none());
    let listing = check("pkcs11-tool -O", pkcs11_tool(&h, &["-O"]).unwrap());
    assert!(
        !listed_certificates(&listing)
            .iter()
            .any(|b| b.contains("ec-p384")),
        "{listing}"
    );

    // By --id (the key's CKA_ID 00 05, from the TSB's id "0005"), with a PEM file and a
    // free-form label.
    let pem_path = write_pem(h.dir.path(), "cert.pem", &[&cert]);
    check(
        "pkcs11-tool --write-object --id",
        pkcs11_tool(
            &h,
            &[
                "--write-object",
                pem_path.to_str().unwrap(),
                "--type",
                "cert",
                "--id",
                "0005",
                "--label",
                "my certificate",
            ],
        )
        .unwrap(),
    );
    assert_eq!(h.sim.certificate_der("ec-p384"), Some(der.clone()));

    // A certificate for another key is refused, and the TSB is not asked.
    let wrong = ca.issue("wrong", &h.sim_public_key("rsa-2048"));
    let wrong_path = h.dir.path().join("wrong.der");
    std::fs::write(&wrong_path, wrong.to_der().unwrap()).unwrap();
    let out = pkcs11_tool(
        &h,
        &[
            "--write-object",
            wrong_path.to_str().unwrap(),
            "--type",
            "cert",
            "--label",
            "ec-p384",
        ],
    )
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CKR_TEMPLATE_INCONSISTENT"), "{stderr}");
    assert_eq!(h.sim.counter("POST /v1/certificate/import/plain"), 2);
    assert_eq!(h.sim.certificate_der("ec-p384"), Some(der));
}

// ---------------------------------------------------------------- NSS (certutil)

/// Runs an NSS tool (`certutil`, `modutil`; Debian package libnss3-tools) with the harness's
/// configuration, or `None` when it is not installed (the test then says so loudly and passes).
fn nss_tool(h: &Harness, tool: &str, args: &[&str]) -> Option<Output> {
    let out = Command::new(tool)
        .args(args)
        .env("TSB_PKCS11_CONFIG", &h.config_path)
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) => Some(o),
        Err(e) => {
            eprintln!(
                "\n!!! SKIPPED: {tool} cannot run ({e}): apt-get install libnss3-tools (scripts/test.sh does)\n"
            );
            None
        }
    }
}

/// NSS end to end (PKCS#11 v2.40 §4.6.3, docs/clients.md "NSS"): NSS stores certificates with
/// `CKA_ID` = SHA-1 of the public key and a nickname as `CKA_LABEL`, and finds a
/// certificate's private key through the certificate's `CKA_ID`. `certutil -S -x` makes a
/// self-signed certificate with a token key and stores it on the token, `certutil -A` stores a
/// certificate made elsewhere, and `certutil -C` signs a request with the key of each stored
/// certificate; every signature is checked with OpenSSL under the simulator's public key.
#[test]
fn nss_certutil_stores_certificates_and_signs_with_them() {
    let sim = SimConfig {
        keys: vec![
            KeySpec::rsa("rsa-2048", 2048).with_id("0001"),
            KeySpec::ec("ec-p256", Curve::P256).with_id("0004"),
        ],
        ..SimConfig::default()
    };
    let h = Harness::with(sim, json!({}));
    let dir = h.dir.path();
    let db = format!("sql:{}", dir.join("nssdb").display());
    std::fs::create_dir(dir.join("nssdb")).unwrap();
    let Some(out) = nss_tool(&h, "certutil", &["-N", "-d", &db, "--empty-password"]) else {
        return;
    };
    check("certutil -N", out);
    let module = h.module_path.to_str().unwrap();
    let args = ["-dbdir", &db, "-add", "tsb", "-libfile", module, "-force"];
    check("modutil -add", nss_tool(&h, "modutil", &args).unwrap());
    let token = h.pkcs11.get_token_info(h.slot).unwrap().label().to_string();
    let certutil = |what: &str, args: &[&str]| -> String {
        let mut a = vec!["-d", &db];
        a.extend_from_slice(args);
        check(what, nss_tool(&h, "certutil", &a).unwrap())
    };
    let noise = dir.join("noise");
    std::fs::write(&noise, [7u8; 64]).unwrap();

    // certutil -S -x: a self-signed certificate by the token key ec-p256 (-k: its CKA_ID in
    // hex), stored on the token; an e-mail address makes NSS send CKA_NSS_EMAIL too.
    certutil(
        "certutil -S -x",
        &[
            "-S",
            "-x",
            "-n",
            "nss self-signed",
            "-s",
            "CN=nss self-signed,E=signer@example.com",
            "-t",
            ",,",
            "-h",
            &token,
            "-k",
            "0004",
            "-Z",
            "SHA256",
            "-z",
            noise.to_str().unwrap(),
        ],
    );
    let p256 = h.sim_public_key("ec-p256");
    let stored =
        X509::from_der(&h.sim.certificate_der("ec-p256").expect("stored on the TSB")).unwrap();
    assert!(stored.public_key().unwrap().public_eq(&p256));
    assert!(
        stored.verify(&p256).unwrap(),
        "the self-signed certificate is signed by the token key (OpenSSL)"
    );
    // The certificate object shows the key's own CKA_ID, not NSS's SHA-1.
    let s = h.session();
    let objects = cert_of(&h.raw, s.handle(), "ec-p256");
    assert_eq!(objects.len(), 1);
    assert_eq!(
        raw_attr(&h.raw, s.handle(), objects[0], CKA_ID).unwrap(),
        key_id(&h, s.handle(), "ec-p256")
    );

    // certutil -A: an RSA certificate issued elsewhere for the token key rsa-2048, with trust
    // flags (NSS keeps them in its own database when the token refuses its trust object).
    let ca = Ca::root("NSS test CA");
    let rsa_cert = ca.issue("rsa-2048 via certutil -A", &h.sim_public_key("rsa-2048"));
    let pem = write_pem(dir, "rsa.pem", &[&rsa_cert]);
    certutil(
        "certutil -A",
        &[
            "-A",
            "-n",
            "nss rsa",
            "-t",
            "CT,C,C",
            "-h",
            &token,
            "-i",
            pem.to_str().unwrap(),
        ],
    );
    assert_eq!(
        h.sim.certificate_der("rsa-2048"),
        Some(rsa_cert.to_der().unwrap())
    );
    let listing = certutil("certutil -L", &["-L", "-h", &token]);
    for label in ["ec-p256", "rsa-2048"] {
        assert!(listing.contains(&format!("{token}:{label}")), "{listing}");
    }

    // certutil -C: NSS finds each certificate's private key on the token and signs with it.
    for (n, label) in ["ec-p256", "rsa-2048"].into_iter().enumerate() {
        let key = ec_key();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", &format!("issued by {label}"))
            .unwrap();
        let mut req = openssl::x509::X509ReqBuilder::new().unwrap();
        req.set_subject_name(&name.build()).unwrap();
        req.set_pubkey(&key).unwrap();
        req.sign(&key, MessageDigest::sha256()).unwrap();
        let csr = dir.join(format!("{label}.csr"));
        std::fs::write(&csr, req.build().to_der().unwrap()).unwrap();
        let issued = dir.join(format!("{label}.issued.der"));
        certutil(
            "certutil -C",
            &[
                "-C",
                "-c",
                &format!("{token}:{label}"),
                "-i",
                csr.to_str().unwrap(),
                "-o",
                issued.to_str().unwrap(),
                "-m",
                &(100 + n).to_string(),
                "-Z",
                "SHA256",
            ],
        );
        let issued = X509::from_der(&std::fs::read(&issued).unwrap()).unwrap();
        assert!(issued.public_key().unwrap().public_eq(&key));
        assert!(
            issued.verify(&h.sim_public_key(label)).unwrap(),
            "{label}: certutil -C signed with the token key (OpenSSL)"
        );
    }

    // certutil -S without -k: NSS generates a token key pair itself, then sets each key's
    // CKA_ID to the SHA-1 of its public key (C_SetAttributeValue). The TSB cannot change a
    // key's id, so that is refused with a WARN line naming C_SetAttributeValue and CKA_ID, and
    // certutil fails without storing a certificate (docs/clients.md "NSS").
    let before = h.sim.key_labels().len();
    let a = [
        "-d",
        &db,
        "-S",
        "-x",
        "-n",
        "nss generated",
        "-s",
        "CN=nss generated",
        "-t",
        ",,",
        "-h",
        &token,
        "-k",
        "ec",
        "-q",
        "nistp256",
        "-Z",
        "SHA256",
        "-z",
        noise.to_str().unwrap(),
    ];
    let out = nss_tool(&h, "certutil", &a).unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("C_SetAttributeValue"))
        .collect();
    assert_eq!(refused.len(), 1, "{stderr}");
    assert!(
        refused[0].contains("CKA_ID") && refused[0].contains("CKR_ACTION_PROHIBITED"),
        "{}",
        refused[0]
    );
    // The key NSS generated stays on the TSB (keys are deleted only with allowKeyDeletion):
    // documented, with its generated label named in the module's INFO line.
    assert_eq!(h.sim.key_labels().len(), before + 1);
    let listing = certutil("certutil -L", &["-L", "-h", &token]);
    assert!(!listing.contains("nss generated"), "{listing}");
}
