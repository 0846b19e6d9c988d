//! Tier 0: user data as Terraform's `cloudinit_config` and cloud-init's
//! `make-mime` produce it (fixtures written from their documented formats),
//! gzip and base64, cloud-init's default merge order across cloud-config
//! parts, errors located inside the part that has them, and random nesting
//! and corruption that must never panic.

use std::io::Write;

use base64::Engine;
use muster::cmdline::KernelCmdline;
use muster::config::userdata::{gunzip, unpack};
use muster::config::{Layer, load};
use proptest::prelude::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/userdata");
const SECRET: &str = "SEKRIT-fixture-secret-value-0123456789abcdef";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("write");
    e.finish().expect("finish")
}

fn load_user_data(text: &str) -> Result<muster::config::Config, muster::config::ConfigErrors> {
    load(
        None,
        Some(Layer::new("aws user data", text)),
        &KernelCmdline::default(),
    )
}

#[test]
fn terraform_cloudinit_config_is_read_and_its_script_ignored() {
    let text = fixture("terraform-cloudinit.mime");
    let u = unpack("aws user data", &text).expect("unpacks");
    assert!(u.multipart);
    assert_eq!(u.parts.len(), 1);
    assert_eq!(
        u.parts[0].origin,
        "aws user data, part 1 (muster.yaml, text/cloud-config)"
    );
    assert_eq!(u.ignored.len(), 1);
    assert!(
        u.ignored[0].starts_with("part 2 (bootstrap.sh, text/x-shellscript): ignored"),
        "{:?}",
        u.ignored
    );
    let c = load_user_data(&text).expect("valid");
    assert_eq!(c.cluster.name, "tf-demo");
    assert_eq!(c.topology.control_plane.count, 3);
}

/// `cloudinit_config` with `gzip = true, base64_encode = true` (its
/// defaults): EC2 takes the base64 and serves the gzip bytes; the metadata
/// provider decompresses them.
#[test]
fn terraform_gzip_and_base64_round_trip() {
    let text = fixture("terraform-cloudinit.mime");
    let rendered = base64::engine::general_purpose::STANDARD.encode(gzip(text.as_bytes()));
    let served = base64::engine::general_purpose::STANDARD
        .decode(rendered)
        .expect("base64");
    let plain = String::from_utf8(gunzip(&served).expect("gunzip")).expect("utf8");
    assert_eq!(
        load_user_data(&plain).expect("valid").cluster.name,
        "tf-demo"
    );
}

#[test]
fn make_mime_parts_merge_like_cloud_init_the_first_part_keeps_its_values() {
    let c = load_user_data(&fixture("make-mime.mime")).expect("valid");
    // Part 1 set the name; part 3 (base64) tried to change it and added
    // kubernetes.version: cloud-init's default keeps the first value and
    // adds what is missing.
    assert_eq!(c.cluster.name, "first-wins");
    assert_eq!(c.kubernetes.version.as_deref(), Some("1.28.7"));
}

#[test]
fn an_error_names_the_part_and_its_own_line_and_column() {
    let text = format!(
        "Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n--B\n\
         Content-Type: text/cloud-config\nContent-Disposition: attachment; filename=\"bad.yaml\"\n\n\
         #cloud-config\nmuster:\n  cluster:\n    name: demo\n    secret: {SECRET}\n  topolgy: {{}}\n--B--\n"
    );
    let e = load_user_data(&text).expect_err("unknown key").to_string();
    assert!(
        e.contains("aws user data, part 1 (bad.yaml, text/cloud-config):6:3: topolgy: unknown key"),
        "{e}"
    );
}

#[test]
fn a_message_without_a_muster_part_says_what_it_found() {
    let text = "Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n--B\n\
                Content-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n--B\n\
                Content-Type: text/cloud-config\n\n#cloud-config\npackages: [vim]\n--B--\n";
    let e = load_user_data(text).expect_err("no muster").to_string();
    assert!(
        e.contains("no text/cloud-config part with a `muster:` key"),
        "{e}"
    );
    assert!(e.contains("part 2 (text/cloud-config)"), "{e}");
    assert!(e.contains("1 other part(s) ignored"), "{e}");
}

