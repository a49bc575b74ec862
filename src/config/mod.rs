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
//! Files: `settings.rs` ([`Config`] and the types of its fields), `schema.rs` (the fields as
//! serde structs), `validate.rs` (checks across fields,
//! defaults, URLs), `secrets.rs` ([`Secret`] and its `env:`/`file:` forms), `discovery.rs`
//! (where the file is looked for, when it is trusted, and the bounded reader of every file the
//! module reads).

mod discovery;
pub mod policy;
mod reader;
mod schema;
mod secrets;
mod settings;
mod shape;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub(crate) use policy::PolicySpec;
pub use reader::read_regular_file;
pub use secrets::Secret;
pub use settings::{
    ApiKeys, ApplicationKeyPair, AuthType, Config, ConfigError, ModuleSettings, NodeStrategy,
    PinIs, CONFIG_ENV,
};
pub(crate) use settings::{
    ProxySetting, RequestJournal, DEFAULT_APPROVAL_TIMEOUT, MAX_APPROVAL_WAIT,
};
pub(crate) use validate::normalise_url;

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
            meta_data: serde_json::Map::new(),
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
