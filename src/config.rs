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

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// Environment variable holding the path of the configuration file.
pub const CONFIG_ENV: &str = "TSB_PKCS11_CONFIG";

/// The `source` of a configuration not read from a file.
pub const INLINE_SOURCE: &str = "<inline>";

/// A secret string (JWT, API key, key password, private key). `Debug` and
/// `Display` print `<redacted>`; use [`Secret::expose`] to get the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

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

/// The application key pair that signs the approval metadata (`applicationKeyPair`).
#[derive(Clone, Debug)]
pub struct ApplicationKeyPair {
    /// Base64 as given in the file.
    pub public_key: String,
    /// Base64 as given in the file.
    pub private_key: Secret,
}

/// Settings of the object `pkcs11`, specific to this module.
#[derive(Clone, Debug)]
pub struct ModuleSettings {
    /// `tokenLabel` (default "TSB", at most 32 bytes).
    pub token_label: String,
    /// `keys`: allow-list of key labels; `None` = every key.
    pub keys: Option<Vec<String>>,
    /// `approvalTimeoutSecs` (default 600).
    pub approval_timeout: Duration,
    /// `pollIntervalMs` (default 1000, at least 10).
    pub poll_interval: Duration,
    /// `pollIntervalMaxMs` (default 10000): the cap of the polling backoff.
    pub poll_interval_max: Duration,
    /// `cacheTtlSecs` (default 60).
    pub cache_ttl: Duration,
    /// `keyPasswords`: key label → password.
    pub key_passwords: HashMap<String, Secret>,
    /// `pinIs` (default `none`).
    pub pin_is: PinIs,
    /// `verifySignatures` (default true).
    pub verify_signatures: bool,
    /// `certificates`: key label → PEM file (leaf first).
    pub certificates: HashMap<String, PathBuf>,
    /// `connectTimeoutMs` (default 5000).
    pub connect_timeout: Duration,
    /// `requestTimeoutMs` (default 30000): the deadline of one TSB call (connect, TLS, request,
    /// answer), its retries included.
    pub request_timeout: Duration,
    /// `retries` (default 2): retries of idempotent requests (within `requestTimeoutMs`).
    pub retries: u32,
    /// `serverCertSha256`: SHA-256 pin of the server's end-entity certificate.
    pub server_cert_sha256: Option<[u8; 32]>,
    /// `allowInsecureHttp` (default false).
    pub allow_insecure_http: bool,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        ModuleSettings {
            token_label: DEFAULT_TOKEN_LABEL.to_string(),
            keys: None,
            approval_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_millis(1000),
            poll_interval_max: Duration::from_millis(10_000),
            cache_ttl: Duration::from_secs(60),
            key_passwords: HashMap::new(),
            pin_is: PinIs::None,
            verify_signatures: true,
            certificates: HashMap::new(),
            connect_timeout: Duration::from_millis(5000),
            request_timeout: Duration::from_millis(30_000),
            retries: 2,
            server_cert_sha256: None,
            allow_insecure_http: false,
        }
    }
}

const DEFAULT_TOKEN_LABEL: &str = "TSB";

