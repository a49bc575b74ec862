//! `tsb-pkcs11 attest LABEL [-o DIR] [--root FILE] [--chain FILE] [--from DIR]`: the TSB's
//! attestation of a key (docs/tsb-api.md, "Key attestation"): the key's attributes as XML,
//! signed by the partition's attestation key, whose certificate chain leads to the HSM
//! vendor's root. The command checks the chain (each certificate signed by the next, valid
//! now, anchored in `--root` when given), the XML's signature under the attestation key, and
//! that the XML's public key is the key behind LABEL; only then does it write the files and
//! say what they prove. Anything that does not verify is refused (exit 1), nothing written.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Args;
use serde_json::{json, Value};

use super::common::{hex, load_config, Global, Out};
use super::csr::write_new_file;
use super::keys::pct;
use crate::crypto::x509req;
use crate::crypto::{Certificate, HashAlg, PublicKey};
use crate::logging::sanitize;
use crate::tsb::{KeyAttestation, TsbClient};

#[derive(Args, Debug)]
pub(crate) struct AttestArgs {
    /// The key's label.
    label: String,
    /// The folder to write the attestation to (LABEL.xml, LABEL.sig, LABEL.chain.pem,
    /// LABEL.attestation-key.pem); default: the current folder.
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
    /// The trust anchor (PEM or DER): the HSM vendor's attestation root (for Securosys:
    /// hsm_rsa_root.crt). Without it the chain is checked but anchored only in its own root.
    #[arg(long, value_name = "FILE")]
    root: Option<PathBuf>,
    /// The attestation key's certificate chain (PEM, attestation key first) instead of asking
    /// the TSB (e.g. PrimusHSM_Attestation.crt of the TSB's attestation download).
    #[arg(long, value_name = "FILE")]
    chain: Option<PathBuf>,
    /// Check an attestation written earlier in DIR (no TSB needed) instead of fetching one.
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    from: Option<PathBuf>,
}

/// A file name for `label` (percent-encoded, so a label cannot name another folder).
fn base_name(label: &str) -> String {
    let name = pct(label.as_bytes());
    if name.is_empty() {
        "%00".into()
    } else {
        name
    }
}

/// The text of the first `<tag>...</tag>` of `xml` for any of `tags`, XML entities decoded.
fn xml_value(xml: &str, tags: &[&str]) -> Option<String> {
    tags.iter().find_map(|tag| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let start = xml.find(&open)? + open.len();
        let end = start + xml[start..].find(&close)?;
        Some(
            xml[start..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
                .trim()
                .to_string(),
        )
    })
}

