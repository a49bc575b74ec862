//! The `/v1/` TSB REST endpoints (contract: `docs/tsb-api.md`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD as B64_NO_PAD};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::certs::{self, CertParams};
use crate::config::{CertificateFormat, KeyAlgorithm, PqcSignatureNames};
use crate::error::ApiError;
use crate::keys::{ParsedAlg, SigAlg, SimKey};
use crate::policy::Machine;
use crate::state::{Entry, Shared};
use crate::util::{opt_str, parse_body, password_field, req_str};

type S = State<Arc<Shared>>;
type ApiResult = Result<Response, ApiError>;

/// The `/v1/` routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/versionInfo", get(version_info))
        .route("/v1/licenseInfo", get(license_info))
        .route("/v1/keystore/statistics", get(keystore_statistics))
        .route("/v1/key", get(list_keys).post(crate::keygen::create_key))
        .route(
            "/v1/key/attributes",
            post(post_key_attributes).delete(crate::keygen::delete_key_labelled_attributes),
        )
        .route(
            "/v1/key/deleteKey",
            post(crate::keygen::delete_key_by_body)
                .delete(crate::keygen::delete_key_labelled_delete_key),
        )
        .route(
            "/v1/key/attestation/certificateChain",
            get(attestation_certificate_chain),
        )
        .route(
            "/v1/key/{*rest}",
            get(get_key_attributes).delete(crate::keygen::delete_key),
        )
        .route("/v1/certificate/import/plain", post(import_certificate))
        .route("/v1/certificate/synchronous/selfsign", post(selfsign))
        .route(
            "/v1/certificate/synchronous/request",
            post(certificate_request),
        )
        .route(
            "/v1/certificate/{*label}",
            get(get_certificate).delete(delete_certificate),
        )
        .route("/v1/synchronousSign", post(synchronous_sign))
        .route("/v1/sign", post(async_sign))
        .route("/v1/request/{id}", get(get_request).delete(delete_request))
}

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

/// `GET /v1/versionInfo` → `{"Version":"2.2.0"}`.
async fn version_info(State(s): S) -> ApiResult {
    ok(json!({"Version": s.cfg.version}))
}

/// `GET /v1/licenseInfo` → `{"clientFlags":[...]}`.
async fn license_info() -> ApiResult {
    ok(json!({"clientFlags": ["TSB_ENGINE", "REST_API", "SKA", "KEY_ATTESTATION", "SIMULATOR"]}))
}

/// `GET /v1/keystore/statistics` → `{"keyStoreStatistics":"..."}`.
async fn keystore_statistics(State(s): S) -> ApiResult {
    let keys = s.keys.read();
    let count = |alg: KeyAlgorithm| keys.iter().filter(|k| k.spec.algorithm == alg).count();
    let pqc = keys
        .iter()
        .filter(|k| k.spec.algorithm.is_post_quantum())
        .count();
    let text = format!(
        "Simulated Primus HSM (tsb-sim {}): objects={}, RSA={}, EC={}, ED={}, AES={}, PQC={}, certificates={}",
        env!("CARGO_PKG_VERSION"),
        keys.len(),
        count(KeyAlgorithm::Rsa),
        count(KeyAlgorithm::Ec),
        count(KeyAlgorithm::Ed),
        count(KeyAlgorithm::Aes),
        pqc,
        keys.iter().filter(|k| k.certificate.lock().is_some()).count(),
    );
    ok(json!({"keyStoreStatistics": text}))
}

/// `GET /v1/key` → JSON array of labels.
async fn list_keys(State(s): S) -> ApiResult {
    ok(json!(s.labels()))
}

/// `GET /v1/key/{label}/attributes` (label percent-decoded; may contain `/`). A key with a
/// password answers 620: use `POST /v1/key/attributes` with the password.
async fn get_key_attributes(State(s): S, Path(rest): Path<String>) -> ApiResult {
    let Some(label) = rest.strip_suffix("/attributes") else {
        return Ok(not_found(&format!("/v1/key/{rest}")));
    };
    let key = s.key(label)?;
    key.check_password(None)?;
    ok(crate::attestation::attributes_response(&key))
}

/// `GET /v1/key/attestation/certificateChain` → `{"attestationCertificateChain": [base64 DER]}`
/// (the TSB class `AttestationCertificateDto`; the path is the simulator's own choice, the
/// public material does not name it): the attestation key's chain, root last.
async fn attestation_certificate_chain() -> ApiResult {
    let chain: Vec<String> = crate::attestation::chain()
        .iter()
        .map(|c| B64.encode(c))
        .collect();
    ok(json!({ "attestationCertificateChain": chain }))
}

