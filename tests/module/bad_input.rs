//! Bad input at the C API (issue #6, part 1): NULL pointers, zero and huge lengths, invalid
//! slot, session and object handles, calls before `C_Initialize` and after `C_Finalize`, wrong
//! mechanism parameters, templates with unknown or duplicated attributes, and writes in
//! read-only sessions — each answered with its PKCS#11 return value, never a crash.
//!
//! The cases are tables run through the raw function list; a run collects every mismatch and
//! reports them together. A last test reads `module/src/ffi/*.rs` and checks that every exported
//! entry point runs its body inside `guard()` (which catches panics) or is a
//! `not_supported!` stub.

use tsb_pkcs11_test_support as common;

use std::os::raw::c_void;
use std::ptr::null_mut;

use common::{pss_params, raw_sign, Harness, Raw};
use cryptoki_sys::*;
use openssl::pkey::{PKey, Public};

/// Calls a function of a PKCS#11 function list.
///
/// SAFETY (every use): a case passes pointers that are NULL or valid for the lengths it
/// gives; where a length is larger than the buffer, the case checks that the module refuses
/// (or ignores) it before reading, which the module's pointer checks guarantee.
macro_rules! call {
    ($f:expr, $($arg:expr),* $(,)?) => {
        // SAFETY: see the macro's documentation.
        unsafe { ($f.expect("function in the list"))($($arg),*) }
    };
}

/// What a case expects.
enum Want {
    Rv(CK_RV),
    /// The spec leaves a choice (or the module's choice is one of these).
    AnyOf(&'static [CK_RV]),
}

struct Case<'a> {
    name: &'static str,
    want: Want,
    run: Box<dyn Fn() -> CK_RV + 'a>,
}

fn case<'a>(name: &'static str, want: CK_RV, run: impl Fn() -> CK_RV + 'a) -> Case<'a> {
    Case {
        name,
        want: Want::Rv(want),
        run: Box::new(run),
    }
}

fn case_any<'a>(
    name: &'static str,
    want: &'static [CK_RV],
    run: impl Fn() -> CK_RV + 'a,
) -> Case<'a> {
    Case {
        name,
        want: Want::AnyOf(want),
        run: Box::new(run),
    }
}

/// Runs every case; `after` runs after each one (to end operations a case left active).
/// Panics with the list of all mismatches.
fn run_table(table: &str, cases: Vec<Case<'_>>, after: impl Fn()) {
    let mut failures = Vec::new();
    let n = cases.len();
    for c in cases {
        let rv = (c.run)();
        let ok = match c.want {
            Want::Rv(w) => rv == w,
            Want::AnyOf(ws) => ws.contains(&rv),
        };
        if !ok {
            let want = match c.want {
                Want::Rv(w) => format!("{w:#x}"),
                Want::AnyOf(ws) => format!("{ws:#x?}"),
            };
            failures.push(format!("{}: got {rv:#x}, want {want}", c.name));
        }
        after();
    }
    eprintln!("{table}: {n} cases, {} mismatches", failures.len());
    assert!(failures.is_empty(), "{table}:\n  {}", failures.join("\n  "));
}

fn mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

fn mech_with(m: CK_MECHANISM_TYPE, params: &mut [u8]) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: params.as_mut_ptr().cast(),
        ulParameterLen: params.len() as CK_ULONG,
    }
}

fn attr(t: CK_ATTRIBUTE_TYPE, v: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: if v.is_empty() {
            null_mut()
        } else {
            v.as_mut_ptr().cast()
        },
        ulValueLen: v.len() as CK_ULONG,
    }
}

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn open(f: &CK_FUNCTION_LIST, flags: CK_FLAGS) -> CK_SESSION_HANDLE {
    let mut s = 0;
    assert_eq!(
        call!(f.C_OpenSession, 0, flags, null_mut(), None, &mut s),
        CKR_OK
    );
    s
}

/// One object by class and label, through the raw list.
fn find_one(
    f: &CK_FUNCTION_LIST,
    s: CK_SESSION_HANDLE,
    class: CK_OBJECT_CLASS,
    label: &str,
) -> CK_OBJECT_HANDLE {
    let mut c = ulong(class);
    let mut l = label.as_bytes().to_vec();
    let mut t = [attr(CKA_CLASS, &mut c), attr(CKA_LABEL, &mut l)];
    let mut found = [0; 2];
    let mut n = 0;
    assert_eq!(call!(f.C_FindObjectsInit, s, t.as_mut_ptr(), 2), CKR_OK);
    assert_eq!(
        call!(f.C_FindObjects, s, found.as_mut_ptr(), 2, &mut n),
        CKR_OK
    );
    assert_eq!(call!(f.C_FindObjectsFinal, s), CKR_OK);
    assert_eq!(n, 1, "{label}");
    found[0]
}

/// Every function that needs an initialised module, called with well-formed arguments.
fn needs_initialisation<'a>(raw: &'a Raw, s: CK_SESSION_HANDLE) -> Vec<Case<'a>> {
    let (f, f3) = (raw.f, raw.f3);
    let nope = CKR_CRYPTOKI_NOT_INITIALIZED;
    vec![
        case("C_Finalize", nope, move || call!(f.C_Finalize, null_mut())),
        case("C_GetInfo", nope, move || {
            let mut i = CK_INFO::default();
            call!(f.C_GetInfo, &mut i)
        }),
        case("C_GetSlotList", nope, move || {
            let mut n = 0;
            call!(f.C_GetSlotList, CK_TRUE, null_mut(), &mut n)
        }),
        case("C_GetSlotInfo", nope, move || {
            let mut i = CK_SLOT_INFO::default();
            call!(f.C_GetSlotInfo, 0, &mut i)
        }),
        case("C_GetTokenInfo", nope, move || {
            let mut i = CK_TOKEN_INFO::default();
            call!(f.C_GetTokenInfo, 0, &mut i)
        }),
        case("C_GetMechanismList", nope, move || {
            let mut n = 0;
            call!(f.C_GetMechanismList, 0, null_mut(), &mut n)
        }),
        case("C_GetMechanismInfo", nope, move || {
            let mut i = CK_MECHANISM_INFO::default();
            call!(f.C_GetMechanismInfo, 0, CKM_ECDSA, &mut i)
        }),
        case("C_OpenSession", nope, move || {
            let mut h = 0;
            call!(
                f.C_OpenSession,
                0,
                CKF_SERIAL_SESSION,
                null_mut(),
                None,
                &mut h
            )
        }),
        case("C_CloseSession", nope, move || call!(f.C_CloseSession, s)),
        case("C_CloseAllSessions", nope, move || {
            call!(f.C_CloseAllSessions, 0)
        }),
        case("C_GetSessionInfo", nope, move || {
            let mut i = CK_SESSION_INFO::default();
            call!(f.C_GetSessionInfo, s, &mut i)
        }),
        case("C_SessionCancel", nope, move || {
            call!(f3.C_SessionCancel, s, CKF_SIGN)
        }),
        case("C_Login", nope, move || {
            let mut pin = *b"1234";
            call!(f.C_Login, s, CKU_USER, pin.as_mut_ptr(), 4)
        }),
        case("C_Logout", nope, move || call!(f.C_Logout, s)),
        case("C_CreateObject", nope, move || {
            let mut c = ulong(CKO_CERTIFICATE);
            let mut t = [attr(CKA_CLASS, &mut c)];
            let mut h = 0;
            call!(f.C_CreateObject, s, t.as_mut_ptr(), 1, &mut h)
        }),
        case("C_DestroyObject", nope, move || {
            call!(f.C_DestroyObject, s, 5)
        }),
        case("C_GetAttributeValue", nope, move || {
            let mut t = [attr(CKA_LABEL, &mut [])];
            call!(f.C_GetAttributeValue, s, 5, t.as_mut_ptr(), 1)
        }),
        case("C_FindObjectsInit", nope, move || {
            call!(f.C_FindObjectsInit, s, null_mut(), 0)
        }),
        case("C_FindObjects", nope, move || {
            let (mut o, mut n) = ([0; 4], 0);
            call!(f.C_FindObjects, s, o.as_mut_ptr(), 4, &mut n)
        }),
        case("C_FindObjectsFinal", nope, move || {
            call!(f.C_FindObjectsFinal, s)
        }),
        case("C_SignInit", nope, move || {
            let mut m = mech(CKM_ECDSA_SHA256);
            call!(f.C_SignInit, s, &mut m, 5)
        }),
        case("C_Sign", nope, move || {
            let (mut d, mut n) = (*b"data", 0);
            call!(f.C_Sign, s, d.as_mut_ptr(), 4, null_mut(), &mut n)
        }),
        case("C_SignUpdate", nope, move || {
            let mut d = *b"data";
            call!(f.C_SignUpdate, s, d.as_mut_ptr(), 4)
        }),
        case("C_SignFinal", nope, move || {
            let mut n = 0;
            call!(f.C_SignFinal, s, null_mut(), &mut n)
        }),
        case("C_VerifyInit", nope, move || {
            let mut m = mech(CKM_ECDSA_SHA256);
            call!(f.C_VerifyInit, s, &mut m, 6)
        }),
        case("C_Verify", nope, move || {
            let (mut d, mut sig) = (*b"data", [0u8; 64]);
            call!(f.C_Verify, s, d.as_mut_ptr(), 4, sig.as_mut_ptr(), 64)
        }),
        case("C_VerifyUpdate", nope, move || {
            let mut d = *b"data";
            call!(f.C_VerifyUpdate, s, d.as_mut_ptr(), 4)
        }),
        case("C_VerifyFinal", nope, move || {
            let mut sig = [0u8; 64];
            call!(f.C_VerifyFinal, s, sig.as_mut_ptr(), 64)
        }),
        case("C_DigestInit", nope, move || {
            let mut m = mech(CKM_SHA256);
            call!(f.C_DigestInit, s, &mut m)
        }),
        case("C_GenerateRandom", nope, move || {
            let mut b = [0u8; 4];
            call!(f.C_GenerateRandom, s, b.as_mut_ptr(), 4)
        }),
        case("C_GetFunctionStatus", nope, move || {
            call!(f.C_GetFunctionStatus, s)
        }),
    ]
}

/// Functions that work without initialisation.
fn no_initialisation_needed(raw: &Raw) -> Vec<Case<'_>> {
    let f = raw.f;
    vec![
        case("C_GetFunctionList", CKR_OK, move || {
            let mut l = null_mut();
            call!(f.C_GetFunctionList, &mut l)
        }),
        case("C_GetInterfaceList (count)", CKR_OK, move || {
            let mut n = 0;
            call!(raw.f3.C_GetInterfaceList, null_mut(), &mut n)
        }),
        case("C_GetInterface", CKR_OK, move || {
            let mut i = null_mut();
            call!(raw.f3.C_GetInterface, null_mut(), null_mut(), &mut i, 0)
        }),
    ]
}

