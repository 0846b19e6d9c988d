//! Field paths (`apiEndpoint.bgp.peers[0].asn`) and finding where a path
//! was written, so errors after merging still point at FILE:LINE:COL.

use std::fmt::Write as _;

use super::tree::{Loc, Node, Value};

/// One step of a path into the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Parses a dotted path such as `topology.etcd.count` or `a.b[2].c`.
/// Only for paths written in our own code: keys with dots (label names)
/// are pushed as [`Seg::Key`] directly.
pub(crate) fn path(dotted: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in dotted.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            segs.push(Seg::Key(key.to_string()));
        }
        for idx in pieces {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                segs.push(Seg::Index(i));
            }
        }
    }
    segs
}

/// Renders a path for humans: `a.b[0].c`, with odd keys quoted
/// (`labels["node.kubernetes.io/role"]`).
pub(crate) fn render(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k)
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Key(k) => {
                let _ = write!(out, "[{k:?}]");
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// The location to blame for a node: a scalar's own position, but for a
/// collection the key that introduced it (a block mapping's own position
/// is its first child's line, which reads oddly in an error).
pub(crate) fn blame<'a>(node: &'a Node, key_loc: Option<&'a Loc>) -> &'a Loc {
    match (&node.value, key_loc) {
        (Value::Scalar(_), _) | (_, None) => &node.loc,
        (_, Some(key)) => key,
    }
}

/// Where `segs` was written; if it was not (a default value), the deepest
/// ancestor that was. The bool tells whether the full path was found.
pub(crate) fn locate<'a>(root: &'a Node, segs: &[Seg]) -> (&'a Loc, bool) {
    let mut node = root;
    let mut key_loc = None;
    for seg in segs {
        let next = match (&node.value, seg) {
            (Value::Map(entries), Seg::Key(k)) => entries
                .iter()
                .find(|e| &e.key == k)
                .map(|e| (&e.value, Some(&e.key_loc))),
            (Value::Seq(items), Seg::Index(i)) => items
                .iter()
                .find(|it| it.index == *i)
                .map(|it| (&it.node, None)),
            _ => None,
        };
        match next {
            Some((n, k)) => {
                node = n;
                key_loc = k;
            }
            None => return (blame(node, key_loc), false),
        }
    }
    (blame(node, key_loc), true)
}

/// Where the key of the mapping entry at `segs` was written, if it was.
pub(crate) fn locate_key<'a>(root: &'a Node, segs: &[Seg]) -> Option<&'a Loc> {
    let (last, parents) = segs.split_last()?;
    let mut node = root;
    for seg in parents {
        node = match (&node.value, seg) {
            (Value::Map(entries), Seg::Key(k)) => &entries.iter().find(|e| &e.key == k)?.value,
            (Value::Seq(items), Seg::Index(i)) => &items.iter().find(|it| it.index == *i)?.node,
            _ => return None,
        };
    }
    match (&node.value, last) {
        (Value::Map(entries), Seg::Key(k)) => {
            entries.iter().find(|e| &e.key == k).map(|e| &e.key_loc)
        }
        _ => None,
    }
}

/// Removes the node at `segs` (a mapping entry or a sequence item).
/// Returns false if there is no such node (or `segs` is the root).
pub(crate) fn remove(root: &mut Node, segs: &[Seg]) -> bool {
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut node = root;
    for seg in parents {
        let next = match (&mut node.value, seg) {
            (Value::Map(entries), Seg::Key(k)) => entries
                .iter_mut()
                .find(|e| &e.key == k)
                .map(|e| &mut e.value),
            (Value::Seq(items), Seg::Index(i)) => items
                .iter_mut()
                .find(|it| it.index == *i)
                .map(|it| &mut it.node),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (&mut node.value, last) {
        (Value::Map(entries), Seg::Key(k)) => {
            let before = entries.len();
            entries.retain(|e| &e.key != k);
            entries.len() != before
        }
        (Value::Seq(items), Seg::Index(i)) => {
            let before = items.len();
            items.retain(|it| it.index != *i);
            items.len() != before
        }
        _ => false,
    }
}

/// Whether one path is a prefix of the other (same field, or one inside the other).
pub(crate) fn related(a: &[Seg], b: &[Seg]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render_round_trip() {
        let p = path("apiEndpoint.bgp.peers[1].asn");
        assert_eq!(p[3], Seg::Index(1));
        assert_eq!(render(&p), "apiEndpoint.bgp.peers[1].asn");
        let mut q = path("topology.workers.labels");
        q.push(Seg::Key("node.kubernetes.io/role".into()));
        assert_eq!(
            render(&q),
            "topology.workers.labels[\"node.kubernetes.io/role\"]"
        );
    }

    #[test]
    fn related_paths() {
        assert!(related(&path("a.b"), &path("a.b.c")));
        assert!(related(&path("a.b.c"), &path("a.b")));
        assert!(!related(&path("a.b"), &path("a.c")));
    }
}