/// `POST /v1/key/attributes` with `{"label","password":["p","w"]}`.
async fn post_key_attributes(State(s): S, body: Bytes) -> ApiResult {
    let m = parse_body(&body)?;
    let label = req_str(&m, "label")?;
    let password = password_field(&m, "password")?;
    let key = s.key(label)?;
    key.check_password(password.as_deref())?;
    ok(crate::attestation::attributes_response(&key))
}

/// `GET /v1/certificate/{label}` → `{"label","certificate"}` (base64 DER by default); 404/652
/// when the key has no certificate.
async fn get_certificate(State(s): S, Path(label): Path<String>) -> ApiResult {
    let key = s.key(&label)?;
    let der = key
        .certificate
        .lock()
        .clone()
        .ok_or_else(|| ApiError::no_certificate(&label))?;
    ok(match s.cfg.certificate_format {
        CertificateFormat::Base64 => json!({"label": label, "certificate": B64.encode(&der)}),
        CertificateFormat::Pem => json!({"label": label, "certificate": certs::cert_pem(&der)}),
        CertificateFormat::RawCertificate => {
            json!({"label": label, "rawCertificate": B64.encode(&der)})
        }
    })
}

/// `DELETE /v1/certificate/{label}`: removes the key's certificate (404/652 if none).
async fn delete_certificate(State(s): S, Path(label): Path<String>) -> ApiResult {
    let key = s.key(&label)?;
    let removed = key.certificate.lock().take();
    match removed {
        Some(_) => Ok(StatusCode::OK.into_response()),
        None => Err(ApiError::no_certificate(&label)),
    }
}

/// `POST /v1/certificate/import/plain` with `{"label","certificate": base64 DER}`; echoes both.
async fn import_certificate(State(s): S, body: Bytes) -> ApiResult {
    let m = parse_body(&body)?;
    let label = req_str(&m, "label")?;
    let cert_b64 = req_str(&m, "certificate")?;
    let key = s.key(label)?;
    if cert_b64.contains("-----BEGIN") {
        return Err(ApiError::validation(
            "certificate must be base64 DER without PEM headers",
        ));
    }
    let der = decode_b64(cert_b64)
        .ok_or_else(|| ApiError::validation("certificate is not valid base64"))?;
    certs::parse_certificate(&der).map_err(|e| {
        ApiError::validation(format!("certificate is not an X.509 certificate: {e}"))
    })?;
    *key.certificate.lock() = Some(der);
    ok(json!({"label": label, "certificate": cert_b64}))
}

/// Common part of the two synchronous certificate endpoints.
fn cert_params(
    s: &Shared,
    m: &Map<String, Value>,
    subject_fields: &[&str],
) -> Result<(Arc<SimKey>, CertParams), ApiError> {
    let label = req_str(m, "signKeyName")?;
    let key = s.key(label)?;
    key.check_password(password_field(m, "keyPassword")?.as_deref())?;
    key.check_can_sign()?;
    if key.needs_approval() {
        return Err(ApiError::missing_approval(label));
    }
    let signature_algorithm = match opt_str(m, "signatureAlgorithm")? {
        None => certs::default_cert_algorithm(&key)
            .ok_or_else(|| ApiError::algorithm("The key cannot sign certificates"))?,
        Some(name) => parse_algorithm(name, &key, PqcSignatureNames::Both)?,
    };
    let validity_days = match m.get("validity") {
        None | Some(Value::Null) => 365,
        Some(v) => v
            .as_u64()
            .filter(|d| (1..=36_500).contains(d))
            .ok_or_else(|| ApiError::validation("validity must be a number of days (1..36500)"))?
            as u32,
    };
    let sources: Vec<&Map<String, Value>> = subject_fields
        .iter()
        .filter_map(|f| {
            if f.is_empty() {
                Some(m)
            } else {
                m.get(*f).and_then(Value::as_object)
            }
        })
        .collect();
    let mut subject = Vec::new();
    for name in certs::SUBJECT_ORDER {
        let value = sources.iter().find_map(|obj| {
            obj.get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        });
        if let (Some(v), Some(oid)) = (value, certs::subject_attribute_oid(name)) {
            subject.push((oid, v.to_string()));
        }
    }
    let cn = certs::subject_attribute_oid("commonName");
    if subject.last().map(|(o, _)| *o) != cn {
        return Err(ApiError::validation("commonName is required"));
    }
    let strings = |field: &str| -> Result<Vec<String>, ApiError> {
        match m.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::validation(format!("{field} must be an array of strings"))
                    })
                })
                .collect(),
            Some(_) => Err(ApiError::validation(format!(
                "{field} must be an array of strings"
            ))),
        }
    };
    let certificate_authority = match m.get("certificateAuthority") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::validation(
                "certificateAuthority must be a boolean",
            ))
        }
    };
    Ok((
        key,
        CertParams {
            subject,
            validity_days,
            key_usage: strings("keyUsage")?,
            extended_key_usage: strings("extendedKeyUsage")?,
            certificate_authority,
            signature_algorithm,
        },
    ))
}

