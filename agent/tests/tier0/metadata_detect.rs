//! Detection order (documented in `agent/src/metadata/mod.rs`): the command
//! line, then local sources, then the network probes in the order AWS, GCE,
//! Azure, retried within the backoff budget.

use crate::support::fake_metadata;
use crate::support::golden;

use std::time::{Duration, Instant};

use fake_metadata::{FakeServer, Imds, Reply, Step, TOKEN_PATH};
use golden::hermetic;
use muster::cmdline::KernelCmdline;
use muster::metadata::{self, MetadataError, ProviderKind};

const AZURE_PATH: &str = "/metadata/instance?api-version=2021-02-01";

fn gce(server: &FakeServer) {
    server.route(
        "GET",
        "/computeMetadata/v1/",
        Reply::ok("instance/\nproject/\n").header("Metadata-Flavor", "Google"),
    );
}

fn azure(server: &FakeServer) {
    server.route(
        "GET",
        AZURE_PATH,
        Reply::ok(golden::read_fixture("azure/instance-linux.json")),
    );
}

#[tokio::test]
async fn the_kernel_command_line_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("fw_cfg/by_name/opt/muster")).expect("mkdir");
    let mut opts = hermetic(dir.path(), None);
    opts.cmdline = KernelCmdline::parse("quiet muster.platform=gce");
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Gce
    );
    opts.cmdline = KernelCmdline::parse("muster.platform=vmware");
    let e = metadata::detect(&opts).await.expect_err("unknown");
    assert!(matches!(e, MetadataError::UnknownPlatform { .. }), "{e:?}");
}

#[tokio::test]
async fn local_sources_are_checked_before_the_network() {
    let server = FakeServer::start().await;
    server.imds(Imds::Both);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("seed")).expect("mkdir");
    std::fs::write(dir.path().join("seed/meta-data"), "instance-id: x\n").expect("write");
    let opts = hermetic(dir.path(), Some(server.url()));
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Nocloud
    );
    assert_eq!(
        server.total(),
        0,
        "no network probe when a local source exists"
    );
}

#[tokio::test]
async fn aws_is_detected_by_its_token_put() {
    let server = FakeServer::start().await;
    server.imds(Imds::V2Only {
        token_max_uses: None,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = hermetic(dir.path(), Some(server.url()));
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Aws
    );
    assert_eq!(server.count("PUT", TOKEN_PATH), 1);
}

#[tokio::test]
async fn imdsv1_only_counts_as_aws_only_when_allowed() {
    let server = FakeServer::start().await;
    server.imds(Imds::V1Only);
    server.route("GET", "/latest/meta-data/instance-id", Reply::ok("i-1"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = hermetic(dir.path(), Some(server.url()));
    opts.allow_imdsv1 = true;
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Aws
    );
    opts.allow_imdsv1 = false;
    let e = metadata::detect(&opts)
        .await
        .expect_err("v1 alone is not enough");
    assert!(matches!(e, MetadataError::NotDetected { .. }), "{e:?}");
}

#[tokio::test]
async fn gce_is_detected_by_the_flavor_header_only() {
    let server = FakeServer::start().await;
    gce(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = hermetic(dir.path(), Some(server.url()));
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Gce
    );
    let probe = server
        .seen()
        .into_iter()
        .find(|s| s.target == "/computeMetadata/v1/")
        .expect("probed");
    assert_eq!(probe.header("metadata-flavor"), Some("Google"));

    let impostor = FakeServer::start().await;
    impostor.route("GET", "/computeMetadata/v1/", Reply::ok("instance/\n"));
    let opts = hermetic(dir.path(), Some(impostor.url()));
    let e = metadata::detect(&opts)
        .await
        .expect_err("no header, not GCE");
    assert!(
        e.to_string()
            .contains("lacks the Metadata-Flavor: Google header"),
        "{e}"
    );
}

#[tokio::test]
async fn azure_is_detected_by_its_instance_document() {
    let server = FakeServer::start().await;
    azure(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = hermetic(dir.path(), Some(server.url()));
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Azure
    );
    let probe = server
        .seen()
        .into_iter()
        .find(|s| s.target == AZURE_PATH)
        .expect("probed");
    assert_eq!(probe.header("metadata"), Some("true"));
}

#[tokio::test]
async fn when_several_answer_the_documented_order_decides() {
    let server = FakeServer::start().await;
    server.imds(Imds::Both);
    gce(&server);
    azure(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = hermetic(dir.path(), Some(server.url()));
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Aws
    );

    let server = FakeServer::start().await;
    gce(&server);
    azure(&server);
    let opts = hermetic(dir.path(), Some(server.url()));
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Gce
    );
}

#[tokio::test]
async fn probes_are_retried_while_the_network_comes_up() {
    let server = FakeServer::start().await;
    server.imds(Imds::V2Only {
        token_max_uses: None,
    });
    server.script(
        "PUT",
        TOKEN_PATH,
        vec![Step::Drop, Step::Reply(Reply::status(503)), Step::Pass],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = hermetic(dir.path(), Some(server.url()));
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Aws
    );
    assert_eq!(server.count("PUT", TOKEN_PATH), 3);
}

#[tokio::test]
async fn nothing_found_lists_every_check_within_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake_metadata::closed_port_url().await;
    let opts = hermetic(dir.path(), Some(url.clone()));
    let start = Instant::now();
    let e = metadata::detect(&opts).await.expect_err("nothing anywhere");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let MetadataError::NotDetected { tried, .. } = &e else {
        panic!("unexpected {e:?}");
    };
    let all = tried.join("\n");
    for needle in [
        "muster.platform=",
        "a facts file",
        "QEMU fw_cfg",
        "NoCloud seed",
        "SMBIOS serial",
        "muster.config=",
        &format!("AWS IMDS at {url} (connection refused)"),
        &format!("GCE metadata at {url} (connection refused)"),
        &format!("Azure IMDS at {url} (connection refused)"),
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert!(
        e.to_string().starts_with("no metadata source found after "),
        "{e}"
    );
}

#[tokio::test]
async fn a_blackholed_link_local_address_cannot_stall_detection() {
    let server = FakeServer::start().await;
    server.script("PUT", TOKEN_PATH, vec![Step::Hang]);
    server.script("GET", "/computeMetadata/v1/", vec![Step::Hang]);
    server.script("GET", AZURE_PATH, vec![Step::Hang]);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = hermetic(dir.path(), Some(server.url()));
    let start = Instant::now();
    let e = metadata::detect(&opts).await.expect_err("nothing answers");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains("timed out after 0.2s"), "{e}");
}
