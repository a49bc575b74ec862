//! From the fields as written ([`super::schema`]) to a checked [`Config`]: defaults, checks
//! across fields, URL normalisation.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::schema::{JournalValue, RawConfig, RawModuleSettings, RestApis, Text};
use super::secrets::{note_literal_secret, resolve_path, Secret};
use super::settings::{
    ApiKeys, ApplicationKeyPair, AuthType, Config, ConfigError, ModuleSettings, NodeStrategy,
    PinIs, ProxySetting, RequestJournal,
};
use super::shape::truncate;

/// Errors about one field of one file.
pub(super) struct Fields<'a> {
    pub(super) source: &'a str,
    pub(super) base_dir: Option<&'a Path>,
}

impl Fields<'_> {
    pub(super) fn err(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.to_string(),
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    /// A path field: empty is absent; relative to the file's folder.
    fn path(&self, v: Option<Text>) -> Option<std::path::PathBuf> {
        let s = v?.0;
        let s = s.trim();
        (!s.is_empty()).then(|| resolve_path(s, self.base_dir))
    }
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", truncate(s, 40))
}

/// Checks the fields together and fills in defaults. `unknown` collects unknown fields.
pub(super) fn build(
    raw: RawConfig,
    fx: &Fields<'_>,
    unknown: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let rest_apis = rest_apis(raw.rest_api, fx)?;
    let token = raw.token.filter(|t| !t.is_empty());
    let client_cert = fx.path(raw.cert_path);
    let client_key = fx.path(raw.key_path);

    let mut api_keys = ApiKeys::default();
    for (role, list) in raw.api_keys.map(|o| o.0).unwrap_or_default() {
        let list = list.map(|l| l.0).unwrap_or_default();
        match role.to_ascii_lowercase().as_str() {
            "keymanagementtoken" => api_keys.key_management.extend(list),
            "keyoperationtoken" => api_keys.key_operation.extend(list),
            "servicetoken" => api_keys.service.extend(list),
            _ => unknown.push(format!("apiKeys.{role}")),
        }
    }

    let application_key_pair = match raw.application_key_pair.map(|o| o.0) {
        None => None,
        Some(pair) => {
            let public = pair.public_key.map(|t| t.0);
            let private = pair.private_key.filter(|s| !s.is_empty());
            match (public, private) {
                (None, None) => None,
                (Some(p), None) if p.is_empty() => None,
                (Some(public_key), Some(private_key)) if !public_key.trim().is_empty() => {
                    if !is_base64(&public_key) {
                        return Err(fx.err("applicationKeyPair.publicKey", "not valid base64"));
                    }
                    if !is_base64(private_key.expose()) {
                        return Err(fx.err("applicationKeyPair.privateKey", "not valid base64"));
                    }
                    Some(ApplicationKeyPair { private_key })
                }
                (_, None) => {
                    return Err(fx.err(
                        "applicationKeyPair.privateKey",
                        "missing (publicKey is set)",
                    ))
                }
                (_, Some(_)) => {
                    return Err(fx.err(
                        "applicationKeyPair.publicKey",
                        "missing (privateKey is set)",
                    ))
                }
            }
        }
    };

    let meta_data = raw.meta_data.map(|o| o.0).unwrap_or_default();
    let ca_path = fx.path(raw.ca_path);
    let pkcs11 = match raw.pkcs11 {
        Some(o) => module_settings(o.0, fx)?,
        None => ModuleSettings::default(),
    };

    let auth_type = match raw.auth_type.map(|t| t.0) {
        Some(s) if !s.trim().is_empty() => match s.trim().to_ascii_uppercase().as_str() {
            "TOKEN" => AuthType::Token,
            "CERT" => AuthType::Cert,
            "NONE" => AuthType::None,
            _ => {
                return Err(fx.err(
                    "authType",
                    format!("expected TOKEN, CERT or NONE, got {}", quoted(&s)),
                ))
            }
        },
        _ => {
            if token.is_some() || pkcs11.pin_is == PinIs::Token {
                AuthType::Token
            } else {
                AuthType::None
            }
        }
    };
    if auth_type == AuthType::Cert {
        if client_cert.is_none() {
            return Err(fx.err(
                "certpath",
                "missing: authType CERT needs certpath and keypath",
            ));
        }
        if client_key.is_none() {
            return Err(fx.err(
                "keypath",
                "missing: authType CERT needs certpath and keypath",
            ));
        }
    }
    if auth_type == AuthType::Token && token.is_none() && pkcs11.pin_is != PinIs::Token {
        log::warn!(
            "config {}: authType TOKEN but no token is set (and pkcs11.pinIs is not \"token\")",
            fx.source
        );
    }
    match (&client_cert, &client_key) {
        (Some(_), None) => return Err(fx.err("keypath", "missing: certpath is set")),
        (None, Some(_)) => return Err(fx.err("certpath", "missing: keypath is set")),
        _ => {}
    }

    Ok(Config {
        source: fx.source.to_string(),
        rest_apis,
        auth_type,
        token,
        client_cert,
        client_key,
        api_keys,
        application_key_pair,
        meta_data,
        ca_path,
        pkcs11,
    })
}