/// The module configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file the configuration was read from, or `<inline>`.
    pub source: String,
    /// Normalised base URL without trailing `/` or `/v1`, e.g. `https://tsb.example:8080`.
    pub rest_api: String,
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
    pub meta_data: Map<String, Value>,
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
        if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Config::from_file(Path::new(&path));
        }
        load_first(&Config::search_paths())
    }

    /// The files looked at, in order: `$TSB_PKCS11_CONFIG` (if set),
    /// `$XDG_CONFIG_HOME/tsb-pkcs11/config.json`, `~/.config/tsb-pkcs11/config.json`,
    /// `/etc/tsb-pkcs11/config.json`.
    pub fn search_paths() -> Vec<PathBuf> {
        search_paths_from(
            std::env::var_os(CONFIG_ENV),
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// Reads and checks a configuration file. A file writable by group or others is refused;
    /// one readable by others that holds literal secrets is accepted with a warning.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let whole = |message: String| ConfigError {
            file: file.clone(),
            field: None,
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(whole("not a regular file".to_string()));
        }
        let mode = file_mode(&meta);
        if let Some(mode) = mode {
            if mode & 0o022 != 0 {
                return Err(whole(format!(
                    "refusing a file writable by group or others (mode {:04o}); run: chmod go-w {}",
                    mode & 0o7777,
                    file
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        let parsed = parse_config(&text, &file, path.parent())?;
        warn_unknown(&parsed);
        if let Some(mode) = mode {
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
    pub fn for_url(url: &str) -> Config {
        Config {
            source: INLINE_SOURCE.to_string(),
            rest_api: normalise_url(url).unwrap_or_else(|_| url.trim().to_string()),
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
}

/// The search order, from the values of `TSB_PKCS11_CONFIG`, `XDG_CONFIG_HOME` and `HOME`.
fn search_paths_from(
    config_env: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = config_env.filter(|p| !p.is_empty()) {
        paths.push(PathBuf::from(p));
    }
    if let Some(xdg) = xdg.filter(|p| !p.is_empty()) {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            paths.push(xdg.join("tsb-pkcs11").join("config.json"));
        }
    }
    if let Some(home) = home.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(home)
            .join(".config")
            .join("tsb-pkcs11")
            .join("config.json");
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    paths.push(PathBuf::from("/etc/tsb-pkcs11/config.json"));
    paths
}

/// Loads the first existing file of `paths`.
fn load_first(paths: &[PathBuf]) -> Result<Config, ConfigError> {
    for path in paths {
        if path.exists() {
            return Config::from_file(path);
        }
    }
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(ConfigError {
        file: "<none>".to_string(),
        field: None,
        message: format!(
            "no configuration file found (looked in {}); set {CONFIG_ENV} to its path",
            list.join(", ")
        ),
    })
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode())
}

#[cfg(not(unix))]
fn file_mode(_meta: &std::fs::Metadata) -> Option<u32> {
    None
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

/// Normalises a `restApi` URL: no trailing `/`, no trailing `/v1`.
pub(crate) fn normalise_url(url: &str) -> Result<String, String> {
    let mut u = url.trim().to_string();
    loop {
        let before = u.len();
        while u.ends_with('/') {
            u.pop();
        }
        if u.to_ascii_lowercase().ends_with("/v1") {
            u.truncate(u.len() - 3);
        }
        if u.len() == before {
            break;
        }
    }
    let (scheme, rest) = u
        .split_once("://")
        .ok_or_else(|| "expected an http:// or https:// URL".to_string())?;
    let scheme_lc = scheme.to_ascii_lowercase();
    if scheme_lc != "http" && scheme_lc != "https" {
        return Err(format!(
            "expected an http:// or https:// URL, got scheme \"{}\"",
            truncate(scheme, 20)
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("credentials in the URL are not supported; use token or apiKeys".to_string());
    }
    if authority.is_empty() {
        return Err("the URL has no host".to_string());
    }
    if rest.contains(['?', '#']) {
        return Err("the URL must not have a query or fragment".to_string());
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains whitespace".to_string());
    }
    Ok(format!("{scheme_lc}://{rest}"))
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// A description of a (non-secret) JSON value for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("\"{}\"", truncate(s, 40)),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// The type of a JSON value, for errors about secret fields (never the value).
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

pub(crate) struct Parsed {
    pub(crate) config: Config,
    /// Unknown fields, as dotted paths.
    pub(crate) unknown: Vec<String>,
    /// Whether any secret was written literally (not `env:`/`file:`).
    pub(crate) literal_secrets: bool,
}

struct Ctx<'a> {
    source: &'a str,
    base_dir: Option<&'a Path>,
    unknown: Vec<String>,
    literal_secrets: bool,
}

impl Ctx<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.to_string(),
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    fn check_unknown(&mut self, obj: &Map<String, Value>, prefix: &str, known: &[&str]) {
        for key in obj.keys() {
            if !known.contains(&key.as_str()) {
                self.unknown.push(format!("{prefix}{key}"));
            }
        }
    }

    fn string(&self, v: Option<&Value>, field: &str) -> Result<Option<String>, ConfigError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(self.err(field, format!("expected a string, got {}", describe(other))))
            }
        }
    }

    fn boolean(&self, v: Option<&Value>, field: &str) -> Result<Option<bool>, ConfigError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(self.err(
                field,
                format!("expected true or false, got {}", describe(other)),
            )),
        }
    }

    /// A whole number in `min..=max` (a JSON number or a numeric string).
    fn number(
        &self,
        v: Option<&Value>,
        field: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ConfigError> {
        let expected = || {
            if max == u64::MAX {
                format!("expected a whole number ≥ {min}")
            } else {
                format!("expected a whole number from {min} to {max}")
            }
        };
        let n = match v {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if n >= min && n <= max => Ok(Some(n)),
            _ => Err(self.err(
                field,
                format!(
                    "{}, got {}",
                    expected(),
                    describe(v.unwrap_or(&Value::Null))
                ),
            )),
        }
    }

    fn path(&self, v: Option<&Value>, field: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.string(v, field)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => Ok(Some(self.resolve_path(s.trim()))),
        }
    }

    fn resolve_path(&self, s: &str) -> PathBuf {
        if let Some(rest) = s.strip_prefix("~/") {
            if let Some(home) = std::env::var_os("HOME") {
                return PathBuf::from(home).join(rest);
            }
        }
        let p = PathBuf::from(s);
        match self.base_dir {
            Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
            _ => p,
        }
    }

    /// A secret string: literal, `env:NAME` or `file:/path`. Empty literal → `None`.
    fn secret(&mut self, v: Option<&Value>, field: &str) -> Result<Option<Secret>, ConfigError> {
        let s = match v {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(self.err(field, format!("expected a string, got {}", kind_of(other))))
            }
        };
        if s.is_empty() {
            return Ok(None);
        }
        if let Some(name) = s.strip_prefix("env:") {
            let name = name.trim();
            if name.is_empty() {
                return Err(self.err(field, "\"env:\" needs a variable name"));
            }
            return match std::env::var(name) {
                Ok(val) if !val.is_empty() => Ok(Some(Secret::new(val))),
                Ok(_) => Err(self.err(field, format!("environment variable {name} is empty"))),
                Err(std::env::VarError::NotPresent) => {
                    Err(self.err(field, format!("environment variable {name} is not set")))
                }
                Err(std::env::VarError::NotUnicode(_)) => Err(self.err(
                    field,
                    format!("environment variable {name} is not valid UTF-8"),
                )),
            };
        }
        if let Some(path) = s.strip_prefix("file:") {
            let path = path.trim();
            if path.is_empty() {
                return Err(self.err(field, "\"file:\" needs a path"));
            }
            let path = self.resolve_path(path);
            return match std::fs::read(&path) {
                Ok(bytes) => {
                    let text = String::from_utf8(bytes).map_err(|_| {
                        self.err(
                            field,
                            format!("secret file {} is not valid UTF-8", path.display()),
                        )
                    })?;
                    let text = text.trim();
                    if text.is_empty() {
                        Err(self.err(field, format!("secret file {} is empty", path.display())))
                    } else {
                        Ok(Some(Secret::new(text.to_string())))
                    }
                }
                Err(e) => Err(self.err(
                    field,
                    format!("cannot read secret file {}: {e}", path.display()),
                )),
            };
        }
        self.literal_secrets = true;
        Ok(Some(Secret::new(s.clone())))
    }

    /// A list of secrets: an array of strings or a single string.
    fn secret_list(&mut self, v: Option<&Value>, field: &str) -> Result<Vec<Secret>, ConfigError> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    if let Some(s) = self.secret(Some(item), &format!("{field}[{i}]"))? {
                        out.push(s);
                    }
                }
                Ok(out)
            }
            Some(s @ Value::String(_)) => Ok(self.secret(Some(s), field)?.into_iter().collect()),
            Some(other) => Err(self.err(
                field,
                format!(
                    "expected an array of strings or a string, got {}",
                    kind_of(other)
                ),
            )),
        }
    }

    fn object<'v>(
        &self,
        v: Option<&'v Value>,
        field: &str,
    ) -> Result<Option<&'v Map<String, Value>>, ConfigError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(self.err(
                field,
                format!("expected an object, got {}", describe(other)),
            )),
        }
    }
}

