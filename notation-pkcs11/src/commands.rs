//! The plugin's commands (`specs/plugin-extensibility.md`): `get-plugin-metadata`
//! ("Plugin metadata"), `describe-key` and `generate-signature` ("Signature Generator").

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::chain::{build_chain, Cert};
use crate::keyspec::{HashAlgorithm, KeySpec};
use crate::pkcs11::{Config, Key, Token, TokenCert, CONFIG_CERT_CHAIN};
use crate::protocol::{
    parse_request, to_json, DescribeKeyRequest, DescribeKeyResponse, GenerateSignatureRequest,
    GenerateSignatureResponse, GetMetadataRequest, GetMetadataResponse, PluginError,
    CAPABILITY_SIGNATURE_GENERATOR_RAW, COMMAND_DESCRIBE_KEY, COMMAND_GENERATE_SIGNATURE,
    COMMAND_GET_PLUGIN_METADATA, CONTRACT_VERSION, PLUGIN_NAME,
};

/// Support and documentation URL reported by `get-plugin-metadata`: the workspace's
/// `repository` (Cargo.toml `[workspace.package]`), the home of this project.
const URL: &str = env!("CARGO_PKG_REPOSITORY");
const _: () = assert!(!URL.is_empty(), "Cargo.toml must set `repository`");

/// Standard base64 that accepts input with or without padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Runs `command` with the request `input` (stdin) and returns the JSON response.
pub fn run(command: &str, input: &[u8]) -> Result<String, PluginError> {
    match command {
        COMMAND_GET_PLUGIN_METADATA => {
            // The request only carries an optional pluginConfig; an empty stdin is accepted
            // so that the command also works by hand.
            if !input.iter().all(u8::is_ascii_whitespace) {
                let _: GetMetadataRequest = parse_request(input, false)?;
            }
            to_json(&metadata())
        }
        COMMAND_DESCRIBE_KEY => to_json(&describe_key(parse_request(input, true)?)?),
        COMMAND_GENERATE_SIGNATURE => to_json(&generate_signature(parse_request(input, true)?)?),
        other => Err(PluginError::validation(format!(
            "unknown command '{other}'; commands: {COMMAND_GET_PLUGIN_METADATA}, \
             {COMMAND_DESCRIBE_KEY}, {COMMAND_GENERATE_SIGNATURE}"
        ))),
    }
}

/// True for the commands that read a request from stdin.
pub fn is_command(command: &str) -> bool {
    [
        COMMAND_GET_PLUGIN_METADATA,
        COMMAND_DESCRIBE_KEY,
        COMMAND_GENERATE_SIGNATURE,
    ]
    .contains(&command)
}

/// `get-plugin-metadata` ("Plugin metadata"): static data only, no module is loaded.
pub fn metadata() -> GetMetadataResponse {
    GetMetadataResponse {
        name: PLUGIN_NAME.to_string(),
        description: "notation-pkcs11 of the tsb-pkcs11 project: signs with a private key on \
                      any PKCS#11 token (Securosys TSB through tsb-pkcs11, HSM, smart card)"
            .to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        url: URL.to_string(),
        supported_contract_versions: vec![CONTRACT_VERSION.to_string()],
        capabilities: vec![CAPABILITY_SIGNATURE_GENERATOR_RAW.to_string()],
    }
}

/// `describe-key` ("describe-key"): the key spec of the private key labelled `keyId`.
pub fn describe_key(req: DescribeKeyRequest) -> Result<DescribeKeyResponse, PluginError> {
    require_key_id(&req.key_id)?;
    let config = Config::from_plugin_config(req.plugin_config.as_ref());
    let token = Token::open(&config)?;
    let key = token.find_key(&req.key_id)?;
    let spec = supported_spec(&key)?;
    Ok(DescribeKeyResponse {
        key_id: req.key_id,
        key_spec: spec.as_str().to_string(),
    })
}

