//! C_GenerateKeyPair (PKCS#11 v3.0 §5.14) and C_DestroyObject on keys (§5.7) over the fake
//! TSB: the new key is usable at once, and deletion follows `pkcs11.allowKeyDeletion`.

use cryptoki_sys::*;
use serde_json::json;

use super::fake::FakeTsb;
use super::{find, session, signature, token_with, ulong};
use crate::token::attributes::AttrValue;
use crate::token::{MechParams, Mechanism, Token};

type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn ec_templates(label: &str, params: &[u8]) -> (Template, Template) {
    (
        vec![
            (CKA_LABEL, label.as_bytes().to_vec()),
            (CKA_EC_PARAMS, params.to_vec()),
            (CKA_VERIFY, vec![CK_TRUE]),
        ],
        vec![
            (CKA_LABEL, label.as_bytes().to_vec()),
            (CKA_SIGN, vec![CK_TRUE]),
            (CKA_SENSITIVE, vec![CK_TRUE]),
            (CKA_TOKEN, vec![CK_TRUE]),
        ],
    )
}

fn generate(
    token: &Token,
    s: CK_SESSION_HANDLE,
    m: CK_MECHANISM_TYPE,
    (public, private): &(Template, Template),
) -> crate::error::Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
    token.generate_key_pair(s, &Mechanism::new(m), public, private)
}

/// §5.14: a generated key pair exists on the TSB, its handles are those a search finds, it
/// signs at once (verified by OpenSSL), and the generation mechanisms report their sizes.
#[test]
fn generated_keys_sign_at_once() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    for (m, min, max) in [
        (CKM_RSA_PKCS_KEY_PAIR_GEN, 2048, 4096),
        (CKM_EC_KEY_PAIR_GEN, 256, 521),
        (CKM_EC_EDWARDS_KEY_PAIR_GEN, 256, 256),
    ] {
        let info = token.mechanism_info(0, m).unwrap();
        assert_eq!((info.ulMinKeySize, info.ulMaxKeySize), (min, max));
        assert_eq!(
            info.flags & (CKF_HW | CKF_GENERATE_KEY_PAIR | CKF_SIGN),
            CKF_HW | CKF_GENERATE_KEY_PAIR
        );
        assert!(token.mechanism_list(0).unwrap().contains(&m));
    }
    // PKCS#11 v3.0 §2.3.2: EC generation over F_p, named curves given by OID, uncompressed
    // points, and nothing else.
    assert_eq!(
        token.mechanism_info(0, CKM_EC_KEY_PAIR_GEN).unwrap().flags,
        CKF_HW
            | CKF_GENERATE_KEY_PAIR
            | CKF_EC_F_P
            | CKF_EC_NAMEDCURVE
            | CKF_EC_UNCOMPRESS
            | CKF_EC_OID
    );
    assert_eq!(
        token
            .mechanism_info(0, CKM_EC_EDWARDS_KEY_PAIR_GEN)
            .unwrap()
            .flags
            & (CKF_EC_NAMEDCURVE | CKF_EC_F_P),
        CKF_EC_NAMEDCURVE
    );

    let (public, private) = generate(
        &token,
        s,
        CKM_EC_KEY_PAIR_GEN,
        &ec_templates("new-ec", P256),
    )
    .unwrap();
    assert!(fake.calls().contains(
        &"create new-ec Ec(\"1.2.840.10045.3.1.7\") destroyable=true modifiable=true".to_string()
    ));
    let found = find(&token, s, &[(CKA_LABEL, b"new-ec".to_vec())]);
    assert_eq!(found.len(), 2);
    assert!(found.contains(&public) && found.contains(&private));
    assert_eq!(
        token
            .attribute_values(s, private, &[CKA_CLASS, CKA_KEY_TYPE])
            .unwrap(),
        vec![
            AttrValue::Bytes(ulong(CKO_PRIVATE_KEY)),
            AttrValue::Bytes(ulong(CKK_EC))
        ]
    );
    assert_eq!(
        token.attribute_values(s, public, &[CKA_CLASS]).unwrap(),
        vec![AttrValue::Bytes(ulong(CKO_PUBLIC_KEY))]
    );
    token
        .sign_init(s, &Mechanism::new(CKM_ECDSA_SHA256), private)
        .unwrap();
    let sig = signature(token.sign(s, b"new key", Some(64)).unwrap());
    let spki = match &token
        .attribute_values(s, public, &[CKA_PUBLIC_KEY_INFO])
        .unwrap()[0]
    {
        AttrValue::Bytes(b) => b.clone(),
        other => panic!("{other:?}"),
    };
    let pkey = openssl::pkey::PKey::public_key_from_der(&spki).unwrap();
    let r_s = openssl::ecdsa::EcdsaSig::from_private_components(
        openssl::bn::BigNum::from_slice(&sig[..32]).unwrap(),
        openssl::bn::BigNum::from_slice(&sig[32..]).unwrap(),
    )
    .unwrap();
    assert!(r_s
        .verify(&openssl::sha::sha256(b"new key"), &pkey.ec_key().unwrap())
        .unwrap());

    // RSA and Ed25519.
    let rsa = (
        vec![
            (CKA_LABEL, b"new-rsa".to_vec()),
            (CKA_MODULUS_BITS, ulong(2048)),
            (CKA_PUBLIC_EXPONENT, vec![0, 1, 0, 1]),
            (CKA_CLASS, ulong(CKO_PUBLIC_KEY)),
            (CKA_KEY_TYPE, ulong(CKK_RSA)),
        ],
        vec![
            (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
            (CKA_PRIVATE, vec![CK_TRUE]),
            (CKA_DESTROYABLE, vec![CK_FALSE]),
            (CKA_TOKEN, vec![CK_TRUE]),
        ],
    );
    let (_, rsa_private) = generate(&token, s, CKM_RSA_PKCS_KEY_PAIR_GEN, &rsa).unwrap();
    assert!(fake
        .calls()
        .contains(&"create new-rsa Rsa(2048) destroyable=false modifiable=true".to_string()));
    assert_eq!(
        token
            .attribute_values(s, rsa_private, &[CKA_MODULUS_BITS])
            .unwrap(),
        vec![AttrValue::Bytes(ulong(2048))]
    );
    let ed = ec_templates("new-ed", b"\x13\x0cedwards25519");
    let (_, ed_private) = generate(&token, s, CKM_EC_EDWARDS_KEY_PAIR_GEN, &ed).unwrap();
    assert_eq!(
        token
            .attribute_values(s, ed_private, &[CKA_KEY_TYPE])
            .unwrap(),
        vec![AttrValue::Bytes(ulong(CKK_EC_EDWARDS))]
    );
}

