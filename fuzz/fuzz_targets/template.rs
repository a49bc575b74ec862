//! Templates as `C_FindObjectsInit` and `C_CreateObject` read them (`ffi::convert::template`,
//! `without_repeats`): no panic; a refused template is CKR_ARGUMENTS_BAD (NULL value with a
//! length), CKR_ATTRIBUTE_VALUE_INVALID (a fixed-size attribute of another length) or
//! CKR_TEMPLATE_INCONSISTENT (conflicting repeats); a creation template keeps one
//! entry per attribute type, the first value.
#![no_main]

use arbitrary::Arbitrary;
use cryptoki_sys::*;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    attrs: Vec<(u8, Option<Vec<u8>>)>,
    raw_types: Vec<u64>,
    null_len: u64,
}

/// A few real attribute types, so repeats are common.
const TYPES: [CK_ATTRIBUTE_TYPE; 8] = [
    CKA_CLASS,
    CKA_LABEL,
    CKA_ID,
    CKA_VALUE,
    CKA_TOKEN,
    CKA_CERTIFICATE_TYPE,
    CKA_KEY_TYPE,
    0x8000_0001,
];

fuzz_target!(|input: Input| {
    let attrs: Vec<(CK_ATTRIBUTE_TYPE, Option<Vec<u8>>)> = input
        .attrs
        .iter()
        .enumerate()
        .map(|(i, (t, v))| {
            let ty = match input.raw_types.get(i) {
                Some(raw) if *t >= 200 => *raw as CK_ATTRIBUTE_TYPE,
                _ => TYPES[*t as usize % TYPES.len()],
            };
            (ty, v.clone())
        })
        .collect();
    let null_len = input.null_len as CK_ULONG;
    let (search, create) = tsb_pkcs11::fuzzing::template(&attrs, null_len);
    let has_bad_null = attrs.iter().any(|(_, v)| v.is_none()) && null_len != 0;
    // A fixed-size attribute (CK_BBOOL, CK_ULONG) whose length is not its size is refused
    // before any value is read (PKCS#11 v3.0 §5.8: CKR_ATTRIBUTE_VALUE_INVALID).
    let wrong_len = attrs.iter().any(|(t, v)| {
        let len = v.as_ref().map_or(null_len as usize, Vec::len);
        tsb_pkcs11::fuzzing::fixed_len(*t).is_some_and(|n| n != len)
    });
    match &search {
        Ok(t) => {
            assert!(!has_bad_null);
            assert!(
                !wrong_len,
                "a fixed-size attribute of the wrong length was accepted"
            );
            assert_eq!(t.len(), attrs.len());
            for ((ta, va), (tb, vb)) in t.iter().zip(&attrs) {
                assert_eq!(ta, tb);
                assert_eq!(va, vb.as_deref().unwrap_or(&[]));
            }
        }
        Err(e) if e.code() == CKR_ATTRIBUTE_VALUE_INVALID => assert!(wrong_len),
        Err(e) => {
            assert_eq!(e.code(), CKR_ARGUMENTS_BAD);
            assert!(has_bad_null || attrs.len() > 4096);
        }
    }
    match (&search, &create) {
        (Ok(all), Ok(once)) => {
            for (i, (t, v)) in once.iter().enumerate() {
                assert!(!once[..i].iter().any(|(u, _)| u == t), "type {t:#x} twice");
                let first = all.iter().find(|(u, _)| u == t).unwrap();
                assert_eq!(&first.1, v);
            }
            for (t, v) in all {
                assert!(once.iter().any(|(u, w)| u == t && w == v));
            }
        }
        (Ok(all), Err(e)) => {
            assert_eq!(e.code(), CKR_TEMPLATE_INCONSISTENT);
            let conflict = all
                .iter()
                .any(|(t, v)| all.iter().any(|(u, w)| u == t && w != v));
            assert!(conflict, "refused without a conflict");
        }
        (Err(a), Err(b)) => assert_eq!(a.code(), b.code()),
        (Err(_), Ok(_)) => panic!("creation template accepted what a search refused"),
    }
});
