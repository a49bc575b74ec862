//! Talking to a PKCS#11 module: loading it, choosing the token, logging in, finding the
//! key and its certificates, and signing.
//!
//! The module is any PKCS#11 library (loaded with the `cryptoki` crate). What the plugin
//! reads from `pluginConfig` ("Plugin configuration" in `specs/plugin-extensibility.md`)
//! is described on [`Config`].

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use der::asn1::{ObjectIdentifier, OctetString, PrintableStringRef};
use der::Decode;

use crate::chain::Cert;
use crate::keyspec::{
    ecdsa_to_raw, unsupported_curve_name, Curve, HashAlgorithm, KeySpec, PublicKey,
};
use crate::protocol::{PluginConfig, PluginError};

/// `pluginConfig` key: path of the PKCS#11 module.
pub const CONFIG_MODULE: &str = "module";
/// `pluginConfig` key: label of the token.
pub const CONFIG_TOKEN: &str = "token";
/// `pluginConfig` key: user PIN.
pub const CONFIG_PIN: &str = "pin";
/// `pluginConfig` key: PEM file with the certificate chain, leaf first.
pub const CONFIG_CERT_CHAIN: &str = "certChain";
/// Environment variable with the user PIN, used when `pluginConfig` has no `pin`.
pub const PIN_ENV: &str = "NOTATION_PKCS11_PIN";
/// Module loaded when `pluginConfig` has no `module`.
pub const DEFAULT_MODULE: &str = "libtsb_pkcs11.so";

/// The plugin's configuration, from `pluginConfig` (empty values count as absent):
///
/// - `module`: path of the PKCS#11 module. Default: `libtsb_pkcs11.so` next to the plugin
///   executable if that file exists, else `libtsb_pkcs11.so` found through the dynamic
///   loader's library path.
/// - `token`: label of the token to use. Default: the first slot with an initialized token
///   (or, if none is initialized, the first slot with a token).
/// - `pin`: the user PIN. Default: the environment variable `NOTATION_PKCS11_PIN`. With
///   neither, the plugin does not log in, unless the token has `CKF_LOGIN_REQUIRED`: then
///   it logs in through the protected authentication path if the token has one, and
///   otherwise fails with `ACCESS_DENIED`. (The specification advises against secrets in
///   `pluginConfig`, which Notation stores in plain text: prefer the environment variable.)
/// - `certChain`: path of a PEM file with the certificate chain, leaf first, for keys whose
///   certificate is not on the token; its CA certificates also complete chains whose leaf
///   is on the token.
///
/// Other keys are ignored.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub module: PathBuf,
    pub token: Option<String>,
    pub pin: Option<String>,
    pub cert_chain: Option<PathBuf>,
}

impl Config {
    /// Reads `pluginConfig`, falling back to the environment and the defaults above.
    pub fn from_plugin_config(cfg: Option<&PluginConfig>) -> Config {
        let get = |k: &str| {
            cfg.and_then(|c| c.get(k))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        Config {
            module: get(CONFIG_MODULE)
                .map(PathBuf::from)
                .unwrap_or_else(default_module),
            token: get(CONFIG_TOKEN),
            pin: get(CONFIG_PIN).or_else(|| std::env::var(PIN_ENV).ok().filter(|p| !p.is_empty())),
            cert_chain: get(CONFIG_CERT_CHAIN).map(PathBuf::from),
        }
    }
}

/// `libtsb_pkcs11.so` next to the plugin executable if present, else the bare name, which
/// the dynamic loader resolves through its library search path.
fn default_module() -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let candidate = dir.join(DEFAULT_MODULE);
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from(DEFAULT_MODULE)
}

/// A private key found on the token.
#[derive(Debug)]
pub struct Key {
    pub handle: ObjectHandle,
    /// `CKA_LABEL`: the Notation `keyId`.
    pub label: String,
    /// `CKA_ID`, shared with the key's public key and certificate objects.
    pub id: Vec<u8>,
    /// The key spec, or (as text completing "key 'x' is …") why Notation cannot use the key.
    pub spec: Result<KeySpec, String>,
    /// The public key, when the token exposes it (via `CKA_PUBLIC_KEY_INFO`, the RSA
    /// modulus and exponent, or the matching public key object).
    pub public_key: Option<PublicKey>,
}

/// An X.509 certificate object (`CKO_CERTIFICATE`, `CKC_X_509`) on the token.
#[derive(Debug, Clone)]
pub struct TokenCert {
    pub id: Vec<u8>,
    pub label: String,
    pub cert: Cert,
}

