//! `C_SetAttributeValue` and `C_CopyObject` (PKCS#11 v3.0 §5.7.6 and §5.7.2).
//!
//! The TSB has no call that changes a key's label, `id` or usage after its creation, and none
//! that copies a key, so every object of this token reports `CKA_MODIFIABLE` and
//! `CKA_COPYABLE` false (attributes.rs), and:
//!
//! - `C_SetAttributeValue` succeeds only when every attribute of the template already holds
//!   exactly the given value: nothing changes, so the object's attributes stay true. Java's
//!   SunPKCS11 key store sets `CKA_ID` to the alias on a token key it has just generated with
//!   that label (P11KeyStore), which this lets through. A different value is
//!   `CKR_ACTION_PROHIBITED` (§4.4 `CKA_MODIFIABLE`); a sensitive attribute is refused without
//!   being compared, so the call cannot serve as an oracle for a secret value.
//! - `C_CopyObject` is always `CKR_ACTION_PROHIBITED` (§5.7.2: `CKA_COPYABLE` false). This
//!   includes turning a session key pair's temporary TSB key into a token object (what
//!   SunPKCS11 does after `keytool -genkeypair`): its TSB label cannot become the asked one, and
//!   a second object for the same key with other attributes would name one key twice.
//!
//! An object's handle always names the same TSB key (objects.rs): neither call changes which
//! key a handle names. Every refusal is one WARN line naming the attribute and the reason.

use cryptoki_sys::*;

use super::attributes::AttrValue;
use super::objects::ObjectRef;
use super::state::Token;
use super::template::attribute_name;
use crate::error::{Error, Result};
use crate::logging::Net;

/// Where the documentation describes how to give a generated key its name.
const NAMING_HINT: &str =
    "generate the key with CKA_TOKEN true and its CKA_LABEL (docs/clients.md)";

impl Token {
    /// `C_SetAttributeValue` (§5.7.6); see the module documentation.
    pub fn set_attribute_values(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<()> {
        self.set_attribute_values_checked(session, object, template)
            .inspect_err(|e| {
                if !e.was_logged() {
                    log::warn!(
                        "C_SetAttributeValue on object {object:#x} refused: {}",
                        Net(&e.to_string())
                    )
                }
            })
    }

    fn set_attribute_values_checked(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<()> {
        let s = self.sessions.get(session)?;
        let obj = self.visible_object(object)?;
        // §5.7.6: "Only session objects can be modified during a read-only session."
        if !s.read_write && !self.is_session_object(&obj) {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY,
                "token objects can only be modified in a read-write session",
            ));
        }
        let private_objects = self.private_objects();
        for (t, asked) in template {
            match self.attribute(&obj, *t, private_objects) {
                AttrValue::Bytes(current) if current == *asked => {}
                AttrValue::Invalid => {
                    return Err(Error::new(
                        CKR_ATTRIBUTE_TYPE_INVALID,
                        format!("{}: not an attribute of this object", attribute_name(*t)),
                    ))
                }
                AttrValue::Sensitive | AttrValue::Bytes(_) => {
                    return Err(Error::new(
                        CKR_ACTION_PROHIBITED,
                        format!(
                            "{}: CKA_MODIFIABLE is false (the TSB cannot change a key's label, \
                             id or usage); {NAMING_HINT}",
                            attribute_name(*t)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// `C_CopyObject` (§5.7.2): always refused; see the module documentation.
    pub fn copy_object(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.copy_object_checked(session, object).inspect_err(|e| {
            if !e.was_logged() {
                log::warn!(
                    "C_CopyObject of object {object:#x} refused: {}",
                    Net(&e.to_string())
                )
            }
        })
    }

    fn copy_object_checked(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.sessions.get(session)?;
        let obj = self.visible_object(object)?;
        let why = if self.is_session_object(&obj) {
            "a session key pair's TSB key cannot become a token object under a new name \
             (the TSB cannot rename keys)"
        } else {
            "the TSB cannot copy or rename keys"
        };
        Err(Error::new(
            CKR_ACTION_PROHIBITED,
            format!("CKA_COPYABLE is false: {why}; {NAMING_HINT}"),
        ))
    }

    /// The object behind a handle, as this session may see it: a private key is invisible
    /// before login when the token has private objects.
    fn visible_object(&self, object: CK_OBJECT_HANDLE) -> Result<ObjectRef> {
        let obj = self.object(object)?;
        if obj.class() == CKO_PRIVATE_KEY && !self.user_may_use_private() {
            return Err(Error::rv(CKR_OBJECT_HANDLE_INVALID));
        }
        Ok(obj)
    }

    /// True for the objects of a session key pair this process generated (session_keys.rs).
    fn is_session_object(&self, obj: &ObjectRef) -> bool {
        matches!(obj, ObjectRef::Key(k, _) if self.session_keys.is_own(&k.label))
    }
}
