//! Lazy key discovery: nothing is fetched before the first object query; a search by
//! `CKA_LABEL` (or a `CKA_ID` that is a label) fetches only that key; the key list and key
//! attributes are cached for `cacheTtlSecs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cryptoki_sys::*;
use parking_lot::Mutex;

use super::objects::{
    key_from_attributes, CertObject, CertSource, KeyObject, ObjectRef, ObjectStore, Skipped,
};
use super::state::Token;
use super::Backend;
use crate::config::Secret;
use crate::crypto::Certificate;
use crate::error::{map_tsb_error, CredentialContext, Error, Result};
use crate::logging::Net;
use crate::tsb::TsbReason;

/// True for a TSB answer that refuses one key's attributes rather than the caller: a 4xx
/// status other than the credential, proxy-authentication, timeout and rate-limit ones (401,
/// 403, 407, 408, 429) and not a TSB code about the credentials. 404/650 (no such key) and a
/// wrong password are handled before. A TSB that is down or unreachable fails the whole call.
fn refused_for_this_key(e: &crate::tsb::TsbError) -> bool {
    let per_request = matches!(e.http_status(), Some(s) if (400..500).contains(&s)
        && !matches!(s, 401 | 403 | 407 | 408 | 429));
    per_request
        && !matches!(
            e.reason(),
            Some(TsbReason::InvalidToken | TsbReason::InvalidApiKey | TsbReason::NotAuthorized)
        )
}

/// How many key attribute requests run at once when a whole token is listed.
const PARALLEL_FETCHES: usize = 8;

impl Token {
    fn allowed(&self, label: &str) -> bool {
        // No TSB key has an empty label (the TSB refuses the lookup as a validation error).
        if label.is_empty() {
            return false;
        }
        // A temporary key (session key pair) is this process's own or not shown at all; the
        // own ones are visible whatever `keys` lists (session_keys.rs).
        if super::session_keys::is_session_label(label) {
            return self.session_keys.is_own(label);
        }
        match &self.config.pkcs11.keys {
            Some(list) => list.iter().any(|l| l == label),
            None => true,
        }
    }

    /// The password to send for a key: configured per label, else the login PIN when `pinIs`
    /// is `keyPassword`.
    pub(super) fn key_password(&self, label: &str) -> Option<Secret> {
        self.config
            .pkcs11
            .key_passwords
            .get(label)
            .cloned()
            .or_else(|| self.login.lock().key_password.clone())
    }

    /// The labels on the token (`GET /v1/key`, cached; filtered by the `keys` allow-list).
    pub(super) fn key_labels(&self) -> Result<Vec<String>> {
        if let Some(l) = self.objects.fresh_list() {
            return Ok(l);
        }
        let mut labels = match &self.config.pkcs11.keys {
            // With an allow-list the TSB's list is not needed (and may not be readable).
            Some(list) => list.clone(),
            None => self
                .client()?
                .list_keys()
                .map_err(|e| map_tsb_error(&e, self.credential_context()))?,
        };
        // Other processes' temporary keys are never listed; this process's own always are.
        labels.retain(|l| !super::session_keys::is_session_label(l) || self.session_keys.is_own(l));
        for own in self.session_keys.labels() {
            if !labels.contains(&own) {
                labels.push(own);
            }
        }
        self.objects.store_list(labels.clone());
        Ok(labels)
    }

    /// The key whose label a `CKA_ID` spells, when that key has this ID (IDs are usually the
    /// label's bytes). `None` otherwise; a TSB failure here only means the ID is not a label.
    pub(super) fn key_by_label_id(&self, id: &[u8]) -> Option<Arc<KeyObject>> {
        let label = std::str::from_utf8(id)
            .ok()
            .filter(|l| !l.is_empty() && !l.chars().any(char::is_control))?;
        self.load_key(label).ok().flatten().filter(|k| k.id == id)
    }

    /// A key by label: from the cache, else `GET /v1/key/{label}/attributes`. `Ok(None)` when
    /// the key does not exist, is not allowed, or cannot sign.
    pub(super) fn load_key(&self, label: &str) -> Result<Option<Arc<KeyObject>>> {
        if !self.allowed(label) {
            return Ok(None);
        }
        if let Some(cached) = self.objects.fresh_key(label) {
            return Ok(cached);
        }
        self.fetch_key(label)
    }