/// `restApi`: one URL or a non-empty array of distinct URLs, each normalised.
fn rest_apis(v: Option<RestApis>, fx: &Fields<'_>) -> Result<Vec<String>, ConfigError> {
    const MISSING: &str = "missing: the TSB URL, e.g. https://tsb:8080";
    match v {
        Some(RestApis::One(s)) if !s.trim().is_empty() => {
            Ok(vec![normalise_url(&s).map_err(|m| fx.err("restApi", m))?])
        }
        Some(RestApis::Many(list)) if !list.is_empty() => {
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let field = format!("restApi[{i}]");
                if s.trim().is_empty() {
                    return Err(fx.err(&field, "expected a URL, got an empty string"));
                }
                let url = normalise_url(s).map_err(|m| fx.err(&field, m))?;
                if let Some(first) = out.iter().position(|u| *u == url) {
                    return Err(fx.err(&field, format!("the same TSB as restApi[{first}] ({url})")));
                }
                out.push(url);
            }
            Ok(out)
        }
        Some(RestApis::Many(_)) => Err(fx.err(
            "restApi",
            "an empty array: give at least one TSB URL, e.g. https://tsb:8080",
        )),
        _ => Err(fx.err("restApi", MISSING)),
    }
}

fn module_settings(raw: RawModuleSettings, fx: &Fields<'_>) -> Result<ModuleSettings, ConfigError> {
    let mut s = ModuleSettings::default();

    if let Some(Text(label)) = raw.token_label {
        if label.is_empty() {
            return Err(fx.err("pkcs11.tokenLabel", "must not be empty"));
        }
        if label.len() > 32 {
            return Err(fx.err(
                "pkcs11.tokenLabel",
                format!("at most 32 bytes, got {} bytes", label.len()),
            ));
        }
        s.token_label = label;
    }
    if let Some(Text(serial)) = raw.token_serial {
        let printable = serial.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if serial.is_empty()
            || serial.chars().count() > 16
            || !printable
            || serial.starts_with(' ')
            || serial.ends_with(' ')
        {
            return Err(fx.err(
                "pkcs11.tokenSerial",
                format!(
                    "expected 1 to 16 printable ASCII characters, not starting or ending with a \
                     space, got {}",
                    quoted(&serial)
                ),
            ));
        }
        s.token_serial = Some(serial);
    }
    s.keys = raw.keys.map(|k| k.0);

    if let Some(n) = raw.approval_timeout_secs {
        s.approval_timeout = Some(Duration::from_secs(n.0));
    }
    growing_interval(
        fx,
        ("pollIntervalMs", raw.poll_interval_ms.map(|n| n.0)),
        ("pollIntervalMaxMs", raw.poll_interval_max_ms.map(|n| n.0)),
        (&mut s.poll_interval, &mut s.poll_interval_max),
    )?;
    if let Some(n) = raw.cache_ttl_secs {
        s.cache_ttl = Duration::from_secs(n.0);
    }

    s.key_passwords = raw
        .key_passwords
        .map(|o| o.0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(label, secret)| Some((label, secret.filter(|s| !s.is_empty())?)))
        .collect::<HashMap<String, Secret>>();

    if let Some(Text(pin)) = raw.pin_is {
        let norm: String = pin
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        s.pin_is = match norm.as_str() {
            "" | "none" => PinIs::None,
            "token" => PinIs::Token,
            "apikey" => PinIs::ApiKey,
            "keypassword" => PinIs::KeyPassword,
            _ => {
                return Err(fx.err(
                    "pkcs11.pinIs",
                    format!(
                        "expected none, token, apiKey or keyPassword, got {}",
                        quoted(&pin)
                    ),
                ))
            }
        };
    }
    if let Some(b) = raw.verify_signatures {
        s.verify_signatures = b.0;
    }

    for (label, path) in raw.certificates.map(|o| o.0).unwrap_or_default() {
        match fx.path(path) {
            Some(p) => {
                s.certificates.insert(label, p);
            }
            None => {
                return Err(fx.err(
                    &format!("pkcs11.certificates.{label}"),
                    "expected a file path, got an empty value",
                ))
            }
        }
    }

    if let Some(n) = raw.connect_timeout_ms {
        s.connect_timeout = Duration::from_millis(n.0);
    }
    if let Some(n) = raw.request_timeout_ms {
        s.request_timeout = Duration::from_millis(n.0);
    }
    if let Some(n) = raw.connection_max_idle_ms {
        s.connection_max_idle = Duration::from_millis(n.0);
    }
    if let Some(n) = raw.retries {
        s.retries = n.0 as u32;
    }
    if let Some(Text(pin)) = raw.server_cert_sha256 {
        if !pin.trim().is_empty() {
            s.server_cert_sha256 = Some(parse_sha256_hex(&pin).ok_or_else(|| {
                fx.err(
                    "pkcs11.serverCertSha256",
                    format!(
                        "expected 64 hex digits (colons allowed), got {}",
                        quoted(&pin)
                    ),
                )
            })?);
        }
    }
    if let Some(b) = raw.allow_insecure_http {
        s.allow_insecure_http = b.0;
    }
    if let Some(Text(proxy)) = raw.proxy {
        let proxy = proxy.trim();
        if proxy.chars().any(char::is_control) {
            // Never quoted: the URL may hold a password.
            return Err(fx.err("pkcs11.proxy", "contains control characters"));
        }
        s.proxy = if proxy.is_empty() {
            ProxySetting::Environment
        } else if proxy.eq_ignore_ascii_case("none") {
            ProxySetting::None
        } else {
            let authority = proxy.split_once("://").map_or(proxy, |(_, r)| r);
            let userinfo = authority.split(['/', '?', '#']).next().unwrap_or("");
            if userinfo
                .rsplit_once('@')
                .is_some_and(|(u, _)| u.contains(':'))
            {
                note_literal_secret();
            }
            ProxySetting::Url(Secret::new(proxy.to_string()))
        };
    }
    s.proxy_password = raw.proxy_password.filter(|p| !p.is_empty());
    if let Some(Text(list)) = raw.no_proxy {
        if list.chars().any(char::is_control) {
            return Err(fx.err("pkcs11.noProxy", "contains control characters"));
        }
        s.no_proxy = Some(list);
    }

    if let Some(Text(strategy)) = raw.node_strategy {
        s.node_strategy = match strategy.trim().to_ascii_lowercase().as_str() {
            "failover" => NodeStrategy::Failover,
            "spread" => NodeStrategy::Spread,
            _ => {
                return Err(fx.err(
                    "pkcs11.nodeStrategy",
                    format!("expected failover or spread, got {}", quoted(&strategy)),
                ))
            }
        };
    }
    growing_interval(
        fx,
        ("nodeDownBackoffMs", raw.node_down_backoff_ms.map(|n| n.0)),
        (
            "nodeDownBackoffMaxMs",
            raw.node_down_backoff_max_ms.map(|n| n.0),
        ),
        (&mut s.node_down_backoff, &mut s.node_down_backoff_max),
    )?;

    s.new_key_policy = raw.new_key_policy.map(|o| o.0);
    for (name, policy) in raw.policy_profiles.map(|o| o.0).unwrap_or_default() {
        if name.trim().is_empty() {
            return Err(fx.err("pkcs11.policyProfiles", "a profile name must not be empty"));
        }
        s.policy_profiles.insert(name, policy.0);
    }
    if let Some(b) = raw.allow_key_deletion {
        s.allow_key_deletion = b.0;
    }
    if let Some(journal) = raw.request_journal {
        s.request_journal = match journal {
            JournalValue::On(true) => RequestJournal::Default,
            JournalValue::On(false) => RequestJournal::Off,
            JournalValue::Path(p) => RequestJournal::File(resolve_path(&p, fx.base_dir)),
        };
    }
    Ok(s)
}