/// What C_GenerateKeyPair refuses, and with which code (§5.14, §5.1).
#[test]
fn key_generation_refusals() {
    let fake = FakeTsb::new();
    fake.add_key("taken", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let ok = ec_templates("k", P256);
    assert_eq!(
        generate(&token, s, CKM_ECDSA, &ok).unwrap_err().code(),
        CKR_MECHANISM_INVALID
    );
    let with_params = Mechanism {
        mechanism: CKM_EC_KEY_PAIR_GEN,
        params: MechParams::Invalid("x"),
    };
    assert_eq!(
        token
            .generate_key_pair(s, &with_params, &ok.0, &ok.1)
            .unwrap_err()
            .code(),
        CKR_MECHANISM_PARAM_INVALID
    );
    let ro = token.open_session(0, CKF_SERIAL_SESSION, None).unwrap();
    assert_eq!(
        generate(&token, ro, CKM_EC_KEY_PAIR_GEN, &ok)
            .unwrap_err()
            .code(),
        CKR_SESSION_READ_ONLY
    );
    assert_eq!(
        generate(&token, s + 1000, CKM_EC_KEY_PAIR_GEN, &ok)
            .unwrap_err()
            .code(),
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec_templates("taken", P256))
            .unwrap_err()
            .code(),
        CKR_TEMPLATE_INCONSISTENT,
        "a label in use"
    );
    // The fake TSB refuses P-384: a 400 from POST /v1/key is the template's fault.
    assert_eq!(
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec_templates("p384", P384))
            .unwrap_err()
            .code(),
        CKR_TEMPLATE_INCONSISTENT
    );
    assert_eq!(
        fake.count("create "),
        1,
        "nothing created for the refusals before it"
    );
    let mut profile = ec_templates("prof", P256);
    profile.1.push((
        crate::token::keygen::CKA_TSB_POLICY_PROFILE,
        b"nope".to_vec(),
    ));
    assert_eq!(
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &profile)
            .unwrap_err()
            .code(),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    assert!(find(&token, s, &[(CKA_LABEL, b"k".to_vec())]).is_empty());

    // With `keys`, a label outside the list would be invisible: refused.
    let limited = token_with(&fake, json!({"keys": ["taken"]}));
    let s = session(&limited);
    assert_eq!(
        generate(&limited, s, CKM_EC_KEY_PAIR_GEN, &ok)
            .unwrap_err()
            .code(),
        CKR_TEMPLATE_INCONSISTENT
    );

    // With a PIN, only a logged-in user generates keys.
    *fake.good_jwt.lock() = Some("jwt".into());
    let pin = token_with(&fake, json!({"pinIs": "token"}));
    let s = session(&pin);
    assert_eq!(
        generate(&pin, s, CKM_EC_KEY_PAIR_GEN, &ok)
            .unwrap_err()
            .code(),
        CKR_USER_NOT_LOGGED_IN
    );
    pin.login(s, CKU_USER, b"jwt").unwrap();
    generate(&pin, s, CKM_EC_KEY_PAIR_GEN, &ok).unwrap();
}

/// §5.7 C_DestroyObject on a key: refused (CKR_ACTION_PROHIBITED) unless
/// `pkcs11.allowKeyDeletion`; with it, the key is deleted on the TSB and both handles go.
#[test]
fn key_deletion_follows_the_configuration() {
    let fake = FakeTsb::new();
    fake.add_key("doomed", false);
    fake.add_key("locked-key", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = super::private_key(&token, s, "doomed");
    assert_eq!(
        token.attribute_values(s, key, &[CKA_DESTROYABLE]).unwrap(),
        vec![AttrValue::Bytes(vec![CK_FALSE])]
    );
    assert_eq!(
        token.destroy_object(s, key).unwrap_err().code(),
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(fake.count("delete "), 0);

    let token = token_with(&fake, json!({"allowKeyDeletion": true}));
    let s = session(&token);
    let ro = token.open_session(0, CKF_SERIAL_SESSION, None).unwrap();
    let objects = find(&token, s, &[(CKA_LABEL, b"doomed".to_vec())]);
    assert_eq!(objects.len(), 2);
    assert_eq!(
        token
            .attribute_values(s, objects[0], &[CKA_DESTROYABLE])
            .unwrap(),
        vec![AttrValue::Bytes(vec![CK_TRUE])]
    );
    assert_eq!(
        token.destroy_object(ro, objects[0]).unwrap_err().code(),
        CKR_SESSION_READ_ONLY
    );
    token.destroy_object(s, objects[0]).unwrap();
    assert!(fake.calls().contains(&"delete doomed".to_string()));
    for h in objects {
        assert_eq!(
            token
                .attribute_values(s, h, &[CKA_LABEL])
                .unwrap_err()
                .code(),
            CKR_OBJECT_HANDLE_INVALID
        );
    }
    let locked = super::private_key(&token, s, "locked-key");
    assert_eq!(
        token.destroy_object(s, locked).unwrap_err().code(),
        CKR_ACTION_PROHIBITED
    );
    // A key already deleted elsewhere is gone all the same.
    fake.add_key("twice", false);
    let twice = super::private_key(&token, s, "twice");
    fake.remove_key("twice");
    token.destroy_object(s, twice).unwrap();
    assert_eq!(
        token.destroy_object(s, twice).unwrap_err().code(),
        CKR_OBJECT_HANDLE_INVALID
    );
}

/// Template attributes of the wrong key type or contradicting each other (§5.14).
#[test]
fn key_generation_template_conflicts() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let mut ec_with_bits = ec_templates("k", P256);
    ec_with_bits.0.push((CKA_MODULUS_BITS, ulong(2048)));
    let mut two_labels = ec_templates("k", P256);
    two_labels.1[0] = (CKA_LABEL, b"other".to_vec());
    let mut same_label_twice = ec_templates("k", P256);
    same_label_twice.1.push((CKA_LABEL, b"k".to_vec()));
    // The second value would be acceptable alone: the contradiction is what is refused.
    let mut two_ids = ec_templates("k", P256);
    two_ids.0.push((CKA_ID, b"x".to_vec()));
    two_ids.1.push((CKA_ID, b"k".to_vec()));
    let mut two_destroyable = ec_templates("k", P256);
    two_destroyable.0.push((CKA_DESTROYABLE, vec![CK_TRUE]));
    two_destroyable.1.push((CKA_DESTROYABLE, vec![CK_FALSE]));
    let mut two_modifiable = ec_templates("k", P256);
    two_modifiable.0.push((CKA_MODIFIABLE, vec![CK_TRUE]));
    two_modifiable.1.push((CKA_MODIFIABLE, vec![CK_FALSE]));
    let mut ec_with_exponent = ec_templates("k", P256);
    ec_with_exponent
        .0
        .push((CKA_PUBLIC_EXPONENT, vec![1, 0, 1]));
    for (t, rv) in [
        (ec_with_bits, CKR_ATTRIBUTE_TYPE_INVALID),
        (ec_with_exponent, CKR_ATTRIBUTE_TYPE_INVALID),
        (two_ids, CKR_TEMPLATE_INCONSISTENT),
        (two_destroyable, CKR_TEMPLATE_INCONSISTENT),
        (two_modifiable, CKR_TEMPLATE_INCONSISTENT),
        (two_labels, CKR_TEMPLATE_INCONSISTENT),
    ] {
        assert_eq!(
            generate(&token, s, CKM_EC_KEY_PAIR_GEN, &t)
                .unwrap_err()
                .code(),
            rv
        );
    }
    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &same_label_twice).unwrap();
}

/// A TSB failure while checking that the label is free is that failure, and nothing is
/// created (only "key not found" means the label is free).
#[test]
fn key_generation_stops_on_a_tsb_failure() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    *fake.attributes_error.lock() = Some((500, 700));
    assert_eq!(
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec_templates("k", P256))
            .unwrap_err()
            .code(),
        CKR_DEVICE_ERROR
    );
    assert_eq!(fake.count("create "), 0);
}