/// `POST /v1/certificate/synchronous/selfsign` → `{"label","certificate": PEM,"keyVersion"}`;
/// the certificate is also stored as the key's certificate.
async fn selfsign(State(s): S, body: Bytes) -> ApiResult {
    let m = parse_body(&body)?;
    let (key, params) = cert_params(&s, &m, &["", "standardCertificateAttributes", "attributes"])?;
    let der = certs::self_signed(&key, &params)?;
    *key.certificate.lock() = Some(der.clone());
    ok(json!({
        "label": key.label(),
        "certificate": certs::cert_pem(&der),
        "keyVersion": null,
    }))
}

/// `POST /v1/certificate/synchronous/request` → `{"label","certificateSigningRequest": PEM,
/// "keyVersion"}`.
async fn certificate_request(State(s): S, body: Bytes) -> ApiResult {
    let m = parse_body(&body)?;
    let (key, params) = cert_params(&s, &m, &["standardCertificateAttributes", "attributes", ""])?;
    let der = certs::signing_request(&key, &params)?;
    ok(json!({
        "label": key.label(),
        "certificateSigningRequest": certs::pem_wrap("CERTIFICATE REQUEST", &der),
        "keyVersion": null,
    }))
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    B64.decode(s).or_else(|_| B64_NO_PAD.decode(s)).ok()
}

fn parse_algorithm(name: &str, key: &SimKey, names: PqcSignatureNames) -> Result<SigAlg, ApiError> {
    // A TSB knows either the documented or the newer post-quantum names, or both
    // (docs/tsb-api.md, "Post-quantum keys"); a name it does not know is an unknown enum value.
    let unknown = matches!(
        (names, name),
        (PqcSignatureNames::Documented, "ML_DSA" | "SLH_DSA")
            | (PqcSignatureNames::Current, "DILITHIUM" | "SPHINCS_PLUS")
    );
    if unknown {
        return Err(ApiError::validation(format!(
            "Unknown signatureAlgorithm '{name}'"
        )));
    }
    match SigAlg::parse(name) {
        ParsedAlg::Unknown => Err(ApiError::validation(format!(
            "Unknown signatureAlgorithm '{name}'"
        ))),
        ParsedAlg::Unsupported => Err(ApiError::algorithm(format!(
            "Signature algorithm {name} is not supported by key '{}'",
            key.label()
        ))),
        ParsedAlg::Known(alg) if !alg.fits(key.spec.algorithm) => {
            Err(ApiError::algorithm(format!(
                "Signature algorithm {name} is not supported by the {} key '{}'",
                key.spec.algorithm.as_str(),
                key.label()
            )))
        }
        ParsedAlg::Known(alg) => Ok(alg),
    }
}

/// `signRequest.context` (the TSB class `SignRequestDto`: "(Optional) Base64 encoded context
/// bytes for ML-DSA & SLH-DSA"): absent, `null` or `""` is the empty context; at most 255 bytes
/// (FIPS 204/205); any other key refuses a non-empty one (600).
fn sign_context(m: &Map<String, Value>, key: &SimKey) -> Result<Vec<u8>, ApiError> {
    let context = match opt_str(m, "context")? {
        None => return Ok(Vec::new()),
        Some(c) => {
            decode_b64(c).ok_or_else(|| ApiError::validation("context is not valid base64"))?
        }
    };
    if context.is_empty() {
        return Ok(context);
    }
    match crate::pqc::family(key.spec.algorithm) {
        Some(crate::pqc::Family::MlDsa | crate::pqc::Family::SlhDsa) => {}
        _ => {
            return Err(ApiError::validation(format!(
                "a context is only valid for ML-DSA and SLH-DSA keys, not for the {} key '{}'",
                key.spec.algorithm.as_str(),
                key.label()
            )))
        }
    }
    if context.len() > 255 {
        return Err(ApiError::validation(format!(
            "context is {} bytes, at most 255 are allowed",
            context.len()
        )));
    }
    Ok(context)
}

