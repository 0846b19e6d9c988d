//! Providers that read local files: OpenStack config drive, NoCloud seed,
//! QEMU fw_cfg/SMBIOS, bare metal and the facts file, from temp dirs laid
//! out the way the real system lays them out.

use crate::support::golden;

use std::path::Path;

use golden::{assert_golden, fixture, hermetic, read_fixture};
use muster::cmdline::KernelCmdline;
use muster::metadata::{self, MetadataError, ProviderKind};

fn put(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

#[tokio::test]
async fn openstack_config_drive_from_seed_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in [
        "openstack/latest/meta_data.json",
        "openstack/latest/user_data",
    ] {
        put(
            &dir.path().join("seed"),
            f,
            &read_fixture(&format!("openstack/{f}")),
        );
    }
    let opts = hermetic(dir.path(), None);
    let facts = metadata::identify(None, &opts)
        .await
        .expect("detects and identifies");
    assert_golden("openstack/expected.json", &facts);
}

#[tokio::test]
async fn nocloud_seed_from_seed_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    put(
        &dir.path().join("seed"),
        "meta-data",
        &read_fixture("nocloud/meta-data"),
    );
    put(
        &dir.path().join("seed"),
        "user-data",
        &read_fixture("nocloud/user-data"),
    );
    let opts = hermetic(dir.path(), None);
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Nocloud
    );
    let facts = metadata::identify(None, &opts).await.expect("identifies");
    assert_golden("nocloud/expected.json", &facts);
}

#[tokio::test]
async fn nocloud_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    put(
        &dir.path().join("seed"),
        "meta-data",
        b"local-hostname: h\n",
    );
    let opts = hermetic(dir.path(), None);
    let e = metadata::identify(Some(ProviderKind::Nocloud), &opts)
        .await
        .expect_err("no instance-id");
    let want = format!(
        "nocloud metadata in {}/meta-data: no instance-id",
        dir.path().join("seed").display()
    );
    assert_eq!(e.to_string(), want);

    let empty = tempfile::tempdir().expect("tempdir");
    let opts = hermetic(empty.path(), None);
    let e = metadata::identify(Some(ProviderKind::Nocloud), &opts)
        .await
        .expect_err("no seed");
    assert!(matches!(e, MetadataError::NotConfigured { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains(&empty.path().join("seed").display().to_string()),
        "{e}"
    );
}

#[tokio::test]
async fn qemu_fw_cfg_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fw = dir.path().join("fw_cfg/by_name/opt/muster");
    put(&fw, "meta-data/raw", &read_fixture("qemu/meta-data"));
    put(&fw, "user-data/raw", &read_fixture("qemu/user-data"));
    let opts = hermetic(dir.path(), None);
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Qemu
    );
    let facts = metadata::identify(None, &opts).await.expect("identifies");
    assert_golden("qemu/expected.json", &facts);
}

#[tokio::test]
async fn qemu_single_value_entries_override_meta_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fw = dir.path().join("fw_cfg/by_name/opt/muster");
    put(
        &fw,
        "meta-data/raw",
        b"instance-id: from-meta\nzone: lab-b\n",
    );
    put(&fw, "instance-id/raw", b"node-3");
    put(&fw, "hostname/raw", b"node-3.lab\n");
    let facts = metadata::identify(None, &hermetic(dir.path(), None))
        .await
        .expect("identifies");
    assert_eq!(facts.instance_id, "node-3");
    assert_eq!(facts.hostname.as_deref(), Some("node-3.lab"));
    assert_eq!(facts.zone.as_deref(), Some("lab-b"));
    assert_eq!(facts.user_data, None);
}

