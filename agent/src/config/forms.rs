//! Values that may be written short (a string) or long (a mapping):
//! taints (`key=value:Effect`) and add-ons (`argocd`).

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

use super::error::one_of;
use super::types::{Addon, Taint, TaintEffect};

const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// The long form of a taint.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "TaintSpec")]
struct TaintFields {
    key: String,
    #[serde(default)]
    value: Option<String>,
    effect: TaintEffect,
}

impl Taint {
    /// Parses `key=value:Effect` or `key:Effect`.
    pub fn parse(s: &str) -> Result<Taint, String> {
        let Some((kv, effect)) = s.rsplit_once(':') else {
            return Err(format!(
                "taint `{s}` must look like `key=value:Effect` or `key:Effect`"
            ));
        };
        let effect = match effect {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            other => {
                return Err(format!(
                    "unknown taint effect `{other}`, expected {}",
                    one_of(EFFECTS)
                ));
            }
        };
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        Ok(Taint {
            key: key.to_string(),
            value,
            effect,
        })
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}:{:?}", self.key, self.effect),
            None => write!(f, "{}:{:?}", self.key, self.effect),
        }
    }
}

impl<'de> Deserialize<'de> for Taint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Taint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a taint: `key=value:Effect` or {key, value, effect}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Taint, E> {
                Taint::parse(s).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Taint, A::Error> {
                let t = TaintFields::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Taint {
                    key: t.key,
                    value: t.value,
                    effect: t.effect,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Taint {
    fn schema_name() -> Cow<'static, str> {
        "Taint".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let long = g.subschema_for::<TaintFields>();
        json_schema!({
            "description": "A node taint: `key=value:Effect`, `key:Effect`, or {key, value, effect}.",
            "anyOf": [
                {"type": "string", "pattern": "^[^=:]+(=[^:]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$"},
                long
            ]
        })
    }
}

/// The long form of an add-on.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "AddonSpec")]
struct AddonFields {
    /// Add-on name.
    name: String,
    /// Chart/app version; default: the version pinned in the image.
    #[serde(default)]
    version: Option<String>,
}

impl<'de> Deserialize<'de> for Addon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Addon;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an add-on name or {name, version}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Addon, E> {
                Ok(Addon {
                    name: s.to_string(),
                    version: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Addon, A::Error> {
                let a = AddonFields::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Addon {
                    name: a.name,
                    version: a.version,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Addon {
    fn schema_name() -> Cow<'static, str> {
        "Addon".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let long = g.subschema_for::<AddonFields>();
        let names: Vec<&str> = super::types::KNOWN_ADDONS.to_vec();
        json_schema!({
            "description": "An add-on: its name, or {name, version}.",
            "anyOf": [{"type": "string", "enum": names}, long]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taint_short_forms() {
        let t = Taint::parse("dedicated=gpu:NoSchedule").expect("valid");
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect),
            ("dedicated", Some("gpu"), TaintEffect::NoSchedule)
        );
        assert_eq!(t.to_string(), "dedicated=gpu:NoSchedule");
        let t = Taint::parse("node.example.com/spot:NoExecute").expect("valid");
        assert_eq!((t.key.as_str(), t.value), ("node.example.com/spot", None));
        assert!(Taint::parse("a=b").is_err());
        assert!(
            Taint::parse("a=b:Sometimes")
                .expect_err("bad effect")
                .contains("NoExecute")
        );
    }
}
