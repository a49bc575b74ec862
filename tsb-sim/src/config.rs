//! Simulator configuration: the TOML file format (see `README.md` and `demo.toml`) and the
//! built-in [`SimConfig::demo`] / [`SimConfig::fast_test`] configurations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// Names of the booleans of `json.attributes`, in TSB order.
pub(crate) const ATTRIBUTE_NAMES: [&str; 11] = [
    "sign",
    "decrypt",
    "unwrap",
    "derive",
    "sensitive",
    "alwaysSensitive",
    "extractable",
    "neverExtractable",
    "modifiable",
    "copyable",
    "destroyable",
];

/// Complete simulator configuration. Every field has a default, so an empty TOML file is valid
/// (a simulator without keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimConfig {
    /// `host:port` to listen on; `None` → `127.0.0.1:0` (a free port).
    #[serde(default)]
    pub listen: Option<String>,
    /// Further listeners serving the same keys and requests (cluster mode), `host:port` each.
    #[serde(default)]
    pub extra_listen: Vec<String>,
    /// Optional extra plain-HTTP listener serving only the `/sim/` control interface (useful when
    /// the main listener requires mTLS).
    #[serde(default)]
    pub control_listen: Option<String>,
    /// Directory for the key cache and TLS files; falls back to env `TSB_SIM_STATE_DIR`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Cache generated keys as PKCS#8 PEM on disk (in `stateDir/keys`, or without a state
    /// directory in `$TMPDIR/tsb-sim-keycache`). Default true.
    #[serde(default = "default_true")]
    pub cache_keys: bool,
    /// Multiplier for policy timelock/timeout seconds: 0.01 turns a 60 s timelock into 600 ms.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// Delay between reaching the quorum (APPROVED) and execution (EXECUTED), like TSB's timer
    /// job. Milliseconds, not scaled by `timeScale`.
    #[serde(default = "default_exec_delay")]
    pub approved_execution_delay_ms: u64,
    /// Approve every pending request as all needed approvers after this many milliseconds
    /// (not scaled). Per-key `autoApproveAfterMs` overrides it.
    #[serde(default)]
    pub auto_approve_after_ms: Option<u64>,
    /// Emulated network round-trip time in milliseconds (0 = none): one RTT per new connection
    /// and per client flight (see the README's "Network emulation").
    #[serde(default)]
    pub rtt_ms: u64,
    /// Upper bound of a `hang` fault, in milliseconds (default 10 minutes).
    #[serde(default = "default_hang_max")]
    pub hang_max_ms: u64,
    /// Maximum decoded payload size of a sign request (default 65536).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Value of `GET /v1/versionInfo` (default `2.2.0`).
    #[serde(default = "default_version")]
    pub version: String,
    /// Encoding of `GET /v1/certificate/{label}`.
    #[serde(default)]
    pub certificate_format: CertificateFormat,
    /// Which `signatureAlgorithm` names post-quantum keys sign with (default both).
    #[serde(default)]
    pub pqc_signature_names: PqcSignatureNames,
    /// Authentication (JWT bearer token, API keys per role).
    #[serde(default)]
    pub auth: AuthConfig,
    /// TLS; `None` or `enabled = false` → plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The HSM's keys, listed by `GET /v1/key` in this order.
    #[serde(default)]
    pub keys: Vec<KeySpec>,
}

fn default_true() -> bool {
    true
}
fn default_time_scale() -> f64 {
    1.0
}
fn default_exec_delay() -> u64 {
    1000
}
fn default_hang_max() -> u64 {
    600_000
}
fn default_max_payload() -> usize {
    64 * 1024
}
fn default_version() -> String {
    "2.2.0".to_string()
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: None,
            extra_listen: Vec::new(),
            control_listen: None,
            state_dir: None,
            cache_keys: true,
            time_scale: 1.0,
            approved_execution_delay_ms: default_exec_delay(),
            auto_approve_after_ms: None,
            rtt_ms: 0,
            hang_max_ms: default_hang_max(),
            max_payload_bytes: default_max_payload(),
            version: default_version(),
            certificate_format: CertificateFormat::default(),
            pqc_signature_names: PqcSignatureNames::default(),
            auth: AuthConfig::default(),
            tls: None,
            keys: Vec::new(),
        }
    }
}

