//! Key management: `POST /v1/key` (generate a key on the simulated HSM) and
//! `DELETE /v1/key/{label}` (contract: "Creating and deleting keys").
//!
//! A created key is an ordinary [`KeySpec`] key afterwards: its `policy` is converted to a
//! [`PolicySpec`](crate::config::PolicySpec) (so signing and approvals work exactly as for
//! configured keys), and the policy document as sent is kept to be shown again by the
//! attributes call.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{Curve, KeyAlgorithm, KeySpec, ATTRIBUTE_NAMES};
use crate::error::ApiError;
use crate::keys::{KeyMaterial, SimKey};
use crate::policy::TsbPolicy;
use crate::state::Shared;
use crate::util::{parse_body, password_field, req_str};

/// Body of `POST /v1/key` (the TSB's `CreateKeyDto`). Unknown fields, such as
/// `addressFormat`, are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateKeyRequest {
    label: Option<String>,
    /// Optional; shown as `json.id` by the attributes call (the id Securosys' own PKCS#11
    /// provider uses).
    id: Option<String>,
    algorithm: Option<String>,
    /// "Either the algorithm or the algorithm_oid must be set" (TSB `CreateKeyDto`).
    algorithm_oid: Option<String>,
    key_size: Option<u32>,
    curve_oid: Option<String>,
    password: Option<Password>,
    attributes: Option<BTreeMap<String, Option<bool>>>,
    policy: Option<TsbPolicy>,
}

/// Attributes a creation request may carry but the attributes response does not show: the
/// public-key flags (accepted on asymmetric keys since TSB 1.15.1) and the derivation flags.
/// Securosys' clients send them (the Go client's tests set `encrypt`, `verify` and `wrap`; the
/// key creation samples of the TSB documentation also `bip32` and `slip10`). The simulator
/// accepts and ignores them.
const CREATE_ONLY_ATTRIBUTES: [&str; 5] = ["encrypt", "verify", "wrap", "bip32", "slip10"];

/// The algorithm of a creation request that names only its OID.
fn algorithm_of_oid(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.10045.2.1" => "EC",
        "1.3.101.112" => "ED",
        _ => return None,
    })
}

/// A password: an array of one-character strings (Jackson's `char[]`), or a plain string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Password {
    Chars(Vec<String>),
    Text(String),
}

impl Password {
    fn into_string(self) -> Result<String, ApiError> {
        match self {
            Password::Text(s) => Ok(s),
            Password::Chars(chars) => {
                if chars.iter().any(|c| c.chars().count() != 1) {
                    return Err(ApiError::validation(
                        "Field 'password' must be an array of one-character strings",
                    ));
                }
                Ok(chars.concat())
            }
        }
    }
}

/// The key type and size requested, as a [`KeySpec`] without extras.
fn key_type(req: &CreateKeyRequest, label: &str) -> Result<KeySpec, ApiError> {
    let algorithm = match (
        req.algorithm.as_deref().filter(|a| !a.is_empty()),
        req.algorithm_oid.as_deref().filter(|a| !a.is_empty()),
    ) {
        (Some(a), _) => a,
        (None, Some(oid)) => algorithm_of_oid(oid)
            .or_else(|| crate::pqc::algorithm_of_oid(oid).map(|a| a.as_str()))
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "Unsupported algorithmOid '{oid}' (the simulator creates RSA, EC, ED, \
                     ML-DSA, SLH-DSA and LMS keys)"
                ))
            })?,
        (None, None) => {
            return Err(ApiError::validation(
                "Field 'algorithm' (or 'algorithmOid') is required",
            ))
        }
    };
    match algorithm {
        "RSA" => {
            if req.curve_oid.is_some() {
                return Err(ApiError::validation("curveOid is not valid for RSA keys"));
            }
            match req.key_size {
                Some(bits @ (2048 | 3072 | 4096)) => Ok(KeySpec::rsa(label, bits)),
                Some(bits) => Err(ApiError::validation(format!(
                    "Unsupported RSA keySize {bits} (2048, 3072 or 4096)"
                ))),
                None => Err(ApiError::validation("Field 'keySize' is required for RSA")),
            }
        }
        "EC" => {
            let oid = req
                .curve_oid
                .as_deref()
                .ok_or_else(|| ApiError::validation("Field 'curveOid' is required for EC"))?;
            let curve = [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1]
                .into_iter()
                .find(|c| c.oid() == oid)
                .ok_or_else(|| {
                    ApiError::validation(format!("Unsupported curveOid '{oid}' for EC"))
                })?;
            Ok(KeySpec::ec(label, curve))
        }
        "ED" => match req.curve_oid.as_deref() {
            None | Some("1.3.101.112") => Ok(KeySpec::ed25519(label)),
            Some(oid) => Err(ApiError::validation(format!(
                "Unsupported curveOid '{oid}' for ED (only Ed25519, 1.3.101.112)"
            ))),
        },
        // ML-DSA, SLH-DSA, LMS: no size, no curve; LMS keys get the TSB's parameters (one
        // level, H5, W1), which the creation request cannot choose (docs/tsb-api.md,
        // "Post-quantum keys").
        other => match KeyAlgorithm::from_tsb_name(other).filter(|a| a.is_post_quantum()) {
            Some(alg) => {
                if req.key_size.is_some() || req.curve_oid.is_some() {
                    return Err(ApiError::validation(format!(
                        "keySize and curveOid are not valid for {other} keys"
                    )));
                }
                Ok(KeySpec::post_quantum(label, alg))
            }
            None => Err(ApiError::validation(format!(
                "Unsupported algorithm '{other}' (the simulator creates RSA, EC, ED, ML-DSA, \
                 SLH-DSA and LMS keys)"
            ))),
        },
    }
}