/// A credential the TSB rejects (617, HTTP 403) is CKR_PIN_INCORRECT when the PIN is the
/// credential (`pinIs: token`), CKR_USER_NOT_LOGGED_IN when it comes from the configuration
/// (error.rs, "map_tsb_error"); nothing is created.
#[test]
fn a_rejected_credential_depends_on_where_it_came_from() {
    let fake = FakeTsb::new();
    *fake.good_jwt.lock() = Some("jwt".into());
    for (pkcs11, expected) in [
        (json!({"pinIs": "token"}), CKR_PIN_INCORRECT),
        (json!({}), CKR_USER_NOT_LOGGED_IN),
    ] {
        let token = token_with(&fake, pkcs11);
        let s = session(&token);
        if expected == CKR_PIN_INCORRECT {
            token.login(s, CKU_USER, b"jwt").unwrap();
        }
        *fake.attributes_error.lock() = Some((403, 617));
        assert_eq!(
            generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec_templates("k", P256))
                .unwrap_err()
                .code(),
            expected
        );
        *fake.attributes_error.lock() = None;
    }
    assert_eq!(fake.count("create "), 0);
}

/// A TSB failure of `POST /v1/key` other than a 400 is that failure (here 500:
/// CKR_DEVICE_ERROR), not the template's fault (CKR_TEMPLATE_INCONSISTENT).
#[test]
fn a_tsb_failure_creating_the_key_is_that_failure() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    *fake.create_error.lock() = Some((500, 701));
    assert_eq!(
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec_templates("k", P256))
            .unwrap_err()
            .code(),
        CKR_DEVICE_ERROR
    );
    *fake.create_error.lock() = Some((400, 600));
    assert_eq!(
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec_templates("k", P256))
            .unwrap_err()
            .code(),
        CKR_TEMPLATE_INCONSISTENT
    );
}

/// A refused template names the attribute (the WARN line says which one to drop).
#[test]
fn a_refused_template_names_the_attribute() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    for (private, attr, name) in [
        (false, CKA_TRUSTED, "CKA_TRUSTED"),
        (false, CKA_VERIFY_RECOVER, "CKA_VERIFY_RECOVER"),
        (true, CKA_SIGN_RECOVER, "CKA_SIGN_RECOVER"),
        (true, CKA_WRAP_WITH_TRUSTED, "CKA_WRAP_WITH_TRUSTED"),
        (true, CKA_ALWAYS_AUTHENTICATE, "CKA_ALWAYS_AUTHENTICATE"),
        (true, CKA_COPYABLE, "CKA_COPYABLE"),
    ] {
        let mut t = ec_templates("named", P256);
        if private { &mut t.1 } else { &mut t.0 }.push((attr, vec![CK_TRUE]));
        let e = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &t).unwrap_err();
        assert_eq!(e.code(), CKR_TEMPLATE_INCONSISTENT, "{name}");
        assert!(e.to_string().contains(name), "{name}: {e}");
    }
}

/// §5.14 with §4.7/§4.8: attributes a TSB key already has may be given with that value (empty
/// dates and mechanism lists, false encrypt/wrap/verify-recover/derive/trusted on the public
/// key); the opposite value, or a date, is CKR_TEMPLATE_INCONSISTENT.
#[test]
fn key_generation_accepts_what_a_tsb_key_already_is() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let mut agreeing = ec_templates("agreeing", P256);
    for a in [CKA_VERIFY_RECOVER, CKA_TRUSTED] {
        agreeing.0.push((a, vec![CK_FALSE]));
    }
    for a in [
        CKA_SIGN_RECOVER,
        CKA_WRAP_WITH_TRUSTED,
        CKA_ALWAYS_AUTHENTICATE,
    ] {
        agreeing.1.push((a, vec![CK_FALSE]));
    }
    for t in [&mut agreeing.0, &mut agreeing.1] {
        t.push((CKA_START_DATE, Vec::new()));
        t.push((CKA_END_DATE, Vec::new()));
        t.push((CKA_ALLOWED_MECHANISMS, Vec::new()));
    }
    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &agreeing).expect("agreeing templates");
    // What the TSB cannot store is refused.
    for (public, a) in [
        (true, CKA_VERIFY_RECOVER),
        (true, CKA_TRUSTED),
        (false, CKA_SIGN_RECOVER),
        (false, CKA_WRAP_WITH_TRUSTED),
        (false, CKA_ALWAYS_AUTHENTICATE),
    ] {
        let mut t = ec_templates("refused", P256);
        if public { &mut t.0 } else { &mut t.1 }.push((a, vec![CK_TRUE]));
        assert_eq!(
            generate(&token, s, CKM_EC_KEY_PAIR_GEN, &t)
                .unwrap_err()
                .code(),
            CKR_TEMPLATE_INCONSISTENT,
            "{a:#x} true"
        );
    }
    // What the TSB can store is stored as asked and reported truthfully: an extractable,
    // non-sensitive key (issue 22), and by default one that never leaves the HSM.
    let mut exportable = ec_templates("exportable", P256);
    exportable.1.push((CKA_EXTRACTABLE, vec![CK_TRUE]));
    exportable.1.push((CKA_SENSITIVE, vec![CK_FALSE]));
    let (_, private) = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &exportable).expect("stored");
    let flag = |h, a| bytes_of(&token, s, h, a);
    assert_eq!(flag(private, CKA_EXTRACTABLE), vec![CK_TRUE]);
    assert_eq!(flag(private, CKA_SENSITIVE), vec![CK_FALSE]);
    let (_, kept) = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec_templates("kept", P256)).unwrap();
    assert_eq!(flag(kept, CKA_EXTRACTABLE), vec![CK_FALSE]);
    assert_eq!(flag(kept, CKA_SENSITIVE), vec![CK_TRUE]);
    // Private-key attributes are no attributes of a public key (§4.8), whatever their value.
    let mut misplaced = ec_templates("refused", P256);
    misplaced.0.push((CKA_DECRYPT, vec![CK_FALSE]));
    assert_eq!(
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &misplaced)
            .unwrap_err()
            .code(),
        CKR_ATTRIBUTE_TYPE_INVALID
    );
    let mut restricted = ec_templates("refused", P256);
    restricted
        .1
        .push((CKA_ALLOWED_MECHANISMS, ulong(CKM_ECDSA_SHA256)));
    assert_eq!(
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &restricted)
            .unwrap_err()
            .code(),
        CKR_TEMPLATE_INCONSISTENT
    );
    let mut dated = ec_templates("dated", P256);
    dated.1.push((CKA_START_DATE, b"20260101".to_vec()));
    assert_eq!(
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &dated)
            .unwrap_err()
            .code(),
        CKR_TEMPLATE_INCONSISTENT
    );
    assert!(fake
        .calls()
        .iter()
        .all(|c| !c.contains("refused") && !c.contains("dated")));
}

/// A session key pair's templates: no CKA_TOKEN (false by default, PKCS#11 v3.0 §4.4).
fn session_templates(label: &str) -> (Template, Template) {
    let (public, mut private) = ec_templates(label, P256);
    private.retain(|(t, _)| *t != CKA_TOKEN);
    (public, private)
}

/// The TSB labels of temporary keys the fake holds.
fn temporary_keys(fake: &FakeTsb) -> Vec<String> {
    fake.labels()
        .into_iter()
        .filter(|l| l.starts_with(crate::token::session_keys::SESSION_KEY_PREFIX))
        .collect()
}

