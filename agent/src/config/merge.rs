//! Layer merging: a deep merge of mappings where the later layer wins per
//! key; sequences and scalars are replaced whole. Nodes keep their own
//! locations, so an error still names the layer a value came from.

use super::tree::{Node, Value};

/// Merges `over` onto `base`.
pub(crate) fn merge(base: Node, over: Node) -> Node {
    let Node {
        value: Value::Map(mut entries),
        loc: base_loc,
    } = base
    else {
        return over;
    };
    let Value::Map(over_entries) = over.value else {
        return over;
    };
    for o in over_entries {
        match entries.iter_mut().find(|e| e.key == o.key) {
            Some(e) => {
                let both_maps = matches!(e.value.value, Value::Map(_))
                    && matches!(o.value.value, Value::Map(_));
                // Blame the key where the value now comes from; for a merged
                // mapping keep the key that has a line to point at.
                if !both_maps || o.key_loc.position().is_some() {
                    e.key_loc = o.key_loc;
                }
                let old = std::mem::replace(&mut e.value, Node::null(e.key_loc.clone()));
                e.value = merge(old, o.value);
            }
            None => entries.push(o),
        }
    }
    // A merged mapping points at the layer that has positions, preferring
    // the later one (user data over image defaults).
    let loc = if over.loc.position().is_some() {
        over.loc
    } else {
        base_loc
    };
    Node {
        value: Value::Map(entries),
        loc,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::tree::{Origin, parse_stream};

    fn doc(name: &str, rank: usize, text: &str) -> Node {
        let origin = Arc::new(Origin {
            name: name.into(),
            rank,
            has_positions: true,
        });
        parse_stream(text, &origin).expect("valid yaml").remove(0)
    }

    #[test]
    fn later_layer_wins_per_key_and_lists_are_replaced() {
        let base = doc("defaults", 0, "a:\n  x: 1\n  y: [1, 2]\nb: keep\n");
        let over = doc("user", 1, "a:\n  y: [3]\n  z: new\n");
        let m = merge(base, over);
        let a = &m.get("a").expect("a").value;
        let x = a.get("x").expect("x");
        assert_eq!(
            (x.value.loc.origin.name.as_str(), x.value.loc.line),
            ("defaults", 2)
        );
        let y = a.get("y").expect("y");
        assert_eq!(y.key_loc.origin.name, "user");
        assert!(matches!(&y.value.value, Value::Seq(items) if items.len() == 1));
        assert_eq!(a.get("z").expect("z").key_loc.line, 3);
        assert!(m.get("b").is_some());
        assert_eq!(m.loc.origin.name, "user");
    }
}
