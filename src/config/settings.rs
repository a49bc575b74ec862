//! The checked configuration ([`Config`]) and the types of its fields, shared by the files of
//! `config`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::policy::PolicySpec;
use super::secrets::Secret;

/// Environment variable holding the path of the configuration file.
pub const CONFIG_ENV: &str = "TSB_PKCS11_CONFIG";

/// The longest `pkcs11.approvalTimeoutSecs` accepted, and the cap of any approval wait.
pub(crate) const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(MAX_APPROVAL_WAIT_SECS);
pub(super) const MAX_APPROVAL_WAIT_SECS: u64 = 24 * 60 * 60;

/// How long `C_Sign` waits for approvals when `pkcs11.approvalTimeoutSecs` is not set.
pub(crate) const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(600);

/// How the module authenticates to the TSB (`authType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthType {
    /// JWT bearer token (`Authorization: Bearer`).
    Token,
    /// mTLS client certificate.
    Cert,
    /// Neither (API keys may still be sent).
    None,
}

/// What the PIN given to `C_Login` is (`pkcs11.pinIs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinIs {
    /// The PIN is ignored.
    None,
    /// The PIN is the JWT.
    Token,
    /// The PIN is the `KeyOperationToken` API key.
    ApiKey,
    /// The PIN is the password of the HSM keys.
    KeyPassword,
}

/// How requests are spread over several TSB URLs (`pkcs11.nodeStrategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeStrategy {
    /// Every request goes to the first node that is up, in the order of `restApi`.
    #[default]
    Failover,
    /// Requests are spread over the nodes that are up.
    Spread,
}

/// The HTTP proxy of `https://` TSB nodes (`pkcs11.proxy`); `src/tsb/proxy.rs` parses the URL.
#[derive(Clone, Debug, Default)]
pub(crate) enum ProxySetting {
    /// Not set: `https_proxy`/`HTTPS_PROXY` of the environment, if any.
    #[default]
    Environment,
    /// `"none"`: always direct, whatever the environment says.
    None,
    /// A proxy URL (it may hold a password, hence a [`Secret`]).
    Url(Secret),
}

/// The journal of approval requests (`pkcs11.requestJournal`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum RequestJournal {
    /// `true` (the default): the journal is kept in its default place.
    #[default]
    Default,
    /// `false`: no journal.
    Off,
    /// A path: the journal is kept in this file.
    File(PathBuf),
}

/// API keys per TSB role (`apiKeys`); several keys per role allow rollover.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    /// `KeyManagementToken`: key list and attributes.
    pub key_management: Vec<Secret>,
    /// `KeyOperationToken`: signing, requests, certificates.
    pub key_operation: Vec<Secret>,
    /// `ServiceToken`: version, license, statistics.
    pub service: Vec<Secret>,
}

/// The application key pair that signs the approval metadata (`applicationKeyPair`). Its
/// `publicKey` is checked (present, base64) but only the TSB uses it.
#[derive(Clone, Debug)]
pub struct ApplicationKeyPair {
    /// Base64 as given in the file.
    pub(crate) private_key: Secret,
}

/// Settings of the object `pkcs11`, specific to this module.
#[derive(Clone, Debug)]
pub struct ModuleSettings {
    /// `tokenLabel` (default "TSB", at most 32 bytes).
    pub token_label: String,
    /// `tokenSerial`: the token's serial number (1–16 printable ASCII characters); `None` =
    /// derived from the first TSB URL.
    pub(crate) token_serial: Option<String>,
    /// `keys`: allow-list of key labels; `None` = every key.
    pub keys: Option<Vec<String>>,
    /// `approvalTimeoutSecs` (at most [`MAX_APPROVAL_WAIT`]); `None` when not set (see
    /// [`ModuleSettings::approval_wait`]).
    pub(crate) approval_timeout: Option<Duration>,
    /// `pollIntervalMs` (default 1000, at least 10).
    pub(crate) poll_interval: Duration,
    /// `pollIntervalMaxMs` (default 10000): the cap of the polling backoff.
    pub(crate) poll_interval_max: Duration,
    /// `cacheTtlSecs` (default 60).
    pub(crate) cache_ttl: Duration,
    /// `keyPasswords`: key label → password.
    pub key_passwords: HashMap<String, Secret>,
    /// `pinIs` (default `none`).
    pub pin_is: PinIs,
    /// `verifySignatures` (default true).
    pub(crate) verify_signatures: bool,
    /// `certificates`: key label → PEM file (leaf first).
    pub certificates: HashMap<String, PathBuf>,
    /// `connectTimeoutMs` (default 5000).
    pub connect_timeout: Duration,
    /// `requestTimeoutMs` (default 30000): the deadline of one TSB call (connect, TLS, request,
    /// answer), its retries included.
    pub request_timeout: Duration,
    /// `connectionMaxIdleMs` (default 50000): a kept-alive connection idle longer than this is
    /// closed, never reused (a NAT or load balancer may have dropped it without a word).
    pub(crate) connection_max_idle: Duration,
    /// `retries` (default 2): retries of idempotent requests (within `requestTimeoutMs`).
    pub(crate) retries: u32,
    /// `serverCertSha256`: SHA-256 pin of the server's end-entity certificate.
    pub server_cert_sha256: Option<[u8; 32]>,
    /// `allowInsecureHttp` (default false).
    pub(crate) allow_insecure_http: bool,
    /// `proxy` (default: the environment's `https_proxy`/`HTTPS_PROXY`).
    pub(crate) proxy: ProxySetting,
    /// `proxyPassword`: the proxy user's password when the proxy URL has none.
    pub(crate) proxy_password: Option<Secret>,
    /// `noProxy`: hosts reached directly (overrides `no_proxy`/`NO_PROXY`).
    pub(crate) no_proxy: Option<String>,
    /// `nodeStrategy` (default failover).
    pub node_strategy: NodeStrategy,
    /// `nodeDownBackoffMs` (default 1000): how long a node marked down is left alone at first.
    pub node_down_backoff: Duration,
    /// `nodeDownBackoffMaxMs` (default 30000): the cap of that back-off.
    pub node_down_backoff_max: Duration,
    /// `newKeyPolicy`: the policy of keys the module creates.
    pub(crate) new_key_policy: Option<PolicySpec>,
    /// `policyProfiles`: named policies for new keys.
    pub(crate) policy_profiles: BTreeMap<String, PolicySpec>,
    /// `allowKeyDeletion` (default false).
    pub(crate) allow_key_deletion: bool,
    /// `requestJournal` (default true).
    pub(crate) request_journal: RequestJournal,
}