/// A validated and signed sign request.
struct Signed {
    key: Arc<SimKey>,
    entry: Entry,
}

/// Validation and signing common to `/v1/synchronousSign` and `/v1/sign`.
fn sign_request(
    s: &Shared,
    body: &[u8],
    endpoint: &'static str,
    hostile: Option<&crate::hostile::OnSign>,
) -> Result<Signed, ApiError> {
    let outer = parse_body(body)?;
    check_request_signature(&outer)?;
    let m = match outer.get("signRequest") {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::validation("signRequest must be an object")),
        None => return Err(ApiError::validation("Field 'signRequest' is required")),
    };
    let label = req_str(m, "signKeyName")?;
    let alg_name = req_str(m, "signatureAlgorithm")?;
    let payload_b64 = match m.get("payload") {
        Some(Value::String(p)) => p.as_str(),
        None | Some(Value::Null) => {
            return Err(ApiError::validation("Field 'payload' is required"))
        }
        Some(_) => return Err(ApiError::payload("payload must be a base64 string")),
    };
    match opt_str(m, "payloadType")? {
        None | Some("UNSPECIFIED") => {}
        Some(t @ ("ISO_20022" | "PDF" | "BTC" | "ETH")) => {
            return Err(ApiError::validation(format!(
                "payloadType {t} is not supported by the simulator"
            )))
        }
        Some(t) => return Err(ApiError::validation(format!("Unknown payloadType '{t}'"))),
    }
    let signature_type = opt_str(m, "signatureType")?;
    let raw = match signature_type {
        None | Some("DER") => false,
        Some("RAW") => true,
        Some("ETH") => return Err(ApiError::algorithm("signatureType ETH is not supported")),
        Some(t) => return Err(ApiError::validation(format!("Unknown signatureType '{t}'"))),
    };
    let password = password_field(m, "keyPassword")?;
    let meta_raw = opt_str(m, "metaData")?.map(str::to_string);
    let meta_sig = opt_str(m, "metaDataSignature")?.map(str::to_string);

    let key = s.key(label)?;
    key.check_password(password.as_deref())?;
    key.check_can_sign()?;
    let alg = parse_algorithm(alg_name, &key, s.cfg.pqc_signature_names)?;
    let context = sign_context(m, &key)?;
    let payload =
        decode_b64(payload_b64).ok_or_else(|| ApiError::payload("payload is not valid base64"))?;
    if payload.len() > s.cfg.max_payload_bytes {
        return Err(ApiError::payload(format!(
            "payload is {} bytes, the limit is {} bytes",
            payload.len(),
            s.cfg.max_payload_bytes
        )));
    }
    if endpoint == SYNC && key.needs_approval() {
        return Err(ApiError::missing_approval(label));
    }
    let signature = match hostile {
        None => key
            .material
            .sign_with_context(alg, &payload, raw, &context)?,
        Some(h) => crate::hostile::signature(s, &h.0, &key, alg, &payload, raw, &context)?,
    };
    let meta = meta_raw.as_deref().and_then(decode_b64).map(|bytes| {
        serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    });
    let now = Instant::now();
    let machine = match key.spec.policy.as_ref().filter(|p| p.needs_approval()) {
        None => Machine::executed(now),
        Some(policy) => Machine::pending(
            policy,
            now,
            s.cfg.time_scale,
            Duration::from_millis(s.cfg.approved_execution_delay_ms),
            key.spec
                .auto_approve_after_ms
                .or(s.cfg.auto_approve_after_ms)
                .map(Duration::from_millis),
        ),
    };
    let entry = Entry {
        id: None,
        key: label.to_string(),
        algorithm: alg_name.to_string(),
        signature_type: signature_type.map(str::to_string),
        endpoint,
        payload,
        meta_raw,
        meta,
        meta_sig,
        created_wall: SystemTime::now(),
        machine,
        signature,
    };
    Ok(Signed { key, entry })
}

