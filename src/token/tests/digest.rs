//! Local message digesting (PKCS#11 v2.40 §5.10), checked against OpenSSL.

use cryptoki_sys::*;
use openssl::hash::{hash, MessageDigest};
use serde_json::json;

use super::fake::FakeTsb;
use super::{private_key, session, token_with};
use crate::token::{DigestOutput, MechParams, Mechanism};

const DIGESTS: [(CK_MECHANISM_TYPE, fn() -> MessageDigest); 5] = [
    (CKM_SHA_1, MessageDigest::sha1),
    (CKM_SHA224, MessageDigest::sha224),
    (CKM_SHA256, MessageDigest::sha256),
    (CKM_SHA384, MessageDigest::sha384),
    (CKM_SHA512, MessageDigest::sha512),
];

fn digest(out: DigestOutput) -> Vec<u8> {
    match out {
        DigestOutput::Digest(d) => d,
        DigestOutput::Length(n) => panic!("a length ({n}), not a digest"),
    }
}

/// §5.10 C_Digest and C_DigestUpdate/C_DigestFinal give OpenSSL's digest for every mechanism;
/// a size query and a short buffer keep the operation (§5.2).
#[test]
fn every_digest_matches_openssl_single_and_multi_part() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let msg = b"digest me, in one part or in three";
    for (m, md) in DIGESTS {
        let expected = hash(md(), msg).unwrap().to_vec();
        let n = expected.len();
        let info = token.mechanism_info(0, m).unwrap();
        assert_eq!(info.flags, CKF_DIGEST, "{m:#x}: software digest, no key");
        assert_eq!((info.ulMinKeySize, info.ulMaxKeySize), (0, 0));
        assert!(token.mechanism_list(0).unwrap().contains(&m));

        token.digest_init(s, &Mechanism::new(m)).unwrap();
        assert_eq!(
            token.digest_init(s, &Mechanism::new(m)).unwrap_err().code(),
            CKR_OPERATION_ACTIVE
        );
        assert_eq!(token.digest(s, msg, None).unwrap(), DigestOutput::Length(n));
        let short = token.digest(s, msg, Some(n - 1)).unwrap_err();
        assert_eq!(short.code(), CKR_BUFFER_TOO_SMALL);
        assert_eq!(short.needed(), Some(n));
        assert_eq!(digest(token.digest(s, msg, Some(n)).unwrap()), expected);
        assert_eq!(
            token.digest(s, msg, Some(n)).unwrap_err().code(),
            CKR_OPERATION_NOT_INITIALIZED,
            "C_Digest ended the operation"
        );

        token.digest_init(s, &Mechanism::new(m)).unwrap();
        for part in [&msg[..6], &msg[6..20], &msg[20..]] {
            token.digest_update(s, part).unwrap();
        }
        assert_eq!(
            token.digest_final(s, None).unwrap(),
            DigestOutput::Length(n)
        );
        assert_eq!(
            token.digest_final(s, Some(n - 1)).unwrap_err().code(),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(
            digest(token.digest_final(s, Some(n + 7)).unwrap()),
            expected
        );
        assert_eq!(
            token.digest_final(s, Some(n)).unwrap_err().code(),
            CKR_OPERATION_NOT_INITIALIZED
        );
    }
}

/// Wrong mechanisms and parameters, calls without an operation, C_Digest after an update, and
/// C_DigestKey (every key of this token is indigestible, and the call ends the operation).
#[test]
fn digest_operation_rules() {
    let fake = FakeTsb::new();
    fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    assert_eq!(
        token
            .digest_init(s, &Mechanism::new(CKM_ECDSA_SHA256))
            .unwrap_err()
            .code(),
        CKR_MECHANISM_INVALID
    );
    let with_params = Mechanism {
        mechanism: CKM_SHA256,
        params: MechParams::Invalid("bytes"),
    };
    assert_eq!(
        token.digest_init(s, &with_params).unwrap_err().code(),
        CKR_MECHANISM_PARAM_INVALID
    );
    for err in [
        token.digest(s, b"x", Some(64)).unwrap_err(),
        token.digest_update(s, b"x").unwrap_err(),
        token.digest_final(s, Some(64)).unwrap_err(),
        token.digest_key(s, 1).unwrap_err(),
    ] {
        assert_eq!(err.code(), CKR_OPERATION_NOT_INITIALIZED);
    }

    token.digest_init(s, &Mechanism::new(CKM_SHA256)).unwrap();
    token.digest_update(s, b"x").unwrap();
    assert_eq!(
        token.digest(s, b"x", Some(32)).unwrap_err().code(),
        CKR_FUNCTION_FAILED
    );
    assert_eq!(
        token.digest_final(s, Some(32)).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED,
        "the failed C_Digest ended the operation"
    );

    let key = private_key(&token, s, "ec");
    token.digest_init(s, &Mechanism::new(CKM_SHA256)).unwrap();
    assert_eq!(
        token.digest_key(s, key).unwrap_err().code(),
        CKR_KEY_INDIGESTIBLE
    );
    assert_eq!(
        token.digest_final(s, Some(32)).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    token.digest_init(s, &Mechanism::new(CKM_SHA256)).unwrap();
    assert_eq!(
        token.digest_key(s, 0xdead_0000).unwrap_err().code(),
        CKR_KEY_HANDLE_INVALID
    );
    token.digest_init(s, &Mechanism::new(CKM_SHA256)).unwrap();
    token.end_digest(s);
    token.digest_init(s, &Mechanism::new(CKM_SHA512)).unwrap();
}