#[test]
fn gzip_and_base64_parts_and_nested_messages_are_read() {
    let inner_part =
        format!("#cloud-config\nmuster:\n  cluster:\n    name: nested\n    secret: {SECRET}\n");
    let inner = format!(
        "Content-Type: multipart/mixed; boundary=\"IN\"\nMIME-Version: 1.0\n\n--IN\nContent-Type: text/cloud-config\n\n{inner_part}--IN--\n"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(gzip(inner.as_bytes()));
    let outer = format!(
        "Content-Type: multipart/mixed; boundary=\"OUT\"\nMIME-Version: 1.0\n\n--OUT\n\
         Content-Type: application/x-gzip\nContent-Transfer-Encoding: base64\n\n{b64}\n--OUT--\n"
    );
    assert_eq!(
        load_user_data(&outer).expect("valid").cluster.name,
        "nested"
    );
}

/// A part, and the cluster name it sets (`None`: none), or junk.
#[derive(Debug, Clone)]
enum Gen {
    Named(String),
    Script,
    OtherCloudConfig,
    Junk(String),
}

impl Gen {
    fn text(&self) -> String {
        match self {
            Gen::Named(n) => format!(
                "Content-Type: text/cloud-config\n\n#cloud-config\nmuster:\n  cluster:\n    name: {n}\n    secret: {SECRET}\n"
            ),
            Gen::Script => "Content-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n".into(),
            Gen::OtherCloudConfig => {
                "Content-Type: text/plain\n\n#cloud-config\npackages: [vim]\n".into()
            }
            Gen::Junk(j) => format!("Content-Type: text/cloud-config\n\n{j}"),
        }
    }
}

fn part_strategy() -> impl Strategy<Value = Gen> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(Gen::Named),
        Just(Gen::Script),
        Just(Gen::OtherCloudConfig),
        "[ -~\n]{0,40}".prop_map(Gen::Junk),
    ]
}

fn message(parts: Vec<String>, boundary: &str) -> String {
    let mut m =
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    for p in parts {
        m.push_str(&format!("--{boundary}\n{p}\n"));
    }
    m.push_str(&format!("--{boundary}--\n"));
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random nesting (messages inside parts, optionally gzip+base64) and
    /// random junk: unpacking and loading return, never panic; without
    /// junk, the first part that names the cluster wins (cloud-init's
    /// default merge), and a message naming none is refused.
    #[test]
    fn random_messages_never_panic(
        parts in prop::collection::vec(part_strategy(), 1..5),
        nest in 0usize..3,
        packed in any::<bool>(),
    ) {
        let junk = parts.iter().any(|p| matches!(p, Gen::Junk(_)));
        let first = parts.iter().find_map(|p| match p {
            Gen::Named(n) => Some(n.clone()),
            _ => None,
        });
        let mut text = message(parts.iter().map(Gen::text).collect(), "B0");
        for level in 1..=nest {
            let body = if packed {
                format!("Content-Type: application/x-gzip\nContent-Transfer-Encoding: base64\n\n{}",
                    base64::engine::general_purpose::STANDARD.encode(gzip(text.as_bytes())))
            } else {
                format!("Content-Type: text/plain\n\n{text}")
            };
            text = message(vec![body], &format!("B{level}"));
        }
        let _ = unpack("ud", &text);
        let loaded = load_user_data(&text);
        if !junk {
            match first {
                Some(name) => prop_assert_eq!(loaded.expect("valid").cluster.name, name),
                None => prop_assert!(loaded.is_err()),
            }
        }
    }

    /// Corrupt gzip: a clear error, never a panic.
    #[test]
    fn corrupt_gzip_is_an_error(data in prop::collection::vec(any::<u8>(), 0..64), cut in 0usize..40) {
        let mut z = gzip(&data);
        let cut = cut.min(z.len().saturating_sub(1));
        z.truncate(cut.max(2));
        if let Err(e) = gunzip(&z) {
            prop_assert!(e.contains("does not decompress"), "{}", e);
        }
    }
}