/// An open, possibly logged-in, session on the chosen token. Dropping it closes the session
/// and finalizes the module.
pub struct Token {
    session: Option<Session>,
    ctx: Option<Pkcs11>,
    /// The token's label.
    pub label: String,
    logged_in: bool,
}

impl Drop for Token {
    fn drop(&mut self) {
        drop(self.session.take());
        if let Some(ctx) = self.ctx.take() {
            let _ = ctx.finalize();
        }
    }
}

impl Token {
    /// Loads the module, initializes it, chooses the token and opens a session, logging in
    /// as described on [`Config`].
    pub fn open(config: &Config) -> Result<Token, PluginError> {
        let ctx = Pkcs11::new(&config.module).map_err(|e| {
            PluginError::error(format!(
                "cannot load the PKCS#11 module '{}': {}",
                config.module.display(),
                e
            ))
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(map_error(&e, "cannot initialize the PKCS#11 module")),
        }
        // From here on, `token` owns the context, so any error finalizes it.
        let mut token = Token {
            session: None,
            ctx: Some(ctx),
            label: String::new(),
            logged_in: false,
        };
        let ctx = token.ctx.clone().expect("context is set");
        let (slot, info) = choose_slot(&ctx, config.token.as_deref())?;
        token.label = info.label().to_string();
        let session = ctx.open_ro_session(slot).map_err(|e| {
            map_error(
                &e,
                &format!("cannot open a session on token '{}'", token.label),
            )
        })?;

        let login = |pin: Option<&AuthPin>| match session.login(UserType::User, pin) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) => Err(map_error(
                &e,
                &format!("cannot log in to token '{}'", info.label()),
            )),
        };
        if let Some(pin) = &config.pin {
            login(Some(&AuthPin::from(pin.as_str())))?;
            token.logged_in = true;
        } else if info.login_required() {
            if info.protected_authentication_path() {
                login(None)?;
                token.logged_in = true;
            } else {
                return Err(PluginError::access_denied(format!(
                    "token '{}' requires a login: set the PIN in the environment variable \
                     {PIN_ENV} or in pluginConfig '{CONFIG_PIN}'",
                    info.label()
                )));
            }
        }
        token.session = Some(session);
        Ok(token)
    }

    fn session(&self) -> &Session {
        self.session.as_ref().expect("session is open")
    }

    /// Finds the private key labelled `label` (the Notation `keyId`).
    ///
    /// No such key is a `VALIDATION_ERROR` ("Error codes for describe-key and
    /// generate-signature": "Includes condition where the key referenced by keyId was not
    /// found"); so are several keys with that label, since the plugin could not know which
    /// one is meant.
    pub fn find_key(&self, label: &str) -> Result<Key, PluginError> {
        let s = self.session();
        let handles = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| map_error(&e, "cannot search the token for the key"))?;
        let handle = match handles.as_slice() {
            [h] => *h,
            [] => {
                let hint = if self.logged_in {
                    ""
                } else {
                    " (not logged in: private keys may be hidden; set a PIN)"
                };
                return Err(PluginError::validation(format!(
                    "key '{label}' not found: token '{}' has no private key labelled '{label}'{hint}",
                    self.label
                )));
            }
            many => {
                return Err(PluginError::validation(format!(
                    "key '{label}' is ambiguous: token '{}' has {} private keys labelled '{label}'",
                    self.label,
                    many.len()
                )))
            }
        };
        let attrs = get_attributes(
            s,
            handle,
            &[
                AttributeType::Id,
                AttributeType::KeyType,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::EcParams,
                AttributeType::PublicKeyInfo,
            ],
        );
        let mut id = Vec::new();
        let mut key_type = None;
        let (mut modulus, mut exponent, mut ec_params, mut spki) = (None, None, None, None);
        for a in attrs {
            match a {
                Attribute::Id(v) => id = v,
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Modulus(v) if !v.is_empty() => modulus = Some(v),
                Attribute::PublicExponent(v) if !v.is_empty() => exponent = Some(v),
                Attribute::EcParams(v) if !v.is_empty() => ec_params = Some(v),
                Attribute::PublicKeyInfo(v) if !v.is_empty() => spki = Some(v),
                _ => {}
            }
        }

        let mut public_key = spki.and_then(|d| PublicKey::from_spki_der(&d).ok());
        if public_key.is_none() {
            if let (Some(n), Some(e)) = (&modulus, &exponent) {
                public_key = PublicKey::from_rsa_components(n, e).ok();
            }
        }
        if public_key.is_none() {
            public_key = self.find_public_key(&id, label);
        }

        let spec = match key_type {
            Some(KeyType::RSA) => match (&public_key, &modulus) {
                (Some(pk @ PublicKey::Rsa(_)), _) => pk.key_spec(),
                (_, Some(n)) => {
                    let bits = bit_length(n);
                    KeySpec::from_rsa_bits(bits).ok_or_else(|| {
                        format!("RSA-{bits}; Notation supports RSA 2048, 3072 and 4096 bits")
                    })
                }
                _ => Err("an RSA key whose size cannot be read (no CKA_MODULUS)".to_string()),
            },
            Some(KeyType::EC) => match ec_params.as_deref().map(ec_curve) {
                Some(Ok(curve)) => Ok(KeySpec::from_curve(curve)),
                Some(Err(why)) => Err(why),
                None => Err("an EC key without CKA_EC_PARAMS".to_string()),
            },
            Some(KeyType::EC_EDWARDS) => Err(ec_params
                .as_deref()
                .map(edwards_name)
                .unwrap_or_else(|| "an EdDSA key".to_string())),
            Some(other) => Err(format!("a {} key", key_type_name(other))),
            None => Err("a key of unknown type (no CKA_KEY_TYPE)".to_string()),
        };
        // A public key of another type or size than the private key is useless.
        if let (Ok(spec), Some(pk)) = (&spec, &public_key) {
            if pk.key_spec().ok() != Some(*spec) {
                public_key = None;
            }
        }

        Ok(Key {
            handle,
            label: label.to_string(),
            id,
            spec,
            public_key,
        })
    }

    /// The public key object (`CKO_PUBLIC_KEY`) of a key: same `CKA_ID`, else same label.
    fn find_public_key(&self, id: &[u8], label: &str) -> Option<PublicKey> {
        let s = self.session();
        let mut handles = Vec::new();
        if !id.is_empty() {
            handles = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Id(id.to_vec()),
                ])
                .unwrap_or_default();
        }
        if handles.is_empty() {
            handles = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .unwrap_or_default();
        }
        if handles.len() != 1 {
            return None;
        }
        let attrs = get_attributes(
            s,
            handles[0],
            &[
                AttributeType::PublicKeyInfo,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::EcParams,
                AttributeType::EcPoint,
            ],
        );
        let (mut spki, mut n, mut e, mut params, mut point) = (None, None, None, None, None);
        for a in attrs {
            match a {
                Attribute::PublicKeyInfo(v) if !v.is_empty() => spki = Some(v),
                Attribute::Modulus(v) if !v.is_empty() => n = Some(v),
                Attribute::PublicExponent(v) if !v.is_empty() => e = Some(v),
                Attribute::EcParams(v) if !v.is_empty() => params = Some(v),
                Attribute::EcPoint(v) if !v.is_empty() => point = Some(v),
                _ => {}
            }
        }
        if let Some(pk) = spki.and_then(|d| PublicKey::from_spki_der(&d).ok()) {
            return Some(pk);
        }
        if let (Some(n), Some(e)) = (n, e) {
            return PublicKey::from_rsa_components(&n, &e).ok();
        }
        if let (Some(params), Some(point)) = (params, point) {
            let curve = ec_curve(&params).ok()?;
            // Try the standard (DER OCTET STRING) form first, then a bare point.
            return PublicKey::from_ec_point(curve, &unwrap_ec_point(&point))
                .or_else(|_| PublicKey::from_ec_point(curve, &point))
                .ok();
        }
        None
    }

    /// Every X.509 certificate on the token. Certificates that do not parse are skipped.
    pub fn certificates(&self) -> Result<Vec<TokenCert>, PluginError> {
        let s = self.session();
        let handles = s
            .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
            .map_err(|e| map_error(&e, "cannot search the token for certificates"))?;
        let mut certs = Vec::new();
        for h in handles {
            let attrs = get_attributes(
                s,
                h,
                &[
                    AttributeType::CertificateType,
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::Value,
                ],
            );
            let (mut x509, mut id, mut label, mut value) = (true, Vec::new(), String::new(), None);
            for a in attrs {
                match a {
                    Attribute::CertificateType(t) => x509 = t == CertificateType::X_509,
                    Attribute::Id(v) => id = v,
                    Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                    Attribute::Value(v) => value = Some(v),
                    _ => {}
                }
            }
            if let (true, Some(der)) = (x509, value) {
                if let Ok(cert) = Cert::from_der(&der) {
                    certs.push(TokenCert { id, label, cert });
                }
            }
        }
        Ok(certs)
    }

    /// Signs `payload` with `key` as `spec` requires ("generate-signature": "The algorithm
    /// specified in hashAlgorithm MUST be used by the plugin to hash the payload").
    ///
    /// The plugin hashes the payload itself and has the token sign the digest with
    /// `CKM_RSA_PKCS_PSS` (MGF1 with the same hash, salt length = hash length) or
    /// `CKM_ECDSA`. Only if the token does not offer these raw mechanisms
    /// (`CKR_MECHANISM_INVALID`) does it fall back to the hashing mechanisms
    /// (`CKM_SHA256_RSA_PKCS_PSS`, `CKM_ECDSA_SHA256`, …) over the whole payload. ECDSA
    /// signatures are returned as fixed-width `r‖s`, as JWS needs.
    pub fn sign(&self, key: &Key, spec: KeySpec, payload: &[u8]) -> Result<Vec<u8>, PluginError> {
        let hash = spec.hash_algorithm();
        let digest = hash.digest(payload);
        let (raw, hashing) = mechanisms(spec)?;
        let s = self.session();
        let context = format!("cannot sign with key '{}'", key.label);
        let sig = match s.sign(&raw, key.handle, &digest) {
            Ok(sig) => sig,
            Err(CkError::Pkcs11(RvError::MechanismInvalid, Function::SignInit)) => s
                .sign(&hashing, key.handle, payload)
                .map_err(|e| map_error(&e, &context))?,
            Err(e) => return Err(map_error(&e, &context)),
        };
        match spec.curve() {
            None => Ok(sig),
            Some(curve) => ecdsa_to_raw(curve, &sig).ok_or_else(|| {
                PluginError::error(format!(
                    "the token returned a {}-byte ECDSA signature for key '{}', expected {} bytes (r‖s)",
                    sig.len(),
                    key.label,
                    2 * curve.field_len()
                ))
            }),
        }
    }
}

