//! The keys step: the key list, and every key as the token would see it (shown or left out,
//! and why; the fields and values of its attributes the module does not know).

use serde_json::Value;

use super::auth::{explain_auth, Role};
use super::report::{Report, Status};
use crate::cli::keys::{inspect_key, labels, KeyReport};
use crate::config::Config;
use crate::tsb::{KeyList, TsbClient};

/// `key_list`: the key list the KeyManagementToken check read, if it read one.
pub(super) fn check_keys(
    config: &Config,
    client: &TsbClient,
    key_list: Option<KeyList>,
    r: &mut Report,
) {
    if let Some(field) = key_list.as_ref().and_then(|l| l.wrapped_in) {
        r.warn(
            "unknown",
            format!(
                "GET /v1/key: the labels come in the field \"{field}\" of an object, not as a plain array of labels (the module reads them anyway)"
            ),
            None,
        );
    }
    // The list read by the auth step (the module reads it once too), or the allow-list.
    let listed = match key_list {
        Some(l) if config.pkcs11.keys.is_none() => Ok(l.labels),
        _ => labels(client, config),
    };
    let labels = match listed {
        Ok(l) => l,
        Err(e) => {
            let (m, fix) = explain_auth(config, Role::KeyManagement, &e);
            r.fail("keys", m, fix);
            return;
        }
    };
    if labels.is_empty() {
        r.fail(
            "keys",
            "the TSB lists no key",
            Some("create keys on the HSM partition the TSB serves, or check that the credentials are for the right partition".into()),
        );
        return;
    }
    let mut shown = 0;
    for label in &labels {
        match inspect_key(client, config, label) {
            Ok(k) => {
                if k.shown {
                    shown += 1;
                }
                report_key(r, &k);
            }
            Err(e) => {
                let (m, fix) = explain_auth(config, Role::KeyManagement, &e);
                r.fail("key", format!("'{label}': {m}"), fix);
            }
        }
        r.warnings("key");
    }
    if shown == 0 {
        r.fail(
            "keys",
            format!(
                "none of the {} key(s) would be shown on the token",
                labels.len()
            ),
            Some("see why each key is left out above".into()),
        );
    } else {
        r.ok(
            "keys",
            format!(
                "{shown} of {} key(s) shown on token '{}'",
                labels.len(),
                config.pkcs11.token_label
            ),
        );
    }
}

fn report_key(r: &mut Report, k: &KeyReport) {
    let details = serde_json::to_value(k).unwrap_or(Value::Null);
    if k.shown {
        let mut m = format!(
            "'{}': shown, {}; approval: {}; certificate: {}; password: {}",
            k.label,
            k.key_type.as_deref().unwrap_or("?"),
            k.approval,
            k.certificate.as_deref().unwrap_or("none"),
            k.password
        );
        for n in &k.notes {
            m.push_str(&format!("; {n}"));
        }
        r.ok("key", m).with_details(details);
    } else {
        let m = format!(
            "'{}': left out: {}",
            k.label,
            k.left_out.as_deref().unwrap_or("?")
        );
        let status = if k.fix.is_some() {
            Status::Warn
        } else {
            Status::Info
        };
        let c = r.add("key", status, m);
        c.fix = k.fix.clone();
        c.with_details(details);
    }
    r.unknown_fields(
        &format!("attributes of key '{}'", k.label),
        &k.unknown_fields,
    );
    if !k.unknown_values.is_empty() {
        r.warn(
            "unknown",
            format!(
                "key '{}': value(s) this module does not know: {}",
                k.label,
                k.unknown_values.join(", ")
            ),
            Some(
                "the key may be left out or misread; report it with `tsb-pkcs11 doctor --json`"
                    .into(),
            ),
        );
    }
}
