//! Signing (PKCS#11 v2.40 §5.11) through the TSB, and verification (§5.13) done locally.
//!
//! The signature length is known from the key, so a size query and `CKR_BUFFER_TOO_SMALL` are
//! answered before any network call and keep the operation active; a TSB request is made only
//! when the caller's buffer can take the result, so an approval request is never filed twice.

use std::sync::Arc;

use cryptoki_sys::*;

use super::mechanisms::Prepared;
use super::mechanisms::{single_part, InputOwned, Mechanism, Plan};
use super::objects::{KeyObject, KeyPart, ObjectRef};
use super::operations::{self, SignOp, VerifyOp};
use super::session::{Session, Signing};
use super::Backend;
use super::{approval, metadata, SignOutput, Token};
use crate::crypto::{check_form, ecdsa_der_to_raw, verify_with, PublicKey};
use crate::error::{map_tsb_error, Error, Result};
use crate::logging::{sanitize, Net};
use crate::tsb::{SignRequest, TsbErrorKind, TsbReason};

impl Token {
    fn key_for(&self, handle: CK_OBJECT_HANDLE, part: KeyPart) -> Result<Arc<KeyObject>> {
        let obj = self
            .object(handle)
            .map_err(|_| Error::rv(CKR_KEY_HANDLE_INVALID))?;
        match obj {
            ObjectRef::Key(k, p) if p == part => Ok(k),
            ObjectRef::Key(..) => Err(Error::new(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                match part {
                    KeyPart::Private => "sign with the private key object",
                    KeyPart::Public => "verify with the public key object",
                },
            )),
            ObjectRef::Certificate(_) => Err(Error::rv(CKR_KEY_HANDLE_INVALID)),
        }
    }

