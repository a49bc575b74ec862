//! The PKCS#11 core: one slot holding one token whose objects are the TSB's keys. It knows
//! PKCS#11 semantics but no raw pointers; the FFI layer converts, and tests call it directly.

pub(crate) mod approval;
pub mod attributes;
pub(crate) mod mechanisms;
pub(crate) mod metadata;
pub mod objects;
pub(crate) mod operations;
pub mod session;

mod backend;
mod certificates;
mod digest;
mod keygen;
mod keys;
mod modify;
mod session_keys;
mod signing;
mod state;
mod template;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cryptoki_sys::*;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::config::{Config, PinIs, Secret};
use crate::error::{map_tsb_error, CredentialContext, Error, Result};
use attributes::AttrValue;
pub(crate) use backend::{Backend, BackendFactory};
use objects::ObjectStore;
use operations::FindOp;
use session::{CancelReason, SessionTable, Surrender};

pub use digest::DigestOutput;
pub use mechanisms::{MechParams, Mechanism};
pub use state::Token;
pub(crate) use state::FINALIZE_BOUND;
use state::{ClientCell, Login};

/// The one slot's ID.
pub const SLOT_ID: CK_SLOT_ID = 0;

/// Text fields of the slot and token, blank-padded by the FFI layer.
pub const MANUFACTURER: &str = "Securosys TSB via tsb-pkcs11";
pub const MODEL: &str = "TSB REST";

/// What `C_Sign`/`C_SignFinal` produced: the length (size query) or the signature.
#[derive(Debug, PartialEq, Eq)]
pub enum SignOutput {
    Length(usize),
    Signature(Vec<u8>),
}

impl Token {
    /// Builds the token from a configuration. No network I/O (PKCS#11 `C_Initialize` must not
    /// block on a remote service).
    pub fn new(config: Config, may_spawn_threads: bool) -> Result<Token> {
        Token::with_backend(
            config,
            may_spawn_threads,
            backend::tsb_factory(may_spawn_threads),
        )
    }

    /// Builds the token over the backends `factory` makes (the core tests pass a fake).
    pub(crate) fn with_backend(
        config: Config,
        may_spawn_threads: bool,
        factory: BackendFactory,
    ) -> Result<Token> {
        let client = factory(&config)
            .map_err(|e| Error::new(CKR_GENERAL_ERROR, format!("config {}: {e}", config.source)))?;
        // CK_TOKEN_INFO.serialNumber (PKCS#11 v3.0 §5.5): `pkcs11.tokenSerial`, else 16 hex
        // digits of the SHA-256 of the first TSB URL (stable for one TSB).
        let serial = match &config.pkcs11.token_serial {
            Some(serial) => serial.clone(),
            None => {
                let digest = Sha256::digest(config.rest_api().as_bytes());
                hex::encode_upper(&digest[..8])
            }
        };
        let token = Token {
            objects: ObjectStore::new(config.pkcs11.cache_ttl),
            config: Arc::new(config),
            client: Mutex::new(ClientCell {
                pid: std::process::id(),
                client,
            }),
            factory,
            sessions: SessionTable::default(),
            session_keys: state::SessionKeys::default(),
            login: Mutex::new(Login::default()),
            serial,
            may_spawn_threads,
            pin_failed: AtomicBool::new(false),
        };
        token.load_configured_chains();
        token.register_secrets();
        Ok(token)
    }

