//! Mechanism parameters: `CK_MECHANISM` decoding (`ffi::convert::mechanism`), validation
//! against each key type (`Plan::new`), single- and multi-part input buffering (`DataSink`),
//! the TSB request it becomes (`Plan::prepare`) and local verification of a made-up signature.
//! None may panic; accepted input must fit the TSB payload limit.
#![no_main]

mod keys;

use arbitrary::Arbitrary;
use cryptoki_sys::*;
use libfuzzer_sys::fuzz_target;
use tsb_pkcs11::fuzzing::{single_part, verify, DataSink, Plan, PAYLOAD_LIMIT, SUPPORTED};

#[derive(Arbitrary, Debug)]
enum Params {
    /// Raw bytes as the application would pass them.
    Raw(Vec<u8>),
    /// A well-formed `CK_RSA_PKCS_PSS_PARAMS` with fuzzed fields (reaches the checks).
    Pss { hash: u8, mgf: u8, salt: u16 },
    /// A well-formed `CK_EDDSA_PARAMS`.
    EdDsa { prehash: bool, context: Vec<u8> },
    /// A well-formed `CK_SIGN_ADDITIONAL_CONTEXT` (ML-DSA, SLH-DSA).
    SignContext { hedge: u8, context: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Index into the supported mechanisms, or a raw mechanism type when out of range.
    mechanism: u16,
    raw_mechanism: u64,
    null_parameter: bool,
    params: Params,
    /// Input split into parts for C_SignUpdate; `repeat` makes long input cheaply.
    parts: Vec<Vec<u8>>,
    repeat: u8,
    signature: Vec<u8>,
}

const HASHES: [CK_MECHANISM_TYPE; 6] = [
    CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512, CKM_ECDSA,
];
const MGFS: [CK_RSA_PKCS_MGF_TYPE; 6] = [
    CKG_MGF1_SHA1,
    CKG_MGF1_SHA224,
    CKG_MGF1_SHA256,
    CKG_MGF1_SHA384,
    CKG_MGF1_SHA512,
    0x999,
];

fn as_bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: plain-old-data PKCS#11 structs viewed as bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
        .to_vec()
}

fuzz_target!(|input: Input| {
    let mechanism = SUPPORTED
        .get(input.mechanism as usize)
        .copied()
        .unwrap_or(input.raw_mechanism as CK_MECHANISM_TYPE);
    let (parameter, context) = match &input.params {
        Params::Raw(b) => (b.clone(), Vec::new()),
        Params::Pss { hash, mgf, salt } => (
            as_bytes(&CK_RSA_PKCS_PSS_PARAMS {
                hashAlg: HASHES[*hash as usize % HASHES.len()],
                mgf: MGFS[*mgf as usize % MGFS.len()],
                sLen: *salt as CK_ULONG,
            }),
            Vec::new(),
        ),
        Params::EdDsa { prehash, context } => (
            as_bytes(&CK_EDDSA_PARAMS {
                phFlag: *prehash as CK_BBOOL,
                ulContextDataLen: 0,
                pContextData: std::ptr::null_mut(),
            }),
            context.clone(),
        ),
        Params::SignContext { hedge, context } => (
            as_bytes(&CK_SIGN_ADDITIONAL_CONTEXT {
                hedgeVariant: *hedge as CK_HEDGE_TYPE,
                pContext: std::ptr::null_mut(),
                ulContextLen: 0,
            }),
            context.clone(),
        ),
    };
    let m =
        match tsb_pkcs11::fuzzing::mechanism(mechanism, &parameter, input.null_parameter, &context)
        {
            Ok(m) => m,
            Err(e) => {
                assert_eq!(e.code(), CKR_ARGUMENTS_BAD, "{e:?}");
                return;
            }
        };
    let repeat = 1 + input.repeat as usize % 8;
    let data: Vec<u8> = input.parts.concat().repeat(repeat);
    for (key_type, key) in keys::keys() {
        let plan = match Plan::new(&m, *key_type) {
            Ok(p) => p,
            Err(e) => {
                assert!(
                    [
                        CKR_MECHANISM_INVALID,
                        CKR_MECHANISM_PARAM_INVALID,
                        CKR_KEY_TYPE_INCONSISTENT
                    ]
                    .contains(&e.code()),
                    "{e:?}"
                );
                continue;
            }
        };
        // Single part: input a plan cannot take is refused before it is copied.
        let single = match single_part(plan, &data) {
            Ok(owned) => Some(owned),
            Err(e) => {
                assert_eq!(e.code(), CKR_DATA_LEN_RANGE, "single: {e:?}");
                assert!(
                    data.len() > PAYLOAD_LIMIT,
                    "single: refused {} bytes",
                    data.len()
                );
                None
            }
        };
        // Multi-part: the same bytes in the fuzzer's pieces.
        let mut sink = DataSink::new(plan, key);
        let mut multi_ok = true;
        for _ in 0..repeat {
            for part in &input.parts {
                if sink.update(part).is_err() {
                    multi_ok = false;
                }
            }
        }
        let multi = sink.finish();
        for (which, owned) in [("single", single), ("multi", multi_ok.then_some(multi))] {
            let Some(owned) = owned else { continue };
            match plan.prepare(owned.as_input(), key) {
                Ok(p) => {
                    assert!(
                        p.payload.len() <= PAYLOAD_LIMIT,
                        "{which}: payload of {} bytes",
                        p.payload.len()
                    );
                    assert!(!p.algorithm.is_empty());
                    // A made-up signature must not verify, and must not panic.
                    let _ = verify(key, &p.scheme, p.signed_data(), &input.signature);
                }
                Err(e) => assert_eq!(e.code(), CKR_DATA_LEN_RANGE, "{which}: {e:?}"),
            }
        }
    }
});
