//! The kernel command line as a config layer: `muster.KEY=VALUE`, KEY a
//! dotted camelCase path, VALUE a YAML scalar (or flow collection).

use std::sync::Arc;

use super::error::ConfigError;
use super::load::located;
use super::merge::merge;
use super::secret::{REDACTED, is_secret_key};
use super::tree::{Entry, Loc, Node, Origin, Value, parse_stream};
use crate::cmdline::KernelCmdline;

/// `muster.KEY=VALUE` keys that are not config settings: they steer the
/// metadata layer and the agent itself. Everything else on the command
/// line is a config override, and an unknown key is an error. Add new
/// non-config parameters here.
pub const NON_CONFIG_CMDLINE_KEYS: &[&str] = &[
    // metadata detection and the `metal` provider (metadata/detect.rs, metal.rs)
    "platform",
    "config",
    "instance-id",
    "hostname",
    "ip",
    "region",
    "zone",
    "group",
    // the agent's own switches
    "debug",
];

/// Builds a tree from `muster.KEY=VALUE` parameters, KEY a dotted camelCase
/// path, VALUE a YAML scalar (or flow collection: `[a, b]`).
pub(crate) fn cmdline_layer(
    cmdline: &KernelCmdline,
) -> Result<Option<Node>, Vec<(usize, ConfigError)>> {
    let mut tree: Option<Node> = None;
    let mut errors = Vec::new();
    for (key, value) in cmdline.params() {
        if NON_CONFIG_CMDLINE_KEYS.contains(&key.as_str()) {
            continue;
        }
        let secret = key.split('.').any(is_secret_key);
        let shown = if secret { REDACTED } else { value.as_str() };
        let origin = Arc::new(Origin {
            name: format!("kernel command line: muster.{key}={shown}"),
            // After every user data part (each part has its own rank).
            rank: super::load::CMDLINE_RANK,
            has_positions: false,
        });
        let loc = Loc {
            origin: origin.clone(),
            line: 0,
            col: 0,
            bytes: 0..0,
        };
        let segs: Vec<&str> = key.split('.').collect();
        if segs.iter().any(|s| s.is_empty()) {
            errors.push(located(
                &loc,
                &[],
                "empty segment in the key (expected e.g. `muster.apiEndpoint.vip=...`)",
            ));
            continue;
        }
        let mut node = match parse_stream(value, &origin) {
            Ok(mut docs) if docs.len() <= 1 => {
                docs.pop().unwrap_or_else(|| Node::null(loc.clone()))
            }
            Ok(_) => {
                errors.push(located(
                    &loc,
                    &[],
                    "the value holds more than one YAML document",
                ));
                continue;
            }
            Err(e) => {
                // The parser's messages are generic; they never quote the value.
                errors.push(located(
                    &loc,
                    &[],
                    format!("the value is not a valid YAML value: {}", e.message),
                ));
                continue;
            }
        };
        node.relocate(&loc);
        for seg in segs.iter().rev() {
            node = Node {
                value: Value::Map(vec![Entry {
                    key: (*seg).to_string(),
                    key_loc: loc.clone(),
                    value: node,
                }]),
                loc: loc.clone(),
            };
        }
        tree = Some(match tree {
            Some(t) => merge(t, node),
            None => node,
        });
    }
    if errors.is_empty() {
        Ok(tree)
    } else {
        Err(errors)
    }
}