    /// The configuration's secrets are never shown in a log line, not even when the TSB
    /// echoes them back in a label, request id or message ([`crate::logging::Net`]).
    fn register_secrets(&self) {
        let c = &self.config;
        let keys = &c.api_keys;
        let all = c
            .token
            .iter()
            .chain(keys.key_management.iter())
            .chain(keys.key_operation.iter())
            .chain(keys.service.iter())
            .chain(c.pkcs11.key_passwords.values())
            .chain(c.application_key_pair.iter().map(|k| &k.private_key));
        crate::logging::register_secrets(all.map(Secret::expose));
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The TSB client for this process (rebuilt after a fork).
    pub fn client(&self) -> Result<Arc<dyn Backend>> {
        let pid = std::process::id();
        let mut cell = self.client.lock();
        if cell.pid != pid {
            let fresh = (self.factory)(&self.config)
                .map_err(|e| map_tsb_error(&e, CredentialContext::Configured))?;
            // The login carries over: the parent's client (a copy in this process) has it.
            let (bearer, operation_key) = cell.client.login_credentials();
            fresh.set_login_bearer(bearer);
            fresh.set_login_operation_key(operation_key);
            let parent = std::mem::replace(&mut cell.client, fresh);
            // The parent's pooled connections are shared sockets: never use or close them here.
            std::mem::forget(parent);
            cell.pid = pid;
            log::debug!("new process {pid} after fork: fresh TSB client");
        }
        Ok(cell.client.clone())
    }

    /// `C_Finalize`: ends every session (threads waiting in them return promptly), deletes
    /// the temporary keys of session key pairs, and waits for helper threads, all within
    /// [`FINALIZE_BOUND`]. A helper thread still running after that (a TSB call that hangs)
    /// holds only its own copies (the client, the request id, the journal setting): the module
    /// is pinned in memory (`RTLD_NODELETE`), and a later `C_Initialize` builds a new token
    /// that shares nothing with it.
    pub fn finalize(&self) {
        let deadline = Instant::now() + FINALIZE_BOUND;
        self.sessions.close_all(CancelReason::Finalized);
        self.delete_all_session_keys(Some(deadline), "C_Finalize");
        let left =
            approval::wait_for_background(deadline.saturating_duration_since(Instant::now()));
        if left > 0 {
            log::warn!(
                "C_Finalize: {left} TSB request(s) still running after {} ms; they end on their \
                 own within requestTimeoutMs",
                FINALIZE_BOUND.as_millis()
            );
        }
    }

    fn check_slot(slot: CK_SLOT_ID) -> Result<()> {
        if slot == SLOT_ID {
            Ok(())
        } else {
            Err(Error::rv(CKR_SLOT_ID_INVALID))
        }
    }

    // ----- slot and token (PKCS#11 v2.40 §5.5) -----

    pub fn slot_description(&self) -> String {
        format!("Securosys TSB at {}", self.config.rest_api())
    }

    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<CK_FLAGS> {
        Self::check_slot(slot)?;
        Ok(CKF_TOKEN_PRESENT)
    }

    pub fn token_label(&self) -> &str {
        &self.config.pkcs11.token_label
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Token flags and session counts for `C_GetTokenInfo`: (flags, sessions, rw sessions).
    /// Not `CKF_WRITE_PROTECTED`: certificates can be stored on the TSB (`C_CreateObject`).
    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<(CK_FLAGS, usize, usize)> {
        Self::check_slot(slot)?;
        let mut flags = CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED;
        if self.config.pkcs11.pin_is != PinIs::None {
            flags |= CKF_LOGIN_REQUIRED;
            // PKCS#11 v2.40 §5.5 (CK_TOKEN_INFO): "an incorrect user login PIN has been entered
            // at least once since the last successful authentication".
            if self.pin_failed.load(Ordering::Relaxed) {
                flags |= CKF_USER_PIN_COUNT_LOW;
            }
        }
        let (all, rw) = self.sessions.count();
        Ok((flags, all, rw))
    }

    /// The signing mechanisms, then the digests, then the key-pair generations.
    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        Self::check_slot(slot)?;
        Ok([
            mechanisms::SUPPORTED,
            digest::DIGESTS,
            keygen::KEYGEN_MECHANISMS.as_slice(),
        ]
        .concat())
    }

    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mechanism: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO> {
        Self::check_slot(slot)?;
        mechanisms::mechanism_info(mechanism)
            .or_else(|| digest::digest_info(mechanism))
            .or_else(|| keygen::keygen_mechanism_info(mechanism))
            .ok_or_else(|| Error::rv(CKR_MECHANISM_INVALID))
    }

    // ----- sessions (§5.6) -----

    pub fn open_session(
        &self,
        slot: CK_SLOT_ID,
        flags: CK_FLAGS,
        surrender: Option<Surrender>,
    ) -> Result<CK_SESSION_HANDLE> {
        Self::check_slot(slot)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::rv(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
        }
        // Read-write sessions may create and destroy certificate objects (§5.6.1, §5.7.1).
        Ok(self.sessions.open(flags & CKF_RW_SESSION != 0, surrender))
    }

    /// `C_CloseSession` (§5.6): the session's objects go with it, so the temporary keys of the
    /// session key pairs it generated are deleted on the TSB.
    pub fn close_session(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        self.sessions.close(session)?;
        self.delete_keys_of_session(session);
        Ok(())
    }

    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        Self::check_slot(slot)?;
        self.sessions.close_all(CancelReason::SessionClosed);
        self.delete_all_session_keys(None, "C_CloseAllSessions");
        Ok(())
    }

    /// `C_GetSessionInfo`: (state, flags).
    pub fn session_info(&self, session: CK_SESSION_HANDLE) -> Result<(CK_STATE, CK_FLAGS)> {
        let s = self.sessions.get(session)?;
        let user = self.login.lock().logged_in;
        let state = match (s.read_write, user) {
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        };
        let mut flags = CKF_SERIAL_SESSION;
        if s.read_write {
            flags |= CKF_RW_SESSION;
        }
        Ok((state, flags))
    }