/// The raw (digest-signing) mechanism for `spec`, and the hashing fallback.
fn mechanisms(spec: KeySpec) -> Result<(Mechanism<'static>, Mechanism<'static>), PluginError> {
    let hash = spec.hash_algorithm();
    if spec.is_rsa() {
        let (hash_alg, mgf) = match hash {
            HashAlgorithm::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            HashAlgorithm::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
            HashAlgorithm::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
        };
        let s_len = Ulong::try_from(hash.len())
            .map_err(|e| PluginError::error(format!("salt length: {e}")))?;
        let params = PkcsPssParams {
            hash_alg,
            mgf,
            s_len,
        };
        let hashing = match hash {
            HashAlgorithm::Sha256 => Mechanism::Sha256RsaPkcsPss(params),
            HashAlgorithm::Sha384 => Mechanism::Sha384RsaPkcsPss(params),
            HashAlgorithm::Sha512 => Mechanism::Sha512RsaPkcsPss(params),
        };
        Ok((Mechanism::RsaPkcsPss(params), hashing))
    } else {
        let hashing = match hash {
            HashAlgorithm::Sha256 => Mechanism::EcdsaSha256,
            HashAlgorithm::Sha384 => Mechanism::EcdsaSha384,
            HashAlgorithm::Sha512 => Mechanism::EcdsaSha512,
        };
        Ok((Mechanism::Ecdsa, hashing))
    }
}