/// Base64 as the application key is read later ([`crate::crypto::encoding::decode_base64`]:
/// standard or URL-safe, padded or not, whitespace ignored).
/// An interval that grows up to a cap (`pollIntervalMs` / `pollIntervalMaxMs`,
/// `nodeDownBackoffMs` / `nodeDownBackoffMaxMs`), in milliseconds: a given cap must not be
/// below the interval; without one, the default cap rises to the interval.
fn growing_interval(
    fx: &Fields<'_>,
    (base_name, base_ms): (&str, Option<u64>),
    (max_name, max_ms): (&str, Option<u64>),
    (base, max): (&mut Duration, &mut Duration),
) -> Result<(), ConfigError> {
    if let Some(ms) = base_ms {
        *base = Duration::from_millis(ms);
    }
    match max_ms {
        Some(ms) if Duration::from_millis(ms) < *base => Err(fx.err(
            &format!("pkcs11.{max_name}"),
            format!("must be ≥ {base_name} ({}), got {ms}", base.as_millis()),
        )),
        Some(ms) => {
            *max = Duration::from_millis(ms);
            Ok(())
        }
        None => {
            *max = (*max).max(*base);
            Ok(())
        }
    }
}

fn is_base64(s: &str) -> bool {
    crate::crypto::encoding::decode_base64(s.as_bytes()).is_ok()
}

