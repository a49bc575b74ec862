//! Key management calls: `POST /v1/key` and the deletion of a key, `POST /v1/key/deleteKey` or
//! `DELETE /v1/key/{label}` (docs/tsb-api.md, "Creating and deleting keys"). Both use the `KeyManagementToken` role and are retried only
//! when they provably never reached the TSB (a repeated creation would hit "label in use", a
//! repeated deletion "no such key").

use serde::Serialize;
use serde_json::json;

use super::parts::{segment, Call, TsbClient};
use super::retry::Retry;
use crate::config::{PolicySpec, Secret};
use crate::tsb::models::password_chars;
use crate::tsb::nodes::Form;
use crate::tsb::TsbError;

/// The type of a key to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewKeyType {
    /// RSA with this modulus size (2048, 3072, 4096).
    Rsa(u32),
    /// EC on the curve with this OID (dotted).
    Ec(&'static str),
    /// Ed25519.
    Ed25519,
    /// A post-quantum key, by the TSB's `algorithm` name (`ML-DSA-65`, `SLH-DSA-SHA2-128f`,
    /// `LMS`; docs/tsb-api.md "Post-quantum keys"): no `keySize`, no `curveOid`.
    PostQuantum(&'static str),
}

/// What a new key may be used for (`attributes` of `POST /v1/key`, docs/tsb-api.md). `sign`
/// is always true: the module only creates keys it can sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewKeyUsage {
    pub(crate) decrypt: bool,
    pub(crate) unwrap: bool,
    pub(crate) derive: bool,
    /// The public-key flags (TSB 1.15.1 and later); `None` leaves them out of the body.
    pub(crate) encrypt: Option<bool>,
    pub(crate) verify: Option<bool>,
    pub(crate) wrap: Option<bool>,
    /// `CKA_SENSITIVE` and `CKA_EXTRACTABLE` of the private key, as asked (the defaults: a key
    /// that never leaves the HSM).
    pub(crate) sensitive: bool,
    pub(crate) extractable: bool,
}

impl Default for NewKeyUsage {
    fn default() -> Self {
        NewKeyUsage {
            decrypt: false,
            unwrap: false,
            derive: false,
            encrypt: None,
            verify: None,
            wrap: None,
            sensitive: true,
            extractable: false,
        }
    }
}

/// A key to create on the TSB.
pub struct NewKey<'a> {
    pub(crate) label: &'a str,
    /// The key's `id` (shown as `CKA_ID`, docs/objects-and-mechanisms.md); `None` leaves it out.
    pub(crate) id: Option<&'a str>,
    pub(crate) usage: NewKeyUsage,
    pub(crate) key_type: NewKeyType,
    pub(crate) password: Option<&'a Secret>,
    pub(crate) destroyable: bool,
    pub(crate) modifiable: bool,
    /// The `policy` document; never absent (a key created without one can never get one).
    pub(crate) policy: &'a PolicySpec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    label: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    algorithm: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    curve_oid: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<serde_json::Value>,
    attributes: CreateAttributes,
    policy: &'a PolicySpec,
}

/// The key attributes of a signing key that never leaves the HSM.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateAttributes {
    sign: bool,
    decrypt: bool,
    unwrap: bool,
    derive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wrap: Option<bool>,
    extractable: bool,
    sensitive: bool,
    modifiable: bool,
    copyable: bool,
    destroyable: bool,
}

impl TsbClient {
    /// `POST /v1/key` (201): creates a signing key with the usage flags asked for (by default
    /// sensitive and not extractable).
    pub(crate) fn create_key(&self, key: &NewKey<'_>) -> Result<(), TsbError> {
        let (algorithm, key_size, curve_oid) = match key.key_type {
            NewKeyType::Rsa(bits) => ("RSA", Some(bits), None),
            NewKeyType::Ec(oid) => ("EC", None, Some(oid)),
            NewKeyType::Ed25519 => ("ED", None, Some("1.3.101.112")),
            NewKeyType::PostQuantum(name) => (name, None, None),
        };
        let body = CreateBody {
            label: key.label,
            id: key.id,
            algorithm,
            key_size,
            curve_oid,
            password: key.password.map(password_chars),
            attributes: CreateAttributes {
                sign: true,
                decrypt: key.usage.decrypt,
                unwrap: key.usage.unwrap,
                derive: key.usage.derive,
                encrypt: key.usage.encrypt,
                verify: key.usage.verify,
                wrap: key.usage.wrap,
                extractable: key.usage.extractable,
                sensitive: key.usage.sensitive,
                modifiable: key.modifiable,
                copyable: false,
                destroyable: key.destroyable,
            },
            policy: key.policy,
        };
        let body = serde_json::to_value(&body).unwrap_or_default();
        let mut call = Call::new("POST", "POST /v1/key", "/v1/key".into(), Retry::NotSentOnly)
            .json_body(&body);
        if let Some(pw) = key.password {
            call.secrets.push(pw.expose());
        }
        log::debug!("TSB create key '{}' ({algorithm})", key.label);
        self.execute(&call, |_| Ok(()))
    }

    /// Deletes a key on the HSM (docs/tsb-api.md, "Creating and deleting keys"). A key with a
    /// password, or whose label does not fit in a path segment or holds a `/` (which a
    /// Tomcat- or Spring-fronted TSB refuses encoded), is deleted with `POST /v1/key/deleteKey`
    /// and `{"label", "password"?}` (the form that carries the password), any other key with
    /// `DELETE /v1/key/{label}` (the form of the release notes). A node that does not know the
    /// first form (404 without a TSB error, 405) is sent the other (`client/forms.rs`).
    pub(crate) fn delete_key(
        &self,
        label: &str,
        password: Option<&Secret>,
    ) -> Result<(), TsbError> {
        let mut body = json!({ "label": label });
        if let Some(pw) = password {
            body["password"] = password_chars(pw);
        }
        let mut post = Call::new(
            "POST",
            "POST /v1/key/deleteKey",
            "/v1/key/deleteKey".into(),
            Retry::NotSentOnly,
        )
        .json_body(&body);
        if let Some(pw) = password {
            post.secrets.push(pw.expose());
        }
        let delete = segment(label, "DELETE /v1/key/{label}").ok().map(|seg| {
            Call::new(
                "DELETE",
                "DELETE /v1/key/{label}",
                format!("/v1/key/{seg}"),
                Retry::NotSentOnly,
            )
        });
        let call = match delete {
            Some(delete) if password.is_none() && !label.contains('/') => {
                let post = post.with_fallback(Form::DeleteKeyPost, None);
                delete.with_fallback(Form::DeleteKeyDelete, Some(post))
            }
            delete => {
                let delete = delete.map(|d| d.with_fallback(Form::DeleteKeyDelete, None));
                post.with_fallback(Form::DeleteKeyPost, delete)
            }
        };
        self.execute(&call, |_| Ok(()))
    }
}