const TOP_FIELDS: &[&str] = &[
    "restApi",
    "authType",
    "token",
    "certpath",
    "keypath",
    "apiKeys",
    "applicationKeyPair",
    "metaData",
    "caPath",
    "pkcs11",
];

const PKCS11_FIELDS: &[&str] = &[
    "tokenLabel",
    "keys",
    "approvalTimeoutSecs",
    "pollIntervalMs",
    "pollIntervalMaxMs",
    "cacheTtlSecs",
    "keyPasswords",
    "pinIs",
    "verifySignatures",
    "certificates",
    "connectTimeoutMs",
    "requestTimeoutMs",
    "retries",
    "serverCertSha256",
    "allowInsecureHttp",
];

/// Parses configuration text. `base_dir` resolves relative paths (the file's directory).
pub(crate) fn parse_config(
    text: &str,
    source: &str,
    base_dir: Option<&Path>,
) -> Result<Parsed, ConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| ConfigError {
        file: source.to_string(),
        field: None,
        message: format!("invalid JSON: {e}"),
    })?;
    let Value::Object(root) = root else {
        return Err(ConfigError {
            file: source.to_string(),
            field: None,
            message: format!("expected a JSON object, got {}", kind_of(&root)),
        });
    };
    let mut cx = Ctx {
        source,
        base_dir,
        unknown: Vec::new(),
        literal_secrets: false,
    };
    cx.check_unknown(&root, "", TOP_FIELDS);

    let rest_api = match cx.string(root.get("restApi"), "restApi")? {
        Some(s) if !s.trim().is_empty() => normalise_url(&s).map_err(|m| cx.err("restApi", m))?,
        _ => return Err(cx.err("restApi", "missing: the TSB URL, e.g. https://tsb:8080")),
    };

    let token = cx.secret(root.get("token"), "token")?;
    let client_cert = cx.path(root.get("certpath"), "certpath")?;
    let client_key = cx.path(root.get("keypath"), "keypath")?;

    // apiKeys
    let mut api_keys = ApiKeys::default();
    if let Some(obj) = cx.object(root.get("apiKeys"), "apiKeys")? {
        for (key, value) in obj {
            let field = format!("apiKeys.{key}");
            let list = cx.secret_list(Some(value), &field)?;
            match key.to_ascii_lowercase().as_str() {
                "keymanagementtoken" => api_keys.key_management.extend(list),
                "keyoperationtoken" => api_keys.key_operation.extend(list),
                "servicetoken" => api_keys.service.extend(list),
                _ => cx.unknown.push(field),
            }
        }
    }

    // applicationKeyPair
    let application_key_pair =
        match cx.object(root.get("applicationKeyPair"), "applicationKeyPair")? {
            None => None,
            Some(obj) => {
                cx.check_unknown(obj, "applicationKeyPair.", &["publicKey", "privateKey"]);
                let public = cx.string(obj.get("publicKey"), "applicationKeyPair.publicKey")?;
                let private = cx.secret(obj.get("privateKey"), "applicationKeyPair.privateKey")?;
                match (public, private) {
                    (None, None) => None,
                    (Some(p), None) if p.is_empty() => None,
                    (Some(public_key), Some(private_key)) if !public_key.trim().is_empty() => {
                        if !is_base64(&public_key) {
                            return Err(cx.err("applicationKeyPair.publicKey", "not valid base64"));
                        }
                        if !is_base64(private_key.expose()) {
                            return Err(cx.err("applicationKeyPair.privateKey", "not valid base64"));
                        }
                        Some(ApplicationKeyPair {
                            public_key: public_key.trim().to_string(),
                            private_key,
                        })
                    }
                    (_, None) => {
                        return Err(cx.err(
                            "applicationKeyPair.privateKey",
                            "missing (publicKey is set)",
                        ))
                    }
                    (_, Some(_)) => {
                        return Err(cx.err(
                            "applicationKeyPair.publicKey",
                            "missing (privateKey is set)",
                        ))
                    }
                }
            }
        };

    let meta_data = cx
        .object(root.get("metaData"), "metaData")?
        .cloned()
        .unwrap_or_default();
    let ca_path = cx.path(root.get("caPath"), "caPath")?;

    let pkcs11 = parse_module_settings(&mut cx, root.get("pkcs11"))?;

    // authType
    let auth_type = match cx.string(root.get("authType"), "authType")? {
        Some(s) if !s.trim().is_empty() => match s.trim().to_ascii_uppercase().as_str() {
            "TOKEN" => AuthType::Token,
            "CERT" => AuthType::Cert,
            "NONE" => AuthType::None,
            _ => {
                return Err(cx.err(
                    "authType",
                    format!(
                        "expected TOKEN, CERT or NONE, got {}",
                        describe(&Value::String(s))
                    ),
                ))
            }
        },
        _ => {
            if token.is_some() || pkcs11.pin_is == PinIs::Token {
                AuthType::Token
            } else {
                AuthType::None
            }
        }
    };
    if auth_type == AuthType::Cert {
        if client_cert.is_none() {
            return Err(cx.err(
                "certpath",
                "missing: authType CERT needs certpath and keypath",
            ));
        }
        if client_key.is_none() {
            return Err(cx.err(
                "keypath",
                "missing: authType CERT needs certpath and keypath",
            ));
        }
    }
    if auth_type == AuthType::Token && token.is_none() && pkcs11.pin_is != PinIs::Token {
        log::warn!(
            "config {source}: authType TOKEN but no token is set (and pkcs11.pinIs is not \"token\")"
        );
    }
    match (&client_cert, &client_key) {
        (Some(_), None) => return Err(cx.err("keypath", "missing: certpath is set")),
        (None, Some(_)) => return Err(cx.err("certpath", "missing: keypath is set")),
        _ => {}
    }

    let config = Config {
        source: source.to_string(),
        rest_api,
        auth_type,
        token,
        client_cert,
        client_key,
        api_keys,
        application_key_pair,
        meta_data,
        ca_path,
        pkcs11,
    };
    Ok(Parsed {
        config,
        unknown: cx.unknown,
        literal_secrets: cx.literal_secrets,
    })
}