fn spki_of(token: &Token, s: CK_SESSION_HANDLE, public: CK_OBJECT_HANDLE) -> Vec<u8> {
    match &token
        .attribute_values(s, public, &[CKA_PUBLIC_KEY_INFO])
        .unwrap()[0]
    {
        AttrValue::Bytes(b) => b.clone(),
        other => panic!("{other:?}"),
    }
}

/// Signs `msg` with ECDSA-SHA256 and verifies it with OpenSSL against `spki`.
fn signs_and_verifies(
    token: &Token,
    s: CK_SESSION_HANDLE,
    private: CK_OBJECT_HANDLE,
    spki: &[u8],
    msg: &[u8],
) -> bool {
    token
        .sign_init(s, &Mechanism::new(CKM_ECDSA_SHA256), private)
        .unwrap();
    let sig = signature(token.sign(s, msg, Some(64)).unwrap());
    let pkey = openssl::pkey::PKey::public_key_from_der(spki).unwrap();
    let r_s = openssl::ecdsa::EcdsaSig::from_private_components(
        openssl::bn::BigNum::from_slice(&sig[..32]).unwrap(),
        openssl::bn::BigNum::from_slice(&sig[32..]).unwrap(),
    )
    .unwrap();
    r_s.verify(&openssl::sha::sha256(msg), &pkey.ec_key().unwrap())
        .unwrap()
}

/// §4.4 and §5.14: without CKA_TOKEN the pair is a session key pair: a temporary TSB key with
/// a generated label, shown with CKA_TOKEN false and the application's CKA_LABEL, usable at once
/// (also from a read-only session), deleted on the TSB when its session closes. Another
/// process's temporary key is never listed.
#[test]
fn session_key_pairs_are_temporary_tsb_keys_deleted_at_close() {
    let fake = FakeTsb::new();
    fake.add_key("tsb-pkcs11-session-0123456789abcdef0123456789abcdef", false);
    fake.add_key("persistent", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let (public, private) =
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("mine")).unwrap();
    let created = temporary_keys(&fake)
        .into_iter()
        .filter(|l| !l.ends_with("0123456789abcdef0123456789abcdef"))
        .collect::<Vec<_>>();
    assert_eq!(created.len(), 1, "one temporary key: {:?}", fake.calls());
    let tsb_label = &created[0];
    assert_eq!(tsb_label.len(), "tsb-pkcs11-session-".len() + 32);
    assert!(fake.calls().contains(&format!(
        "create {tsb_label} Ec(\"1.2.840.10045.3.1.7\") destroyable=true modifiable=true"
    )));
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("create mine")),
        "no persistent key named after CKA_LABEL"
    );
    for h in [public, private] {
        assert_eq!(
            token
                .attribute_values(s, h, &[CKA_TOKEN, CKA_LABEL, CKA_DESTROYABLE])
                .unwrap(),
            vec![
                AttrValue::Bytes(vec![CK_FALSE]),
                AttrValue::Bytes(b"mine".to_vec()),
                AttrValue::Bytes(vec![CK_TRUE]),
            ]
        );
    }
    // Session objects are visible to every session of the application (§4.4).
    let other = session(&token);
    let found = find(&token, other, &[(CKA_LABEL, b"mine".to_vec())]);
    assert_eq!(found.len(), 2);
    assert!(found.contains(&public) && found.contains(&private));
    let spki = spki_of(&token, s, public);
    assert!(signs_and_verifies(
        &token,
        other,
        private,
        &spki,
        b"session key"
    ));
    // The full listing holds this process's own temporary key, not the other one's.
    let all = find(&token, s, &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY))]);
    assert_eq!(all.len(), 2, "'persistent' and the own session key");
    assert!(all.contains(&private));
    assert!(find(
        &token,
        s,
        &[(
            CKA_LABEL,
            b"tsb-pkcs11-session-0123456789abcdef0123456789abcdef".to_vec()
        )]
    )
    .is_empty());
    // A read-only session generates session key pairs too (token keys need R/W, §5.14).
    let ro = token.open_session(0, CKF_SERIAL_SESSION, None).unwrap();
    let (_, ro_private) =
        generate(&token, ro, CKM_EC_KEY_PAIR_GEN, &session_templates("")).unwrap();
    assert_eq!(temporary_keys(&fake).len(), 3);

    // Closing the creating session deletes its key on the TSB; the other session's stays.
    token.close_session(s).unwrap();
    assert!(fake.calls().contains(&format!("delete {tsb_label}")));
    assert!(!fake.labels().contains(tsb_label));
    assert_eq!(
        token
            .attribute_values(other, private, &[CKA_LABEL])
            .unwrap_err()
            .code(),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert_eq!(temporary_keys(&fake).len(), 2);
    token.close_session(ro).unwrap();
    assert_eq!(
        temporary_keys(&fake),
        vec!["tsb-pkcs11-session-0123456789abcdef0123456789abcdef".to_string()],
        "only the other process's key is left"
    );
    assert_eq!(
        token
            .attribute_values(other, ro_private, &[CKA_LABEL])
            .unwrap_err()
            .code(),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert_eq!(fake.count("delete tsb-pkcs11-session-0123"), 0);
    assert!(fake.labels().contains(&"persistent".to_string()));
}

/// A session key pair goes when the application destroys its private key object, at
/// C_CloseAllSessions and at C_Finalize, even though pkcs11.allowKeyDeletion is false; a token
/// key (CKA_TOKEN true) stays as before.
#[test]
fn session_keys_are_deleted_on_destroy_close_all_and_finalize() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("requests.jsonl");
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({"requestJournal": journal}));
    let s = session(&token);
    let (_, persistent) =
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec_templates("kept", P256)).unwrap();
    assert_eq!(
        token.attribute_values(s, persistent, &[CKA_TOKEN]).unwrap(),
        vec![AttrValue::Bytes(vec![CK_TRUE])]
    );
    let (_, private) = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("a")).unwrap();
    assert_eq!(temporary_keys(&fake).len(), 1);
    token.destroy_object(s, private).unwrap();
    assert!(
        temporary_keys(&fake).is_empty(),
        "destroyed with its private key"
    );
    assert_eq!(
        token.destroy_object(s, private).unwrap_err().code(),
        CKR_OBJECT_HANDLE_INVALID
    );

    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("b")).unwrap();
    assert_eq!(temporary_keys(&fake).len(), 1);
    token.close_all_sessions(0).unwrap();
    assert!(temporary_keys(&fake).is_empty(), "C_CloseAllSessions");

    let s = session(&token);
    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("c")).unwrap();
    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("d")).unwrap();
    assert_eq!(temporary_keys(&fake).len(), 2);
    token.finalize();
    assert!(temporary_keys(&fake).is_empty(), "C_Finalize");
    assert!(fake.labels().contains(&"kept".to_string()));
    assert_eq!(fake.count("delete kept"), 0);
    // C_Finalize waited for the confirmed deletions: none is journalled as left behind.
    let entries = crate::journal::read(&journal).unwrap().entries;
    assert!(entries.is_empty(), "{entries:?}");
}

