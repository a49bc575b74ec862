//! Per-session operation state: object search, signing and verification in progress.

use std::sync::Arc;

use cryptoki_sys::{CKR_OPERATION_NOT_INITIALIZED, CK_OBJECT_HANDLE};

use super::mechanisms::{DataSink, Plan};
use super::objects::KeyObject;
use crate::error::{Error, Result};

/// `C_FindObjectsInit` .. `C_FindObjectsFinal`: the matching handles, taken in chunks.
pub(crate) struct FindOp {
    pub(crate) handles: Vec<CK_OBJECT_HANDLE>,
    pub(crate) next: usize,
}

/// A signing (`C_SignInit` .. `C_Sign` / `C_SignFinal`) or verification (`C_VerifyInit` ..
/// `C_Verify` / `C_VerifyFinal`, done locally with the public key) in progress.
pub(crate) struct KeyOp {
    pub(crate) key: Arc<KeyObject>,
    pub(crate) plan: Plan,
    pub(crate) sink: DataSink,
    /// An update call was made: only further updates and the final call may follow.
    pub(crate) multi_part: bool,
}

pub(crate) type SignOp = KeyOp;
pub(crate) type VerifyOp = KeyOp;

impl KeyOp {
    pub(crate) fn new(key: Arc<KeyObject>, plan: Plan) -> KeyOp {
        KeyOp {
            sink: DataSink::new(plan, &key.public),
            key,
            plan,
            multi_part: false,
        }
    }
}

/// `C_SignUpdate` / `C_VerifyUpdate`: adds a part; an error ends the operation (PKCS#11 v2.40
/// §5.11, §5.13).
pub(crate) fn update(slot: &mut Option<KeyOp>, data: &[u8]) -> Result<()> {
    let op = slot
        .as_mut()
        .ok_or_else(|| Error::rv(CKR_OPERATION_NOT_INITIALIZED))?;
    op.multi_part = true;
    if let Err(e) = op.sink.update(data) {
        *slot = None;
        return Err(e);
    }
    Ok(())
}
