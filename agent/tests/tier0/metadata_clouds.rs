//! GCE, Azure and the bare-metal config URL against the fake server, serving
//! the documentation fixtures.

use crate::support::fake_metadata;
use crate::support::golden;

use std::time::Duration;

use fake_metadata::{FakeServer, Reply, Step};
use golden::{assert_golden, hermetic, read_fixture};
use muster::cmdline::KernelCmdline;
use muster::metadata::{self, InstanceFacts, MetadataError, Options, ProviderKind};

const GCE_PATH: &str = "/computeMetadata/v1/instance/?recursive=true&alt=json";
const AZURE_PATH: &str = "/metadata/instance?api-version=2021-02-01";

async fn identify(
    kind: ProviderKind,
    url: url::Url,
    tweak: impl FnOnce(&mut Options),
) -> Result<InstanceFacts, MetadataError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = hermetic(dir.path(), Some(url));
    tweak(&mut opts);
    metadata::identify(Some(kind), &opts).await
}

fn gce_reply() -> Reply {
    Reply::ok(read_fixture("gce/instance.json"))
        .header("Metadata-Flavor", "Google")
        .header("Content-Type", "application/json")
}

#[tokio::test]
async fn gce_happy_path_sends_and_checks_the_flavor_header() {
    let server = FakeServer::start().await;
    server.route("GET", GCE_PATH, gce_reply());
    let facts = identify(ProviderKind::Gce, server.url(), |_| {})
        .await
        .expect("identifies");
    assert_golden("gce/expected.json", &facts);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("metadata-flavor"), Some("Google"));
}

#[tokio::test]
async fn gce_answer_without_the_flavor_header_is_not_gce() {
    let server = FakeServer::start().await;
    server.route(
        "GET",
        GCE_PATH,
        Reply::ok(read_fixture("gce/instance.json")),
    );
    let e = identify(ProviderKind::Gce, server.url(), |_| {})
        .await
        .expect_err("no header");
    assert!(matches!(e, MetadataError::WrongService { .. }), "{e:?}");
    assert!(e.to_string().contains("Metadata-Flavor: Google"), "{e}");
}

#[tokio::test]
async fn gce_500s_then_success() {
    let server = FakeServer::start().await;
    server.route("GET", GCE_PATH, gce_reply());
    server.script(
        "GET",
        GCE_PATH,
        vec![Step::Reply(Reply::status(500)), Step::Drop, Step::Pass],
    );
    let facts = identify(ProviderKind::Gce, server.url(), |_| {})
        .await
        .expect("identifies");
    assert_eq!(facts.zone.as_deref(), Some("us-central1-a"));
    assert_eq!(server.count("GET", GCE_PATH), 3);
}

#[tokio::test]
async fn azure_happy_path_with_the_metadata_header() {
    let server = FakeServer::start().await;
    server.route(
        "GET",
        AZURE_PATH,
        Reply::ok(read_fixture("azure/instance-windows.json")),
    );
    let facts = identify(ProviderKind::Azure, server.url(), |_| {})
        .await
        .expect("identifies");
    assert_golden("azure/expected-windows.json", &facts);
    assert_eq!(server.seen()[0].header("metadata"), Some("true"));
}

#[tokio::test]
async fn azure_rate_limit_is_retried() {
    let server = FakeServer::start().await;
    server.route(
        "GET",
        AZURE_PATH,
        Reply::ok(read_fixture("azure/instance-linux.json")),
    );
    server.script(
        "GET",
        AZURE_PATH,
        vec![Step::Reply(Reply::status(429)), Step::Pass],
    );
    let facts = identify(ProviderKind::Azure, server.url(), |_| {})
        .await
        .expect("identifies");
    assert_golden("azure/expected-linux.json", &facts);
    assert_eq!(server.count("GET", AZURE_PATH), 2);
}

#[tokio::test]
async fn azure_persistent_500_gives_up_with_the_status() {
    let server = FakeServer::start().await;
    server.script("GET", AZURE_PATH, vec![Step::Reply(Reply::status(500))]);
    let e = identify(ProviderKind::Azure, server.url(), |_| {})
        .await
        .expect_err("always 500");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "azure metadata at {}metadata/instance?api-version=2021-02-01: no answer after",
            server.url()
        )),
        "{msg}"
    );
    assert!(msg.ends_with("(HTTP 500 Internal Server Error)"), "{msg}");
}

#[tokio::test]
async fn azure_garbage_is_a_parse_error_naming_the_document() {
    let server = FakeServer::start().await;
    server.route("GET", AZURE_PATH, Reply::ok("<html>captive portal</html>"));
    let e = identify(ProviderKind::Azure, server.url(), |_| {})
        .await
        .expect_err("not json");
    assert!(
        matches!(
            e,
            MetadataError::Parse {
                provider: ProviderKind::Azure,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("azure metadata in metadata/instance:"),
        "{e}"
    );
}

#[tokio::test]
async fn metal_fetches_user_data_from_muster_config_url() {
    let server = FakeServer::start().await;
    server.script(
        "GET",
        "/pxe/cluster.yaml",
        vec![
            Step::Reply(Reply::status(503)),
            Step::Reply(Reply::ok("muster:\n  cluster: pxe\n")),
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("root/etc")).expect("mkdir");
    std::fs::write(dir.path().join("root/etc/hostname"), "rack1-node4\n").expect("write");
    std::fs::write(
        dir.path().join("root/etc/machine-id"),
        "5f2b2d8e6a1c4e3f9b0a7c6d5e4f3a2b\n",
    )
    .expect("write");
    let mut opts = hermetic(dir.path(), None);
    opts.cmdline = KernelCmdline::parse(&format!(
        "muster.config={}pxe/cluster.yaml muster.ip=10.1.0.4",
        server.url()
    ));
    let facts = metadata::identify(None, &opts)
        .await
        .expect("detects metal and identifies");
    assert_eq!(facts.provider, ProviderKind::Metal);
    assert_eq!(facts.instance_id, "5f2b2d8e6a1c4e3f9b0a7c6d5e4f3a2b");
    assert_eq!(facts.hostname.as_deref(), Some("rack1-node4"));
    assert_eq!(
        facts.private_ipv4,
        Some(std::net::Ipv4Addr::new(10, 1, 0, 4))
    );
    assert_eq!(
        facts.user_data.as_deref(),
        Some("muster:\n  cluster: pxe\n")
    );
    assert_eq!(server.count("GET", "/pxe/cluster.yaml"), 2);
}

#[tokio::test]
async fn metal_config_url_404_is_permanent() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = hermetic(dir.path(), None);
    opts.cmdline = KernelCmdline::parse(&format!(
        "muster.config={}missing.yaml muster.instance-id=n1",
        server.url()
    ));
    let e = metadata::identify(Some(ProviderKind::Metal), &opts)
        .await
        .expect_err("404");
    assert_eq!(
        e.to_string(),
        format!(
            "metal metadata at {}missing.yaml: HTTP 404 Not Found",
            server.url()
        )
    );
    assert_eq!(server.total(), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let server = FakeServer::start().await;
    server.route(
        "GET",
        AZURE_PATH,
        Reply::ok(vec![b' '; metadata::MAX_BODY + 1]),
    );
    let e = identify(ProviderKind::Azure, server.url(), |o| {
        o.request_timeout = Duration::from_secs(2)
    })
    .await
    .expect_err("too big");
    assert!(e.to_string().contains("larger than"), "{e}");
    assert_eq!(server.total(), 1, "not retried");
}
