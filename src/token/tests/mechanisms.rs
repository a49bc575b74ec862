//! `C_GetMechanismList` / `C_GetMechanismInfo` (PKCS#11 v3.0 §5.5): clients such as
//! `pkcs11-tool --test`, Java and conformance suites choose by the flags and key sizes, so each
//! signing mechanism's answer is pinned here.

use cryptoki_sys::*;
use serde_json::json;

use super::fake::FakeTsb;
use super::{token_with, EC_MECHANISMS};

pub(super) const RSA: &[CK_MECHANISM_TYPE] = &[
    CKM_RSA_PKCS,
    CKM_SHA1_RSA_PKCS,
    CKM_SHA224_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS,
    CKM_RSA_PKCS_PSS,
    CKM_SHA224_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
];
const EC_FLAGS: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS | CKF_EC_OID;

#[test]
fn signing_mechanisms_report_their_flags_and_key_sizes() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let list = token.mechanism_list(0).unwrap();
    let sign = CKF_HW | CKF_SIGN | CKF_VERIFY;
    for &m in RSA {
        assert!(list.contains(&m), "{m:#x} listed");
        let info = token.mechanism_info(0, m).unwrap();
        assert_eq!(info.flags, sign, "RSA mechanism {m:#x} flags");
        assert_eq!(
            (info.ulMinKeySize, info.ulMaxKeySize),
            (1024, 16384),
            "{m:#x}"
        );
    }
    for &m in &EC_MECHANISMS {
        assert!(list.contains(&m), "{m:#x} listed");
        let info = token.mechanism_info(0, m).unwrap();
        assert_eq!(info.flags, sign | EC_FLAGS, "EC mechanism {m:#x} flags");
        assert_eq!((info.ulMinKeySize, info.ulMaxKeySize), (256, 521), "{m:#x}");
    }
    let ed = token.mechanism_info(0, CKM_EDDSA).unwrap();
    assert_eq!(ed.flags, sign);
    assert_eq!((ed.ulMinKeySize, ed.ulMaxKeySize), (256, 256));
    // PKCS#11 v3.2 post-quantum mechanisms: security strength in bits (ML-DSA, SLH-DSA), tree
    // heights (HSS).
    for (m, sizes) in [
        (CKM_ML_DSA, (128, 256)),
        (CKM_SLH_DSA, (128, 256)),
        (CKM_HSS, (5, 25)),
    ] {
        let info = token.mechanism_info(0, m).unwrap();
        assert_eq!(info.flags, sign, "{m:#x}");
        assert_eq!((info.ulMinKeySize, info.ulMaxKeySize), sizes, "{m:#x}");
    }
    // Exactly these mechanisms sign: nothing else claims CKF_SIGN.
    let signing: Vec<_> = list
        .iter()
        .copied()
        .filter(|m| token.mechanism_info(0, *m).unwrap().flags & CKF_SIGN != 0)
        .collect();
    assert_eq!(signing.len(), RSA.len() + EC_MECHANISMS.len() + 1 + 3);
}

#[test]
fn unknown_mechanisms_and_slots_are_refused() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    for m in [
        CKM_MD5_RSA_PKCS,
        CKM_AES_CBC,
        CKM_SHA3_256_RSA_PKCS,
        CKM_VENDOR_DEFINED,
    ] {
        assert_eq!(
            token.mechanism_info(0, m).unwrap_err().code(),
            CKR_MECHANISM_INVALID,
            "{m:#x}"
        );
    }
    assert_eq!(
        token.mechanism_info(1, CKM_ECDSA).unwrap_err().code(),
        CKR_SLOT_ID_INVALID
    );
    assert_eq!(
        token.mechanism_list(7).unwrap_err().code(),
        CKR_SLOT_ID_INVALID
    );
}

/// Single-part input over 64 KiB (65,536 bytes): hashed here for a hash-and-sign plan, refused for any other
/// before it is copied (a caller's length never sizes an allocation).
#[test]
fn single_part_input_past_64_kib_is_hashed_or_refused_before_it_is_copied() {
    use crate::crypto::HashAlg;
    use crate::token::mechanisms::{single_part, InputOwned, Plan};
    // The TSB's limit (docs/tsb-api.md), written out: the constant is under test too.
    let data = vec![7u8; 65_537];
    for plan in [Plan::EdDsa, Plan::RsaPkcsRaw, Plan::EcdsaDigest] {
        match single_part(plan, &data) {
            Err(e) => assert_eq!(e.code(), CKR_DATA_LEN_RANGE),
            Ok(_) => panic!("{plan:?}: 64 KiB + 1 taken"),
        }
        assert!(matches!(
            single_part(plan, &data[..65_536]),
            Ok(InputOwned::Message(m)) if m.len() == 65_536
        ));
    }
    let hashed = single_part(Plan::RsaPkcs(HashAlg::Sha256), &data);
    assert!(matches!(hashed, Ok(InputOwned::Digest(d)) if d.len() == 32));
}
