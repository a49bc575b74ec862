//! Local message digests (issue 12): `CKM_SHA_1` .. `CKM_SHA512` are listed with `CKF_DIGEST`
//! and `C_Digest*` results equal OpenSSL's, with the operation-state rules of PKCS#11 v2.40
//! §5.2 (size query and `CKR_BUFFER_TOO_SMALL` keep the operation).

use tsb_pkcs11_test_support as common;

use std::ptr::null_mut;

use common::verify::{Hash, ALL};
use common::{raw_find_private_keys, Harness};
use cryptoki_sys::*;

/// SAFETY (every use): the arguments are NULL or valid for the lengths given.
macro_rules! call {
    ($f:expr, $($arg:expr),* $(,)?) => {
        // SAFETY: see the macro's documentation.
        unsafe { ($f.expect("function in the list"))($($arg),*) }
    };
}

fn mech_of(h: Hash) -> CK_MECHANISM_TYPE {
    match h {
        Hash::Sha1 => CKM_SHA_1,
        Hash::Sha224 => CKM_SHA224,
        Hash::Sha256 => CKM_SHA256,
        Hash::Sha384 => CKM_SHA384,
        Hash::Sha512 => CKM_SHA512,
    }
}

fn mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

fn session(h: &Harness) -> CK_SESSION_HANDLE {
    let mut s = 0;
    assert_eq!(
        call!(
            h.raw.f.C_OpenSession,
            0,
            CKF_SERIAL_SESSION,
            null_mut(),
            None,
            &mut s
        ),
        CKR_OK
    );
    s
}

#[test]
fn digest_mechanisms_are_listed_with_ckf_digest() {
    let h = Harness::new();
    let f = h.raw.f;
    let mut n: CK_ULONG = 0;
    assert_eq!(call!(f.C_GetMechanismList, 0, null_mut(), &mut n), CKR_OK);
    let mut list = vec![0; n as usize];
    assert_eq!(
        call!(f.C_GetMechanismList, 0, list.as_mut_ptr(), &mut n),
        CKR_OK
    );
    for hash in ALL {
        let m = mech_of(hash);
        assert!(list.contains(&m), "{hash:?} listed");
        let mut info = CK_MECHANISM_INFO::default();
        assert_eq!(call!(f.C_GetMechanismInfo, 0, m, &mut info), CKR_OK);
        assert_ne!(info.flags & CKF_DIGEST, 0, "{hash:?} has CKF_DIGEST");
        assert_eq!(info.flags & (CKF_SIGN | CKF_VERIFY), 0);
    }
}

