//! The module's one error type, and the one table mapping TSB and transport failures to `CK_RV`.

use std::borrow::Cow;
use std::fmt;

use cryptoki_sys::*;

use crate::logging::Net;
use crate::tsb::{TsbError, TsbErrorKind, TsbReason};

/// An error that knows the `CK_RV` it becomes at the C boundary.
///
/// `needed` carries the required buffer size for `CKR_BUFFER_TOO_SMALL`, so the FFI layer can
/// write it back to the caller's length pointer (PKCS#11 v2.40 §5.2, "Conventions for functions
/// returning output in a variable-length buffer").
#[derive(Debug, Clone)]
pub struct Error {
    rv: CK_RV,
    needed: Option<usize>,
    message: Cow<'static, str>,
    /// Already logged at WARN where it arose (a TSB failure): callers that log refusals once
    /// leave it out.
    logged: bool,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(rv: CK_RV, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            rv,
            needed: None,
            message: message.into(),
            logged: false,
        }
    }

    /// An error that is only a return value, with no further explanation.
    pub fn rv(rv: CK_RV) -> Error {
        Error::new(rv, rv_name(rv))
    }

    /// `CKR_BUFFER_TOO_SMALL`, with the length the caller must provide.
    pub fn buffer_too_small(needed: usize) -> Error {
        Error {
            rv: CKR_BUFFER_TOO_SMALL,
            needed: Some(needed),
            message: Cow::Borrowed("buffer too small"),
            logged: false,
        }
    }

    pub fn code(&self) -> CK_RV {
        self.rv
    }

    pub fn needed(&self) -> Option<usize> {
        self.needed
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether a WARN line already reported this error (see [`map_tsb_error`]).
    pub(crate) fn was_logged(&self) -> bool {
        self.logged
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, rv_name(self.rv))
    }
}

impl std::error::Error for Error {}

impl From<crate::crypto::CryptoError> for Error {
    fn from(e: crate::crypto::CryptoError) -> Error {
        Error::new(CKR_GENERAL_ERROR, e.to_string())
    }
}

/// What a credential failure means in the current login mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CredentialContext {
    /// Credentials come from the configuration: a rejected credential means the user (or the
    /// configuration) is not authorised.
    Configured,
    /// The PIN given to `C_Login` is the credential: a rejected credential is a wrong PIN.
    Pin,
}

/// The one place where TSB and transport failures become `CK_RV` values. Each mapping logs one
/// warning naming the endpoint, the HTTP status and the TSB reason (never a secret).
///
/// | failure | `CK_RV` |
/// |---|---|
/// | connection refused, DNS, TLS failure, timeout, dropped connection | `CKR_DEVICE_ERROR` |
/// | HTTP 5xx, TSB 701 (HSM error), HTML or unreadable body | `CKR_DEVICE_ERROR` |
/// | TSB 401 (missing approval; the signer re-files through `/v1/sign` first) | `CKR_KEY_FUNCTION_NOT_PERMITTED` |
/// | TSB 617 / 631 / 45x, any other HTTP 401, 403 | `CKR_USER_NOT_LOGGED_IN`, or `CKR_PIN_INCORRECT` when the PIN is the credential |
/// | TSB 620 (key password mismatch) | `CKR_PIN_INCORRECT` |
/// | TSB 650 (key does not exist), HTTP 404 on a key | `CKR_KEY_HANDLE_INVALID` |
/// | TSB 607 (algorithm not supported by key) | `CKR_MECHANISM_INVALID` |
/// | TSB 612 (invalid payload) | `CKR_DATA_INVALID` |
/// | TSB 614 (operation forbidden), key blocked | `CKR_KEY_FUNCTION_NOT_PERMITTED` |
/// | TSB 651 (request does not exist) | `CKR_FUNCTION_CANCELED` |
/// | other 4xx / TSB 600, 621 | `CKR_GENERAL_ERROR` |
/// | configuration (bad URL, CA file, refused plain http) | `CKR_GENERAL_ERROR` |
/// A rejected credential: the user is not logged in when the credentials come from the
/// configuration, the PIN is wrong when the PIN is the credential.
fn credential_failure(context: CredentialContext) -> CK_RV {
    match context {
        CredentialContext::Configured => CKR_USER_NOT_LOGGED_IN,
        CredentialContext::Pin => CKR_PIN_INCORRECT,
    }
}

