//! A YAML document as a tree of nodes that remember where they came from.
//!
//! serde alone forgets positions once a value is built, and the layers must
//! be merged *before* the typed config exists, so we keep our own small tree:
//! built from the parser's events, merged per key, then deserialized by
//! [`super::de`] with every node still knowing its file, line and column.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, Span, Tag};

/// Cap on nodes per document, aliases included, so an alias bomb
/// (`a: &a [*a, *a, ...]` nested) cannot eat the agent's memory.
const MAX_NODES: usize = 100_000;

/// Nesting deeper than any real config; keeps recursion over trees shallow.
const MAX_NESTING: usize = 64;

/// Where a layer of config came from, e.g. a file name or `user data`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Shown in errors: a path, `user data`, or `kernel command line: muster.K=V`.
    pub name: String,
    /// Layer order (defaults 0, user data 1, command line 2); sorts errors.
    pub rank: usize,
    /// Whether line:col positions are meaningful (false for the command line).
    pub has_positions: bool,
}

/// A position in a source: 1-based line and column, and the byte range of
/// the node's own text (used to redact scalars in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    pub origin: Arc<Origin>,
    pub line: usize,
    pub col: usize,
    pub bytes: Range<usize>,
}

impl Loc {
    /// The line and column, if the origin has meaningful positions.
    pub fn position(&self) -> Option<(usize, usize)> {
        self.origin.has_positions.then_some((self.line, self.col))
    }

    fn from_span(origin: &Arc<Origin>, span: &Span) -> Loc {
        Loc {
            origin: origin.clone(),
            line: span.start.line(),
            col: span.start.col() + 1,
            bytes: span.byte_range().unwrap_or(0..0),
        }
    }
}

#[derive(Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Scalar(Scalar),
    Seq(Vec<Item>),
    Map(Vec<Entry>),
}

#[derive(Clone, PartialEq)]
pub(crate) struct Scalar {
    pub text: String,
    /// Plain (unquoted, untagged) scalars are resolved as YAML core-schema
    /// null/bool/int/float; quoted and block scalars are always strings.
    pub plain: bool,
}

/// A sequence element with its index in the source, kept stable when
/// error recovery prunes earlier elements.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub index: usize,
    pub node: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_loc: Loc,
    pub value: Node,
}

// Scalars may be secrets: Debug shows only their size.
impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scalar(<{} bytes>)", self.text.len())
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}:{}", self.value, self.loc.line, self.loc.col)
    }
}

impl Node {
    pub fn null(loc: Loc) -> Node {
        Node {
            value: Value::Scalar(Scalar {
                text: String::new(),
                plain: true,
            }),
            loc,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.plain && is_null_text(&s.text))
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The entry for `key`, if this is a mapping that has it.
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key == key)
    }

    /// Every node in this subtree, this one first.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        f(self);
        match &self.value {
            Value::Scalar(_) => {}
            Value::Seq(items) => items.iter().for_each(|i| i.node.walk(f)),
            Value::Map(entries) => entries.iter().for_each(|e| e.value.walk(f)),
        }
    }

    /// Gives every node in this subtree the location `loc` (used for values
    /// from the kernel command line, whose inner positions mean nothing).
    pub fn relocate(&mut self, loc: &Loc) {
        self.loc = loc.clone();
        match &mut self.value {
            Value::Scalar(_) => {}
            Value::Seq(items) => items.iter_mut().for_each(|i| i.node.relocate(loc)),
            Value::Map(entries) => entries.iter_mut().for_each(|e| {
                e.key_loc = loc.clone();
                e.value.relocate(loc);
            }),
        }
    }

    fn size(&self) -> usize {
        let mut n = 0;
        self.walk(&mut |_| n += 1);
        n
    }
}

/// YAML 1.2 core-schema null.
pub(crate) fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// A YAML syntax error (or a structure we do not accept, such as a
/// mapping used as a key).
#[derive(Debug, Clone)]
pub(crate) struct ParseError {
    pub loc: Loc,
    pub message: String,
}

/// Parses every document of a YAML stream.
pub(crate) fn parse_stream(text: &str, origin: &Arc<Origin>) -> Result<Vec<Node>, ParseError> {
    let mut options = Options::default();
    options.flow_nesting_limit = MAX_NESTING;
    options.block_nesting_limit = MAX_NESTING;
    let mut builder = Builder {
        origin: origin.clone(),
        stack: Vec::new(),
        anchors: Vec::new(),
        docs: Vec::new(),
        doc_start: None,
        nodes: 0,
    };
    for event in Parser::new_from_str_with_options(text, options) {
        let (event, span) = event.map_err(|e| {
            let m = e.marker();
            ParseError {
                loc: Loc {
                    origin: origin.clone(),
                    line: m.line(),
                    col: m.col() + 1,
                    bytes: 0..0,
                },
                message: e.info(),
            }
        })?;
        builder.on_event(event, &span)?;
    }
    Ok(builder.docs)
}

