//! Decoding the merged tree into [`Config`], collecting every error.

use serde::Deserialize;

use super::de::{NodeDe, Prune};
use super::error::ConfigError;
use super::load::{MAX_ERRORS, located};
use super::locate::{Seg, remove};
use super::tree::Node;
use super::types::Config;

pub(crate) struct Decoded {
    pub config: Option<Config>,
    pub errors: Vec<(usize, ConfigError)>,
    /// Paths removed to get past an error; checks touching them are skipped.
    pub pruned: Vec<Vec<Seg>>,
}

/// Deserializes the merged tree. serde stops at the first error, so each
/// error's node is pruned and decoding runs again, until it succeeds; the
/// errors of every round are the result.
pub(crate) fn decode(mut tree: Node) -> Decoded {
    let mut errors = Vec::new();
    let mut pruned: Vec<Vec<Seg>> = Vec::new();
    while errors.len() < MAX_ERRORS {
        let de = NodeDe {
            node: &tree,
            path: &[],
            key_loc: None,
        };
        let e = match Config::deserialize(de) {
            Ok(config) => {
                return Decoded {
                    config: Some(config),
                    errors,
                    pruned,
                };
            }
            Err(e) => e,
        };
        let Some(at) = e.at.as_deref().cloned() else {
            errors.push(located(&tree.loc, &[], e.message()));
            break;
        };
        let (target, cascade) = match at.prune {
            Prune::Node(p) => (p, false),
            // A key missing only because we pruned it is not news.
            Prune::Mapping(m) => (m, pruned.contains(&at.path)),
        };
        if !cascade {
            errors.push(located(&at.loc, &at.path, e.message()));
        }
        if !remove(&mut tree, &target) {
            break;
        }
        pruned.push(target);
    }
    Decoded {
        config: None,
        errors,
        pruned,
    }
}
