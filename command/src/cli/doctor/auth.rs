//! Authentication per API-key role: one call of each role's endpoint with the module's
//! credentials (`versionInfo`, the key list, a request status), and why a refused role was
//! refused, with the fix.

use super::report::{Failure, Report};
use crate::config::{AuthType, Config, PinIs, Secret};
use crate::tsb::{KeyList, TsbClient, TsbError, TsbErrorKind};

/// A random request id (no such request exists), for checking the KeyOperationToken role.
fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::cli::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
    Service,
    KeyManagement,
    KeyOperation,
}

impl Role {
    const ALL: [Role; 3] = [Role::Service, Role::KeyManagement, Role::KeyOperation];
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Service => "ServiceToken",
            Role::KeyManagement => "KeyManagementToken",
            Role::KeyOperation => "KeyOperationToken",
        }
    }
    fn keys(self, c: &Config) -> &Vec<Secret> {
        match self {
            Role::Service => &c.api_keys.service,
            Role::KeyManagement => &c.api_keys.key_management,
            Role::KeyOperation => &c.api_keys.key_operation,
        }
    }
    fn keys_mut(self, c: &mut Config) -> &mut Vec<Secret> {
        match self {
            Role::Service => &mut c.api_keys.service,
            Role::KeyManagement => &mut c.api_keys.key_management,
            Role::KeyOperation => &mut c.api_keys.key_operation,
        }
    }
}

/// What one role's probe returned.
/// What one role's call returned.
enum Answer {
    /// The TSB version and the fields of `versionInfo` the module does not know.
    Version(Option<String>, Vec<String>),
    /// The key list (`None`: with an allow-list, one key was read instead).
    Keys(Option<KeyList>),
    Operation,
}

/// One call of the role's endpoint: `versionInfo`, the key list, a request status (an
/// unknown id answers 651 when the caller is authenticated).
fn call(client: &TsbClient, role: Role, config: &Config) -> Result<Answer, TsbError> {
    match role {
        Role::Service => client
            .version_info_checked()
            .map(|(version, unknown)| Answer::Version(version, unknown)),
        Role::KeyManagement => match &config.pkcs11.keys {
            // With an allow-list the module never lists keys; read one key instead.
            Some(list) if !list.is_empty() => client
                .key_attributes(&list[0], config.pkcs11.key_passwords.get(&list[0]))
                .map(|_| Answer::Keys(None))
                .or_else(|e| match e.tsb_code() {
                    Some(650) | Some(620) => Ok(Answer::Keys(None)),
                    _ => Err(e),
                }),
            _ => client.list_keys_checked().map(|l| Answer::Keys(Some(l))),
        },
        Role::KeyOperation => match client.request_status(&random_id()) {
            Err(e) if e.tsb_code() == Some(651) => Ok(Answer::Operation),
            Err(e) => Err(e),
            Ok(_) => Ok(Answer::Operation),
        },
    }
}

/// Authentication per role, `versionInfo` and the key list. `None` when nothing more can be
/// checked; else the key list (`None` inside when it was not read).
pub(super) fn check_auth(
    config: &Config,
    client: &TsbClient,
    r: &mut Report,
) -> Option<Option<KeyList>> {
    let mut key_list = None;
    let mut any_ok = false;
    for role in Role::ALL {
        let keys = role.keys(config);
        let with = if keys.is_empty() {
            "no API key".to_string()
        } else {
            format!("{} API key(s)", keys.len())
        };
        match call(client, role, config) {
            Ok(answer) => {
                any_ok = true;
                r.ok("auth", format!("{}: accepted ({with})", role.name()));
                match answer {
                    Answer::Version(version, unknown) => {
                        let version = version.unwrap_or_else(|| "?".to_string());
                        r.ok("version", format!("TSB version {version}"));
                        r.unknown_fields("GET /v1/versionInfo", &unknown);
                    }
                    Answer::Keys(list) => key_list = list,
                    Answer::Operation => {}
                }
            }
            Err(e) => {
                let (message, fix) = explain_auth(config, role, &e);
                r.fail("auth", format!("{}: {message}", role.name()), fix);
            }
        }
        r.warnings("auth");
    }
    if !any_ok {
        return None;
    }
    Some(key_list)
}