/// A zero argument of any type a PKCS#11 function takes (NULL, 0, no callback).
trait Zero {
    fn zero() -> Self;
}
impl Zero for CK_ULONG {
    fn zero() -> Self {
        0
    }
}
impl Zero for CK_BBOOL {
    fn zero() -> Self {
        0
    }
}
impl<T> Zero for *mut T {
    fn zero() -> Self {
        null_mut()
    }
}
impl<T> Zero for Option<T> {
    fn zero() -> Self {
        None
    }
}

/// Calls each named function of the 3.0 list with NULL / zero arguments (one `_` each):
/// `(name, rv)` pairs.
macro_rules! zero_calls {
    ($f3:expr; $($name:ident($($a:tt),*)),* $(,)?) => {
        vec![$((
            stringify!($name),
            // SAFETY: NULL and zero arguments; each function must answer before using them.
            unsafe { ($f3.$name.expect("function in the list"))($({ let _ = stringify!($a); Zero::zero() }),*) },
        )),*]
    };
}

/// Every function of the PKCS#11 3.2 list but `C_Initialize`, `C_GetFunctionList`,
/// `C_GetInterfaceList` and `C_GetInterface`, called with NULL / zero arguments: all answer
/// `CKR_CRYPTOKI_NOT_INITIALIZED` (PKCS#11 v3.0 §5.1.1), the unsupported ones included.
fn all_functions_uninitialised(raw: &Raw) -> Vec<(&'static str, CK_RV)> {
    let f3 = raw.f3;
    let mut v32 = CK_VERSION { major: 3, minor: 2 };
    let mut iface: *mut CK_INTERFACE = null_mut();
    // SAFETY: C_GetInterface with a valid version and out pointer.
    let rv = unsafe { (f3.C_GetInterface.unwrap())(null_mut(), &mut v32, &mut iface, 0) };
    assert_eq!(rv, CKR_OK, "the 3.2 interface");
    // SAFETY: the interface asked for is 3.2: its list is a CK_FUNCTION_LIST_3_2, a static of
    // the module, which `raw` keeps loaded.
    let f32 = unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_2) };
    let mut answers = zero_calls!(f32;
        C_EncapsulateKey(_, _, _, _, _, _, _, _), C_DecapsulateKey(_, _, _, _, _, _, _, _),
        C_VerifySignatureInit(_, _, _, _, _), C_VerifySignature(_, _, _),
        C_VerifySignatureUpdate(_, _, _), C_VerifySignatureFinal(_),
        C_GetSessionValidationFlags(_, _, _), C_AsyncComplete(_, _, _), C_AsyncGetID(_, _, _),
        C_AsyncJoin(_, _, _, _, _), C_WrapKeyAuthenticated(_, _, _, _, _, _, _, _),
        C_UnwrapKeyAuthenticated(_, _, _, _, _, _, _, _, _, _),
    );
    answers.extend(zero_calls!(f3;
        C_Finalize(_), C_GetInfo(_), C_GetSlotList(_, _, _), C_GetSlotInfo(_, _),
        C_GetTokenInfo(_, _), C_GetMechanismList(_, _, _), C_GetMechanismInfo(_, _, _),
        C_InitToken(_, _, _, _), C_InitPIN(_, _, _), C_SetPIN(_, _, _, _, _),
        C_OpenSession(_, _, _, _, _), C_CloseSession(_), C_CloseAllSessions(_),
        C_GetSessionInfo(_, _), C_GetOperationState(_, _, _),
        C_SetOperationState(_, _, _, _, _), C_Login(_, _, _, _), C_Logout(_),
        C_CreateObject(_, _, _, _), C_CopyObject(_, _, _, _, _), C_DestroyObject(_, _),
        C_GetObjectSize(_, _, _), C_GetAttributeValue(_, _, _, _),
        C_SetAttributeValue(_, _, _, _), C_FindObjectsInit(_, _, _), C_FindObjects(_, _, _, _),
        C_FindObjectsFinal(_), C_EncryptInit(_, _, _), C_Encrypt(_, _, _, _, _),
        C_EncryptUpdate(_, _, _, _, _), C_EncryptFinal(_, _, _), C_DecryptInit(_, _, _),
        C_Decrypt(_, _, _, _, _), C_DecryptUpdate(_, _, _, _, _), C_DecryptFinal(_, _, _),
        C_DigestInit(_, _), C_Digest(_, _, _, _, _), C_DigestUpdate(_, _, _), C_DigestKey(_, _),
        C_DigestFinal(_, _, _), C_SignInit(_, _, _), C_Sign(_, _, _, _, _),
        C_SignUpdate(_, _, _), C_SignFinal(_, _, _), C_SignRecoverInit(_, _, _),
        C_SignRecover(_, _, _, _, _), C_VerifyInit(_, _, _), C_Verify(_, _, _, _, _),
        C_VerifyUpdate(_, _, _), C_VerifyFinal(_, _, _), C_VerifyRecoverInit(_, _, _),
        C_VerifyRecover(_, _, _, _, _), C_DigestEncryptUpdate(_, _, _, _, _),
        C_DecryptDigestUpdate(_, _, _, _, _), C_SignEncryptUpdate(_, _, _, _, _),
        C_DecryptVerifyUpdate(_, _, _, _, _), C_GenerateKey(_, _, _, _, _),
        C_GenerateKeyPair(_, _, _, _, _, _, _, _), C_WrapKey(_, _, _, _, _, _),
        C_UnwrapKey(_, _, _, _, _, _, _, _), C_DeriveKey(_, _, _, _, _, _),
        C_SeedRandom(_, _, _), C_GenerateRandom(_, _, _), C_GetFunctionStatus(_),
        C_CancelFunction(_), C_WaitForSlotEvent(_, _, _),
        C_LoginUser(_, _, _, _, _, _), C_SessionCancel(_, _),
        C_MessageEncryptInit(_, _, _), C_EncryptMessage(_, _, _, _, _, _, _, _, _),
        C_EncryptMessageBegin(_, _, _, _, _), C_EncryptMessageNext(_, _, _, _, _, _, _, _),
        C_MessageEncryptFinal(_), C_MessageDecryptInit(_, _, _),
        C_DecryptMessage(_, _, _, _, _, _, _, _, _), C_DecryptMessageBegin(_, _, _, _, _),
        C_DecryptMessageNext(_, _, _, _, _, _, _, _), C_MessageDecryptFinal(_),
        C_MessageSignInit(_, _, _), C_SignMessage(_, _, _, _, _, _, _),
        C_SignMessageBegin(_, _, _), C_SignMessageNext(_, _, _, _, _, _, _),
        C_MessageSignFinal(_), C_MessageVerifyInit(_, _, _),
        C_VerifyMessage(_, _, _, _, _, _, _), C_VerifyMessageBegin(_, _, _),
        C_VerifyMessageNext(_, _, _, _, _, _, _), C_MessageVerifyFinal(_),
    ));
    answers
}

/// Checks [`all_functions_uninitialised`] on `raw`: every answer, and that the table names
/// every function of the lists in `module/src/ffi/mod.rs` but the four that need no initialisation.
fn check_all_uninitialised(raw: &Raw, when: &str) {
    let answers = all_functions_uninitialised(raw);
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(_, rv)| *rv != CKR_CRYPTOKI_NOT_INITIALIZED)
        .map(|(n, rv)| format!("{n}: {rv:#x}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{when}, not CKR_CRYPTOKI_NOT_INITIALIZED:\n  {}",
        wrong.join("\n  ")
    );
    let list = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("module/src/ffi/mod.rs"),
    )
    .unwrap();
    let start = list
        .find("macro_rules! function_list")
        .expect("the function lists");
    let mut listed: Vec<&str> = list[start..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("C_"))
        .collect();
    for (name, _) in &answers {
        listed.retain(|l| l != name);
    }
    listed.sort();
    listed.dedup();
    let free = [
        "C_GetFunctionList",
        "C_GetInterface",
        "C_GetInterfaceList",
        "C_Initialize",
    ];
    assert_eq!(listed, free, "functions of the list the table misses");
    eprintln!(
        "{when}: {} functions answer CKR_CRYPTOKI_NOT_INITIALIZED",
        answers.len()
    );
}

/// Loads a private copy of the module (its own state) without initialising it.
fn fresh_copy(h: &Harness, name: &str) -> Raw {
    let path = h.dir.path().join(format!("libtsb_pkcs11-{name}.so"));
    std::fs::copy(common::built_module(), &path).unwrap();
    Raw::load(&path)
}

#[test]
fn calls_before_initialize_and_after_finalize() {
    let h = Harness::new();
    // Never initialised.
    let raw = fresh_copy(&h, "uninitialised");
    run_table("before C_Initialize", needs_initialisation(&raw, 1), || {});
    run_table(
        "without C_Initialize",
        no_initialisation_needed(&raw),
        || {},
    );
    check_all_uninitialised(&raw, "before C_Initialize");

    // Initialised, a session opened, then finalised: the stale handle and everything else
    // answer CKR_CRYPTOKI_NOT_INITIALIZED.
    let raw = fresh_copy(&h, "finalised");
    let _env = common::ConfigInUse::new(&h.config_path, &h.dir.path().join("finalised.log"));
    assert_eq!(call!(raw.f.C_Initialize, null_mut()), CKR_OK);
    let s = open(raw.f, CKF_SERIAL_SESSION);
    assert_eq!(call!(raw.f.C_Finalize, null_mut()), CKR_OK);
    run_table("after C_Finalize", needs_initialisation(&raw, s), || {});
    run_table("after C_Finalize", no_initialisation_needed(&raw), || {});
    check_all_uninitialised(&raw, "after C_Finalize");
    // And it initialises again.
    assert_eq!(call!(raw.f.C_Initialize, null_mut()), CKR_OK);
    assert_eq!(call!(raw.f.C_Finalize, null_mut()), CKR_OK);
}