/// How `GET /v1/certificate/{label}` encodes the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CertificateFormat {
    /// `{"label","certificate": base64 DER}` (default).
    #[default]
    Base64,
    /// `{"label","certificate": PEM text}`.
    Pem,
    /// `{"label","rawCertificate": base64 DER}`.
    RawCertificate,
}

/// Authentication settings. Everything empty → no authentication.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// When set, every `/v1/` request needs `Authorization: Bearer <bearerToken>` (else 401/617).
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// API keys per role. A role with an empty list needs no key.
    #[serde(default)]
    pub api_keys: ApiKeys,
}

/// API keys per TSB role (header `X-API-KEY`); wrong or missing → 401 with errorCode 631.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// `GET /v1/key`, key attributes.
    #[serde(rename = "KeyManagementToken", default)]
    pub key_management: Vec<String>,
    /// `/v1/synchronousSign`, `/v1/sign`, `/v1/request/**`, `/v1/certificate/**`.
    #[serde(rename = "KeyOperationToken", default)]
    pub key_operation: Vec<String>,
    /// `/v1/versionInfo`, `/v1/licenseInfo`, `/v1/keystore/statistics`.
    #[serde(rename = "ServiceToken", default)]
    pub service: Vec<String>,
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Default true (the presence of the `[tls]` table turns TLS on).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Which server certificate to present.
    #[serde(default)]
    pub server_cert_mode: ServerCertMode,
    /// Where to write the CA certificate (PEM) clients must trust; default
    /// `<stateDir>/tls/ca.pem` or a per-instance temporary directory.
    #[serde(default)]
    pub ca_cert_path: Option<PathBuf>,
    /// mTLS: whether a client certificate is requested.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Trust client certificates issued by this CA (PEM) instead of a generated client CA.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Where to write the generated client certificate (PEM); default next to the CA.
    #[serde(default)]
    pub client_cert_path: Option<PathBuf>,
    /// Where to write the generated client key (PKCS#8 PEM); default next to the CA.
    #[serde(default)]
    pub client_key_path: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: true,
            server_cert_mode: ServerCertMode::Valid,
            ca_cert_path: None,
            client_auth: ClientAuth::None,
            client_ca_file: None,
            client_cert_path: None,
            client_key_path: None,
        }
    }
}

/// The server certificate the simulator presents (for clients' TLS failure tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerCertMode {
    /// Issued by the written CA for `localhost`, `127.0.0.1`, `::1`.
    #[default]
    Valid,
    /// Issued by the CA, but expired yesterday.
    Expired,
    /// Issued by the CA for `wrong-host.invalid` only.
    WrongHost,
    /// Valid names and dates, but issued by a CA that is not written anywhere.
    Untrusted,
}

/// Client-certificate policy (mTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// No client certificate requested.
    #[default]
    None,
    /// The TLS handshake fails without a client certificate signed by the client CA.
    Required,
    /// The handshake accepts a missing certificate, `/v1/` requests then get 401 (errorCode 632).
    Optional,
}

