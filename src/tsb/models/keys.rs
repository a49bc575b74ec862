//! Keys: the attributes of a key (`GET /v1/key/{label}/attributes`) and the key list
//! (`GET /v1/key`).
//!
//! Tolerated beyond the documented contract (docs/tsb-api.md): the `json` object wrapped as a
//! string, or the inner object sent without the `json` wrapper; numbers and booleans as
//! strings; `publicKey` as PEM or base64 (standard or URL-safe, padded or not); `policy` as an
//! object, a string holding one, or null; key lists wrapped in an object.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::lenient::{self, Known, Scalar};
use super::policy::Policy;

/// The key attribute flags (`json.attributes`) the token uses. Missing flags are false.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyFlags {
    pub(crate) sign: bool,
    pub(crate) decrypt: bool,
    pub(crate) unwrap: bool,
    pub(crate) derive: bool,
    /// The public-key flags: the attributes answer of TSB 1.x does not show them (`None`).
    pub(crate) encrypt: Option<bool>,
    pub(crate) verify: Option<bool>,
    pub(crate) wrap: Option<bool>,
    pub(crate) always_sensitive: bool,
    pub(crate) never_extractable: bool,
    /// `sensitive` (true when not shown) and `extractable` (false when not shown).
    pub(crate) sensitive: bool,
    pub(crate) extractable: bool,
    pub(crate) destroyable: bool,
}

impl Default for KeyFlags {
    fn default() -> Self {
        FlagsWire::default().into()
    }
}

/// The `algorithm` values of the contract (the module signs with RSA, EC and ED keys and leaves
/// the others out knowingly; `tsb-pkcs11 doctor` names any other).
pub const ALGORITHMS: &[&str] = &["RSA", "EC", "ED", "DSA", "BLS", "AES", "HSS-LMS", "LMS"];

/// Whether `algorithm` is one the contract knows: [`ALGORITHMS`], or a post-quantum parameter
/// set (`ML-DSA-65`, `SLH-DSA-SHA2-128f`, ...; docs/tsb-api.md "Post-quantum keys").
pub fn known_algorithm(algorithm: &str) -> bool {
    ALGORITHMS.contains(&algorithm)
        || crate::crypto::pqc::MlDsaSet::from_name(algorithm).is_some()
        || crate::crypto::pqc::SlhDsaSet::from_name(algorithm).is_some()
}

/// The attributes of a key (`GET /v1/key/{label}/attributes`, field `json`).
#[derive(Clone, Debug)]
pub struct KeyAttributes {
    /// `label`.
    pub label: String,
    /// `id` (nullable): Securosys' PKCS#11 provider's id for the key.
    pub(crate) id: Option<String>,
    /// `algorithm`: `RSA`, `EC`, `ED`, ...
    pub algorithm: String,
    /// `publicKey`: if base64, the decoded DER SubjectPublicKeyInfo; if PEM, the PEM bytes.
    pub public_key: Option<Vec<u8>>,
    /// `attributes`.
    pub(crate) flags: KeyFlags,
    /// `policy`.
    pub policy: Option<Policy>,
    /// `remainingSignatures` of an LMS key (also read from `keysRemaining` or
    /// `usagesRemaining`): the one-time signatures left; `None` when the TSB does not say.
    pub(crate) remaining_signatures: Option<u64>,
}

impl KeyAttributes {
    /// Whether signing needs approvals (SKA): any `ruleUse` token has a non-empty `groups` list.
    pub fn needs_approval(&self) -> bool {
        self.policy.as_ref().is_some_and(Policy::needs_approval)
    }

    /// Whether the key is blocked (`policy.keyStatus.blocked`).
    pub fn blocked(&self) -> bool {
        self.policy
            .as_ref()
            .and_then(|p| p.key_status.as_ref())
            .is_some_and(|s| s.blocked)
    }
}

// ---------------------------------------------------------------------------------------
// Wire types of the attributes response