/// `C_Initialize` arguments, on a copy of its own (a refused call leaves it uninitialised).
#[test]
fn initialize_arguments() {
    let h = Harness::new();
    let raw = fresh_copy(&h, "init-args");
    let _env = common::ConfigInUse::new(&h.config_path, &h.dir.path().join("init-args.log"));
    let f = raw.f;
    unsafe extern "C" fn create(_: *mut *mut c_void) -> CK_RV {
        CKR_OK
    }
    unsafe extern "C" fn other(_: *mut c_void) -> CK_RV {
        CKR_OK
    }
    let args =
        |flags, with_mutexes: bool, partial: bool, reserved: *mut c_void| CK_C_INITIALIZE_ARGS {
            CreateMutex: with_mutexes.then_some(create as _),
            DestroyMutex: (with_mutexes && !partial).then_some(other as _),
            LockMutex: with_mutexes.then_some(other as _),
            UnlockMutex: with_mutexes.then_some(other as _),
            flags,
            pReserved: reserved,
        };
    let mut dummy = 0u8;
    let reserved: *mut c_void = (&mut dummy as *mut u8).cast();
    let cases = vec![
        case("pReserved not NULL", CKR_ARGUMENTS_BAD, || {
            let mut a = args(0, false, false, reserved);
            call!(f.C_Initialize, (&mut a as *mut CK_C_INITIALIZE_ARGS).cast())
        }),
        case("some mutex functions only", CKR_ARGUMENTS_BAD, || {
            let mut a = args(CKF_OS_LOCKING_OK, true, true, null_mut());
            call!(f.C_Initialize, (&mut a as *mut CK_C_INITIALIZE_ARGS).cast())
        }),
        case(
            "application mutexes without CKF_OS_LOCKING_OK",
            CKR_CANT_LOCK,
            || {
                let mut a = args(0, true, false, null_mut());
                call!(f.C_Initialize, (&mut a as *mut CK_C_INITIALIZE_ARGS).cast())
            },
        ),
        case("C_Finalize(pReserved not NULL)", CKR_ARGUMENTS_BAD, || {
            call!(f.C_Finalize, reserved)
        }),
        case("mutexes with CKF_OS_LOCKING_OK", CKR_OK, || {
            let mut a = args(CKF_OS_LOCKING_OK, true, false, null_mut());
            call!(f.C_Initialize, (&mut a as *mut CK_C_INITIALIZE_ARGS).cast())
        }),
        case("again", CKR_CRYPTOKI_ALREADY_INITIALIZED, || {
            call!(f.C_Initialize, null_mut())
        }),
        case(
            "again with bad arguments (arguments are checked first)",
            CKR_ARGUMENTS_BAD,
            || {
                let mut a = args(0, false, false, reserved);
                call!(f.C_Initialize, (&mut a as *mut CK_C_INITIALIZE_ARGS).cast())
            },
        ),
        case("CKF_LIBRARY_CANT_CREATE_OS_THREADS", CKR_OK, || {
            assert_eq!(call!(f.C_Finalize, null_mut()), CKR_OK);
            let mut a = args(CKF_LIBRARY_CANT_CREATE_OS_THREADS, false, false, null_mut());
            call!(f.C_Initialize, (&mut a as *mut CK_C_INITIALIZE_ARGS).cast())
        }),
        case("C_Finalize(NULL)", CKR_OK, || {
            call!(f.C_Finalize, null_mut())
        }),
    ];
    run_table("C_Initialize arguments", cases, || {});
}

/// The initialised module's handles for the tables.
struct Ctx<'a> {
    f: &'a CK_FUNCTION_LIST,
    s: CK_SESSION_HANDLE,
    ec: CK_OBJECT_HANDLE,
    ec_pub: CK_OBJECT_HANDLE,
    rsa: CK_OBJECT_HANDLE,
    ed: CK_OBJECT_HANDLE,
}

impl Ctx<'_> {
    /// `C_SignInit` with mechanism `m` (no parameters) on `key`.
    fn after_sign_init(&self, m: CK_MECHANISM_TYPE, key: CK_OBJECT_HANDLE) -> CK_RV {
        let mut m = mech(m);
        call!(self.f.C_SignInit, self.s, &mut m, key)
    }
}

fn ctx<'a>(h: &'a Harness) -> Ctx<'a> {
    let f = h.raw.f;
    let s = open(f, CKF_SERIAL_SESSION);
    Ctx {
        f,
        s,
        ec: find_one(f, s, CKO_PRIVATE_KEY, "ec-p256"),
        ec_pub: find_one(f, s, CKO_PUBLIC_KEY, "ec-p256"),
        rsa: find_one(f, s, CKO_PRIVATE_KEY, "rsa-2048"),
        ed: find_one(f, s, CKO_PRIVATE_KEY, "ed25519"),
    }
}

/// Ends whatever a case left active in the session.
fn end_operations(h: &Harness, s: CK_SESSION_HANDLE) -> impl Fn() + '_ {
    move || {
        call!(
            h.raw.f3.C_SessionCancel,
            s,
            CKF_SIGN | CKF_VERIFY | CKF_FIND_OBJECTS
        );
    }
}

#[test]
fn null_pointers() {
    let h = Harness::new();
    let c = ctx(&h);
    let (f, s) = (c.f, c.s);
    let bad = CKR_ARGUMENTS_BAD;
    let cases = vec![
        case("C_GetInfo(NULL)", bad, || call!(f.C_GetInfo, null_mut())),
        case("C_GetFunctionList(NULL)", bad, || {
            call!(f.C_GetFunctionList, null_mut())
        }),
        case("C_GetInterfaceList(NULL, NULL)", bad, || {
            call!(h.raw.f3.C_GetInterfaceList, null_mut(), null_mut())
        }),
        case("C_GetInterface(out NULL)", bad, || {
            call!(
                h.raw.f3.C_GetInterface,
                null_mut(),
                null_mut(),
                null_mut(),
                0
            )
        }),
        case("C_GetSlotList(count NULL)", bad, || {
            call!(f.C_GetSlotList, CK_TRUE, null_mut(), null_mut())
        }),
        case("C_GetSlotInfo(NULL)", bad, || {
            call!(f.C_GetSlotInfo, 0, null_mut())
        }),
        case("C_GetTokenInfo(NULL)", bad, || {
            call!(f.C_GetTokenInfo, 0, null_mut())
        }),
        case("C_GetMechanismList(count NULL)", bad, || {
            call!(f.C_GetMechanismList, 0, null_mut(), null_mut())
        }),
        case("C_GetMechanismInfo(NULL)", bad, || {
            call!(f.C_GetMechanismInfo, 0, CKM_ECDSA, null_mut())
        }),
        case("C_OpenSession(handle NULL)", bad, || {
            call!(
                f.C_OpenSession,
                0,
                CKF_SERIAL_SESSION,
                null_mut(),
                None,
                null_mut()
            )
        }),
        case("C_GetSessionInfo(NULL)", bad, || {
            call!(f.C_GetSessionInfo, s, null_mut())
        }),
        case("C_Login(PIN NULL, length 4)", bad, || {
            call!(f.C_Login, s, CKU_USER, null_mut(), 4)
        }),
        case("C_FindObjectsInit(NULL, 2)", bad, || {
            call!(f.C_FindObjectsInit, s, null_mut(), 2)
        }),
        case("C_FindObjects(array NULL, max 4)", bad, || {
            assert_eq!(call!(f.C_FindObjectsInit, s, null_mut(), 0), CKR_OK);
            let mut n = 0;
            call!(f.C_FindObjects, s, null_mut(), 4, &mut n)
        }),
        case("C_FindObjects(count NULL)", bad, || {
            assert_eq!(call!(f.C_FindObjectsInit, s, null_mut(), 0), CKR_OK);
            let mut o = [0; 4];
            call!(f.C_FindObjects, s, o.as_mut_ptr(), 4, null_mut())
        }),
        case("C_GetAttributeValue(NULL, 1)", bad, || {
            call!(f.C_GetAttributeValue, s, c.ec, null_mut(), 1)
        }),
        case(
            "C_GetAttributeValue(value NULL, length 8): length only",
            CKR_OK,
            || {
                let mut a = [CK_ATTRIBUTE {
                    type_: CKA_LABEL,
                    pValue: null_mut(),
                    ulValueLen: 8,
                }];
                let rv = call!(f.C_GetAttributeValue, s, c.ec, a.as_mut_ptr(), 1);
                assert_eq!(a[0].ulValueLen, 7, "length of 'ec-p256'");
                rv
            },
        ),
        case("C_CreateObject(template NULL, 2)", bad, || {
            let mut o = 0;
            call!(f.C_CreateObject, s, null_mut(), 2, &mut o)
        }),
        case_any(
            "C_CreateObject(handle out NULL)",
            // A read-only session may be refused before the arguments are looked at.
            &[CKR_ARGUMENTS_BAD, CKR_SESSION_READ_ONLY],
            || {
                let mut cl = ulong(CKO_CERTIFICATE);
                let mut t = [attr(CKA_CLASS, &mut cl)];
                call!(f.C_CreateObject, s, t.as_mut_ptr(), 1, null_mut())
            },
        ),
        case("C_SignInit(mechanism NULL)", bad, || {
            call!(f.C_SignInit, s, null_mut(), c.ec)
        }),
        case("C_SignInit(parameter NULL, length 24)", bad, || {
            let mut m = CK_MECHANISM {
                mechanism: CKM_SHA256_RSA_PKCS_PSS,
                pParameter: null_mut(),
                ulParameterLen: 24,
            };
            call!(f.C_SignInit, s, &mut m, c.rsa)
        }),
        case("C_Sign(data NULL, length 10)", bad, || {
            assert_eq!(c.after_sign_init(CKM_ECDSA_SHA256, c.ec), CKR_OK);
            let (mut sig, mut n) = ([0u8; 64], 64);
            call!(f.C_Sign, s, null_mut(), 10, sig.as_mut_ptr(), &mut n)
        }),
        case(
            "... and that ended the operation",
            CKR_OPERATION_NOT_INITIALIZED,
            || {
                assert_eq!(c.after_sign_init(CKM_ECDSA_SHA256, c.ec), CKR_OK);
                let (mut sig, mut n) = ([0u8; 64], 64);
                call!(f.C_Sign, s, null_mut(), 10, sig.as_mut_ptr(), &mut n);
                let mut d = *b"data";
                call!(f.C_Sign, s, d.as_mut_ptr(), 4, null_mut(), &mut n)
            },
        ),
        case("C_Sign(length pointer NULL)", bad, || {
            assert_eq!(c.after_sign_init(CKM_ECDSA_SHA256, c.ec), CKR_OK);
            let (mut d, mut sig) = (*b"data", [0u8; 64]);
            call!(f.C_Sign, s, d.as_mut_ptr(), 4, sig.as_mut_ptr(), null_mut())
        }),
        case("C_SignUpdate(NULL, 4)", bad, || {
            assert_eq!(c.after_sign_init(CKM_ECDSA_SHA256, c.ec), CKR_OK);
            call!(f.C_SignUpdate, s, null_mut(), 4)
        }),
        case("C_SignFinal(length pointer NULL)", bad, || {
            assert_eq!(c.after_sign_init(CKM_ECDSA_SHA256, c.ec), CKR_OK);
            let mut sig = [0u8; 64];
            call!(f.C_SignFinal, s, sig.as_mut_ptr(), null_mut())
        }),
        case("C_VerifyInit(mechanism NULL)", bad, || {
            call!(f.C_VerifyInit, s, null_mut(), c.ec_pub)
        }),
        case("C_Verify(data NULL, length 4)", bad, || {
            let mut m = mech(CKM_ECDSA_SHA256);
            assert_eq!(call!(f.C_VerifyInit, s, &mut m, c.ec_pub), CKR_OK);
            let mut sig = [0u8; 64];
            call!(f.C_Verify, s, null_mut(), 4, sig.as_mut_ptr(), 64)
        }),
        case("C_Verify(signature NULL, length 64)", bad, || {
            let mut m = mech(CKM_ECDSA_SHA256);
            assert_eq!(call!(f.C_VerifyInit, s, &mut m, c.ec_pub), CKR_OK);
            let mut d = *b"data";
            call!(f.C_Verify, s, d.as_mut_ptr(), 4, null_mut(), 64)
        }),
        case("C_VerifyFinal(NULL, 64)", bad, || {
            let mut m = mech(CKM_ECDSA_SHA256);
            assert_eq!(call!(f.C_VerifyInit, s, &mut m, c.ec_pub), CKR_OK);
            call!(f.C_VerifyFinal, s, null_mut(), 64)
        }),
    ];
    run_table("NULL pointers", cases, end_operations(&h, s));
}

