//! Certificate objects the application creates and destroys (PKCS#11 v2.40 §5.7
//! `C_CreateObject` / `C_DestroyObject`; §4.6.3 X.509 certificate objects).
//!
//! The TSB keeps one certificate per key. `C_CreateObject` of a `CKO_CERTIFICATE` whose
//! `CKA_LABEL` or `CKA_ID` names a key stores it with `POST /v1/certificate/import/plain` (it
//! replaces the key's earlier certificate, and the object keeps the handle `base | 3`);
//! `C_DestroyObject` on it calls `DELETE /v1/certificate/{label}`. The certificates of
//! `pkcs11.certificates` cannot be destroyed (`CKR_ACTION_PROHIBITED`); keys only with
//! `pkcs11.allowKeyDeletion` (keygen.rs).

use std::sync::Arc;

use cryptoki_sys::*;

use super::attributes::known_class;
use super::keys::key_cert_object;
use super::objects::{CertSource, KeyObject, KeyPart, ObjectRef};
use super::state::Token;
use super::template::{bool_of, inconsistent, ulong_of, value_invalid};
use crate::crypto::Certificate;
use crate::error::{map_tsb_error, Error, Result};
use crate::logging::Net;

/// NSS's vendor attribute `CKA_NSS_EMAIL` (`CKA_VENDOR_DEFINED | 0x4E534350` + 2).
const CKA_NSS_EMAIL: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x4E53_4352;

/// What a `C_CreateObject` template asks for, once checked.
struct CertTemplate {
    cert: Certificate,
    label: Option<String>,
    id: Option<Vec<u8>>,
}

/// The content octets of a DER INTEGER (`CKA_SERIAL_NUMBER` is the whole DER INTEGER, but
/// some applications pass only its value). Only the short length form: a certificate's serial
/// number is at most 20 octets (RFC 5280 §4.1.2.2), and x509-cert refuses longer ones before
/// this code sees them.
fn integer_content(der: &[u8]) -> &[u8] {
    match der {
        [0x02, len, rest @ ..] if (*len as usize) == rest.len() => rest,
        _ => der,
    }
}

