//! Secret values (JWT, API keys, key passwords, the application private key).
//!
//! In the configuration a secret is written literally, as `"env:NAME"` (the value of the
//! environment variable `NAME`) or as `"file:/path"` (the trimmed content of the file; a
//! relative path is relative to the configuration file). [`Secret`]'s `Deserialize` resolves
//! these forms; its errors name the variable or the file, never a value.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer};

use super::reader::read_regular_file;
use super::shape::Shape;

/// A secret string (JWT, API key, key password, private key). `Debug` and
/// `Display` print `<redacted>`; use [`Secret::expose`] to get the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub(crate) fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret value. Never log it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub(crate) fn is_empty(&self) -> bool {
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

/// Where a parse looks up environment variables (`env:` secrets, `~/` paths): the process
/// environment ([`process_env`]) in the module, a map in tests (which must not change the
/// environment of their multi-threaded process).
pub(crate) type EnvLookup = Box<dyn Fn(&str) -> Option<OsString>>;

/// The process environment, for [`ParseScope::enter`].
pub(crate) fn process_env() -> EnvLookup {
    Box::new(|name| std::env::var_os(name))
}

/// What the secrets of the configuration being parsed on this thread need to know: the folder
/// relative `file:` paths start from, the environment, and whether any secret was written
/// literally.
struct Scope {
    base_dir: Option<PathBuf>,
    env: EnvLookup,
    literal_secrets: bool,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// The parse of one configuration on this thread; ends (and is reset) when dropped.
pub(super) struct ParseScope(());

impl ParseScope {
    pub(super) fn enter(base_dir: Option<&Path>, env: EnvLookup) -> ParseScope {
        SCOPE.with(|s| {
            *s.borrow_mut() = Some(Scope {
                base_dir: base_dir.map(Path::to_path_buf),
                env,
                literal_secrets: false,
            })
        });
        ParseScope(())
    }

    /// Whether a secret was written literally (not `env:`/`file:`) during this parse.
    pub(super) fn literal_secrets(&self) -> bool {
        SCOPE.with(|s| s.borrow().as_ref().is_some_and(|s| s.literal_secrets))
    }
}

impl Drop for ParseScope {
    fn drop(&mut self) {
        SCOPE.with(|s| *s.borrow_mut() = None);
    }
}

/// The variable `name` of the environment of the parse on this thread (the process
/// environment outside a parse).
fn env_var(name: &str) -> Option<OsString> {
    SCOPE.with(|s| match s.borrow().as_ref() {
        Some(scope) => (scope.env)(name),
        None => std::env::var_os(name),
    })
}

/// A path from the configuration: `~/` is the home folder; a relative path is relative to the
/// configuration file's folder (or the working directory for inline text).
pub(super) fn resolve_path(s: &str, base_dir: Option<&Path>) -> PathBuf {
    if let Some(rest) = s.strip_prefix("~/") {
        if let Some(home) = env_var("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let p = PathBuf::from(s);
    match base_dir {
        Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
        _ => p,
    }
}

/// Resolves a secret as written in the configuration. An empty literal is an empty secret
/// (callers treat it as absent).
fn resolve(s: &str) -> Result<Secret, String> {
    if let Some(name) = s.strip_prefix("env:") {
        let name = name.trim();
        if name.is_empty() {
            return Err("\"env:\" needs a variable name".to_string());
        }
        return match env_var(name).map(OsString::into_string) {
            Some(Ok(val)) if !val.is_empty() => Ok(Secret::new(val)),
            Some(Ok(_)) => Err(format!("environment variable {name} is empty")),
            None => Err(format!("environment variable {name} is not set")),
            Some(Err(_)) => Err(format!("environment variable {name} is not valid UTF-8")),
        };
    }
    if let Some(path) = s.strip_prefix("file:") {
        let path = path.trim();
        if path.is_empty() {
            return Err("\"file:\" needs a path".to_string());
        }
        let base = SCOPE.with(|s| s.borrow().as_ref().and_then(|s| s.base_dir.clone()));
        let path = resolve_path(path, base.as_deref());
        let bytes = read_regular_file(&path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("secret file {} is not valid UTF-8", path.display()))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("secret file {} is empty", path.display()));
        }
        return Ok(Secret::new(text.to_string()));
    }
    if !s.is_empty() {
        note_literal_secret();
    }
    Ok(Secret::new(s.to_string()))
}

/// Records that a secret was written literally (e.g. a password in `pkcs11.proxy`'s URL).
pub(super) fn note_literal_secret() {
    SCOPE.with(|scope| {
        if let Some(scope) = scope.borrow_mut().as_mut() {
            scope.literal_secrets = true;
        }
    });
}

impl<'de> Deserialize<'de> for Secret {
    /// A string, resolved (`env:`, `file:`); of another type, the error names the type only.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        match Shape::<IgnoredAny, IgnoredAny>::deserialize(d)? {
            Shape::Str(s) => resolve(&s).map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "expected a string, got {}",
                other.kind()
            ))),
        }
    }
}

/// Secrets given as one string or an array of strings (`apiKeys` roles); empty strings and
/// nulls in the array are skipped.
pub(super) struct SecretList(pub(super) Vec<Secret>);

impl<'de> Deserialize<'de> for SecretList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretList, D::Error> {
        match Shape::<Option<Secret>, IgnoredAny>::deserialize(d)? {
            Shape::Str(s) => Ok(SecretList(
                Some(resolve(&s).map_err(D::Error::custom)?)
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect(),
            )),
            Shape::Seq(items) => Ok(SecretList(
                items
                    .into_iter()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .collect(),
            )),
            other => Err(D::Error::custom(format!(
                "expected an array of strings or a string, got {}",
                other.kind()
            ))),
        }
    }
}
