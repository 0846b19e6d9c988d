//! The kernel command line, as far as Muster cares about it.
//!
//! PXE and QEMU boots pass settings as `muster.KEY=VALUE` words (for example
//! `muster.platform=metal muster.config=http://10.0.0.1/c.yaml`). Parsing is a
//! pure function over the text of `/proc/cmdline` so tests need no kernel.

use std::path::Path;

/// Where the running kernel exposes its command line.
pub const PROC_CMDLINE: &str = "/proc/cmdline";

/// The prefix that marks a word as ours.
pub const PREFIX: &str = "muster.";

/// The `muster.*` parameters of a kernel command line, in order of appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    params: Vec<(String, String)>,
}

impl KernelCmdline {
    /// Parses the text of a kernel command line. Words are split on
    /// whitespace; a value may be double-quoted to hold spaces
    /// (`muster.x="a b"`), as the kernel itself allows. Words without our
    /// prefix are ignored; a `muster.KEY` without `=` means `KEY=true`.
    pub fn parse(text: &str) -> Self {
        let mut params = Vec::new();
        for word in split_words(text) {
            let Some(rest) = word.strip_prefix(PREFIX) else {
                continue;
            };
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) => (k, v.trim_matches('"')),
                None => (rest, "true"),
            };
            if !key.is_empty() {
                params.push((key.to_string(), value.to_string()));
            }
        }
        Self { params }
    }

    /// Reads and parses a command-line file (normally [`PROC_CMDLINE`]).
    /// A missing file yields an empty command line: containers and test
    /// hosts have none that concerns us.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// The last value given for `muster.KEY` (later words win, as with the
    /// kernel's own parameters).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All `muster.*` parameters as `(KEY, VALUE)` without the prefix.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }
}

/// Splits on whitespace, keeping double-quoted runs together.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_muster_words_and_ignores_the_rest() {
        let c = KernelCmdline::parse(
            "BOOT_IMAGE=/vmlinuz root=/dev/vda ro muster.platform=metal muster.config=http://10.0.0.1/c.yaml quiet\n",
        );
        assert_eq!(c.get("platform"), Some("metal"));
        assert_eq!(c.get("config"), Some("http://10.0.0.1/c.yaml"));
        assert_eq!(c.params().len(), 2);
        assert_eq!(c.get("root"), None);
    }

    #[test]
    fn later_words_win_quotes_hold_spaces_and_bare_keys_mean_true() {
        let c = KernelCmdline::parse(r#"muster.a=1 muster.b="x y" muster.a=2 muster.debug"#);
        assert_eq!(c.get("a"), Some("2"));
        assert_eq!(c.get("b"), Some("x y"));
        assert_eq!(c.get("debug"), Some("true"));
    }

    #[test]
    fn missing_file_is_empty() {
        let c =
            KernelCmdline::read(Path::new("/nonexistent/cmdline")).expect("missing file is fine");
        assert!(c.params().is_empty());
    }
}
