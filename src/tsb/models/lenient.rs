//! Lenient serde helpers: the TSB (or a proxy, or another version of it) may send numbers or
//! booleans as strings, `null` for anything, or a JSON object wrapped in a string. The helpers
//! here are `deserialize_with` functions and small types with their own visitors; none of them
//! fails on an odd shape (they fall back to a default), so only the few checks that matter
//! (a public key that does not decode, a policy that is no object, ...) reject a response.
//!
//! [`from_value_tracked`] runs a derive-based parse with the field path in errors
//! (`serde_path_to_error`) and the paths of the fields the model does not know
//! (`serde_ignored`). The visitors below hand a map on through
//! [`MapAccessDeserializer`], so both wrappers keep seeing nested fields. A JSON `null` reaches
//! them as `visit_unit` (serde_json's `deserialize_any` never calls `visit_none` or
//! `visit_some`, which are for `deserialize_option`), so they have neither.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::tsb::error::sanitize;

/// At most this many unknown fields are reported (a hostile body cannot make the report huge).
pub(crate) const MAX_UNKNOWN_FIELDS: usize = 64;

/// Deserializes `T` from `v`. An error names the field path (`json.publicKey: ...`), after
/// `prefix` when the value sits inside an outer one. The JSON paths of fields `T` does not know
/// are appended to `unknown` (sanitised, at most [`MAX_UNKNOWN_FIELDS`]).
pub(crate) fn from_value_tracked<'de, T: Deserialize<'de>>(
    v: &'de Value,
    prefix: &str,
    unknown: &mut Vec<String>,
) -> Result<T, String> {
    let mut report = |path: serde_ignored::Path<'_>| {
        if unknown.len() < MAX_UNKNOWN_FIELDS {
            let mut s = prefix.to_string();
            ignored_path(&path, &mut s);
            unknown.push(s);
        }
    };
    let de = serde_ignored::Deserializer::new(v, &mut report);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path = prefix.to_string();
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => push_key(&mut path, key),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let inner = e.into_inner();
        if path.is_empty() {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// `a.b[0].c`, like the error paths of `serde_path_to_error`.
fn ignored_path(path: &serde_ignored::Path<'_>, out: &mut String) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            ignored_path(parent, out);
            out.push_str(&format!("[{index}]"));
        }
        Path::Map { parent, key } => {
            ignored_path(parent, out);
            push_key(out, key);
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent, out),
    }
}

/// Appends `.key` (just `key` at the start); a key from the network is sanitised first.
pub(crate) fn push_key(out: &mut String, key: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    match sanitize(key, &[]) {
        Some(k) if k == key => out.push_str(key),
        Some(k) => out.push_str(&format!("{k:?}")),
        None => out.push_str("\"\""),
    }
}

/// Any JSON value, consumed without a trace: fields the contract has but the module does not
/// read (`xml`, `createTime`, ...). Unlike [`de::IgnoredAny`] it does not count as unknown.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Known;

impl<'de> Deserialize<'de> for Known {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KnownVisitor)
    }
}

struct KnownVisitor;

impl<'de> Visitor<'de> for KnownVisitor {
    type Value = Known;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Known, E> {
        Ok(Known)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Known, E> {
        Ok(Known)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Known, E> {
        Ok(Known)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Known, E> {
        Ok(Known)
    }
    fn visit_str<E>(self, _: &str) -> Result<Known, E> {
        Ok(Known)
    }
    fn visit_unit<E>(self) -> Result<Known, E> {
        Ok(Known)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Known, A::Error> {
        while seq.next_element::<Known>()?.is_some() {}
        Ok(Known)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Known, A::Error> {
        while map.next_entry::<Known, Known>()?.is_some() {}
        Ok(Known)
    }
}

/// A JSON scalar as received; arrays and objects are consumed as [`Scalar::Other`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    /// An array or an object.
    Other,
}

impl Scalar {
    /// A string from a string or number; null/empty → None.
    pub(crate) fn into_string(self) -> Option<String> {
        match self {
            Scalar::String(s) if !s.is_empty() => Some(s),
            Scalar::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A number from a number (a negative or fractional one is cut) or a string.
    pub(crate) fn into_u64(self) -> Option<u64> {
        match self {
            Scalar::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            Scalar::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A boolean from a boolean, `"true"`/`"1"`/`"yes"` (or the opposites), or an integer.
    pub(crate) fn into_bool(self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(b),
            Scalar::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Some(true),
                "false" | "0" | "no" => Some(false),
                _ => None,
            },
            Scalar::Number(n) => n.as_i64().map(|i| i != 0),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Scalar, E> {
        Ok(Scalar::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Scalar, E> {
        Ok(Scalar::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Scalar, E> {
        Ok(Number::from_f64(n).map_or(Scalar::Null, Scalar::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
        Ok(Scalar::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Scalar, E> {
        Ok(Scalar::String(s))
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
        KnownVisitor.visit_seq(seq).map(|_| Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
        KnownVisitor.visit_map(map).map(|_| Scalar::Other)
    }
}

// ---------------------------------------------------------------------------------------
// `deserialize_with` functions for scalar fields

/// A string (or number) → the string; anything else → `""`.
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Scalar::deserialize(d)?.into_string().unwrap_or_default())
}

/// A non-empty string (or number) → `Some`; anything else → `None`.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Scalar::deserialize(d)?.into_string())
}

/// A non-blank string only (numbers and the rest → `None`).
pub(crate) fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Scalar::deserialize(d)? {
        Scalar::String(s) if !s.trim().is_empty() => Some(s),
        _ => None,
    })
}

pub(crate) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Scalar::deserialize(d)?.into_u64().unwrap_or(0))
}

/// Capped at `u32::MAX`.
pub(crate) fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Scalar::deserialize(d)?
        .into_u64()
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0))
}

pub(crate) fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Scalar::deserialize(d)?.into_bool().unwrap_or(false))
}

pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Scalar::deserialize(d)?.into_bool())
}

pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Scalar::deserialize(d)?.into_u64())
}

// ---------------------------------------------------------------------------------------
// Objects and lists

/// A `T` parsed from a JSON object; any other value gives `T::default()`. `T`'s own fields
/// must be lenient, so parsing an object does not fail either.
pub(crate) struct OrDefault<T>(pub(crate) T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for OrDefault<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(PhantomData))
            .map(|v: Option<T>| OrDefault(v.unwrap_or_default()))
    }
}