/// Chooses the slot: the token labelled `label`, else the first slot with an initialized
/// token, else the first slot with a token.
fn choose_slot(
    ctx: &Pkcs11,
    label: Option<&str>,
) -> Result<(Slot, cryptoki::slot::TokenInfo), PluginError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| map_error(&e, "cannot list the module's slots"))?;
    let mut infos = Vec::new();
    for slot in slots {
        match ctx.get_token_info(slot) {
            Ok(info) => infos.push((slot, info)),
            Err(CkError::Pkcs11(RvError::TokenNotPresent, _)) => {}
            Err(e) => return Err(map_error(&e, "cannot read token information")),
        }
    }
    if let Some(label) = label {
        let wanted = label.trim_end();
        let labels: Vec<String> = infos
            .iter()
            .map(|(_, i)| format!("'{}'", i.label()))
            .collect();
        return infos
            .into_iter()
            .find(|(_, i)| i.label() == wanted)
            .ok_or_else(|| {
                PluginError::validation(format!(
                    "no token labelled '{label}' (tokens present: {})",
                    if labels.is_empty() {
                        "none".to_string()
                    } else {
                        labels.join(", ")
                    }
                ))
            });
    }
    let first_initialized = infos.iter().position(|(_, i)| i.token_initialized());
    match first_initialized {
        Some(i) => Ok(infos.swap_remove(i)),
        None if !infos.is_empty() => Ok(infos.swap_remove(0)),
        None => Err(PluginError::error(
            "the PKCS#11 module has no slot with a token",
        )),
    }
}

