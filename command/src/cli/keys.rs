//! `tsb-pkcs11 keys`, and the per-key inspection `doctor` shares: which keys the token shows,
//! which it leaves out and why, and each object's PKCS#11 URI (RFC 7512).

use clap::Args;
use serde::Serialize;

use super::common::{hex, load_config, Global, Out};
use crate::config::Config;
use crate::crypto::{Certificate, PublicKey};
use crate::token::objects::{key_from_attributes, Skipped};
use crate::tsb::{KeyAttributes, TsbClient, TsbError};

#[derive(Args, Debug)]
pub(crate) struct KeysArgs {
    /// Also list the keys the token leaves out, with the reason.
    #[arg(long)]
    all: bool,
}

/// What the token makes of one TSB key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyReport {
    pub(crate) label: String,
    /// Whether the token shows the key (private key, public key, certificate objects).
    pub(crate) shown: bool,
    /// Why it is left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) left_out: Option<String>,
    /// The likely fix when a key is left out for a reason the configuration can change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
    /// `RSA 2048`, `EC secp256r1`, `Ed25519`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_type: Option<String>,
    /// `CKA_ID`, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// `none`, or who must approve each signature.
    pub(crate) approval: String,
    pub(crate) blocked: bool,
    /// Where the key's certificate comes from (`TSB`, `pkcs11.certificates`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) certificate: Option<String>,
    /// `none`, `configured`, `needed (not configured)`.
    pub(crate) password: String,
    /// PKCS#11 URIs of the key's objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uri: Option<Uris>,
    /// Fields of the attributes answer the module does not know.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) unknown_fields: Vec<String>,
    /// Values the module does not know (`algorithm`, approver `type`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) unknown_values: Vec<String>,
    /// Notes (e.g. a certificate that is not used).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) notes: Vec<String>,
    /// The SubjectPublicKeyInfo (base64 DER), for checking a test signature elsewhere.
    #[serde(skip)]
    pub(crate) public_key: Option<Vec<u8>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Uris {
    pub(crate) private_key: String,
    pub(crate) public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) certificate: Option<String>,
}

impl KeyReport {
    fn new(label: &str) -> KeyReport {
        KeyReport {
            label: label.to_string(),
            shown: false,
            left_out: None,
            fix: None,
            key_type: None,
            id: None,
            approval: "none".into(),
            blocked: false,
            certificate: None,
            password: "none".into(),
            uri: None,
            unknown_fields: Vec::new(),
            unknown_values: Vec::new(),
            notes: Vec::new(),
            public_key: None,
        }
    }

    fn left_out(mut self, why: impl Into<String>, fix: Option<String>) -> KeyReport {
        self.left_out = Some(why.into());
        self.fix = fix;
        self
    }
}

