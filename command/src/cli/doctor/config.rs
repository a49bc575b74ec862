//! The configuration step: the file (where it was found, owner and mode), its fields and
//! secrets, and one line on what it configures (never a secret value).

use serde_json::{json, Value};

use super::report::{Report, Status};
use crate::cli::{find_config, mode_and_owner, take_warnings, Global};
use crate::config::{AuthType, Config, PinIs};

pub(super) fn check_config(global: &Global, r: &mut Report) -> Option<Config> {
    let found = find_config(global);
    let searched: Vec<Value> = found
        .searched
        .iter()
        .map(|(p, e)| json!({ "path": p, "exists": e }))
        .collect();
    let Some(path) = found.path.clone() else {
        r.fail(
            "config",
            format!(
                "no configuration file: none of {} exists (the module then offers no slot)",
                found.searched_list()
            ),
            Some("run `tsb-pkcs11 config init --url https://YOUR-TSB:8080`".into()),
        );
        r.checks
            .last_mut()
            .expect("just added")
            .with_details(json!({ "searched": searched }));
        return None;
    };
    take_warnings();
    let loaded = Config::from_file(&path);
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            r.fail("config", e.to_string(), crate::cli::config_fix(&e));
            return None;
        }
    };
    let (mode, owner) = mode_and_owner(&path).unwrap_or((0, 0));
    r.ok(
        "config",
        format!(
            "{} (found by {}; mode {mode:04o}, owner uid {owner})",
            path.display(),
            found.how
        ),
    )
    .with_details(json!({ "file": path, "how": found.how, "searched": searched }));
    let me = tsb_pkcs11_core::os::effective_uid();
    if owner != me && owner != 0 {
        r.warn(
            "config",
            format!("the file belongs to uid {owner}, not to this user (uid {me})"),
            Some(format!("chown {me} {}", path.display())),
        );
    }
    if mode & 0o004 != 0 {
        r.warn(
            "config",
            "the file is readable by every user of this host",
            Some(format!(
                "chmod o-r {} (or keep secrets in \"env:NAME\" / \"file:/path\" values)",
                path.display()
            )),
        );
    }
    r.warnings("config");
    summarise_fields(&config, r);
    super::files::check_files(&config, &path, r);
    Some(config)
}

/// One line on what is configured (never a secret value).
fn summarise_fields(c: &Config, r: &mut Report) {
    let auth = match c.auth_type {
        AuthType::Token => "TOKEN (JWT)",
        AuthType::Cert => "CERT (mTLS client certificate)",
        AuthType::None => "NONE",
    };
    let keys = &c.api_keys;
    let s = &c.pkcs11;
    let pin = match s.pin_is {
        PinIs::None => "none",
        PinIs::Token => "token",
        PinIs::ApiKey => "apiKey",
        PinIs::KeyPassword => "keyPassword",
    };
    r.add(
        "config",
        Status::Info,
        format!(
            "restApi {}, authType {auth}, API keys: {} KeyManagement, {} KeyOperation, {} Service; \
             token '{}', pinIs {pin}, {}",
            c.rest_apis.join(" "),
            keys.key_management.len(),
            keys.key_operation.len(),
            keys.service.len(),
            s.token_label,
            match &s.keys {
                Some(l) => format!("keys limited to {}", l.join(", ")),
                None => "every key of the TSB".to_string(),
            }
        ),
    )
    .with_details(json!({
        "restApi": c.rest_apis,
        "authType": auth,
        "token": c.token.is_some(),
        "certpath": c.client_cert,
        "keypath": c.client_key,
        "caPath": c.ca_path,
        "apiKeys": {
            "KeyManagementToken": keys.key_management.len(),
            "KeyOperationToken": keys.key_operation.len(),
            "ServiceToken": keys.service.len(),
        },
        "applicationKeyPair": c.application_key_pair.is_some(),
        "pkcs11": {
            "tokenLabel": s.token_label,
            "keys": s.keys,
            "pinIs": pin,
            "keyPasswords": s.key_passwords.keys().collect::<Vec<_>>(),
            "certificates": s.certificates,
            "approvalTimeoutSecs": s.approval_wait().as_secs(),
            "requestTimeoutMs": s.request_timeout.as_millis() as u64,
            "serverCertSha256": s.server_cert_sha256.is_some(),
        }
    }));
    if c.auth_type == AuthType::Token && c.token.is_none() && s.pin_is != PinIs::Token {
        r.warn(
            "config",
            "authType is TOKEN but no token is configured",
            Some("set \"token\" (e.g. \"env:TSB_JWT\"), or authType NONE".into()),
        );
    }
    if c.auth_type == AuthType::Cert && (c.client_cert.is_none() || c.client_key.is_none()) {
        r.fail(
            "config",
            "authType is CERT but certpath or keypath is missing",
            Some("set certpath and keypath to the PEM client certificate and key".into()),
        );
    }
}