    pub fn sign_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        if ops.sign.is_some() || ops.signing {
            return Err(Error::rv(CKR_OPERATION_ACTIVE));
        }
        let key = self.key_for(key, KeyPart::Private)?;
        if !self.user_may_use_private() {
            return Err(Error::rv(CKR_USER_NOT_LOGGED_IN));
        }
        if key.blocked {
            return Err(Error::new(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                format!("key '{}' is blocked", key.label),
            ));
        }
        let plan = Plan::new(mechanism, key.key_type)?;
        s.cancel.reset();
        ops.sign = Some(SignOp::new(key, plan));
        Ok(())
    }

    /// Ends the signing operation (after invalid arguments at the C boundary).
    pub fn end_sign(&self, session: CK_SESSION_HANDLE) {
        if let Ok(s) = self.sessions.get(session) {
            s.ops.lock().sign = None;
        }
    }

    /// `C_Sign`. `capacity` is `None` for a size query (NULL signature pointer).
    pub fn sign(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        capacity: Option<usize>,
    ) -> Result<SignOutput> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        if ops.signing {
            return Err(busy());
        }
        const AFTER_UPDATE: &str = "C_Sign after C_SignUpdate: finish with C_SignFinal";
        if let Some(n) = operations::check_output(&mut ops.sign, Some(AFTER_UPDATE), capacity)? {
            return Ok(SignOutput::Length(n));
        }
        let op = ops.sign.take().expect("checked above");
        let _signing = Signing::start(&s, &mut ops);
        // The TSB call (and any approval wait) runs without the session's lock.
        drop(ops);
        let input = single_part(op.plan, data)?;
        self.produce(&s, &op, input).map(SignOutput::Signature)
    }

    pub fn sign_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        if ops.signing {
            return Err(busy());
        }
        operations::update(&mut ops.sign, data)
    }

    pub fn sign_final(
        &self,
        session: CK_SESSION_HANDLE,
        capacity: Option<usize>,
    ) -> Result<SignOutput> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        if ops.signing {
            return Err(busy());
        }
        if let Some(n) = operations::check_output(&mut ops.sign, None, capacity)? {
            return Ok(SignOutput::Length(n));
        }
        let mut op = ops.sign.take().expect("checked above");
        let _signing = Signing::start(&s, &mut ops);
        drop(ops);
        let input = op.sink.finish();
        self.produce(&s, &op, input).map(SignOutput::Signature)
    }

    /// Makes one signature: one TSB sign call (synchronous, or an approval request and its
    /// wait), DER→r‖s for ECDSA, and a local check against the public key captured at
    /// `C_SignInit` (never one fetched later): a returned signature verifies under the key the
    /// operation's handle named.
    fn produce(&self, session: &Arc<Session>, op: &SignOp, input: InputOwned) -> Result<Vec<u8>> {
        let key = &op.key;
        // The handle was invalidated since C_SignInit (the key is gone, or another key is behind
        // its label): nothing is signed with whatever the label names now.
        if !self.objects.still_names(key) {
            return Err(replaced(&key.label));
        }
        let prepared = op.plan.prepare(input.as_input(), &key.public)?;
        // An LMS key the TSB reported as used up: PKCS#11 v3.1 CKR_KEY_EXHAUSTED, no TSB call
        // (the count only goes down, so a cached 0 is still true).
        if matches!(key.public, PublicKey::Hss(_)) && key.remaining_signatures == Some(0) {
            return Err(exhausted(&key.label));
        }
        let mut request = SignRequest {
            key: key.label.clone(),
            algorithm: prepared.algorithm.clone(),
            payload: prepared.payload.clone(),
            signature_type: None,
            key_password: self.key_password(&key.label),
            meta_data: None,
            meta_data_signature: None,
            context: prepared.context.clone(),
        };
        let client = self.client()?;
        // Every signature is checked against the key the HANDLE names (`op.key`), never a key
        // the TSB's answer might name: its form always, the signature itself with
        // verifySignatures (PKCS#11 v2.40 §5.11: C_Sign returns the signature of the data).
        // Without verifySignatures, a signature is still verified where its answer could be
        // another request's: one that came over a reused kept-alive connection (a late or
        // extra answer that arrived just after the connection was checked looks exactly like
        // this request's), and the result of an approval request (read by polling). Only the
        // first answer on a new connection is provably this request's.
        // Post-quantum signatures are always verified: their form says little (no range check
        // like RSA's or ECDSA's), and a stateful LMS key must never hand out a signature that
        // is not its own.
        let verify = self.config.pkcs11.verify_signatures || key.public.is_post_quantum();
        let check =
            |raw: &[u8], reused: bool| accept_signature(key, &prepared, verify || reused, raw);
        let refused = |reason: &str| {
            // A signature that does not fit the captured key may mean another key is behind
            // the label now: then the handle is invalid (and the change logged once).
            if self.key_was_replaced(key) {
                return replaced(&key.label);
            }
            log::error!(
                "signature from the TSB for key '{}' ({}) refused: {reason}; not returned",
                Net(&key.label),
                prepared.algorithm
            );
            Error::new(CKR_DEVICE_ERROR, "the TSB's signature was refused")
        };
        if key.needs_approval {
            let raw = self.sign_with_approval(&client, session, key, &mut request)?;
            return check(&raw, true).map_err(|r| refused(&r));
        }
        let mut renamed = false;
        loop {
            let e = match client.sign_synchronous(&request, &check) {
                Ok(sig) => return Ok(sig),
                Err(e) => e,
            };
            return match &e.kind {
                TsbErrorKind::Refused(reason) => Err(refused(reason)),
                // The key gained an approval policy since its attributes were cached.
                _ if e.reason() == Some(TsbReason::MissingApproval) => {
                    log::info!(
                        "key '{}' needs approvals now: filing an approval request",
                        Net(&key.label)
                    );
                    self.objects.invalidate_list();
                    let raw = self.sign_with_approval(&client, session, key, &mut request)?;
                    check(&raw, true).map_err(|r| refused(&r))
                }
                _ => {
                    // A TSB that knows the post-quantum algorithms by their newer names
                    // (`ML_DSA`, `SLH_DSA`): the refused request signed nothing, so it is sent
                    // once more under that name (docs/tsb-api.md, "Post-quantum keys").
                    if let Some(newer) = newer_pqc_name(&request.algorithm) {
                        if !renamed && name_refused(&e) {
                            log::info!(
                                "the TSB refused signatureAlgorithm {}: trying {newer}",
                                request.algorithm
                            );
                            request.algorithm = newer.to_string();
                            renamed = true;
                            continue;
                        }
                    }
                    Err(self.pqc_sign_error(key, &request, &e))
                }
            };
        }
    }

    /// The error of a failed sign: for post-quantum keys, an exhausted LMS key is
    /// `CKR_KEY_EXHAUSTED` (PKCS#11 v3.1) and a refused `context` `CKR_MECHANISM_PARAM_INVALID`
    /// (never dropped and signed without); otherwise as for every key.
    fn pqc_sign_error(
        &self,
        key: &KeyObject,
        request: &SignRequest,
        e: &crate::tsb::TsbError,
    ) -> Error {
        if matches!(key.public, PublicKey::Hss(_)) && lms_exhausted(e) {
            log::warn!(
                "TSB call failed: {} -> CKR_KEY_EXHAUSTED",
                Net(&e.to_string())
            );
            self.objects.invalidate_list();
            return exhausted(&key.label);
        }
        if request.context.is_some()
            && matches!(
                e.reason(),
                Some(TsbReason::ValidationFailed | TsbReason::InvalidJson)
            )
        {
            log::warn!(
                "TSB call failed: {} -> CKR_MECHANISM_PARAM_INVALID (the signature context was \
                 refused; it is never dropped)",
                Net(&e.to_string())
            );
            return Error::new(
                CKR_MECHANISM_PARAM_INVALID,
                "the TSB refused the signature context",
            );
        }
        self.sign_error(&key.label, e)
    }

    /// After a signature that does not fit the captured key: whether the TSB now has another
    /// key (or none) behind the label. Fetches the key's attributes again (which gives the new
    /// key new handles and logs the change once); a failed fetch says nothing.
    fn key_was_replaced(&self, key: &KeyObject) -> bool {
        match self.fetch_key(&key.label) {
            Ok(Some(now)) => now.identity != key.identity,
            Ok(None) => !self.objects.still_names(key),
            Err(e) => {
                log::debug!(
                    "key '{}' could not be read again after a wrong signature: {e}",
                    Net(&key.label)
                );
                false
            }
        }
    }

    fn sign_error(&self, label: &str, e: &crate::tsb::TsbError) -> Error {
        if e.reason() == Some(TsbReason::KeyNotFound) {
            self.objects.store_gone(label);
        }
        map_tsb_error(e, self.credential_context())
    }

    fn sign_with_approval(
        &self,
        client: &Arc<dyn Backend>,
        session: &Arc<Session>,
        key: &KeyObject,
        request: &mut SignRequest,
    ) -> Result<Vec<u8>> {
        // A C_SessionCancel (or close) that came while this session was busy: file nothing.
        if let Some(reason) = session.cancel.check() {
            return Err(reason.error());
        }
        let (meta, meta_sig) = metadata::build(&self.config, &key.label, &request.algorithm);
        request.meta_data = Some(meta);
        request.meta_data_signature = meta_sig;
        let id = client
            .sign_asynchronous(request)
            .map_err(|e| self.sign_error(&key.label, &e))?;
        let journal = crate::journal::setting(&self.config.pkcs11);
        crate::journal::filed(
            &journal,
            self.config.rest_api(),
            &id,
            &key.label,
            &request.algorithm,
        );
        // How long to wait: approvalTimeoutSecs, else as long as the TSB keeps the request.
        let (limit, why) = approval::wait_limit(&self.config.pkcs11, key.request_lifetime);
        log::info!(
            target: crate::logging::WAIT_TARGET,
            "approval request {} filed for key '{}' ({}): waiting for approvals ({}) for up to \
             {}s ({why})",
            Net(&id),
            Net(&key.label),
            request.algorithm,
            if key.approvers.is_empty() {
                "per policy".to_string()
            } else {
                sanitize(&key.approvers)
            },
            limit.as_secs()
        );
        let started = std::time::Instant::now();
        let result = approval::wait(
            client,
            &id,
            &key.label,
            &self.config.pkcs11,
            limit,
            session,
            self.may_spawn_threads,
        );
        // The one line that closes the one above, whatever the way out.
        let secs = started.elapsed().as_secs_f32();
        match &result {
            Ok(_) => log::info!(
                target: crate::logging::WAIT_TARGET,
                "approval request {} for key '{}' ended after {secs:.1}s: approved, signature returned",
                Net(&id),
                Net(&key.label)
            ),
            Err(e) => log::info!(
                target: crate::logging::WAIT_TARGET,
                "approval request {} for key '{}' ended after {secs:.1}s: {e}",
                Net(&id),
                Net(&key.label)
            ),
        }
        result
    }

    // ----- verification, local (§5.13) -----

    pub fn verify_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        if ops.verify.is_some() {
            return Err(Error::rv(CKR_OPERATION_ACTIVE));
        }
        let key = self.key_for(key, KeyPart::Public)?;
        let plan = Plan::new(mechanism, key.key_type)?;
        ops.verify = Some(VerifyOp::new(key, plan));
        Ok(())
    }

    /// Ends the verification operation (after invalid arguments at the C boundary: PKCS#11
    /// v3.0 §5.15, a call to `C_Verify` or `C_VerifyFinal` always terminates the operation, and
    /// a `C_VerifyUpdate` that fails terminates it, as for signing, §5.13).
    pub fn end_verify(&self, session: CK_SESSION_HANDLE) {
        if let Ok(s) = self.sessions.get(session) {
            s.ops.lock().verify = None;
        }
    }

    pub fn verify(&self, session: CK_SESSION_HANDLE, data: &[u8], signature: &[u8]) -> Result<()> {
        let s = self.sessions.get(session)?;
        let op = s
            .ops
            .lock()
            .verify
            .take()
            .ok_or_else(|| Error::rv(CKR_OPERATION_NOT_INITIALIZED))?;
        if op.multi_part {
            return Err(Error::new(
                CKR_FUNCTION_FAILED,
                "C_Verify after C_VerifyUpdate: finish with C_VerifyFinal",
            ));
        }
        check_signature(&op, single_part(op.plan, data)?, signature)
    }

    pub fn verify_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        operations::update(&mut ops.verify, data)
    }

    pub fn verify_final(&self, session: CK_SESSION_HANDLE, signature: &[u8]) -> Result<()> {
        let s = self.sessions.get(session)?;
        let mut op = s
            .ops
            .lock()
            .verify
            .take()
            .ok_or_else(|| Error::rv(CKR_OPERATION_NOT_INITIALIZED))?;
        let input = op.sink.finish();
        check_signature(&op, input, signature)
    }
}

