//! A serde `Deserializer` over the located YAML tree.
//!
//! Every error leaves here knowing its node: where it was written, its
//! field path, and what to prune so the next decoding round can go on and
//! find further errors (see `load::decode`). Messages that might carry a
//! value are kept in two forms, so errors under secret keys never show it.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

use super::error::suggest;
use super::locate::{Seg, blame};
use super::secret::is_secret_key;
use super::tree::{Entry, Item, Loc, Node, Scalar, Value, is_null_text};

/// What recovery should remove after this error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prune {
    /// The offending node itself (an unknown key, a badly typed value).
    Node(Vec<Seg>),
    /// The mapping that lacks a required key.
    Mapping(Vec<Seg>),
}

#[derive(Debug, Clone)]
pub(crate) struct At {
    pub loc: Loc,
    pub path: Vec<Seg>,
    pub prune: Prune,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Custom,
    MissingField(&'static str),
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct DeError {
    kind: Kind,
    message: String,
    /// The message without any value from the input.
    redacted: String,
    /// Boxed: errors travel through every serde call and should stay small.
    pub at: Option<Box<At>>,
}

impl DeError {
    fn new(kind: Kind, message: String, redacted: String) -> Self {
        DeError {
            kind,
            message,
            redacted,
            at: None,
        }
    }

    /// The message to show: the value-free one when the path is under a
    /// secret-like key.
    pub fn message(&self) -> &str {
        let secret = self.at.as_ref().is_some_and(|at| {
            at.path
                .iter()
                .any(|s| matches!(s, Seg::Key(k) if is_secret_key(k)))
        });
        if secret {
            &self.redacted
        } else {
            &self.message
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let m = msg.to_string();
        // A custom message may quote the value; we cannot tell, so the
        // redacted form is generic.
        DeError::new(Kind::Custom, m, "invalid value".into())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let exp = expected(exp);
        DeError::new(
            Kind::Other,
            format!("invalid type: {}, expected {exp}", describe(&unexp)),
            format!("invalid type: {}, expected {exp}", kind_of(&unexp)),
        )
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let exp = expected(exp);
        DeError::new(
            Kind::Other,
            format!("invalid value: {}, expected {exp}", describe(&unexp)),
            format!("invalid value: {}, expected {exp}", kind_of(&unexp)),
        )
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = match suggest(variant, expected) {
            Some(s) => format!("; did you mean `{s}`?"),
            None => String::new(),
        };
        let list = super::error::one_of(expected);
        DeError::new(
            Kind::Other,
            format!("unknown value `{variant}`, expected {list}{hint}"),
            format!("unknown value, expected {list}"),
        )
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let m = match suggest(field, expected) {
            Some(s) => format!("unknown key `{field}`; did you mean `{s}`?"),
            None if expected.is_empty() => {
                format!("unknown key `{field}`: this mapping takes no keys")
            }
            None => format!(
                "unknown key `{field}`; expected {}",
                super::error::one_of(expected)
            ),
        };
        DeError::new(Kind::Other, m.clone(), m)
    }

    fn missing_field(field: &'static str) -> Self {
        let m = format!("missing required key `{field}`");
        DeError::new(Kind::MissingField(field), m.clone(), m)
    }
}

/// serde's `Unexpected`, but saying `null` rather than `unit value`.
fn describe(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Unit | Unexpected::Option => "null".into(),
        Unexpected::Map => "mapping".into(),
        other => other.to_string(),
    }
}

/// The kind of an unexpected value, without the value.
fn kind_of(u: &Unexpected<'_>) -> &'static str {
    match u {
        Unexpected::Bool(_) => "boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "integer",
        Unexpected::Float(_) => "number",
        Unexpected::Char(_) | Unexpected::Str(_) => "string",
        Unexpected::Unit | Unexpected::Option => "null",
        Unexpected::Seq => "sequence",
        Unexpected::Map => "mapping",
        _ => "value",
    }
}

/// serde's "expected" phrases in YAML users' words.
fn expected(exp: &dyn de::Expected) -> String {
    let e = exp.to_string();
    match e.as_str() {
        "u8" => "a whole number from 0 to 255".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "a boolean" => "true or false".into(),
        _ if e.starts_with("struct ") => "a mapping".into(),
        _ if e.starts_with("a map") => "a mapping".into(),
        _ => e,
    }
}

/// Deserializes one node. `key_loc` is the key that introduced it, if any.
#[derive(Clone, Copy)]
pub(crate) struct NodeDe<'de, 'p> {
    pub node: &'de Node,
    pub path: &'p [Seg],
    pub key_loc: Option<&'de Loc>,
}

impl<'de> NodeDe<'de, '_> {
    /// Gives an error that has no location yet this node's location and path.
    fn attach(&self, mut e: DeError) -> DeError {
        if e.at.is_some() {
            return e;
        }
        let loc = blame(self.node, self.key_loc).clone();
        let (path, prune) = match e.kind {
            Kind::MissingField(field) => {
                let mut p = self.path.to_vec();
                p.push(Seg::Key(field.to_string()));
                (p, Prune::Mapping(self.path.to_vec()))
            }
            _ => (self.path.to_vec(), Prune::Node(self.path.to_vec())),
        };
        // Custom messages (address parsers, our own checks) rarely quote the
        // input; show it, unless it may be a secret (see `message`).
        if let (Kind::Custom, Value::Scalar(s)) = (&e.kind, &self.node.value)
            && !s.text.is_empty()
            && !e.message.contains(&s.text)
        {
            e.message = format!("{}: `{}`", e.message, s.text);
        }
        e.at = Some(Box::new(At { loc, path, prune }));
        e
    }

    fn scalar(&self) -> Option<&'de Scalar> {
        match &self.node.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        self.node.is_null()
    }

    fn visit_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar(s) if !s.plain => visitor.visit_borrowed_str(&s.text),
            Value::Scalar(s) => match resolve(&s.text) {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => match (u64::try_from(i), i64::try_from(i)) {
                    (Ok(u), _) => visitor.visit_u64(u),
                    (_, Ok(n)) => visitor.visit_i64(n),
                    _ => Err(de::Error::custom("integer out of range")),
                },
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str => visitor.visit_borrowed_str(&s.text),
            },
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                path: self.path,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                current: None,
                path: self.path,
            }),
        }
    }
}