/// C_Finalize of an application that forbade helper threads (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`,
/// PKCS#11 v2.40 §5.4 C_Initialize) deletes the temporary keys itself, one after the other,
/// before its deadline: none is left on the TSB or journalled as left behind.
#[test]
fn session_keys_are_deleted_at_finalize_without_helper_threads() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("requests.jsonl");
    let fake = FakeTsb::new();
    let config = json!({"restApi": "http://127.0.0.1:9", "pkcs11": {
        "pollIntervalMs": 10, "pollIntervalMaxMs": 20, "requestJournal": journal}});
    let config = crate::config::Config::from_json_str(&config.to_string(), "core-test").unwrap();
    let token = Token::with_backend(config, false, fake.factory()).unwrap();
    let s = session(&token);
    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("c")).unwrap();
    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("d")).unwrap();
    let made = temporary_keys(&fake);
    assert_eq!(made.len(), 2);
    token.finalize();
    assert!(
        temporary_keys(&fake).is_empty(),
        "C_Finalize without threads"
    );
    for label in &made {
        assert_eq!(fake.count(&format!("delete {label}")), 1, "{label}");
    }
    let entries = crate::journal::read(&journal).unwrap().entries;
    assert!(entries.is_empty(), "{entries:?}");
}

/// A deletion of a temporary key that fails (close) or hangs (C_Finalize, which returns within
/// its bound all the same) is journalled with the key's TSB label.
#[test]
fn undeleted_session_keys_are_journalled() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("requests.jsonl");
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({"requestJournal": journal}));
    let s = session(&token);
    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("x")).unwrap();
    let failing = temporary_keys(&fake).pop().unwrap();
    *fake.delete_error.lock() = Some((500, 701));
    token.close_session(s).unwrap();
    *fake.delete_error.lock() = None;
    let entries = crate::journal::read(&journal).unwrap().entries;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].event, crate::journal::Event::KeyNotDeleted);
    assert_eq!(entries[0].key, failing);
    assert!(fake.labels().contains(&failing));

    let s = session(&token);
    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("y")).unwrap();
    let hanging = temporary_keys(&fake)
        .into_iter()
        .find(|l| *l != failing)
        .unwrap();
    fake.delete_hangs
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let started = std::time::Instant::now();
    token.finalize();
    let took = started.elapsed();
    fake.delete_hangs
        .store(false, std::sync::atomic::Ordering::Relaxed);
    // A functional bound (2 s, crate::token::FINALIZE_BOUND), asserted generously.
    assert!(
        took < std::time::Duration::from_secs(4),
        "C_Finalize took {took:?}"
    );
    let entries = crate::journal::read(&journal).unwrap().entries;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[1].event, crate::journal::Event::KeyNotDeleted);
    assert_eq!(entries[1].key, hanging);
    assert!(entries[1].reason.as_deref().unwrap().contains("C_Finalize"));
}

/// §5.7: destroying the public key object of a token key never deletes the key pair on the
/// TSB (CKR_ACTION_PROHIBITED, CKA_DESTROYABLE false on it), even with allowKeyDeletion; the
/// private key still signs. A session key pair's public key object is only hidden.
#[test]
fn destroying_a_public_key_object_never_deletes_the_key() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("pair", false);
    let token = token_with(&fake, json!({"allowKeyDeletion": true}));
    let s = session(&token);
    let private = super::private_key(&token, s, "pair");
    let public = super::public_key(&token, s, "pair");
    assert_eq!(
        token
            .attribute_values(s, public, &[CKA_DESTROYABLE])
            .unwrap(),
        vec![AttrValue::Bytes(vec![CK_FALSE])]
    );
    assert_eq!(
        token
            .attribute_values(s, private, &[CKA_DESTROYABLE])
            .unwrap(),
        vec![AttrValue::Bytes(vec![CK_TRUE])]
    );
    assert_eq!(
        token.destroy_object(s, public).unwrap_err().code(),
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(fake.count("delete "), 0);
    token
        .sign_init(s, &Mechanism::new(CKM_ECDSA_SHA256), private)
        .unwrap();
    let sig = signature(token.sign(s, b"still here", Some(64)).unwrap());
    assert!(super::openssl_verifies(&signer, b"still here", &sig));

    // A session key pair: the public object goes (also from a read-only session, §5.7), the
    // TSB key stays and signs until the private key object is destroyed.
    let ro = token.open_session(0, CKF_SERIAL_SESSION, None).unwrap();
    let (spub, spriv) =
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("tmp")).unwrap();
    let spki = spki_of(&token, s, spub);
    token.destroy_object(ro, spub).unwrap();
    assert_eq!(
        token
            .attribute_values(s, spub, &[CKA_LABEL])
            .unwrap_err()
            .code(),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert_eq!(
        find(&token, s, &[(CKA_LABEL, b"tmp".to_vec())]),
        vec![spriv]
    );
    assert_eq!(temporary_keys(&fake).len(), 1);
    assert!(signs_and_verifies(&token, s, spriv, &spki, b"temporary"));
    token.destroy_object(ro, spriv).unwrap();
    assert!(temporary_keys(&fake).is_empty());
}

fn bytes_of(
    token: &Token,
    s: CK_SESSION_HANDLE,
    h: CK_OBJECT_HANDLE,
    a: CK_ATTRIBUTE_TYPE,
) -> Vec<u8> {
    match &token.attribute_values(s, h, &[a]).unwrap()[0] {
        AttrValue::Bytes(b) => b.clone(),
        other => panic!("{a:#x}: {other:?}"),
    }
}

/// Issue 22 item 2: `CKA_ID` of a new key is the TSB key's `id` (the bytes as lowercase hex);
/// the key shows it, a search by it finds the pair (also when it spells no label), and the
/// mapping is reversible. Keys without an `id` keep the label's bytes.
#[test]
fn cka_id_is_the_tsb_key_id() {
    use crate::token::objects::{key_id, tsb_id_of};
    for id in [&[0x01][..], b"abc", &[0xff, 0x00, 0x7f], b"k"] {
        assert_eq!(key_id(Some(&tsb_id_of(id)), "label"), id);
    }
    assert_eq!(tsb_id_of(&[0x01, 0xab]), "01ab");
    assert_eq!(
        key_id(Some("AB01"), "l"),
        [0xab, 0x01],
        "hex of either case"
    );
    assert_eq!(
        key_id(Some("my key"), "l"),
        b"my key",
        "not hex: its UTF-8 bytes"
    );
    assert_eq!(key_id(None, "l"), b"l", "no id: the label's bytes");

    let fake = FakeTsb::new();
    fake.add_key("old", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let mut t = ec_templates("with-id", P256);
    t.0.push((CKA_ID, vec![0x01]));
    t.1.push((CKA_ID, vec![0x01]));
    let (public, private) = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &t).unwrap();
    assert_eq!(
        fake.key_ids.lock().get("with-id").map(String::as_str),
        Some("01"),
        "sent as the TSB id"
    );
    for h in [public, private] {
        assert_eq!(bytes_of(&token, s, h, CKA_ID), [0x01]);
    }
    let mut found = find(&token, s, &[(CKA_ID, vec![0x01])]);
    found.sort();
    let mut want = vec![public, private];
    want.sort();
    assert_eq!(found, want);
    assert_eq!(
        find(
            &token,
            s,
            &[(CKA_ID, vec![0x01]), (CKA_CLASS, ulong(CKO_PRIVATE_KEY))]
        ),
        [private]
    );
    // The same through a fresh token (the id comes from the TSB, not from a cache).
    let again = token_with(&fake, json!({}));
    let s2 = session(&again);
    assert_eq!(find(&again, s2, &[(CKA_ID, vec![0x01])]).len(), 2);
    // A key without an id: the label's bytes, found by them.
    assert_eq!(find(&again, s2, &[(CKA_ID, b"old".to_vec())]).len(), 2);
    let spki = spki_of(&token, s, public);
    assert!(signs_and_verifies(&token, s, private, &spki, b"by id"));
    // A session key pair keeps its CKA_ID too.
    let (mut sp, mut spriv) = session_templates("");
    sp.retain(|(t, _)| *t != CKA_LABEL);
    spriv.retain(|(t, _)| *t != CKA_LABEL);
    spriv.push((CKA_ID, vec![0x02]));
    let (p2, _) = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &(sp, spriv)).unwrap();
    assert_eq!(bytes_of(&token, s, p2, CKA_ID), [0x02]);
}