/// The key an operation was initialised with is no longer what its handle names. PKCS#11 v3.0
/// §5.1.6 (`CKR_KEY_HANDLE_INVALID`: "the specified key handle is not valid"): the handle given
/// to `C_SignInit` is invalid now, and the operation ends without a signature.
fn replaced(label: &str) -> Error {
    Error::new(
        CKR_KEY_HANDLE_INVALID,
        format!(
            "the key handle of this operation is no longer valid: key '{}' is gone or was replaced on the TSB",
            crate::logging::sanitize(label)
        ),
    )
}

/// PKCS#11 v3.1 (§5.1.6 return values, `CKR_KEY_EXHAUSTED`): the LMS key has no one-time
/// signature left.
fn exhausted(label: &str) -> Error {
    Error::new(
        CKR_KEY_EXHAUSTED,
        format!(
            "LMS key '{}' is exhausted: no one-time signature left",
            crate::logging::sanitize(label)
        ),
    )
}

/// Whether a failed LMS sign says the key is used up: the TSB's HSM error (701) naming it
/// exhausted, or 614 (operation forbidden for the key), docs/tsb-api.md.
fn lms_exhausted(e: &crate::tsb::TsbError) -> bool {
    match e.reason() {
        Some(TsbReason::OperationForbidden) => true,
        Some(TsbReason::HsmError) => e.to_string().to_ascii_lowercase().contains("exhaust"),
        _ => false,
    }
}