macro_rules! via_any {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let r = self.visit_any(visitor);
            r.map_err(|e| self.attach(e))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'de, '_> {
    type Error = DeError;

    via_any! {
        deserialize_any deserialize_bool
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_bytes deserialize_byte_buf
    }

    /// Any non-null scalar is a string: `name: 123` means "123".
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match self.scalar() {
            Some(s) if !self.is_null() => visitor.visit_borrowed_str(&s.text),
            _ => self.visit_any(visitor),
        };
        r.map_err(|e| self.attach(e))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = if self.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        };
        r.map_err(|e| self.attach(e))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = visitor.visit_newtype_struct(self);
        r.map_err(|e| self.attach(e))
    }

    /// A null (`taints:` with nothing under it) is an empty sequence.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = if self.is_null() {
            visitor.visit_seq(SeqDe {
                items: [].iter(),
                path: self.path,
            })
        } else {
            self.visit_any(visitor)
        };
        r.map_err(|e| self.attach(e))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    /// A null (`apiEndpoint:` with nothing under it) is an empty mapping.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = if self.is_null() {
            visitor.visit_map(MapDe {
                entries: [].iter(),
                current: None,
                path: self.path,
            })
        } else {
            self.visit_any(visitor)
        };
        r.map_err(|e| self.attach(e))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    /// Enums are plain values (`mode: arp`).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match self.scalar() {
            Some(s) if !self.is_null() => visitor.visit_enum(
                IntoDeserializer::<DeError>::into_deserializer(s.text.as_str()),
            ),
            _ => self.visit_any(visitor),
        };
        r.map_err(|e| self.attach(e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqDe<'de, 'p> {
    items: std::slice::Iter<'de, Item>,
    path: &'p [Seg],
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let mut path = self.path.to_vec();
        path.push(Seg::Index(item.index));
        let de = NodeDe {
            node: &item.node,
            path: &path,
            key_loc: None,
        };
        seed.deserialize(de).map(Some).map_err(|e| de.attach(e))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'de, 'p> {
    entries: std::slice::Iter<'de, Entry>,
    current: Option<&'de Entry>,
    path: &'p [Seg],
}

impl<'de> de::MapAccess<'de> for MapDe<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some(entry);
        let mut path = self.path.to_vec();
        path.push(Seg::Key(entry.key.clone()));
        seed.deserialize(KeyDe { entry })
            .map(Some)
            .map_err(|mut e| {
                if e.at.is_none() {
                    e.at = Some(Box::new(At {
                        loc: entry.key_loc.clone(),
                        path: path.clone(),
                        prune: Prune::Node(path),
                    }));
                }
                e
            })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self
            .current
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("mapping value without a key"))?;
        let mut path = self.path.to_vec();
        path.push(Seg::Key(entry.key.clone()));
        let de = NodeDe {
            node: &entry.value,
            path: &path,
            key_loc: Some(&entry.key_loc),
        };
        seed.deserialize(de).map_err(|e| de.attach(e))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Deserializes a mapping key (always a string in our trees).
struct KeyDe<'de> {
    entry: &'de Entry,
}

impl<'de> de::Deserializer<'de> for KeyDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_borrowed_str(&self.entry.key)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

enum Resolved {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

/// YAML 1.2 core-schema resolution of a plain scalar.
fn resolve(text: &str) -> Resolved {
    if is_null_text(text) {
        return Resolved::Null;
    }
    match text {
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = text.strip_prefix("0x")
        && digits(hex, 16)
    {
        return i128::from_str_radix(hex, 16).map_or(Resolved::Str, Resolved::Int);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && digits(oct, 8)
    {
        return i128::from_str_radix(oct, 8).map_or(Resolved::Str, Resolved::Int);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits(unsigned, 10) {
        return text.parse().map_or(Resolved::Str, Resolved::Int);
    }
    if is_float(unsigned) {
        return text.parse().map_or(Resolved::Str, Resolved::Float);
    }
    Resolved::Str
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, without a regex crate.
fn is_float(s: &str) -> bool {
    let all_digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            all_digits(int) && all_digits(frac) && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && all_digits(mantissa),
    };
    mantissa_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schema_resolution() {
        assert!(matches!(resolve("~"), Resolved::Null));
        assert!(matches!(resolve("True"), Resolved::Bool(true)));
        assert!(matches!(resolve("0x1F"), Resolved::Int(31)));
        assert!(matches!(resolve("-12"), Resolved::Int(-12)));
        assert!(matches!(resolve("1.33"), Resolved::Float(_)));
        assert!(matches!(resolve("1e3"), Resolved::Float(_)));
        assert!(matches!(resolve("1.33.2"), Resolved::Str));
        assert!(matches!(resolve("yes"), Resolved::Str));
        assert!(matches!(resolve("."), Resolved::Str));
        assert!(matches!(resolve("e3"), Resolved::Str));
    }
}
