//! Whatever arrives as user data or on the kernel command line, loading,
//! validating and redacting never panic, and redaction never lets a
//! secret through.

use muster::cmdline::KernelCmdline;
use muster::config::{Layer, load, redact_user_data, validate_text};
use proptest::prelude::*;

/// Keys the config knows, plus near misses, so generated documents reach
/// deep into the decoder and the checks rather than stopping at the top.
const KEYS: &[&str] = &[
    "cluster",
    "name",
    "secret",
    "topology",
    "controlPlane",
    "count",
    "etcd",
    "placement",
    "workers",
    "labels",
    "taints",
    "role",
    "discovery",
    "cloudGroup",
    "static",
    "peers",
    "dns",
    "apiEndpoint",
    "vip",
    "mode",
    "bgp",
    "localAsn",
    "asn",
    "address",
    "port",
    "kubernetes",
    "podCidr",
    "serviceCidr",
    "cni",
    "mesh",
    "cilium",
    "clusterId",
    "istio",
    "provider",
    "zone",
    "rfc2136",
    "tsig",
    "apiToken",
    "cloudflare",
    "addons",
    "metadata",
    "allowImdsv1",
    "cloud",
    "endpoint",
    "muster",
    "vpi",
    "<<",
    "",
];

const SCALARS: &[&str] = &[
    "3",
    "2",
    "0",
    "-1",
    "256",
    "99999999999999999999999",
    "1.5",
    "true",
    "~",
    "null",
    "''",
    "\"\"",
    "arp",
    "bgp",
    "dedicated",
    "cilium",
    "10.0.0.100",
    "http://10.77.0.1:5000",
    "10.244.0.0/16",
    "10.96.0.0/12",
    "::1/64",
    "demo",
    "fake-secret-value-for-proptests-0123456789",
    "key=value:NoSchedule",
    "*a",
    "&a x",
    "!!str 5",
    "!custom x",
    "[]",
    "{}",
    "[1, [2, {a: b}]]",
    "|\n  block",
    "'quo''ted'",
    "\"esc\\u0041\"",
];

fn yamlish() -> impl Strategy<Value = String> {
    let line = (
        0usize..4,
        prop::sample::select(KEYS),
        prop::option::of(prop::sample::select(SCALARS)),
        any::<bool>(),
    )
        .prop_map(|(indent, key, value, dash)| {
            let pad = "  ".repeat(indent);
            let dash = if dash { "- " } else { "" };
            match value {
                Some(v) => format!("{pad}{dash}{key}: {v}"),
                None => format!("{pad}{dash}{key}:"),
            }
        });
    (any::<bool>(), prop::collection::vec(line, 0..24)).prop_map(|(cloud, lines)| {
        let head = if cloud {
            "#cloud-config\nmuster:\n"
        } else {
            ""
        };
        format!("{head}{}\n", lines.join("\n"))
    })
}

fn cmdline() -> impl Strategy<Value = String> {
    let word = (
        prop::collection::vec(prop::sample::select(KEYS), 1..4),
        prop::sample::select(SCALARS),
        any::<bool>(),
    )
        .prop_map(|(path, value, quoted)| {
            let v = value.replace(char::is_whitespace, "");
            if quoted {
                format!("muster.{}=\"{v}\"", path.join("."))
            } else {
                format!("muster.{}={v}", path.join("."))
            }
        });
    (prop::collection::vec(word, 0..6), ".*")
        .prop_map(|(words, noise)| format!("{} {noise}", words.join(" ")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = validate_text("fuzz", &text);
        let _ = redact_user_data(&text);
    }

    #[test]
    fn yamlish_text_never_panics_and_errors_are_located(text in yamlish()) {
        if let Err(errors) = validate_text("fuzz.yaml", &text) {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert_eq!(&e.origin, "fuzz.yaml");
                let line = e.line.unwrap_or(0);
                let lines = text.lines().count().max(1) + 1;
                prop_assert!(line >= 1 && line <= lines, "{} in\n{}", e, text);
            }
        }
        let _ = redact_user_data(&text);
    }

    #[test]
    fn arbitrary_cmdlines_never_panic(cmd in cmdline(), text in yamlish()) {
        let cmdline = KernelCmdline::parse(&cmd);
        let _ = load(Some(Layer::new("defaults", &text)), Some(Layer::new("user", &text)), &cmdline);
        let _ = load(None, None, &cmdline);
    }

    #[test]
    fn redaction_hides_secret_values(
        secret in "[A-Za-z0-9+/]{12,40}",
        key in prop::sample::select(&["secret", "apiToken", "tsigSecret", "password"][..]),
        style in 0usize..6,
        broken in any::<bool>(),
    ) {
        let value = match style {
            0 => secret.clone(),
            1 => format!("\"{secret}\""),
            2 => format!("'{secret}'"),
            3 => format!("|\n      {secret}"),
            // Mis-indented block: not valid YAML, still masked.
            4 => format!("|\n    {secret}"),
            _ => format!("[{secret}]"),
        };
        let tail = if broken { "\nbad: [unclosed\n" } else { "\n" };
        let text = format!("#cloud-config\nmuster:\n  cluster:\n    name: demo\n  x:\n    {key}: {value}{tail}");
        let out = redact_user_data(&text);
        prop_assert!(!out.contains(&secret), "{}", out);
        if let Err(e) = validate_text("t", &text) {
            let shown = format!("{e} {e:?}");
            prop_assert!(!shown.contains(&secret), "{}", shown);
        }
    }
}