pub(crate) fn map_tsb_error(err: &TsbError, context: CredentialContext) -> Error {
    let rv = match &err.kind {
        TsbErrorKind::NotSent(_)
        | TsbErrorKind::Timeout(_)
        | TsbErrorKind::Transport(_)
        | TsbErrorKind::InvalidResponse(_)
        | TsbErrorKind::Refused(_) => CKR_DEVICE_ERROR,
        TsbErrorKind::Config(_) => CKR_GENERAL_ERROR,
        TsbErrorKind::Http { status, .. } => match (err.reason(), status) {
            (Some(TsbReason::MissingApproval), _) => CKR_KEY_FUNCTION_NOT_PERMITTED,
            // Invalid access token or API key, a 45x authorisation failure; any other 401/403
            // (e.g. a missing client certificate) is a credential failure too.
            (
                Some(TsbReason::InvalidToken | TsbReason::InvalidApiKey | TsbReason::NotAuthorized),
                _,
            ) => credential_failure(context),
            (Some(TsbReason::WrongPassword), _) => CKR_PIN_INCORRECT,
            (Some(TsbReason::KeyNotFound), _) => CKR_KEY_HANDLE_INVALID,
            // C_GenerateKeyPair with a CKA_LABEL in use (PKCS#11 v3.0 §5.14).
            (Some(TsbReason::KeyExists), _) => CKR_TEMPLATE_INCONSISTENT,
            (Some(TsbReason::AlgorithmNotSupported), _) => CKR_MECHANISM_INVALID,
            (Some(TsbReason::InvalidPayload), _) => CKR_DATA_INVALID,
            (Some(TsbReason::OperationForbidden), _) => CKR_KEY_FUNCTION_NOT_PERMITTED,
            (Some(TsbReason::RequestNotFound), _) => CKR_FUNCTION_CANCELED,
            (_, 401 | 403) => credential_failure(context),
            (Some(TsbReason::HsmError), _) => CKR_DEVICE_ERROR,
            (_, s) if *s >= 500 => CKR_DEVICE_ERROR,
            (None, 404) if err.tsb_code().is_none() => CKR_KEY_HANDLE_INVALID,
            _ => CKR_GENERAL_ERROR,
        },
    };
    log::warn!(
        "TSB call failed: {} -> {}",
        Net(&err.to_string()),
        rv_name(rv)
    );
    Error {
        logged: true,
        ..Error::new(rv, err.to_string())
    }
}