/// Key type (`json.algorithm` of the attributes response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "RSA")]
    Rsa,
    #[serde(rename = "EC")]
    Ec,
    /// Ed25519.
    #[serde(rename = "ED", alias = "ED25519", alias = "EDDSA")]
    Ed,
    /// A secret key (cannot sign, has no public key).
    #[serde(rename = "AES")]
    Aes,
    /// ML-DSA (FIPS 204) in its three parameter sets (docs/tsb-api.md, "Post-quantum keys").
    #[serde(rename = "ML-DSA-44")]
    MlDsa44,
    #[serde(rename = "ML-DSA-65")]
    MlDsa65,
    #[serde(rename = "ML-DSA-87")]
    MlDsa87,
    /// SLH-DSA (FIPS 205) in its twelve parameter sets.
    #[serde(rename = "SLH-DSA-SHA2-128s")]
    SlhDsaSha2_128s,
    #[serde(rename = "SLH-DSA-SHA2-128f")]
    SlhDsaSha2_128f,
    #[serde(rename = "SLH-DSA-SHA2-192s")]
    SlhDsaSha2_192s,
    #[serde(rename = "SLH-DSA-SHA2-192f")]
    SlhDsaSha2_192f,
    #[serde(rename = "SLH-DSA-SHA2-256s")]
    SlhDsaSha2_256s,
    #[serde(rename = "SLH-DSA-SHA2-256f")]
    SlhDsaSha2_256f,
    #[serde(rename = "SLH-DSA-SHAKE-128s")]
    SlhDsaShake128s,
    #[serde(rename = "SLH-DSA-SHAKE-128f")]
    SlhDsaShake128f,
    #[serde(rename = "SLH-DSA-SHAKE-192s")]
    SlhDsaShake192s,
    #[serde(rename = "SLH-DSA-SHAKE-192f")]
    SlhDsaShake192f,
    #[serde(rename = "SLH-DSA-SHAKE-256s")]
    SlhDsaShake256s,
    #[serde(rename = "SLH-DSA-SHAKE-256f")]
    SlhDsaShake256f,
    /// LMS (RFC 8554) as a one-level HSS key; the attributes answer names it `HSS-LMS`.
    #[serde(rename = "LMS", alias = "HSS-LMS")]
    Lms,
}

impl KeyAlgorithm {
    /// Every post-quantum key type, in the TSB's order.
    pub const POST_QUANTUM: [KeyAlgorithm; 16] = [
        KeyAlgorithm::MlDsa44,
        KeyAlgorithm::MlDsa65,
        KeyAlgorithm::MlDsa87,
        KeyAlgorithm::SlhDsaSha2_128s,
        KeyAlgorithm::SlhDsaSha2_128f,
        KeyAlgorithm::SlhDsaSha2_192s,
        KeyAlgorithm::SlhDsaSha2_192f,
        KeyAlgorithm::SlhDsaSha2_256s,
        KeyAlgorithm::SlhDsaSha2_256f,
        KeyAlgorithm::SlhDsaShake128s,
        KeyAlgorithm::SlhDsaShake128f,
        KeyAlgorithm::SlhDsaShake192s,
        KeyAlgorithm::SlhDsaShake192f,
        KeyAlgorithm::SlhDsaShake256s,
        KeyAlgorithm::SlhDsaShake256f,
        KeyAlgorithm::Lms,
    ];

    /// The key type named `name` as `POST /v1/key` writes it (`RSA`, `ML-DSA-65`, `LMS`, ...).
    pub fn from_tsb_name(name: &str) -> Option<KeyAlgorithm> {
        [
            KeyAlgorithm::Rsa,
            KeyAlgorithm::Ec,
            KeyAlgorithm::Ed,
            KeyAlgorithm::Aes,
        ]
        .into_iter()
        .chain(KeyAlgorithm::POST_QUANTUM)
        .find(|a| a.as_str() == name)
    }