/// Reads attributes, tolerating modules that reject a combined request: on failure, each
/// attribute is read on its own and the ones that fail are left out.
fn get_attributes(s: &Session, h: ObjectHandle, types: &[AttributeType]) -> Vec<Attribute> {
    if let Ok(attrs) = s.get_attributes(h, types) {
        return attrs;
    }
    types
        .iter()
        .filter_map(|t| s.get_attributes(h, std::slice::from_ref(t)).ok())
        .flatten()
        .collect()
}

/// The NIST curve named by a DER `CKA_EC_PARAMS`, or why it is not supported.
fn ec_curve(params: &[u8]) -> Result<Curve, String> {
    match ObjectIdentifier::from_der(params) {
        Ok(oid) => Curve::from_oid(&oid).ok_or_else(|| unsupported_curve_name(&oid)),
        Err(_) => match PrintableStringRef::from_der(params) {
            Ok(name) => Err(format!("EC on curve '{}'", name.as_str())),
            Err(_) => Err("EC with explicit curve parameters".to_string()),
        },
    }
}

/// Names an EdDSA key from its `CKA_EC_PARAMS` (an OID, or a PrintableString curve name as
/// in PKCS#11 3.0 §2.3.6).
fn edwards_name(params: &[u8]) -> String {
    if let Ok(oid) = ObjectIdentifier::from_der(params) {
        return unsupported_curve_name(&oid);
    }
    match PrintableStringRef::from_der(params).map(|s| s.as_str().to_string()) {
        Ok(n) if n == "edwards25519" => "Ed25519".to_string(),
        Ok(n) if n == "edwards448" => "Ed448".to_string(),
        Ok(n) => format!("EdDSA on curve '{n}'"),
        Err(_) => "an EdDSA key".to_string(),
    }
}

