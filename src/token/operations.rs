//! Per-session operation state: object search, signing and verification in progress.

use std::sync::Arc;

use cryptoki_sys::CK_OBJECT_HANDLE;

use super::mechanisms::{DataSink, Plan};
use super::objects::KeyObject;

/// `C_FindObjectsInit` .. `C_FindObjectsFinal`: the matching handles, taken in chunks.
pub struct FindOp {
    pub handles: Vec<CK_OBJECT_HANDLE>,
    pub next: usize,
}

/// `C_SignInit` .. `C_Sign` / `C_SignFinal`.
pub struct SignOp {
    pub key: Arc<KeyObject>,
    pub plan: Plan,
    pub sink: DataSink,
    /// `C_SignUpdate` was called: only `C_SignUpdate`/`C_SignFinal` may follow.
    pub multi_part: bool,
}

/// `C_VerifyInit` .. `C_Verify` / `C_VerifyFinal`, done locally with the public key.
pub struct VerifyOp {
    pub key: Arc<KeyObject>,
    pub plan: Plan,
    pub sink: DataSink,
    pub multi_part: bool,
}
