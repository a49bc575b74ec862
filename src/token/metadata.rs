//! The `metaData` shown to approvers with an approval request (TSB contract, "Signing"): a JSON
//! object with the time, the application, the host, the operation and the configuration's own
//! `metaData`, signed with the application key pair when one is configured.

use serde_json::{Map, Value};

use crate::config::Config;
use crate::os::{host_name, process_name, rfc3339_now};

/// The metaData JSON bytes and, with an application key pair, their signature.
pub(crate) fn build(
    config: &Config,
    key_label: &str,
    algorithm: &str,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut m = Map::new();
    m.insert("time".into(), Value::String(rfc3339_now()));
    m.insert("app".into(), Value::String(process_name()));
    m.insert("host".into(), Value::String(host_name()));
    m.insert("type".into(), Value::String("Sign".into()));
    m.insert("operation".into(), Value::String("PKCS#11 C_Sign".into()));
    m.insert("keyLabel".into(), Value::String(key_label.into()));
    m.insert("signatureAlgorithm".into(), Value::String(algorithm.into()));
    m.insert("pid".into(), Value::from(std::process::id()));
    for (k, v) in &config.meta_data {
        m.insert(k.clone(), v.clone());
    }
    let json = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
    let signature = config.application_key_pair.as_ref().and_then(|pair| {
        match crate::crypto::sign_metadata(pair.private_key.expose().as_bytes(), &json) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("cannot sign metaData with the application key pair: {e}");
                None
            }
        }
    });
    (json, signature)
}