/// Why a role's call failed, and the fix.
pub(super) fn explain_auth(config: &Config, role: Role, e: &TsbError) -> Failure {
    let m = e.to_string();
    match &e.kind {
        TsbErrorKind::Http { status: 401, code: Some(617), .. } => {
            if config.pkcs11.pin_is == PinIs::Token {
                (m, Some("the JWT is the PIN (pinIs token): doctor checks with --pin-env NAME".into()))
            } else if config.auth_type != AuthType::Token || config.token.is_none() {
                (m, Some("the TSB requires a JWT: set authType TOKEN and token".into()))
            } else {
                (
                    format!("the TSB refused the JWT: {m}"),
                    Some("the token is expired, malformed or for another TSB: put a fresh JWT in `token`".into()),
                )
            }
        }
        TsbErrorKind::Http { status: 401, code: Some(631), .. } => explain_api_key(config, role, m),
        TsbErrorKind::Http { status: 401, code: Some(632), .. } => (
            m,
            Some("the TSB requires a client certificate: set authType CERT, certpath and keypath".into()),
        ),
        TsbErrorKind::Http { status: 403, .. } => (
            m,
            Some(format!("the credentials lack the right for {}: ask the TSB operator", role.name())),
        ),
        TsbErrorKind::Http { status: 404, code: None, .. } => (
            m,
            Some("no TSB API at this URL: restApi must be the TSB's base URL (e.g. https://host:8080)".into()),
        ),
        TsbErrorKind::Http { status, .. } if *status >= 500 => (
            m,
            Some("the TSB or the HSM behind it has a problem: try again, then ask the TSB operator".into()),
        ),
        TsbErrorKind::InvalidResponse(_) => (
            m,
            Some("the answer is not the TSB's: is a proxy in between, or restApi pointing elsewhere?".into()),
        ),
        TsbErrorKind::NotSent(_) | TsbErrorKind::Timeout(_) | TsbErrorKind::Transport(_) => (
            m,
            Some("see the network and TLS checks; raise pkcs11.requestTimeoutMs if the TSB is slow".into()),
        ),
        _ => (m, None),
    }
}

/// A 631 (invalid API key): no key configured, a key of another role, or an invalid key.
fn explain_api_key(config: &Config, role: Role, m: String) -> Failure {
    let keys = role.keys(config);
    if keys.is_empty() {
        return (
            format!("the TSB requires a {} API key: {m}", role.name()),
            Some(format!(
                "add \"apiKeys\": {{\"{}\": [\"env:NAME\"]}}",
                role.name()
            )),
        );
    }
    // Is one of this role's keys a key of another role?
    for (i, k) in keys.iter().enumerate() {
        for other in Role::ALL.into_iter().filter(|o| *o != role) {
            let mut c = config.clone();
            *other.keys_mut(&mut c) = vec![k.clone()];
            let Ok(client) = TsbClient::new(&c) else {
                continue;
            };
            if call(&client, other, &c).is_ok() {
                crate::cli::take_warnings();
                return (
                    format!(
                        "apiKeys.{}[{i}] is refused here but accepted as a {} key",
                        role.name(),
                        other.name()
                    ),
                    Some(format!(
                        "the key is in the wrong list: move it to apiKeys.{} and put the {} key in apiKeys.{}",
                        other.name(),
                        role.name(),
                        role.name()
                    )),
                );
            }
        }
    }
    crate::cli::take_warnings();
    (
        format!("every apiKeys.{} key was refused: {m}", role.name()),
        Some(format!(
            "put a valid {} key in apiKeys.{}",
            role.name(),
            role.name()
        )),
    )
}