enum Frame {
    Seq {
        loc: Loc,
        anchor: usize,
        items: Vec<Item>,
    },
    Map {
        loc: Loc,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, Loc)>,
    },
}

struct Builder {
    origin: Arc<Origin>,
    stack: Vec<Frame>,
    /// Anchor id → node; ids are small and dense, so a Vec indexed by id.
    anchors: Vec<Option<Node>>,
    docs: Vec<Node>,
    doc_start: Option<(Loc, bool)>,
    nodes: usize,
}

impl Builder {
    fn error(&self, span: &Span, message: impl Into<String>) -> ParseError {
        ParseError {
            loc: Loc::from_span(&self.origin, span),
            message: message.into(),
        }
    }

    fn on_event(&mut self, event: Event<'_>, span: &Span) -> Result<(), ParseError> {
        match event {
            Event::DocumentStart(..) => {
                self.doc_start = Some((Loc::from_span(&self.origin, span), false));
                self.anchors.clear();
            }
            Event::DocumentEnd => {
                if let Some((loc, false)) = self.doc_start.take() {
                    // An empty document is a null root.
                    self.docs.push(Node::null(loc));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let mut plain = style == ScalarStyle::Plain;
                if let Some(tag) = tag {
                    match tag.core_suffix() {
                        Some("str") => plain = false,
                        Some("null" | "bool" | "int" | "float") => {}
                        _ => return Err(self.error(span, format!("unsupported YAML tag `{tag}`"))),
                    }
                }
                let node = Node {
                    value: Value::Scalar(Scalar {
                        text: text.into_owned(),
                        plain,
                    }),
                    loc: Loc::from_span(&self.origin, span),
                };
                self.finish(node, anchor, span)?;
            }
            Event::Alias(id) => {
                let Some(Some(target)) = self.anchors.get(id) else {
                    return Err(self.error(span, "alias to an unknown or unfinished anchor"));
                };
                let mut node = target.clone();
                self.count(node.size(), span)?;
                node.loc = Loc {
                    bytes: node.loc.bytes.clone(),
                    ..Loc::from_span(&self.origin, span)
                };
                self.finish(node, 0, span)?;
            }
            Event::SequenceStart(_, anchor, tag) => {
                let loc = self.open(tag.as_deref(), span)?;
                self.stack.push(Frame::Seq {
                    loc,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(_, anchor, tag) => {
                let loc = self.open(tag.as_deref(), span)?;
                self.stack.push(Frame::Map {
                    loc,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, loc, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { loc, anchor, items }) => (Value::Seq(items), loc, anchor),
                    Some(Frame::Map {
                        loc,
                        anchor,
                        entries,
                        ..
                    }) => (Value::Map(entries), loc, anchor),
                    None => return Err(self.error(span, "unbalanced collection end")),
                };
                self.finish(Node { value, loc }, anchor, span)?;
            }
            // Stream markers, comments and other presentation events carry no data.
            _ => {}
        }
        Ok(())
    }

    /// Checks a collection start: no custom tags, and not in key position.
    fn open(&self, tag: Option<&Tag>, span: &Span) -> Result<Loc, ParseError> {
        if let Some(t) = tag
            && !matches!(t.core_suffix(), Some("map" | "seq" | "omap"))
        {
            return Err(self.error(span, format!("unsupported YAML tag `{t}`")));
        }
        if matches!(self.stack.last(), Some(Frame::Map { key: None, .. })) {
            return Err(self.error(span, "only plain string keys are supported"));
        }
        Ok(Loc::from_span(&self.origin, span))
    }

    fn count(&mut self, n: usize, span: &Span) -> Result<(), ParseError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(self.error(
                span,
                "document too large (more than 100000 nodes after aliases)",
            ));
        }
        Ok(())
    }

    /// Places a completed node: as a document root, a sequence item, a
    /// mapping key or a mapping value.
    fn finish(&mut self, node: Node, anchor: usize, span: &Span) -> Result<(), ParseError> {
        self.count(1, span)?;
        if anchor != 0 {
            if self.anchors.len() <= anchor {
                self.anchors.resize(anchor + 1, None);
            }
            self.anchors[anchor] = Some(node.clone());
        }
        match self.stack.last_mut() {
            None => {
                self.docs.push(node);
                if let Some((_, seen)) = &mut self.doc_start {
                    *seen = true;
                }
            }
            Some(Frame::Seq { items, .. }) => {
                let index = items.len();
                items.push(Item { index, node });
            }
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some((key, key_loc)) => entries.push(Entry {
                    key,
                    key_loc,
                    value: node,
                }),
                None => {
                    let Value::Scalar(scalar) = node.value else {
                        return Err(self.error(span, "only plain string keys are supported"));
                    };
                    if let Some(first) = entries.iter().find(|e| e.key == scalar.text) {
                        let line = first.key_loc.line;
                        return Err(ParseError {
                            loc: node.loc,
                            message: format!(
                                "duplicate key `{}` (first given on line {line})",
                                scalar.text
                            ),
                        });
                    }
                    *key = Some((scalar.text, node.loc));
                }
            },
        }
        Ok(())
    }
}