#[test]
fn zero_and_huge_lengths() {
    let h = Harness::new();
    let c = ctx(&h);
    let (f, s) = (c.f, c.s);
    let huge: CK_ULONG = CK_ULONG::MAX;
    let cases = vec![
        // Zero lengths.
        case("C_Sign(hash mechanism, empty data)", CKR_OK, || {
            raw_sign(&h.raw, s, CKM_ECDSA_SHA256, &mut [], c.ec, b"")
                .map_or_else(|rv| rv, |_| CKR_OK)
        }),
        case(
            "C_Sign(CKM_ECDSA, empty digest)",
            CKR_DATA_LEN_RANGE,
            || raw_sign(&h.raw, s, CKM_ECDSA, &mut [], c.ec, b"").map_or_else(|rv| rv, |_| CKR_OK),
        ),
        case(
            "C_Sign(CKM_RSA_PKCS, empty input)",
            CKR_DATA_LEN_RANGE,
            || {
                raw_sign(&h.raw, s, CKM_RSA_PKCS, &mut [], c.rsa, b"")
                    .map_or_else(|rv| rv, |_| CKR_OK)
            },
        ),
        case(
            "C_Sign(output buffer of length 0)",
            CKR_BUFFER_TOO_SMALL,
            || {
                assert_eq!(c.after_sign_init(CKM_ECDSA_SHA256, c.ec), CKR_OK);
                let (mut d, mut sig, mut n) = (*b"data", [0u8; 1], 0);
                let rv = call!(f.C_Sign, s, d.as_mut_ptr(), 4, sig.as_mut_ptr(), &mut n);
                assert_eq!(n, 64, "needed length");
                rv
            },
        ),
        case("C_SignUpdate(NULL, 0) then C_SignFinal", CKR_OK, || {
            assert_eq!(c.after_sign_init(CKM_ECDSA_SHA256, c.ec), CKR_OK);
            assert_eq!(call!(f.C_SignUpdate, s, null_mut(), 0), CKR_OK);
            let (mut sig, mut n) = ([0u8; 64], 64);
            call!(f.C_SignFinal, s, sig.as_mut_ptr(), &mut n)
        }),
        case("C_FindObjects(max 0)", CKR_OK, || {
            assert_eq!(call!(f.C_FindObjectsInit, s, null_mut(), 0), CKR_OK);
            let mut n = 99;
            let rv = call!(f.C_FindObjects, s, null_mut(), 0, &mut n);
            assert_eq!(n, 0);
            rv
        }),
        case("C_GetSlotList(buffer of 0)", CKR_BUFFER_TOO_SMALL, || {
            let (mut l, mut n) = ([0; 1], 0);
            let rv = call!(f.C_GetSlotList, CK_TRUE, l.as_mut_ptr(), &mut n);
            assert_eq!(n, 1);
            rv
        }),
        case(
            "C_GetMechanismList(buffer of 0)",
            CKR_BUFFER_TOO_SMALL,
            || {
                let (mut l, mut n) = ([0; 1], 0);
                call!(f.C_GetMechanismList, 0, l.as_mut_ptr(), &mut n)
            },
        ),
        case("C_GetAttributeValue(count 0)", CKR_OK, || {
            let mut a = [attr(CKA_LABEL, &mut [])];
            call!(f.C_GetAttributeValue, s, c.ec, a.as_mut_ptr(), 0)
        }),
        case(
            "C_GetAttributeValue(buffer of 0)",
            CKR_BUFFER_TOO_SMALL,
            || {
                let mut b = [0u8; 1];
                let mut a = [CK_ATTRIBUTE {
                    type_: CKA_LABEL,
                    pValue: b.as_mut_ptr().cast(),
                    ulValueLen: 0,
                }];
                call!(f.C_GetAttributeValue, s, c.ec, a.as_mut_ptr(), 1)
            },
        ),
        case(
            "C_FindObjectsInit(empty CKA_LABEL): no match",
            CKR_OK,
            || {
                let mut empty = [0u8; 1];
                let mut t = [CK_ATTRIBUTE {
                    type_: CKA_LABEL,
                    pValue: empty.as_mut_ptr().cast(),
                    ulValueLen: 0,
                }];
                assert_eq!(call!(f.C_FindObjectsInit, s, t.as_mut_ptr(), 1), CKR_OK);
                let (mut o, mut n) = ([0; 4], 9);
                let rv = call!(f.C_FindObjects, s, o.as_mut_ptr(), 4, &mut n);
                assert_eq!(n, 0);
                rv
            },
        ),
        case(
            "mechanism parameter pointer with length 0 (PSS: parameters missing)",
            CKR_MECHANISM_PARAM_INVALID,
            || {
                let mut p = pss_params(CKM_SHA256, CKG_MGF1_SHA256, 32);
                let mut m = mech_with(CKM_SHA256_RSA_PKCS_PSS, &mut p);
                m.ulParameterLen = 0;
                call!(f.C_SignInit, s, &mut m, c.rsa)
            },
        ),
        // Huge lengths: refused before any read, or capacities the module need not use.
        case("C_Sign(data NULL, length MAX)", CKR_ARGUMENTS_BAD, || {
            assert_eq!(c.after_sign_init(CKM_ECDSA_SHA256, c.ec), CKR_OK);
            let (mut sig, mut n) = ([0u8; 64], 64);
            call!(f.C_Sign, s, null_mut(), huge, sig.as_mut_ptr(), &mut n)
        }),
        case("C_Sign(output capacity MAX)", CKR_OK, || {
            assert_eq!(c.after_sign_init(CKM_ECDSA_SHA256, c.ec), CKR_OK);
            let (mut d, mut sig, mut n) = (*b"data", [0u8; 64], huge);
            let rv = call!(f.C_Sign, s, d.as_mut_ptr(), 4, sig.as_mut_ptr(), &mut n);
            assert_eq!(n, 64);
            rv
        }),
        case("C_Login(PIN NULL, length MAX)", CKR_ARGUMENTS_BAD, || {
            call!(f.C_Login, s, CKU_USER, null_mut(), huge)
        }),
        case(
            "C_FindObjectsInit(template count MAX)",
            CKR_ARGUMENTS_BAD,
            || {
                let mut cl = ulong(CKO_PRIVATE_KEY);
                let mut t = [attr(CKA_CLASS, &mut cl)];
                call!(f.C_FindObjectsInit, s, t.as_mut_ptr(), huge)
            },
        ),
        case(
            "C_FindObjectsInit(template count 2^20)",
            CKR_ARGUMENTS_BAD,
            || {
                let mut cl = ulong(CKO_PRIVATE_KEY);
                let mut t = [attr(CKA_CLASS, &mut cl)];
                call!(f.C_FindObjectsInit, s, t.as_mut_ptr(), 1 << 20)
            },
        ),
        case(
            "C_FindObjectsInit(value NULL, length MAX)",
            CKR_ARGUMENTS_BAD,
            || {
                let mut t = [CK_ATTRIBUTE {
                    type_: CKA_LABEL,
                    pValue: null_mut(),
                    ulValueLen: huge,
                }];
                call!(f.C_FindObjectsInit, s, t.as_mut_ptr(), 1)
            },
        ),
        case("C_FindObjects(max MAX), twice", CKR_OK, || {
            assert_eq!(call!(f.C_FindObjectsInit, s, null_mut(), 0), CKR_OK);
            let (mut o, mut n) = ([0; 256], 0);
            let first = call!(f.C_FindObjects, s, o.as_mut_ptr(), huge, &mut n);
            assert_eq!(first, CKR_OK);
            assert!(n > 0 && n < 256);
            let rv = call!(f.C_FindObjects, s, o.as_mut_ptr(), huge, &mut n);
            assert_eq!(n, 0, "nothing left");
            rv
        }),
        case("C_GetSlotList(capacity MAX)", CKR_OK, || {
            let (mut l, mut n) = ([9; 4], huge);
            let rv = call!(f.C_GetSlotList, CK_TRUE, l.as_mut_ptr(), &mut n);
            assert_eq!((n, l[0]), (1, 0));
            rv
        }),
        case("C_GetMechanismList(capacity MAX)", CKR_OK, || {
            let (mut l, mut n) = ([0; 64], huge);
            let rv = call!(f.C_GetMechanismList, 0, l.as_mut_ptr(), &mut n);
            assert!(n > 0 && n < 64);
            rv
        }),
        case("C_GetAttributeValue(value capacity MAX)", CKR_OK, || {
            let mut b = [0u8; 64];
            let mut a = [CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: b.as_mut_ptr().cast(),
                ulValueLen: huge,
            }];
            let rv = call!(f.C_GetAttributeValue, s, c.ec, a.as_mut_ptr(), 1);
            assert_eq!(&b[..a[0].ulValueLen as usize], b"ec-p256");
            rv
        }),
        case("C_GetAttributeValue(count MAX)", CKR_ARGUMENTS_BAD, || {
            let mut a = [attr(CKA_LABEL, &mut [])];
            call!(f.C_GetAttributeValue, s, c.ec, a.as_mut_ptr(), huge)
        }),
        case("C_GetAttributeValue(count 2^20)", CKR_ARGUMENTS_BAD, || {
            let mut a = [attr(CKA_LABEL, &mut [])];
            call!(f.C_GetAttributeValue, s, c.ec, a.as_mut_ptr(), 1 << 20)
        }),
        case(
            "C_SignInit(PSS parameter length MAX)",
            CKR_MECHANISM_PARAM_INVALID,
            || {
                let mut p = pss_params(CKM_SHA256, CKG_MGF1_SHA256, 32);
                let mut m = mech_with(CKM_SHA256_RSA_PKCS_PSS, &mut p);
                m.ulParameterLen = huge;
                call!(f.C_SignInit, s, &mut m, c.rsa)
            },
        ),
        case(
            "C_SignInit(EdDSA context NULL, length MAX)",
            CKR_ARGUMENTS_BAD,
            || {
                let p = CK_EDDSA_PARAMS {
                    phFlag: CK_FALSE,
                    ulContextDataLen: huge,
                    pContextData: null_mut(),
                };
                let mut m = CK_MECHANISM {
                    mechanism: CKM_EDDSA,
                    pParameter: (&p as *const CK_EDDSA_PARAMS as *mut CK_EDDSA_PARAMS).cast(),
                    ulParameterLen: std::mem::size_of::<CK_EDDSA_PARAMS>() as CK_ULONG,
                };
                call!(f.C_SignInit, s, &mut m, c.ed)
            },
        ),
        case(
            "C_Sign(CKM_ECDSA, 2 KiB 'digest')",
            CKR_DATA_LEN_RANGE,
            || {
                raw_sign(&h.raw, s, CKM_ECDSA, &mut [], c.ec, &[7u8; 2048])
                    .map_or_else(|rv| rv, |_| CKR_OK)
            },
        ),
        case(
            "C_Sign(CKM_RSA_PKCS, k-10 bytes)",
            CKR_DATA_LEN_RANGE,
            || {
                raw_sign(&h.raw, s, CKM_RSA_PKCS, &mut [], c.rsa, &[7u8; 246])
                    .map_or_else(|rv| rv, |_| CKR_OK)
            },
        ),
        case(
            "C_SignUpdate beyond 64 KiB for EdDSA",
            CKR_DATA_LEN_RANGE,
            || {
                assert_eq!(c.after_sign_init(CKM_EDDSA, c.ed), CKR_OK);
                let mut chunk = vec![1u8; 40 * 1024];
                assert_eq!(
                    call!(
                        f.C_SignUpdate,
                        s,
                        chunk.as_mut_ptr(),
                        chunk.len() as CK_ULONG
                    ),
                    CKR_OK
                );
                call!(
                    f.C_SignUpdate,
                    s,
                    chunk.as_mut_ptr(),
                    chunk.len() as CK_ULONG
                )
            },
        ),
    ];
    run_table("zero and huge lengths", cases, end_operations(&h, s));
}