    /// `C_SessionCancel` (PKCS#11 3.0 §5.6): ends the session's operations named by `flags`;
    /// a thread waiting for approvals in `C_Sign` returns `CKR_FUNCTION_CANCELED` promptly.
    pub fn session_cancel(&self, session: CK_SESSION_HANDLE, flags: CK_FLAGS) -> Result<()> {
        let s = self.sessions.get(session)?;
        if flags & (CKF_SIGN | CKF_VERIFY | CKF_FIND_OBJECTS | CKF_DIGEST) == 0 {
            return Ok(());
        }
        let mut ops = s.ops.lock();
        if flags & CKF_DIGEST != 0 {
            ops.digest = None;
        }
        if flags & CKF_SIGN != 0 {
            ops.sign = None;
            // A signature call is at the TSB (its operation already taken out): wake its wait;
            // it cancels the approval request and returns CKR_FUNCTION_CANCELED.
            if ops.signing {
                s.cancel.trigger(CancelReason::Cancelled);
            }
        }
        if flags & CKF_VERIFY != 0 {
            ops.verify = None;
        }
        if flags & CKF_FIND_OBJECTS != 0 {
            ops.find = None;
        }
        Ok(())
    }

    /// `C_SeedRandom` / `C_GenerateRandom` (PKCS#11 v2.40 §5.15): `CKR_RANDOM_NO_RNG` once the
    /// session and arguments are checked (the token info has no `CKF_RNG`).
    pub fn random(&self, session: CK_SESSION_HANDLE, arguments_ok: bool) -> Result<()> {
        self.sessions.get(session)?;
        if !arguments_ok {
            return Err(Error::new(CKR_ARGUMENTS_BAD, "NULL buffer with a length"));
        }
        Err(Error::new(
            CKR_RANDOM_NO_RNG,
            "this token has no random number generator",
        ))
    }

    // ----- login (§5.7) -----

    fn credential_context(&self) -> CredentialContext {
        match self.config.pkcs11.pin_is {
            PinIs::Token | PinIs::ApiKey => CredentialContext::Pin,
            _ => CredentialContext::Configured,
        }
    }

    pub fn login(&self, session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        let s = self.sessions.get(session)?;
        match user {
            CKU_USER => {}
            CKU_CONTEXT_SPECIFIC => {
                // PKCS#11 v2.40 §5.6 (C_Login): CKU_CONTEXT_SPECIFIC authorises the operation
                // just initialised in this session; without one there is nothing to authorise.
                let ops = s.ops.lock();
                if ops.sign.is_none() && !ops.signing && ops.verify.is_none() {
                    return Err(Error::new(
                        CKR_OPERATION_NOT_INITIALIZED,
                        "CKU_CONTEXT_SPECIFIC needs an active operation in the session",
                    ));
                }
                drop(ops);
                return if self.login.lock().logged_in {
                    Ok(())
                } else {
                    Err(Error::rv(CKR_USER_NOT_LOGGED_IN))
                };
            }
            CKU_SO => {
                // The session-state rules of PKCS#11 v2.40 §5.6 (C_Login) come first: an SO
                // cannot log in while a read-only session exists, nor while the user is.
                if self.sessions.any_read_only() {
                    return Err(Error::rv(CKR_SESSION_READ_ONLY_EXISTS));
                }
                if self.login.lock().logged_in {
                    return Err(Error::rv(CKR_USER_ANOTHER_ALREADY_LOGGED_IN));
                }
                // CKU_SO is a valid user type (§3.2, so not CKR_USER_TYPE_INVALID, which §5.1
                // reserves for values other than CKU_SO, CKU_USER and CKU_CONTEXT_SPECIFIC), but
                // this token has no SO PIN: no PIN matches it, which is CKR_PIN_INCORRECT
                // ("the specified PIN does not match the PIN stored on the token", §5.1).
                return Err(Error::new(
                    CKR_PIN_INCORRECT,
                    "this token has no security officer",
                ));
            }
            _ => return Err(Error::rv(CKR_USER_TYPE_INVALID)),
        }
        if self.login.lock().logged_in {
            return Err(Error::rv(CKR_USER_ALREADY_LOGGED_IN));
        }
        let result = self.user_login(pin);
        match &result {
            Ok(()) => self.pin_failed.store(false, Ordering::Relaxed),
            Err(e) if e.code() == CKR_PIN_INCORRECT => {
                self.pin_failed.store(true, Ordering::Relaxed)
            }
            Err(_) => {}
        }
        result
    }

