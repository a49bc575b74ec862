//! `tsb-pkcs11 csr LABEL --subject ... [--san ...] [-o FILE]`: a PKCS#10 certificate request
//! (RFC 2986) signed by the key through the module's token layer — the same `C_SignInit` /
//! `C_Sign` path an application takes (PKCS#11 v2.40 Base §5.13), so a key that needs
//! approvals files an approval request and the wait is announced on stderr, and the TSB's
//! signature is checked against the key before it is used (`verifySignatures`). The finished
//! request is checked once more (its own signature, as `openssl req -verify` does) before it
//! is written.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use cryptoki_sys::*;
use der::EncodePem;

use super::common::{load_config, Global, Out};
use crate::config::{Config, PinIs};
use crate::crypto::x509req::{self, RequestAlgorithm, San};
use crate::crypto::{HashAlg, PublicKey, Scheme};
use crate::token::attributes::AttrValue;
use crate::token::{Mechanism, SignOutput, Token, SLOT_ID};

#[derive(Args, Debug)]
pub(crate) struct CsrArgs {
    /// The key's label (as `tsb-pkcs11 keys` lists it).
    label: String,
    /// The subject, RFC 4514 text: "CN=host.example,O=Example,C=CH".
    #[arg(long, value_name = "DN")]
    subject: String,
    /// A subjectAltName entry: DNS:name, IP:address, email:address or URI:uri (repeatable).
    #[arg(long, value_name = "KIND:VALUE")]
    san: Vec<String>,
    /// Where to write the request (PEM); default: stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// The environment variable holding the PIN, when `pkcs11.pinIs` is not `none`.
    #[arg(long, value_name = "NAME")]
    pin_env: Option<String>,
}

/// The PKCS#11 mechanism that signs `scheme` over the whole message.
fn mechanism(scheme: &Scheme) -> Option<CK_MECHANISM_TYPE> {
    Some(match scheme {
        Scheme::RsaPkcs1v15(HashAlg::Sha256) => CKM_SHA256_RSA_PKCS,
        Scheme::Ecdsa(HashAlg::Sha256) => CKM_ECDSA_SHA256,
        Scheme::Ecdsa(HashAlg::Sha384) => CKM_ECDSA_SHA384,
        Scheme::Ecdsa(HashAlg::Sha512) => CKM_ECDSA_SHA512,
        Scheme::Ed25519 => CKM_EDDSA,
        _ => return None,
    })
}

/// A key found on the token, with the public key its handle names (`CKA_PUBLIC_KEY_INFO`).
pub(crate) struct TokenKey {
    pub(crate) token: Token,
    pub(crate) session: CK_SESSION_HANDLE,
    pub(crate) handle: CK_OBJECT_HANDLE,
    pub(crate) spki: Vec<u8>,
    pub(crate) public: PublicKey,
}

impl Drop for TokenKey {
    fn drop(&mut self) {
        self.token.finalize();
    }
}

/// Opens the token as the module does, logs in when the configuration asks for a PIN, and
/// finds the private key `label` (PKCS#11 v2.40 Base §5.6, §5.7, §5.9).
pub(crate) fn open_key(
    config: &Config,
    label: &str,
    pin_env: Option<&str>,
) -> Result<TokenKey, String> {
    let shown = crate::logging::sanitize(label);
    let plain = |e: crate::Error| format!("'{shown}': {e}");
    let token = Token::new(config.clone(), true).map_err(plain)?;
    let session = token
        .open_session(SLOT_ID, CKF_SERIAL_SESSION, None)
        .map_err(plain)?;
    if config.pkcs11.pin_is != PinIs::None {
        let var = pin_env.ok_or_else(|| {
            "a login is needed (pkcs11.pinIs is not none): pass --pin-env NAME with the PIN in that environment variable".to_string()
        })?;
        let pin =
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
        token
            .login(session, CKU_USER, pin.as_bytes())
            .map_err(|e| format!("login: {e}"))?;
    }
    let Some(handle) = private_key_by_label(&token, session, label).map_err(plain)? else {
        return Err(format!(
            "no private key '{shown}' on the token (`tsb-pkcs11 keys --all` says why)"
        ));
    };
    let spki = match token
        .attribute_values(session, handle, &[CKA_PUBLIC_KEY_INFO])
        .map_err(plain)?
        .pop()
    {
        Some(AttrValue::Bytes(b)) if !b.is_empty() => b,
        _ => return Err(format!("'{shown}': no public key")),
    };
    let public = PublicKey::from_spki_der(&spki).map_err(|e| format!("'{shown}': {e}"))?;
    Ok(TokenKey {
        token,
        session,
        handle,
        spki,
        public,
    })
}

