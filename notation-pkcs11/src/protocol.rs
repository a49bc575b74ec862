//! Request and response types of the Notation plugin contract, version 1.0
//! (`notaryproject/specifications`, `specs/plugin-extensibility.md`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The plugin's name: Notation runs it as `notation-pkcs11` ("Package and release a plugin").
pub const PLUGIN_NAME: &str = "pkcs11";
/// The only contract version this plugin implements ("Plugin contract").
pub const CONTRACT_VERSION: &str = "1.0";
/// The capability this plugin implements ("Plugin metadata", `capabilities`).
pub const CAPABILITY_SIGNATURE_GENERATOR_RAW: &str = "SIGNATURE_GENERATOR.RAW";

/// The commands of the contract that this plugin implements.
pub const COMMAND_GET_PLUGIN_METADATA: &str = "get-plugin-metadata";
pub const COMMAND_DESCRIBE_KEY: &str = "describe-key";
pub const COMMAND_GENERATE_SIGNATURE: &str = "generate-signature";

/// `pluginConfig`: a map of strings passed as-is by Notation ("Plugin configuration").
pub type PluginConfig = BTreeMap<String, String>;

/// Error codes of `describe-key` and `generate-signature`
/// ("Error codes for describe-key and generate-signature").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// A required field is empty, a value is malformed or invalid, or the key was not found.
    ValidationError,
    /// The request's `contractVersion` is not supported.
    UnsupportedContractVersion,
    /// Authentication or authorization to use the key failed.
    AccessDenied,
    /// The operation timed out and Notation may retry it.
    Timeout,
    /// The operation was throttled and Notation may retry it.
    Throttled,
    /// Any other error.
    Error,
}

/// A failed command: serialized as the contract's error response on stderr
/// ("Plugin contract": non-zero exit code 1 with a JSON error response in `stderr`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginError {
    pub error_code: ErrorCode,
    pub error_message: String,
}

impl PluginError {
    pub fn new(error_code: ErrorCode, error_message: impl Into<String>) -> Self {
        PluginError {
            error_code,
            error_message: error_message.into(),
        }
    }

    pub fn validation(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, msg)
    }

    pub fn access_denied(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::AccessDenied, msg)
    }

    pub fn error(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Error, msg)
    }

    /// The JSON error response.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("error response serializes")
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.error_code, self.error_message)
    }
}

impl std::error::Error for PluginError {}

/// `get-plugin-metadata` request ("Plugin metadata"). Its only attribute, an optional
/// `pluginConfig`, does not change the (static) metadata, so nothing is kept.
#[derive(Debug, Default, Deserialize)]
pub struct GetMetadataRequest {}

/// `get-plugin-metadata` response ("Plugin metadata"); all attributes are required.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMetadataResponse {
    pub name: String,
    pub description: String,
    pub version: String,
    pub url: String,
    pub supported_contract_versions: Vec<String>,
    pub capabilities: Vec<String>,
}

/// `describe-key` request ("describe-key"). Its `contractVersion` is checked by
/// [`parse_request`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeKeyRequest {
    pub key_id: String,
    #[serde(default)]
    pub plugin_config: Option<PluginConfig>,
}

/// `describe-key` response ("describe-key").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeKeyResponse {
    pub key_id: String,
    pub key_spec: String,
}

/// `generate-signature` request ("generate-signature"). Its `contractVersion` is checked
/// by [`parse_request`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateSignatureRequest {
    pub key_id: String,
    #[serde(default)]
    pub plugin_config: Option<PluginConfig>,
    pub key_spec: String,
    pub hash_algorithm: String,
    /// Base64 (standard alphabet) of the payload to sign; for JWS, the JWS signing input.
    pub payload: String,
}

/// `generate-signature` response ("generate-signature"); all attributes are required.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateSignatureResponse {
    pub key_id: String,
    /// Base64 of the raw signature (RSASSA-PSS bytes, or ECDSA `r‖s`).
    pub signature: String,
    pub signing_algorithm: String,
    /// Base64 DER certificates, leaf first, root last.
    pub certificate_chain: Vec<String>,
}