fn is_base64(s: &str) -> bool {
    use base64::Engine;
    let cleaned: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .is_ok()
}

fn parse_module_settings(
    cx: &mut Ctx<'_>,
    v: Option<&Value>,
) -> Result<ModuleSettings, ConfigError> {
    let mut s = ModuleSettings::default();
    let Some(obj) = cx.object(v, "pkcs11")? else {
        return Ok(s);
    };
    cx.check_unknown(obj, "pkcs11.", PKCS11_FIELDS);

    if let Some(label) = cx.string(obj.get("tokenLabel"), "pkcs11.tokenLabel")? {
        if label.is_empty() {
            return Err(cx.err("pkcs11.tokenLabel", "must not be empty"));
        }
        if label.len() > 32 {
            return Err(cx.err(
                "pkcs11.tokenLabel",
                format!("at most 32 bytes, got {} bytes", label.len()),
            ));
        }
        s.token_label = label;
    }

    match obj.get("keys") {
        None | Some(Value::Null) => {}
        Some(Value::String(k)) => s.keys = Some(vec![k.clone()]),
        Some(Value::Array(items)) => {
            let mut keys = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(k) => keys.push(k.clone()),
                    other => {
                        return Err(cx.err(
                            &format!("pkcs11.keys[{i}]"),
                            format!("expected a string, got {}", describe(other)),
                        ))
                    }
                }
            }
            s.keys = Some(keys);
        }
        Some(other) => {
            return Err(cx.err(
                "pkcs11.keys",
                format!("expected an array of key labels, got {}", describe(other)),
            ))
        }
    }

    if let Some(n) = cx.number(
        obj.get("approvalTimeoutSecs"),
        "pkcs11.approvalTimeoutSecs",
        1,
        u64::MAX,
    )? {
        s.approval_timeout = Duration::from_secs(n);
    }
    if let Some(n) = cx.number(
        obj.get("pollIntervalMs"),
        "pkcs11.pollIntervalMs",
        10,
        u64::MAX,
    )? {
        s.poll_interval = Duration::from_millis(n);
    }
    match cx.number(
        obj.get("pollIntervalMaxMs"),
        "pkcs11.pollIntervalMaxMs",
        10,
        u64::MAX,
    )? {
        Some(n) => {
            if Duration::from_millis(n) < s.poll_interval {
                return Err(cx.err(
                    "pkcs11.pollIntervalMaxMs",
                    format!(
                        "must be ≥ pollIntervalMs ({}), got {n}",
                        s.poll_interval.as_millis()
                    ),
                ));
            }
            s.poll_interval_max = Duration::from_millis(n);
        }
        None => s.poll_interval_max = s.poll_interval_max.max(s.poll_interval),
    }
    if let Some(n) = cx.number(obj.get("cacheTtlSecs"), "pkcs11.cacheTtlSecs", 0, u64::MAX)? {
        s.cache_ttl = Duration::from_secs(n);
    }

    if let Some(map) = cx.object(obj.get("keyPasswords"), "pkcs11.keyPasswords")? {
        for (label, value) in map {
            let field = format!("pkcs11.keyPasswords.{label}");
            if let Some(secret) = cx.secret(Some(value), &field)? {
                s.key_passwords.insert(label.clone(), secret);
            }
        }
    }

    if let Some(pin) = cx.string(obj.get("pinIs"), "pkcs11.pinIs")? {
        let norm: String = pin
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        s.pin_is = match norm.as_str() {
            "" | "none" => PinIs::None,
            "token" => PinIs::Token,
            "apikey" => PinIs::ApiKey,
            "keypassword" => PinIs::KeyPassword,
            _ => {
                return Err(cx.err(
                    "pkcs11.pinIs",
                    format!(
                        "expected none, token, apiKey or keyPassword, got {}",
                        describe(&Value::String(pin))
                    ),
                ))
            }
        };
    }

    if let Some(b) = cx.boolean(obj.get("verifySignatures"), "pkcs11.verifySignatures")? {
        s.verify_signatures = b;
    }

    if let Some(map) = cx.object(obj.get("certificates"), "pkcs11.certificates")? {
        for (label, value) in map {
            let field = format!("pkcs11.certificates.{label}");
            match cx.path(Some(value), &field)? {
                Some(p) => {
                    s.certificates.insert(label.clone(), p);
                }
                None => return Err(cx.err(&field, "expected a file path, got an empty value")),
            }
        }
    }

    if let Some(n) = cx.number(
        obj.get("connectTimeoutMs"),
        "pkcs11.connectTimeoutMs",
        1,
        u64::MAX,
    )? {
        s.connect_timeout = Duration::from_millis(n);
    }
    if let Some(n) = cx.number(
        obj.get("requestTimeoutMs"),
        "pkcs11.requestTimeoutMs",
        1,
        u64::MAX,
    )? {
        s.request_timeout = Duration::from_millis(n);
    }
    if let Some(n) = cx.number(obj.get("retries"), "pkcs11.retries", 0, 10)? {
        s.retries = n as u32;
    }

    if let Some(pin) = cx.string(obj.get("serverCertSha256"), "pkcs11.serverCertSha256")? {
        if !pin.trim().is_empty() {
            s.server_cert_sha256 = Some(parse_sha256_hex(&pin).ok_or_else(|| {
                cx.err(
                    "pkcs11.serverCertSha256",
                    format!(
                        "expected 64 hex digits (colons allowed), got {}",
                        describe(&Value::String(pin.clone()))
                    ),
                )
            })?);
        }
    }

    if let Some(b) = cx.boolean(obj.get("allowInsecureHttp"), "pkcs11.allowInsecureHttp")? {
        s.allow_insecure_http = b;
    }
    Ok(s)
}

