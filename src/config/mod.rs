//! Module configuration.
//!
//! The configuration is a JSON file, found through the environment variable
//! `TSB_PKCS11_CONFIG` (a path) or, failing that, the first existing file of
//! `$XDG_CONFIG_HOME/tsb-pkcs11/config.json`, `~/.config/tsb-pkcs11/config.json`
//! and `/etc/tsb-pkcs11/config.json`.
//!
//! A `config.json` of Securosys' Notation plugin (`restApi`, `authType`, `token`,
//! `certpath`, `keypath`, `apiKeys`, `applicationKeyPair`, `metaData`) is accepted
//! unchanged; this module adds `caPath` and the object `pkcs11`.
//!
//! Secret values may be written `"env:NAME"` (the value of the environment variable
//! `NAME`) or `"file:/path"` (the trimmed content of the file). Error messages name
//! the file and the field, never a secret value.
//!
//! Files: `schema.rs` (the fields as serde structs), `validate.rs` (checks across fields,
//! defaults, URLs), `secrets.rs` ([`Secret`] and its `env:`/`file:` forms), `discovery.rs`
//! (where the file is looked for, when it is trusted, and the bounded reader of every file the
//! module reads).

mod discovery;
pub mod policy;
mod schema;
mod secrets;
mod shape;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

pub use discovery::read_regular_file;
pub(crate) use policy::PolicySpec;
pub use secrets::Secret;
pub(crate) use validate::normalise_url;

/// Environment variable holding the path of the configuration file.
pub const CONFIG_ENV: &str = "TSB_PKCS11_CONFIG";

/// The longest `pkcs11.approvalTimeoutSecs` accepted, and the cap of any approval wait.
pub(crate) const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(MAX_APPROVAL_WAIT_SECS);
const MAX_APPROVAL_WAIT_SECS: u64 = 24 * 60 * 60;

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

const DEFAULT_TOKEN_LABEL: &str = "TSB";

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

impl Config {
    /// Loads the configuration: the file named by `TSB_PKCS11_CONFIG` if set,
    /// else the first existing file of [`Config::search_paths`].
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_from(std::env::var_os(CONFIG_ENV), &Config::search_paths())
    }

    /// [`Config::load`] with the value of `TSB_PKCS11_CONFIG` (`named`; empty counts as unset)
    /// and the search path given.
    fn load_from(
        named: Option<std::ffi::OsString>,
        search: &[PathBuf],
    ) -> Result<Config, ConfigError> {
        if let Some(path) = named.filter(|p| !p.is_empty()) {
            return Config::from_file(Path::new(&path));
        }
        discovery::load_first(search)
    }

    /// The files looked at, in order: `$TSB_PKCS11_CONFIG` (if set),
    /// `$XDG_CONFIG_HOME/tsb-pkcs11/config.json`, `~/.config/tsb-pkcs11/config.json`,
    /// `/etc/tsb-pkcs11/config.json`.
    pub fn search_paths() -> Vec<PathBuf> {
        discovery::search_paths_from(
            std::env::var_os(CONFIG_ENV),
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// Reads and checks a configuration file. The file must be a regular file of at most
    /// 1 MiB, owned by the running user or root, not writable by group or others, in folders
    /// others cannot write (unless sticky, like `/tmp`). One readable by others that holds
    /// literal secrets is accepted with a warning.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let read = discovery::read_config_file(path).map_err(|message| ConfigError {
            file: file.clone(),
            field: None,
            message,
        })?;
        let parsed = parse_config(&read.text, &file, path.parent())?;
        warn_unknown(&parsed);
        if let Some(mode) = read.mode {
            if mode & 0o004 != 0 && parsed.literal_secrets {
                log::warn!(
                    "config {file}: the file is readable by others and holds literal secrets; \
                     run chmod o-r on it or write secrets as \"env:NAME\" or \"file:/path\""
                );
            }
        }
        Ok(parsed.config)
    }

    /// Parses a configuration from JSON text; `source` names it in errors. Relative paths
    /// stay relative to the working directory.
    pub fn from_json_str(json: &str, source: &str) -> Result<Config, ConfigError> {
        let parsed = parse_config(json, source, None)?;
        warn_unknown(&parsed);
        Ok(parsed.config)
    }

    /// A configuration with every default and no authentication, for `url`.
    #[cfg(test)]
    pub(crate) fn for_url(url: &str) -> Config {
        Config {
            source: "<inline>".to_string(),
            rest_apis: vec![normalise_url(url).unwrap_or_else(|_| url.trim().to_string())],
            auth_type: AuthType::None,
            token: None,
            client_cert: None,
            client_key: None,
            api_keys: ApiKeys::default(),
            application_key_pair: None,
            meta_data: Map::new(),
            ca_path: None,
            pkcs11: ModuleSettings::default(),
        }
    }

    /// The first TSB URL (the only one unless `restApi` is an array).
    pub fn rest_api(&self) -> &str {
        self.rest_apis.first().map(String::as_str).unwrap_or("")
    }
}

fn warn_unknown(parsed: &Parsed) {
    for field in &parsed.unknown {
        log::warn!(
            "config {}: unknown field \"{}\" ignored",
            parsed.config.source,
            field
        );
    }
}

pub(crate) struct Parsed {
    pub(crate) config: Config,
    /// Unknown fields, as dotted paths.
    pub(crate) unknown: Vec<String>,
    /// Whether any secret was written literally (not `env:`/`file:`).
    pub(crate) literal_secrets: bool,
}

/// A field path of `serde_ignored` as the module writes paths (`pkcs11.keys[0]`).
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// The type of a JSON value, for errors about the whole file.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses configuration text. `base_dir` resolves relative paths (the file's directory).
pub(crate) fn parse_config(
    text: &str,
    source: &str,
    base_dir: Option<&Path>,
) -> Result<Parsed, ConfigError> {
    parse_config_in(text, source, base_dir, secrets::process_env())
}

/// [`parse_config`] with `env` as the environment (`env:` secrets, `~/` paths).
pub(crate) fn parse_config_in(
    text: &str,
    source: &str,
    base_dir: Option<&Path>,
    env: secrets::EnvLookup,
) -> Result<Parsed, ConfigError> {
    let whole = |message: String| ConfigError {
        file: source.to_string(),
        field: None,
        message,
    };
    let root: Value =
        serde_json::from_str(text).map_err(|e| whole(format!("invalid JSON: {e}")))?;
    if !root.is_object() {
        return Err(whole(format!(
            "expected a JSON object, got {}",
            kind_of(&root)
        )));
    }
    let scope = secrets::ParseScope::enter(base_dir, env);
    let mut unknown = Vec::new();
    let raw: schema::RawConfig = serde_path_to_error::deserialize(
        serde_ignored::Deserializer::new(root, &mut |p: serde_ignored::Path<'_>| {
            unknown.push(ignored_path(&p))
        }),
    )
    .map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            file: source.to_string(),
            field: (path != ".").then_some(path),
            message: e.into_inner().to_string(),
        }
    })?;
    let fields = validate::Fields { source, base_dir };
    // Within the scope: a password in `pkcs11.proxy`'s URL is noted while it is checked.
    let config = validate::build(raw, &fields, &mut unknown)?;
    let literal_secrets = scope.literal_secrets();
    drop(scope);
    Ok(Parsed {
        config,
        unknown,
        literal_secrets,
    })
}