impl CertTemplate {
    /// Checks a creation template (§4.6.3 table 24): `CKA_CLASS` = `CKO_CERTIFICATE`,
    /// `CKA_CERTIFICATE_TYPE` = `CKC_X_509` and `CKA_VALUE` (DER; PEM is accepted too) are
    /// required; `CKA_SUBJECT`, `CKA_ISSUER`, `CKA_SERIAL_NUMBER`, `CKA_CHECK_VALUE` and
    /// `CKA_PUBLIC_KEY_INFO`, when given, must be the certificate's; the object is a public,
    /// non-modifiable token object. Informational attributes (dates, hashes for URL
    /// certificates) are accepted and not stored.
    fn parse(template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Result<CertTemplate> {
        let find = |t: CK_ATTRIBUTE_TYPE| template.iter().find(|(a, _)| *a == t).map(|(_, v)| v);
        let class = find(CKA_CLASS)
            .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_CLASS is missing"))?;
        let class = ulong_of("CKA_CLASS", class)?;
        if class != CKO_CERTIFICATE {
            return Err(inconsistent(format!(
                "CKA_CLASS {class:#x}: objects of this class cannot be created, this token stores only certificates of its keys"
            )));
        }
        let cert_type = find(CKA_CERTIFICATE_TYPE).ok_or_else(|| {
            Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_CERTIFICATE_TYPE is missing")
        })?;
        if ulong_of("CKA_CERTIFICATE_TYPE", cert_type)? != CKC_X_509 {
            return Err(value_invalid(
                "only X.509 certificates (CKC_X_509) are supported",
            ));
        }
        let value = find(CKA_VALUE)
            .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE is missing"))?;
        let cert = Certificate::from_any(value)
            .map_err(|e| value_invalid(format!("CKA_VALUE is not an X.509 certificate: {e}")))?;

        let mut label = None;
        let mut id = None;
        for (t, v) in template {
            match *t {
                CKA_CLASS | CKA_CERTIFICATE_TYPE | CKA_VALUE => {}
                CKA_LABEL => {
                    let l = std::str::from_utf8(v)
                        .map_err(|_| value_invalid("CKA_LABEL is not UTF-8"))?;
                    label = Some(l.to_string());
                }
                CKA_ID => id = Some(v.clone()),
                CKA_TOKEN => {
                    if !bool_of("CKA_TOKEN", v)? {
                        return Err(inconsistent(
                            "session certificate objects are not supported (CKA_TOKEN must be true)",
                        ));
                    }
                }
                CKA_PRIVATE => {
                    if bool_of("CKA_PRIVATE", v)? {
                        return Err(inconsistent(
                            "certificates on this token are public objects (CKA_PRIVATE must be false)",
                        ));
                    }
                }
                CKA_MODIFIABLE | CKA_COPYABLE => {
                    if bool_of("CKA_MODIFIABLE/CKA_COPYABLE", v)? {
                        return Err(inconsistent(
                            "certificate objects are neither modifiable nor copyable",
                        ));
                    }
                }
                CKA_DESTROYABLE => {
                    if !bool_of("CKA_DESTROYABLE", v)? {
                        return Err(inconsistent(
                            "a certificate stored on the TSB is always destroyable",
                        ));
                    }
                }
                CKA_TRUSTED => {
                    if bool_of("CKA_TRUSTED", v)? {
                        return Err(Error::new(
                            CKR_ATTRIBUTE_READ_ONLY,
                            "only the security officer may set CKA_TRUSTED (§4.6.2)",
                        ));
                    }
                }
                CKA_CERTIFICATE_CATEGORY => {
                    let c = ulong_of("CKA_CERTIFICATE_CATEGORY", v)?;
                    if c != CK_CERTIFICATE_CATEGORY_UNSPECIFIED
                        && c != CK_CERTIFICATE_CATEGORY_TOKEN_USER
                    {
                        return Err(inconsistent(
                            "only a key's own certificate (category 1, token user) can be stored",
                        ));
                    }
                }
                CKA_JAVA_MIDP_SECURITY_DOMAIN => {
                    if ulong_of("CKA_JAVA_MIDP_SECURITY_DOMAIN", v)?
                        != CK_SECURITY_DOMAIN_UNSPECIFIED
                    {
                        return Err(inconsistent(
                            "CKA_JAVA_MIDP_SECURITY_DOMAIN is not supported",
                        ));
                    }
                }
                CKA_URL => {
                    if !v.is_empty() {
                        return Err(inconsistent(
                            "certificates by URL are not supported: give CKA_VALUE",
                        ));
                    }
                }
                CKA_SUBJECT => {
                    if *v != cert.subject_der {
                        return Err(inconsistent("CKA_SUBJECT is not the certificate's subject"));
                    }
                }
                CKA_ISSUER => {
                    if *v != cert.issuer_der {
                        return Err(inconsistent("CKA_ISSUER is not the certificate's issuer"));
                    }
                }
                CKA_SERIAL_NUMBER => {
                    if *v != cert.serial_der && v != integer_content(&cert.serial_der) {
                        return Err(inconsistent(
                            "CKA_SERIAL_NUMBER is not the certificate's serial number",
                        ));
                    }
                }
                CKA_CHECK_VALUE => {
                    if v[..] != cert.check_value() {
                        return Err(value_invalid(
                            "CKA_CHECK_VALUE does not match the certificate (§4.6.3)",
                        ));
                    }
                }
                CKA_PUBLIC_KEY_INFO => {
                    if !v.is_empty() && *v != cert.public_key.spki_der() {
                        return Err(inconsistent(
                            "CKA_PUBLIC_KEY_INFO is not the certificate's public key",
                        ));
                    }
                }
                // NSS's copy of the certificate's e-mail address (CKA_NSS_EMAIL), which
                // `certutil` sends for certificates that name one: the certificate has it.
                CKA_NSS_EMAIL => {}
                CKA_START_DATE
                | CKA_END_DATE
                | CKA_HASH_OF_SUBJECT_PUBLIC_KEY
                | CKA_HASH_OF_ISSUER_PUBLIC_KEY
                | CKA_NAME_HASH_ALGORITHM => {}
                other => {
                    return Err(Error::new(
                        CKR_ATTRIBUTE_TYPE_INVALID,
                        format!("attribute {other:#x} is not an attribute of X.509 certificates"),
                    ))
                }
            }
        }
        Ok(CertTemplate { cert, label, id })
    }
}

impl Token {
    /// `C_CreateObject` (PKCS#11 v2.40 §5.7.1): stores an X.509 certificate for the key that
    /// `CKA_LABEL` or `CKA_ID` names (with neither, the key holding the certificate's public
    /// key) on the TSB (`POST /v1/certificate/import/plain`) and returns its object handle.
    ///
    /// `fixed` holds the template's fixed-size attributes (lengths already checked); the rest
    /// of the template is read (`template()`) only once the class and the session allow the
    /// creation, so nothing more of a template that is refused anyway is touched.
    ///
    /// Every refusal is one WARN line naming the attribute and the reason.
    pub fn create_object(
        &self,
        session: CK_SESSION_HANDLE,
        fixed: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
        template: impl FnOnce() -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>>,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.create_object_checked(session, fixed, template)
            .inspect_err(|e| {
                if !e.was_logged() {
                    log::warn!("C_CreateObject refused: {}", Net(&e.to_string()))
                }
            })
    }