/// A length far beyond its buffer (1 TiB on 3 bytes, issue #19 item 6): every variable-length
/// value, mechanism parameter and input the module would copy is bounded before anything is
/// read or allocated, so the call fails with its code and the host process never aborts.
#[test]
fn lengths_beyond_the_buffer() {
    let h = Harness::new();
    let c = ctx(&h);
    let (f, s) = (c.f, c.s);
    let rw = open(f, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    let c = &c;
    const TIB: CK_ULONG = 1 << 40;
    // An attribute whose 3-byte value claims `n` bytes.
    let lying = |t: CK_ATTRIBUTE_TYPE, buf: &mut [u8; 3], n: CK_ULONG| CK_ATTRIBUTE {
        type_: t,
        pValue: buf.as_mut_ptr().cast(),
        ulValueLen: n,
    };
    let find = move |t: CK_ATTRIBUTE_TYPE| {
        let mut buf = *b"abc";
        let mut a = [lying(t, &mut buf, TIB)];
        call!(f.C_FindObjectsInit, s, a.as_mut_ptr(), 1)
    };
    let sign_lying = move |m: CK_MECHANISM_TYPE, key: CK_OBJECT_HANDLE| {
        assert_eq!(c.after_sign_init(m, key), CKR_OK);
        let (mut d, mut sig, mut n) = (*b"abc", [0u8; 512], 512);
        call!(f.C_Sign, s, d.as_mut_ptr(), TIB, sig.as_mut_ptr(), &mut n)
    };
    let verify_lying = move |m: CK_MECHANISM_TYPE, key: CK_OBJECT_HANDLE| {
        let mut m = mech(m);
        assert_eq!(call!(f.C_VerifyInit, s, &mut m, key), CKR_OK);
        let (mut d, mut sig) = (*b"abc", [0u8; 64]);
        call!(f.C_Verify, s, d.as_mut_ptr(), TIB, sig.as_mut_ptr(), 64)
    };
    let invalid = CKR_ATTRIBUTE_VALUE_INVALID;
    let cases = vec![
        case(
            "C_FindObjectsInit(CKA_LABEL of 1 TiB)",
            invalid,
            move || find(CKA_LABEL),
        ),
        case("C_FindObjectsInit(CKA_ID of 1 TiB)", invalid, move || {
            find(CKA_ID)
        }),
        case(
            "C_FindObjectsInit(CKA_VALUE of 1 TiB)",
            invalid,
            move || find(CKA_VALUE),
        ),
        case(
            "C_FindObjectsInit(CKA_LABEL of 64 KiB + 1)",
            invalid,
            move || {
                let mut buf = *b"abc";
                let mut a = [lying(CKA_LABEL, &mut buf, 64 * 1024 + 1)];
                call!(f.C_FindObjectsInit, s, a.as_mut_ptr(), 1)
            },
        ),
        case(
            "C_FindObjectsInit(five CKA_VALUEs of 1 MiB: over 4 MiB in all)",
            CKR_ARGUMENTS_BAD,
            move || {
                let mut bufs = [*b"abc"; 5];
                let mut a: Vec<CK_ATTRIBUTE> = bufs
                    .iter_mut()
                    .map(|b| lying(CKA_VALUE, b, 1 << 20))
                    .collect();
                call!(f.C_FindObjectsInit, s, a.as_mut_ptr(), 5)
            },
        ),
        case("C_CreateObject(CKA_VALUE of 1 TiB)", invalid, move || {
            let (mut cl, mut ty, mut buf) = (ulong(CKO_CERTIFICATE), ulong(CKC_X_509), *b"abc");
            let mut t = [
                attr(CKA_CLASS, &mut cl),
                attr(CKA_CERTIFICATE_TYPE, &mut ty),
                lying(CKA_VALUE, &mut buf, TIB),
            ];
            let mut o = 0;
            call!(f.C_CreateObject, rw, t.as_mut_ptr(), 3, &mut o)
        }),
        case(
            "C_GenerateKeyPair(CKA_LABEL of 1 TiB)",
            invalid,
            move || {
                let mut m = mech(CKM_EC_KEY_PAIR_GEN);
                let mut buf = *b"abc";
                let mut public = [lying(CKA_LABEL, &mut buf, TIB)];
                let mut private = [lying(CKA_LABEL, &mut buf, TIB)];
                let (mut p, mut k) = (0, 0);
                call!(
                    f.C_GenerateKeyPair,
                    rw,
                    &mut m,
                    public.as_mut_ptr(),
                    1,
                    private.as_mut_ptr(),
                    1,
                    &mut p,
                    &mut k
                )
            },
        ),
        case(
            "C_SignInit(EdDSA context of 1 TiB)",
            CKR_MECHANISM_PARAM_INVALID,
            move || {
                let mut ctx = *b"abc";
                let p = CK_EDDSA_PARAMS {
                    phFlag: CK_FALSE,
                    ulContextDataLen: TIB,
                    pContextData: ctx.as_mut_ptr(),
                };
                let mut m = CK_MECHANISM {
                    mechanism: CKM_EDDSA,
                    pParameter: (&p as *const CK_EDDSA_PARAMS as *mut CK_EDDSA_PARAMS).cast(),
                    ulParameterLen: std::mem::size_of::<CK_EDDSA_PARAMS>() as CK_ULONG,
                };
                call!(f.C_SignInit, s, &mut m, c.ed)
            },
        ),
        case(
            "C_Sign(CKM_EDDSA, data of 1 TiB)",
            CKR_DATA_LEN_RANGE,
            move || sign_lying(CKM_EDDSA, c.ed),
        ),
        case(
            "C_Sign(CKM_ECDSA, data of 1 TiB)",
            CKR_DATA_LEN_RANGE,
            move || sign_lying(CKM_ECDSA, c.ec),
        ),
        case(
            "C_Sign(CKM_RSA_PKCS, data of 1 TiB)",
            CKR_DATA_LEN_RANGE,
            move || sign_lying(CKM_RSA_PKCS, c.rsa),
        ),
        case(
            "C_SignUpdate(CKM_EDDSA, part of 1 TiB)",
            CKR_DATA_LEN_RANGE,
            move || {
                assert_eq!(c.after_sign_init(CKM_EDDSA, c.ed), CKR_OK);
                let mut d = *b"abc";
                call!(f.C_SignUpdate, s, d.as_mut_ptr(), TIB)
            },
        ),
        case(
            "C_Verify(CKM_ECDSA, data of 1 TiB)",
            CKR_DATA_LEN_RANGE,
            move || verify_lying(CKM_ECDSA, c.ec_pub),
        ),
        case("C_Login(PIN of 1 TiB)", CKR_ARGUMENTS_BAD, move || {
            let mut pin = *b"abc";
            call!(f.C_Login, s, CKU_USER, pin.as_mut_ptr(), TIB)
        }),
        case("C_Login(PIN of 4097 bytes)", CKR_ARGUMENTS_BAD, move || {
            let mut pin = [b'1'; 4097];
            call!(f.C_Login, s, CKU_USER, pin.as_mut_ptr(), 4097)
        }),
    ];
    run_table("lengths beyond the buffer", cases, end_operations(&h, s));
}

/// Every failing `C_Verify`, `C_VerifyFinal` and `C_VerifyUpdate` ends the verification
/// operation, bad pointers included (PKCS#11 v3.0 §5.15, as `C_Sign` in §5.13): the case
/// answers its code only when a following `C_VerifyUpdate` finds no operation.
#[test]
fn verify_errors_end_the_operation() {
    let h = Harness::new();
    let c = ctx(&h);
    let (f, s) = (c.f, c.s);
    let c = &c;
    const ENDED_NOT: CK_RV = 0xdead;
    // `rv`, if the operation ended; ENDED_NOT if it is still active.
    let ended = move |rv: CK_RV| {
        let mut d = *b"more";
        match call!(f.C_VerifyUpdate, s, d.as_mut_ptr(), 4) {
            CKR_OPERATION_NOT_INITIALIZED => rv,
            _ => ENDED_NOT,
        }
    };
    let init = move |m: CK_MECHANISM_TYPE, key: CK_OBJECT_HANDLE| {
        let mut m = mech(m);
        assert_eq!(call!(f.C_VerifyInit, s, &mut m, key), CKR_OK);
    };
    let bad = CKR_ARGUMENTS_BAD;
    let cases = vec![
        case("C_Verify(data NULL, length 4)", bad, move || {
            init(CKM_ECDSA_SHA256, c.ec_pub);
            let mut sig = [0u8; 64];
            ended(call!(f.C_Verify, s, null_mut(), 4, sig.as_mut_ptr(), 64))
        }),
        case("C_Verify(signature NULL, length 64)", bad, move || {
            init(CKM_ECDSA_SHA256, c.ec_pub);
            let mut d = *b"data";
            ended(call!(f.C_Verify, s, d.as_mut_ptr(), 4, null_mut(), 64))
        }),
        case("C_Verify(data length MAX)", bad, move || {
            init(CKM_ECDSA_SHA256, c.ec_pub);
            let (mut d, mut sig) = (*b"data", [0u8; 64]);
            let huge = CK_ULONG::MAX;
            ended(call!(
                f.C_Verify,
                s,
                d.as_mut_ptr(),
                huge,
                sig.as_mut_ptr(),
                64
            ))
        }),
        case(
            "C_Verify(signature of 63 bytes)",
            CKR_SIGNATURE_LEN_RANGE,
            move || {
                init(CKM_ECDSA_SHA256, c.ec_pub);
                let (mut d, mut sig) = (*b"data", [1u8; 63]);
                ended(call!(
                    f.C_Verify,
                    s,
                    d.as_mut_ptr(),
                    4,
                    sig.as_mut_ptr(),
                    63
                ))
            },
        ),
        case(
            "C_Verify(wrong signature)",
            CKR_SIGNATURE_INVALID,
            move || {
                init(CKM_ECDSA_SHA256, c.ec_pub);
                let (mut d, mut sig) = (*b"data", [1u8; 64]);
                ended(call!(
                    f.C_Verify,
                    s,
                    d.as_mut_ptr(),
                    4,
                    sig.as_mut_ptr(),
                    64
                ))
            },
        ),
        case(
            "C_Verify(CKM_ECDSA, 2 KiB 'digest')",
            CKR_DATA_LEN_RANGE,
            move || {
                init(CKM_ECDSA, c.ec_pub);
                let (mut d, mut sig) = ([7u8; 2048], [1u8; 64]);
                ended(call!(
                    f.C_Verify,
                    s,
                    d.as_mut_ptr(),
                    2048,
                    sig.as_mut_ptr(),
                    64
                ))
            },
        ),
        case("C_VerifyUpdate(NULL, 4)", bad, move || {
            init(CKM_ECDSA_SHA256, c.ec_pub);
            ended(call!(f.C_VerifyUpdate, s, null_mut(), 4))
        }),
        case(
            "C_VerifyUpdate(CKM_ECDSA, 2 KiB 'digest')",
            CKR_DATA_LEN_RANGE,
            move || {
                init(CKM_ECDSA, c.ec_pub);
                let mut d = [7u8; 2048];
                ended(call!(f.C_VerifyUpdate, s, d.as_mut_ptr(), 2048))
            },
        ),
        case("C_VerifyFinal(NULL, 64)", bad, move || {
            init(CKM_ECDSA_SHA256, c.ec_pub);
            ended(call!(f.C_VerifyFinal, s, null_mut(), 64))
        }),
        case(
            "C_VerifyFinal(signature of 63 bytes)",
            CKR_SIGNATURE_LEN_RANGE,
            move || {
                init(CKM_ECDSA_SHA256, c.ec_pub);
                let mut sig = [1u8; 63];
                ended(call!(f.C_VerifyFinal, s, sig.as_mut_ptr(), 63))
            },
        ),
        case(
            "C_VerifyFinal(wrong signature)",
            CKR_SIGNATURE_INVALID,
            move || {
                init(CKM_ECDSA_SHA256, c.ec_pub);
                let mut sig = [1u8; 64];
                ended(call!(f.C_VerifyFinal, s, sig.as_mut_ptr(), 64))
            },
        ),
    ];
    run_table(
        "verify errors end the operation",
        cases,
        end_operations(&h, s),
    );
}

#[test]
fn invalid_handles() {
    let h = Harness::new();
    let c = ctx(&h);
    let (f, s) = (c.f, c.s);
    let f3 = h.raw.f3;
    let mut cases = Vec::new();
    for slot in [1, 99, CK_ULONG::MAX] {
        let w = CKR_SLOT_ID_INVALID;
        cases.extend([
            case("C_GetSlotInfo", w, move || {
                let mut i = CK_SLOT_INFO::default();
                call!(f.C_GetSlotInfo, slot, &mut i)
            }),
            case("C_GetTokenInfo", w, move || {
                let mut i = CK_TOKEN_INFO::default();
                call!(f.C_GetTokenInfo, slot, &mut i)
            }),
            case("C_GetMechanismList", w, move || {
                let mut n = 0;
                call!(f.C_GetMechanismList, slot, null_mut(), &mut n)
            }),
            case("C_GetMechanismInfo", w, move || {
                let mut i = CK_MECHANISM_INFO::default();
                call!(f.C_GetMechanismInfo, slot, CKM_ECDSA, &mut i)
            }),
            case("C_OpenSession", w, move || {
                let mut h = 0;
                call!(
                    f.C_OpenSession,
                    slot,
                    CKF_SERIAL_SESSION,
                    null_mut(),
                    None,
                    &mut h
                )
            }),
            case("C_CloseAllSessions", w, move || {
                call!(f.C_CloseAllSessions, slot)
            }),
        ]);
    }
    for bad in [0, s + 1000, CK_ULONG::MAX] {
        let w = CKR_SESSION_HANDLE_INVALID;
        let ec = c.ec;
        cases.extend([
            case("C_CloseSession", w, move || call!(f.C_CloseSession, bad)),
            case("C_GetSessionInfo", w, move || {
                let mut i = CK_SESSION_INFO::default();
                call!(f.C_GetSessionInfo, bad, &mut i)
            }),
            case("C_SessionCancel", w, move || {
                call!(f3.C_SessionCancel, bad, CKF_SIGN)
            }),
            case("C_Login", w, move || {
                call!(f.C_Login, bad, CKU_USER, null_mut(), 0)
            }),
            case("C_Logout", w, move || call!(f.C_Logout, bad)),
            case("C_FindObjectsInit", w, move || {
                call!(f.C_FindObjectsInit, bad, null_mut(), 0)
            }),
            case("C_FindObjects", w, move || {
                let (mut o, mut n) = ([0; 2], 0);
                call!(f.C_FindObjects, bad, o.as_mut_ptr(), 2, &mut n)
            }),
            case("C_FindObjectsFinal", w, move || {
                call!(f.C_FindObjectsFinal, bad)
            }),
            case("C_GetAttributeValue", w, move || {
                let mut a = [attr(CKA_LABEL, &mut [])];
                call!(f.C_GetAttributeValue, bad, ec, a.as_mut_ptr(), 1)
            }),
            case("C_SignInit", w, move || {
                let mut m = mech(CKM_ECDSA_SHA256);
                call!(f.C_SignInit, bad, &mut m, ec)
            }),
            case("C_Sign", w, move || {
                let (mut d, mut n) = (*b"data", 0);
                call!(f.C_Sign, bad, d.as_mut_ptr(), 4, null_mut(), &mut n)
            }),
            case("C_SignUpdate", w, move || {
                let mut d = *b"data";
                call!(f.C_SignUpdate, bad, d.as_mut_ptr(), 4)
            }),
            case("C_SignFinal", w, move || {
                let mut n = 0;
                call!(f.C_SignFinal, bad, null_mut(), &mut n)
            }),
            case("C_VerifyInit", w, move || {
                let mut m = mech(CKM_ECDSA_SHA256);
                call!(f.C_VerifyInit, bad, &mut m, ec)
            }),
            case("C_Verify", w, move || {
                let (mut d, mut sig) = (*b"data", [0u8; 64]);
                call!(f.C_Verify, bad, d.as_mut_ptr(), 4, sig.as_mut_ptr(), 64)
            }),
            case("C_CreateObject", w, move || {
                let mut cl = ulong(CKO_CERTIFICATE);
                let mut t = [attr(CKA_CLASS, &mut cl)];
                let mut o = 0;
                call!(f.C_CreateObject, bad, t.as_mut_ptr(), 1, &mut o)
            }),
            case("C_DestroyObject", w, move || {
                call!(f.C_DestroyObject, bad, ec)
            }),
        ]);
    }
    for bad in [0, 0xdead_0001, CK_ULONG::MAX] {
        cases.extend([
            case(
                "C_GetAttributeValue",
                CKR_OBJECT_HANDLE_INVALID,
                move || {
                    let mut a = [attr(CKA_LABEL, &mut [])];
                    call!(f.C_GetAttributeValue, s, bad, a.as_mut_ptr(), 1)
                },
            ),
            case("C_SignInit", CKR_KEY_HANDLE_INVALID, move || {
                let mut m = mech(CKM_ECDSA_SHA256);
                call!(f.C_SignInit, s, &mut m, bad)
            }),
            case("C_VerifyInit", CKR_KEY_HANDLE_INVALID, move || {
                let mut m = mech(CKM_ECDSA_SHA256);
                call!(f.C_VerifyInit, s, &mut m, bad)
            }),
            case_any(
                "C_DestroyObject",
                // CKR_SESSION_READ_ONLY may be found first (the session is read-only).
                &[CKR_OBJECT_HANDLE_INVALID, CKR_SESSION_READ_ONLY],
                move || call!(f.C_DestroyObject, s, bad),
            ),
        ]);
    }
    let (ec, ec_pub) = (c.ec, c.ec_pub);
    cases.extend([
        case(
            "C_SignInit with a public key",
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            move || {
                let mut m = mech(CKM_ECDSA_SHA256);
                call!(f.C_SignInit, s, &mut m, ec_pub)
            },
        ),
        case_any(
            "C_VerifyInit with a private key",
            &[CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_KEY_TYPE_INCONSISTENT],
            move || {
                let mut m = mech(CKM_ECDSA_SHA256);
                call!(f.C_VerifyInit, s, &mut m, ec)
            },
        ),
        case(
            "C_GetMechanismInfo(unknown mechanism)",
            CKR_MECHANISM_INVALID,
            || {
                let mut i = CK_MECHANISM_INFO::default();
                call!(f.C_GetMechanismInfo, 0, 0x7777_7777, &mut i)
            },
        ),
        case("C_Login(user type 7)", CKR_USER_TYPE_INVALID, || {
            call!(f.C_Login, s, 7, null_mut(), 0)
        }),
        // A read-only session is open: the SO cannot log in (PKCS#11 v2.40 §5.6).
        case("C_Login(CKU_SO)", CKR_SESSION_READ_ONLY_EXISTS, || {
            call!(f.C_Login, s, CKU_SO, null_mut(), 0)
        }),
        case(
            "C_OpenSession without CKF_SERIAL_SESSION",
            CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            || {
                let mut h = 0;
                call!(f.C_OpenSession, 0, 0, null_mut(), None, &mut h)
            },
        ),
        case("C_GetInterface(unknown name)", CKR_ARGUMENTS_BAD, || {
            let mut name = *b"PKCS 12\0";
            let mut i = null_mut();
            call!(
                h.raw.f3.C_GetInterface,
                name.as_mut_ptr(),
                null_mut(),
                &mut i,
                0
            )
        }),
        case("C_GetInterface(version 4.0)", CKR_ARGUMENTS_BAD, || {
            let mut v = CK_VERSION { major: 4, minor: 0 };
            let mut i = null_mut();
            call!(h.raw.f3.C_GetInterface, null_mut(), &mut v, &mut i, 0)
        }),
    ]);
    run_table("invalid handles", cases, end_operations(&h, s));
}

#[test]
fn wrong_mechanism_parameters() {
    let h = Harness::new();
    let c = ctx(&h);
    let (f, s) = (c.f, c.s);
    let invalid = CKR_MECHANISM_PARAM_INVALID;
    let init = move |m: CK_MECHANISM_TYPE, mut p: Vec<u8>, key| {
        let mut m = if p.is_empty() {
            mech(m)
        } else {
            mech_with(m, &mut p)
        };
        call!(f.C_SignInit, s, &mut m, key)
    };
    let pss = |hash, mgf, salt| pss_params(hash, mgf, salt);
    let good = pss(CKM_SHA256, CKG_MGF1_SHA256, 32);
    let eddsa = |ph: bool, context: &mut [u8]| {
        let p = CK_EDDSA_PARAMS {
            phFlag: ph as CK_BBOOL,
            ulContextDataLen: context.len() as CK_ULONG,
            pContextData: if context.is_empty() {
                null_mut()
            } else {
                context.as_mut_ptr()
            },
        };
        // SAFETY: plain-old-data struct viewed as bytes; the context buffer outlives the
        // C_SignInit call of the case that uses it.
        unsafe {
            std::slice::from_raw_parts(
                &p as *const CK_EDDSA_PARAMS as *const u8,
                std::mem::size_of::<CK_EDDSA_PARAMS>(),
            )
        }
        .to_vec()
    };
    let (rsa, ec, ed) = (c.rsa, c.ec, c.ed);
    let cases = vec![
        case("PSS, correct (control)", CKR_OK, || {
            init(CKM_SHA256_RSA_PKCS_PSS, good.clone(), rsa)
        }),
        case("PSS without parameters", invalid, || {
            init(CKM_SHA256_RSA_PKCS_PSS, vec![], rsa)
        }),
        case("PSS parameters one byte short", invalid, || {
            init(
                CKM_SHA256_RSA_PKCS_PSS,
                good[..good.len() - 1].to_vec(),
                rsa,
            )
        }),
        case("PSS parameters one byte long", invalid, || {
            init(CKM_SHA256_RSA_PKCS_PSS, [&good[..], &[0]].concat(), rsa)
        }),
        case("PSS hashAlg not the mechanism's", invalid, || {
            init(
                CKM_SHA256_RSA_PKCS_PSS,
                pss(CKM_SHA384, CKG_MGF1_SHA384, 48),
                rsa,
            )
        }),
        case("PSS hashAlg SHA-1", invalid, || {
            init(CKM_RSA_PKCS_PSS, pss(CKM_SHA_1, CKG_MGF1_SHA1, 20), rsa)
        }),
        case("PSS hashAlg not a hash", invalid, || {
            init(CKM_RSA_PKCS_PSS, pss(CKM_ECDSA, CKG_MGF1_SHA256, 32), rsa)
        }),
        case("PSS MGF1 with another hash", invalid, || {
            init(
                CKM_SHA256_RSA_PKCS_PSS,
                pss(CKM_SHA256, CKG_MGF1_SHA512, 32),
                rsa,
            )
        }),
        case("PSS mgf unknown", invalid, || {
            init(CKM_SHA256_RSA_PKCS_PSS, pss(CKM_SHA256, 0x999, 32), rsa)
        }),
        case("PSS sLen 0", invalid, || {
            init(
                CKM_SHA256_RSA_PKCS_PSS,
                pss(CKM_SHA256, CKG_MGF1_SHA256, 0),
                rsa,
            )
        }),
        case("PSS sLen MAX", invalid, || {
            init(
                CKM_SHA256_RSA_PKCS_PSS,
                pss(CKM_SHA256, CKG_MGF1_SHA256, CK_ULONG::MAX),
                rsa,
            )
        }),
        case("parameters for CKM_ECDSA_SHA256", invalid, || {
            init(CKM_ECDSA_SHA256, vec![0; 8], ec)
        }),
        case("parameters for CKM_RSA_PKCS", invalid, || {
            init(CKM_RSA_PKCS, good.clone(), rsa)
        }),
        case("PSS parameters for CKM_SHA256_RSA_PKCS", invalid, || {
            init(CKM_SHA256_RSA_PKCS, good.clone(), rsa)
        }),
        case("EdDSA parameters, pure (control)", CKR_OK, || {
            init(CKM_EDDSA, eddsa(false, &mut []), ed)
        }),
        case("EdDSA parameters of the wrong size", invalid, || {
            init(CKM_EDDSA, vec![0; 3], ed)
        }),
        case("EdDSA prehash (Ed25519ph)", invalid, || {
            init(CKM_EDDSA, eddsa(true, &mut []), ed)
        }),
        case("EdDSA with a context (Ed25519ctx)", invalid, || {
            let mut ctx = *b"context";
            init(CKM_EDDSA, eddsa(false, &mut ctx), ed)
        }),
        case(
            "ECDSA mechanism on an RSA key",
            CKR_KEY_TYPE_INCONSISTENT,
            || init(CKM_ECDSA_SHA256, vec![], rsa),
        ),
        case(
            "RSA mechanism on an EC key",
            CKR_KEY_TYPE_INCONSISTENT,
            || init(CKM_SHA256_RSA_PKCS, vec![], ec),
        ),
        case("EdDSA on an EC key", CKR_KEY_TYPE_INCONSISTENT, || {
            init(CKM_EDDSA, vec![], ec)
        }),
        case("unknown mechanism", CKR_MECHANISM_INVALID, || {
            init(0x8000_1234, vec![], ec)
        }),
        case(
            "a mechanism that does not sign (CKM_AES_CBC)",
            CKR_MECHANISM_INVALID,
            || init(CKM_AES_CBC, vec![], ec),
        ),
        case(
            "unknown mechanism with parameters",
            CKR_MECHANISM_INVALID,
            || init(0x8000_1234, vec![1, 2, 3], ec),
        ),
        case(
            "CKM_RSA_PKCS_PSS: input not a digest",
            CKR_DATA_LEN_RANGE,
            || {
                let mut p = good.clone();
                raw_sign(&h.raw, s, CKM_RSA_PKCS_PSS, &mut p, rsa, b"not 32 bytes")
                    .map_or_else(|rv| rv, |_| CKR_OK)
            },
        ),
    ];
    run_table("mechanism parameters", cases, end_operations(&h, s));
}

/// A DER X.509 certificate whose subject public key is `key` (issued by a throw-away CA key:
/// the module checks that the certificate holds the key's public key, not who signed it).
fn certificate_for(key: &PKey<Public>) -> Vec<u8> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::{X509NameBuilder, X509};
    let ca = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "bad-input test").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&ca, MessageDigest::sha256()).unwrap();
    b.build().to_der().unwrap()
}