/// Percent-encodes a value of a PKCS#11 URI path attribute (RFC 7512 §2.3): everything but
/// the unreserved characters, so the URI is safe in shells and configuration files alike.
pub(crate) fn pct(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkcs11:token=..;object=..;id=..;type=..` (RFC 7512); the id is always fully encoded.
pub(crate) fn uri(token: &str, label: &str, id: &[u8], kind: &str) -> String {
    let id: String = id.iter().map(|b| format!("%{b:02X}")).collect();
    format!(
        "pkcs11:token={};object={};id={id};type={kind}",
        pct(token.as_bytes()),
        pct(label.as_bytes())
    )
}

fn key_type(p: &PublicKey) -> String {
    match p {
        PublicKey::Rsa { bits, .. } => format!("RSA {bits}"),
        PublicKey::Ec { curve, .. } => format!("EC {}", curve.name()),
        PublicKey::Ed25519 { .. } => "Ed25519".to_string(),
        PublicKey::MlDsa { set, .. } => set.name().to_string(),
        PublicKey::SlhDsa { set, .. } => set.name().to_string(),
        PublicKey::Hss(h) => format!("HSS/LMS {} level(s)", h.level_count()),
    }
}

/// Reads one key's attributes (as the module does, with its configured password) and decides
/// what the token makes of it. `Err` is a failure to ask the TSB (network, authentication).
pub(crate) fn inspect_key(
    client: &TsbClient,
    config: &Config,
    label: &str,
) -> Result<KeyReport, TsbError> {
    let mut r = KeyReport::new(label);
    let password = config.pkcs11.key_passwords.get(label).cloned();
    if password.is_some() {
        r.password = "configured".into();
    }
    // As the module reads it (`POST /v1/key/attributes`, `GET` on a TSB without it), with the
    // fields of the answer the module does not know.
    let fetched =
        client
            .key_attributes_checked(label, password.as_ref())
            .map(|(attrs, unknown)| {
                r.unknown_fields = unknown;
                attrs
            });
    let mut attrs = match fetched {
        Ok(a) => a,
        Err(e) if e.tsb_code() == Some(650) || e.http_status() == Some(404) => {
            let fix = config
                .pkcs11
                .keys
                .is_some()
                .then(|| format!("remove '{label}' from pkcs11.keys, or create the key"));
            return Ok(r.left_out("the TSB has no key with this label", fix));
        }
        Err(e) if e.tsb_code() == Some(620) => {
            return Ok(if password.is_some() {
                r.left_out(
                    "the configured key password is wrong",
                    Some(format!("correct pkcs11.keyPasswords.{label}")),
                )
            } else {
                r.password = "needed (not configured)".into();
                r.left_out(
                    "the key is password-protected and no password is configured",
                    Some(format!(
                        "add \"keyPasswords\": {{\"{label}\": \"env:NAME\"}} to pkcs11 (or use \"pinIs\": \"keyPassword\")"
                    )),
                )
            });
        }
        Err(e) => return Err(e),
    };
    if attrs.label.is_empty() {
        attrs.label = label.to_string();
    }
    r.unknown_values = unknown_values(&attrs);
    r.public_key = attrs.public_key.clone();
    let key = match key_from_attributes(&attrs, 0) {
        Ok(k) => k,
        Err(Skipped::CannotSign(why)) => {
            return Ok(r.left_out(format!("{} ({})", why, attrs.algorithm), None))
        }
    };
    r.shown = true;
    r.key_type = Some(key_type(&key.public));
    r.id = Some(hex(&key.id));
    r.blocked = key.blocked;
    if key.needs_approval {
        r.approval = format!("needs approval: {}{}", key.approvers, timing(&attrs));
    }
    if key.blocked {
        r.notes
            .push("blocked on the HSM: signing fails (CKR_KEY_FUNCTION_NOT_PERMITTED)".into());
    }
    if config.pkcs11.certificates.contains_key(label) {
        r.certificate = Some("pkcs11.certificates".into());
    } else {
        match client.certificate(label) {
            Ok(Some(bytes)) => match Certificate::from_any(&bytes) {
                Ok(c) if c.public_key == key.public => r.certificate = Some("TSB".into()),
                Ok(_) => r
                    .notes
                    .push("the TSB holds a certificate for another public key: not shown".into()),
                Err(e) => r
                    .notes
                    .push(format!("the TSB's certificate cannot be read: {e}")),
            },
            Ok(None) => {}
            Err(e) => r.notes.push(format!("certificate not read: {e}")),
        }
    }
    let token = &config.pkcs11.token_label;
    r.uri = Some(Uris {
        private_key: uri(token, label, &key.id, "private"),
        public_key: uri(token, label, &key.id, "public"),
        certificate: r
            .certificate
            .as_ref()
            .map(|_| uri(token, label, &key.id, "cert")),
    });
    Ok(r)
}

/// ", timelock 60 s, timeout 600 s" of the key's use rule, when set.
fn timing(attrs: &KeyAttributes) -> String {
    let Some(rule) = attrs.policy.as_ref().and_then(|p| p.rule_use.as_ref()) else {
        return String::new();
    };
    let mut out = String::new();
    if let Some(t) = rule
        .tokens
        .iter()
        .map(|t| t.timelock)
        .max()
        .filter(|t| *t > 0)
    {
        out.push_str(&format!(", timelock {t} s"));
    }
    if let Some(t) = rule
        .tokens
        .iter()
        .map(|t| t.timeout)
        .max()
        .filter(|t| *t > 0)
    {
        out.push_str(&format!(", timeout {t} s"));
    }
    out
}

fn unknown_values(attrs: &KeyAttributes) -> Vec<String> {
    let mut out = Vec::new();
    if !crate::tsb::models::keys::known_algorithm(&attrs.algorithm) {
        out.push(format!("algorithm \"{}\"", attrs.algorithm));
    }
    let rules = attrs.policy.iter().flat_map(|p| {
        [&p.rule_use, &p.rule_block, &p.rule_unblock, &p.rule_modify]
            .into_iter()
            .flatten()
    });
    for rule in rules {
        for t in &rule.tokens {
            for g in &t.groups {
                for a in &g.approvals {
                    if crate::config::policy::approver_type(&a.kind).is_none() {
                        out.push(format!("approver type \"{}\"", a.kind));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The labels the token would consider: the allow-list, else the TSB's key list.
pub(crate) fn labels(client: &TsbClient, config: &Config) -> Result<Vec<String>, TsbError> {
    match &config.pkcs11.keys {
        Some(list) => Ok(list.clone()),
        None => client.list_keys(),
    }
}

pub(crate) fn run(global: &Global, args: &KeysArgs, out: &Out) -> Result<i32, String> {
    let config = load_config(global)?;
    let client = TsbClient::new(&config).map_err(|e| format!("{e}"))?;
    let labels = labels(&client, &config)
        .map_err(|e| format!("{e} (run `tsb-pkcs11 doctor` to find out why)"))?;
    let mut reports = Vec::new();
    for label in &labels {
        let r = inspect_key(&client, &config, label)
            .map_err(|e| format!("key '{label}': {e} (run `tsb-pkcs11 doctor`)"))?;
        if r.shown || args.all {
            reports.push(r);
        }
    }
    super::common::take_warnings();
    if out.json {
        out.json_doc(&serde_json::json!({
            "ok": true,
            "token": config.pkcs11.token_label,
            "keys": reports,
        }));
        return Ok(0);
    }
    if reports.is_empty() {
        out.line(&format!(
            "token '{}': no key (run `tsb-pkcs11 keys --all` or `tsb-pkcs11 doctor` to see why)",
            config.pkcs11.token_label
        ));
        return Ok(1);
    }
    out.line(&format!(
        "token '{}' at {}",
        config.pkcs11.token_label,
        config.rest_apis.join(", ")
    ));
    for r in &reports {
        out.line("");
        if !r.shown {
            out.line(&format!(
                "{}  (left out: {})",
                r.label,
                r.left_out.as_deref().unwrap_or("?")
            ));
            if let Some(f) = &r.fix {
                out.line(&format!("  fix:         {f}"));
            }
            continue;
        }
        out.line(&r.label);
        out.line(&format!(
            "  type:        {}",
            r.key_type.as_deref().unwrap_or("?")
        ));
        out.line(&format!("  CKA_ID:      {}", r.id.as_deref().unwrap_or("")));
        out.line(&format!("  approval:    {}", r.approval));
        out.line(&format!(
            "  certificate: {}",
            r.certificate.as_deref().unwrap_or("none")
        ));
        if r.password != "none" {
            out.line(&format!("  password:    {}", r.password));
        }
        if let Some(u) = &r.uri {
            out.line(&format!("  URI:         {}", u.private_key));
            if let Some(c) = &u.certificate {
                out.line(&format!("  certificate URI: {c}"));
            }
        }
        for n in &r.notes {
            out.line(&format!("  note:        {n}"));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_percent_encode_per_rfc_7512() {
        assert_eq!(
            uri("TSB", "ec-p256", &[0, 4], "private"),
            "pkcs11:token=TSB;object=ec-p256;id=%00%04;type=private"
        );
        // Separators of the URI itself, spaces, '/' and non-ASCII are encoded.
        assert_eq!(
            uri("My Token", "a/b;c=d?é", b"k", "cert"),
            "pkcs11:token=My%20Token;object=a%2Fb%3Bc%3Dd%3F%C3%A9;id=%6B;type=cert"
        );
    }
}
