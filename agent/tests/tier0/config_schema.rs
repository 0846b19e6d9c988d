//! `configs/schema.json` is generated from the config types and committed;
//! this test fails when the two drift apart.
//!
//! To regenerate after changing the types:
//!     MUSTER_BLESS=1 cargo test -p muster-agent --test tier0 config_schema

use std::fs;
use std::path::Path;

use muster::config::schema_json;

#[test]
fn committed_schema_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/schema.json");
    let generated = schema_json();
    if std::env::var_os("MUSTER_BLESS").is_some() {
        fs::write(&path, &generated).expect("write configs/schema.json");
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "configs/schema.json is out of date with the config types; regenerate it with\n    \
         MUSTER_BLESS=1 cargo test -p muster-agent --test tier0 config_schema"
    );
}

#[test]
fn schema_is_valid_json_and_describes_the_fields() {
    let v: serde_json::Value = serde_json::from_str(&schema_json()).expect("schema is JSON");
    let props = v["properties"].as_object().expect("properties");
    for key in [
        "cluster",
        "topology",
        "discovery",
        "apiEndpoint",
        "kubernetes",
        "mesh",
        "dns",
        "addons",
        "metadata",
        "cloud",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    assert_eq!(v["additionalProperties"], serde_json::Value::Bool(false));
}