#[tokio::test]
async fn qemu_smbios_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    put(
        dir.path(),
        "dmi/product_serial",
        b"ds=nocloud;h=vm-7;ip=10.0.2.15\n",
    );
    put(
        dir.path(),
        "dmi/product_uuid",
        b"9f3c1c4e-5b7a-4d2e-8f10-2a3b4c5d6e7f\n",
    );
    let opts = hermetic(dir.path(), None);
    assert_eq!(
        metadata::detect(&opts).await.expect("detects"),
        ProviderKind::Qemu
    );
    let facts = metadata::identify(None, &opts).await.expect("identifies");
    assert_eq!(facts.instance_id, "9f3c1c4e-5b7a-4d2e-8f10-2a3b4c5d6e7f");
    assert_eq!(facts.hostname.as_deref(), Some("vm-7"));
}

#[tokio::test]
async fn qemu_without_fw_cfg_or_seed_says_what_it_looked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = metadata::identify(Some(ProviderKind::Qemu), &hermetic(dir.path(), None))
        .await
        .expect_err("nothing");
    assert!(e.to_string().contains("qemu_fw_cfg driver"), "{e}");
}

#[tokio::test]
async fn file_provider_with_user_data_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = hermetic(dir.path(), None);
    opts.metadata_file = Some(fixture("file/facts.yaml"));
    let facts = metadata::identify(None, &opts).await.expect("identifies");
    assert_golden("file/expected.json", &facts);
}

#[tokio::test]
async fn file_provider_json_and_errors_with_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    put(
        dir.path(),
        "facts.json",
        br#"{"provider":"gce","instance_id":"42","zone":"z"}"#,
    );
    let mut opts = hermetic(dir.path(), None);
    opts.metadata_file = Some(dir.path().join("facts.json"));
    let facts = metadata::identify(Some(ProviderKind::File), &opts)
        .await
        .expect("identifies");
    assert_eq!(
        (facts.provider, facts.instance_id.as_str()),
        (ProviderKind::Gce, "42")
    );

    put(
        dir.path(),
        "bad.yaml",
        b"instance_id: a\nprivate_ipv4: 300.1.1.1\n",
    );
    opts.metadata_file = Some(dir.path().join("bad.yaml"));
    let e = metadata::identify(Some(ProviderKind::File), &opts)
        .await
        .expect_err("bad ip");
    let want = format!(
        "file metadata in {}: private_ipv4: \"300.1.1.1\" is not an IPv4 address",
        dir.path().join("bad.yaml").display()
    );
    assert_eq!(e.to_string(), want);

    opts.metadata_file = Some(dir.path().join("missing.yaml"));
    let e = metadata::identify(Some(ProviderKind::File), &opts)
        .await
        .expect_err("missing");
    assert!(matches!(e, MetadataError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.yaml"), "{e}");
}

#[tokio::test]
async fn metal_reads_config_from_a_path_and_the_machine_from_host_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    put(
        dir.path(),
        "boot/cluster.yaml",
        b"muster:\n  cluster: metal\n",
    );
    put(dir.path(), "root/etc/hostname", b"edge-1\n");
    put(
        dir.path(),
        "dmi/product_uuid",
        b"4C4C4544-0051-3010-8058-B3C04F4A4E32\n",
    );
    let mut opts = hermetic(dir.path(), None);
    opts.cmdline = KernelCmdline::parse(&format!(
        "BOOT_IMAGE=/vmlinuz muster.config={} muster.zone=rack-2",
        dir.path().join("boot/cluster.yaml").display()
    ));
    let facts = metadata::identify(None, &opts).await.expect("identifies");
    assert_eq!(facts.provider, ProviderKind::Metal);
    assert_eq!(
        facts.instance_id, "4C4C4544-0051-3010-8058-B3C04F4A4E32",
        "SMBIOS UUID first"
    );
    assert_eq!(facts.hostname.as_deref(), Some("edge-1"));
    assert_eq!(facts.zone.as_deref(), Some("rack-2"));
    assert_eq!(
        facts.user_data.as_deref(),
        Some("muster:\n  cluster: metal\n")
    );
}

#[tokio::test]
async fn metal_without_any_identity_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = hermetic(dir.path(), None);
    let e = metadata::identify(Some(ProviderKind::Metal), &opts)
        .await
        .expect_err("no id");
    assert!(e.to_string().contains("muster.instance-id="), "{e}");
}
