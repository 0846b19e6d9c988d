//! Bad configs give precise, complete errors, and never leak secrets.
//!
//! Each `tests/fixtures/config/bad/*.yaml` lists its expected errors in
//! comments: `# expect: LINE:COL PATH ~ MESSAGE-FRAGMENT` (PATH empty for
//! document-level errors). The errors must match exactly, in order. Secret
//! values in the fixtures all contain `SEKRIT`, which must appear in no
//! error, `Debug` output or redacted text.

use std::fs;
use std::path::{Path, PathBuf};

use muster::cmdline::KernelCmdline;
use muster::config::{ConfigError, Layer, load, redact_user_data, validate_text};

const MARKER: &str = "SEKRIT";

#[derive(Debug, PartialEq)]
struct Expect {
    line: usize,
    col: usize,
    path: String,
    fragment: String,
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/bad");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected the bad-config fixtures in {}",
        dir.display()
    );
    files
}

fn expectations(text: &str) -> Vec<Expect> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("# expect: "))
        .map(|spec| {
            let (head, fragment) = spec.split_once(" ~ ").expect("`~ fragment` in expectation");
            let (pos, path) = head.split_once(' ').unwrap_or((head, ""));
            let (line, col) = pos.split_once(':').expect("LINE:COL");
            Expect {
                line: line.parse().expect("line"),
                col: col.parse().expect("col"),
                path: path.to_string(),
                fragment: fragment.to_string(),
            }
        })
        .collect()
}

fn matches(e: &ConfigError, x: &Expect) -> bool {
    e.line == Some(x.line)
        && e.col == Some(x.col)
        && e.path == x.path
        && e.message.contains(&x.fragment)
}

