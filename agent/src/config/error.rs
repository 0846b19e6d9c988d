//! Config errors, rendered like a compiler's: `FILE:LINE:COL: path: message`.

use std::fmt;

use super::locate::{Seg, render};
use super::secret::REDACTED;
use super::tree::Loc;

/// One problem in the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigError {
    /// The file or source (`user data`, `/usr/lib/muster/defaults.yaml`,
    /// `kernel command line: muster.KEY=VALUE`).
    pub origin: String,
    /// 1-based line; `None` where positions mean nothing (command line).
    pub line: Option<usize>,
    /// 1-based column, in characters.
    pub col: Option<usize>,
    /// The field, e.g. `topology.etcd.count`; empty for the document itself.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(loc: &Loc, segs: &[Seg], message: impl Into<String>) -> Self {
        let pos = loc.position();
        ConfigError {
            origin: loc.origin.name.clone(),
            line: pos.map(|p| p.0),
            col: pos.map(|p| p.1),
            path: render(segs),
            message: message.into(),
        }
    }

    /// Replaces any occurrence of the given secret values (belt and braces:
    /// messages are built not to echo secrets in the first place). Very
    /// short values are skipped: they would mangle ordinary words.
    pub(crate) fn scrub(&mut self, secrets: &[String]) {
        for s in secrets.iter().filter(|s| s.chars().count() >= 6) {
            for field in [&mut self.origin, &mut self.path, &mut self.message] {
                if field.contains(s.as_str()) {
                    *field = field.replace(s.as_str(), REDACTED);
                }
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let (Some(line), Some(col)) = (self.line, self.col) {
            write!(f, ":{line}:{col}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config, in source order; never empty when
/// returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn new(errors: Vec<ConfigError>) -> Self {
        ConfigErrors { errors }
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    pub fn into_vec(self) -> Vec<ConfigError> {
        self.errors
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The closest of `candidates` to `input`, if close enough to be a likely
/// typo: same letters ignoring case and `_`/`-` (`pod_cidr` → `podCidr`), or
/// a small edit distance.
pub(crate) fn suggest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let wanted = norm(input);
    if let Some(c) = candidates.iter().find(|c| norm(c) == wanted) {
        return Some(c);
    }
    let limit = (input.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(&wanted, &norm(c)), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent swaps
/// (`vpi` → `vip` is one edit).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// `` `a`, `b` or `c` `` for messages.
pub(crate) fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let keys = ["vip", "mode", "interface", "bgp", "port", "dnsName"];
        assert_eq!(suggest("vpi", &keys), Some("vip"));
        assert_eq!(suggest("dns_name", &keys), Some("dnsName"));
        assert_eq!(suggest("interfaces", &keys), Some("interface"));
        assert_eq!(suggest("zzzzzz", &keys), None);
    }

    #[test]
    fn display_like_a_compiler() {
        let e = ConfigError {
            origin: "c.yaml".into(),
            line: Some(3),
            col: Some(5),
            path: "a.b".into(),
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "c.yaml:3:5: a.b: bad");
        let e = ConfigError {
            line: None,
            col: None,
            ..e
        };
        assert_eq!(e.to_string(), "c.yaml: a.b: bad");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
