//! Secrets: a value type that will not print itself, and redaction of raw
//! user data for logs and status output (invariant S5).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::tree::{self, Node, Origin, Value};

/// What every secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A credential (the cluster secret, a TSIG key, an API token).
///
/// `Debug`, `Display` and `Serialize` all print `<redacted>`; the value is
/// reachable only through [`Secret::expose`], so a stray `{:?}` or a
/// serialized config cannot leak it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call sites are the places to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in characters (for validation messages that must not show it).
    pub fn char_len(&self) -> usize {
        self.0.chars().count()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(SecretVisitor)
    }
}

/// Accepts strings only; every rejection names the *kind* of value, never
/// the value (serde's defaults would echo numbers and strings).
struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(E::invalid_type(Unexpected::Other("a boolean"), &self))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(E::invalid_type(Unexpected::Other("a number"), &self))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(E::invalid_type(Unexpected::Other("a number"), &self))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(E::invalid_type(Unexpected::Other("a number"), &self))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(E::invalid_type(Unexpected::Other("bytes"), &self))
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "writeOnly": true,
            "description": "A credential. Never printed: logs, errors and `muster config show` say `<redacted>`."
        })
    }
}

/// Whether a mapping key names a credential. Deliberately broad (any key
/// containing `secret`, `token`, `password`...): over-redacting costs nothing.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "passwd",
        "privatekey",
        "private_key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Secret values shorter than this are not swept from free text (they
/// would match ordinary words); they are still masked where they stand.
const MIN_SWEEP_LEN: usize = 6;

/// Returns `text` with every secret value replaced by `<redacted>`: values
/// under secret-like keys at any depth (so also inside a `#cloud-config`
/// `muster:` key), anchors they alias, and any other occurrence of the same
/// value. Text that is not valid YAML is masked line by line instead. A
/// MIME multi-part message is shown as its decoded parts, each redacted
/// (a base64 part would otherwise show its secrets encoded).
pub fn redact_user_data(text: &str) -> String {
    if let Ok(u) = super::userdata::unpack("user data", text)
        && u.multipart
    {
        let mut out = String::new();
        for part in &u.parts {
            out.push_str(&format!(
                "--- {}\n{}",
                part.origin,
                redact_user_data(&part.text)
            ));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        for note in &u.ignored {
            out.push_str(&format!("--- {note}\n"));
        }
        return out;
    }
    let origin = Arc::new(Origin {
        name: String::new(),
        rank: 0,
        has_positions: true,
    });
    match tree::parse_stream(text, &origin) {
        Ok(docs) if docs.iter().all(|d| d.as_map().is_some() || d.is_null()) => {
            let mut ranges = Vec::new();
            let mut values = Vec::new();
            for doc in &docs {
                collect_secrets(doc, false, &mut ranges, &mut values);
            }
            let masked = mask_ranges(text, ranges);
            sweep(&masked, &values)
        }
        // Not a mapping (a script, say) or not YAML at all: go by key names.
        _ => mask_lines(text),
    }
}

/// Collects the source ranges (and decoded values) of scalars that sit
/// under a secret-like key.
fn collect_secrets(
    node: &Node,
    secret: bool,
    ranges: &mut Vec<(usize, usize)>,
    values: &mut Vec<String>,
) {
    match &node.value {
        Value::Scalar(s) => {
            if secret && !node.is_null() {
                ranges.push((node.loc.bytes.start, node.loc.bytes.end));
                values.push(s.text.clone());
            }
        }
        Value::Seq(items) => items
            .iter()
            .for_each(|i| collect_secrets(&i.node, secret, ranges, values)),
        Value::Map(entries) => entries.iter().for_each(|e| {
            collect_secrets(&e.value, secret || is_secret_key(&e.key), ranges, values);
        }),
    }
}

/// Replaces each byte range with `<redacted>`. Trailing whitespace inside a
/// range is kept: a block scalar's span runs into the next line's
/// indentation, which must stay for the text to keep its shape.
fn mask_ranges(text: &str, mut ranges: Vec<(usize, usize)>) -> String {
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for (start, end) in ranges {
        let (Some(slice), true) = (text.get(start..end), start >= pos) else {
            continue;
        };
        let kept = slice.trim_end();
        if kept.is_empty() {
            continue;
        }
        out.push_str(&text[pos..start]);
        out.push_str(REDACTED);
        pos = start + kept.len();
    }
    out.push_str(&text[pos..]);
    out
}

/// Masks further occurrences of known secret values (in comments, under
/// unrelated keys...).
fn sweep(text: &str, values: &[String]) -> String {
    let mut out = text.to_string();
    for v in values {
        let v = v.trim();
        if v.chars().count() >= MIN_SWEEP_LEN && v != REDACTED {
            out = out.replace(v, REDACTED);
        }
    }
    out
}

/// Line-based fallback for text that does not parse: after a secret-like
/// key followed by `:` or `=`, masks the value up to a delimiter. A value
/// left empty or starting a block scalar masks the more-indented lines
/// after it, and the very next line too unless it looks like a new key
/// (a mis-indented block is the likeliest reason the text did not parse).
fn mask_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut block: Option<(usize, bool)> = None; // (indent of the key, first line pending)
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let indent = body.len() - body.trim_start().len();
        if body.trim().is_empty() {
            out.push_str(line);
            continue;
        }
        if let Some((parent, first)) = block {
            if indent > parent || (first && !looks_like_key(body)) {
                block = Some((parent, false));
                out.push_str(&line[..indent]);
                out.push_str(REDACTED);
                out.push_str(&line[body.len()..]);
                continue;
            }
            block = None;
        }
        let (masked, opens_block) = mask_line(body);
        if opens_block {
            block = Some((indent, true));
        }
        out.push_str(&masked);
        out.push_str(&line[body.len()..]);
    }
    out
}

