//! Per-session operation state: object search, signing and verification in progress.

use std::sync::Arc;

use cryptoki_sys::{CKR_FUNCTION_FAILED, CKR_OPERATION_NOT_INITIALIZED, CK_OBJECT_HANDLE};

use super::mechanisms::{DataSink, Plan};
use super::objects::KeyObject;
use crate::crypto::Hasher;
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

impl Staged for KeyOp {
    fn multi_part(&self) -> bool {
        self.multi_part
    }
    fn output_len(&self) -> usize {
        self.key.public.signature_len()
    }
}

/// An operation with a single-part call (`C_Sign`, `C_Digest`) and a final call
/// (`C_SignFinal`, `C_DigestFinal`) that return output of a known length.
pub(crate) trait Staged {
    /// An update call was made: only further updates and the final call may follow.
    fn multi_part(&self) -> bool;
    /// The length of the output (the signature, the digest).
    fn output_len(&self) -> usize;
}

/// What `C_Sign` / `C_SignFinal` / `C_Digest` / `C_DigestFinal` check before they produce
/// anything. `single` is the message for the single-part call made after an update (`None`
/// for the final call). In order:
/// - no operation: `CKR_OPERATION_NOT_INITIALIZED`;
/// - the single-part call after an update: `CKR_FUNCTION_FAILED`, and the operation ends;
/// - a size query (`capacity` `None`): `Ok(Some(length))`; a buffer shorter than the output:
///   `CKR_BUFFER_TOO_SMALL`; both keep the operation (PKCS#11 v2.40 §5.2);
/// - `Ok(None)`: the output fits; the caller takes the operation and finishes it.
pub(crate) fn check_output<T: Staged>(
    slot: &mut Option<T>,
    single: Option<&'static str>,
    capacity: Option<usize>,
) -> Result<Option<usize>> {
    let op = slot
        .as_ref()
        .ok_or_else(|| Error::rv(CKR_OPERATION_NOT_INITIALIZED))?;
    if let Some(message) = single.filter(|_| op.multi_part()) {
        *slot = None;
        return Err(Error::new(CKR_FUNCTION_FAILED, message));
    }
    let needed = op.output_len();
    match capacity {
        None => Ok(Some(needed)),
        Some(c) if c < needed => Err(Error::buffer_too_small(needed)),
        Some(_) => Ok(None),
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

/// A digest in progress (`C_DigestInit` .. `C_Digest` / `C_DigestFinal`).
pub(crate) struct DigestOp {
    pub(super) hasher: Hasher,
    /// `C_DigestUpdate` was called: only further updates and `C_DigestFinal` may follow.
    pub(super) multi_part: bool,
}

impl Staged for DigestOp {
    fn multi_part(&self) -> bool {
        self.multi_part
    }
    fn output_len(&self) -> usize {
        self.hasher.alg().output_len()
    }
}