    /// A key by label, always fetched from the TSB (`GET /v1/key/{label}/attributes`) and
    /// stored; a key whose identity changed gets new handles ([`ObjectStore::store_key`]).
    pub(super) fn fetch_key(&self, label: &str) -> Result<Option<Arc<KeyObject>>> {
        let client = self.client()?;
        let password = self.key_password(label);
        let attrs = match client.key_attributes(label, password.as_ref()) {
            Ok(a) => a,
            Err(e) if e.is_key_not_found() => {
                self.objects.store_gone(label);
                return Ok(None);
            }
            Err(e) if e.reason() == Some(TsbReason::WrongPassword) => {
                log::warn!(
                    "key '{}' is password-protected and no (right) password is configured; it is left out",
                    Net(label)
                );
                self.objects.store_skipped(label);
                return Ok(None);
            }
            Err(e) if refused_for_this_key(&e) => {
                // One key the TSB will not describe (a label too long for a URI, one it
                // rejects) must not hide the others: left out until the cache expires, so a
                // listing warns once (§5.7.7: C_FindObjects returns the objects that match).
                log::warn!(
                    "key '{}' is left out: the TSB refused to read its attributes: {}",
                    Net(label),
                    Net(&e.to_string())
                );
                self.objects.store_skipped(label);
                return Ok(None);
            }
            Err(e) => return Err(map_tsb_error(&e, self.credential_context())),
        };
        let base = self.objects.base_of(label);
        match key_from_attributes(&attrs, base) {
            Ok(mut key) => {
                key.destroyable &= self.config.pkcs11.allow_key_deletion;
                let cert = self.certificate_of(client.as_ref(), &key);
                Ok(Some(self.objects.store_key(key, cert)))
            }
            Err(Skipped::CannotSign(why)) => {
                log::debug!("key '{}' is left out: {}", Net(label), Net(&why));
                self.objects.store_skipped(label);
                Ok(None)
            }
        }
    }

    /// The key's certificate object: the leaf of its chain in `pkcs11.certificates`, else the
    /// TSB's (`GET /v1/certificate/{label}`). A certificate whose public key is not the key's is
    /// refused with a warning (a refused configured leaf falls back to the TSB's certificate).
    fn certificate_of(&self, client: &dyn Backend, key: &KeyObject) -> Option<Arc<CertObject>> {
        if let Some(leaf) = self
            .configured_chain(&key.label)
            .and_then(|chain| chain.into_iter().next())
        {
            if leaf.public_key == key.public {
                return Some(key_cert_object(key, leaf, CertSource::ConfigLeaf));
            }
            log::warn!(
                "the first certificate of pkcs11.certificates for key '{}' ({}) holds a different public key; it is not used",
                Net(&key.label),
                Net(&leaf.subject_text)
            );
        }
        let cert = self.tsb_certificate(client, &key.label)?;
        if cert.public_key != key.public {
            log::warn!(
                "the TSB's certificate for key '{}' ({}) holds a different public key; it is left out",
                Net(&key.label),
                Net(&cert.subject_text)
            );
            return None;
        }
        Some(key_cert_object(key, cert, CertSource::Tsb))
    }

    /// The certificate the TSB stores for a key (PEM or base64 DER, `certificate` or
    /// `rawCertificate`); `None` when it has none or it cannot be read (logged).
    fn tsb_certificate(&self, client: &dyn Backend, label: &str) -> Option<Certificate> {
        match client.certificate(label) {
            Ok(Some(bytes)) => match Certificate::from_any(&bytes) {
                Ok(c) => Some(c),
                Err(e) => {
                    log::warn!("certificate of key '{}' is unreadable: {e}", Net(label));
                    None
                }
            },
            Ok(None) => None,
            // 404 is Ok(None): this is a failed request, shown until the key is fetched again.
            Err(e) => {
                log::warn!(
                    "the certificate of key '{}' could not be read: {}",
                    Net(label),
                    Net(&e.to_string())
                );
                None
            }
        }
    }