/// Signs `data` with the key through `C_SignInit`/`C_Sign` with `mechanism`.
fn sign(key: &TokenKey, mechanism: CK_MECHANISM_TYPE, data: &[u8]) -> Result<Vec<u8>, String> {
    key.token
        .sign_init(key.session, &Mechanism::new(mechanism), key.handle)
        .map_err(|e| format!("C_SignInit: {e}"))?;
    match key.token.sign(key.session, data, Some(16 * 1024)) {
        Ok(SignOutput::Signature(s)) => Ok(s),
        Ok(SignOutput::Length(_)) => Err("no signature".into()),
        Err(e) => Err(format!(
            "the key did not sign: {e} (see `tsb-pkcs11 keys` and docs/troubleshooting.md)"
        )),
    }
}

pub(crate) fn run(global: &Global, args: &CsrArgs, out: &Out) -> Result<i32, String> {
    let sans = args
        .san
        .iter()
        .map(|s| s.parse::<San>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--san {e}"))?;
    let config = load_config(global)?;
    let key = open_key(&config, &args.label, args.pin_env.as_deref())?;
    let shown = crate::logging::sanitize(&args.label);
    let algorithm =
        RequestAlgorithm::for_key(&key.public).map_err(|e| format!("'{shown}': {e}"))?;
    let mech = mechanism(&algorithm.scheme)
        .ok_or_else(|| format!("'{shown}': no mechanism for {:?}", algorithm.scheme))?;
    let info = x509req::request_info(&args.subject, &sans, &key.spki).map_err(|e| e.to_string())?;
    let signature = sign(&key, mech, &info).map_err(|e| format!("'{shown}': {e}"))?;
    let der = x509req::assemble(&info, &algorithm, &signature).map_err(|e| e.to_string())?;
    // The request as a CA will see it: its signature verifies under its own public key, and
    // that is the key behind the label.
    let spki = x509req::verify_request(&der)
        .map_err(|e| format!("'{shown}': the request's signature does not verify: {e}"))?;
    if spki != key.spki {
        return Err(format!("'{shown}': the request names another public key"));
    }
    drop(key);
    super::common::take_warnings();
    let pem = x509_cert::request::CertReq::try_from(der.as_slice())
        .map_err(|e| e.to_string())?
        .to_pem(der::pem::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    match &args.output {
        Some(path) => {
            write_new_file(path, pem.as_bytes(), 0o644)?;
            if out.json {
                out.json_doc(&serde_json::json!({
                    "ok": true, "key": args.label, "file": path, "csr": pem,
                }));
            } else {
                eprintln!(
                    "certificate request for '{shown}' written to {} (check: openssl req -in {} -verify -noout -text)",
                    path.display(),
                    path.display()
                );
            }
        }
        None => {
            if out.json {
                out.json_doc(&serde_json::json!({ "ok": true, "key": args.label, "csr": pem }));
            } else {
                let _ = std::io::stdout().lock().write_all(pem.as_bytes());
            }
        }
    }
    Ok(0)
}

/// Writes `data` to `path` (replacing a regular file, never following a symlink at `path`).
pub(crate) fn write_new_file(path: &std::path::Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(format!(
            "{}: exists and is not a regular file",
            path.display()
        ));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The handle of the private key labelled `label` in `session`, if the token has one (one
/// search: C_FindObjectsInit, C_FindObjects, C_FindObjectsFinal).
pub(crate) fn private_key_by_label(
    token: &Token,
    session: CK_SESSION_HANDLE,
    label: &str,
) -> crate::error::Result<Option<CK_OBJECT_HANDLE>> {
    let class = CKO_PRIVATE_KEY.to_ne_bytes().to_vec();
    token.find_objects_init(
        session,
        &[(CKA_CLASS, class), (CKA_LABEL, label.as_bytes().to_vec())],
    )?;
    let found = token.find_objects(session, 2);
    let _ = token.find_objects_final(session);
    Ok(found?.first().copied())
}