/// Templates: unknown and duplicated attributes, wrong value sizes; and writes in a read-only
/// session.
#[test]
fn templates_and_read_only_sessions() {
    let h = Harness::new();
    let c = ctx(&h);
    let f = c.f;
    let ro = c.s;
    let rw = open(f, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    let cert = certificate_for(&h.sim_public_key("ec-p256"));
    let other_cert = certificate_for(&h.sim_public_key("ec-p384"));
    // A creation template: (type, value) pairs.
    let create = move |s: CK_SESSION_HANDLE, t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| {
        let mut values: Vec<Vec<u8>> = t.iter().map(|(_, v)| v.clone()).collect();
        let mut attrs: Vec<CK_ATTRIBUTE> = t
            .iter()
            .zip(values.iter_mut())
            .map(|((ty, _), v)| attr(*ty, v))
            .collect();
        let mut o = 0;
        call!(
            f.C_CreateObject,
            s,
            attrs.as_mut_ptr(),
            attrs.len() as CK_ULONG,
            &mut o
        )
    };
    let class = |c| (CKA_CLASS, ulong(c));
    let x509 = (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509));
    let value = |v: &Vec<u8>| (CKA_VALUE, v.clone());
    let label = |l: &str| (CKA_LABEL, l.as_bytes().to_vec());
    let search = move |t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| -> Result<usize, CK_RV> {
        let mut values: Vec<Vec<u8>> = t.iter().map(|(_, v)| v.clone()).collect();
        let mut attrs: Vec<CK_ATTRIBUTE> = t
            .iter()
            .zip(values.iter_mut())
            .map(|((ty, _), v)| attr(*ty, v))
            .collect();
        let rv = call!(
            f.C_FindObjectsInit,
            ro,
            attrs.as_mut_ptr(),
            attrs.len() as CK_ULONG
        );
        if rv != CKR_OK {
            return Err(rv);
        }
        let (mut o, mut n) = ([0; 64], 0);
        let rv = call!(f.C_FindObjects, ro, o.as_mut_ptr(), 64, &mut n);
        call!(f.C_FindObjectsFinal, ro);
        if rv != CKR_OK {
            return Err(rv);
        }
        Ok(n as usize)
    };
    let ec = c.ec;
    let cert_template = vec![class(CKO_CERTIFICATE), x509.clone(), value(&cert)];
    let cases = vec![
        // Search templates.
        case_any(
            "search with an unknown attribute: no match (or refused)",
            &[CKR_OK, CKR_ATTRIBUTE_TYPE_INVALID],
            || match search(&[(0x7fff_0001, vec![1])]) {
                Ok(0) => CKR_OK,
                Ok(n) => panic!("{n} objects match an unknown attribute"),
                Err(rv) => rv,
            },
        ),
        case_any(
            "search with a CKA_CLASS of 3 bytes: no match (or refused)",
            &[CKR_OK, CKR_ATTRIBUTE_VALUE_INVALID],
            || match search(&[(CKA_CLASS, vec![3, 0, 0])]) {
                Ok(0) => CKR_OK,
                Ok(n) => panic!("{n} objects match a 3-byte class"),
                Err(rv) => rv,
            },
        ),
        case(
            "search with the same attribute twice (same value)",
            CKR_OK,
            || {
                let t = [label("ec-p256"), label("ec-p256")];
                assert_eq!(search(&t), Ok(2), "private and public key");
                CKR_OK
            },
        ),
        case(
            "search with the same attribute twice (conflicting): nothing matches",
            CKR_OK,
            || {
                let t = [label("ec-p256"), label("rsa-2048")];
                assert_eq!(search(&t), Ok(0));
                CKR_OK
            },
        ),
        case_any(
            "search by labels no key can have: no match",
            &[CKR_OK],
            || {
                let labels: [&[u8]; 6] = [
                    b"",
                    &[b'x'; 4096],
                    b"../key/ec-p256",
                    b"ec-p256\n",
                    b"ec-p256%2F",
                    b"\xff\xfe",
                ];
                for l in labels {
                    match search(&[(CKA_LABEL, l.to_vec())]) {
                        Ok(0) => {}
                        other => return other.map_or_else(|rv| rv, |n| 0x8000_0000 | n as CK_RV),
                    }
                }
                CKR_OK
            },
        ),
        // Attribute reads.
        case(
            "C_GetAttributeValue: unknown type",
            CKR_ATTRIBUTE_TYPE_INVALID,
            || {
                let mut a = [attr(0x7fff_0001, &mut [])];
                let rv = call!(f.C_GetAttributeValue, ro, ec, a.as_mut_ptr(), 1);
                assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
                rv
            },
        ),
        case("C_GetAttributeValue: the same type twice", CKR_OK, || {
            let (mut a1, mut a2) = ([0u8; 16], [0u8; 16]);
            let mut a = [attr(CKA_LABEL, &mut a1), attr(CKA_LABEL, &mut a2)];
            let rv = call!(f.C_GetAttributeValue, ro, ec, a.as_mut_ptr(), 2);
            assert_eq!((a[0].ulValueLen, a[1].ulValueLen), (7, 7));
            rv
        }),
        // Writes in a read-only session (PKCS#11 v2.40 §5.7: token objects are created and
        // destroyed only in read-write sessions).
        case(
            "C_CreateObject in a read-only session",
            CKR_SESSION_READ_ONLY,
            || create(ro, &cert_template),
        ),
        case(
            "C_DestroyObject of a key in a read-only session",
            CKR_SESSION_READ_ONLY,
            || call!(f.C_DestroyObject, ro, ec),
        ),
        // Objects are not modifiable (CKA_MODIFIABLE false, token/modify.rs): a token object
        // in a read-only session is CKR_SESSION_READ_ONLY (§5.7.6), an unchanged value in a
        // read-write session is accepted, a change is CKR_ACTION_PROHIBITED.
        case(
            "C_SetAttributeValue in a read-only session",
            CKR_SESSION_READ_ONLY,
            || {
                let mut l = b"x".to_vec();
                let mut a = [attr(CKA_LABEL, &mut l)];
                call!(f.C_SetAttributeValue, ro, ec, a.as_mut_ptr(), 1)
            },
        ),
        case(
            "C_SetAttributeValue: a new label",
            CKR_ACTION_PROHIBITED,
            || {
                let mut l = b"x".to_vec();
                let mut a = [attr(CKA_LABEL, &mut l)];
                call!(f.C_SetAttributeValue, rw, ec, a.as_mut_ptr(), 1)
            },
        ),
        case(
            "C_SetAttributeValue: NULL template with a count",
            CKR_ARGUMENTS_BAD,
            || call!(f.C_SetAttributeValue, rw, ec, null_mut(), 1),
        ),
        // CKA_COPYABLE false (§5.7.2): every copy is CKR_ACTION_PROHIBITED.
        case("C_CopyObject", CKR_ACTION_PROHIBITED, || {
            let mut o = 0;
            call!(f.C_CopyObject, ro, ec, null_mut(), 0, &mut o)
        }),
        case(
            "C_CopyObject: NULL output handle",
            CKR_ARGUMENTS_BAD,
            || call!(f.C_CopyObject, rw, ec, null_mut(), 0, null_mut()),
        ),
        // Creation templates (read-write session).
        case(
            "C_CreateObject: unknown attribute",
            CKR_ATTRIBUTE_TYPE_INVALID,
            || {
                let mut t = cert_template.clone();
                t.push((0x7fff_0001, vec![1]));
                create(rw, &t)
            },
        ),
        case(
            "C_CreateObject: CKA_CLASS of 3 bytes",
            CKR_ATTRIBUTE_VALUE_INVALID,
            || {
                create(
                    rw,
                    &[(CKA_CLASS, vec![1, 0, 0]), x509.clone(), value(&cert)],
                )
            },
        ),
        case(
            "C_CreateObject: CKA_VALUE missing",
            CKR_TEMPLATE_INCOMPLETE,
            || create(rw, &[class(CKO_CERTIFICATE), x509.clone()]),
        ),
        case(
            "C_CreateObject: empty template",
            CKR_TEMPLATE_INCOMPLETE,
            || create(rw, &[]),
        ),
        case(
            "C_CreateObject: a private key (not creatable)",
            CKR_TEMPLATE_INCONSISTENT,
            || create(rw, &[class(CKO_PRIVATE_KEY), (CKA_KEY_TYPE, ulong(CKK_EC))]),
        ),
        case(
            "C_CreateObject: CKA_CLASS twice, conflicting",
            CKR_TEMPLATE_INCONSISTENT,
            || {
                let mut t = cert_template.clone();
                t.push(class(CKO_PRIVATE_KEY));
                create(rw, &t)
            },
        ),
        case(
            "C_CreateObject: CKA_VALUE twice, conflicting",
            CKR_TEMPLATE_INCONSISTENT,
            || {
                let mut t = cert_template.clone();
                t.push(value(&other_cert));
                t.push(label("ec-p256"));
                create(rw, &t)
            },
        ),
        case(
            "C_CreateObject: CKA_LABEL twice, conflicting",
            CKR_TEMPLATE_INCONSISTENT,
            || {
                let mut t = cert_template.clone();
                t.push(label("rsa-2048"));
                t.push(label("ec-p256"));
                create(rw, &t)
            },
        ),
        case_any(
            "C_CreateObject: CKA_LABEL twice, same value (as if given once)",
            &[CKR_OK, CKR_TEMPLATE_INCONSISTENT],
            || {
                let mut t = cert_template.clone();
                t.push(label("ec-p256"));
                t.push(label("ec-p256"));
                create(rw, &t)
            },
        ),
    ];
    run_table("templates", cases, end_operations(&h, ro));
    assert_eq!(call!(f.C_CloseSession, rw), CKR_OK);
}