    /// ML-DSA, SLH-DSA or LMS.
    pub fn is_post_quantum(self) -> bool {
        KeyAlgorithm::POST_QUANTUM.contains(&self)
    }
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "RSA",
            KeyAlgorithm::Ec => "EC",
            KeyAlgorithm::Ed => "ED",
            KeyAlgorithm::Aes => "AES",
            KeyAlgorithm::MlDsa44 => "ML-DSA-44",
            KeyAlgorithm::MlDsa65 => "ML-DSA-65",
            KeyAlgorithm::MlDsa87 => "ML-DSA-87",
            KeyAlgorithm::SlhDsaSha2_128s => "SLH-DSA-SHA2-128s",
            KeyAlgorithm::SlhDsaSha2_128f => "SLH-DSA-SHA2-128f",
            KeyAlgorithm::SlhDsaSha2_192s => "SLH-DSA-SHA2-192s",
            KeyAlgorithm::SlhDsaSha2_192f => "SLH-DSA-SHA2-192f",
            KeyAlgorithm::SlhDsaSha2_256s => "SLH-DSA-SHA2-256s",
            KeyAlgorithm::SlhDsaSha2_256f => "SLH-DSA-SHA2-256f",
            KeyAlgorithm::SlhDsaShake128s => "SLH-DSA-SHAKE-128s",
            KeyAlgorithm::SlhDsaShake128f => "SLH-DSA-SHAKE-128f",
            KeyAlgorithm::SlhDsaShake192s => "SLH-DSA-SHAKE-192s",
            KeyAlgorithm::SlhDsaShake192f => "SLH-DSA-SHAKE-192f",
            KeyAlgorithm::SlhDsaShake256s => "SLH-DSA-SHAKE-256s",
            KeyAlgorithm::SlhDsaShake256f => "SLH-DSA-SHAKE-256f",
            KeyAlgorithm::Lms => "LMS",
        }
    }
}

/// NIST curves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Curve {
    #[serde(rename = "P-256", alias = "secp256r1", alias = "prime256v1")]
    P256,
    #[serde(rename = "P-384", alias = "secp384r1")]
    P384,
    #[serde(rename = "P-521", alias = "secp521r1")]
    P521,
    /// The Bitcoin/Ethereum curve (SEC 2).
    #[serde(rename = "secp256k1")]
    Secp256k1,
}

impl Curve {
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
            Curve::Secp256k1 => "secp256k1",
        }
    }
    pub fn oid(self) -> &'static str {
        match self {
            Curve::P256 => "1.2.840.10045.3.1.7",
            Curve::P384 => "1.3.132.0.34",
            Curve::P521 => "1.3.132.0.35",
            Curve::Secp256k1 => "1.3.132.0.10",
        }
    }
    pub fn bits(self) -> u32 {
        match self {
            Curve::P256 | Curve::Secp256k1 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }
    /// Field size in bytes (width of r and s in a RAW signature).
    pub fn field_bytes(self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// The `signatureAlgorithm` names of post-quantum signatures a TSB knows: the documented
/// `DILITHIUM`/`SPHINCS_PLUS` (REST API 2.2 tutorial, the TSB's 2025 enum), the newer
/// `ML_DSA`/`SLH_DSA` (Securosys' 2026 clients), or both. `LMS` is in every set. A name outside
/// the set is refused with 600, as an unknown name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PqcSignatureNames {
    #[default]
    Both,
    Documented,
    Current,
}

/// One HSM key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySpec {
    pub label: String,
    pub algorithm: KeyAlgorithm,
    /// RSA modulus bits (default 2048) or AES key bits (default 256).
    #[serde(default)]
    pub key_size: Option<u32>,
    /// EC curve (default P-256).
    #[serde(default)]
    pub curve: Option<Curve>,
    /// `json.id` of the attributes response (null when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Key password (`keyPassword` / `password` arrays in requests).
    #[serde(default)]
    pub password: Option<String>,
    /// `attributes.sign`; default true for RSA/EC/ED, false for AES.
    #[serde(default)]
    pub sign: Option<bool>,
    /// `policy.keyStatus.blocked`: a blocked key cannot sign (614).
    #[serde(default)]
    pub blocked: bool,
    /// Overrides of the other attribute booleans (`decrypt`, `unwrap`, `derive`, `sensitive`,
    /// `alwaysSensitive`, `extractable`, `neverExtractable`, `modifiable`, `copyable`,
    /// `destroyable`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, bool>,
    /// Smart Key Attributes: `None` → `"policy": null` (unless blocked).
    #[serde(default)]
    pub policy: Option<PolicySpec>,
    /// Overrides the global `autoApproveAfterMs` for this key.
    #[serde(default)]
    pub auto_approve_after_ms: Option<u64>,
    /// A certificate the key has at start.
    #[serde(default)]
    pub certificate: Option<CertificateSpec>,
    /// Use this PKCS#8 PEM private key instead of generating one.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// LMS keys: the tree height (5, 10 or 15; default 5, as the TSB creates them).
    #[serde(default)]
    pub lms_height: Option<u8>,
    /// LMS keys: the Winternitz parameter of LM-OTS (1, 2, 4 or 8; default 1, as the TSB
    /// creates them).
    #[serde(default)]
    pub lmots_w: Option<u8>,
}