/// Normalises a `restApi` URL: scheme and host in lower case, no default port, no trailing
/// `/` or `/v1`. Refuses other schemes, credentials, queries, fragments and whitespace.
///
/// Parsed by the url crate (WHATWG URL); what it forgives and a configuration should not hold
/// is refused first, as written: whitespace and control characters (it drops tabs and
/// newlines), and a missing or doubled `//` (it reads `https:host` and `https:///host` as
/// `https://host`).
pub(crate) fn normalise_url(url: &str) -> Result<String, String> {
    let text = url.trim();
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains whitespace".to_string());
    }
    let parsed = url::Url::parse(text).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            "expected an http:// or https:// URL".to_string()
        }
        url::ParseError::EmptyHost => "the URL has no host".to_string(),
        e => format!("not a valid URL: {e}"),
    })?;
    let scheme = parsed.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "expected an http:// or https:// URL, got scheme \"{}\"",
            truncate(scheme, 20)
        ));
    }
    // The scheme as written has the length of the parsed one (ASCII, only its case may differ).
    let Some(after) = text.get(scheme.len()..).and_then(|t| t.strip_prefix("://")) else {
        return Err("expected an http:// or https:// URL".to_string());
    };
    if after.is_empty() || after.starts_with(['/', '\\']) {
        return Err("the URL has no host".to_string());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not supported; use token or apiKeys".to_string());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("the URL must not have a query or fragment".to_string());
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "the URL has no host".to_string())?;
    let mut path = parsed.path().to_string();
    loop {
        let before = path.len();
        while path.ends_with('/') {
            path.pop();
        }
        if path.to_ascii_lowercase().ends_with("/v1") {
            path.truncate(path.len() - 3);
        }
        if path.len() == before {
            break;
        }
    }
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{}://{host}{port}{path}", parsed.scheme()))
}

/// Parses a SHA-256 in hex; colons, spaces and a `sha256:` prefix are allowed.
pub(crate) fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .unwrap_or(s);
    let digits: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_ascii_whitespace())
        .collect();
    let bytes = hex::decode(digits).ok()?;
    bytes.try_into().ok()
}