/// The newer TSB name of a post-quantum `signatureAlgorithm` (`DILITHIUM` → `ML_DSA`,
/// `SPHINCS_PLUS` → `SLH_DSA`), tried once when a TSB refuses the documented one.
fn newer_pqc_name(algorithm: &str) -> Option<&'static str> {
    match algorithm {
        super::mechanisms::TSB_ML_DSA => Some("ML_DSA"),
        super::mechanisms::TSB_SLH_DSA => Some("SLH_DSA"),
        _ => None,
    }
}

/// A 400 that may mean "unknown signatureAlgorithm name": validation failed (600), invalid JSON
/// (621, an unknown enum value) or algorithm not supported by the key (607).
fn name_refused(e: &crate::tsb::TsbError) -> bool {
    matches!(
        e.reason(),
        Some(
            TsbReason::ValidationFailed | TsbReason::InvalidJson | TsbReason::AlgorithmNotSupported
        )
    )
}

/// Another thread's `C_Sign` / `C_SignFinal` of this session is still running (PKCS#11
/// v2.40 §5.1.6: `CKR_OPERATION_ACTIVE`, an active operation prevents the call).
fn busy() -> Error {
    Error::new(
        CKR_OPERATION_ACTIVE,
        "a signature of this session is still in progress",
    )
}