/// A readable name for a key type (`CKK_*`).
fn key_type_name(t: KeyType) -> String {
    match t {
        KeyType::DSA => "DSA".to_string(),
        KeyType::DH => "Diffie-Hellman".to_string(),
        KeyType::EC_MONTGOMERY => "X25519/X448 (EC Montgomery)".to_string(),
        other => other.to_string(),
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point; some modules return the bare
/// point. Accept both.
fn unwrap_ec_point(v: &[u8]) -> Vec<u8> {
    match OctetString::from_der(v) {
        Ok(os) if matches!(os.as_bytes().first(), Some(2..=4)) => os.as_bytes().to_vec(),
        _ => v.to_vec(),
    }
}

/// Number of significant bits in a big-endian unsigned integer.
fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}

/// The `CKR_*` name of a PKCS#11 return value.
pub fn rv_name(rv: &RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("CKR_VENDOR_DEFINED ({code:#x})"),
        RvError::UnknownErrorCode(code) => format!("unknown CK_RV {code:#x}"),
        other => {
            let camel = format!("{other:?}");
            let mut name = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// Maps a PKCS#11 failure to the contract's error codes ("Error codes for describe-key and
/// generate-signature"):
///
/// - `CKR_FUNCTION_REJECTED` (the approvers rejected the request) → `ACCESS_DENIED`;
/// - `CKR_FUNCTION_CANCELED` (the approval request expired or was cancelled) → `ERROR`,
///   never `TIMEOUT`, since Notation may retry after `TIMEOUT` and so file a second
///   approval request;
/// - PIN and login failures, and keys that may not sign → `ACCESS_DENIED`;
/// - anything else → `ERROR`, naming the function and the `CKR_*` value.
pub fn map_error(e: &CkError, context: &str) -> PluginError {
    let CkError::Pkcs11(rv, function) = e else {
        return PluginError::error(format!("{context}: {e}"));
    };
    let name = rv_name(rv);
    let call = format!("C_{function:?}");
    match rv {
        RvError::FunctionRejected => PluginError::access_denied(format!(
            "{context}: the signing request was rejected by the approvers ({call}: {name})"
        )),
        RvError::FunctionCanceled => PluginError::error(format!(
            "{context}: the approval request expired or was cancelled before it was approved; \
             no signature was made ({call}: {name})"
        )),
        RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange => {
            PluginError::access_denied(format!("{context}: the PIN was rejected ({call}: {name})"))
        }
        RvError::PinLocked => PluginError::access_denied(format!(
            "{context}: the user PIN is locked ({call}: {name})"
        )),
        RvError::PinExpired => PluginError::access_denied(format!(
            "{context}: the user PIN has expired ({call}: {name})"
        )),
        RvError::UserNotLoggedIn | RvError::UserPinNotInitialized => {
            PluginError::access_denied(format!(
                "{context}: not logged in; set the PIN in {PIN_ENV} or pluginConfig '{CONFIG_PIN}' ({call}: {name})"
            ))
        }
        RvError::KeyFunctionNotPermitted => PluginError::access_denied(format!(
            "{context}: the key may not be used for signing ({call}: {name})"
        )),
        _ => PluginError::error(format!("{context}: {call} failed with {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn rv_names() {
        assert_eq!(rv_name(&RvError::FunctionRejected), "CKR_FUNCTION_REJECTED");
        assert_eq!(rv_name(&RvError::DataLenRange), "CKR_DATA_LEN_RANGE");
        assert_eq!(rv_name(&RvError::Cancel), "CKR_CANCEL");
        assert_eq!(
            rv_name(&RvError::VendorDefined(0x8000_0001)),
            "CKR_VENDOR_DEFINED (0x80000001)"
        );
    }

    #[test]
    fn error_mapping() {
        let code = |rv| map_error(&CkError::Pkcs11(rv, Function::Sign), "x").error_code;
        assert_eq!(code(RvError::FunctionRejected), ErrorCode::AccessDenied);
        assert_eq!(code(RvError::FunctionCanceled), ErrorCode::Error);
        assert_eq!(code(RvError::PinIncorrect), ErrorCode::AccessDenied);
        assert_eq!(code(RvError::UserNotLoggedIn), ErrorCode::AccessDenied);
        assert_eq!(code(RvError::DeviceError), ErrorCode::Error);
        let rejected = map_error(
            &CkError::Pkcs11(RvError::FunctionRejected, Function::Sign),
            "x",
        );
        assert!(rejected.error_message.contains("rejected by the approvers"));
        let canceled = map_error(
            &CkError::Pkcs11(RvError::FunctionCanceled, Function::Sign),
            "x",
        );
        assert!(canceled.error_message.contains("expired or was cancelled"));
        let other = map_error(&CkError::Pkcs11(RvError::DeviceError, Function::Sign), "x");
        assert!(other
            .error_message
            .contains("C_Sign failed with CKR_DEVICE_ERROR"));
    }

    #[test]
    fn curves_and_points() {
        // OID 1.2.840.10045.3.1.7 (P-256)
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert_eq!(ec_curve(&p256), Ok(Curve::P256));
        // OID 1.3.132.0.10 (secp256k1)
        let k1 = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
        assert_eq!(ec_curve(&k1), Err("secp256k1".to_string()));
        let ed = b"\x13\x0cedwards25519";
        assert_eq!(edwards_name(ed), "Ed25519");
        let wrapped = [0x04, 0x03, 0x04, 0xaa, 0xbb];
        assert_eq!(unwrap_ec_point(&wrapped), vec![0x04, 0xaa, 0xbb]);
        assert_eq!(unwrap_ec_point(&[0x04, 0xaa, 0xbb]), vec![0x04, 0xaa, 0xbb]);
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
    }

    #[test]
    fn config_defaults_and_empty_values() {
        let mut m = PluginConfig::new();
        m.insert("module".into(), "/x/y.so".into());
        m.insert("token".into(), "".into());
        m.insert("certChain".into(), "/c.pem".into());
        let c = Config::from_plugin_config(Some(&m));
        assert_eq!(c.module, PathBuf::from("/x/y.so"));
        assert_eq!(c.token, None);
        assert_eq!(c.cert_chain, Some(PathBuf::from("/c.pem")));
        let c = Config::from_plugin_config(None);
        assert!(c.module.ends_with(DEFAULT_MODULE));
    }
}