fn xml_flag(xml: &str, tags: &[&str]) -> Option<bool> {
    match xml_value(xml, tags)?.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The key's use rule in words, from the attested policy (JSON, as the TSB writes policies).
fn policy_words(policy: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(policy) else {
        return format!("attested, not readable here: {}", sanitize(policy));
    };
    let mut words = Vec::new();
    if v["keyStatus"]["blocked"] == json!(true) {
        words.push("the key is blocked".to_string());
    }
    let tokens = v["ruleUse"]["tokens"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut alternatives = Vec::new();
    for t in &tokens {
        let groups: Vec<String> = t["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let names: Vec<String> = g["approvals"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| sanitize(a["name"].as_str().unwrap_or("?")))
                    .collect();
                format!(
                    "{} of [{}]",
                    g["quorum"].as_u64().unwrap_or(0),
                    names.join(", ")
                )
            })
            .collect();
        if !groups.is_empty() {
            alternatives.push(groups.join(" and "));
        }
    }
    if alternatives.is_empty() {
        words.push("each signature is made without approvals".into());
    } else {
        words.push(format!(
            "each signature needs approvals: {}",
            alternatives.join(", or ")
        ));
    }
    words.join("; ")
}

/// What a checked attestation says.
struct Verdict {
    facts: Vec<(&'static str, bool, String)>,
    notes: Vec<String>,
    anchor: String,
    json: Value,
}

/// Checks the chain, the signature and (when known) the key; `Err` says why it is refused.
fn check(
    att: &KeyAttestation,
    chain: &[Vec<u8>],
    root: Option<&[u8]>,
    key_spki: Option<&[u8]>,
) -> Result<Verdict, String> {
    if chain.is_empty() {
        return Err("the attestation key's certificate chain is empty".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (i, cert) in chain.iter().enumerate() {
        let subject = x509req::subject_text(cert).map_err(|e| format!("chain[{i}]: {e}"))?;
        if !x509req::valid_at(cert, now).map_err(|e| e.to_string())? {
            return Err(format!(
                "the certificate '{}' of the chain is not valid now",
                sanitize(&subject)
            ));
        }
        if let Some(issuer) = chain.get(i + 1) {
            x509req::verify_issued_by(cert, issuer).map_err(|e| sanitize(&e.to_string()))?;
        }
    }
    let top = chain.last().expect("not empty");
    let top_subject = x509req::subject_text(top).map_err(|e| e.to_string())?;
    let top_self_signed = x509req::verify_issued_by(top, top).is_ok();
    let anchor = match root {
        Some(root) => {
            if top.as_slice() != root {
                x509req::verify_issued_by(top, root).map_err(|e| {
                    format!(
                        "the chain does not lead to the given root: {}",
                        sanitize(&e.to_string())
                    )
                })?;
            }
            format!(
                "the chain leads to the given root '{}'",
                sanitize(&x509req::subject_text(root).map_err(|e| e.to_string())?)
            )
        }
        None => format!(
            "NOT anchored: the chain ends at '{}'{} (SHA-256 {}); compare it with the root the HSM vendor publishes, or pass --root FILE",
            sanitize(&top_subject),
            if top_self_signed { ", self-signed" } else { ", not self-signed" },
            hex(&HashAlg::Sha256.digest(top))
        ),
    };
    let leaf = Certificate::from_der(&chain[0]).map_err(|e| format!("chain[0]: {e}"))?;
    x509req::verify_attestation_signature(&leaf.public_key, att.xml.as_bytes(), &att.signature)
        .map_err(|e| {
            format!(
                "the attestation's signature does not verify under the attestation key '{}': {e}",
                sanitize(&leaf.subject_text)
            )
        })?;
    // The XML names the key it attests by its public key (Securosys: `public_key`, base64
    // DER SubjectPublicKeyInfo).
    let attested = xml_value(&att.xml, &["public_key", "publicKey"])
        .and_then(|b| {
            STANDARD
                .decode(b.split_whitespace().collect::<String>())
                .ok()
        })
        .ok_or("the attestation names no public key")?;
    let attested_key =
        PublicKey::from_spki(&attested).map_err(|e| format!("the attested public key: {e}"))?;
    if let Some(spki) = key_spki {
        let current = PublicKey::from_spki(spki).map_err(|e| format!("the key: {e}"))?;
        if current != attested_key {
            return Err(
                "the attestation is about another public key than the key behind the label".into(),
            );
        }
    }
    let mut facts = Vec::new();
    let mut notes = Vec::new();
    let never = xml_flag(&att.xml, &["never_extractable", "neverExtractable"]);
    let extractable = xml_flag(&att.xml, &["extractable"]);
    let always_sensitive = xml_flag(&att.xml, &["always_sensitive", "alwaysSensitive"]);
    match never {
        Some(true) => facts.push((
            "generatedInside",
            true,
            "generated inside the HSM and never outside it (never_extractable: true)".to_string(),
        )),
        Some(false) => facts.push((
            "generatedInside",
            false,
            "may have been outside the HSM: never_extractable is false (imported, or once extractable)".to_string(),
        )),
        None => notes.push("the attestation does not say never_extractable".into()),
    }
    match extractable {
        Some(false) => facts.push((
            "neverExtractable",
            true,
            "cannot be exported from the HSM (extractable: false)".to_string(),
        )),
        Some(true) => facts.push((
            "neverExtractable",
            false,
            "CAN be exported from the HSM (extractable: true)".to_string(),
        )),
        None => notes.push("the attestation does not say extractable".into()),
    }
    if let Some(s) = always_sensitive {
        facts.push((
            "alwaysSensitive",
            s,
            if s {
                "has always been sensitive (always_sensitive: true)".to_string()
            } else {
                "has not always been sensitive (always_sensitive: false)".to_string()
            },
        ));
    }
    let policy = xml_value(&att.xml, &["policy"]).filter(|p| !p.is_empty() && p != "null");
    let policy_text = match &policy {
        Some(p) => policy_words(p),
        None => {
            "not part of the attestation (the key has no policy, or the TSB does not attest it)"
                .into()
        }
    };
    let json = json!({
        "ok": true,
        "attestationKey": att.attestation_key_name,
        "attestationKeySubject": leaf.subject_text,
        "chain": chain.len(),
        "anchored": root.is_some(),
        "anchor": anchor,
        "publicKey": STANDARD.encode(&attested),
        "facts": facts.iter().map(|(k, v, _)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "policy": policy_text,
        "label": xml_value(&att.xml, &["label"]),
    });
    facts.push(("policy", true, format!("policy: {policy_text}")));
    Ok(Verdict {
        facts,
        notes,
        anchor,
        json,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    crate::config::read_regular_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_chain(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    Certificate::chain_from_pem(&read_file(path)?)
        .map(|c| c.into_iter().map(|c| c.der).collect())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(crate) fn run(global: &Global, args: &AttestArgs, out: &Out) -> Result<i32, String> {
    let shown = sanitize(&args.label);
    let base = base_name(&args.label);
    let root = match &args.root {
        Some(p) => Some(
            Certificate::from_any(&read_file(p)?)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .der,
        ),
        None => None,
    };
    let (att, chain, key_spki) = if let Some(dir) = &args.from {
        let xml = String::from_utf8(read_file(&dir.join(format!("{base}.xml")))?)
            .map_err(|_| format!("{base}.xml is not UTF-8"))?;
        let signature = read_file(&dir.join(format!("{base}.sig")))?;
        let chain = match &args.chain {
            Some(p) => read_chain(p)?,
            None => read_chain(&dir.join(format!("{base}.chain.pem")))?,
        };
        let att = KeyAttestation {
            xml,
            signature,
            attestation_key_name: String::new(),
            public_key: None,
        };
        (att, chain, None)
    } else {
        let config = load_config(global)?;
        let client = TsbClient::new(&config).map_err(|e| e.to_string())?;
        let password = config.pkcs11.key_passwords.get(&args.label);
        let att = client
            .key_attestation(&args.label, password)
            .map_err(|e| format!("'{shown}': {e}"))?;
        let chain = match &args.chain {
            Some(p) => read_chain(p)?,
            None => client.attestation_chain().map_err(|e| {
                format!("the attestation key's certificate chain: {e} (pass it with --chain FILE)")
            })?,
        };
        let spki = att.public_key.clone();
        (att, chain, spki)
    };
    super::common::take_warnings();
    let verdict = match check(&att, &chain, root.as_deref(), key_spki.as_deref()) {
        Ok(v) => v,
        Err(why) => {
            return Err(format!(
                "'{shown}': attestation REFUSED: {why}; nothing written"
            ))
        }
    };
    let mut written = Vec::new();
    if args.from.is_none() {
        let dir = args.output.clone().unwrap_or_else(|| PathBuf::from("."));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let chain_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        let leaf = Certificate::from_der(&chain[0]).map_err(|e| e.to_string())?;
        let files = [
            (format!("{base}.xml"), att.xml.clone().into_bytes()),
            (format!("{base}.sig"), att.signature.clone()),
            (format!("{base}.chain.pem"), chain_pem.into_bytes()),
            (
                format!("{base}.attestation-key.pem"),
                pem("PUBLIC KEY", &leaf.public_key.spki_der()).into_bytes(),
            ),
        ];
        for (name, data) in files {
            let path = dir.join(&name);
            write_new_file(&path, &data, 0o644)?;
            written.push(path);
        }
    }
    if out.json {
        let mut doc = verdict.json;
        doc["key"] = json!(args.label);
        doc["files"] = json!(written);
        out.json_doc(&doc);
        return Ok(0);
    }
    out.line(&format!(
        "attestation of '{shown}': signature verified (attestation key '{}')",
        sanitize(&att.attestation_key_name)
    ));
    out.line(&format!(
        "  chain:  {} certificates; {}",
        chain.len(),
        verdict.anchor
    ));
    out.line("  the key:");
    for (_, good, text) in &verdict.facts {
        out.line(&format!("    {} {text}", if *good { "✓" } else { "✗" }));
    }
    for n in &verdict.notes {
        out.line(&format!("  note:   {n}"));
    }
    for p in &written {
        out.line(&format!("  wrote:  {}", p.display()));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_values_are_found_and_unescaped() {
        let xml = "<key><label>a&lt;b&amp;c</label><attributes><extractable>false</extractable>\
                   <never_extractable>true</never_extractable></attributes></key>";
        assert_eq!(xml_value(xml, &["label"]).as_deref(), Some("a<b&c"));
        assert_eq!(xml_flag(xml, &["extractable"]), Some(false));
        assert_eq!(
            xml_flag(xml, &["neverExtractable", "never_extractable"]),
            Some(true)
        );
        assert_eq!(xml_value(xml, &["policy"]), None);
    }

    #[test]
    fn terminal_text_escapes_controls_and_bidi_overrides() {
        assert_eq!(sanitize("a\u{202e}b\u{1b}[31m"), "a\\u{202e}b\\u{1b}[31m");
    }

    #[test]
    fn labels_become_file_names_inside_the_folder() {
        assert_eq!(base_name("ec-p256"), "ec-p256");
        assert_eq!(base_name("../x/y"), "..%2Fx%2Fy");
        assert!(!base_name("..").contains('/'));
    }
}