/// `generate-signature` ("generate-signature").
///
/// The request is checked first (key spec, hash algorithm from the "Algorithm Selection"
/// table, payload), then the key and its certificate chain, and only then does the token
/// sign, so that a request that cannot succeed never reaches a token that may ask people
/// to approve it. The signature is verified with the leaf certificate's public key before
/// it is returned, as Notation will ("Signing workflow using plugin", step 4).
pub fn generate_signature(
    req: GenerateSignatureRequest,
) -> Result<GenerateSignatureResponse, PluginError> {
    require_key_id(&req.key_id)?;
    let spec = KeySpec::parse(&req.key_spec).ok_or_else(|| {
        PluginError::validation(format!(
            "keySpec '{}' is not supported; expected one of {}",
            req.key_spec,
            KeySpec::ALL.map(KeySpec::as_str).join(", ")
        ))
    })?;
    let hash = HashAlgorithm::parse(&req.hash_algorithm).ok_or_else(|| {
        PluginError::validation(format!(
            "hashAlgorithm '{}' is not supported; expected SHA-256, SHA-384 or SHA-512",
            req.hash_algorithm
        ))
    })?;
    if hash != spec.hash_algorithm() {
        return Err(PluginError::validation(format!(
            "hashAlgorithm {} does not match keySpec {spec}, which is signed with {}",
            hash.as_str(),
            spec.hash_algorithm().as_str()
        )));
    }
    if req.payload.is_empty() {
        return Err(PluginError::validation("payload is required"));
    }
    let payload = BASE64_LENIENT
        .decode(req.payload.trim())
        .map_err(|e| PluginError::validation(format!("payload is not valid base64: {e}")))?;

    let config = Config::from_plugin_config(req.plugin_config.as_ref());
    let token = Token::open(&config)?;
    let key = token.find_key(&req.key_id)?;
    let key_spec = supported_spec(&key)?;
    if key_spec != spec {
        return Err(PluginError::validation(format!(
            "keySpec {spec} does not match key '{}', which is {key_spec}",
            key.label
        )));
    }

    let chain = certificate_chain(&token, &key, &config)?;
    let leaf = &chain[0];
    let leaf_key = leaf.public_key().map_err(|e| {
        PluginError::error(format!(
            "certificate '{}' of key '{}': {e}",
            leaf.subject_name(),
            key.label
        ))
    })?;
    let matches = match &key.public_key {
        Some(pk) => *pk == leaf_key,
        None => leaf_key.key_spec().ok() == Some(spec),
    };
    if !matches {
        return Err(PluginError::error(format!(
            "certificate '{}' does not belong to key '{}': its public key differs from the key's",
            leaf.subject_name(),
            key.label
        )));
    }

    let signature = token.sign(&key, spec, &payload)?;
    drop(token);
    leaf_key.verify(spec, &payload, &signature).map_err(|e| {
        PluginError::error(format!(
            "the token's signature with key '{}' does not verify with certificate '{}': {e}",
            key.label,
            leaf.subject_name()
        ))
    })?;

    Ok(GenerateSignatureResponse {
        key_id: req.key_id,
        signature: STANDARD.encode(&signature),
        signing_algorithm: spec.signing_algorithm().to_string(),
        certificate_chain: chain.iter().map(|c| STANDARD.encode(&c.der)).collect(),
    })
}

fn require_key_id(key_id: &str) -> Result<(), PluginError> {
    if key_id.is_empty() {
        return Err(PluginError::validation("keyId is required"));
    }
    Ok(())
}

/// The key's spec, or a `VALIDATION_ERROR` saying why Notation cannot use the key.
fn supported_spec(key: &Key) -> Result<KeySpec, PluginError> {
    key.spec.clone().map_err(|why| {
        PluginError::validation(format!(
            "key '{}' is {why}, which Notation does not support (supported: {})",
            key.label,
            KeySpec::ALL.map(KeySpec::as_str).join(", ")
        ))
    })
}

/// The certificate chain of `key`, leaf first.
///
/// The leaf is the token's certificate with the key's `CKA_ID`, else with the key's label,
/// else with the key's public key; if the token has none, the first certificate of the
/// `certChain` PEM file. Issuers come from the token's certificates and the PEM file (see
/// [`build_chain`]). No certificate at all is a `VALIDATION_ERROR`.
fn certificate_chain(token: &Token, key: &Key, config: &Config) -> Result<Vec<Cert>, PluginError> {
    let token_certs = token.certificates()?;
    let pem_certs = match &config.cert_chain {
        None => Vec::new(),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                PluginError::validation(format!(
                    "cannot read pluginConfig {CONFIG_CERT_CHAIN} '{}': {e}",
                    path.display()
                ))
            })?;
            let certs = Cert::load_pem_chain(&pem).map_err(|e| {
                PluginError::validation(format!(
                    "pluginConfig {CONFIG_CERT_CHAIN} '{}': {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(PluginError::validation(format!(
                    "pluginConfig {CONFIG_CERT_CHAIN} '{}' holds no certificate",
                    path.display()
                )));
            }
            certs
        }
    };

    let leaf = select_leaf(&token_certs, key).or_else(|| pem_certs.first().cloned());
    let Some(leaf) = leaf else {
        return Err(PluginError::validation(format!(
            "no certificate for key '{}': token '{}' has no certificate with the key's CKA_ID \
             or label, and pluginConfig {CONFIG_CERT_CHAIN} is not set",
            key.label, token.label
        )));
    };

    let mut pool: Vec<Cert> = Vec::new();
    for c in token_certs.into_iter().map(|t| t.cert).chain(pem_certs) {
        if !pool.contains(&c) {
            pool.push(c);
        }
    }
    build_chain(leaf, &pool).map_err(|e| {
        PluginError::validation(format!(
            "certificate chain of key '{}': {e}; put the CA certificates on the token or in \
             the pluginConfig {CONFIG_CERT_CHAIN} file",
            key.label
        ))
    })
}

/// The token certificate for `key`: same `CKA_ID` (if the key has one), else same label,
/// else same public key. Among several, one whose public key is the key's wins, then the
/// newest.
fn select_leaf(certs: &[TokenCert], key: &Key) -> Option<Cert> {
    let same_key = |c: &TokenCert| match (&key.public_key, c.cert.public_key()) {
        (Some(pk), Ok(cpk)) => *pk == cpk,
        _ => false,
    };
    let by_id: Vec<&TokenCert> = if key.id.is_empty() {
        Vec::new()
    } else {
        certs.iter().filter(|c| c.id == key.id).collect()
    };
    let candidates = if !by_id.is_empty() {
        by_id
    } else {
        let by_label: Vec<&TokenCert> = certs.iter().filter(|c| c.label == key.label).collect();
        if !by_label.is_empty() {
            by_label
        } else {
            certs.iter().filter(|c| same_key(c)).collect()
        }
    };
    candidates
        .into_iter()
        .max_by_key(|c| (same_key(c), c.cert.not_before_unix()))
        .map(|c| c.cert.clone())
}