#[test]
fn each_bad_fixture_gives_exactly_its_expected_errors() {
    let mut failures = Vec::new();
    for file in fixtures() {
        let name = format!(
            "bad/{}",
            file.file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 name")
        );
        let text = fs::read_to_string(&file).expect("fixture");
        let expected = expectations(&text);
        assert!(!expected.is_empty(), "{name} has no `# expect:` lines");
        let errors = match validate_text(&name, &text) {
            Ok(_) => {
                failures.push(format!("{name}: validated, expected errors"));
                continue;
            }
            Err(e) => e,
        };
        let got: Vec<&ConfigError> = errors.iter().collect();
        let ok =
            got.len() == expected.len() && got.iter().zip(&expected).all(|(e, x)| matches(e, x));
        if !ok {
            failures.push(format!(
                "{name}:\n  expected: {expected:?}\n  got:\n    {errors}"
            ));
        }
        for e in got {
            assert_eq!(e.origin, name);
            assert!(e.to_string().starts_with(&format!(
                "{name}:{}:{}: ",
                x_or(e.line),
                x_or(e.col)
            )));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn x_or(v: Option<usize>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

#[test]
fn secrets_never_appear_in_errors_debug_or_redacted_text() {
    for file in fixtures() {
        let text = fs::read_to_string(&file).expect("fixture");
        let name = file.display().to_string();
        if let Err(errors) = validate_text(&name, &text) {
            for out in [errors.to_string(), format!("{errors:?}")] {
                assert!(
                    !out.contains(MARKER),
                    "{name}: secret in error output:\n{out}"
                );
            }
        }
        let redacted = redact_user_data(&text);
        assert!(
            !redacted.contains(MARKER),
            "{name}: secret survives redaction:\n{redacted}"
        );
    }
}

#[test]
fn valid_config_serializes_and_debugs_without_secrets() {
    let text = "cluster: {name: demo, secret: SEKRIT-valid-secret-0123456789abcdef}\n\
                dns:\n  provider: cloudflare\n  zone: example.com\n  cloudflare: {apiToken: SEKRIT-token}\n";
    let config = validate_text("ok.yaml", text).expect("valid");
    let json = serde_json::to_string(&config).expect("serializes");
    let debug = format!("{config:?}");
    for out in [&json, &debug] {
        assert!(!out.contains(MARKER), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
    }
    assert!(config.cluster.secret.expose().starts_with(MARKER));
}

#[test]
fn errors_after_merging_point_at_their_layer() {
    let defaults = Layer::new(
        "/usr/lib/muster/defaults.yaml",
        "kubernetes:\n  podCidr: 10.100.0.0/16\ntopology:\n  etcd:\n    placement: dedicated\n",
    );
    let user = Layer::new(
        "user data",
        "cluster:\n  name: demo\n  secret: SEKRIT-user-secret-0123456789abcdef0\ntopology:\n  etcd:\n    count: 2\n",
    );
    let cmdline = KernelCmdline::parse(
        "ro quiet muster.platform=metal muster.apiEndpoint.vip=10.100.0.5 muster.apiEndpoint.mode=arp muster.cluster.secret=SEKRIT-x",
    );
    let errors = load(Some(defaults), Some(user), &cmdline).expect_err("invalid");
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "/usr/lib/muster/defaults.yaml:2:12: kubernetes.podCidr: kubernetes.podCidr `10.100.0.0/16` and kubernetes.serviceCidr `10.96.0.0/12` overlap",
            "user data:6:12: topology.etcd.count: must be 1, 3, 5 or 7: a 2-member etcd loses quorum when either member fails, worse than one member; use 3",
            "kernel command line: muster.cluster.secret=<redacted>: cluster.secret: too short: the cluster secret needs at least 32 characters (e.g. `openssl rand -base64 32`)",
            "kernel command line: muster.apiEndpoint.vip=10.100.0.5: apiEndpoint.vip: `10.100.0.5` lies inside kubernetes.podCidr `10.100.0.0/16`; pick an address of the node network",
        ]
    );
    assert!(!format!("{errors:?}").contains(MARKER));
}

#[test]
fn an_override_fixes_what_a_lower_layer_got_wrong() {
    let user = Layer::new(
        "u",
        "cluster: {name: demo, secret: SEKRIT-user-secret-0123456789abcdef0}\ntopology:\n  controlPlane: {count: 2}\n",
    );
    let cmdline = KernelCmdline::parse("muster.topology.controlPlane.count=3");
    let config = load(None, Some(user), &cmdline).expect("the command line wins");
    assert_eq!(config.topology.control_plane.count, 3);
}

#[test]
fn cloud_endpoint_is_a_url_from_any_layer_and_errors_name_where_it_was_set() {
    let user = Layer::new(
        "user data",
        "cluster: {name: demo, secret: SEKRIT-user-secret-0123456789abcdef0}\ncloud:\n  endpoint: http://10.77.0.1:5000\n",
    );
    let config = load(None, Some(user.clone()), &KernelCmdline::default()).expect("valid");
    assert_eq!(
        config.cloud.endpoint_url().map(String::from).as_deref(),
        Some("http://10.77.0.1:5000/")
    );

    let cmdline = KernelCmdline::parse("muster.cloud.endpoint=https://aws-proxy.internal:8443");
    let config = load(None, Some(user.clone()), &cmdline).expect("the command line wins");
    assert_eq!(
        config.cloud.endpoint.as_deref(),
        Some("https://aws-proxy.internal:8443")
    );

    let cmdline = KernelCmdline::parse("muster.cloud.endpoint=gopher://10.77.0.1");
    let errors = load(None, Some(user), &cmdline).expect_err("invalid");
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "kernel command line: muster.cloud.endpoint=gopher://10.77.0.1: cloud.endpoint: `gopher://10.77.0.1`: the scheme must be `http` or `https`, not `gopher`"
        ]
    );

    let wrong_type = "cluster: {name: demo, secret: SEKRIT-user-secret-0123456789abcdef0}\ncloud:\n  endpoint: [http://10.77.0.1:5000]\n";
    let errors = validate_text("u.yaml", wrong_type).expect_err("a list is no URL");
    let e = errors.iter().next().expect("one error");
    assert_eq!(
        (e.line, e.col, e.path.as_str()),
        (Some(3), Some(3), "cloud.endpoint")
    );
    assert!(e.message.contains("expected a string"), "{e}");
}