/// Validates a creation request and builds the key's spec and stored policy document.
fn build_spec(body: &[u8]) -> Result<(KeySpec, Option<TsbPolicy>), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::json(format!("Request body is not valid JSON: {e}")))?;
    let req: CreateKeyRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::validation(format!("Invalid key creation request: {e}")))?;
    let label = req
        .label
        .clone()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::validation("Field 'label' is required"))?;
    let mut spec = key_type(&req, &label)?;
    if let Some(id) = &req.id {
        if id.is_empty() {
            return Err(ApiError::validation("Field 'id' must not be empty"));
        }
        spec.id = Some(id.clone());
    }
    for (name, value) in req.attributes.iter().flatten() {
        if CREATE_ONLY_ATTRIBUTES.contains(&name.as_str()) {
            continue;
        }
        if !ATTRIBUTE_NAMES.contains(&name.as_str()) {
            return Err(ApiError::validation(format!(
                "Unknown key attribute '{name}'"
            )));
        }
        if let Some(v) = value {
            spec.attributes.insert(name.clone(), *v);
        }
    }
    if spec.algorithm.is_post_quantum() {
        for name in ["decrypt", "unwrap", "derive"] {
            if spec.attributes.get(name) == Some(&true) {
                return Err(ApiError::validation(format!(
                    "A {} key can only sign: attribute '{name}' must be false",
                    spec.algorithm.as_str()
                )));
            }
        }
    }
    if let Some(p) = req.password {
        let p = p.into_string()?;
        if p.is_empty() {
            return Err(ApiError::validation("Field 'password' must not be empty"));
        }
        spec.password = Some(p);
    }
    if let Some(policy) = &req.policy {
        spec.policy = Some(policy.to_spec()?);
        spec.blocked = policy.blocked();
    }
    spec.validate()
        .map_err(|e| ApiError::validation(e.to_string()))?;
    Ok((spec, req.policy))
}

/// `POST /v1/key` → 201 with an empty body. Duplicate label → 400 / 608; invalid input → 600.
pub(crate) async fn create_key(
    State(s): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (spec, policy) = build_spec(&body)?;
    if s.key(&spec.label).is_ok() {
        return Err(ApiError::key_exists(&spec.label));
    }
    // Fresh material for every creation (never the configured keys' caches): a key deleted and
    // created again is a different key. RSA generation is slow: off the async workers.
    let label = spec.label.clone();
    let key = tokio::task::spawn_blocking(move || -> Result<SimKey, ApiError> {
        let material = KeyMaterial::generate(&spec).map_err(|e| ApiError::hsm(e.to_string()))?;
        let mut key =
            SimKey::new(spec, Arc::new(material)).map_err(|e| ApiError::hsm(e.to_string()))?;
        key.policy_doc = policy;
        Ok(key)
    })
    .await
    .map_err(|e| ApiError::hsm(format!("key generation failed: {e}")))??;
    s.insert_new_key(key)?;
    log::info!("created key '{label}'");
    Ok(StatusCode::CREATED.into_response())
}

/// `DELETE /v1/key/{label}` → 200 with an empty body; 404 / 650 unknown label; 400 / 614 when
/// the key's `destroyable` attribute is false. No password is asked for.
pub(crate) async fn delete_key(
    State(s): State<Arc<Shared>>,
    Path(label): Path<String>,
) -> Result<Response, ApiError> {
    delete(&s, &label, None)
}