#[test]
fn single_and_multi_part_digests_match_openssl() {
    let h = Harness::new();
    let f = h.raw.f;
    let s = session(&h);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    for hash in ALL {
        let want = hash.digest(&data);
        let mut m = mech(mech_of(hash));
        // Single part, with a size query and a short buffer first (both keep the operation).
        assert_eq!(call!(f.C_DigestInit, s, &mut m), CKR_OK);
        assert_eq!(
            call!(f.C_DigestInit, s, &mut m),
            CKR_OPERATION_ACTIVE,
            "{hash:?}: one digest at a time"
        );
        let mut len: CK_ULONG = 0;
        let (p, n) = (data.as_ptr() as *mut u8, data.len() as CK_ULONG);
        assert_eq!(call!(f.C_Digest, s, p, n, null_mut(), &mut len), CKR_OK);
        assert_eq!(len as usize, hash.output_len());
        let mut out = vec![0u8; 128];
        let mut short = len - 1;
        assert_eq!(
            call!(f.C_Digest, s, p, n, out.as_mut_ptr(), &mut short),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(short, len, "the needed length is reported");
        let mut cap: CK_ULONG = out.len() as CK_ULONG;
        assert_eq!(
            call!(f.C_Digest, s, p, n, out.as_mut_ptr(), &mut cap),
            CKR_OK
        );
        assert_eq!(&out[..cap as usize], &want[..], "{hash:?} single part");
        assert_eq!(
            call!(f.C_Digest, s, p, n, out.as_mut_ptr(), &mut cap),
            CKR_OPERATION_NOT_INITIALIZED,
            "the operation ended"
        );
        // Multi part, uneven chunks.
        assert_eq!(call!(f.C_DigestInit, s, &mut m), CKR_OK);
        for chunk in data.chunks(7919) {
            assert_eq!(
                call!(
                    f.C_DigestUpdate,
                    s,
                    chunk.as_ptr() as *mut u8,
                    chunk.len() as CK_ULONG
                ),
                CKR_OK
            );
        }
        let mut len: CK_ULONG = 0;
        assert_eq!(call!(f.C_DigestFinal, s, null_mut(), &mut len), CKR_OK);
        let mut short: CK_ULONG = 1;
        assert_eq!(
            call!(f.C_DigestFinal, s, out.as_mut_ptr(), &mut short),
            CKR_BUFFER_TOO_SMALL
        );
        let mut cap: CK_ULONG = out.len() as CK_ULONG;
        assert_eq!(
            call!(f.C_DigestFinal, s, out.as_mut_ptr(), &mut cap),
            CKR_OK
        );
        assert_eq!(&out[..cap as usize], &want[..], "{hash:?} multi part");
    }
    // The empty message.
    let mut m = mech(CKM_SHA256);
    assert_eq!(call!(f.C_DigestInit, s, &mut m), CKR_OK);
    let mut out = [0u8; 32];
    let mut cap: CK_ULONG = 32;
    assert_eq!(
        call!(f.C_Digest, s, null_mut(), 0, out.as_mut_ptr(), &mut cap),
        CKR_OK
    );
    assert_eq!(&out[..], &Hash::Sha256.digest(b"")[..]);
}

#[test]
fn digest_operation_state_rules() {
    let h = Harness::new();
    let f = h.raw.f;
    let s = session(&h);
    let mut out = [0u8; 64];
    let mut cap: CK_ULONG = 64;
    let mut d = *b"data";
    assert_eq!(
        call!(f.C_Digest, s, d.as_mut_ptr(), 4, out.as_mut_ptr(), &mut cap),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        call!(f.C_DigestUpdate, s, d.as_mut_ptr(), 4),
        CKR_OPERATION_NOT_INITIALIZED
    );
    let mut m = mech(CKM_ECDSA);
    assert_eq!(call!(f.C_DigestInit, s, &mut m), CKR_MECHANISM_INVALID);
    let mut param = [0u8; 8];
    let mut m = CK_MECHANISM {
        mechanism: CKM_SHA256,
        pParameter: param.as_mut_ptr().cast(),
        ulParameterLen: 8,
    };
    assert_eq!(
        call!(f.C_DigestInit, s, &mut m),
        CKR_MECHANISM_PARAM_INVALID
    );
    // C_DigestKey on a key: indigestible, and the operation ends.
    let key = raw_find_private_keys(f, s, "ec-p256").unwrap()[0];
    let mut m = mech(CKM_SHA256);
    assert_eq!(call!(f.C_DigestInit, s, &mut m), CKR_OK);
    assert_eq!(call!(f.C_DigestKey, s, key), CKR_KEY_INDIGESTIBLE);
    assert_eq!(
        call!(f.C_DigestFinal, s, out.as_mut_ptr(), &mut cap),
        CKR_OPERATION_NOT_INITIALIZED
    );
    // C_Digest after C_DigestUpdate ends the operation with an error.
    assert_eq!(call!(f.C_DigestInit, s, &mut m), CKR_OK);
    assert_eq!(call!(f.C_DigestUpdate, s, d.as_mut_ptr(), 4), CKR_OK);
    assert_ne!(
        call!(f.C_Digest, s, d.as_mut_ptr(), 4, out.as_mut_ptr(), &mut cap),
        CKR_OK
    );
    assert_eq!(
        call!(f.C_DigestFinal, s, out.as_mut_ptr(), &mut cap),
        CKR_OPERATION_NOT_INITIALIZED
    );
    // A digest and a signature may run side by side in one session.
    assert_eq!(call!(f.C_DigestInit, s, &mut m), CKR_OK);
    let mut sm = mech(CKM_ECDSA_SHA256);
    assert_eq!(call!(f.C_SignInit, s, &mut sm, key), CKR_OK);
    let mut cap: CK_ULONG = 64;
    assert_eq!(
        call!(f.C_Digest, s, d.as_mut_ptr(), 4, out.as_mut_ptr(), &mut cap),
        CKR_OK
    );
    assert_eq!(&out[..32], &Hash::Sha256.digest(b"data")[..]);
}