    fn configured_chain(&self, label: &str) -> Option<Vec<Certificate>> {
        let path = self.config.pkcs11.certificates.get(label)?;
        let pem = match crate::config::read_regular_file(path) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("certificate chain for '{label}' ({}): {e}", path.display());
                return None;
            }
        };
        // Never an empty chain: chain_from_pem refuses input without a certificate.
        match Certificate::chain_from_pem(&pem) {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("certificate chain for '{label}' ({}): {e}", path.display());
                None
            }
        }
    }

    /// Authority certificates of the configured chains become `CKO_CERTIFICATE` objects of
    /// category "authority" (read from local files: no network).
    pub(super) fn load_configured_chains(&self) {
        let mut chain = Vec::new();
        let mut labels: Vec<&String> = self.config.pkcs11.certificates.keys().collect();
        labels.sort();
        for label in labels {
            let Some(certs) = self.configured_chain(label) else {
                continue;
            };
            for cert in certs.into_iter().skip(1) {
                // A CA shared by several chains appears once.
                if chain
                    .iter()
                    .any(|c: &Arc<CertObject>| c.cert.der == cert.der)
                {
                    continue;
                }
                let label = format!("{label} CA {}", chain.len() + 1);
                chain.push(Arc::new(CertObject {
                    handle: ObjectStore::next_chain_handle(chain.len()),
                    id: label.as_bytes().to_vec(),
                    label,
                    cert,
                    category: 2,
                    source: CertSource::ConfigAuthority,
                }));
            }
        }
        self.objects.set_chain(chain);
    }

    /// Every key that can sign, fetching missing attributes in parallel.
    pub(super) fn all_keys(&self) -> Result<Vec<Arc<KeyObject>>> {
        let labels = self.key_labels()?;
        let workers = if self.may_spawn_threads {
            PARALLEL_FETCHES
        } else {
            1
        };
        if workers == 1 || labels.len() <= 1 {
            let mut keys = Vec::new();
            for l in &labels {
                if let Some(k) = self.load_key(l)? {
                    keys.push(k);
                }
            }
            return Ok(keys);
        }
        // A fixed pool of scoped workers takes the labels in order (no thread per key); the
        // first error stops them all.
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        type Fetched = Result<Option<Arc<KeyObject>>>;
        let slots: Vec<Mutex<Option<Fetched>>> = labels.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers.min(labels.len()))
                .map(|_| {
                    s.spawn(|| {
                        while !failed.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(label) = labels.get(i) else { break };
                            let r = self.load_key(label);
                            if r.is_err() {
                                failed.store(true, Ordering::Relaxed);
                            }
                            *slots[i].lock() = Some(r);
                        }
                    })
                })
                .collect();
            for h in handles {
                // A worker that panicked leaves its slot empty (reported below).
                let _ = h.join();
            }
        });
        let mut keys = Vec::new();
        for slot in slots {
            match slot.into_inner() {
                Some(r) => {
                    if let Some(k) = r? {
                        keys.push(k);
                    }
                }
                None if failed.load(Ordering::Relaxed) => continue,
                None => return Err(Error::new(CKR_GENERAL_ERROR, "key fetch panicked")),
            }
        }
        Ok(keys)
    }

    /// The objects a search template may match, fetching as little as possible.
    pub(super) fn candidates(
        &self,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<Vec<ObjectRef>> {
        let find = |t: CK_ATTRIBUTE_TYPE| template.iter().find(|(a, _)| *a == t).map(|(_, v)| v);
        let class =
            find(CKA_CLASS).and_then(|v| v.as_slice().try_into().ok().map(CK_ULONG::from_ne_bytes));
        let mut objects = Vec::new();
        let chain = self.objects.chain();
        if class.is_none() || class == Some(CKO_CERTIFICATE) {
            objects.extend(chain.iter().cloned().map(ObjectRef::Certificate));
        }
        if let Some(label) = find(CKA_LABEL) {
            // A session key pair shows the application's label, not its TSB label.
            for own in self.session_keys.with_app_label(label) {
                if self.load_key(&own)?.is_some() {
                    objects.extend(self.objects.objects_of(&own));
                }
            }
            if let Ok(label) = std::str::from_utf8(label) {
                if self.load_key(label)?.is_some() {
                    objects.extend(self.objects.objects_of(label));
                }
            }
            return Ok(objects);
        }
        if let Some(id) = find(CKA_ID) {
            // IDs are usually the label's bytes: try that key first, else the full list.
            if let Some(k) = self.key_by_label_id(id) {
                objects.extend(self.objects.objects_of(&k.label));
                return Ok(objects);
            }
        }
        for key in self.all_keys()? {
            objects.extend(self.objects.objects_of(&key.label));
        }
        Ok(objects)
    }

    /// `pinIs: keyPassword`: the PIN must open a password-protected key
    /// (`POST /v1/key/attributes`, error 620 on mismatch).
    pub(super) fn check_key_password(&self, client: &dyn Backend, pin: &Secret) -> Result<()> {
        let labels = self.key_labels()?;
        for label in labels
            .iter()
            .filter(|l| !self.config.pkcs11.key_passwords.contains_key(*l))
        {
            match client.key_attributes(label, None) {
                Ok(_) => continue,
                Err(e) if e.reason() == Some(TsbReason::WrongPassword) => {
                    return match client.key_attributes(label, Some(pin)) {
                        Ok(_) => Ok(()),
                        Err(e) => Err(map_tsb_error(&e, CredentialContext::Pin)),
                    };
                }
                Err(e) if e.reason() == Some(TsbReason::KeyNotFound) => continue,
                Err(e) => return Err(map_tsb_error(&e, CredentialContext::Configured)),
            }
        }
        log::info!("pinIs keyPassword: no password-protected key found to check the PIN against");
        Ok(())
    }
}

/// A key's own certificate object (PKCS#11 v2.40 §4.6.3): handle `base | 3`, the key's
/// `CKA_ID` and `CKA_LABEL`, category 1 ("token user").
pub(super) fn key_cert_object(
    key: &KeyObject,
    cert: Certificate,
    source: CertSource,
) -> Arc<CertObject> {
    Arc::new(CertObject {
        handle: ObjectStore::cert_handle(key.base),
        label: key.label.clone(),
        id: key.id.clone(),
        cert,
        category: 1,
        source,
    })
}
