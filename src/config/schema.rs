//! The configuration file as serde structs, field by field as written, before cross-field
//! checks and defaults ([`super::validate`]).
//!
//! The leaf types keep the messages the module has always given (`expected a whole number ≥ 10,
//! got "abc"`); numbers may also be written as strings and booleans as `"true"`/`"false"`.
//! Unknown fields are left to serde (and reported as warnings through `serde_ignored`).

use std::collections::BTreeMap;

use serde::de::{Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::policy::PolicySpec;
use super::secrets::{Secret, SecretList};
use super::settings::MAX_APPROVAL_WAIT_SECS;
use super::shape::Shape;

/// The top level of the file (Securosys' Notation plugin fields, `caPath`, `pkcs11`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawConfig {
    pub(super) rest_api: Option<RestApis>,
    pub(super) auth_type: Option<Text>,
    pub(super) token: Option<Secret>,
    #[serde(rename = "certpath")]
    pub(super) cert_path: Option<Text>,
    #[serde(rename = "keypath")]
    pub(super) key_path: Option<Text>,
    pub(super) api_keys: Option<Obj<BTreeMap<String, Option<SecretList>>>>,
    pub(super) application_key_pair: Option<Obj<RawKeyPair>>,
    pub(super) meta_data: Option<Obj<Map<String, Value>>>,
    pub(super) ca_path: Option<Text>,
    pub(super) pkcs11: Option<Obj<RawModuleSettings>>,
}

/// `applicationKeyPair`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawKeyPair {
    pub(super) public_key: Option<Text>,
    pub(super) private_key: Option<Secret>,
}

/// The object `pkcs11`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawModuleSettings {
    pub(super) token_label: Option<Text>,
    pub(super) token_serial: Option<Text>,
    pub(super) keys: Option<KeyLabels>,
    pub(super) approval_timeout_secs: Option<Num<1, MAX_APPROVAL_WAIT_SECS>>,
    pub(super) poll_interval_ms: Option<Num<10, NO_MAX>>,
    pub(super) poll_interval_max_ms: Option<Num<10, NO_MAX>>,
    pub(super) cache_ttl_secs: Option<Num<0, NO_MAX>>,
    pub(super) key_passwords: Option<Obj<BTreeMap<String, Option<Secret>>>>,
    pub(super) pin_is: Option<Text>,
    pub(super) verify_signatures: Option<Flag>,
    pub(super) certificates: Option<Obj<BTreeMap<String, Option<Text>>>>,
    pub(super) connect_timeout_ms: Option<Num<1, NO_MAX>>,
    pub(super) request_timeout_ms: Option<Num<1, NO_MAX>>,
    pub(super) connection_max_idle_ms: Option<Num<1, NO_MAX>>,
    pub(super) retries: Option<Num<0, 10>>,
    pub(super) server_cert_sha256: Option<Text>,
    pub(super) allow_insecure_http: Option<Flag>,
    pub(super) proxy: Option<Text>,
    pub(super) proxy_password: Option<Secret>,
    pub(super) no_proxy: Option<Text>,
    pub(super) node_strategy: Option<Text>,
    pub(super) node_down_backoff_ms: Option<Num<1, NO_MAX>>,
    pub(super) node_down_backoff_max_ms: Option<Num<1, NO_MAX>>,
    pub(super) new_key_policy: Option<Obj<PolicySpec>>,
    pub(super) policy_profiles: Option<Obj<BTreeMap<String, Obj<PolicySpec>>>>,
    pub(super) allow_key_deletion: Option<Flag>,
    pub(super) request_journal: Option<JournalValue>,
}

/// Only the type of anything, for values whose content is not needed (errors only).
type Opaque = Shape<IgnoredAny, IgnoredAny>;

/// A JSON object, read as `T`; anything else is "expected an object, got …".
pub(super) struct Obj<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Shape::<IgnoredAny, T>::deserialize(d)? {
            Shape::Map(t) => Ok(Obj(t)),
            other => Err(D::Error::custom(format!(
                "expected an object, got {}",
                other.describe()
            ))),
        }
    }
}

/// A string (not a secret: a wrong value is shown in the error).
pub(super) struct Text(pub(super) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Opaque::deserialize(d)? {
            Shape::Str(s) => Ok(Text(s)),
            other => Err(D::Error::custom(format!(
                "expected a string, got {}",
                other.describe()
            ))),
        }
    }
}

/// A whole number in `MIN..=MAX`, as a JSON number or a string of digits.
pub(super) struct Num<const MIN: u64, const MAX: u64>(pub(super) u64);

/// The `MAX` of a [`Num`] without an upper bound.
pub(super) const NO_MAX: u64 = u64::MAX;

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Num<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shape = Opaque::deserialize(d)?;
        let n = match &shape {
            Shape::Unsigned(n) => Some(*n),
            Shape::Str(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (MIN..=MAX).contains(&n) => Ok(Num(n)),
            _ => {
                let expected = if MAX == NO_MAX {
                    format!("expected a whole number ≥ {MIN}")
                } else {
                    format!("expected a whole number from {MIN} to {MAX}")
                };
                Err(D::Error::custom(format!(
                    "{expected}, got {}",
                    shape.describe()
                )))
            }
        }
    }
}

/// `true`/`false`, also as strings.
pub(super) struct Flag(pub(super) bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shape = Opaque::deserialize(d)?;
        match &shape {
            Shape::Bool(b) => Ok(Flag(*b)),
            Shape::Str(s) if s.trim().eq_ignore_ascii_case("true") => Ok(Flag(true)),
            Shape::Str(s) if s.trim().eq_ignore_ascii_case("false") => Ok(Flag(false)),
            _ => Err(D::Error::custom(format!(
                "expected true or false, got {}",
                shape.describe()
            ))),
        }
    }
}

/// `pkcs11.keys`: an array of key labels, or one label.
pub(super) struct KeyLabels(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for KeyLabels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Shape::<Text, IgnoredAny>::deserialize(d)? {
            Shape::Str(s) => Ok(KeyLabels(vec![s])),
            Shape::Seq(items) => Ok(KeyLabels(items.into_iter().map(|t| t.0).collect())),
            other => Err(D::Error::custom(format!(
                "expected an array of key labels, got {}",
                other.describe()
            ))),
        }
    }
}

/// `restApi`: one base URL, or an array of them (the nodes of a TSB cluster).
pub(super) enum RestApis {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for RestApis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Shape::<Text, IgnoredAny>::deserialize(d)? {
            Shape::Str(s) => Ok(RestApis::One(s)),
            Shape::Seq(items) => Ok(RestApis::Many(items.into_iter().map(|t| t.0).collect())),
            other => Err(D::Error::custom(format!(
                "expected a URL or an array of URLs, got {}",
                other.describe()
            ))),
        }
    }
}

/// `pkcs11.requestJournal`: `true`, `false` or a file path.
pub(super) enum JournalValue {
    On(bool),
    Path(String),
}

impl<'de> Deserialize<'de> for JournalValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Opaque::deserialize(d)? {
            Shape::Bool(b) => Ok(JournalValue::On(b)),
            Shape::Str(s) if !s.trim().is_empty() => Ok(JournalValue::Path(s.trim().to_string())),
            other => Err(D::Error::custom(format!(
                "expected true, false or a file path, got {}",
                other.describe()
            ))),
        }
    }
}
