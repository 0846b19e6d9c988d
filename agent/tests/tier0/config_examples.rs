//! Every example config in `configs/examples` validates, and the
//! multi-file reference setups are consistent across their files.

use std::fs;
use std::path::{Path, PathBuf};

use muster::config::{Config, EtcdPlacement, VipMode, validate_text};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/examples")
}

fn example(name: &str) -> Config {
    let path = examples_dir().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    validate_text(name, &text).unwrap_or_else(|e| panic!("{name} is invalid:\n{e}"))
}

#[test]
fn every_example_validates() {
    let mut names: Vec<String> = fs::read_dir(examples_dir())
        .expect("configs/examples")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"))
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for name in &names {
        let text = fs::read_to_string(examples_dir().join(name)).expect("readable");
        if let Err(e) = validate_text(name, &text) {
            failures.push(format!("{e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "invalid examples:\n{}",
        failures.join("\n")
    );
    for required in [
        "aws.yaml",
        "gce.yaml",
        "qemu-local.yaml",
        "metal-pxe.yaml",
        "cloud-config.yaml",
        "ref-multi-region-istio.yaml",
        "ref-cross-cloud-aws.yaml",
        "ref-cross-cloud-gce.yaml",
        "ref-stacked-vip-bgp.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "missing example {required}"
        );
    }
}

#[test]
fn platform_examples_use_their_platform() {
    assert_eq!(example("aws.yaml").api_endpoint.mode, Some(VipMode::Aws));
    assert_eq!(example("gce.yaml").api_endpoint.mode, Some(VipMode::Gce));
    let lab = example("qemu-local.yaml");
    assert_eq!(lab.api_endpoint.mode, Some(VipMode::Arp));
    assert!(
        lab.discovery
            .static_peers
            .is_some_and(|s| s.peers.len() == 3)
    );
    assert!(example("cloud-config.yaml").cluster.name == "cc-demo");
}

#[test]
fn cross_cloud_pair_can_form_one_cilium_mesh() {
    let aws = example("ref-cross-cloud-aws.yaml");
    let gce = example("ref-cross-cloud-gce.yaml");
    let (a, g) = (
        aws.mesh.cilium.as_ref().expect("aws side in the mesh"),
        gce.mesh.cilium.as_ref().expect("gce side in the mesh"),
    );
    assert_ne!(
        a.cluster_id, g.cluster_id,
        "cluster ids must be unique in a mesh"
    );
    assert_ne!(aws.cluster.name, gce.cluster.name);
    let (pa, pg) = (aws.kubernetes.pod_cidr, gce.kubernetes.pod_cidr);
    assert!(
        !pa.contains(&pg.network()) && !pg.contains(&pa.network()),
        "pod CIDRs overlap"
    );
}

#[test]
fn stacked_bgp_reference_uses_an_odd_dedicated_etcd() {
    let c = example("ref-stacked-vip-bgp.yaml");
    assert_eq!(c.topology.etcd.placement, EtcdPlacement::Dedicated);
    assert_eq!(c.topology.etcd.count, Some(3));
    assert_eq!(
        c.api_endpoint.vip.map(|v| v.to_string()).as_deref(),
        Some("10.0.0.100")
    );
    assert_eq!(c.api_endpoint.mode, Some(VipMode::Bgp));
    // The diagram's two etcd members are refused.
    let text =
        fs::read_to_string(examples_dir().join("ref-stacked-vip-bgp.yaml")).expect("readable");
    let two = text.replace(
        "count: 3               # the diagram's 2",
        "count: 2               # the diagram's 2",
    );
    assert_ne!(two, text, "the etcd count line moved; update this test");
    let err = validate_text("two.yaml", &two).expect_err("2-member etcd");
    assert!(
        err.to_string()
            .contains("topology.etcd.count: must be 1, 3, 5 or 7"),
        "{err}"
    );
}
