//! Certificate objects stored on the TSB (PKCS#11 v2.40 §4.6.3, §5.7 C_CreateObject /
//! C_DestroyObject), with certificates made by OpenSSL.

use cryptoki_sys::*;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePublicKey;
use serde_json::json;

use super::fake::FakeTsb;
use super::{find, session, token_with, ulong};
use crate::error::Result;
use crate::token::attributes::AttrValue;
use crate::token::Token;

type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

/// An X.509 certificate for `key`, issued by a throw-away CA key.
pub(super) fn certificate(key: &SigningKey, cn: &str, serial: u32) -> X509 {
    let spki = key.verifying_key().to_public_key_der().unwrap();
    let public = PKey::public_key_from_der(spki.as_bytes()).unwrap();
    let ca = PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", cn).unwrap();
    let subject = subject.build();
    let mut issuer = X509NameBuilder::new().unwrap();
    issuer.append_entry_by_text("CN", "Test CA").unwrap();
    let issuer = issuer.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap())
        .unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(&issuer).unwrap();
    b.set_pubkey(&public).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&ca, MessageDigest::sha256()).unwrap();
    b.build()
}

fn template(cert: &X509, extra: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Template {
    let mut t = vec![
        (CKA_CLASS, ulong(CKO_CERTIFICATE)),
        (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
        (CKA_VALUE, cert.to_der().unwrap()),
    ];
    t.extend_from_slice(extra);
    t
}

pub(super) fn create(
    token: &Token,
    s: CK_SESSION_HANDLE,
    t: &Template,
) -> Result<CK_OBJECT_HANDLE> {
    let fixed: Template = t
        .iter()
        .filter(|(a, _)| crate::token::attributes::fixed_len(*a).is_some())
        .cloned()
        .collect();
    token.create_object(s, &fixed, || Ok(t.clone()))
}

fn bytes(v: &[u8]) -> AttrValue {
    AttrValue::Bytes(v.to_vec())
}

/// §5.7.1 C_CreateObject stores the certificate for the key CKA_LABEL names; the object has the
/// X.509 attributes of §4.6.3 as OpenSSL reads them, is found by a search, comes back from the
/// TSB in a new token, and C_DestroyObject removes it from the TSB.
#[test]
fn stored_certificate_objects() {
    let fake = FakeTsb::new();
    let key = fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let cert = certificate(&key, "leaf", 4242);
    let der = cert.to_der().unwrap();
    let h = create(&token, s, &template(&cert, &[(CKA_LABEL, b"ec".to_vec())])).unwrap();
    assert!(fake.calls().contains(&"import-certificate ec".to_string()));
    let serial = Asn1Integer::from_bn(&BigNum::from_u32(4242).unwrap()).unwrap();
    let serial_der = {
        let v = serial.to_bn().unwrap().to_vec();
        let mut d = vec![0x02, v.len() as u8];
        d.extend_from_slice(&v);
        d
    };
    let sha1 = openssl::sha::sha1(&der);
    let spki = key.verifying_key().to_public_key_der().unwrap();
    let expected = [
        (CKA_CLASS, AttrValue::Bytes(ulong(CKO_CERTIFICATE))),
        (CKA_CERTIFICATE_TYPE, AttrValue::Bytes(ulong(CKC_X_509))),
        (CKA_TOKEN, bytes(&[CK_TRUE])),
        (CKA_PRIVATE, bytes(&[CK_FALSE])),
        (CKA_MODIFIABLE, bytes(&[CK_FALSE])),
        (CKA_DESTROYABLE, bytes(&[CK_TRUE])),
        (CKA_TRUSTED, bytes(&[CK_FALSE])),
        (CKA_LABEL, bytes(b"ec")),
        (CKA_ID, bytes(b"ec")),
        (CKA_VALUE, bytes(&der)),
        (CKA_SUBJECT, bytes(&cert.subject_name().to_der().unwrap())),
        (CKA_ISSUER, bytes(&cert.issuer_name().to_der().unwrap())),
        (CKA_SERIAL_NUMBER, bytes(&serial_der)),
        (CKA_CHECK_VALUE, bytes(&sha1[..3])),
        (CKA_CERTIFICATE_CATEGORY, AttrValue::Bytes(ulong(1))),
        (CKA_PUBLIC_KEY_INFO, bytes(spki.as_bytes())),
        (CKA_NAME_HASH_ALGORITHM, AttrValue::Bytes(ulong(CKM_SHA_1))),
        (
            CKA_JAVA_MIDP_SECURITY_DOMAIN,
            AttrValue::Bytes(ulong(CK_SECURITY_DOMAIN_UNSPECIFIED)),
        ),
        (CKA_START_DATE, bytes(&[])),
        (CKA_URL, bytes(&[])),
        (CKA_HASH_OF_SUBJECT_PUBLIC_KEY, bytes(&[])),
        (CKA_MODULUS, AttrValue::Invalid),
        (CKA_SIGN, AttrValue::Invalid),
    ];
    for (attr, value) in &expected {
        assert_eq!(
            token.attribute_values(s, h, &[*attr]).unwrap(),
            vec![value.clone()],
            "attribute {attr:#x}"
        );
    }
    assert_eq!(
        find(&token, s, &[(CKA_CLASS, ulong(CKO_CERTIFICATE))]),
        vec![h]
    );
    assert_eq!(find(&token, s, &[(CKA_LABEL, b"ec".to_vec())]).len(), 3);

    // A new token reads it back from the TSB, with the same handle.
    let again = token_with(&fake, json!({}));
    let s2 = session(&again);
    assert_eq!(
        find(
            &again,
            s2,
            &[
                (CKA_CLASS, ulong(CKO_CERTIFICATE)),
                (CKA_LABEL, b"ec".to_vec())
            ]
        ),
        vec![h]
    );
    assert_eq!(
        again.attribute_values(s2, h, &[CKA_VALUE]).unwrap(),
        vec![bytes(&der)]
    );

    // C_DestroyObject: read-write sessions only; the TSB's copy goes, and the handle.
    let ro = token.open_session(0, CKF_SERIAL_SESSION, None).unwrap();
    assert_eq!(
        token.destroy_object(ro, h).unwrap_err().code(),
        CKR_SESSION_READ_ONLY
    );
    token.destroy_object(s, h).unwrap();
    assert!(fake.calls().contains(&"delete-certificate ec".to_string()));
    assert_eq!(
        token
            .attribute_values(s, h, &[CKA_LABEL])
            .unwrap_err()
            .code(),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert!(find(&token, s, &[(CKA_CLASS, ulong(CKO_CERTIFICATE))]).is_empty());
    // The TSB fails to delete it (an HSM error): C_DestroyObject fails and the object stays.
    let h = create(&token, s, &template(&cert, &[(CKA_LABEL, b"ec".to_vec())])).unwrap();
    *fake.delete_certificate_error.lock() = Some((500, 701));
    assert_eq!(
        token.destroy_object(s, h).unwrap_err().code(),
        CKR_DEVICE_ERROR
    );
    *fake.delete_certificate_error.lock() = None;
    assert_eq!(
        token.attribute_values(s, h, &[CKA_VALUE]).unwrap(),
        vec![bytes(&der)]
    );
    token.destroy_object(s, h).unwrap();
    // Already gone on the TSB: the object goes all the same.
    let h = create(&token, s, &template(&cert, &[(CKA_LABEL, b"ec".to_vec())])).unwrap();
    fake.delete_certificate_behind_the_tokens_back("ec");
    token.destroy_object(s, h).unwrap();
    assert_eq!(
        token.destroy_object(s, h).unwrap_err().code(),
        CKR_OBJECT_HANDLE_INVALID
    );
}

/// Without CKA_LABEL the key is found by CKA_ID, and with neither by the public key.
#[test]
fn the_key_is_found_by_id_or_public_key() {
    let fake = FakeTsb::new();
    let a = fake.add_key("a", false);
    let b = fake.add_key("b", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let by_id = create(
        &token,
        s,
        &template(&certificate(&a, "a", 1), &[(CKA_ID, b"a".to_vec())]),
    )
    .unwrap();
    let by_key = create(&token, s, &template(&certificate(&b, "b", 2), &[])).unwrap();
    assert_ne!(by_id, by_key);
    assert_eq!(
        token.attribute_values(s, by_key, &[CKA_LABEL]).unwrap(),
        vec![bytes(b"b")]
    );
    // A label that names no key, but an ID that does: the ID's key.
    let h = create(
        &token,
        s,
        &template(
            &certificate(&a, "a2", 3),
            &[(CKA_LABEL, b"nobody".to_vec()), (CKA_ID, b"a".to_vec())],
        ),
    )
    .unwrap();
    assert_eq!(h, by_id, "the key's certificate handle");
    assert_eq!(
        token.attribute_values(s, h, &[CKA_LABEL]).unwrap(),
        vec![bytes(b"a")]
    );
}

/// The CKA_ID NSS gives a certificate, computed with OpenSSL: the SHA-1 of the uncompressed EC
/// point of its public key.
fn nss_id(cert: &X509) -> Vec<u8> {
    let ec = cert.public_key().unwrap().ec_key().unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let point = ec
        .public_key()
        .to_bytes(
            ec.group(),
            openssl::ec::PointConversionForm::UNCOMPRESSED,
            &mut ctx,
        )
        .unwrap();
    openssl::sha::sha1(&point).to_vec()
}

/// NSS (`certutil -A`/`-S`) creates a certificate with CKA_ID = SHA-1 of its public key and its
/// nickname as CKA_LABEL: the certificate is stored for the key holding that public key, under
/// the key's own CKA_ID and label, so a search for the private key by the certificate's
/// CKA_ID finds it (how NSS looks up a certificate's key).
#[test]
fn nss_certificate_templates_are_stored_for_the_key_of_their_public_key() {
    let fake = FakeTsb::new();
    let a = fake.add_key("a", false);
    let b = fake.add_key("b", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let cert = certificate(&b, "b by NSS", 9);
    // The template NSS 3.87 sends (nssToken_ImportCertificate), with CKA_NSS_EMAIL.
    let nss = |cert: &X509, label: &[u8], id: Vec<u8>| -> Template {
        template(
            cert,
            &[
                (CKA_TOKEN, vec![CK_TRUE]),
                (CKA_ID, id),
                (CKA_LABEL, label.to_vec()),
                (CKA_ISSUER, cert.issuer_name().to_der().unwrap()),
                (CKA_SUBJECT, cert.subject_name().to_der().unwrap()),
                (
                    CKA_SERIAL_NUMBER,
                    Asn1Integer::from_bn(&BigNum::from_u32(9).unwrap())
                        .unwrap()
                        .to_bn()
                        .unwrap()
                        .to_vec(),
                ),
                (
                    CKA_VENDOR_DEFINED | 0x4E53_4352,
                    b"b@example.com\0".to_vec(),
                ),
            ],
        )
    };
    // Another key's SHA-1 names no key and not the certificate's key: refused.
    let other = nss(&cert, b"nickname", nss_id(&certificate(&a, "a", 1)));
    assert_eq!(
        create(&token, s, &other).unwrap_err().code(),
        CKR_TEMPLATE_INCONSISTENT
    );
    assert!(!fake
        .calls()
        .iter()
        .any(|c| c.starts_with("import-certificate")));

    let h = create(&token, s, &nss(&cert, b"nickname", nss_id(&cert))).unwrap();
    assert!(fake.calls().contains(&"import-certificate b".to_string()));
    assert_eq!(
        token.attribute_values(s, h, &[CKA_ID, CKA_LABEL]).unwrap(),
        vec![bytes(b"b"), bytes(b"b")],
        "the key's own CKA_ID and label"
    );
    let id = match &token.attribute_values(s, h, &[CKA_ID]).unwrap()[0] {
        AttrValue::Bytes(v) => v.clone(),
        other => panic!("{other:?}"),
    };
    let private = find(
        &token,
        s,
        &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY)), (CKA_ID, id)],
    );
    assert_eq!(
        private.len(),
        1,
        "the private key of the certificate's CKA_ID"
    );
    assert_eq!(
        token.attribute_values(s, private[0], &[CKA_LABEL]).unwrap(),
        vec![bytes(b"b")]
    );
    // The nickname is the key's label: the NSS ID is accepted beside it too.
    let h2 = create(&token, s, &nss(&cert, b"b", nss_id(&cert))).unwrap();
    assert_eq!(h2, h);
}

/// What C_CreateObject refuses, and with which code (§5.7.1, §4.6.3).
#[test]
fn certificate_template_refusals() {
    let fake = FakeTsb::new();
    let key = fake.add_key("ec", false);
    let other = fake.add_key("other", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let cert = certificate(&key, "leaf", 7);
    let label = (CKA_LABEL, b"ec".to_vec());
    let serial_content = BigNum::from_u32(7).unwrap().to_vec();
    // Matching optional attributes are accepted (the serial also as bare content octets).
    create(
        &token,
        s,
        &template(
            &cert,
            &[
                label.clone(),
                (CKA_SUBJECT, cert.subject_name().to_der().unwrap()),
                (CKA_ISSUER, cert.issuer_name().to_der().unwrap()),
                (CKA_SERIAL_NUMBER, serial_content.clone()),
                (
                    CKA_CHECK_VALUE,
                    openssl::sha::sha1(&cert.to_der().unwrap())[..3].to_vec(),
                ),
                (CKA_TOKEN, vec![CK_TRUE]),
                (CKA_PRIVATE, vec![CK_FALSE]),
                (CKA_TRUSTED, vec![CK_FALSE]),
                (CKA_DESTROYABLE, vec![CK_TRUE]),
                (
                    CKA_CERTIFICATE_CATEGORY,
                    ulong(CK_CERTIFICATE_CATEGORY_TOKEN_USER),
                ),
                (
                    CKA_JAVA_MIDP_SECURITY_DOMAIN,
                    ulong(CK_SECURITY_DOMAIN_UNSPECIFIED),
                ),
                (CKA_URL, vec![]),
                (CKA_PUBLIC_KEY_INFO, vec![]),
                (CKA_START_DATE, vec![]),
            ],
        ),
    )
    .unwrap();
    let base = template(&cert, &[]);
    let without = |attr: CK_ATTRIBUTE_TYPE| -> Template {
        let mut t: Template = base.iter().filter(|(a, _)| *a != attr).cloned().collect();
        t.push(label.clone());
        t
    };
    let with = |extra: (CK_ATTRIBUTE_TYPE, Vec<u8>)| template(&cert, &[label.clone(), extra]);
    let cases: Vec<(Template, CK_RV)> = vec![
        (without(CKA_CLASS), CKR_TEMPLATE_INCOMPLETE),
        (without(CKA_CERTIFICATE_TYPE), CKR_TEMPLATE_INCOMPLETE),
        (without(CKA_VALUE), CKR_TEMPLATE_INCOMPLETE),
        (
            vec![(CKA_CLASS, ulong(CKO_PRIVATE_KEY)), label.clone()],
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            vec![(CKA_CLASS, ulong(0x0fff_0000)), label.clone()],
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            vec![
                (CKA_CLASS, ulong(CKO_CERTIFICATE)),
                (CKA_CERTIFICATE_TYPE, ulong(CKC_WTLS)),
                (CKA_VALUE, cert.to_der().unwrap()),
            ],
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            vec![
                (CKA_CLASS, ulong(CKO_CERTIFICATE)),
                (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
                (CKA_VALUE, b"not a certificate".to_vec()),
            ],
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (with((CKA_TOKEN, vec![CK_FALSE])), CKR_TEMPLATE_INCONSISTENT),
        (
            with((CKA_PRIVATE, vec![CK_TRUE])),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            with((CKA_MODIFIABLE, vec![CK_TRUE])),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            with((CKA_DESTROYABLE, vec![CK_FALSE])),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (with((CKA_TRUSTED, vec![CK_TRUE])), CKR_ATTRIBUTE_READ_ONLY),
        (
            with((
                CKA_CERTIFICATE_CATEGORY,
                ulong(CK_CERTIFICATE_CATEGORY_AUTHORITY),
            )),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            with((CKA_JAVA_MIDP_SECURITY_DOMAIN, ulong(1))),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            with((CKA_URL, b"http://x".to_vec())),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            with((CKA_SUBJECT, b"\x30\x00".to_vec())),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            with((CKA_ISSUER, cert.subject_name().to_der().unwrap())),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            with((CKA_SERIAL_NUMBER, vec![0x02, 0x01, 0x08])),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            with((CKA_CHECK_VALUE, vec![0, 0, 0])),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            with((
                CKA_PUBLIC_KEY_INFO,
                other.verifying_key().to_public_key_der().unwrap().to_vec(),
            )),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (with((CKA_MODULUS, vec![1])), CKR_ATTRIBUTE_TYPE_INVALID),
        (with((CKA_LABEL, vec![0xff])), CKR_ATTRIBUTE_VALUE_INVALID),
        (
            template(&cert, &[(CKA_LABEL, b"nobody".to_vec())]),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            template(&cert, &[(CKA_ID, b"nobody".to_vec())]),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            template(&cert, &[label.clone(), (CKA_ID, b"other".to_vec())]),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            template(&cert, &[(CKA_LABEL, b"other".to_vec())]),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            template(
                &certificate(&SigningKey::from_bytes(&[7; 32].into()).unwrap(), "x", 1),
                &[],
            ),
            CKR_TEMPLATE_INCONSISTENT,
        ),
    ];
    for (i, (t, rv)) in cases.iter().enumerate() {
        assert_eq!(create(&token, s, t).unwrap_err().code(), *rv, "case {i}");
    }
    assert_eq!(
        fake.count("import-certificate"),
        1,
        "only the good template"
    );
    let ro = token.open_session(0, CKF_SERIAL_SESSION, None).unwrap();
    assert_eq!(
        create(&token, ro, &template(&cert, std::slice::from_ref(&label)))
            .unwrap_err()
            .code(),
        CKR_SESSION_READ_ONLY
    );
}

/// A leaf issued for `key` by a self-signed CA: (leaf, CA).
fn chain(key: &SigningKey) -> (X509, X509) {
    let ca_key = PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let name = |cn: &str| {
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        n.build()
    };
    let build = |subject: &str, public: &PKey<openssl::pkey::Public>, serial: u32| {
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap())
            .unwrap();
        b.set_subject_name(&name(subject)).unwrap();
        b.set_issuer_name(&name("Chain CA")).unwrap();
        b.set_pubkey(public).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.sign(&ca_key, MessageDigest::sha256()).unwrap();
        b.build()
    };
    let ca_public = PKey::public_key_from_der(&ca_key.public_key_to_der().unwrap()).unwrap();
    let spki = key.verifying_key().to_public_key_der().unwrap();
    let leaf_public = PKey::public_key_from_der(spki.as_bytes()).unwrap();
    (
        build("leaf", &leaf_public, 10),
        build("Chain CA", &ca_public, 1),
    )
}

/// `pkcs11.certificates`: the chain's leaf is the key's certificate object (category token
/// user), each authority certificate an object of category authority; none can be destroyed
/// or replaced through PKCS#11 (CKR_ACTION_PROHIBITED / CKR_TEMPLATE_INCONSISTENT). A leaf of
/// another key is not used: the TSB's certificate is shown instead.
#[test]
fn configured_certificate_chains() {
    let fake = FakeTsb::new();
    let key = fake.add_key("ec", false);
    let other = fake.add_key("other", false);
    let (leaf, ca) = chain(&key);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ec-chain.pem");
    let mut pem = leaf.to_pem().unwrap();
    pem.extend(ca.to_pem().unwrap());
    std::fs::write(&path, &pem).unwrap();
    // The chain for "other" holds a leaf of "ec": not used for "other".
    let wrong = dir.path().join("other-chain.pem");
    std::fs::write(&wrong, &pem).unwrap();
    let stored = certificate(&other, "other's own", 5);
    let token = token_with(&fake, json!({"certificates": {"ec": path, "other": wrong}}));
    let s = session(&token);
    let certs = |t: &Token| find(t, s, &[(CKA_CLASS, ulong(CKO_CERTIFICATE))]);
    let all = certs(&token);
    assert_eq!(all.len(), 2, "the leaf of ec and the CA once: {all:?}");
    let value = |h| {
        token
            .attribute_values(
                s,
                h,
                &[CKA_VALUE, CKA_CERTIFICATE_CATEGORY, CKA_DESTROYABLE],
            )
            .unwrap()
    };
    let mut seen = vec![];
    for h in &all {
        seen.push(value(*h));
    }
    assert!(seen.contains(&vec![
        bytes(&leaf.to_der().unwrap()),
        AttrValue::Bytes(ulong(1)),
        bytes(&[CK_FALSE])
    ]));
    assert!(seen.contains(&vec![
        bytes(&ca.to_der().unwrap()),
        AttrValue::Bytes(ulong(2)),
        bytes(&[CK_FALSE])
    ]));
    for h in &all {
        assert_eq!(
            token.destroy_object(s, *h).unwrap_err().code(),
            CKR_ACTION_PROHIBITED
        );
    }
    assert_eq!(
        create(&token, s, &template(&leaf, &[(CKA_LABEL, b"ec".to_vec())]))
            .unwrap_err()
            .code(),
        CKR_TEMPLATE_INCONSISTENT
    );
    // "other" has the TSB's certificate once one is stored.
    create(
        &token,
        s,
        &template(&stored, &[(CKA_LABEL, b"other".to_vec())]),
    )
    .unwrap();
    let fresh = token_with(&fake, json!({"certificates": {"ec": path, "other": wrong}}));
    let s2 = session(&fresh);
    let other_cert = find(
        &fresh,
        s2,
        &[
            (CKA_CLASS, ulong(CKO_CERTIFICATE)),
            (CKA_LABEL, b"other".to_vec()),
        ],
    );
    assert_eq!(other_cert.len(), 1);
    assert_eq!(
        fresh
            .attribute_values(s2, other_cert[0], &[CKA_VALUE])
            .unwrap(),
        vec![bytes(&stored.to_der().unwrap())]
    );
}

/// A certificate the TSB refuses with 400 (a well-formed X.509 it will not store) is the
/// template's fault: CKR_ATTRIBUTE_VALUE_INVALID (PKCS#11 v2.40 §5.7.1 C_CreateObject); another
/// TSB failure is not, and neither creates an object.
#[test]
fn a_certificate_the_tsb_refuses_is_an_invalid_value() {
    let fake = FakeTsb::new();
    let key = fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let cert = certificate(&key, "leaf", 7);
    let t = template(&cert, &[(CKA_LABEL, b"ec".to_vec())]);
    *fake.import_error.lock() = Some((400, 600));
    assert_eq!(
        create(&token, s, &t).unwrap_err().code(),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    *fake.import_error.lock() = Some((500, 701));
    let other = create(&token, s, &t).unwrap_err().code();
    assert_ne!(other, CKR_ATTRIBUTE_VALUE_INVALID);
    assert_ne!(other, CKR_OK);
    assert_eq!(fake.count("import-certificate ec"), 2);
    *fake.import_error.lock() = None;
    assert!(find(&token, s, &[(CKA_CLASS, ulong(CKO_CERTIFICATE))]).is_empty());
    create(&token, s, &t).unwrap();
}

/// A certificate for a key deleted on the TSB since the application found it (the import
/// answers "key not found") is refused as inconsistent with the token, and the key's cached
/// objects are dropped at once.
#[test]
fn a_certificate_for_a_key_gone_from_the_tsb_is_inconsistent() {
    let fake = FakeTsb::new();
    let key = fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let label = (CKA_LABEL, b"ec".to_vec());
    assert_eq!(
        find(&token, s, std::slice::from_ref(&label)).len(),
        2,
        "the key's two halves"
    );
    let cert = certificate(&key, "leaf", 7);
    let t = template(&cert, std::slice::from_ref(&label));
    fake.remove_key("ec");
    let err = create(&token, s, &t).unwrap_err();
    assert_eq!(err.code(), CKR_TEMPLATE_INCONSISTENT, "{}", err.message());
    assert!(
        err.message().contains("key 'ec' is no longer on the TSB"),
        "{}",
        err.message()
    );
    assert!(
        find(&token, s, &[label]).is_empty(),
        "the key left the list"
    );
}

/// Every refusal of C_CreateObject is one WARN line naming its reason (docs/troubleshooting.md),
/// whether the refusal was logged where it was found or only where the call ends.
#[test]
fn a_refused_create_object_is_one_warn_line() {
    use crate::tsb::tests::log_capture;
    if !log_capture::install() {
        eprintln!("another logger is installed; a_refused_create_object_is_one_warn_line skipped");
        return;
    }
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let class: CK_ULONG = 0x7e57_c1a5;
    let err = create(&token, s, &vec![(CKA_CLASS, ulong(class))]).unwrap_err();
    assert_eq!(err.code(), CKR_ATTRIBUTE_VALUE_INVALID);
    let lines: Vec<String> = log_capture::LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("0x7e57c1a5"))
        .cloned()
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("WARN"), "{}", lines[0]);
}

/// A chain with several authority certificates: each is an object of its own, with its own
/// handle, label and value.
#[test]
fn every_authority_certificate_of_a_chain_is_an_object() {
    let fake = FakeTsb::new();
    let key = fake.add_key("ec", false);
    let other = fake.add_key("other", false);
    let (leaf, ca) = chain(&key);
    let root = certificate(&other, "Root CA", 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ec-chain.pem");
    let mut pem = leaf.to_pem().unwrap();
    pem.extend(ca.to_pem().unwrap());
    pem.extend(root.to_pem().unwrap());
    std::fs::write(&path, &pem).unwrap();
    let token = token_with(&fake, json!({"certificates": {"ec": path}}));
    let s = session(&token);
    let authorities = find(
        &token,
        s,
        &[
            (CKA_CLASS, ulong(CKO_CERTIFICATE)),
            (CKA_CERTIFICATE_CATEGORY, ulong(2)),
        ],
    );
    assert_eq!(authorities.len(), 2, "{authorities:?}");
    let mut seen = vec![];
    for h in authorities {
        seen.push(
            token
                .attribute_values(s, h, &[CKA_LABEL, CKA_VALUE])
                .unwrap(),
        );
    }
    seen.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(
        seen,
        vec![
            vec![bytes(b"ec CA 1"), bytes(&ca.to_der().unwrap())],
            vec![bytes(b"ec CA 2"), bytes(&root.to_der().unwrap())],
        ]
    );
}

/// The handle C_CreateObject returns names the new certificate at once, even when the key's
/// entry changed while the certificate was stored (another thread's search found the key
/// unreadable for a moment): the key is read again.
#[test]
fn a_stored_certificate_s_handle_is_valid_when_the_key_changed_meanwhile() {
    let fake = FakeTsb::new();
    let key = fake.add_key("ec", false);
    let token = std::sync::Arc::new(token_with(&fake, json!({"cacheTtlSecs": 0})));
    let s = session(&token);
    let cert = certificate(&key, "stored meanwhile", 9);
    let other_session = session(&token);
    *fake.import_hook.lock() = Some(Box::new({
        let (fake, token) = (fake.clone(), token.clone());
        move || {
            fake.label_errors
                .lock()
                .insert("ec".to_string(), (400, None));
            assert!(find(&token, other_session, &[(CKA_LABEL, b"ec".to_vec())]).is_empty());
            fake.label_errors.lock().clear();
        }
    }));
    let h = create(&token, s, &template(&cert, &[(CKA_LABEL, b"ec".to_vec())])).unwrap();
    assert!(fake.import_hook.lock().is_none(), "the hook ran");
    assert_eq!(
        token.attribute_values(s, h, &[CKA_VALUE]).unwrap(),
        vec![bytes(&cert.to_der().unwrap())]
    );
}