    /// Checks the user PIN as `pinIs` says and logs the user in.
    fn user_login(&self, pin: &[u8]) -> Result<()> {
        let pin = std::str::from_utf8(pin)
            .map_err(|_| Error::new(CKR_PIN_INCORRECT, "the PIN is not UTF-8"))?;
        let secret = Secret::new(pin.to_string());
        // A PIN that is a credential (a JWT, an API key, a key password) is a secret too.
        if self.config.pkcs11.pin_is != PinIs::None {
            crate::logging::register_secrets([secret.expose()]);
        }
        let mut state = Login {
            logged_in: true,
            ..Login::default()
        };
        let client = self.client()?;
        match self.config.pkcs11.pin_is {
            PinIs::None => {}
            PinIs::Token => {
                client
                    .check_bearer(&secret)
                    .map_err(|e| map_tsb_error(&e, CredentialContext::Pin))?;
                client.set_login_bearer(Some(secret));
            }
            PinIs::ApiKey => {
                client
                    .check_operation_api_key(&secret)
                    .map_err(|e| map_tsb_error(&e, CredentialContext::Pin))?;
                client.set_login_operation_key(Some(secret));
            }
            PinIs::KeyPassword => {
                self.check_key_password(client.as_ref(), &secret)?;
                state.key_password = Some(secret);
                // Keys a search before the login left out for want of a password open now.
                self.objects.forget_skipped();
            }
        }
        *self.login.lock() = state;
        Ok(())
    }

    pub fn logout(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        self.sessions.get(session)?;
        let mut login = self.login.lock();
        if !login.logged_in {
            return Err(Error::rv(CKR_USER_NOT_LOGGED_IN));
        }
        *login = Login::default();
        drop(login);
        let client = self.client()?;
        client.set_login_bearer(None);
        client.set_login_operation_key(None);
        Ok(())
    }

    /// True when private keys need a login to be seen and used.
    fn private_objects(&self) -> bool {
        self.config.pkcs11.pin_is != PinIs::None
    }

    fn user_may_use_private(&self) -> bool {
        !self.private_objects() || self.login.lock().logged_in
    }

    // ----- objects (§5.8) -----

    pub fn find_objects_init(
        &self,
        session: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<()> {
        let s = self.sessions.get(session)?;
        if s.ops.lock().find.is_some() {
            return Err(Error::rv(CKR_OPERATION_ACTIVE));
        }
        let candidates = self.candidates(template)?;
        let private_ok = self.user_may_use_private();
        let private_objects = self.private_objects();
        let mut handles = Vec::new();
        // A set beside the list keeps the order and makes the de-duplication linear: a full
        // listing of 10,000 keys would otherwise compare every handle with every other.
        let mut seen = std::collections::HashSet::new();
        for obj in candidates {
            if (obj.class() == CKO_PRIVATE_KEY && !private_ok) || self.hidden(&obj) {
                continue;
            }
            let matches = template.iter().all(|(t, v)| {
                matches!(self.attribute(&obj, *t, private_objects), AttrValue::Bytes(b) if b == *v)
            });
            if matches && seen.insert(obj.handle()) {
                handles.push(obj.handle());
            }
        }
        let mut ops = s.ops.lock();
        if ops.find.is_some() {
            return Err(Error::rv(CKR_OPERATION_ACTIVE));
        }
        ops.find = Some(FindOp { handles, next: 0 });
        Ok(())
    }

    pub fn find_objects(
        &self,
        session: CK_SESSION_HANDLE,
        max: usize,
    ) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        let find = ops
            .find
            .as_mut()
            .ok_or_else(|| Error::rv(CKR_OPERATION_NOT_INITIALIZED))?;
        let end = find.next.saturating_add(max).min(find.handles.len());
        let out = find.handles[find.next..end].to_vec();
        find.next = end;
        Ok(out)
    }

    pub fn find_objects_final(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.sessions.get(session)?;
        let mut ops = s.ops.lock();
        if ops.find.take().is_none() {
            return Err(Error::rv(CKR_OPERATION_NOT_INITIALIZED));
        }
        Ok(())
    }

    /// `C_GetAttributeValue`: one answer per requested attribute.
    pub fn attribute_values(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<AttrValue>> {
        self.sessions.get(session)?;
        let obj = self.object(object)?;
        if obj.class() == CKO_PRIVATE_KEY && !self.user_may_use_private() {
            return Err(Error::rv(CKR_OBJECT_HANDLE_INVALID));
        }
        let private_objects = self.private_objects();
        Ok(types
            .iter()
            .map(|t| self.attribute(&obj, *t, private_objects))
            .collect())
    }
}
