//! Helpers shared by the `metadata_*` tests: fixture paths, golden files, and
//! `Options` that are hermetic (no real /sys, /run or 169.254.169.254) and fast.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use muster::metadata::{InstanceFacts, Options};
use muster::retry::Backoff;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metadata")
        .join(rel)
}

pub fn read_fixture(rel: &str) -> Vec<u8> {
    let path = fixture(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn read_fixture_text(rel: &str) -> String {
    String::from_utf8(read_fixture(rel)).expect("fixture is UTF-8")
}

/// Compares facts with a golden JSON file; `UPDATE_GOLDEN=1` rewrites it.
pub fn assert_golden(rel: &str, facts: &InstanceFacts) {
    let path = fixture(rel);
    let got = serde_json::to_value(facts).expect("facts serialise");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&got).expect("json") + "\n";
        std::fs::write(&path, text).expect("write golden");
        return;
    }
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "golden {}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        }))
        .expect("golden is JSON");
    assert_eq!(got, want, "facts differ from {}", path.display());
}

/// A retry policy short enough for tests: 10 ms doubling to 50 ms, 1 s in all.
pub const FAST: Backoff = Backoff {
    initial: Duration::from_millis(10),
    max_delay: Duration::from_millis(50),
    total: Duration::from_secs(1),
};

/// Options that touch nothing on the host: every local root points into
/// `dir`, the endpoint is `endpoint` (or a closed port), timeouts are short.
pub fn hermetic(dir: &Path, endpoint: Option<url::Url>) -> Options {
    Options {
        endpoint,
        backoff: FAST,
        fw_cfg_root: dir.join("fw_cfg"),
        dmi_root: dir.join("dmi"),
        seed_dir: Some(dir.join("seed")),
        host_root: dir.join("root"),
        request_timeout: Duration::from_millis(300),
        probe_timeout: Duration::from_millis(200),
        ..Options::default()
    }
}
