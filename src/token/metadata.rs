//! The `metaData` shown to approvers with an approval request (TSB contract, "Signing"): a JSON
//! object with the time, the application, the host, the operation and the configuration's own
//! `metaData`, signed with the application key pair when one is configured.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::config::Config;

/// The metaData JSON bytes and, with an application key pair, their signature.
pub fn build(config: &Config, key_label: &str, algorithm: &str) -> (Vec<u8>, Option<Vec<u8>>) {
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

pub(crate) fn process_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::env::args()
                .next()
                .map(|a| a.rsplit('/').next().unwrap_or(&a).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, H. Hinnant's algorithm).
pub fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_format() {
        let t = super::rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20"), "{t}");
        assert!(t.ends_with('Z'));
    }
}
