//! `GET /v1/versionInfo`: `{"Version": "2.2.0"}` (some TSBs write `version`).

use serde::Deserialize;
use serde_json::Value;

use super::lenient;

#[derive(Deserialize)]
struct VersionWire {
    #[serde(rename = "Version", default, deserialize_with = "lenient::opt_string")]
    upper: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    version: Option<String>,
}

/// The TSB's version (`None` when the answer has none), and the JSON paths of the fields the
/// module does not know, for `tsb-pkcs11 doctor`.
pub fn parse_version_info_checked(v: &Value) -> Result<(Option<String>, Vec<String>), String> {
    if !v.is_object() {
        return Err("expected a JSON object".to_string());
    }
    let mut unknown = Vec::new();
    let wire: VersionWire = lenient::from_value_tracked(v, "", &mut unknown)?;
    Ok((wire.upper.or(wire.version), unknown))
}