/// Issue 22 item 3: the templates of the tutorials and of Securosys' PKCS#11 examples (no
/// CKA_LABEL, CKA_ENCRYPT/CKA_DECRYPT, derive and wrap flags) create the key; the usage flags
/// the TSB stores are stored as asked and reported truthfully; a token key without CKA_LABEL
/// gets a generated unique label.
#[test]
fn tutorial_templates_store_usage_flags_and_generate_labels() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let bits = 2048 as CK_ULONG;
    // Securosys' example: RSA, no label, CKA_ENCRYPT and CKA_DECRYPT.
    let securosys = (
        vec![
            (CKA_TOKEN, vec![CK_TRUE]),
            (CKA_MODULUS_BITS, ulong(bits)),
            (CKA_PUBLIC_EXPONENT, vec![1, 0, 1]),
            (CKA_ENCRYPT, vec![CK_TRUE]),
            (CKA_VERIFY, vec![CK_TRUE]),
        ],
        vec![
            (CKA_TOKEN, vec![CK_TRUE]),
            (CKA_PRIVATE, vec![CK_TRUE]),
            (CKA_SENSITIVE, vec![CK_TRUE]),
            (CKA_DECRYPT, vec![CK_TRUE]),
            (CKA_SIGN, vec![CK_TRUE]),
        ],
    );
    let (public, private) = generate(&token, s, CKM_RSA_PKCS_KEY_PAIR_GEN, &securosys).unwrap();
    let label = String::from_utf8(bytes_of(&token, s, private, CKA_LABEL)).unwrap();
    assert!(label.starts_with("key-") && label.len() == 20, "{label}");
    assert!(fake.labels().contains(&label));
    let call = fake
        .calls()
        .into_iter()
        .find(|c| c.starts_with("create-usage "))
        .unwrap();
    assert!(
        call.contains("decrypt: true") && call.contains("unwrap: false"),
        "{call}"
    );
    assert!(
        call.contains("encrypt: None"),
        "encrypt mirrors decrypt: {call}"
    );
    assert_eq!(bytes_of(&token, s, private, CKA_DECRYPT), [CK_TRUE]);
    assert_eq!(bytes_of(&token, s, private, CKA_UNWRAP), [CK_FALSE]);
    assert_eq!(bytes_of(&token, s, public, CKA_ENCRYPT), [CK_TRUE]);
    assert_eq!(bytes_of(&token, s, public, CKA_VERIFY), [CK_TRUE]);
    assert_eq!(bytes_of(&token, s, private, CKA_SIGN), [CK_TRUE]);
    // A second one gets another label.
    let (_, private2) = generate(&token, s, CKM_RSA_PKCS_KEY_PAIR_GEN, &securosys).unwrap();
    assert_ne!(bytes_of(&token, s, private2, CKA_LABEL), label.as_bytes());

    // pkcs11-tool's default usage for EC: sign, derive (on both), wrap/unwrap.
    let mut ec = ec_templates("tool-ec", P256);
    ec.0.extend([(CKA_DERIVE, vec![CK_TRUE]), (CKA_WRAP, vec![CK_TRUE])]);
    ec.1.extend([(CKA_DERIVE, vec![CK_TRUE]), (CKA_UNWRAP, vec![CK_TRUE])]);
    let (public, private) = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec).unwrap();
    for h in [public, private] {
        assert_eq!(bytes_of(&token, s, h, CKA_DERIVE), [CK_TRUE]);
    }
    assert_eq!(bytes_of(&token, s, private, CKA_UNWRAP), [CK_TRUE]);
    assert_eq!(bytes_of(&token, s, public, CKA_WRAP), [CK_TRUE]);
    assert_eq!(bytes_of(&token, s, private, CKA_DECRYPT), [CK_FALSE]);
    let spki = spki_of(&token, s, public);
    assert!(signs_and_verifies(&token, s, private, &spki, b"tutorial"));
    // A plain key reports the flags false.
    let (public, private) =
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &ec_templates("plain", P256)).unwrap();
    assert_eq!(bytes_of(&token, s, private, CKA_DERIVE), [CK_FALSE]);
    assert_eq!(bytes_of(&token, s, public, CKA_ENCRYPT), [CK_FALSE]);

    // What the TSB cannot store is refused, nothing is created: one derive flag for the pair,
    // a key that cannot sign.
    let created = fake.count("create ");
    let mut split = ec_templates("split", P256);
    split.0.push((CKA_DERIVE, vec![CK_TRUE]));
    split.1.push((CKA_DERIVE, vec![CK_FALSE]));
    let mut nosign = ec_templates("nosign", P256);
    nosign.1.push((CKA_SIGN, vec![CK_FALSE]));
    for t in [split, nosign] {
        let e = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &t).unwrap_err();
        assert_eq!(e.code(), CKR_TEMPLATE_INCONSISTENT);
        assert!(e.to_string().contains("CKA_"), "names the attribute: {e}");
    }
    assert_eq!(fake.count("create "), created);
}