impl KeySpec {
    fn base(label: &str, algorithm: KeyAlgorithm) -> KeySpec {
        KeySpec {
            label: label.to_string(),
            algorithm,
            key_size: None,
            curve: None,
            id: None,
            password: None,
            sign: None,
            blocked: false,
            attributes: BTreeMap::new(),
            policy: None,
            auto_approve_after_ms: None,
            certificate: None,
            private_key_file: None,
            lms_height: None,
            lmots_w: None,
        }
    }
    /// An RSA key of `bits` bits.
    pub fn rsa(label: &str, bits: u32) -> KeySpec {
        KeySpec {
            key_size: Some(bits),
            ..KeySpec::base(label, KeyAlgorithm::Rsa)
        }
    }
    /// An EC key on `curve`.
    pub fn ec(label: &str, curve: Curve) -> KeySpec {
        KeySpec {
            curve: Some(curve),
            ..KeySpec::base(label, KeyAlgorithm::Ec)
        }
    }
    /// An Ed25519 key.
    pub fn ed25519(label: &str) -> KeySpec {
        KeySpec::base(label, KeyAlgorithm::Ed)
    }
    /// A post-quantum key (`ML-DSA-65`, `SLH-DSA-SHA2-128f`, `LMS`, ...).
    pub fn post_quantum(label: &str, algorithm: KeyAlgorithm) -> KeySpec {
        KeySpec::base(label, algorithm)
    }
    /// An LMS key with tree height `height` and Winternitz parameter `w`.
    pub fn lms(label: &str, height: u8, w: u8) -> KeySpec {
        KeySpec {
            lms_height: Some(height),
            lmots_w: Some(w),
            ..KeySpec::base(label, KeyAlgorithm::Lms)
        }
    }
    /// An AES key (no public key, cannot sign).
    pub fn aes(label: &str, bits: u32) -> KeySpec {
        KeySpec {
            key_size: Some(bits),
            ..KeySpec::base(label, KeyAlgorithm::Aes)
        }
    }
    pub fn with_id(mut self, id: &str) -> KeySpec {
        self.id = Some(id.to_string());
        self
    }
    pub fn with_password(mut self, password: &str) -> KeySpec {
        self.password = Some(password.to_string());
        self
    }
    pub fn with_sign(mut self, sign: bool) -> KeySpec {
        self.sign = Some(sign);
        self
    }
    pub fn with_attribute(mut self, name: &str, value: bool) -> KeySpec {
        self.attributes.insert(name.to_string(), value);
        self
    }
    pub fn with_blocked(mut self, blocked: bool) -> KeySpec {
        self.blocked = blocked;
        self
    }
    pub fn with_policy(mut self, policy: PolicySpec) -> KeySpec {
        self.policy = Some(policy);
        self
    }
    pub fn with_auto_approve_after_ms(mut self, ms: u64) -> KeySpec {
        self.auto_approve_after_ms = Some(ms);
        self
    }
    /// Generate a self-signed code-signing certificate with this common name at start.
    pub fn with_self_signed_certificate(mut self, common_name: &str) -> KeySpec {
        self.certificate = Some(CertificateSpec {
            common_name: Some(common_name.to_string()),
            ..CertificateSpec::default()
        });
        self
    }

