//! PKCS#11 conformance of return codes and state rules (issue 10): each test drives the built
//! module through the raw function list and checks the value the spec (and SoftHSM2) gives.

use tsb_pkcs11_test_support as common;

use std::ptr::null_mut;

use common::Harness;
use cryptoki_sys::*;

/// Calls a function of a PKCS#11 function list.
///
/// SAFETY (every use): the arguments are NULL or valid for the lengths given.
macro_rules! call {
    ($f:expr, $($arg:expr),* $(,)?) => {
        // SAFETY: see the macro's documentation.
        unsafe { ($f.expect("function in the list"))($($arg),*) }
    };
}

fn open(h: &Harness, flags: CK_FLAGS) -> CK_SESSION_HANDLE {
    let mut s = 0;
    assert_eq!(
        call!(
            h.raw.f.C_OpenSession,
            0,
            CKF_SERIAL_SESSION | flags,
            null_mut(),
            None,
            &mut s
        ),
        CKR_OK
    );
    s
}

fn token_flags(h: &Harness) -> CK_FLAGS {
    let mut info = CK_TOKEN_INFO::default();
    assert_eq!(call!(h.raw.f.C_GetTokenInfo, 0, &mut info), CKR_OK);
    info.flags
}

#[test]
fn legacy_parallel_functions_answer_not_parallel() {
    let h = Harness::new();
    let s = open(&h, 0);
    let f = h.raw.f;
    assert_eq!(call!(f.C_GetFunctionStatus, s), CKR_FUNCTION_NOT_PARALLEL);
    assert_eq!(call!(f.C_CancelFunction, s), CKR_FUNCTION_NOT_PARALLEL);
}