/// §5.14 with §4.8/§4.9: an attribute of the other key class is CKR_ATTRIBUTE_TYPE_INVALID and
/// nothing is created: CKA_VERIFY, CKA_ENCRYPT, CKA_WRAP, CKA_VERIFY_RECOVER, CKA_EC_PARAMS,
/// CKA_MODULUS_BITS and CKA_PUBLIC_EXPONENT belong to the public key; CKA_SIGN, CKA_DECRYPT,
/// CKA_UNWRAP, CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_SIGN_RECOVER and the policy profile to the
/// private key.
#[test]
fn usage_attributes_of_the_other_key_class_are_refused() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let rsa = || {
        (
            vec![
                (CKA_TOKEN, vec![CK_TRUE]),
                (CKA_MODULUS_BITS, ulong(2048)),
                (CKA_PUBLIC_EXPONENT, vec![1, 0, 1]),
            ],
            vec![(CKA_TOKEN, vec![CK_TRUE]), (CKA_SIGN, vec![CK_TRUE])],
        )
    };
    let mut cases: Vec<(CK_MECHANISM_TYPE, (Template, Template), CK_ATTRIBUTE_TYPE)> = vec![];
    for (attr, value) in [
        (CKA_VERIFY, vec![CK_TRUE]),
        (CKA_ENCRYPT, vec![CK_FALSE]),
        (CKA_WRAP, vec![CK_FALSE]),
        (CKA_VERIFY_RECOVER, vec![CK_FALSE]),
        (CKA_EC_PARAMS, P256.to_vec()),
    ] {
        let mut t = ec_templates("misplaced", P256);
        t.1.push((attr, value));
        cases.push((CKM_EC_KEY_PAIR_GEN, t, attr));
    }
    for (attr, value) in [
        (CKA_MODULUS_BITS, ulong(2048)),
        (CKA_PUBLIC_EXPONENT, vec![1, 0, 1]),
    ] {
        let mut t = rsa();
        t.1.push((attr, value));
        cases.push((CKM_RSA_PKCS_KEY_PAIR_GEN, t, attr));
    }
    for (attr, value) in [
        (CKA_SIGN, vec![CK_TRUE]),
        (CKA_DECRYPT, vec![CK_FALSE]),
        (CKA_UNWRAP, vec![CK_FALSE]),
        (CKA_SENSITIVE, vec![CK_TRUE]),
        (CKA_EXTRACTABLE, vec![CK_FALSE]),
        (CKA_SIGN_RECOVER, vec![CK_FALSE]),
        (crate::token::keygen::CKA_TSB_POLICY_PROFILE, b"p".to_vec()),
    ] {
        let mut t = ec_templates("misplaced", P256);
        t.0.push((attr, value));
        cases.push((CKM_EC_KEY_PAIR_GEN, t, attr));
    }
    // The refusal (one WARN line) names the attribute as PKCS#11 does.
    let named = [
        (CKA_VERIFY, "CKA_VERIFY"),
        (CKA_VERIFY_RECOVER, "CKA_VERIFY_RECOVER"),
        (CKA_SIGN, "CKA_SIGN"),
        (CKA_SENSITIVE, "CKA_SENSITIVE"),
        (CKA_EXTRACTABLE, "CKA_EXTRACTABLE"),
        (CKA_SIGN_RECOVER, "CKA_SIGN_RECOVER"),
    ];
    for (m, t, attr) in &cases {
        let err = generate(&token, s, *m, t).unwrap_err();
        assert_eq!(
            err.code(),
            CKR_ATTRIBUTE_TYPE_INVALID,
            "attribute {attr:#x} in the other template"
        );
        if let Some((_, name)) = named.iter().find(|(a, _)| a == attr) {
            assert!(
                err.message()
                    .starts_with(&format!("{name} cannot be given in the")),
                "{}",
                err.message()
            );
        }
    }
    assert_eq!(fake.count("create "), 0);
    // In its own template each is taken.
    generate(&token, s, CKM_RSA_PKCS_KEY_PAIR_GEN, &rsa()).unwrap();
}

/// The public-key usage flags (CKA_ENCRYPT, CKA_VERIFY, CKA_WRAP) are sent to the TSB only
/// where they differ from what the objects report without them (encrypt = decrypt, wrap =
/// unwrap, verify true), as a TSB before 1.15.1 does not know them; where they differ they are
/// stored and reported as asked (§5.14: an attribute is honoured or refused, never dropped).
#[test]
fn public_usage_flags_are_sent_only_where_they_differ() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let usage_call = |label: &str| {
        fake.calls()
            .into_iter()
            .find(|c| c.starts_with(&format!("create-usage {label} ")))
            .unwrap()
    };
    let bool_attr = |h, attr| bytes_of(&token, s, h, attr);
    // Differing from the private key's flags: sent, and reported.
    let mut differ = ec_templates("differ", P256);
    differ.0.retain(|(t, _)| *t != CKA_VERIFY);
    differ.0.extend([
        (CKA_ENCRYPT, vec![CK_TRUE]),
        (CKA_VERIFY, vec![CK_FALSE]),
        (CKA_WRAP, vec![CK_TRUE]),
    ]);
    differ
        .1
        .extend([(CKA_DECRYPT, vec![CK_FALSE]), (CKA_UNWRAP, vec![CK_FALSE])]);
    let (public, private) = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &differ).unwrap();
    let call = usage_call("differ");
    for sent in [
        "encrypt: Some(true)",
        "verify: Some(false)",
        "wrap: Some(true)",
    ] {
        assert!(call.contains(sent), "{sent}: {call}");
    }
    assert_eq!(bool_attr(public, CKA_ENCRYPT), [CK_TRUE]);
    assert_eq!(bool_attr(public, CKA_VERIFY), [CK_FALSE]);
    assert_eq!(bool_attr(public, CKA_WRAP), [CK_TRUE]);
    assert_eq!(bool_attr(private, CKA_DECRYPT), [CK_FALSE]);
    assert_eq!(bool_attr(private, CKA_UNWRAP), [CK_FALSE]);
    // Equal to them: left out of the request, and still reported as asked.
    let mut same = ec_templates("same", P256);
    same.0
        .extend([(CKA_ENCRYPT, vec![CK_TRUE]), (CKA_WRAP, vec![CK_TRUE])]);
    same.1
        .extend([(CKA_DECRYPT, vec![CK_TRUE]), (CKA_UNWRAP, vec![CK_TRUE])]);
    let (public, _) = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &same).unwrap();
    let call = usage_call("same");
    for left_out in ["encrypt: None", "verify: None", "wrap: None"] {
        assert!(call.contains(left_out), "{left_out}: {call}");
    }
    assert_eq!(bool_attr(public, CKA_ENCRYPT), [CK_TRUE]);
    assert_eq!(bool_attr(public, CKA_VERIFY), [CK_TRUE]);
    assert_eq!(bool_attr(public, CKA_WRAP), [CK_TRUE]);
}

/// A session key pair whose new key cannot be read back: C_GenerateKeyPair fails, and the
/// temporary TSB key it created is deleted at once (no object refers to it; closing the
/// session must not be what deletes it).
#[test]
fn a_session_key_that_cannot_be_read_back_is_deleted_at_once() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    *fake.attributes_error.lock() = Some((500, 700));
    let e = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("lost")).unwrap_err();
    assert_eq!(e.code(), CKR_DEVICE_ERROR);
    assert_eq!(fake.count("create "), 1);
    assert!(temporary_keys(&fake).is_empty(), "{:?}", fake.labels());
    assert_eq!(fake.count("delete "), 1);
    *fake.attributes_error.lock() = None;
    token.close_session(s).unwrap();
    assert_eq!(fake.count("delete "), 1, "nothing left to delete at close");
}