/// `POST /v1/key/deleteKey` with `{"label", "password"?}`: the form Securosys' Go client
/// (`tsb-client-go`, `RemoveKey`) sends. As `DELETE /v1/key/{label}`, and a key with a password
/// needs it (620).
pub(crate) async fn delete_key_by_body(
    State(s): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let m = parse_body(&body)?;
    let label = req_str(&m, "label")?;
    let password = password_field(&m, "password")?;
    delete(&s, label, Some(password.as_deref()))
}

/// `DELETE /v1/key/attributes`: the key labelled `attributes` (the router reads the path as
/// the attributes endpoint first).
pub(crate) async fn delete_key_labelled_attributes(
    State(s): State<Arc<Shared>>,
) -> Result<Response, ApiError> {
    delete(&s, "attributes", None)
}

/// `DELETE /v1/key/deleteKey`: the key labelled `deleteKey`.
pub(crate) async fn delete_key_labelled_delete_key(
    State(s): State<Arc<Shared>>,
) -> Result<Response, ApiError> {
    delete(&s, "deleteKey", None)
}

/// Deletes a key; `password` is `Some` for the body form (whose password is checked).
fn delete(s: &Shared, label: &str, password: Option<Option<&str>>) -> Result<Response, ApiError> {
    let key = s.key(label)?;
    if let Some(given) = password {
        key.check_password(given)?;
    }
    if !key.attribute("destroyable") {
        return Err(ApiError::forbidden(format!(
            "Key '{label}' is not destroyable"
        )));
    }
    if !s.remove_key(label) {
        return Err(ApiError::no_key(label));
    }
    let cancelled = s.cancel_requests_of(label);
    if cancelled > 0 {
        log::info!("cancelled {cancelled} open request(s) of deleted key '{label}'");
    }
    log::info!("deleted key '{label}'");
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_policy_needs_no_approval() {
        let body = br#"{"label":"k","algorithm":"EC","curveOid":"1.3.132.0.10",
            "policy":{"ruleUse":null,"ruleBlock":null,"ruleUnblock":null,"ruleModify":null,
            "keyStatus":{"blocked":false}}}"#;
        let (spec, doc) = build_spec(body).unwrap();
        assert_eq!(spec.effective_curve(), Curve::Secp256k1);
        let policy = spec.policy.expect("a policy");
        assert!(policy.tokens.is_empty() && !policy.needs_approval());
        assert!(doc.is_some());
    }

    #[test]
    fn quorum_policy_converts() {
        let body = br#"{"label":"k","algorithm":"ED","policy":{"ruleUse":{"tokens":[{"name":"t",
            "timelock":120,"timeout":0,"groups":[{"name":"g","quorum":2,"approvals":[
            {"type":"public_key","name":"alice","value":"QUFB"},
            {"type":"public-key","value":"QkJC"},
            {"type":"onboarded_approver_certificate","name":"carol"}]}]}]}}}"#;
        let (spec, _) = build_spec(body).unwrap();
        let p = spec.policy.unwrap();
        assert!(p.needs_approval());
        assert_eq!(p.tokens[0].timelock, 120);
        assert_eq!(p.tokens[0].groups[0].approvers, ["alice", "QkJC", "carol"]);
    }

    #[test]
    fn refusals() {
        for (body, needle) in [
            (
                r#"{"algorithm":"EC","curveOid":"1.2.840.10045.3.1.7"}"#,
                "label",
            ),
            (
                r#"{"label":"k","algorithm":"RSA","keySize":1024}"#,
                "keySize",
            ),
            (
                r#"{"label":"k","algorithm":"EC","curveOid":"1.2.3"}"#,
                "curveOid",
            ),
            (r#"{"label":"k","algorithm":"DSA"}"#, "DSA"),
            (
                r#"{"label":"k","algorithm":"ED","attributes":{"fly":true}}"#,
                "fly",
            ),
            (
                r#"{"label":"k","algorithm":"ED","password":["ab"]}"#,
                "password",
            ),
            (
                r#"{"label":"k","algorithm":"ED","policy":{"ruleUse":{"tokens":[{"timelock":30,"groups":[]}]}}}"#,
                "multiple of 60",
            ),
            (
                r#"{"label":"k","algorithm":"ED","policy":{"ruleUse":{"tokens":[{"groups":[{"quorum":2,"approvals":[{"type":"public_key","name":"a","value":"QQ=="}]}]}]}}}"#,
                "quorum",
            ),
            (
                r#"{"label":"k","algorithm":"ED","policy":{"ruleModify":{"tokens":[{"timeout":61}]}}}"#,
                "ruleModify",
            ),
        ] {
            let e = build_spec(body.as_bytes()).expect_err(body);
            assert_eq!(e.code, 600, "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        assert_eq!(build_spec(b"{").unwrap_err().code, 621);
    }
}