/// A JSON object → `Some(T)`; any other value → `None`.
struct ObjectVisitor<T>(PhantomData<T>);

impl<T> ObjectVisitor<T> {
    fn other<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<T>, E> {
        self.other()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<T>, E> {
        self.other()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<T>, E> {
        self.other()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<T>, E> {
        self.other()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<T>, E> {
        self.other()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        KnownVisitor.visit_seq(seq)?;
        self.other()
    }
}

/// An object field that is `null`, an object, or a string holding either (some serialisers
/// wrap nested objects as strings). null, a blank string and `"null"` → `None`; an object →
/// `Some(T)`; anything else is an error ("not a JSON object").
pub(crate) fn object_or_json_text<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match d.deserialize_any(ShapeVisitor(PhantomData))? {
        Shape::Null => Ok(None),
        Shape::Object(t) => Ok(Some(t)),
        Shape::Other => Err(de::Error::custom(NOT_AN_OBJECT)),
        Shape::BadText(line, column) => Err(de::Error::custom(format_args!(
            "{NOT_AN_OBJECT} (a string that is no JSON: line {line}, column {column})"
        ))),
    }
}

/// Like [`object_or_json_text`], but lenient: a value that is no object gives
/// `Some(T::default())`, and text that is no JSON gives `None`.
pub(crate) fn lenient_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    Ok(match d.deserialize_any(ShapeVisitor(PhantomData))? {
        Shape::Null | Shape::BadText(..) => None,
        Shape::Object(t) => Some(t),
        Shape::Other => Some(T::default()),
    })
}

const NOT_AN_OBJECT: &str = "not a JSON object";

/// What an object field held.
enum Shape<T> {
    /// null, a blank string, or the text `null`.
    Null,
    /// An object, or a string holding one.
    Object(T),
    /// Another value, or a string holding one.
    Other,
    /// A string that is not JSON (line and column of the parse error).
    BadText(usize, usize),
}

struct ShapeVisitor<T>(PhantomData<T>);

impl<T> ShapeVisitor<T> {
    fn other<E>(self) -> Result<Shape<T>, E> {
        Ok(Shape::Other)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for ShapeVisitor<T> {
    type Value = Shape<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object, null, or a string holding one")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Shape::Object)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Shape<T>, E> {
        Ok(Shape::Null)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Shape<T>, E> {
        if s.trim().is_empty() {
            return Ok(Shape::Null);
        }
        // The text is parsed on its own: the fields inside it are not tracked.
        match serde_json::from_str::<Option<Inner<T>>>(s) {
            Ok(None) => Ok(Shape::Null),
            Ok(Some(Inner::Object(t))) => Ok(Shape::Object(t)),
            Ok(Some(Inner::Other)) => Ok(Shape::Other),
            Err(e) => Ok(Shape::BadText(e.line(), e.column())),
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape<T>, E> {
        self.other()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape<T>, E> {
        self.other()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape<T>, E> {
        self.other()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape<T>, E> {
        self.other()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Shape<T>, A::Error> {
        KnownVisitor.visit_seq(seq)?;
        self.other()
    }
}

/// The JSON inside a string: an object, or something else.
enum Inner<T> {
    Object(T),
    Other,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Inner<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(PhantomData))
            .map(|v: Option<T>| v.map_or(Inner::Other, Inner::Object))
    }
}

/// A list: an array (each element an object → `T`, anything else → `T::default()`, so counts
/// are kept); null → empty; a single object or scalar → one element.
pub(crate) fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    struct ListVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
            while let Some(OrDefault(item)) = seq.next_element::<OrDefault<T>>()? {
                out.push(item);
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            Ok(vec![T::deserialize(MapAccessDeserializer::new(map))?])
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<T>, E> {
            Ok(vec![T::default()])
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<T>, E> {
            Ok(vec![T::default()])
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<T>, E> {
            Ok(vec![T::default()])
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<T>, E> {
            Ok(vec![T::default()])
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<T>, E> {
            Ok(vec![T::default()])
        }
    }

    d.deserialize_any(ListVisitor(PhantomData))
}

/// A JSON object parsed into `T`; anything else → `T::default()` (e.g. `attributes`).
pub(crate) fn object_or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    OrDefault::<T>::deserialize(d).map(|OrDefault(t)| t)
}

// ---------------------------------------------------------------------------------------
// Base64 and PEM

/// Decodes base64 leniently (standard or URL-safe, padded or not, whitespace ignored):
/// [`crate::crypto::encoding::decode_base64`].
pub(crate) fn decode_b64(s: &str) -> Option<Vec<u8>> {
    crate::crypto::encoding::decode_base64(s.as_bytes()).ok()
}

/// PEM text → its bytes as given (trimmed); else base64 → the decoded bytes.
pub(crate) fn decode_pem_or_b64(s: &str) -> Option<Vec<u8>> {
    let t = s.trim();
    if t.starts_with("-----BEGIN") {
        let mut v = t.as_bytes().to_vec();
        v.push(b'\n');
        Some(v)
    } else {
        decode_b64(t)
    }
}