/// Parses a request read from stdin.
///
/// Malformed JSON is a `VALIDATION_ERROR`. When `versioned`, the request must carry a
/// `contractVersion` equal to [`CONTRACT_VERSION`] (else `UNSUPPORTED_CONTRACT_VERSION`);
/// that is checked before the rest of the request, so a newer Notation gets the right error
/// even if the request's shape changed. Unknown attributes are ignored, as "Plugin contract"
/// requires for forward compatibility.
pub fn parse_request<T: DeserializeOwned>(input: &[u8], versioned: bool) -> Result<T, PluginError> {
    let value: serde_json::Value = serde_json::from_slice(input)
        .map_err(|e| PluginError::validation(format!("malformed JSON request: {e}")))?;
    if !value.is_object() {
        return Err(PluginError::validation(
            "malformed request: expected a JSON object",
        ));
    }
    if versioned {
        match value.get("contractVersion") {
            None | Some(serde_json::Value::Null) => {
                return Err(PluginError::validation(
                    "malformed request: contractVersion is required",
                ))
            }
            Some(serde_json::Value::String(v)) if v == CONTRACT_VERSION => {}
            Some(serde_json::Value::String(v)) if v.is_empty() => {
                return Err(PluginError::validation(
                    "malformed request: contractVersion is required",
                ))
            }
            Some(v) => {
                let shown = v.as_str().map(str::to_string).unwrap_or(v.to_string());
                return Err(PluginError::new(
                    ErrorCode::UnsupportedContractVersion,
                    format!(
                        "contract version {shown:?} is not supported; this plugin supports \"{CONTRACT_VERSION}\""
                    ),
                ));
            }
        }
    }
    serde_json::from_value(value)
        .map_err(|e| PluginError::validation(format!("malformed request: {e}")))
}

/// Serializes a response.
pub fn to_json<T: Serialize>(response: &T) -> Result<String, PluginError> {
    serde_json::to_string(response)
        .map_err(|e| PluginError::error(format!("cannot serialize the response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_shape() {
        let e = PluginError::new(ErrorCode::UnsupportedContractVersion, "nope");
        assert_eq!(
            e.to_json(),
            r#"{"errorCode":"UNSUPPORTED_CONTRACT_VERSION","errorMessage":"nope"}"#
        );
        for (code, s) in [
            (ErrorCode::ValidationError, "VALIDATION_ERROR"),
            (ErrorCode::AccessDenied, "ACCESS_DENIED"),
            (ErrorCode::Timeout, "TIMEOUT"),
            (ErrorCode::Throttled, "THROTTLED"),
            (ErrorCode::Error, "ERROR"),
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), s);
        }
    }

    #[test]
    fn parse_checks_version_first() {
        let r: Result<DescribeKeyRequest, _> = parse_request(br#"{"contractVersion":"2.0"}"#, true);
        assert_eq!(
            r.unwrap_err().error_code,
            ErrorCode::UnsupportedContractVersion
        );
        let r: Result<DescribeKeyRequest, _> = parse_request(br#"{"keyId":"k"}"#, true);
        assert_eq!(r.unwrap_err().error_code, ErrorCode::ValidationError);
        let r: Result<DescribeKeyRequest, _> = parse_request(b"{not json", true);
        assert_eq!(r.unwrap_err().error_code, ErrorCode::ValidationError);
        let r: Result<DescribeKeyRequest, _> = parse_request(br#"[1]"#, true);
        assert_eq!(r.unwrap_err().error_code, ErrorCode::ValidationError);
    }

    #[test]
    fn parse_ignores_unknown_attributes() {
        let r: DescribeKeyRequest = parse_request(
            br#"{"contractVersion":"1.0","keyId":"k","pluginConfig":{"a":"b"},"future":1}"#,
            true,
        )
        .unwrap();
        assert_eq!(r.key_id, "k");
        assert_eq!(r.plugin_config.unwrap()["a"], "b");
        let r: DescribeKeyRequest = parse_request(
            br#"{"contractVersion":"1.0","keyId":"k","pluginConfig":null}"#,
            true,
        )
        .unwrap();
        assert!(r.plugin_config.is_none());
    }

    #[test]
    fn responses_use_camel_case() {
        let r = GenerateSignatureResponse {
            key_id: "k".into(),
            signature: "c2ln".into(),
            signing_algorithm: "ECDSA-SHA-256".into(),
            certificate_chain: vec!["YQ==".into()],
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&r).unwrap()).unwrap();
        assert_eq!(v["keyId"], "k");
        assert_eq!(v["signingAlgorithm"], "ECDSA-SHA-256");
        assert_eq!(v["certificateChain"][0], "YQ==");
    }
}
