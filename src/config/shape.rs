//! Any JSON value seen only as much as a configuration field needs: the leaf that the schema
//! and the secret fields share for their error messages.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Any JSON value, seen as much as a field needs: strings, arrays (of `E`) and objects (as `M`)
/// are kept; other values only as a description for the error message.
pub(super) enum Shape<E, M> {
    Str(String),
    Seq(Vec<E>),
    Map(M),
    Bool(bool),
    /// A whole number ≥ 0.
    Unsigned(u64),
    /// Any other number, as written.
    Number(String),
    Null,
}

impl<E, M> Shape<E, M> {
    /// The value for an error message: strings quoted and cut at 40 characters.
    pub(super) fn describe(&self) -> String {
        match self {
            Shape::Str(s) => format!("\"{}\"", truncate(s, 40)),
            Shape::Seq(_) => "an array".to_string(),
            Shape::Map(_) => "an object".to_string(),
            Shape::Bool(b) => b.to_string(),
            Shape::Unsigned(n) => n.to_string(),
            Shape::Number(n) => n.clone(),
            Shape::Null => "null".to_string(),
        }
    }

    /// The type only, for errors about secret fields (never the value).
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Shape::Str(_) => "a string",
            Shape::Seq(_) => "an array",
            Shape::Map(_) => "an object",
            Shape::Bool(_) => "a boolean",
            Shape::Unsigned(_) | Shape::Number(_) => "a number",
            Shape::Null => "null",
        }
    }
}

impl<'de, E: Deserialize<'de>, M: Deserialize<'de>> Deserialize<'de> for Shape<E, M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor(PhantomData))
    }
}

struct ShapeVisitor<E, M>(PhantomData<(E, M)>);

impl<'de, E: Deserialize<'de>, M: Deserialize<'de>> Visitor<'de> for ShapeVisitor<E, M> {
    type Value = Shape<E, M>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<X: serde::de::Error>(self, v: bool) -> Result<Self::Value, X> {
        Ok(Shape::Bool(v))
    }

    fn visit_u64<X: serde::de::Error>(self, v: u64) -> Result<Self::Value, X> {
        Ok(Shape::Unsigned(v))
    }

    fn visit_i64<X: serde::de::Error>(self, v: i64) -> Result<Self::Value, X> {
        Ok(match u64::try_from(v) {
            Ok(n) => Shape::Unsigned(n),
            Err(_) => Shape::Number(v.to_string()),
        })
    }

    fn visit_f64<X: serde::de::Error>(self, v: f64) -> Result<Self::Value, X> {
        Ok(Shape::Number(
            serde_json::Number::from_f64(v)
                .map(|n| n.to_string())
                .unwrap_or_else(|| v.to_string()),
        ))
    }

    fn visit_str<X: serde::de::Error>(self, v: &str) -> Result<Self::Value, X> {
        Ok(Shape::Str(v.to_string()))
    }

    fn visit_string<X: serde::de::Error>(self, v: String) -> Result<Self::Value, X> {
        Ok(Shape::Str(v))
    }

    fn visit_unit<X: serde::de::Error>(self) -> Result<Self::Value, X> {
        Ok(Shape::Null)
    }

    fn visit_none<X: serde::de::Error>(self) -> Result<Self::Value, X> {
        Ok(Shape::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<E>()? {
            items.push(item);
        }
        Ok(Shape::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        M::deserialize(MapAccessDeserializer::new(map)).map(Shape::Map)
    }
}

/// `s`, cut at `max` characters (with a `…`).
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}