#[test]
fn random_functions_answer_no_rng_after_the_session_checks() {
    let h = Harness::new();
    let f = h.raw.f;
    assert_eq!(token_flags(&h) & CKF_RNG, 0, "the token claims no RNG");
    let s = open(&h, 0);
    let mut buf = [0u8; 16];
    assert_eq!(
        call!(f.C_GenerateRandom, s, buf.as_mut_ptr(), 16),
        CKR_RANDOM_NO_RNG
    );
    assert_eq!(buf, [0u8; 16], "nothing written");
    assert_eq!(
        call!(f.C_SeedRandom, s, buf.as_mut_ptr(), 16),
        CKR_RANDOM_NO_RNG
    );
    assert_eq!(
        call!(f.C_GenerateRandom, s + 1000, buf.as_mut_ptr(), 16),
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(
        call!(f.C_SeedRandom, s + 1000, buf.as_mut_ptr(), 16),
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(
        call!(f.C_GenerateRandom, s, null_mut(), 16),
        CKR_ARGUMENTS_BAD
    );
}

#[test]
fn so_login_follows_the_session_state_rules_then_is_refused() {
    let h = Harness::new();
    let f = h.raw.f;
    let mut pin = *b"1234";
    let ro = open(&h, 0);
    let rw = open(&h, CKF_RW_SESSION);
    // A read-only session exists (PKCS#11 v2.40 §5.6 C_Login).
    assert_eq!(
        call!(f.C_Login, rw, CKU_SO, pin.as_mut_ptr(), 4),
        CKR_SESSION_READ_ONLY_EXISTS
    );
    assert_eq!(call!(f.C_CloseSession, ro), CKR_OK);
    // The user is logged in.
    assert_eq!(call!(f.C_Login, rw, CKU_USER, pin.as_mut_ptr(), 4), CKR_OK);
    assert_eq!(
        call!(f.C_Login, rw, CKU_SO, pin.as_mut_ptr(), 4),
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN
    );
    assert_eq!(call!(f.C_Logout, rw), CKR_OK);
    // No SO exists: no PIN matches.
    assert_eq!(
        call!(f.C_Login, rw, CKU_SO, pin.as_mut_ptr(), 4),
        CKR_PIN_INCORRECT
    );
    let mut info = CK_SESSION_INFO::default();
    assert_eq!(call!(f.C_GetSessionInfo, rw, &mut info), CKR_OK);
    assert_eq!(info.state, CKS_RW_PUBLIC_SESSION, "nobody is logged in");
    // An unknown user type stays CKR_USER_TYPE_INVALID.
    assert_eq!(
        call!(f.C_Login, rw, 7, pin.as_mut_ptr(), 4),
        CKR_USER_TYPE_INVALID
    );
}

#[test]
fn context_specific_login_needs_an_active_operation() {
    let h = Harness::new();
    let f = h.raw.f;
    let s = open(&h, 0);
    let mut pin = *b"1234";
    assert_eq!(
        call!(f.C_Login, s, CKU_CONTEXT_SPECIFIC, pin.as_mut_ptr(), 4),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(call!(f.C_Login, s, CKU_USER, pin.as_mut_ptr(), 4), CKR_OK);
    assert_eq!(
        call!(f.C_Login, s, CKU_CONTEXT_SPECIFIC, pin.as_mut_ptr(), 4),
        CKR_OPERATION_NOT_INITIALIZED,
        "also when the user is logged in"
    );
}

#[test]
fn session_handles_are_never_reused_across_finalize() {
    let h = Harness::new();
    let f = h.raw.f;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let a = open(&h, 0);
        let b = open(&h, CKF_RW_SESSION);
        for new in [a, b] {
            assert!(!seen.contains(&new), "handle {new} reused (seen {seen:?})");
        }
        assert_eq!(call!(f.C_CloseSession, a), CKR_OK);
        seen.extend([a, b]);
        h.reinitialize();
        // The old handles name no session of the new instance.
        let mut info = CK_SESSION_INFO::default();
        for old in &seen {
            assert_eq!(
                call!(f.C_GetSessionInfo, *old, &mut info),
                CKR_SESSION_HANDLE_INVALID,
                "stale handle {old}"
            );
        }
    }
    let next = open(&h, 0);
    assert!(!seen.contains(&next), "{next} reused from {seen:?}");
}

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.e30.simulated-jwt-for-conformance";

#[test]
fn a_wrong_pin_sets_user_pin_count_low_until_the_next_login() {
    let mut cfg = tsb_sim::SimConfig::demo();
    cfg.auth.bearer_token = Some(JWT.to_string());
    let h = Harness::with(cfg, serde_json::json!({ "pinIs": "token" }));
    let f = h.raw.f;
    let s = open(&h, 0);
    assert_eq!(token_flags(&h) & CKF_USER_PIN_COUNT_LOW, 0);
    let mut wrong = *b"not-the-jwt";
    assert_eq!(
        call!(
            f.C_Login,
            s,
            CKU_USER,
            wrong.as_mut_ptr(),
            wrong.len() as CK_ULONG
        ),
        CKR_PIN_INCORRECT
    );
    assert_ne!(
        token_flags(&h) & CKF_USER_PIN_COUNT_LOW,
        0,
        "after a wrong PIN"
    );
    // A refused SO login is no wrong user PIN; the flag stays as it is.
    let mut right = JWT.as_bytes().to_vec();
    assert_eq!(
        call!(
            f.C_Login,
            s,
            CKU_USER,
            right.as_mut_ptr(),
            right.len() as CK_ULONG
        ),
        CKR_OK
    );
    assert_eq!(
        token_flags(&h) & CKF_USER_PIN_COUNT_LOW,
        0,
        "cleared by a successful login"
    );
    assert_eq!(call!(f.C_Logout, s), CKR_OK);
    assert_eq!(
        token_flags(&h) & CKF_USER_PIN_COUNT_LOW,
        0,
        "logout keeps it clear"
    );
}

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn attr(t: CK_ATTRIBUTE_TYPE, v: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v.as_mut_ptr().cast(),
        ulValueLen: v.len() as CK_ULONG,
    }
}

/// An attribute whose `ulValueLen` claims far more than its 3-byte buffer: reading it would
/// crash the test process.
fn oversized(t: CK_ATTRIBUTE_TYPE, v: &mut [u8; 3]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v.as_mut_ptr().cast(),
        ulValueLen: 1 << 40,
    }
}

