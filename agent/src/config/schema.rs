//! The JSON Schema of the config, generated from the types; committed as
//! `configs/schema.json` (a test keeps the two equal).

use schemars::Schema;
use serde_json::{Value, json};

use super::types::Config;

/// The JSON Schema (draft 2020-12) of [`Config`], pretty-printed, with a
/// trailing newline.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Config);
    // Serializing a JSON value to a string cannot fail; keep a readable
    // fallback rather than a panic all the same.
    match serde_json::to_string_pretty(&schema) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(e) => format!("{{\"error\": \"{e}\"}}\n"),
    }
}

// `cluster`, `cluster.name` and `cluster.secret` are `#[serde(default)]`
// only so validation can report them missing alongside other errors; to
// editors they are required, and their empty defaults mean nothing.

pub(crate) fn require_cluster(schema: &mut Schema) {
    require(schema, &["cluster"]);
}

/// `name`, and `secret` unless `join` is given.
pub(crate) fn require_name_and_secret(schema: &mut Schema) {
    require(schema, &["name"]);
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.insert(
        "oneOf".into(),
        json!([{"required": ["secret"]}, {"required": ["join"]}]),
    );
    // No default for a credential (it would read `<redacted>`).
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for f in ["secret", "join"] {
            if let Some(Value::Object(p)) = props.get_mut(f) {
                p.remove("default");
            }
        }
    }
}

fn require(schema: &mut Schema, fields: &[&str]) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.remove("default");
    obj.insert("required".into(), json!(fields));
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for f in fields {
            if let Some(Value::Object(p)) = props.get_mut(*f) {
                p.remove("default");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_fields_and_no_secret_default() {
        let s: Value = serde_json::from_str(&schema_json()).expect("valid json");
        assert_eq!(s["required"], json!(["cluster"]));
        let cluster = &s["properties"]["cluster"];
        let cluster = match cluster.get("$ref").and_then(Value::as_str) {
            Some(r) => &s["$defs"][r.trim_start_matches("#/$defs/")],
            None => cluster,
        };
        assert_eq!(cluster["required"], json!(["name"]));
        // The secret, or a worker's join credential instead.
        assert_eq!(
            cluster["oneOf"],
            json!([{"required": ["secret"]}, {"required": ["join"]}])
        );
        assert!(!schema_json().contains("\"default\": \"<redacted>\""));
    }
}