impl ModuleSettings {
    /// How long `C_Sign` waits for approvals: `approvalTimeoutSecs`, or
    /// [`DEFAULT_APPROVAL_TIMEOUT`] when it is not set.
    pub fn approval_wait(&self) -> Duration {
        self.approval_timeout.unwrap_or(DEFAULT_APPROVAL_TIMEOUT)
    }
}

impl Default for ModuleSettings {
    fn default() -> Self {
        ModuleSettings {
            token_label: DEFAULT_TOKEN_LABEL.to_string(),
            token_serial: None,
            keys: None,
            approval_timeout: None,
            poll_interval: Duration::from_millis(1000),
            poll_interval_max: Duration::from_millis(10_000),
            cache_ttl: Duration::from_secs(60),
            key_passwords: HashMap::new(),
            pin_is: PinIs::None,
            verify_signatures: true,
            certificates: HashMap::new(),
            connect_timeout: Duration::from_millis(5000),
            request_timeout: Duration::from_millis(30_000),
            connection_max_idle: Duration::from_millis(50_000),
            retries: 2,
            server_cert_sha256: None,
            allow_insecure_http: false,
            proxy: ProxySetting::Environment,
            proxy_password: None,
            no_proxy: None,
            node_strategy: NodeStrategy::Failover,
            node_down_backoff: Duration::from_millis(1000),
            node_down_backoff_max: Duration::from_millis(30_000),
            new_key_policy: None,
            policy_profiles: BTreeMap::new(),
            allow_key_deletion: false,
            request_journal: RequestJournal::Default,
        }
    }
}

pub(super) const DEFAULT_TOKEN_LABEL: &str = "TSB";

/// The module configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file the configuration was read from, or `<inline>`.
    pub(crate) source: String,
    /// `restApi`: the TSB base URLs (at least one, distinct), normalised without trailing `/`
    /// or `/v1`, e.g. `https://tsb.example:8080`.
    pub rest_apis: Vec<String>,
    /// `authType`.
    pub auth_type: AuthType,
    /// `token`: the JWT.
    pub token: Option<Secret>,
    /// `certpath`: PEM client certificate (chain) for mTLS.
    pub client_cert: Option<PathBuf>,
    /// `keypath`: PEM private key for mTLS.
    pub client_key: Option<PathBuf>,
    /// `apiKeys`.
    pub api_keys: ApiKeys,
    /// `applicationKeyPair`.
    pub application_key_pair: Option<ApplicationKeyPair>,
    /// `metaData`: extra entries for the approval metadata.
    pub(crate) meta_data: Map<String, Value>,
    /// `caPath`: PEM bundle trusted for the TSB server (in addition to the system roots).
    pub ca_path: Option<PathBuf>,
    /// The object `pkcs11`.
    pub pkcs11: ModuleSettings,
}

/// A configuration error: one line naming the file and the field, never a secret.
#[derive(Debug)]
pub struct ConfigError {
    /// The configuration file (or `<inline>`).
    pub file: String,
    /// The field, as a dotted path (e.g. `pkcs11.pollIntervalMs`), if the error is about one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "config {}: field \"{}\": {}",
                self.file, field, self.message
            ),
            None => write!(f, "config {}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