fn create(h: &Harness, s: CK_SESSION_HANDLE, t: &mut [CK_ATTRIBUTE]) -> CK_RV {
    let mut o = 0;
    call!(
        h.raw.f.C_CreateObject,
        s,
        t.as_mut_ptr(),
        t.len() as CK_ULONG,
        &mut o
    )
}

#[test]
fn invalid_class_value_is_attribute_value_invalid() {
    let h = Harness::new();
    let rw = open(&h, CKF_RW_SESSION);
    let mut class = ulong(0xDEAD_BEEF);
    let mut value = *b"not a certificate";
    let mut t = [attr(CKA_CLASS, &mut class), attr(CKA_VALUE, &mut value)];
    assert_eq!(create(&h, rw, &mut t), CKR_ATTRIBUTE_VALUE_INVALID);
    // A defined class the token does not create stays an inconsistent template.
    let mut class = ulong(CKO_SECRET_KEY);
    let mut t = [attr(CKA_CLASS, &mut class)];
    assert_eq!(create(&h, rw, &mut t), CKR_TEMPLATE_INCONSISTENT);
}

#[test]
fn fixed_size_attributes_of_the_wrong_length_are_refused_before_reading() {
    let h = Harness::new();
    let f = h.raw.f;
    let rw = open(&h, CKF_RW_SESSION);
    let mut class = ulong(CKO_CERTIFICATE);
    let mut small = [1u8; 3];
    // A CK_BBOOL with length 0xFFFFFFFF on a 3-byte buffer.
    let mut t = [
        attr(CKA_CLASS, &mut class),
        CK_ATTRIBUTE {
            type_: CKA_TOKEN,
            pValue: small.as_mut_ptr().cast(),
            ulValueLen: 0xFFFF_FFFF,
        },
    ];
    assert_eq!(create(&h, rw, &mut t), CKR_ATTRIBUTE_VALUE_INVALID);
    // A CK_ULONG class with 3 bytes.
    let mut t = [attr(CKA_CLASS, &mut small)];
    assert_eq!(create(&h, rw, &mut t), CKR_ATTRIBUTE_VALUE_INVALID);
    // A CK_BBOOL of 2 bytes in a search template.
    let mut two = [1u8, 0];
    let mut t = [attr(CKA_PRIVATE, &mut two)];
    let s = open(&h, 0);
    assert_eq!(
        call!(f.C_FindObjectsInit, s, t.as_mut_ptr(), 1),
        CKR_ATTRIBUTE_VALUE_INVALID
    );
}

#[test]
fn refused_templates_are_not_read_further() {
    let h = Harness::new();
    let rw = open(&h, CKF_RW_SESSION);
    let ro = open(&h, 0);
    let mut small = [0u8; 3];
    // A class the token never creates: the label is never read.
    let mut class = ulong(CKO_PRIVATE_KEY);
    let mut t = [
        attr(CKA_CLASS, &mut class),
        oversized(CKA_LABEL, &mut small),
    ];
    assert_eq!(create(&h, rw, &mut t), CKR_TEMPLATE_INCONSISTENT);
    let mut class = ulong(0xDEAD_BEEF);
    let mut t = [
        oversized(CKA_VALUE, &mut small),
        attr(CKA_CLASS, &mut class),
    ];
    assert_eq!(create(&h, rw, &mut t), CKR_ATTRIBUTE_VALUE_INVALID);
    // A token object in a read-only session: the certificate value is never read.
    let mut class = ulong(CKO_CERTIFICATE);
    let mut cert_type = ulong(CKC_X_509);
    let mut t = [
        attr(CKA_CLASS, &mut class),
        attr(CKA_CERTIFICATE_TYPE, &mut cert_type),
        oversized(CKA_VALUE, &mut small),
    ];
    assert_eq!(create(&h, ro, &mut t), CKR_SESSION_READ_ONLY);
}