    fn create_object_checked(
        &self,
        session: CK_SESSION_HANDLE,
        fixed: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
        template: impl FnOnce() -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>>,
    ) -> Result<CK_OBJECT_HANDLE> {
        let s = self.sessions.get(session)?;
        let find = |t: CK_ATTRIBUTE_TYPE| fixed.iter().find(|(a, _)| *a == t).map(|(_, v)| v);
        let class = find(CKA_CLASS)
            .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_CLASS is missing"))?;
        let class = ulong_of("CKA_CLASS", class)?;
        if !known_class(class) {
            return Err(value_invalid(format!(
                "CKA_CLASS {class:#x} is not an object class"
            )));
        }
        if class != CKO_CERTIFICATE {
            return Err(inconsistent(format!(
                "CKA_CLASS {class:#x}: objects of this class cannot be created, this token stores only certificates of its keys"
            )));
        }
        // PKCS#11 v2.40 §5.7.1: a read-only session cannot create token objects. A template
        // without CKA_TOKEN is stored on the TSB here (a token object); CKA_TOKEN = false asks
        // for a session object, refused below exactly as in a read-write session.
        let token_object = match find(CKA_TOKEN) {
            Some(v) => bool_of("CKA_TOKEN", v)?,
            None => true,
        };
        if token_object && !s.read_write {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY,
                "token objects can only be created in a read-write session",
            ));
        }
        let template = template()?;
        let req = CertTemplate::parse(&template)?;
        if !self.user_may_use_private() {
            return Err(Error::new(
                CKR_USER_NOT_LOGGED_IN,
                "log in to store a certificate for a key",
            ));
        }
        let key = self.key_for_certificate(&req)?;
        if req.cert.public_key != key.public {
            return Err(inconsistent(format!(
                "the certificate ({}) holds another public key than key '{}'",
                req.cert.subject_text, key.label
            )));
        }
        let configured =
            self.objects.objects_of(&key.label).into_iter().any(
                |o| matches!(o, ObjectRef::Certificate(c) if c.source == CertSource::ConfigLeaf),
            );
        if configured {
            return Err(inconsistent(format!(
                "the certificate of key '{}' comes from pkcs11.certificates in the configuration; remove it there to manage it on the TSB",
                key.label
            )));
        }
        let client = self.client()?;
        if let Err(e) = client.import_certificate(&key.label, &req.cert.der) {
            return Err(match e.http_status() {
                _ if e.is_key_not_found() => {
                    self.objects.store_gone(&key.label);
                    inconsistent(format!("key '{}' is no longer on the TSB", key.label))
                }
                Some(400) => value_invalid(format!(
                    "the TSB refused the certificate for '{}': {e}",
                    key.label
                )),
                _ => map_tsb_error(&e, self.credential_context()),
            });
        }
        log::info!(
            "stored certificate '{}' for key '{}' on the TSB",
            Net(&req.cert.subject_text),
            Net(&key.label)
        );
        let object = key_cert_object(&key, req.cert, CertSource::Tsb);
        let handle = object.handle;
        if !self.objects.set_cert(&key.label, Some(object)) {
            // The key's entry expired meanwhile: the next load fetches the new certificate.
            self.load_key(&key.label)?;
        }
        Ok(handle)
    }

    /// The key a new certificate belongs to: by `CKA_LABEL`, else by `CKA_ID`; with neither,
    /// the one key whose public key the certificate holds.
    ///
    /// NSS (`certutil -A`, `-S`, Firefox) always gives a certificate `CKA_ID` = SHA-1 of its
    /// public key value ([`PublicKey::nss_key_id`]) and its nickname as `CKA_LABEL`. That ID
    /// is accepted as naming the key whose public key the certificate holds: the certificate
    /// is stored for that key and shows the key's own `CKA_ID` and label (PKCS#11 v2.40
    /// §4.6.3: `CKA_ID` of a certificate is the key identifier of its key pair), so NSS finds
    /// the private key through it (`PK11_FindPrivateKeyFromCert` reads the certificate's
    /// `CKA_ID`, then searches for the private key with it).
    ///
    /// [`PublicKey::nss_key_id`]: crate::crypto::PublicKey::nss_key_id
    fn key_for_certificate(&self, req: &CertTemplate) -> Result<Arc<KeyObject>> {
        let nss_id = req.cert.public_key.nss_key_id();
        let is_nss_id = |id: &Vec<u8>| *id == nss_id;
        let by_label = match &req.label {
            Some(l) => self.load_key(l)?,
            None => None,
        };
        if let Some(key) = by_label {
            return match &req.id {
                Some(id) if *id != key.id && !is_nss_id(id) => Err(inconsistent(format!(
                    "CKA_ID is not the CKA_ID of key '{}'",
                    key.label
                ))),
                _ => Ok(key),
            };
        }
        if let Some(id) = &req.id {
            if let Some(key) = self.key_by_id(id)? {
                if let Some(l) = &req.label {
                    log::info!(
                        "CKA_LABEL '{}' names no key; the certificate takes the label of key '{}' (CKA_ID)",
                        Net(l),
                        Net(&key.label)
                    );
                }
                return Ok(key);
            }
            if !is_nss_id(id) {
                return Err(inconsistent("neither CKA_LABEL nor CKA_ID names a key"));
            }
        } else if let Some(l) = &req.label {
            return Err(inconsistent(format!("CKA_LABEL '{l}' names no key")));
        }
        let mut matching: Vec<Arc<KeyObject>> = self
            .all_keys()?
            .into_iter()
            .filter(|k| k.public == req.cert.public_key)
            .collect();
        let key = match matching.len() {
            1 => matching.remove(0),
            0 => return Err(inconsistent("no key holds the certificate's public key")),
            _ => {
                return Err(Error::new(
                    CKR_TEMPLATE_INCOMPLETE,
                    "several keys hold the certificate's public key: give CKA_LABEL or CKA_ID",
                ))
            }
        };
        if req.id.is_some() {
            log::info!(
                "the certificate's CKA_ID is the SHA-1 of its public key (as NSS sets it): stored \
                 for key '{}' under the key's own CKA_ID and label{}",
                Net(&key.label),
                match &req.label {
                    Some(l) => format!(" (CKA_LABEL '{}' names no key)", Net(l)),
                    None => String::new(),
                }
            );
        }
        Ok(key)
    }

    /// The key with this `CKA_ID` (the TSB's `id` or the label's bytes): first the key whose
    /// label the ID spells, else a search of the key list.
    fn key_by_id(&self, id: &[u8]) -> Result<Option<Arc<KeyObject>>> {
        if let Some(k) = self.key_by_label_id(id) {
            return Ok(Some(k));
        }
        Ok(self.all_keys()?.into_iter().find(|k| k.id == id))
    }

    /// `C_DestroyObject` (PKCS#11 v2.40 §5.7.3): removes a key's certificate from the TSB
    /// (`DELETE /v1/certificate/{label}`), or deletes a key when `pkcs11.allowKeyDeletion`
    /// allows it (keygen.rs). Configured certificates cannot be destroyed
    /// (`CKR_ACTION_PROHIBITED`).
    ///
    /// Every refusal is one WARN line naming the object and the reason.
    pub fn destroy_object(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.destroy_object_checked(session, object)
            .inspect_err(|e| {
                if e.was_logged() {
                    return;
                }
                log::warn!(
                    "C_DestroyObject on object {object:#x} refused: {}",
                    Net(&e.to_string())
                )
            })
    }

    fn destroy_object_checked(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let s = self.sessions.get(session)?;
        let obj = self.object(object)?;
        if obj.class() == CKO_PRIVATE_KEY && !self.user_may_use_private() {
            return Err(Error::rv(CKR_OBJECT_HANDLE_INVALID));
        }
        // §5.7 C_DestroyObject: "only session objects can be destroyed during a read-only
        // session" (a session key pair's objects, session_keys.rs).
        let session_object =
            matches!(&obj, ObjectRef::Key(k, _) if self.session_keys.is_own(&k.label));
        if !s.read_write && !session_object {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY,
                "objects can only be destroyed in a read-write session",
            ));
        }
        let cert = match obj {
            // A session key pair's public key object: hidden; the TSB key stays for the
            // private key object until it is destroyed or its session closes.
            ObjectRef::Key(k, KeyPart::Public) if session_object => {
                self.hide_session_public_key(&k.label);
                log::info!(
                    "public key object of temporary key '{}' destroyed; the key stays for its private key object",
                    k.label
                );
                return Ok(());
            }
            // Destroying the public key object of a token key would delete the private key on
            // the TSB with it: refused (CKA_DESTROYABLE is false on it).
            ObjectRef::Key(k, KeyPart::Public) => {
                return Err(Error::new(
                    CKR_ACTION_PROHIBITED,
                    format!(
                        "the public key object of key '{}' cannot be destroyed alone: destroy the private key object to delete the key pair",
                        k.label
                    ),
                ));
            }
            ObjectRef::Key(k, KeyPart::Private) if session_object => {
                return self.destroy_session_key(&k.label)
            }
            // Deletes the key on the TSB when pkcs11.allowKeyDeletion allows it (keygen.rs).
            ObjectRef::Key(k, KeyPart::Private) => return self.destroy_key(&k),
            ObjectRef::Certificate(c) if c.source != CertSource::Tsb => {
                return Err(Error::new(
                    CKR_ACTION_PROHIBITED,
                    format!(
                        "certificate '{}' comes from pkcs11.certificates in the configuration",
                        c.label
                    ),
                ))
            }
            ObjectRef::Certificate(c) => c,
        };
        if !self.user_may_use_private() {
            return Err(Error::new(
                CKR_USER_NOT_LOGGED_IN,
                "log in to remove a key's certificate",
            ));
        }
        match self.client()?.delete_certificate(&cert.label) {
            Ok(()) => {}
            // Already gone on the TSB (removed elsewhere): the object is gone all the same.
            Err(e) if e.http_status() == Some(404) => {
                log::info!(
                    "certificate of key '{}' was already removed: {e}",
                    cert.label
                )
            }
            Err(e) => return Err(map_tsb_error(&e, self.credential_context())),
        }
        log::info!(
            "removed the certificate of key '{}' from the TSB",
            cert.label
        );
        self.objects.set_cert(&cert.label, None);
        Ok(())
    }
}