    /// RSA bits / AES bits with defaults applied.
    pub fn effective_size(&self) -> u32 {
        match self.algorithm {
            KeyAlgorithm::Rsa => self.key_size.unwrap_or(2048),
            KeyAlgorithm::Aes => self.key_size.unwrap_or(256),
            KeyAlgorithm::Ec => self.effective_curve().bits(),
            KeyAlgorithm::Ed => 255,
            // Only a cache key for LMS (height and Winternitz parameter); no size otherwise.
            KeyAlgorithm::Lms => {
                self.effective_lms_height() as u32 * 10 + self.effective_lmots_w() as u32
            }
            _ => 0,
        }
    }
    pub fn effective_lms_height(&self) -> u8 {
        self.lms_height.unwrap_or(5)
    }
    pub fn effective_lmots_w(&self) -> u8 {
        self.lmots_w.unwrap_or(1)
    }
    pub fn effective_curve(&self) -> Curve {
        self.curve.unwrap_or(Curve::P256)
    }
    pub fn can_sign_attribute(&self) -> bool {
        self.attributes
            .get("sign")
            .copied()
            .or(self.sign)
            .unwrap_or(self.algorithm != KeyAlgorithm::Aes)
    }

    pub(crate) fn validate(&self) -> Result<(), SimError> {
        let err = |m: String| Err(SimError::Config(format!("key '{}': {m}", self.label)));
        if self.label.is_empty() {
            return Err(SimError::Config("a key has an empty label".into()));
        }
        let size = self.effective_size();
        match self.algorithm {
            KeyAlgorithm::Rsa if !(1024..=4096).contains(&size) || !size.is_multiple_of(8) => {
                return err(format!("unsupported RSA key size {size} (1024..=4096)"));
            }
            KeyAlgorithm::Aes if ![128, 192, 256].contains(&size) => {
                return err(format!("unsupported AES key size {size}"));
            }
            _ => {}
        }
        if self.curve.is_some() && self.algorithm != KeyAlgorithm::Ec {
            return err("`curve` is only valid for EC keys".into());
        }
        if self.algorithm == KeyAlgorithm::Lms {
            if ![5, 10, 15].contains(&self.effective_lms_height()) {
                return err("`lmsHeight` must be 5, 10 or 15".into());
            }
            if ![1, 2, 4, 8].contains(&self.effective_lmots_w()) {
                return err("`lmotsW` must be 1, 2, 4 or 8".into());
            }
        } else if self.lms_height.is_some() || self.lmots_w.is_some() {
            return err("`lmsHeight` and `lmotsW` are only valid for LMS keys".into());
        }
        if self.algorithm.is_post_quantum() && self.private_key_file.is_some() {
            return err("`privateKeyFile` is not supported for post-quantum keys".into());
        }
        for name in self.attributes.keys() {
            if !ATTRIBUTE_NAMES.contains(&name.as_str()) {
                return err(format!("unknown attribute '{name}'"));
            }
        }
        if let Some(policy) = &self.policy {
            for token in &policy.tokens {
                for group in &token.groups {
                    if group.quorum == 0 || group.quorum as usize > group.approvers.len() {
                        return err(format!(
                            "group '{}' has quorum {} but {} approvers",
                            group.name,
                            group.quorum,
                            group.approvers.len()
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Smart Key Attributes of a key. `ruleUse` is given by `tokens`; the attributes response shows
/// the same rule for `ruleBlock`, `ruleUnblock` and `ruleModify`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Tokens are OR'ed; a token without groups is always satisfied.
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
}

impl PolicySpec {
    /// A policy with one token with no groups (always satisfiable: signs at once).
    pub fn empty() -> PolicySpec {
        PolicySpec {
            tokens: vec![TokenSpec::new(Vec::new())],
        }
    }
    /// One token, one group of `approvers`, `quorum` needed.
    pub fn single_group(quorum: u32, approvers: &[&str]) -> PolicySpec {
        PolicySpec {
            tokens: vec![TokenSpec::new(vec![GroupSpec::new(
                "approvers",
                quorum,
                approvers,
            )])],
        }
    }
    /// One token whose groups are AND'ed.
    pub fn groups(groups: Vec<GroupSpec>) -> PolicySpec {
        PolicySpec {
            tokens: vec![TokenSpec::new(groups)],
        }
    }
    /// Sets the timelock (seconds, before `timeScale`) of every token.
    pub fn with_timelock(mut self, seconds: u64) -> PolicySpec {
        self.tokens.iter_mut().for_each(|t| t.timelock = seconds);
        self
    }
    /// Sets the timeout (seconds, before `timeScale`) of every token.
    pub fn with_timeout(mut self, seconds: u64) -> PolicySpec {
        self.tokens.iter_mut().for_each(|t| t.timeout = seconds);
        self
    }
    /// True when some token has a non-empty group list (the contract's SKA rule).
    pub fn needs_approval(&self) -> bool {
        self.tokens.iter().any(|t| !t.groups.is_empty())
    }
}

/// One `ruleUse` token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSpec {
    #[serde(default = "default_token_name")]
    pub name: String,
    /// Seconds after creation before which the request cannot execute (0 = none).
    #[serde(default)]
    pub timelock: u64,
    /// Seconds after creation after which an unapproved request expires (0 = never).
    #[serde(default)]
    pub timeout: u64,
    /// AND'ed groups.
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
}

fn default_token_name() -> String {
    "token".to_string()
}

impl TokenSpec {
    pub fn new(groups: Vec<GroupSpec>) -> TokenSpec {
        TokenSpec {
            name: default_token_name(),
            timelock: 0,
            timeout: 0,
            groups,
        }
    }
}

/// A group of approvers of which `quorum` must approve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    pub quorum: u32,
    /// Approver names (their public keys are derived from the names).
    pub approvers: Vec<String>,
}

impl GroupSpec {
    pub fn new(name: &str, quorum: u32, approvers: &[&str]) -> GroupSpec {
        GroupSpec {
            name: name.to_string(),
            quorum,
            approvers: approvers.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A certificate a key has at start: generated self-signed (default) or read from `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateSpec {
    /// PEM or DER certificate file to use instead of generating one.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Subject CN of the generated certificate (default: the key label).
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default = "default_validity")]
    pub validity_days: u32,
    #[serde(default = "default_key_usage")]
    pub key_usage: Vec<String>,
    #[serde(default = "default_eku")]
    pub extended_key_usage: Vec<String>,
    #[serde(default)]
    pub certificate_authority: bool,
    /// Signature algorithm (default: SHA256_WITH_RSA / SHA{256,384,512}_WITH_ECDSA / EDDSA).
    #[serde(default)]
    pub signature_algorithm: Option<String>,
}

fn default_validity() -> u32 {
    365
}
fn default_key_usage() -> Vec<String> {
    vec!["DIGITAL_SIGNATURE".to_string()]
}
fn default_eku() -> Vec<String> {
    vec!["CODE_SIGNING".to_string()]
}

impl Default for CertificateSpec {
    fn default() -> Self {
        CertificateSpec {
            file: None,
            common_name: None,
            validity_days: default_validity(),
            key_usage: default_key_usage(),
            extended_key_usage: default_eku(),
            certificate_authority: false,
            signature_algorithm: None,
        }
    }
}

impl SimConfig {
    /// Parses a TOML configuration (format: `README.md`, example: `demo.toml`).
    pub fn from_toml_str(s: &str) -> Result<SimConfig, SimError> {
        let cfg: SimConfig = toml::from_str(s).map_err(|e| SimError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<SimConfig, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?;
        SimConfig::from_toml_str(&text)
            .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))
    }

    /// Checks consistency (unique labels, quorum ≤ approvers, sizes).
    pub fn validate(&self) -> Result<(), SimError> {
        let mut seen = std::collections::HashSet::new();
        for key in &self.keys {
            key.validate()?;
            if !seen.insert(key.label.as_str()) {
                return Err(SimError::Config(format!(
                    "duplicate key label '{}'",
                    key.label
                )));
            }
        }
        if !(self.time_scale > 0.0 && self.time_scale.is_finite()) {
            return Err(SimError::Config("timeScale must be > 0".into()));
        }
        Ok(())
    }

    /// The demo configuration (identical to `tsb-sim/demo.toml`): plain keys `rsa-2048`,
    /// `rsa-3072`, `rsa-4096`, `ec-p256`, `ec-p384`, `ec-p521`, `ed25519`; `ec-p256-pw` with
    /// password `secret-pw`; SKA keys `ska-ec-p256`, `ska-rsa-2048`, `ska-quorum`,
    /// `ska-timelock`; `blocked-ec-p256`; non-signing `decrypt-only-rsa` and `aes-256`.
    pub fn demo() -> SimConfig {
        let alice_bob = || PolicySpec::single_group(1, &["alice", "bob"]);
        SimConfig {
            approved_execution_delay_ms: 1500,
            keys: vec![
                KeySpec::rsa("rsa-2048", 2048).with_id("0001"),
                KeySpec::rsa("rsa-3072", 3072).with_id("0002"),
                KeySpec::rsa("rsa-4096", 4096).with_id("0003"),
                KeySpec::ec("ec-p256", Curve::P256)
                    .with_id("0004")
                    .with_policy(PolicySpec::empty()),
                KeySpec::ec("ec-p384", Curve::P384)
                    .with_id("0005")
                    .with_policy(PolicySpec::default()),
                KeySpec::ec("ec-p521", Curve::P521).with_id("0006"),
                KeySpec::ed25519("ed25519").with_id("0007"),
                KeySpec::ec("ec-p256-pw", Curve::P256).with_password("secret-pw"),
                KeySpec::ec("ska-ec-p256", Curve::P256).with_policy(alice_bob()),
                KeySpec::rsa("ska-rsa-2048", 2048).with_policy(alice_bob()),
                KeySpec::ec("ska-quorum", Curve::P256).with_policy(PolicySpec::groups(vec![
                    GroupSpec::new("A", 2, &["alice", "bob", "carol"]),
                    GroupSpec::new("B", 1, &["dave"]),
                ])),
                KeySpec::ec("ska-timelock", Curve::P256)
                    .with_policy(PolicySpec::single_group(1, &["alice"]).with_timelock(60)),
                KeySpec::post_quantum("mldsa-65", KeyAlgorithm::MlDsa65).with_id("0030"),
                KeySpec::post_quantum("slhdsa-sha2-128f", KeyAlgorithm::SlhDsaSha2_128f)
                    .with_id("0031"),
                KeySpec::lms("lms-h5", 5, 8).with_id("0032"),
                KeySpec::post_quantum("mldsa-65-approval", KeyAlgorithm::MlDsa65)
                    .with_id("0033")
                    .with_policy(PolicySpec::single_group(1, &["alice"])),
                KeySpec::ec("blocked-ec-p256", Curve::P256).with_blocked(true),
                KeySpec::rsa("decrypt-only-rsa", 2048)
                    .with_sign(false)
                    .with_attribute("decrypt", true)
                    .with_attribute("unwrap", true),
                KeySpec::aes("aes-256", 256)
                    .with_attribute("decrypt", true)
                    .with_attribute("unwrap", true),
            ],
            ..SimConfig::default()
        }
    }

    /// A quick configuration for tests: the demo keys without `rsa-3072`/`rsa-4096`,
    /// `timeScale = 0.01` (60 s → 600 ms) and a 100 ms execution delay.
    pub fn fast_test() -> SimConfig {
        let mut cfg = SimConfig::demo();
        cfg.keys
            .retain(|k| k.label != "rsa-3072" && k.label != "rsa-4096");
        cfg.time_scale = 0.01;
        cfg.approved_execution_delay_ms = 100;
        cfg
    }

    /// The state directory: `stateDir`, else env `TSB_SIM_STATE_DIR`.
    pub fn effective_state_dir(&self) -> Option<PathBuf> {
        self.state_dir.clone().or_else(|| {
            std::env::var_os("TSB_SIM_STATE_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }
}