/// `requestSignature` of a sign body: `null`, or the TSB's `SignatureDto`
/// `{"signature", "digestAlgorithm", "publicKey"}` that Securosys' Go client sends when an
/// application key pair is configured (`tsb-client-go`, `GenerateRequestSignature`). The shape
/// is checked (600 otherwise); the signature itself is not verified (a TSB verifies it only
/// against request-signing certificates it is configured with).
fn check_request_signature(outer: &Map<String, Value>) -> Result<(), ApiError> {
    let sig = match outer.get("requestSignature") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::validation(
                "requestSignature must be an object or null",
            ))
        }
    };
    for field in ["signature", "publicKey"] {
        let v = req_str(sig, field)
            .map_err(|_| ApiError::validation(format!("requestSignature.{field} is required")))?;
        if decode_b64(v).is_none() {
            return Err(ApiError::validation(format!(
                "requestSignature.{field} must be base64"
            )));
        }
    }
    match opt_str(sig, "digestAlgorithm")? {
        Some(
            "SHA-224" | "SHA-256" | "SHA-384" | "SHA-512" | "SHA3-224" | "SHA3-256" | "SHA3-384"
            | "SHA3-512",
        ) => Ok(()),
        other => Err(ApiError::validation(format!(
            "requestSignature.digestAlgorithm must name a digest (SHA-256, ...), got {other:?}"
        ))),
    }
}

const SYNC: &str = "POST /v1/synchronousSign";
const ASYNC: &str = "POST /v1/sign";

/// `POST /v1/synchronousSign` → 200 `{"signature"}`; 400/401 for keys that need approvals.
async fn synchronous_sign(
    State(s): S,
    hostile: Option<Extension<crate::hostile::OnSign>>,
    body: Bytes,
) -> ApiResult {
    let signed = sign_request(&s, &body, SYNC, hostile.as_deref())?;
    let signature = B64.encode(&signed.entry.signature);
    s.log_request(signed.entry);
    ok(json!({"signature": signature}))
}

/// `POST /v1/sign` → 201 `{"signRequestId"}`; executes at once when the key needs no
/// approvals, else files a PENDING request.
async fn async_sign(
    State(s): S,
    hostile: Option<Extension<crate::hostile::OnSign>>,
    hostile_id: Option<Extension<crate::hostile::RequestId>>,
    body: Bytes,
) -> ApiResult {
    let mut signed = sign_request(&s, &body, ASYNC, hostile.as_deref())?;
    let id = hostile_id
        .map(|Extension(id)| id.0)
        .or_else(|| s.request_id_override.lock().clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    signed.entry.id = Some(id.clone());
    log::debug!(
        "sign request {id} for key '{}' is {}",
        signed.key.label(),
        signed.entry.machine.status().as_str()
    );
    s.log_request(signed.entry);
    Ok((StatusCode::CREATED, Json(json!({"signRequestId": id}))).into_response())
}

/// `GET /v1/request/{id}` → `{"id","status","executionTime","approvedBy","notYetApprovedBy",
/// "rejectedBy","result"}`.
async fn get_request(State(s): S, Path(id): Path<String>) -> ApiResult {
    let body = s
        .with_request(&id, |e| e.status_json())
        .ok_or_else(|| ApiError::no_request(&id))?;
    ok(body)
}

/// `DELETE /v1/request/{id}`: cancels a PENDING/APPROVED request (status CANCELLED).
async fn delete_request(State(s): S, Path(id): Path<String>) -> ApiResult {
    s.with_request(&id, |e| e.machine.cancel(Instant::now()))
        .ok_or_else(|| ApiError::no_request(&id))?;
    Ok(StatusCode::OK.into_response())
}

/// Spring-Boot-like 404 body for unknown paths.
pub fn not_found(path: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "timestamp": crate::util::rfc3339(SystemTime::now()),
            "status": 404,
            "error": "Not Found",
            "path": path,
        })),
    )
        .into_response()
}

/// Spring-Boot-like 405 body.
pub fn method_not_allowed(path: &str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({
            "timestamp": crate::util::rfc3339(SystemTime::now()),
            "status": 405,
            "error": "Method Not Allowed",
            "path": path,
        })),
    )
        .into_response()
}

/// Spring-Boot-like 415 body (POST without `Content-Type: application/json`).
pub fn unsupported_media_type(path: &str) -> Response {
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Json(json!({
            "timestamp": crate::util::rfc3339(SystemTime::now()),
            "status": 415,
            "error": "Unsupported Media Type",
            "path": path,
        })),
    )
        .into_response()
}
