//! Values that may be written short (a string) or long (a mapping):
//! taints (`key=value:Effect`) and add-ons (`argocd`); and durations
//! written with their unit (`200ms`, `2s`, `1.5s`, `1m`).

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

use super::error::one_of;
use super::types::{Addon, ConfigDuration, Taint, TaintEffect};

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

impl ConfigDuration {
    /// Parses a number with a unit: `ms`, `s`, `m` or `h` (`250ms`, `1.5s`, `2m`, `1h`).
    /// A bare number is refused: its unit would be a guess.
    pub fn parse(s: &str) -> Result<ConfigDuration, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let scale_ms = match unit {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => {
                return Err(format!(
                    "duration `{s}` needs a unit: a number followed by `ms`, `s`, `m` or `h` (e.g. `200ms`, `2s`)"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("duration `{s}`: `{number}` is not a number"))?;
        let ms = value * scale_ms;
        if !(ms.is_finite() && (0.0..=86_400_000.0).contains(&ms)) {
            return Err(format!("duration `{s}` is out of range (0 to 24 h)"));
        }
        Ok(ConfigDuration(std::time::Duration::from_micros(
            (ms * 1000.0).round() as u64,
        )))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        if ms >= 1000.0 && (ms / 1000.0).fract() == 0.0 {
            write!(f, "{}s", ms / 1000.0)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with its unit, e.g. `200ms` or `2s`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ConfigDuration, E> {
                ConfigDuration::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl serde::Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for ConfigDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration with its unit: `ms`, `s` or `m` (`200ms`, `1.5s`).",
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m)$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_print_back() {
        let ms = |s: &str| ConfigDuration::parse(s).map(|d| d.0.as_millis());
        assert_eq!(ms("200ms"), Ok(200));
        assert_eq!(ms("2s"), Ok(2000));
        assert_eq!(ms("1.5s"), Ok(1500));
        assert_eq!(ms("1m"), Ok(60_000));
        assert!(ms("200").expect_err("no unit").contains("needs a unit"));
        assert!(ms("fast").is_err());
        assert!(
            ms("1.2.3s")
                .expect_err("not a number")
                .contains("not a number")
        );
        assert!(ms("25h").is_err());
        let back = |s: &str| ConfigDuration::parse(s).map(|d| d.to_string());
        assert_eq!(back("2s"), Ok("2s".into()));
        assert_eq!(back("1.5s"), Ok("1500ms".into()));
        assert_eq!(back("250ms"), Ok("250ms".into()));
    }

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