/// The symbolic name of a return value, for logs.
pub fn rv_name(rv: CK_RV) -> &'static str {
    // Every return value of PKCS#11 v3.0 §5.1 (as cryptoki-sys names them).
    match rv {
        CKR_ACTION_PROHIBITED => "CKR_ACTION_PROHIBITED",
        CKR_AEAD_DECRYPT_FAILED => "CKR_AEAD_DECRYPT_FAILED",
        CKR_ARGUMENTS_BAD => "CKR_ARGUMENTS_BAD",
        CKR_ATTRIBUTE_READ_ONLY => "CKR_ATTRIBUTE_READ_ONLY",
        CKR_ATTRIBUTE_SENSITIVE => "CKR_ATTRIBUTE_SENSITIVE",
        CKR_ATTRIBUTE_TYPE_INVALID => "CKR_ATTRIBUTE_TYPE_INVALID",
        CKR_ATTRIBUTE_VALUE_INVALID => "CKR_ATTRIBUTE_VALUE_INVALID",
        CKR_BUFFER_TOO_SMALL => "CKR_BUFFER_TOO_SMALL",
        CKR_CANCEL => "CKR_CANCEL",
        CKR_CANT_LOCK => "CKR_CANT_LOCK",
        CKR_CRYPTOKI_ALREADY_INITIALIZED => "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        CKR_CRYPTOKI_NOT_INITIALIZED => "CKR_CRYPTOKI_NOT_INITIALIZED",
        CKR_CURVE_NOT_SUPPORTED => "CKR_CURVE_NOT_SUPPORTED",
        CKR_DATA_INVALID => "CKR_DATA_INVALID",
        CKR_DATA_LEN_RANGE => "CKR_DATA_LEN_RANGE",
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_DEVICE_MEMORY => "CKR_DEVICE_MEMORY",
        CKR_DEVICE_REMOVED => "CKR_DEVICE_REMOVED",
        CKR_DOMAIN_PARAMS_INVALID => "CKR_DOMAIN_PARAMS_INVALID",
        CKR_ENCRYPTED_DATA_INVALID => "CKR_ENCRYPTED_DATA_INVALID",
        CKR_ENCRYPTED_DATA_LEN_RANGE => "CKR_ENCRYPTED_DATA_LEN_RANGE",
        CKR_EXCEEDED_MAX_ITERATIONS => "CKR_EXCEEDED_MAX_ITERATIONS",
        CKR_FIPS_SELF_TEST_FAILED => "CKR_FIPS_SELF_TEST_FAILED",
        CKR_FUNCTION_CANCELED => "CKR_FUNCTION_CANCELED",
        CKR_FUNCTION_FAILED => "CKR_FUNCTION_FAILED",
        CKR_FUNCTION_NOT_PARALLEL => "CKR_FUNCTION_NOT_PARALLEL",
        CKR_FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
        CKR_FUNCTION_REJECTED => "CKR_FUNCTION_REJECTED",
        CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
        CKR_HOST_MEMORY => "CKR_HOST_MEMORY",
        CKR_INFORMATION_SENSITIVE => "CKR_INFORMATION_SENSITIVE",
        CKR_KEY_CHANGED => "CKR_KEY_CHANGED",
        CKR_KEY_EXHAUSTED => "CKR_KEY_EXHAUSTED",
        CKR_KEY_FUNCTION_NOT_PERMITTED => "CKR_KEY_FUNCTION_NOT_PERMITTED",
        CKR_KEY_HANDLE_INVALID => "CKR_KEY_HANDLE_INVALID",
        CKR_KEY_INDIGESTIBLE => "CKR_KEY_INDIGESTIBLE",
        CKR_KEY_NEEDED => "CKR_KEY_NEEDED",
        CKR_KEY_NOT_NEEDED => "CKR_KEY_NOT_NEEDED",
        CKR_KEY_NOT_WRAPPABLE => "CKR_KEY_NOT_WRAPPABLE",
        CKR_KEY_SIZE_RANGE => "CKR_KEY_SIZE_RANGE",
        CKR_KEY_TYPE_INCONSISTENT => "CKR_KEY_TYPE_INCONSISTENT",
        CKR_KEY_UNEXTRACTABLE => "CKR_KEY_UNEXTRACTABLE",
        CKR_LIBRARY_LOAD_FAILED => "CKR_LIBRARY_LOAD_FAILED",
        CKR_MECHANISM_INVALID => "CKR_MECHANISM_INVALID",
        CKR_MECHANISM_PARAM_INVALID => "CKR_MECHANISM_PARAM_INVALID",
        CKR_MUTEX_BAD => "CKR_MUTEX_BAD",
        CKR_MUTEX_NOT_LOCKED => "CKR_MUTEX_NOT_LOCKED",
        CKR_NEED_TO_CREATE_THREADS => "CKR_NEED_TO_CREATE_THREADS",
        CKR_NEW_PIN_MODE => "CKR_NEW_PIN_MODE",
        CKR_NEXT_OTP => "CKR_NEXT_OTP",
        CKR_NO_EVENT => "CKR_NO_EVENT",
        CKR_OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
        CKR_OK => "CKR_OK",
        CKR_OPERATION_ACTIVE => "CKR_OPERATION_ACTIVE",
        CKR_OPERATION_CANCEL_FAILED => "CKR_OPERATION_CANCEL_FAILED",
        CKR_OPERATION_NOT_INITIALIZED => "CKR_OPERATION_NOT_INITIALIZED",
        CKR_OPERATION_NOT_VALIDATED => "CKR_OPERATION_NOT_VALIDATED",
        CKR_PARAMETER_SET_NOT_SUPPORTED => "CKR_PARAMETER_SET_NOT_SUPPORTED",
        CKR_PENDING => "CKR_PENDING",
        CKR_PIN_EXPIRED => "CKR_PIN_EXPIRED",
        CKR_PIN_INCORRECT => "CKR_PIN_INCORRECT",
        CKR_PIN_INVALID => "CKR_PIN_INVALID",
        CKR_PIN_LEN_RANGE => "CKR_PIN_LEN_RANGE",
        CKR_PIN_LOCKED => "CKR_PIN_LOCKED",
        CKR_PIN_TOO_WEAK => "CKR_PIN_TOO_WEAK",
        CKR_PUBLIC_KEY_INVALID => "CKR_PUBLIC_KEY_INVALID",
        CKR_RANDOM_NO_RNG => "CKR_RANDOM_NO_RNG",
        CKR_RANDOM_SEED_NOT_SUPPORTED => "CKR_RANDOM_SEED_NOT_SUPPORTED",
        CKR_SAVED_STATE_INVALID => "CKR_SAVED_STATE_INVALID",
        CKR_SEED_RANDOM_REQUIRED => "CKR_SEED_RANDOM_REQUIRED",
        CKR_SESSION_ASYNC_NOT_SUPPORTED => "CKR_SESSION_ASYNC_NOT_SUPPORTED",
        CKR_SESSION_CLOSED => "CKR_SESSION_CLOSED",
        CKR_SESSION_COUNT => "CKR_SESSION_COUNT",
        CKR_SESSION_EXISTS => "CKR_SESSION_EXISTS",
        CKR_SESSION_HANDLE_INVALID => "CKR_SESSION_HANDLE_INVALID",
        CKR_SESSION_PARALLEL_NOT_SUPPORTED => "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
        CKR_SESSION_READ_ONLY => "CKR_SESSION_READ_ONLY",
        CKR_SESSION_READ_ONLY_EXISTS => "CKR_SESSION_READ_ONLY_EXISTS",
        CKR_SESSION_READ_WRITE_SO_EXISTS => "CKR_SESSION_READ_WRITE_SO_EXISTS",
        CKR_SIGNATURE_INVALID => "CKR_SIGNATURE_INVALID",
        CKR_SIGNATURE_LEN_RANGE => "CKR_SIGNATURE_LEN_RANGE",
        CKR_SLOT_ID_INVALID => "CKR_SLOT_ID_INVALID",
        CKR_STATE_UNSAVEABLE => "CKR_STATE_UNSAVEABLE",
        CKR_TEMPLATE_INCOMPLETE => "CKR_TEMPLATE_INCOMPLETE",
        CKR_TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
        CKR_TOKEN_NOT_INITIALIZED => "CKR_TOKEN_NOT_INITIALIZED",
        CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
        CKR_TOKEN_NOT_RECOGNIZED => "CKR_TOKEN_NOT_RECOGNIZED",
        CKR_TOKEN_RESOURCE_EXCEEDED => "CKR_TOKEN_RESOURCE_EXCEEDED",
        CKR_TOKEN_WRITE_PROTECTED => "CKR_TOKEN_WRITE_PROTECTED",
        CKR_UNWRAPPING_KEY_HANDLE_INVALID => "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
        CKR_UNWRAPPING_KEY_SIZE_RANGE => "CKR_UNWRAPPING_KEY_SIZE_RANGE",
        CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT => "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT",
        CKR_USER_ALREADY_LOGGED_IN => "CKR_USER_ALREADY_LOGGED_IN",
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN => "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
        CKR_USER_NOT_LOGGED_IN => "CKR_USER_NOT_LOGGED_IN",
        CKR_USER_PIN_NOT_INITIALIZED => "CKR_USER_PIN_NOT_INITIALIZED",
        CKR_USER_TOO_MANY_TYPES => "CKR_USER_TOO_MANY_TYPES",
        CKR_USER_TYPE_INVALID => "CKR_USER_TYPE_INVALID",
        CKR_WRAPPED_KEY_INVALID => "CKR_WRAPPED_KEY_INVALID",
        CKR_WRAPPED_KEY_LEN_RANGE => "CKR_WRAPPED_KEY_LEN_RANGE",
        CKR_WRAPPING_KEY_HANDLE_INVALID => "CKR_WRAPPING_KEY_HANDLE_INVALID",
        CKR_WRAPPING_KEY_SIZE_RANGE => "CKR_WRAPPING_KEY_SIZE_RANGE",
        CKR_WRAPPING_KEY_TYPE_INCONSISTENT => "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
        rv if rv >= CKR_VENDOR_DEFINED => "CKR_VENDOR_DEFINED",
        _ => "CKR_(unknown)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, code: Option<i64>) -> TsbError {
        TsbError {
            endpoint: "GET /v1/key".into(),
            kind: TsbErrorKind::Http {
                status,
                code,
                reason: None,
                message: None,
            },
        }
    }

    fn rv(e: &TsbError, c: CredentialContext) -> CK_RV {
        map_tsb_error(e, c).code()
    }

    #[test]
    fn every_return_value_has_its_name() {
        for (rv, name) in [
            (CKR_ACTION_PROHIBITED, "CKR_ACTION_PROHIBITED"),
            (CKR_FUNCTION_NOT_PARALLEL, "CKR_FUNCTION_NOT_PARALLEL"),
            (CKR_RANDOM_NO_RNG, "CKR_RANDOM_NO_RNG"),
            (CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"),
            (CKR_OPERATION_CANCEL_FAILED, "CKR_OPERATION_CANCEL_FAILED"),
            (CKR_KEY_INDIGESTIBLE, "CKR_KEY_INDIGESTIBLE"),
            (CKR_OK, "CKR_OK"),
        ] {
            assert_eq!(rv_name(rv), name);
        }
        assert_eq!(rv_name(CKR_VENDOR_DEFINED | 0x42), "CKR_VENDOR_DEFINED");
        assert_eq!(rv_name(0x7777), "CKR_(unknown)");
    }

    #[test]
    fn every_named_return_value_shows_its_own_name() {
        // The whole table of rv_name (PKCS#11 v3.0 §5.1): each constant shows its own name, so a
        // lost or swapped arm shows up here (a lost one would read "CKR_(unknown)").
        macro_rules! names {
            ($($rv:ident),* $(,)?) => {
                [$(($rv, stringify!($rv))),*]
            };
        }
        let table = names![
            CKR_ACTION_PROHIBITED,
            CKR_AEAD_DECRYPT_FAILED,
            CKR_ARGUMENTS_BAD,
            CKR_ATTRIBUTE_READ_ONLY,
            CKR_ATTRIBUTE_SENSITIVE,
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_ATTRIBUTE_VALUE_INVALID,
            CKR_BUFFER_TOO_SMALL,
            CKR_CANCEL,
            CKR_CANT_LOCK,
            CKR_CRYPTOKI_ALREADY_INITIALIZED,
            CKR_CRYPTOKI_NOT_INITIALIZED,
            CKR_CURVE_NOT_SUPPORTED,
            CKR_DATA_INVALID,
            CKR_DATA_LEN_RANGE,
            CKR_DEVICE_ERROR,
            CKR_DEVICE_MEMORY,
            CKR_DEVICE_REMOVED,
            CKR_DOMAIN_PARAMS_INVALID,
            CKR_ENCRYPTED_DATA_INVALID,
            CKR_ENCRYPTED_DATA_LEN_RANGE,
            CKR_EXCEEDED_MAX_ITERATIONS,
            CKR_FIPS_SELF_TEST_FAILED,
            CKR_FUNCTION_CANCELED,
            CKR_FUNCTION_FAILED,
            CKR_FUNCTION_NOT_PARALLEL,
            CKR_FUNCTION_NOT_SUPPORTED,
            CKR_FUNCTION_REJECTED,
            CKR_GENERAL_ERROR,
            CKR_HOST_MEMORY,
            CKR_INFORMATION_SENSITIVE,
            CKR_KEY_CHANGED,
            CKR_KEY_EXHAUSTED,
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            CKR_KEY_HANDLE_INVALID,
            CKR_KEY_INDIGESTIBLE,
            CKR_KEY_NEEDED,
            CKR_KEY_NOT_NEEDED,
            CKR_KEY_NOT_WRAPPABLE,
            CKR_KEY_SIZE_RANGE,
            CKR_KEY_TYPE_INCONSISTENT,
            CKR_KEY_UNEXTRACTABLE,
            CKR_LIBRARY_LOAD_FAILED,
            CKR_MECHANISM_INVALID,
            CKR_MECHANISM_PARAM_INVALID,
            CKR_MUTEX_BAD,
            CKR_MUTEX_NOT_LOCKED,
            CKR_NEED_TO_CREATE_THREADS,
            CKR_NEW_PIN_MODE,
            CKR_NEXT_OTP,
            CKR_NO_EVENT,
            CKR_OBJECT_HANDLE_INVALID,
            CKR_OK,
            CKR_OPERATION_ACTIVE,
            CKR_OPERATION_CANCEL_FAILED,
            CKR_OPERATION_NOT_INITIALIZED,
            CKR_OPERATION_NOT_VALIDATED,
            CKR_PARAMETER_SET_NOT_SUPPORTED,
            CKR_PENDING,
            CKR_PIN_EXPIRED,
            CKR_PIN_INCORRECT,
            CKR_PIN_INVALID,
            CKR_PIN_LEN_RANGE,
            CKR_PIN_LOCKED,
            CKR_PIN_TOO_WEAK,
            CKR_PUBLIC_KEY_INVALID,
            CKR_RANDOM_NO_RNG,
            CKR_RANDOM_SEED_NOT_SUPPORTED,
            CKR_SAVED_STATE_INVALID,
            CKR_SEED_RANDOM_REQUIRED,
            CKR_SESSION_ASYNC_NOT_SUPPORTED,
            CKR_SESSION_CLOSED,
            CKR_SESSION_COUNT,
            CKR_SESSION_EXISTS,
            CKR_SESSION_HANDLE_INVALID,
            CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            CKR_SESSION_READ_ONLY,
            CKR_SESSION_READ_ONLY_EXISTS,
            CKR_SESSION_READ_WRITE_SO_EXISTS,
            CKR_SIGNATURE_INVALID,
            CKR_SIGNATURE_LEN_RANGE,
            CKR_SLOT_ID_INVALID,
            CKR_STATE_UNSAVEABLE,
            CKR_TEMPLATE_INCOMPLETE,
            CKR_TEMPLATE_INCONSISTENT,
            CKR_TOKEN_NOT_INITIALIZED,
            CKR_TOKEN_NOT_PRESENT,
            CKR_TOKEN_NOT_RECOGNIZED,
            CKR_TOKEN_RESOURCE_EXCEEDED,
            CKR_TOKEN_WRITE_PROTECTED,
            CKR_UNWRAPPING_KEY_HANDLE_INVALID,
            CKR_UNWRAPPING_KEY_SIZE_RANGE,
            CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
            CKR_USER_ALREADY_LOGGED_IN,
            CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
            CKR_USER_NOT_LOGGED_IN,
            CKR_USER_PIN_NOT_INITIALIZED,
            CKR_USER_TOO_MANY_TYPES,
            CKR_USER_TYPE_INVALID,
            CKR_WRAPPED_KEY_INVALID,
            CKR_WRAPPED_KEY_LEN_RANGE,
            CKR_WRAPPING_KEY_HANDLE_INVALID,
            CKR_WRAPPING_KEY_SIZE_RANGE,
            CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
        ];
        for (rv, name) in table {
            assert_eq!(rv_name(rv), name, "{rv:#x}");
        }
    }

    #[test]
    fn errors_carry_their_value_message_and_log_state() {
        let e = map_tsb_error(&http(404, Some(650)), CredentialContext::Configured);
        assert!(
            e.was_logged(),
            "the TSB failure is logged where it is mapped"
        );
        assert_eq!(e.code(), CKR_KEY_HANDLE_INVALID);
        assert!(e.message().contains("GET /v1/key"), "{}", e.message());
        let plain = Error::new(CKR_DATA_INVALID, "bad data");
        assert!(!plain.was_logged());
        assert_eq!(plain.to_string(), "bad data (CKR_DATA_INVALID)");
        assert_eq!(plain.needed(), None);
        let r = Error::rv(CKR_SESSION_CLOSED);
        assert_eq!(
            (r.code(), r.message()),
            (CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED")
        );
        let small = Error::buffer_too_small(64);
        assert_eq!(
            (small.code(), small.needed()),
            (CKR_BUFFER_TOO_SMALL, Some(64))
        );
        assert!(!small.was_logged());
        let c: Error = crate::crypto::CryptoError::new("no curve").into();
        assert_eq!((c.code(), c.message()), (CKR_GENERAL_ERROR, "no curve"));
    }

    #[test]
    fn the_table() {
        use CredentialContext::{Configured, Pin};
        let kinds = [
            TsbErrorKind::NotSent("refused".into()),
            TsbErrorKind::Timeout("read".into()),
            TsbErrorKind::Transport("eof".into()),
            TsbErrorKind::InvalidResponse("html".into()),
        ];
        for kind in kinds {
            let e = TsbError {
                endpoint: String::new(),
                kind,
            };
            assert_eq!(rv(&e, Configured), CKR_DEVICE_ERROR);
        }
        let config = TsbError {
            endpoint: String::new(),
            kind: TsbErrorKind::Config("bad".into()),
        };
        assert_eq!(rv(&config, Configured), CKR_GENERAL_ERROR);
        let cases: &[(u16, Option<i64>, CK_RV, CK_RV)] = &[
            (500, Some(701), CKR_DEVICE_ERROR, CKR_DEVICE_ERROR),
            (503, None, CKR_DEVICE_ERROR, CKR_DEVICE_ERROR),
            (502, None, CKR_DEVICE_ERROR, CKR_DEVICE_ERROR),
            (
                400,
                Some(401),
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                CKR_KEY_FUNCTION_NOT_PERMITTED,
            ),
            (401, Some(617), CKR_USER_NOT_LOGGED_IN, CKR_PIN_INCORRECT),
            (401, Some(631), CKR_USER_NOT_LOGGED_IN, CKR_PIN_INCORRECT),
            (401, None, CKR_USER_NOT_LOGGED_IN, CKR_PIN_INCORRECT),
            (403, None, CKR_USER_NOT_LOGGED_IN, CKR_PIN_INCORRECT),
            (403, Some(451), CKR_USER_NOT_LOGGED_IN, CKR_PIN_INCORRECT),
            // A 401 with a code this table does not know (e.g. a missing client certificate).
            (401, Some(632), CKR_USER_NOT_LOGGED_IN, CKR_PIN_INCORRECT),
            (400, Some(620), CKR_PIN_INCORRECT, CKR_PIN_INCORRECT),
            (
                404,
                Some(650),
                CKR_KEY_HANDLE_INVALID,
                CKR_KEY_HANDLE_INVALID,
            ),
            (404, None, CKR_KEY_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID),
            (400, Some(607), CKR_MECHANISM_INVALID, CKR_MECHANISM_INVALID),
            (400, Some(612), CKR_DATA_INVALID, CKR_DATA_INVALID),
            (
                400,
                Some(614),
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                CKR_KEY_FUNCTION_NOT_PERMITTED,
            ),
            (
                403,
                Some(614),
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                CKR_KEY_FUNCTION_NOT_PERMITTED,
            ),
            (404, Some(651), CKR_FUNCTION_CANCELED, CKR_FUNCTION_CANCELED),
            (400, Some(600), CKR_GENERAL_ERROR, CKR_GENERAL_ERROR),
            (400, Some(621), CKR_GENERAL_ERROR, CKR_GENERAL_ERROR),
            (400, None, CKR_GENERAL_ERROR, CKR_GENERAL_ERROR),
        ];
        for &(status, code, configured, pin) in cases {
            let e = http(status, code);
            assert_eq!(rv(&e, Configured), configured, "{status} {code:?}");
            assert_eq!(rv(&e, Pin), pin, "{status} {code:?} (PIN)");
        }
    }
}