/// The module still signs after all that.
#[test]
fn module_still_works_after_bad_input() {
    let h = Harness::new();
    let c = ctx(&h);
    // A burst of bad calls first.
    for _ in 0..3 {
        call!(c.f.C_SignInit, c.s, null_mut(), c.ec);
        call!(c.f.C_Sign, c.s, null_mut(), 5, null_mut(), null_mut());
        call!(c.f.C_FindObjectsInit, c.s, null_mut(), 9);
        call!(c.f.C_GetAttributeValue, c.s, 0, null_mut(), 1);
    }
    let sig = raw_sign(&h.raw, c.s, CKM_ECDSA_SHA256, &mut [], c.ec, b"fine").unwrap();
    assert!(common::verify::ecdsa(
        &h.sim_public_key("ec-p256"),
        common::verify::Hash::Sha256,
        b"fine",
        &sig
    ));
}

/// Every exported entry point in `module/src/ffi/*.rs` runs its body inside `guard()` (which turns a
/// panic into CKR_GENERAL_ERROR instead of unwinding into C), with at most `log::trace!`
/// before it; or it is a `not_supported!` stub, whose body only returns a constant.
#[test]
fn every_entry_point_is_guarded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("module/src/ffi");
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        for (name, body) in extern_fns(&text) {
            checked.push(name.clone());
            // The not_supported! macro's template ignores its arguments first.
            let rest = strip_trace(&body.replace("$(let _ = $arg;)*", ""));
            if !rest.trim_start().starts_with("guard(") {
                problems.push(format!(
                    "{file}: {name} does not run its body in guard(): {}",
                    rest.trim().chars().take(80).collect::<String>()
                ));
            }
        }
    }
    // The stubs listed in not_supported! invocations.
    let unsupported = std::fs::read_to_string(dir.join("unsupported.rs")).unwrap();
    let stubs = unsupported
        .split("not_supported! {")
        .nth(1)
        .expect("a not_supported! invocation")
        .lines()
        .filter_map(|l| l.trim().split_once('(').map(|(n, _)| n.to_string()))
        .filter(|n| n.starts_with("C_"))
        .count();
    eprintln!(
        "{} extern \"C\" functions checked, {stubs} not_supported! stubs",
        checked.len()
    );
    assert!(checked.len() >= 25, "found only {checked:?}");
    assert!(stubs >= 20);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Removes leading `log::trace!(...);` statements (allowed before `guard`).