/// `key:` / `- key:` / `"key":` at the start of a line.
fn looks_like_key(line: &str) -> bool {
    let t = line
        .trim_start()
        .trim_start_matches("- ")
        .trim_start_matches(['"', '\'']);
    let key_len = t.bytes().take_while(|b| is_key_byte(*b)).count();
    key_len > 0
        && t[key_len..]
            .trim_start_matches(['"', '\''])
            .trim_start()
            .starts_with(':')
}

/// Masks every `secret-key: value` / `secret-key=value` on one line.
/// Returns the line and whether a secret value continues on later lines.
fn mask_line(line: &str) -> (String, bool) {
    let mut out = String::new();
    let mut rest = line;
    let mut opens_block = false;
    while let Some(value_start) = next_secret_assignment(rest) {
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let trimmed = value.trim_start();
        let lead = value.len() - trimmed.len();
        out.push_str(&value[..lead]);
        let len = value_len(trimmed);
        let v = &trimmed[..len];
        if v.is_empty() || v.starts_with('|') || v.starts_with('>') {
            opens_block = true;
            out.push_str(v);
        } else {
            out.push_str(REDACTED);
        }
        rest = &trimmed[len..];
    }
    out.push_str(rest);
    (out, opens_block)
}

/// Finds the next secret-like key followed by `:` or `=`; returns where
/// its value starts.
fn next_secret_assignment(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !is_key_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_key_byte(bytes[i]) {
            i += 1;
        }
        let key_end = i;
        let mut j = i;
        while j < bytes.len() && matches!(bytes[j], b'"' | b'\'' | b' ' | b'\t') {
            j += 1;
        }
        if j < bytes.len() && matches!(bytes[j], b':' | b'=') && is_secret_key(&s[start..key_end]) {
            return Some(j + 1);
        }
    }
    None
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Length of a value: a quoted run, a bracketed flow collection, or up to
/// `,` `}` `]`, ` #` or the end of the line.
fn value_len(v: &str) -> usize {
    let mut chars = v.char_indices();
    match chars.next() {
        Some((_, q @ ('"' | '\''))) => {
            let mut escaped = false;
            for (i, c) in chars {
                if c == q && !escaped {
                    return i + 1;
                }
                escaped = c == '\\' && !escaped && q == '"';
            }
            v.len()
        }
        Some((_, '[' | '{')) => {
            let mut depth = 0usize;
            for (i, c) in v.char_indices() {
                match c {
                    '[' | '{' => depth += 1,
                    ']' | '}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
            }
            v.len()
        }
        _ => {
            let b = v.as_bytes();
            (0..b.len())
                .find(|&i| {
                    matches!(b[i], b',' | b'}' | b']')
                        || (b[i] == b'#' && i > 0 && b[i - 1] == b' ')
                })
                .map_or(v.len(), |i| v[..i].trim_end().len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base64_mime_part_is_shown_decoded_and_redacted() {
        use base64::Engine;
        let part = "#cloud-config\nmuster:\n  cluster:\n    secret: SEKRIT-abcdefghijkl\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(part);
        let text = format!(
            "Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n--B\n\
             Content-Type: text/cloud-config\nContent-Transfer-Encoding: base64\n\n{b64}\n--B\n\
             Content-Type: text/x-shellscript\n\n#!/bin/sh\n--B--\n"
        );
        let out = redact_user_data(&text);
        assert!(!out.contains("SEKRIT") && !out.contains(&b64), "{out}");
        assert!(
            out.contains("--- user data, part 1 (text/cloud-config)\n#cloud-config\n"),
            "{out}"
        );
        assert!(out.contains("secret: <redacted>"), "{out}");
        assert!(
            out.contains("--- part 2 (text/x-shellscript): ignored"),
            "{out}"
        );
    }

    const S: &str = "fake-secret-0123456789abcdef0123456789";

    #[test]
    fn debug_display_serialize_are_redacted() {
        let s = Secret::new(S);
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(
            serde_json::to_string(&s).expect("serializes"),
            "\"<redacted>\""
        );
        assert_eq!(s.expose(), S);
    }

    #[test]
    fn wrongly_typed_secret_errors_do_not_echo() {
        use serde::de::IntoDeserializer;
        let d: serde::de::value::U64Deserializer<serde::de::value::Error> =
            1234567890123u64.into_deserializer();
        let e = Secret::deserialize(d).expect_err("number");
        assert!(!e.to_string().contains("1234567890123"), "{e}");
    }

    #[test]
    fn redacts_plain_quoted_block_and_nested() {
        let text = format!(
            "cluster:\n  name: a\n  secret: {S}\ndns:\n  cloudflare: {{apiToken: \"{S}x\"}}\n  rfc2136:\n    tsig:\n      secret: |\n        {S}y\n        more\n      keyName: k\nz: 1 # {S}\n"
        );
        let out = redact_user_data(&text);
        assert!(!out.contains(S), "{out}");
        assert!(out.contains("keyName: k\nz: 1 # <redacted>\n"), "{out}");
        assert!(out.contains("secret: <redacted>\ndns:"), "{out}");
        assert!(out.contains("{apiToken: <redacted>}"), "{out}");
    }

    #[test]
    fn redacts_inside_cloud_config_and_aliases() {
        let text = format!("#cloud-config\nx: &s {S}\nmuster:\n  cluster:\n    secret: *s\n");
        let out = redact_user_data(&text);
        assert!(!out.contains(S), "{out}");
        assert!(
            out.starts_with("#cloud-config\nx: &s <redacted>\n"),
            "{out}"
        );
    }

    #[test]
    fn falls_back_to_lines_when_yaml_is_broken() {
        let text = format!(
            "cluster:\n  secret: \"{S}\"\n   bad: [\napiToken={S}z\n{{\"secret\": \"{S}\", \"a\": 1}}\ntsig:\n  secret: |\n    {S}\n  keyName: k\n"
        );
        let out = redact_user_data(&text);
        assert!(!out.contains(S), "{out}");
        assert!(out.contains("\"a\": 1"), "{out}");
        assert!(out.contains("keyName: k"), "{out}");
    }

    #[test]
    fn leaves_text_without_secrets_alone() {
        let text = "cluster:\n  name: demo # comment\nlist: [a, b]\n";
        assert_eq!(redact_user_data(text), text);
        assert_eq!(redact_user_data("not: [valid"), "not: [valid");
    }

    #[test]
    fn secret_keys() {
        for k in ["secret", "apiToken", "tsigSecret", "PASSWORD"] {
            assert!(is_secret_key(k), "{k}");
        }
        assert!(!is_secret_key("name"));
    }
}