/// The signature to return for the TSB's answer `raw`, or why it is refused: ECDSA DER made
/// fixed-width r‖s (newer TSBs can answer r‖s already), then the form of a signature by `key`
/// (length; RSA below the modulus, ECDSA r and s in [1, n-1], Ed25519 S below the group
/// order), and with `verify` the signature itself over the signed data.
fn accept_signature(
    key: &KeyObject,
    prepared: &Prepared,
    verify: bool,
    raw: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let signature = match &key.public {
        PublicKey::Ec { curve, .. } => match ecdsa_der_to_raw(raw, *curve) {
            Ok(s) => s,
            Err(_) if raw.len() == 2 * curve.field_bytes() => raw.to_vec(),
            Err(e) => return Err(format!("malformed ECDSA signature ({e})")),
        },
        // A one-level key's signature may come as a bare LMS signature (RFC 8554 §5.4): made
        // the HSS signature CKM_HSS returns (RFC 8554 §6.2).
        PublicKey::Hss(h) => h.normalise_signature(raw),
        _ => raw.to_vec(),
    };
    check_form(&key.public, &signature).map_err(|e| format!("not a signature by this key: {e}"))?;
    if verify {
        verify_with(
            key.prepared(),
            &key.public,
            &prepared.scheme,
            prepared.signed_data(),
            &signature,
        )
        .map_err(|e| format!("does not verify: {e}"))?;
    }
    Ok(signature)
}

fn check_signature(op: &VerifyOp, input: InputOwned, signature: &[u8]) -> Result<()> {
    if signature.len() != op.key.public.signature_len() {
        return Err(Error::rv(CKR_SIGNATURE_LEN_RANGE));
    }
    let prepared = op.plan.prepare(input.as_input(), &op.key.public)?;
    verify_with(
        op.key.prepared(),
        &op.key.public,
        &prepared.scheme,
        prepared.signed_data(),
        signature,
    )
    .map_err(|e| Error::new(CKR_SIGNATURE_INVALID, e.to_string()))
}