#[test]
fn session_object_templates_get_the_same_answer_in_read_only_sessions() {
    let h = Harness::new();
    let rw = open(&h, CKF_RW_SESSION);
    let ro = open(&h, 0);
    let mut class = ulong(CKO_CERTIFICATE);
    let mut cert_type = ulong(CKC_X_509);
    let mut value = *b"not a certificate";
    let mut no = [CK_FALSE];
    let mut yes = [CK_TRUE];
    for (token, want_ro) in [
        (&mut no[..], None),
        (&mut yes[..], Some(CKR_SESSION_READ_ONLY)),
    ] {
        let mut t = [
            attr(CKA_CLASS, &mut class),
            attr(CKA_CERTIFICATE_TYPE, &mut cert_type),
            attr(CKA_TOKEN, token),
            attr(CKA_VALUE, &mut value),
        ];
        let in_rw = create(&h, rw, &mut t);
        assert_ne!(in_rw, CKR_OK);
        let in_ro = create(&h, ro, &mut t);
        assert_eq!(
            in_ro,
            want_ro.unwrap_or(in_rw),
            "token object: {}",
            want_ro.is_some()
        );
    }
}

/// A caller may write into the `CK_INTERFACE` that `C_GetInterface` returns (PKCS#11 v3.0
/// §5.4.6; OpenSC's pkcs11-spy points it at its own function list): the write does not crash
/// (it did, SIGSEGV, while the structure was in read-only memory), and the next
/// `C_GetInterface` and `C_GetInterfaceList` give the module's own function lists again.
#[test]
fn returned_interfaces_are_writable_and_restored() {
    let h = Harness::new();
    let f3 = h.raw.f3;
    let v3 = f3 as *const CK_FUNCTION_LIST_3_0 as *mut std::os::raw::c_void;
    let v2 = h.raw.f as *const CK_FUNCTION_LIST as *mut std::os::raw::c_void;
    let mut iface: *mut CK_INTERFACE = null_mut();
    assert_eq!(
        call!(f3.C_GetInterface, null_mut(), null_mut(), &mut iface, 0),
        CKR_OK
    );
    // SAFETY: C_GetInterface returned a valid CK_INTERFACE.
    assert_eq!(unsafe { (*iface).pFunctionList }, v3);
    static FOREIGN: u8 = 0;
    // SAFETY: the module hands the structure to the caller, who may write into it.
    unsafe { (*iface).pFunctionList = &FOREIGN as *const u8 as *mut _ };
    let mut again: *mut CK_INTERFACE = null_mut();
    assert_eq!(
        call!(f3.C_GetInterface, null_mut(), null_mut(), &mut again, 0),
        CKR_OK
    );
    // SAFETY: as above.
    assert_eq!(unsafe { (*again).pFunctionList }, v3, "restored");
    let mut v32_ptr: *mut CK_INTERFACE = null_mut();
    let mut want = CK_VERSION { major: 3, minor: 2 };
    assert_eq!(
        call!(f3.C_GetInterface, null_mut(), &mut want, &mut v32_ptr, 0),
        CKR_OK
    );
    // SAFETY: as above.
    let v32 = unsafe { (*v32_ptr).pFunctionList };
    let mut list = [CK_INTERFACE {
        pInterfaceName: null_mut(),
        pFunctionList: null_mut(),
        flags: 0,
    }; 3];
    let mut n: CK_ULONG = 2;
    assert_eq!(
        call!(f3.C_GetInterfaceList, list.as_mut_ptr(), &mut n),
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(n, 3);
    assert_eq!(
        call!(f3.C_GetInterfaceList, list.as_mut_ptr(), &mut n),
        CKR_OK
    );
    assert_eq!(n, 3);
    assert_eq!(
        [
            list[0].pFunctionList,
            list[1].pFunctionList,
            list[2].pFunctionList
        ],
        [v32, v3, v2],
        "C_GetInterfaceList gives the module's lists"
    );
}

/// PKCS#11 v3.2 (§5.4.6): `C_GetInterface("PKCS 11", {3, 2})` gives a `CK_FUNCTION_LIST_3_2`
/// whose version is 3.2, whose 3.0 part is the module's own functions, and whose functions new
/// in 3.2 (key encapsulation, `C_VerifySignature*`, validation flags, async, authenticated
/// wrapping) are present and answer `CKR_FUNCTION_NOT_SUPPORTED`, not a NULL pointer. Without a
/// version the default stays 3.0; a version the module does not have (3.1, 4.0) is refused.
#[test]
fn interface_3_2_has_every_function() {
    let h = Harness::new();
    let f3 = h.raw.f3;
    let mut name = *b"PKCS 11\0";
    let mut want = CK_VERSION { major: 3, minor: 2 };
    let mut iface: *mut CK_INTERFACE = null_mut();
    assert_eq!(
        call!(
            f3.C_GetInterface,
            name.as_mut_ptr(),
            &mut want,
            &mut iface,
            0
        ),
        CKR_OK
    );
    // SAFETY: C_GetInterface returned a valid CK_INTERFACE whose list is a CK_FUNCTION_LIST_3_2
    // (version 3.2 asked for), a static of the loaded module.
    let f32 = unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_2) };
    assert_eq!((f32.version.major, f32.version.minor), (3, 2));
    assert_eq!(
        f32.C_Sign.map(|f| f as usize),
        f3.C_Sign.map(|f| f as usize)
    );
    assert_eq!(
        f32.C_SessionCancel.map(|f| f as usize),
        f3.C_SessionCancel.map(|f| f as usize)
    );
    let s = open(&h, 0);
    let nsup = CKR_FUNCTION_NOT_SUPPORTED;
    let mut ul: CK_ULONG = 0;
    let mut obj: CK_OBJECT_HANDLE = 0;
    let mut byte = [0u8; 4];
    assert_eq!(
        call!(
            f32.C_EncapsulateKey,
            s,
            null_mut(),
            0,
            null_mut(),
            0,
            null_mut(),
            &mut ul,
            &mut obj
        ),
        nsup
    );
    assert_eq!(
        call!(
            f32.C_DecapsulateKey,
            s,
            null_mut(),
            0,
            null_mut(),
            0,
            null_mut(),
            0,
            &mut obj
        ),
        nsup
    );
    assert_eq!(
        call!(
            f32.C_VerifySignatureInit,
            s,
            null_mut(),
            0,
            byte.as_mut_ptr(),
            4
        ),
        nsup
    );
    assert_eq!(call!(f32.C_VerifySignature, s, byte.as_mut_ptr(), 4), nsup);
    assert_eq!(
        call!(f32.C_VerifySignatureUpdate, s, byte.as_mut_ptr(), 4),
        nsup
    );
    assert_eq!(call!(f32.C_VerifySignatureFinal, s), nsup);
    let mut flags: CK_FLAGS = 0;
    assert_eq!(
        call!(f32.C_GetSessionValidationFlags, s, 0, &mut flags),
        nsup
    );
    assert_eq!(call!(f32.C_AsyncComplete, s, null_mut(), null_mut()), nsup);
    assert_eq!(call!(f32.C_AsyncGetID, s, null_mut(), &mut ul), nsup);
    assert_eq!(
        call!(f32.C_AsyncJoin, s, null_mut(), 0, byte.as_mut_ptr(), 4),
        nsup
    );
    assert_eq!(
        call!(
            f32.C_WrapKeyAuthenticated,
            s,
            null_mut(),
            0,
            0,
            null_mut(),
            0,
            null_mut(),
            &mut ul
        ),
        nsup
    );
    assert_eq!(
        call!(
            f32.C_UnwrapKeyAuthenticated,
            s,
            null_mut(),
            0,
            null_mut(),
            0,
            null_mut(),
            0,
            null_mut(),
            0,
            &mut obj
        ),
        nsup
    );
    let mut default: *mut CK_INTERFACE = null_mut();
    assert_eq!(
        call!(f3.C_GetInterface, null_mut(), null_mut(), &mut default, 0),
        CKR_OK
    );
    // SAFETY: as above; the default interface's list starts with a CK_VERSION.
    let v = unsafe { *((*default).pFunctionList as *const CK_VERSION) };
    assert_eq!(
        (v.major, v.minor),
        (3, 0),
        "the default interface stays 3.0"
    );
    for (major, minor) in [(3, 1), (4, 0)] {
        let mut v = CK_VERSION { major, minor };
        assert_eq!(
            call!(f3.C_GetInterface, null_mut(), &mut v, &mut default, 0),
            CKR_ARGUMENTS_BAD,
            "version {major}.{minor}"
        );
    }
}
