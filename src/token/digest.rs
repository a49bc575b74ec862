//! Message digesting (PKCS#11 v2.40 §5.10), computed locally: `CKM_SHA_1`, `CKM_SHA224`,
//! `CKM_SHA256`, `CKM_SHA384`, `CKM_SHA512`. No TSB call. Java's SunPKCS11 needs these in the
//! mechanism list for RSASSA-PSS.
//!
//! Operation-state rules (§5.2): a size query (NULL output) and `CKR_BUFFER_TOO_SMALL` keep the
//! operation; success or any other error ends it.

use cryptoki_sys::*;

use super::mechanisms::{MechParams, Mechanism};
use super::objects::ObjectRef;
use super::operations::{check_output, DigestOp};
use super::state::Token;
use crate::crypto::{HashAlg, Hasher};
use crate::error::{Error, Result};

/// The digest mechanisms, for `C_GetMechanismList`.
pub(crate) const DIGESTS: &[CK_MECHANISM_TYPE] =
    &[CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512];

fn hash_of(mechanism: CK_MECHANISM_TYPE) -> Option<HashAlg> {
    Some(match mechanism {
        CKM_SHA_1 => HashAlg::Sha1,
        CKM_SHA224 => HashAlg::Sha224,
        CKM_SHA256 => HashAlg::Sha256,
        CKM_SHA384 => HashAlg::Sha384,
        CKM_SHA512 => HashAlg::Sha512,
        _ => return None,
    })
}

/// `C_GetMechanismInfo` of a digest mechanism: no key, `CKF_DIGEST` (software: not `CKF_HW`).
pub(crate) fn digest_info(mechanism: CK_MECHANISM_TYPE) -> Option<CK_MECHANISM_INFO> {
    hash_of(mechanism).map(|_| CK_MECHANISM_INFO {
        ulMinKeySize: 0,
        ulMaxKeySize: 0,
        flags: CKF_DIGEST,
    })
}

/// What `C_Digest` / `C_DigestFinal` produced: the length (size query) or the digest.
#[derive(Debug, PartialEq, Eq)]
pub enum DigestOutput {
    Length(usize),
    Digest(Vec<u8>),
}

impl Token {
    pub fn digest_init(&self, session: CK_SESSION_HANDLE, mechanism: &Mechanism) -> Result<()> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        if ops.digest.is_some() {
            return Err(Error::rv(CKR_OPERATION_ACTIVE));
        }
        let alg = hash_of(mechanism.mechanism).ok_or_else(|| {
            Error::new(
                CKR_MECHANISM_INVALID,
                "not a digest mechanism of this token",
            )
        })?;
        if mechanism.params != MechParams::None {
            return Err(Error::new(
                CKR_MECHANISM_PARAM_INVALID,
                "digest mechanisms take no parameters",
            ));
        }
        ops.digest = Some(DigestOp {
            hasher: Hasher::new(alg),
            multi_part: false,
        });
        Ok(())
    }

    /// Ends the digest operation (after invalid arguments at the C boundary).
    pub fn end_digest(&self, session: CK_SESSION_HANDLE) {
        if let Ok(s) = self.sessions.get(session) {
            s.ops.lock().digest = None;
        }
    }

    /// `C_Digest`. `capacity` is `None` for a size query (NULL output pointer).
    pub fn digest(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        capacity: Option<usize>,
    ) -> Result<DigestOutput> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        const AFTER_UPDATE: &str = "C_Digest after C_DigestUpdate: finish with C_DigestFinal";
        if let Some(n) = check_output(&mut ops.digest, Some(AFTER_UPDATE), capacity)? {
            return Ok(DigestOutput::Length(n));
        }
        let mut op = ops.digest.take().expect("checked above");
        op.hasher.update(data);
        Ok(DigestOutput::Digest(op.hasher.finalize()))
    }

    pub fn digest_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        let op = ops
            .digest
            .as_mut()
            .ok_or_else(|| Error::rv(CKR_OPERATION_NOT_INITIALIZED))?;
        op.multi_part = true;
        op.hasher.update(data);
        Ok(())
    }

    /// `C_DigestKey`: this token's keys are public keys (whose value is not a key attribute
    /// to digest) and sensitive private keys, so any key is `CKR_KEY_INDIGESTIBLE` (§5.10);
    /// like any error, it ends the operation.
    pub fn digest_key(&self, session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> Result<()> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        if ops.digest.is_none() {
            return Err(Error::rv(CKR_OPERATION_NOT_INITIALIZED));
        }
        ops.digest = None;
        match self.object(key) {
            Ok(ObjectRef::Key(..)) => Err(Error::new(
                CKR_KEY_INDIGESTIBLE,
                "the keys of this token cannot be digested",
            )),
            _ => Err(Error::rv(CKR_KEY_HANDLE_INVALID)),
        }
    }

    pub fn digest_final(
        &self,
        session: CK_SESSION_HANDLE,
        capacity: Option<usize>,
    ) -> Result<DigestOutput> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        if let Some(n) = check_output(&mut ops.digest, None, capacity)? {
            return Ok(DigestOutput::Length(n));
        }
        let op = ops.digest.take().expect("checked above");
        Ok(DigestOutput::Digest(op.hasher.finalize()))
    }
}