/// §5.7 C_DestroyObject without a login on a token whose keys are private objects: a private
/// key's handle (read while logged in) is invalid and nothing is deleted, even with
/// allowKeyDeletion; a public key object is refused as always (CKR_ACTION_PROHIBITED); a
/// stored certificate needs the login (CKR_USER_NOT_LOGGED_IN) and stays.
#[test]
fn a_logged_out_application_destroys_nothing() {
    let fake = FakeTsb::new();
    let key = fake.add_key("pair", false);
    *fake.good_jwt.lock() = Some("jwt".into());
    let token = token_with(&fake, json!({"pinIs": "token", "allowKeyDeletion": true}));
    let s = session(&token);
    token.login(s, CKU_USER, b"jwt").unwrap();
    let cert = super::certificates::certificate(&key, "pair", 3);
    let cert = super::certificates::create(
        &token,
        s,
        &vec![
            (CKA_CLASS, ulong(CKO_CERTIFICATE)),
            (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
            (CKA_VALUE, cert.to_der().unwrap()),
            (CKA_LABEL, b"pair".to_vec()),
        ],
    )
    .unwrap();
    let private = super::private_key(&token, s, "pair");
    let public = super::public_key(&token, s, "pair");
    token.logout(s).unwrap();
    assert_eq!(
        token.destroy_object(s, private).unwrap_err().code(),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert_eq!(
        token.destroy_object(s, public).unwrap_err().code(),
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(
        token.destroy_object(s, cert).unwrap_err().code(),
        CKR_USER_NOT_LOGGED_IN
    );
    assert_eq!(fake.count("delete"), 0, "{:?}", fake.calls());
    assert!(fake.labels().contains(&"pair".to_string()));
}

/// A temporary key already gone on the TSB (deleted by hand, or by the TSB) is no failure:
/// destroying its private key object succeeds, and closing its session neither warns nor
/// journals it as left behind. A deletion the TSB fails for another reason is a failure.
#[test]
fn session_keys_already_gone_on_the_tsb_are_no_failure() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("requests.jsonl");
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({"requestJournal": journal}));
    let s = session(&token);
    let (_, private) =
        generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("gone-a")).unwrap();
    let label = temporary_keys(&fake).pop().unwrap();
    // A deletion the TSB fails (an HSM error) is no success: the key and its handle stay.
    *fake.delete_error.lock() = Some((500, 701));
    assert_eq!(
        token.destroy_object(s, private).unwrap_err().code(),
        CKR_DEVICE_ERROR
    );
    *fake.delete_error.lock() = None;
    assert!(fake.labels().contains(&label));
    token.attribute_values(s, private, &[CKA_LABEL]).unwrap();
    fake.remove_key(&label);
    token.destroy_object(s, private).unwrap();
    assert_eq!(
        token.destroy_object(s, private).unwrap_err().code(),
        CKR_OBJECT_HANDLE_INVALID
    );
    generate(&token, s, CKM_EC_KEY_PAIR_GEN, &session_templates("gone-b")).unwrap();
    let label = temporary_keys(&fake).pop().unwrap();
    fake.remove_key(&label);
    token.close_session(s).unwrap();
    assert_eq!(fake.count(&format!("delete {label}")), 1);
    let entries = crate::journal::read(&journal).unwrap().entries;
    assert!(entries.is_empty(), "{entries:?}");
}

/// Every refusal of C_GenerateKeyPair is one WARN line naming its reason
/// (docs/objects-and-mechanisms.md).
#[test]
fn a_refused_key_generation_is_one_warn_line() {
    use crate::tsb::tests::log_capture;
    if !log_capture::install() {
        eprintln!("another logger is installed; a_refused_key_generation_is_one_warn_line skipped");
        return;
    }
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let mut t = ec_templates("refused-warn", P256);
    t.1.push((0x7e57_c0de, vec![1]));
    let err = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &t).unwrap_err();
    assert_eq!(err.code(), CKR_ATTRIBUTE_TYPE_INVALID);
    let lines: Vec<String> = crate::tsb::tests::log_capture::LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("0x7e57c0de"))
        .cloned()
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("WARN ") && lines[0].contains("C_GenerateKeyPair refused"),
        "{}",
        lines[0]
    );
}

/// Refusals of creation, key generation and C_SetAttributeValue templates name an attribute as
/// PKCS#11 spells it, and any other by its number.
#[test]
fn refusals_name_attributes_as_pkcs11_spells_them() {
    use crate::token::template::attribute_name;
    for (t, name) in [
        (CKA_LABEL, "CKA_LABEL"),
        (CKA_ID, "CKA_ID"),
        (CKA_TOKEN, "CKA_TOKEN"),
        (CKA_PRIVATE, "CKA_PRIVATE"),
        (CKA_SUBJECT, "CKA_SUBJECT"),
        (CKA_VALUE, "CKA_VALUE"),
        (CKA_SIGN, "CKA_SIGN"),
        (CKA_VERIFY, "CKA_VERIFY"),
        (CKA_DECRYPT, "CKA_DECRYPT"),
        (CKA_SENSITIVE, "CKA_SENSITIVE"),
        (CKA_EXTRACTABLE, "CKA_EXTRACTABLE"),
        (CKA_SIGN_RECOVER, "CKA_SIGN_RECOVER"),
        (CKA_VERIFY_RECOVER, "CKA_VERIFY_RECOVER"),
        (CKA_WRAP_WITH_TRUSTED, "CKA_WRAP_WITH_TRUSTED"),
        (CKA_ALWAYS_AUTHENTICATE, "CKA_ALWAYS_AUTHENTICATE"),
        (CKA_TRUSTED, "CKA_TRUSTED"),
        (CKA_COPYABLE, "CKA_COPYABLE"),
        (CKA_START_DATE, "CKA_START_DATE"),
        (CKA_END_DATE, "CKA_END_DATE"),
        (CKA_PARAMETER_SET, "CKA_PARAMETER_SET"),
        (CKA_HSS_LEVELS, "CKA_HSS_LEVELS"),
        (CKA_HSS_LMS_TYPES, "CKA_HSS_LMS_TYPES"),
        (CKA_HSS_LMOTS_TYPES, "CKA_HSS_LMOTS_TYPES"),
        (CKA_HSS_LMS_TYPE, "CKA_HSS_LMS_TYPE"),
        (CKA_HSS_LMOTS_TYPE, "CKA_HSS_LMOTS_TYPE"),
    ] {
        assert_eq!(attribute_name(t), name);
    }
    assert_eq!(attribute_name(0x8000_1234), "attribute 0x80001234");
    assert_eq!(attribute_name(CKA_MODULUS), "attribute 0x120");
}

/// The post-quantum attributes belong to their key types: CKA_PARAMETER_SET to ML-DSA and
/// SLH-DSA, the CKA_HSS_* attributes to HSS. In an EC or RSA template either is
/// CKR_ATTRIBUTE_TYPE_INVALID naming it, and nothing is created on the TSB.
#[test]
fn post_quantum_attributes_of_another_key_type_are_refused() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    for (private, attr, value, name) in [
        (
            false,
            CKA_PARAMETER_SET,
            ulong(CKP_ML_DSA_65),
            "CKA_PARAMETER_SET",
        ),
        (
            true,
            CKA_PARAMETER_SET,
            ulong(CKP_ML_DSA_65),
            "CKA_PARAMETER_SET",
        ),
        (false, CKA_HSS_LEVELS, ulong(1), "CKA_HSS_LEVELS"),
        (true, CKA_HSS_LMS_TYPE, ulong(5), "CKA_HSS_LMS_TYPE"),
        (false, CKA_HSS_LMOTS_TYPES, ulong(1), "CKA_HSS_LMOTS_TYPES"),
    ] {
        let mut t = ec_templates("pq-on-ec", P256);
        if private { &mut t.1 } else { &mut t.0 }.push((attr, value));
        let e = generate(&token, s, CKM_EC_KEY_PAIR_GEN, &t).unwrap_err();
        assert_eq!(e.code(), CKR_ATTRIBUTE_TYPE_INVALID, "{name}: {e}");
        assert!(e.to_string().contains(name), "{name}: {e}");
    }
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("create ")),
        "{:?}",
        fake.calls()
    );
}