/// Parses a SHA-256 in hex; colons, spaces and a `sha256:` prefix are allowed.
pub(crate) fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .unwrap_or(s);
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b':' && !b.is_ascii_whitespace())
        .collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::from_json_str(json, "test.json")
    }

    fn err(json: &str) -> String {
        parse(json).unwrap_err().to_string()
    }

    fn write_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(content.as_bytes()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let _ = mode;
        p
    }

    /// The shape of Securosys' Notation plugin config.json.
    const NOTATION_CONFIG: &str = r#"{
        "restApi": "https://primusdev.cloudshsm.com/v1/",
        "authType": "TOKEN",
        "token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln",
        "certpath": "/etc/notation/client.crt",
        "keypath": "/etc/notation/client.key",
        "apiKeys": {
            "KeyManagementToken": ["km-1", "km-2"],
            "KeyOperationToken": ["op-1"],
            "ServiceToken": []
        },
        "applicationKeyPair": {
            "publicKey": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
            "privateKey": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ=="
        },
        "metaData": {"app": "notation", "requester": "ci"}
    }"#;

    #[test]
    fn notation_config_parses_unchanged() {
        let p = parse_config(NOTATION_CONFIG, "n.json", None).unwrap();
        assert!(p.unknown.is_empty(), "{:?}", p.unknown);
        assert!(p.literal_secrets);
        let c = p.config;
        assert_eq!(c.source, "n.json");
        assert_eq!(c.rest_api, "https://primusdev.cloudshsm.com");
        assert_eq!(c.auth_type, AuthType::Token);
        assert_eq!(
            c.token.as_ref().unwrap().expose(),
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln"
        );
        assert_eq!(
            c.client_cert.as_deref(),
            Some(Path::new("/etc/notation/client.crt"))
        );
        assert_eq!(
            c.client_key.as_deref(),
            Some(Path::new("/etc/notation/client.key"))
        );
        let km: Vec<&str> = c
            .api_keys
            .key_management
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(km, vec!["km-1", "km-2"]);
        assert_eq!(c.api_keys.key_operation[0].expose(), "op-1");
        assert!(c.api_keys.service.is_empty());
        let akp = c.application_key_pair.as_ref().unwrap();
        assert_eq!(
            akp.public_key,
            "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"
        );
        assert!(akp.private_key.expose().starts_with("MIIEvQ"));
        assert_eq!(
            c.meta_data.get("app"),
            Some(&Value::String("notation".into()))
        );
        assert!(c.ca_path.is_none());
        // Debug output never shows secrets.
        let dbg = format!("{c:?}");
        for s in ["eyJhbG", "km-1", "op-1", "MIIEvQ"] {
            assert!(!dbg.contains(s), "{s} in {dbg}");
        }
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn defaults() {
        let c = parse(r#"{"restApi": "https://tsb.example:8080"}"#).unwrap();
        assert_eq!(c.rest_api, "https://tsb.example:8080");
        assert_eq!(c.auth_type, AuthType::None);
        assert!(c.token.is_none() && c.client_cert.is_none() && c.client_key.is_none());
        assert!(c.api_keys.key_management.is_empty() && c.api_keys.key_operation.is_empty());
        assert!(c.application_key_pair.is_none() && c.meta_data.is_empty() && c.ca_path.is_none());
        let s = &c.pkcs11;
        assert_eq!(s.token_label, "TSB");
        assert!(s.keys.is_none());
        assert_eq!(s.approval_timeout, Duration::from_secs(600));
        assert_eq!(s.poll_interval, Duration::from_millis(1000));
        assert_eq!(s.poll_interval_max, Duration::from_millis(10_000));
        assert_eq!(s.cache_ttl, Duration::from_secs(60));
        assert!(s.key_passwords.is_empty() && s.certificates.is_empty());
        assert_eq!(s.pin_is, PinIs::None);
        assert!(s.verify_signatures);
        assert_eq!(s.connect_timeout, Duration::from_millis(5000));
        assert_eq!(s.request_timeout, Duration::from_millis(30_000));
        assert_eq!(s.retries, 2);
        assert!(s.server_cert_sha256.is_none());
        assert!(!s.allow_insecure_http);
        let f = Config::for_url("https://x/v1/");
        assert_eq!(f.rest_api, "https://x");
        assert_eq!(f.source, "<inline>");
        assert_eq!(f.auth_type, AuthType::None);
    }

    #[test]
    fn every_module_setting() {
        let c = parse(
            r#"{"restApi": "https://t", "caPath": "/etc/ca.pem", "pkcs11": {
                "tokenLabel": "My Token", "keys": ["a", "b/0"], "approvalTimeoutSecs": 30,
                "pollIntervalMs": "50", "pollIntervalMaxMs": 500, "cacheTtlSecs": 0,
                "keyPasswords": {"a": "pw-a"}, "pinIs": "keyPassword", "verifySignatures": false,
                "certificates": {"a": "/certs/a.pem"}, "connectTimeoutMs": 100,
                "requestTimeoutMs": 200, "retries": 0,
                "serverCertSha256": "AB:cd:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd",
                "allowInsecureHttp": "true"}}"#,
        )
        .unwrap();
        assert_eq!(c.ca_path.as_deref(), Some(Path::new("/etc/ca.pem")));
        let s = &c.pkcs11;
        assert_eq!(s.token_label, "My Token");
        assert_eq!(
            s.keys.as_deref(),
            Some(&["a".to_string(), "b/0".to_string()][..])
        );
        assert_eq!(s.approval_timeout, Duration::from_secs(30));
        assert_eq!(s.poll_interval, Duration::from_millis(50));
        assert_eq!(s.poll_interval_max, Duration::from_millis(500));
        assert_eq!(s.cache_ttl, Duration::ZERO);
        assert_eq!(s.key_passwords["a"].expose(), "pw-a");
        assert_eq!(s.pin_is, PinIs::KeyPassword);
        assert!(!s.verify_signatures);
        assert_eq!(s.certificates["a"], PathBuf::from("/certs/a.pem"));
        assert_eq!(s.connect_timeout, Duration::from_millis(100));
        assert_eq!(s.request_timeout, Duration::from_millis(200));
        assert_eq!(s.retries, 0);
        let pin = s.server_cert_sha256.unwrap();
        assert_eq!(&pin[..3], &[0xab, 0xcd, 0x00]);
        assert_eq!(pin[31], 0xdd);
        assert!(s.allow_insecure_http);
    }

    #[test]
    fn pin_is_values() {
        for (v, want) in [
            ("none", PinIs::None),
            ("TOKEN", PinIs::Token),
            ("apiKey", PinIs::ApiKey),
            ("api_key", PinIs::ApiKey),
            ("keypassword", PinIs::KeyPassword),
        ] {
            let c = parse(&format!(
                r#"{{"restApi": "https://t", "pkcs11": {{"pinIs": "{v}"}}}}"#
            ))
            .unwrap();
            assert_eq!(c.pkcs11.pin_is, want, "{v}");
        }
        // pinIs token implies authType TOKEN when none is given
        let c = parse(r#"{"restApi": "https://t", "pkcs11": {"pinIs": "token"}}"#).unwrap();
        assert_eq!(c.auth_type, AuthType::Token);
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": {"pinIs": "pin"}}"#),
            r#"config test.json: field "pkcs11.pinIs": expected none, token, apiKey or keyPassword, got "pin""#
        );
    }

    #[test]
    fn auth_types() {
        let c = parse(r#"{"restApi": "https://t", "token": "jwt"}"#).unwrap();
        assert_eq!(c.auth_type, AuthType::Token);
        let c = parse(r#"{"restApi": "https://t", "token": "jwt", "authType": "none"}"#).unwrap();
        assert_eq!(c.auth_type, AuthType::None);
        let c = parse(
            r#"{"restApi": "https://t", "authType": "cert", "certpath": "c.pem", "keypath": "k.pem"}"#,
        )
        .unwrap();
        assert_eq!(c.auth_type, AuthType::Cert);
        assert_eq!(c.client_cert.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(
            err(r#"{"restApi": "https://t", "authType": "CERT"}"#),
            r#"config test.json: field "certpath": missing: authType CERT needs certpath and keypath"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "certpath": "c.pem"}"#),
            r#"config test.json: field "keypath": missing: certpath is set"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "authType": "BASIC"}"#),
            r#"config test.json: field "authType": expected TOKEN, CERT or NONE, got "BASIC""#
        );
        // An empty token is no token.
        let c = parse(r#"{"restApi": "https://t", "token": ""}"#).unwrap();
        assert!(c.token.is_none());
        assert_eq!(c.auth_type, AuthType::None);
    }

    #[test]
    fn url_normalisation() {
        for (input, want) in [
            ("https://h:8080", "https://h:8080"),
            ("https://h:8080/", "https://h:8080"),
            ("https://h:8080/v1", "https://h:8080"),
            ("https://h:8080/v1/", "https://h:8080"),
            ("https://h:8080/V1//", "https://h:8080"),
            (" HTTPS://h/tsb/v1 ", "https://h/tsb"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("https://[::1]:8443/v1", "https://[::1]:8443"),
        ] {
            assert_eq!(normalise_url(input).unwrap(), want, "{input}");
        }
        for bad in [
            "h:8080",
            "ftp://h",
            "https://",
            "https:///v1",
            "https://user:pw@h",
            "https://h/?q=1",
            "https://h x",
        ] {
            assert!(normalise_url(bad).is_err(), "{bad}");
        }
        let e = err(r#"{"restApi": "https://user:secretpw@h"}"#);
        assert!(
            e.starts_with(r#"config test.json: field "restApi": "#),
            "{e}"
        );
        assert!(!e.contains("secretpw"), "{e}");
        assert_eq!(
            err(r#"{"token": "x"}"#),
            r#"config test.json: field "restApi": missing: the TSB URL, e.g. https://tsb:8080"#
        );
    }

    #[test]
    fn api_keys_forms() {
        let p = parse_config(
            r#"{"restApi": "https://t", "apiKeys": {"KeyManagementToken": "single",
                "keyOperationToken": ["a", "", null], "ServiceToken": null, "Other": ["x"]}}"#,
            "t",
            None,
        )
        .unwrap();
        let c = &p.config;
        assert_eq!(c.api_keys.key_management.len(), 1);
        assert_eq!(c.api_keys.key_management[0].expose(), "single");
        assert_eq!(c.api_keys.key_operation.len(), 1);
        assert!(c.api_keys.service.is_empty());
        assert_eq!(p.unknown, vec!["apiKeys.Other"]);
        assert_eq!(
            err(r#"{"restApi": "https://t", "apiKeys": {"KeyOperationToken": ["ok", 12345]}}"#),
            r#"config test.json: field "apiKeys.KeyOperationToken[1]": expected a string, got a number"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "apiKeys": {"ServiceToken": {"k": "v"}}}"#),
            r#"config test.json: field "apiKeys.ServiceToken": expected an array of strings or a string, got an object"#
        );
    }

    #[test]
    fn env_secrets() {
        std::env::set_var("TSB_PKCS11_TEST_ENV_TOKEN", "jwt-from-env");
        std::env::set_var("TSB_PKCS11_TEST_ENV_EMPTY", "");
        let p = parse_config(
            r#"{"restApi": "https://t", "token": "env:TSB_PKCS11_TEST_ENV_TOKEN",
                "apiKeys": {"KeyOperationToken": ["env:TSB_PKCS11_TEST_ENV_TOKEN"]},
                "pkcs11": {"keyPasswords": {"k": "env:TSB_PKCS11_TEST_ENV_TOKEN"}}}"#,
            "t",
            None,
        )
        .unwrap();
        assert!(!p.literal_secrets);
        let c = p.config;
        assert_eq!(c.token.unwrap().expose(), "jwt-from-env");
        assert_eq!(c.api_keys.key_operation[0].expose(), "jwt-from-env");
        assert_eq!(c.pkcs11.key_passwords["k"].expose(), "jwt-from-env");
        assert_eq!(
            err(r#"{"restApi": "https://t", "token": "env:TSB_PKCS11_TEST_ENV_MISSING"}"#),
            r#"config test.json: field "token": environment variable TSB_PKCS11_TEST_ENV_MISSING is not set"#
        );
        assert_eq!(
            err(
                r#"{"restApi": "https://t", "pkcs11": {"keyPasswords": {"k1": "env:TSB_PKCS11_TEST_ENV_EMPTY"}}}"#
            ),
            r#"config test.json: field "pkcs11.keyPasswords.k1": environment variable TSB_PKCS11_TEST_ENV_EMPTY is empty"#
        );
        let e = err(
            r#"{"restApi": "https://t", "applicationKeyPair": {"publicKey": "AAAA", "privateKey": "env:TSB_PKCS11_TEST_ENV_TOKEN"}}"#,
        );
        assert_eq!(
            e,
            r#"config test.json: field "applicationKeyPair.privateKey": not valid base64"#
        );
        assert!(!e.contains("jwt-from-env"));
    }

    #[test]
    fn file_secrets_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "token.txt", "  file-jwt\n", 0o600);
        let cfg = write_file(
            dir.path(),
            "config.json",
            r#"{"restApi": "https://t", "token": "file:token.txt", "caPath": "ca.pem",
                "certpath": "c.pem", "keypath": "/abs/k.pem",
                "pkcs11": {"certificates": {"k": "certs/k.pem"}}}"#,
            0o600,
        );
        let c = Config::from_file(&cfg).unwrap();
        assert_eq!(c.source, cfg.display().to_string());
        assert_eq!(c.token.unwrap().expose(), "file-jwt");
        assert_eq!(c.ca_path.unwrap(), dir.path().join("ca.pem"));
        assert_eq!(c.client_cert.unwrap(), dir.path().join("c.pem"));
        assert_eq!(c.client_key.unwrap(), PathBuf::from("/abs/k.pem"));
        assert_eq!(c.pkcs11.certificates["k"], dir.path().join("certs/k.pem"));

        let missing = dir.path().join("nope.txt");
        let e = err(&format!(
            r#"{{"restApi": "https://t", "token": "file:{}"}}"#,
            missing.display()
        ));
        assert!(
            e.starts_with(&format!(
                r#"config test.json: field "token": cannot read secret file {}: "#,
                missing.display()
            )),
            "{e}"
        );
        write_file(dir.path(), "empty.txt", "\n", 0o600);
        let e = err(&format!(
            r#"{{"restApi": "https://t", "token": "file:{}"}}"#,
            dir.path().join("empty.txt").display()
        ));
        assert!(e.ends_with("is empty"), "{e}");
    }

    #[test]
    fn error_messages_name_file_and_field_without_secrets() {
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": {"pollIntervalMs": "abc"}}"#),
            r#"config test.json: field "pkcs11.pollIntervalMs": expected a whole number ≥ 10, got "abc""#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": {"pollIntervalMs": 5}}"#),
            r#"config test.json: field "pkcs11.pollIntervalMs": expected a whole number ≥ 10, got 5"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": {"retries": 11}}"#),
            r#"config test.json: field "pkcs11.retries": expected a whole number from 0 to 10, got 11"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": {"connectTimeoutMs": -1}}"#),
            r#"config test.json: field "pkcs11.connectTimeoutMs": expected a whole number ≥ 1, got -1"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": {"approvalTimeoutSecs": 1.5}}"#),
            r#"config test.json: field "pkcs11.approvalTimeoutSecs": expected a whole number ≥ 1, got 1.5"#
        );
        assert_eq!(
            err(
                r#"{"restApi": "https://t", "pkcs11": {"pollIntervalMs": 2000, "pollIntervalMaxMs": 1000}}"#
            ),
            r#"config test.json: field "pkcs11.pollIntervalMaxMs": must be ≥ pollIntervalMs (2000), got 1000"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": {"verifySignatures": "maybe"}}"#),
            r#"config test.json: field "pkcs11.verifySignatures": expected true or false, got "maybe""#
        );
        assert_eq!(
            err(
                r#"{"restApi": "https://t", "pkcs11": {"tokenLabel": "0123456789012345678901234567890123"}}"#
            ),
            r#"config test.json: field "pkcs11.tokenLabel": at most 32 bytes, got 34 bytes"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": {"serverCertSha256": "abcd"}}"#),
            r#"config test.json: field "pkcs11.serverCertSha256": expected 64 hex digits (colons allowed), got "abcd""#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": {"keys": [1]}}"#),
            r#"config test.json: field "pkcs11.keys[0]": expected a string, got 1"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "pkcs11": []}"#),
            r#"config test.json: field "pkcs11": expected an object, got an array"#
        );
        assert_eq!(
            err(r#"{"restApi": "https://t", "metaData": "x"}"#),
            r#"config test.json: field "metaData": expected an object, got "x""#
        );
        assert_eq!(
            err("[]"),
            "config test.json: expected a JSON object, got an array"
        );
        let e = err(r#"{"restApi": "https://t", "token": "supersecret""#);
        assert!(e.starts_with("config test.json: invalid JSON: "), "{e}");
        assert!(!e.contains("supersecret"), "{e}");
        // Secret fields of a wrong type: the type is named, never the value.
        let e = err(r#"{"restApi": "https://t", "token": 1234567}"#);
        assert_eq!(
            e,
            r#"config test.json: field "token": expected a string, got a number"#
        );
        let e = err(r#"{"restApi": "https://t", "pkcs11": {"keyPasswords": {"k": true}}}"#);
        assert_eq!(
            e,
            r#"config test.json: field "pkcs11.keyPasswords.k": expected a string, got a boolean"#
        );
        let e = err(
            r#"{"restApi": "https://t", "applicationKeyPair": {"publicKey": "AAAA", "privateKey": "not*base64*secretvalue"}}"#,
        );
        assert!(!e.contains("secretvalue"), "{e}");
        let e = err(r#"{"restApi": "https://t", "applicationKeyPair": {"publicKey": "AAAA"}}"#);
        assert_eq!(
            e,
            r#"config test.json: field "applicationKeyPair.privateKey": missing (publicKey is set)"#
        );
        let e = parse(r#"{"restApi": "https://t", "pkcs11": {"retries": "x"}}"#).unwrap_err();
        assert_eq!(e.file, "test.json");
        assert_eq!(e.field.as_deref(), Some("pkcs11.retries"));
    }

    #[test]
    fn poll_interval_max_follows_a_large_interval() {
        let c = parse(r#"{"restApi": "https://t", "pkcs11": {"pollIntervalMs": 20000}}"#).unwrap();
        assert_eq!(c.pkcs11.poll_interval_max, Duration::from_millis(20_000));
    }

    #[test]
    fn unknown_fields_are_listed() {
        let p = parse_config(
            r#"{"restApi": "https://t", "restAPI": "x", "signatureAlgorithm": "y",
                "applicationKeyPair": {"publicKey": "AAAA", "privateKey": "AAAA", "kid": 1},
                "pkcs11": {"tokenlabel": "x", "retries": 1}}"#,
            "t",
            None,
        )
        .unwrap();
        let mut unknown = p.unknown.clone();
        unknown.sort();
        assert_eq!(
            unknown,
            vec![
                "applicationKeyPair.kid",
                "pkcs11.tokenlabel",
                "restAPI",
                "signatureAlgorithm"
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn file_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let body = r#"{"restApi": "https://t", "token": "literal-jwt"}"#;
        let p = write_file(dir.path(), "group-writable.json", body, 0o664);
        let e = Config::from_file(&p).unwrap_err();
        assert_eq!(e.field, None);
        assert_eq!(
            e.to_string(),
            format!(
                "config {}: refusing a file writable by group or others (mode 0664); run: chmod go-w {}",
                p.display(),
                p.display()
            )
        );
        let p = write_file(dir.path(), "world-writable.json", body, 0o602);
        assert!(Config::from_file(&p).is_err());
        // Readable by others with literal secrets: accepted (with a warning).
        let p = write_file(dir.path(), "world-readable.json", body, 0o644);
        assert_eq!(
            Config::from_file(&p).unwrap().token.unwrap().expose(),
            "literal-jwt"
        );
        let p = write_file(dir.path(), "private.json", body, 0o600);
        Config::from_file(&p).unwrap();
        // Missing file, directory
        let e = Config::from_file(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.to_string().contains("missing.json: cannot read: "), "{e}");
        let e = Config::from_file(dir.path()).unwrap_err();
        assert!(e.to_string().ends_with("not a regular file"), "{e}");
        // Invalid JSON in a file names the file.
        let p = write_file(dir.path(), "bad.json", "{", 0o600);
        let e = Config::from_file(&p).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("config {}: invalid JSON", p.display())),
            "{e}"
        );
    }

    #[test]
    fn search_order() {
        let paths = search_paths_from(
            Some("/explicit.json".into()),
            Some("/xdg".into()),
            Some("/home/u".into()),
        );
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/explicit.json"),
                PathBuf::from("/xdg/tsb-pkcs11/config.json"),
                PathBuf::from("/home/u/.config/tsb-pkcs11/config.json"),
                PathBuf::from("/etc/tsb-pkcs11/config.json"),
            ]
        );
        // A relative XDG_CONFIG_HOME is ignored; XDG = ~/.config is not listed twice.
        let paths = search_paths_from(None, Some("rel".into()), Some("/home/u".into()));
        assert_eq!(paths.len(), 2);
        let paths = search_paths_from(None, Some("/home/u/.config".into()), Some("/home/u".into()));
        assert_eq!(paths.len(), 2);

        let dir = tempfile::tempdir().unwrap();
        let second = write_file(
            dir.path(),
            "second.json",
            r#"{"restApi": "https://second"}"#,
            0o600,
        );
        let c = load_first(&[dir.path().join("first.json"), second]).unwrap();
        assert_eq!(c.rest_api, "https://second");
        let e = load_first(&[dir.path().join("first.json")]).unwrap_err();
        assert!(e.to_string().contains("no configuration file found"), "{e}");
        assert!(e.to_string().contains("TSB_PKCS11_CONFIG"), "{e}");
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
        assert!(!s.is_empty());
    }

    #[test]
    fn sha256_hex() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(parse_sha256_hex(&hex).unwrap()[31], 0xff);
        assert!(parse_sha256_hex(&format!("sha256:{hex}")).is_some());
        assert!(parse_sha256_hex(&hex[2..]).is_none());
        assert!(parse_sha256_hex(&("zz".repeat(32))).is_none());
    }
}