fn strip_trace(body: &str) -> String {
    let mut rest = body.trim_start();
    while let Some(after) = rest.strip_prefix("log::trace!(") {
        let end = matching(after, '(', ')').expect("balanced log::trace!");
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(';').unwrap_or(rest).trim_start();
    }
    rest.to_string()
}

/// The index of the bracket closing an already opened one in `s`.
fn matching(s: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 1;
    let mut in_str = false;
    let mut prev = ' ';
    for (i, ch) in s.char_indices() {
        if in_str {
            if ch == '"' && prev != '\\' {
                in_str = false;
            }
        } else if ch == '"' {
            in_str = true;
        } else if ch == open {
            depth += 1;
        } else if ch == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        prev = if prev == '\\' && ch == '\\' { ' ' } else { ch };
    }
    None
}

/// (name, body) of every `extern "C" fn` in a source text, comments removed.
fn extern_fns(text: &str) -> Vec<(String, String)> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("extern \"C\" fn ") {
        let after = &rest[i + "extern \"C\" fn ".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
            .collect();
        let open_paren = after.find('(').unwrap();
        let params_end = open_paren + 1 + matching(&after[open_paren + 1..], '(', ')').unwrap();
        let brace = params_end + after[params_end..].find('{').unwrap();
        let body_end = brace + 1 + matching(&after[brace + 1..], '{', '}').unwrap();
        out.push((name, after[brace + 1..body_end].to_string()));
        rest = &after[body_end..];
    }
    out
}
