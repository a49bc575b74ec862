//! The test signature (`--sign LABEL`): one signature through the module's own token and
//! signing code (a key that needs approvals files a real approval request), verified here
//! against the public key as the TSB gives it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cryptoki_sys::*;
use serde_json::{json, Value};

use super::report::{unix_now, Failure, Report};
use crate::config::{Config, PinIs};
use crate::crypto::{HashAlg, PublicKey, Scheme, SignedData};
use crate::token::{Mechanism, SignOutput, Token, SLOT_ID};

pub(super) fn test_signature(config: &Config, label: &str, pin_env: Option<&str>, r: &mut Report) {
    match sign_once(config, label, pin_env) {
        Ok((message, details)) => {
            r.ok("sign", message).with_details(details);
        }
        Err((message, fix)) => r.fail("sign", message, fix),
    }
    r.warnings("sign");
}

fn sign_once(
    config: &Config,
    label: &str,
    pin_env: Option<&str>,
) -> Result<(String, Value), Failure> {
    let plain = |e: crate::Error| (format!("'{label}': {e}"), None);
    let token = Token::new(config.clone(), true).map_err(plain)?;
    let session = token
        .open_session(SLOT_ID, CKF_SERIAL_SESSION, None)
        .map_err(plain)?;
    if config.pkcs11.pin_is != PinIs::None {
        let Some(var) = pin_env else {
            return Err((
                "a login is needed (pkcs11.pinIs is not none)".into(),
                Some("pass --pin-env NAME with the PIN in that environment variable".into()),
            ));
        };
        let pin = std::env::var(var)
            .map_err(|_| (format!("environment variable {var} is not set"), None))?;
        token
            .login(session, CKU_USER, pin.as_bytes())
            .map_err(|e| (format!("login: {e}"), Some("check the PIN".into())))?;
    }
    let Some(handle) =
        crate::cli::csr::private_key_by_label(&token, session, label).map_err(plain)?
    else {
        return Err((
            format!("no private key '{label}' on the token"),
            Some("pick a key doctor lists as shown (`tsb-pkcs11 keys`)".into()),
        ));
    };
    let key_type = match token
        .attribute_values(session, handle, &[CKA_KEY_TYPE])
        .map_err(plain)?
        .pop()
    {
        Some(crate::token::attributes::AttrValue::Bytes(b)) if b.len() == 8 || b.len() == 4 => {
            let mut v = [0u8; std::mem::size_of::<CK_ULONG>()];
            v[..b.len()].copy_from_slice(&b);
            CK_ULONG::from_ne_bytes(v)
        }
        _ => return Err((format!("'{label}': no key type"), None)),
    };
    let (mechanism, name, scheme) = match key_type {
        CKK_RSA => (
            CKM_SHA256_RSA_PKCS,
            "CKM_SHA256_RSA_PKCS",
            Scheme::RsaPkcs1v15(HashAlg::Sha256),
        ),
        CKK_EC => (
            CKM_ECDSA_SHA256,
            "CKM_ECDSA_SHA256",
            Scheme::Ecdsa(HashAlg::Sha256),
        ),
        CKK_EC_EDWARDS => (CKM_EDDSA, "CKM_EDDSA", Scheme::Ed25519),
        other => {
            return Err((
                format!("'{label}': key type {other:#x} cannot sign here"),
                None,
            ))
        }
    };
    let data = format!("tsb-pkcs11 doctor test signature {}", unix_now()).into_bytes();
    token
        .sign_init(session, &Mechanism::new(mechanism), handle)
        .map_err(plain)?;
    let started = std::time::Instant::now();
    let signature = match token.sign(session, &data, Some(16 * 1024)) {
        Ok(SignOutput::Signature(s)) => s,
        Ok(SignOutput::Length(_)) => return Err((format!("'{label}': no signature"), None)),
        Err(e) => {
            return Err((
                format!("'{label}': {e}"),
                Some("see `tsb-pkcs11 keys --all` and docs/troubleshooting.md".into()),
            ))
        }
    };
    let took = started.elapsed();
    // Verified here against the public key as the TSB gives it (not the module's object).
    let client = token.client().map_err(plain)?;
    let spki = client
        .key_attributes(label, config.pkcs11.key_passwords.get(label))
        .ok()
        .and_then(|a| a.public_key)
        .ok_or_else(|| (format!("'{label}': cannot read its public key"), None))?;
    let public = PublicKey::from_spki(&spki).map_err(|e| (format!("'{label}': {e}"), None))?;
    crate::crypto::verify(&public, &scheme, SignedData::Message(&data), &signature).map_err(
        |e| {
            (
                format!("'{label}': the signature does not verify: {e}"),
                Some("the TSB returned a wrong signature: report it to the TSB operator".into()),
            )
        },
    )?;
    token.finalize();
    Ok((
        format!(
            "'{label}': {name} signature made in {} ms and verified",
            took.as_millis()
        ),
        json!({
            "key": label,
            "mechanism": name,
            "data": STANDARD.encode(&data),
            "signature": STANDARD.encode(&signature),
            "publicKey": STANDARD.encode(&spki),
        }),
    ))
}
