//! Templates as `C_FindObjectsInit` and `C_CreateObject` read them (`ffi::convert::template`,
//! `without_repeats`), with lengths that may lie: `ulValueLen` longer than the buffer (up to
//! 2^64 − 1) and `ulCount` beyond the array. No panic, no read past a buffer
//! (AddressSanitizer: a length above the reader's bound comes with the short buffer), no
//! allocation from an unchecked length; the answer is exactly the first that applies of
//! CKR_ARGUMENTS_BAD (too many attributes), CKR_ATTRIBUTE_VALUE_INVALID (a fixed-size attribute
//! of another length, then a value over its bound), CKR_ARGUMENTS_BAD (over 4 MiB in all, then
//! a NULL value with a length); a creation template keeps one entry per attribute type, and
//! conflicting repeats are CKR_TEMPLATE_INCONSISTENT.
#![no_main]

use arbitrary::Arbitrary;
use cryptoki_sys::*;
use libfuzzer_sys::fuzz_target;
use tsb_pkcs11::fuzzing::{
    fixed_len, max_value_len, template, Attr, Passed, MAX_TEMPLATE, MAX_TEMPLATE_BYTES,
};

#[derive(Arbitrary, Debug)]
struct Input {
    attrs: Vec<(u8, Option<Vec<u8>>, Option<Claim>)>,
    raw_types: Vec<u64>,
    null_len: u64,
    count: Option<u64>,
}

/// A claimed `ulValueLen`: a few interesting shapes and any value.
#[derive(Arbitrary, Debug)]
enum Claim {
    /// The value's length plus this much.
    Longer(u16),
    /// Around the bound of the attribute's type.
    NearBound(i8),
    /// 2^n for n in 0..64.
    Power(u8),
    Any(u64),
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
    let attrs: Vec<Attr> = input
        .attrs
        .iter()
        .enumerate()
        .map(|(i, (t, v, claim))| {
            let ty = match input.raw_types.get(i) {
                Some(raw) if *t >= 200 => *raw as CK_ATTRIBUTE_TYPE,
                _ => TYPES[*t as usize % TYPES.len()],
            };
            let own = v.as_ref().map_or(0, Vec::len) as u64;
            let claimed = claim.as_ref().map(|c| match c {
                Claim::Longer(n) => own + u64::from(*n),
                Claim::NearBound(d) => (max_value_len(ty) as i64 + i64::from(*d)).max(0) as u64,
                Claim::Power(n) => 1u64 << (n % 64),
                Claim::Any(n) => *n,
            });
            Attr {
                type_: ty,
                value: v.clone(),
                claimed: claimed.map(|c| c as CK_ULONG),
            }
        })
        .collect();
    let count = input
        .count
        .map_or(attrs.len() as CK_ULONG, |c| c as CK_ULONG);
    let (search, create, count, passed) = template(&attrs, input.null_len as CK_ULONG, count);

    // The answer the bounded reader must give, in its order of checks.
    let len = |p: &Passed| usize::try_from(p.claimed).unwrap_or(usize::MAX);
    let expected: Result<(), CK_RV> = if count as u128 > MAX_TEMPLATE as u128 {
        Err(CKR_ARGUMENTS_BAD)
    } else if passed
        .iter()
        .any(|p| fixed_len(p.type_).is_some_and(|n| n != len(p)))
    {
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    } else if passed
        .iter()
        .any(|p| p.buffer.is_some() && len(p) > max_value_len(p.type_))
    {
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    } else if passed
        .iter()
        .filter(|p| p.buffer.is_some())
        .map(len)
        .sum::<usize>()
        > MAX_TEMPLATE_BYTES
    {
        Err(CKR_ARGUMENTS_BAD)
    } else if passed.iter().any(|p| p.buffer.is_none() && p.claimed != 0) {
        Err(CKR_ARGUMENTS_BAD)
    } else {
        Ok(())
    };
    match (&search, expected) {
        (Ok(t), Ok(())) => {
            assert_eq!(t.len(), passed.len());
            for ((ta, va), p) in t.iter().zip(&passed) {
                assert_eq!(*ta, p.type_);
                let buffer = p.buffer.as_deref().unwrap_or(&[]);
                assert_eq!(
                    va.as_slice(),
                    &buffer[..len(p)],
                    "the claimed bytes, no more"
                );
            }
        }
        (Err(e), Err(want)) => assert_eq!(e.code(), want, "{e:?}"),
        (got, want) => panic!("reader answered {got:?}, expected {want:?}"),
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
