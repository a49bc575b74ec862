//! Unit tests of key generation's template parsing (`parse_templates`) and mechanism info,
//! in tables.

use super::*;

fn ul(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

#[test]
fn curves() {
    let ec = CKM_EC_KEY_PAIR_GEN;
    let ed = CKM_EC_EDWARDS_KEY_PAIR_GEN;
    assert_eq!(
        curve_of(ec, &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a]).unwrap(),
        NewKeyType::Ec("1.3.132.0.10")
    );
    assert_eq!(
        curve_of(ed, b"\x13\x0cedwards25519").unwrap(),
        NewKeyType::Ed25519
    );
    assert_eq!(
        curve_of(ed, &[0x06, 0x03, 0x2b, 0x65, 0x70]).unwrap(),
        NewKeyType::Ed25519
    );
    // Ed25519's OID is not an EC curve, P-256 not an Edwards curve.
    assert_eq!(
        curve_of(ec, &[0x06, 0x03, 0x2b, 0x65, 0x70])
            .unwrap_err()
            .code(),
        CKR_CURVE_NOT_SUPPORTED
    );
    assert_eq!(
        curve_of(
            ed,
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        )
        .unwrap_err()
        .code(),
        CKR_CURVE_NOT_SUPPORTED
    );
    assert_eq!(
        curve_of(ec, &[0x06, 0x09, 1]).unwrap_err().code(),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
}

#[test]
fn templates() {
    let rsa = CKM_RSA_PKCS_KEY_PAIR_GEN;
    let label = (CKA_LABEL, b"k".to_vec());
    let bits = (CKA_MODULUS_BITS, ul(3072));
    let ok = parse_templates(rsa, &[bits.clone(), label.clone()], &[(CKA_SIGN, vec![1])]).unwrap();
    assert_eq!(ok.key_type, NewKeyType::Rsa(3072));
    assert!(ok.destroyable && ok.label.as_deref() == Some("k"));
    let rv = |public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)], private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| {
        parse_templates(rsa, public, private).unwrap_err().code()
    };
    // A token key without a label gets a generated one (generate_key_pair).
    let unlabelled =
        parse_templates(rsa, std::slice::from_ref(&bits), &[(CKA_TOKEN, vec![1])]).unwrap();
    assert!(unlabelled.token && unlabelled.label.is_none());
    assert_eq!(
        rv(std::slice::from_ref(&label), &[]),
        CKR_TEMPLATE_INCOMPLETE,
        "no size"
    );
    // Usage flags the TSB stores are stored as asked.
    let decrypting = parse_templates(
        rsa,
        &[bits.clone(), label.clone()],
        &[(CKA_DECRYPT, vec![1])],
    )
    .unwrap();
    assert_eq!(
        decrypting.usage,
        NewKeyUsage {
            decrypt: true,
            ..NewKeyUsage::default()
        }
    );
    // So are CKA_EXTRACTABLE and CKA_SENSITIVE (issue 22: only what the TSB cannot store
    // is refused); by default a key never leaves the HSM.
    let exportable = parse_templates(
        rsa,
        &[bits.clone(), label.clone()],
        &[(CKA_EXTRACTABLE, vec![1]), (CKA_SENSITIVE, vec![0])],
    )
    .unwrap();
    assert!(exportable.usage.extractable && !exportable.usage.sensitive);
    assert!(!decrypting.usage.extractable && decrypting.usage.sensitive);
    assert_eq!(
        rv(
            &[bits.clone(), label.clone(), (CKA_TOKEN, vec![0])],
            &[(CKA_TOKEN, vec![1])]
        ),
        CKR_TEMPLATE_INCONSISTENT,
        "two CKA_TOKEN values"
    );
    // CKA_TOKEN defaults to false (§4.4): a session key pair, whose label may be empty,
    // which must be destroyable.
    let session = parse_templates(rsa, std::slice::from_ref(&bits), &[]).unwrap();
    assert!(!session.token && session.label.is_none());
    assert!(
        parse_templates(rsa, &[bits.clone(), label.clone()], &[(CKA_TOKEN, vec![1])])
            .unwrap()
            .token
    );
    assert_eq!(
        rv(&[bits.clone(), (CKA_DESTROYABLE, vec![0])], &[]),
        CKR_TEMPLATE_INCONSISTENT
    );
    assert_eq!(
        parse_templates(rsa, &[bits.clone(), (CKA_ID, vec![1])], &[])
            .unwrap()
            .id,
        Some(vec![1])
    );
    assert_eq!(
        rv(&[(CKA_MODULUS_BITS, ul(1024)), label.clone()], &[]),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    assert_eq!(
        rv(
            &[bits.clone(), label.clone(), (CKA_PUBLIC_EXPONENT, vec![3])],
            &[]
        ),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    assert!(parse_templates(
        rsa,
        &[
            bits.clone(),
            label.clone(),
            (CKA_PUBLIC_EXPONENT, vec![0, 1, 0, 1])
        ],
        &[]
    )
    .is_ok());
    assert_eq!(
        rv(
            &[bits.clone(), label.clone(), (CKA_ID, b"other".to_vec())],
            &[(CKA_ID, b"another".to_vec())]
        ),
        CKR_TEMPLATE_INCONSISTENT,
        "two CKA_IDs"
    );
    assert_eq!(
        rv(
            &[bits.clone(), label.clone()],
            &[(CKA_LABEL, b"j".to_vec())]
        ),
        CKR_TEMPLATE_INCONSISTENT
    );
    assert_eq!(
        rv(&[bits, label], &[(CKA_VALUE, vec![1])]),
        CKR_ATTRIBUTE_TYPE_INVALID
    );
}

/// The answer to every attribute of a generation template, on either side, for every key
/// type (docs/objects-and-mechanisms.md "Generating keys"; PKCS#11 v3.0 §5.14: every
/// attribute is honoured or refused, never dropped): CKR_OK where it is taken,
/// CKR_ATTRIBUTE_TYPE_INVALID where it has no place (the other key's template, another key
/// type), CKR_TEMPLATE_INCONSISTENT for a value the TSB's key cannot have,
/// CKR_ATTRIBUTE_VALUE_INVALID for a value of the right attribute it does not create.
#[test]
fn every_attribute_on_either_side_of_every_key_type() {
    const OK: CK_RV = CKR_OK;
    const TI: CK_RV = CKR_ATTRIBUTE_TYPE_INVALID;
    const INC: CK_RV = CKR_TEMPLATE_INCONSISTENT;
    const VI: CK_RV = CKR_ATTRIBUTE_VALUE_INVALID;
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    // (mechanism, key type, a minimal public template it accepts).
    type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;
    let kinds: [(CK_MECHANISM_TYPE, CK_KEY_TYPE, Template); 6] = [
        (
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            CKK_RSA,
            vec![(CKA_MODULUS_BITS, ul(2048))],
        ),
        (
            CKM_EC_KEY_PAIR_GEN,
            CKK_EC,
            vec![(CKA_EC_PARAMS, P256.to_vec())],
        ),
        (
            CKM_EC_EDWARDS_KEY_PAIR_GEN,
            CKK_EC_EDWARDS,
            vec![(CKA_EC_PARAMS, ED25519.to_vec())],
        ),
        (
            CKM_ML_DSA_KEY_PAIR_GEN,
            CKK_ML_DSA,
            vec![(CKA_PARAMETER_SET, ul(CKP_ML_DSA_44))],
        ),
        (
            CKM_SLH_DSA_KEY_PAIR_GEN,
            CKK_SLH_DSA,
            vec![(CKA_PARAMETER_SET, ul(CKP_SLH_DSA_SHA2_128S))],
        ),
        (CKM_HSS_KEY_PAIR_GEN, CKK_HSS, vec![]),
    ];
    let is_pq_set = |k: CK_KEY_TYPE| k == CKK_ML_DSA || k == CKK_SLH_DSA;
    let is_ec = |k: CK_KEY_TYPE| k == CKK_EC || k == CKK_EC_EDWARDS;
    let public_only =
        |ok: CK_RV| move |_: CK_KEY_TYPE, private: bool| if private { TI } else { ok };
    let private_only =
        |ok: CK_RV| move |_: CK_KEY_TYPE, private: bool| if private { ok } else { TI };
    let either = |ok: CK_RV| move |_: CK_KEY_TYPE, _: bool| ok;
    type Value = Box<dyn Fn(CK_KEY_TYPE) -> Vec<u8>>;
    type Rule = Box<dyn Fn(CK_KEY_TYPE, bool) -> CK_RV>;
    let fixed = |v: Vec<u8>| -> Value { Box::new(move |_| v.clone()) };
    let hss = |ok: CK_RV| -> Rule { Box::new(move |k, _| if k == CKK_HSS { ok } else { TI }) };
    let rows: Vec<(CK_ATTRIBUTE_TYPE, Value, Rule)> = vec![
        (
            CKA_CLASS,
            fixed(ul(CKO_PUBLIC_KEY)),
            Box::new(|_, p| if p { INC } else { OK }),
        ),
        (
            CKA_CLASS,
            fixed(ul(CKO_PRIVATE_KEY)),
            Box::new(|_, p| if p { OK } else { INC }),
        ),
        (CKA_KEY_TYPE, Box::new(ul), Box::new(either(OK))),
        (
            CKA_KEY_TYPE,
            Box::new(|k| ul(if k == CKK_EC { CKK_RSA } else { CKK_EC })),
            Box::new(either(INC)),
        ),
        (CKA_TOKEN, fixed(vec![1]), Box::new(either(OK))),
        (CKA_LABEL, fixed(b"k".to_vec()), Box::new(either(OK))),
        (CKA_LABEL, fixed(vec![0xff]), Box::new(either(VI))),
        (CKA_ID, fixed(vec![7]), Box::new(either(OK))),
        (
            CKA_PRIVATE,
            fixed(vec![1]),
            Box::new(|_, p| if p { OK } else { INC }),
        ),
        (
            CKA_PRIVATE,
            fixed(vec![0]),
            Box::new(|_, p| if p { INC } else { OK }),
        ),
        (CKA_DESTROYABLE, fixed(vec![1]), Box::new(either(OK))),
        (CKA_MODIFIABLE, fixed(vec![0]), Box::new(either(OK))),
        (CKA_COPYABLE, fixed(vec![0]), Box::new(either(OK))),
        (CKA_COPYABLE, fixed(vec![1]), Box::new(either(INC))),
        (CKA_START_DATE, fixed(vec![]), Box::new(either(OK))),
        (CKA_END_DATE, fixed(vec![]), Box::new(either(OK))),
        (CKA_ALLOWED_MECHANISMS, fixed(vec![]), Box::new(either(OK))),
        (
            CKA_START_DATE,
            fixed(b"20260101".to_vec()),
            Box::new(either(INC)),
        ),
        (
            CKA_END_DATE,
            fixed(b"20361231".to_vec()),
            Box::new(either(INC)),
        ),
        (
            CKA_ALLOWED_MECHANISMS,
            fixed(ul(CKM_ECDSA)),
            Box::new(either(INC)),
        ),
        (CKA_DERIVE, fixed(vec![1]), Box::new(either(OK))),
        (CKA_VERIFY, fixed(vec![1]), Box::new(public_only(OK))),
        (CKA_ENCRYPT, fixed(vec![1]), Box::new(public_only(OK))),
        (CKA_WRAP, fixed(vec![1]), Box::new(public_only(OK))),
        (
            CKA_VERIFY_RECOVER,
            fixed(vec![0]),
            Box::new(public_only(OK)),
        ),
        (CKA_TRUSTED, fixed(vec![0]), Box::new(public_only(OK))),
        (
            CKA_VERIFY_RECOVER,
            fixed(vec![1]),
            Box::new(public_only(INC)),
        ),
        (CKA_TRUSTED, fixed(vec![1]), Box::new(public_only(INC))),
        (
            CKA_MODULUS_BITS,
            fixed(ul(3072)),
            Box::new(|k, p| if !p && k == CKK_RSA { OK } else { TI }),
        ),
        (
            CKA_PUBLIC_EXPONENT,
            fixed(vec![1, 0, 1]),
            Box::new(|k, p| if !p && k == CKK_RSA { OK } else { TI }),
        ),
        (
            CKA_PUBLIC_EXPONENT,
            fixed(vec![3]),
            Box::new(|k, p| if !p && k == CKK_RSA { VI } else { TI }),
        ),
        (
            CKA_EC_PARAMS,
            Box::new(|k| if k == CKK_EC_EDWARDS { ED25519 } else { P256 }.to_vec()),
            Box::new(move |k, p| if !p && is_ec(k) { OK } else { TI }),
        ),
        // The same set as the minimal template names, then another one.
        (
            CKA_PARAMETER_SET,
            Box::new(|k| {
                ul(if k == CKK_SLH_DSA {
                    CKP_SLH_DSA_SHA2_128S
                } else {
                    CKP_ML_DSA_44
                })
            }),
            Box::new(move |k, _| if is_pq_set(k) { OK } else { TI }),
        ),
        (
            CKA_PARAMETER_SET,
            fixed(ul(CKP_ML_DSA_65)),
            Box::new(move |k, _| if is_pq_set(k) { INC } else { TI }),
        ),
        (CKA_HSS_LEVELS, fixed(ul(1)), hss(OK)),
        (CKA_HSS_LEVELS, fixed(ul(2)), hss(VI)),
        (CKA_HSS_LMS_TYPE, fixed(ul(5)), hss(OK)),
        (CKA_HSS_LMS_TYPE, fixed(ul(6)), hss(VI)),
        (CKA_HSS_LMS_TYPES, fixed([ul(5), ul(5)].concat()), hss(OK)),
        (CKA_HSS_LMS_TYPES, fixed([ul(5), ul(6)].concat()), hss(VI)),
        (CKA_HSS_LMS_TYPES, fixed(vec![]), hss(VI)),
        (CKA_HSS_LMOTS_TYPE, fixed(ul(1)), hss(OK)),
        (CKA_HSS_LMOTS_TYPE, fixed(ul(2)), hss(VI)),
        (CKA_HSS_LMOTS_TYPES, fixed([ul(1), ul(1)].concat()), hss(OK)),
        (CKA_HSS_LMOTS_TYPES, fixed([ul(1), ul(2)].concat()), hss(VI)),
        (CKA_HSS_LMOTS_TYPES, fixed(vec![1, 0]), hss(VI)),
        (CKA_SIGN, fixed(vec![1]), Box::new(private_only(OK))),
        (CKA_SIGN, fixed(vec![0]), Box::new(private_only(INC))),
        (CKA_DECRYPT, fixed(vec![1]), Box::new(private_only(OK))),
        (CKA_UNWRAP, fixed(vec![1]), Box::new(private_only(OK))),
        (CKA_SENSITIVE, fixed(vec![0]), Box::new(private_only(OK))),
        (CKA_EXTRACTABLE, fixed(vec![1]), Box::new(private_only(OK))),
        (CKA_SIGN_RECOVER, fixed(vec![0]), Box::new(private_only(OK))),
        (
            CKA_WRAP_WITH_TRUSTED,
            fixed(vec![0]),
            Box::new(private_only(OK)),
        ),
        (
            CKA_ALWAYS_AUTHENTICATE,
            fixed(vec![0]),
            Box::new(private_only(OK)),
        ),
        (
            CKA_SIGN_RECOVER,
            fixed(vec![1]),
            Box::new(private_only(INC)),
        ),
        (
            CKA_WRAP_WITH_TRUSTED,
            fixed(vec![1]),
            Box::new(private_only(INC)),
        ),
        (
            CKA_ALWAYS_AUTHENTICATE,
            fixed(vec![1]),
            Box::new(private_only(INC)),
        ),
        (
            CKA_TSB_POLICY_PROFILE,
            fixed(b"p".to_vec()),
            Box::new(private_only(OK)),
        ),
        (
            CKA_TSB_POLICY_PROFILE,
            fixed(vec![0xff]),
            Box::new(private_only(VI)),
        ),
        (CKA_VALUE, fixed(vec![1]), Box::new(either(TI))),
        (CKA_SUBJECT, fixed(vec![0x30, 0]), Box::new(either(TI))),
    ];
    let mut checked = 0;
    for (mechanism, key_type, base) in &kinds {
        for (attr, value, rule) in &rows {
            for private in [false, true] {
                let extra = vec![(*attr, value(*key_type))];
                let (public, priv_t) = if private {
                    (base.clone(), extra)
                } else {
                    ([base.clone(), extra].concat(), vec![])
                };
                let got = match parse_templates(*mechanism, &public, &priv_t) {
                    Ok(_) => CKR_OK,
                    Err(e) => e.code(),
                };
                assert_eq!(
                    got,
                    rule(*key_type, private),
                    "{} {:?} on the {} side of key type {key_type:#x}",
                    attribute_name(*attr),
                    value(*key_type),
                    if private { "private" } else { "public" },
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * rows.len() * 2);
}

/// What an accepted template asks for is what the request carries: the values given, the
/// documented defaults where none is given.
#[test]
fn accepted_templates_carry_their_values() {
    let ec = CKM_EC_KEY_PAIR_GEN;
    let p256 = (
        CKA_EC_PARAMS,
        vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
    );
    let parse = |public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
                 private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| {
        let public = [vec![p256.clone()], public.to_vec()].concat();
        parse_templates(ec, &public, private)
    };
    // Defaults: a session key, destroyable, modifiable, sensitive, not extractable, no
    // usage flag but signing, no profile.
    let plain = parse(&[], &[]).unwrap();
    assert_eq!(plain.key_type, NewKeyType::Ec("1.2.840.10045.3.1.7"));
    assert!(!plain.token && plain.destroyable && plain.modifiable);
    assert_eq!(plain.usage, NewKeyUsage::default());
    assert!(plain.usage.sensitive && !plain.usage.extractable);
    assert_eq!((plain.label, plain.id, plain.profile), (None, None, None));
    // Given values, on the side they belong to.
    let given = parse(
        &[
            (CKA_TOKEN, vec![1]),
            (CKA_LABEL, b"lbl".to_vec()),
            (CKA_ID, vec![1, 2]),
            (CKA_DESTROYABLE, vec![0]),
            (CKA_ENCRYPT, vec![1]),
            (CKA_VERIFY, vec![0]),
            (CKA_WRAP, vec![1]),
        ],
        &[
            (CKA_TOKEN, vec![1]),
            (CKA_LABEL, b"lbl".to_vec()),
            (CKA_ID, vec![1, 2]),
            (CKA_DESTROYABLE, vec![0]),
            (CKA_MODIFIABLE, vec![0]),
            (CKA_MODIFIABLE, vec![0]),
            (CKA_DERIVE, vec![1]),
            (CKA_SENSITIVE, vec![0]),
            (CKA_EXTRACTABLE, vec![1]),
            (CKA_TSB_POLICY_PROFILE, b"prof".to_vec()),
        ],
    )
    .unwrap();
    assert!(given.token && !given.destroyable && !given.modifiable);
    assert_eq!(given.label.as_deref(), Some("lbl"));
    assert_eq!(given.id, Some(vec![1, 2]));
    assert_eq!(given.profile.as_deref(), Some("prof"));
    assert_eq!(
        given.usage,
        NewKeyUsage {
            decrypt: false,
            unwrap: false,
            derive: true,
            encrypt: Some(true),
            verify: Some(false),
            wrap: Some(true),
            sensitive: false,
            extractable: true,
        }
    );
    // The public flags equal to what the objects report without them are left out.
    let same = parse(
        &[
            (CKA_ENCRYPT, vec![1]),
            (CKA_VERIFY, vec![1]),
            (CKA_WRAP, vec![0]),
        ],
        &[(CKA_DECRYPT, vec![1]), (CKA_UNWRAP, vec![0])],
    )
    .unwrap();
    assert_eq!(
        (same.usage.decrypt, same.usage.unwrap),
        (true, false),
        "private flags as given"
    );
    assert_eq!(
        (same.usage.encrypt, same.usage.verify, same.usage.wrap),
        (None, None, None)
    );
    let unwrapping = parse(&[(CKA_WRAP, vec![0])], &[(CKA_UNWRAP, vec![1])]).unwrap();
    assert_eq!(
        (unwrapping.usage.unwrap, unwrapping.usage.wrap),
        (true, Some(false))
    );
    // CKA_DERIVE: one flag for the pair, from either template; two different values are
    // inconsistent, two equal ones are not.
    for (public, private, want) in [
        (Some(1), None, Ok(true)),
        (None, Some(1), Ok(true)),
        (Some(0), None, Ok(false)),
        (Some(1), Some(1), Ok(true)),
        (Some(0), Some(0), Ok(false)),
        (Some(1), Some(0), Err(CKR_TEMPLATE_INCONSISTENT)),
        (Some(0), Some(1), Err(CKR_TEMPLATE_INCONSISTENT)),
    ] {
        let t = |v: Option<u8>| {
            v.map(|b| (CKA_DERIVE, vec![b]))
                .into_iter()
                .collect::<Vec<_>>()
        };
        let got = parse(&t(public), &t(private))
            .map(|r| r.usage.derive)
            .map_err(|e| e.code());
        assert_eq!(got, want, "CKA_DERIVE {public:?} / {private:?}");
    }
    // Two templates naming different values of one attribute are inconsistent; the same
    // value twice is not.
    for (attr, a, b) in [
        (CKA_TOKEN, vec![1], vec![0]),
        (CKA_LABEL, b"a".to_vec(), b"b".to_vec()),
        (CKA_ID, vec![1], vec![2]),
        (CKA_DESTROYABLE, vec![1], vec![0]),
        (CKA_MODIFIABLE, vec![1], vec![0]),
    ] {
        // A token key (CKA_DESTROYABLE false needs one), but for CKA_TOKEN itself.
        let base = if attr == CKA_TOKEN {
            vec![]
        } else {
            vec![(CKA_TOKEN, vec![1])]
        };
        let with = |v: &Vec<u8>| [base.clone(), vec![(attr, v.clone())]].concat();
        assert_eq!(
            parse(&with(&a), &with(&b)).unwrap_err().code(),
            CKR_TEMPLATE_INCONSISTENT,
            "{}",
            attribute_name(attr)
        );
        assert!(
            parse(&with(&a), &with(&a)).is_ok(),
            "{}",
            attribute_name(attr)
        );
        assert!(
            parse(&with(&b), &with(&b)).is_ok(),
            "{}",
            attribute_name(attr)
        );
    }
    // Empty label and id ask for nothing.
    let empty = parse(&[(CKA_LABEL, vec![]), (CKA_ID, vec![])], &[]).unwrap();
    assert_eq!((empty.label, empty.id), (None, None));
}

/// The post-quantum sets: the one CKA_PARAMETER_SET names, from either template; none is
/// CKR_TEMPLATE_INCOMPLETE, a value that is no set of the key type
/// CKR_PARAMETER_SET_NOT_SUPPORTED. HSS takes none and gets the TSB's LMS key.
#[test]
fn post_quantum_parameter_sets() {
    let ml = CKM_ML_DSA_KEY_PAIR_GEN;
    let slh = CKM_SLH_DSA_KEY_PAIR_GEN;
    let set = |v| vec![(CKA_PARAMETER_SET, ul(v))];
    let kind =
        |m, public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)], private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| {
            parse_templates(m, public, private)
                .map(|r| r.key_type)
                .map_err(|e| e.code())
        };
    assert_eq!(
        kind(ml, &set(CKP_ML_DSA_65), &[]),
        Ok(NewKeyType::PostQuantum("ML-DSA-65"))
    );
    assert_eq!(
        kind(ml, &[], &set(CKP_ML_DSA_87)),
        Ok(NewKeyType::PostQuantum("ML-DSA-87"))
    );
    assert_eq!(
        kind(slh, &[], &set(CKP_SLH_DSA_SHAKE_256F)),
        Ok(NewKeyType::PostQuantum("SLH-DSA-SHAKE-256f"))
    );
    assert_eq!(kind(ml, &[], &[]), Err(CKR_TEMPLATE_INCOMPLETE));
    assert_eq!(kind(slh, &[], &[]), Err(CKR_TEMPLATE_INCOMPLETE));
    assert_eq!(
        kind(ml, &set(0x99), &[]),
        Err(CKR_PARAMETER_SET_NOT_SUPPORTED)
    );
    assert_eq!(
        kind(slh, &set(0x99), &[]),
        Err(CKR_PARAMETER_SET_NOT_SUPPORTED)
    );
    assert_eq!(
        kind(CKM_HSS_KEY_PAIR_GEN, &[], &[]),
        Ok(NewKeyType::PostQuantum("LMS"))
    );
    // RSA and EC need their size or curve.
    assert_eq!(
        kind(CKM_RSA_PKCS_KEY_PAIR_GEN, &[], &[]),
        Err(CKR_TEMPLATE_INCOMPLETE)
    );
    assert_eq!(
        kind(CKM_EC_KEY_PAIR_GEN, &[], &[]),
        Err(CKR_TEMPLATE_INCOMPLETE)
    );
    assert_eq!(
        kind(CKM_EC_EDWARDS_KEY_PAIR_GEN, &[], &[]),
        Err(CKR_TEMPLATE_INCOMPLETE)
    );
    for bits in [2048, 3072, 4096] {
        assert_eq!(
            kind(
                CKM_RSA_PKCS_KEY_PAIR_GEN,
                &[(CKA_MODULUS_BITS, ul(bits))],
                &[]
            ),
            Ok(NewKeyType::Rsa(bits as u32))
        );
    }
    for bits in [1024, 2047, 8192] {
        assert_eq!(
            kind(
                CKM_RSA_PKCS_KEY_PAIR_GEN,
                &[(CKA_MODULUS_BITS, ul(bits))],
                &[]
            ),
            Err(CKR_ATTRIBUTE_VALUE_INVALID)
        );
    }
}