/// The response as a whole: `{"json": {...}, "xml", "xmlSignature", "attestationKeyName"}`.
/// `label` and `algorithm` are only looked at for presence: with them and without a usable
/// `json`, the response is the inner object itself.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    json: JsonField,
    #[serde(rename = "xml", default)]
    _xml: Known,
    #[serde(rename = "xmlSignature", default)]
    _xml_signature: Known,
    #[serde(rename = "attestationKeyName", default)]
    _attestation_key_name: Known,
    #[serde(default, deserialize_with = "present")]
    label: bool,
    #[serde(default, deserialize_with = "present")]
    algorithm: bool,
}

/// Whether a field is there (even as null).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Known::deserialize(d).map(|_| true)
}

/// The `json` field: an object, a string (holding one, some serialisers do that), or
/// anything else (then it is as if it were missing).
#[derive(Default)]
enum JsonField {
    #[default]
    Missing,
    Object(Box<KeyJson>),
    Text(String),
}

impl<'de> Deserialize<'de> for JsonField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JsonField, A::Error> {
                KeyJson::deserialize(MapAccessDeserializer::new(map))
                    .map(|k| JsonField::Object(Box::new(k)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<JsonField, E> {
                Ok(JsonField::Text(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonField, A::Error> {
                while seq.next_element::<Known>()?.is_some() {}
                Ok(JsonField::Missing)
            }
            fn visit_unit<E: de::Error>(self) -> Result<JsonField, E> {
                Ok(JsonField::Missing)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<JsonField, E> {
                Ok(JsonField::Missing)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<JsonField, E> {
                Ok(JsonField::Missing)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<JsonField, E> {
                Ok(JsonField::Missing)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<JsonField, E> {
                Ok(JsonField::Missing)
            }
        }
        d.deserialize_any(V)
    }
}

/// The useful part of the response (`json`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyJson {
    #[serde(default, deserialize_with = "lenient::string")]
    label: String,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    algorithm: String,
    #[serde(default, deserialize_with = "public_key")]
    public_key: Option<Vec<u8>>,
    #[serde(default, deserialize_with = "lenient::object_or_default")]
    attributes: FlagsWire,
    #[serde(default, deserialize_with = "lenient::object_or_json_text")]
    policy: Option<Policy>,
    // Known fields the module does not use (the public key says it all).
    #[serde(rename = "algorithmOid", default)]
    _algorithm_oid: Known,
    #[serde(rename = "curveOid", default)]
    _curve_oid: Known,
    #[serde(rename = "keySize", default)]
    _key_size: Known,
    #[serde(rename = "createTime", default)]
    _create_time: Known,
    #[serde(
        rename = "remainingSignatures",
        alias = "keysRemaining",
        alias = "usagesRemaining",
        default,
        deserialize_with = "lenient::opt_u64"
    )]
    remaining_signatures: Option<u64>,
}

impl From<KeyJson> for KeyAttributes {
    fn from(k: KeyJson) -> Self {
        KeyAttributes {
            label: k.label,
            id: k.id,
            algorithm: k.algorithm,
            public_key: k.public_key,
            flags: k.attributes.into(),
            policy: k.policy,
            remaining_signatures: k.remaining_signatures,
        }
    }
}

/// `publicKey`: PEM or base64 text; null or blank → none; anything else is an error.
fn public_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::Null => Ok(None),
        Scalar::String(s) if s.trim().is_empty() => Ok(None),
        Scalar::String(s) => lenient::decode_pem_or_b64(&s)
            .map(Some)
            .ok_or_else(|| de::Error::custom("neither base64 nor PEM")),
        _ => Err(de::Error::custom("not a string")),
    }
}

/// `attributes`: each flag a boolean (or `"true"`, `1`, ...); a missing or odd one takes its
/// default.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlagsWire {
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    sign: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    always_sensitive: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    never_extractable: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    destroyable: Option<bool>,
    // Usage flags the token reports (CKA_DECRYPT, ...) though it only signs.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    decrypt: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    unwrap: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    derive: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    encrypt: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    verify: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    wrap: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    sensitive: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    extractable: Option<bool>,
    // Flags of the contract the module does not use: the token offers no copying or
    // modification.
    #[serde(rename = "modifiable", default)]
    _modifiable: Known,
    #[serde(rename = "copyable", default)]
    _copyable: Known,
    #[serde(rename = "bip32", default)]
    _bip32: Known,
}

impl From<FlagsWire> for KeyFlags {
    fn from(w: FlagsWire) -> Self {
        KeyFlags {
            sign: w.sign.unwrap_or(false),
            decrypt: w.decrypt.unwrap_or(false),
            unwrap: w.unwrap.unwrap_or(false),
            derive: w.derive.unwrap_or(false),
            encrypt: w.encrypt,
            verify: w.verify,
            wrap: w.wrap,
            always_sensitive: w.always_sensitive.unwrap_or(false),
            never_extractable: w.never_extractable.unwrap_or(false),
            sensitive: w.sensitive.unwrap_or(true),
            extractable: w.extractable.unwrap_or(false),
            destroyable: w.destroyable.unwrap_or(false),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

/// Parses a key attributes response: `{"json": {...}, "xml": ..}`, or the inner object itself.
pub(crate) fn parse_key_attributes(v: &Value) -> Result<KeyAttributes, String> {
    parse_key_attributes_checked(v).map(|(attributes, _)| attributes)
}

/// [`parse_key_attributes`], and the JSON paths of the fields the module does not know (e.g.
/// `json.attributes.newFlag`), for `tsb-pkcs11 doctor`. Fields of the contract the module does
/// not use (`xml`, `createTime`, ...) are not listed.
pub fn parse_key_attributes_checked(v: &Value) -> Result<(KeyAttributes, Vec<String>), String> {
    let mut unknown = Vec::new();
    let attributes = attributes_at(v, "", &mut unknown)?;
    unknown.sort();
    Ok((attributes, unknown))
}

fn attributes_at(
    v: &Value,
    prefix: &str,
    unknown: &mut Vec<String>,
) -> Result<KeyAttributes, String> {
    if !v.is_object() {
        return Err("expected a JSON object".to_string());
    }
    let mut outer_unknown = Vec::new();
    let envelope: Envelope = lenient::from_value_tracked(v, prefix, &mut outer_unknown)?;
    match envelope.json {
        JsonField::Object(inner) => {
            unknown.append(&mut outer_unknown);
            Ok((*inner).into())
        }
        JsonField::Text(text) => {
            // Some serialisers wrap the object as a string.
            let inner = serde_json::from_str::<Value>(&text)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| "field \"json\" is not an object".to_string())?;
            unknown.append(&mut outer_unknown);
            let mut path = prefix.to_string();
            lenient::push_key(&mut path, "json");
            attributes_at(&inner, &path, unknown)
        }
        JsonField::Missing if envelope.label || envelope.algorithm => {
            // The inner object itself: its own fields, not the envelope's, are the known ones.
            let inner: KeyJson = lenient::from_value_tracked(v, prefix, unknown)?;
            Ok(inner.into())
        }
        JsonField::Missing => Err("no field \"json\"".to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// Key list

const NOT_A_KEY_LIST: &str = "expected a JSON array of key labels";

/// `GET /v1/key`: an array, or an object wrapping one under one of these names (the first
/// that holds an array wins).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyListWrapper {
    #[serde(default, deserialize_with = "entries_if_array")]
    keys: Option<Vec<KeyListEntry>>,
    #[serde(default, deserialize_with = "entries_if_array")]
    labels: Option<Vec<KeyListEntry>>,
    #[serde(default, deserialize_with = "entries_if_array")]
    key_labels: Option<Vec<KeyListEntry>>,
    #[serde(default, deserialize_with = "entries_if_array")]
    content: Option<Vec<KeyListEntry>>,
}

enum KeyListWire {
    Array(Vec<KeyListEntry>),
    Wrapped(KeyListWrapper),
}

impl<'de> Deserialize<'de> for KeyListWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyListWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(NOT_A_KEY_LIST)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<KeyListWire, A::Error> {
                entries(seq).map(KeyListWire::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<KeyListWire, A::Error> {
                KeyListWrapper::deserialize(MapAccessDeserializer::new(map))
                    .map(KeyListWire::Wrapped)
            }
        }
        d.deserialize_any(V)
    }
}

/// The entries of a key list array.
fn entries<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<KeyListEntry>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
    while let Some(entry) = seq.next_element()? {
        out.push(entry);
    }
    Ok(out)
}

/// An array → its entries; anything else → `None` (the next wrapper name is tried).
fn entries_if_array<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<KeyListEntry>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<KeyListEntry>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            entries(seq).map(Some)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<Known, Known>()?.is_some() {}
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// One key list entry: a label, or an object with `label`. Judged when the list is chosen,
/// so that a bad entry in a list that is not used does not matter.
enum KeyListEntry {
    Label(String),
    NoLabel,
    NotString,
}

#[derive(Deserialize)]
struct LabelObject {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    label: Option<String>,
}

impl<'de> Deserialize<'de> for KeyListEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyListEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key label")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyListEntry, E> {
                Ok(KeyListEntry::Label(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<KeyListEntry, A::Error> {
                let o = LabelObject::deserialize(MapAccessDeserializer::new(map))?;
                Ok(o.label.map_or(KeyListEntry::NoLabel, KeyListEntry::Label))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyListEntry, A::Error> {
                while seq.next_element::<Known>()?.is_some() {}
                Ok(KeyListEntry::NotString)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<KeyListEntry, E> {
                Ok(KeyListEntry::NotString)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<KeyListEntry, E> {
                Ok(KeyListEntry::NotString)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<KeyListEntry, E> {
                Ok(KeyListEntry::NotString)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeyListEntry, E> {
                Ok(KeyListEntry::NotString)
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyListEntry, E> {
                Ok(KeyListEntry::NotString)
            }
        }
        d.deserialize_any(V)
    }
}

/// The answer of `GET /v1/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList {
    pub labels: Vec<String>,
    /// The object field the array came in (`keys`, `labels`, `keyLabels`, `content`); `None`
    /// for the contract's plain array.
    pub wrapped_in: Option<&'static str>,
}

/// Parses `GET /v1/key`: a JSON array of labels (strings, or objects with `label`), or an
/// object wrapping such an array under `keys`, `labels`, `keyLabels` or `content`.
#[cfg(any(test, fuzzing))]
pub(crate) fn parse_key_list(v: &Value) -> Result<Vec<String>, String> {
    parse_key_list_checked(v).map(|l| l.labels)
}

/// Parses `GET /v1/key` (see `parse_key_list`), and says in which shape the labels came.
pub(crate) fn parse_key_list_checked(v: &Value) -> Result<KeyList, String> {
    let (name, entries) = match KeyListWire::deserialize(v) {
        Ok(KeyListWire::Array(entries)) => ("", entries),
        Ok(KeyListWire::Wrapped(w)) => [
            ("keys", w.keys),
            ("labels", w.labels),
            ("keyLabels", w.key_labels),
            ("content", w.content),
        ]
        .into_iter()
        .find_map(|(name, list)| list.map(|l| (name, l)))
        .ok_or_else(|| NOT_A_KEY_LIST.to_string())?,
        Err(_) => return Err(NOT_A_KEY_LIST.to_string()),
    };
    let labels = entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| match entry {
            KeyListEntry::Label(l) => Ok(l),
            KeyListEntry::NoLabel => Err(format!("{name}[{i}]: a key list entry has no label")),
            KeyListEntry::NotString => {
                Err(format!("{name}[{i}]: a key list entry is not a string"))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(KeyList {
        labels,
        wrapped_in: (!name.is_empty()).then_some(name),
    })
}
