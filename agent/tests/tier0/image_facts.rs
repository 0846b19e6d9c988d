//! Image facts: the parsers on recorded (and format-faithful composed)
//! text from `tests/fixtures/image/`, and `image::read` over a fake
//! filesystem tree. The summary line is what a tier-2 test greps on the
//! serial console: `dm-verity` only with verity, `/usr read-only` only when
//! read-only.

use std::path::{Path, PathBuf};

use muster::image::{self, ImageError, ImageFacts, ImagePaths, UsrFacts};

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/image")
        .join(name)
}

fn fixture(name: &str) -> String {
    let path = fixture_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn on_the_image_usr_is_the_read_only_erofs_on_dev_mapper_usr_topmost_first() {
    let m = image::usr_mount(&fixture("mountinfo-image.txt")).expect("a /usr mount");
    assert_eq!(m.mount_point, "/usr");
    assert_eq!(m.source, "/dev/mapper/usr");
    assert_eq!(m.fstype, "erofs");
    assert!(m.read_only);
    assert_eq!((m.major, m.minor), (253, 0));
    // Two mounts are stacked on /usr; the later line is the visible one.
    let last = fixture("mountinfo-image.txt")
        .lines()
        .rfind(|l| l.contains(" /usr "))
        .and_then(image::parse_mountinfo_line)
        .expect("stacked /usr");
    assert_eq!(m, last);
}

#[test]
fn off_the_image_usr_lives_on_the_root_filesystem() {
    let m = image::usr_mount(&fixture("mountinfo-dev-host.txt")).expect("the / mount");
    assert_eq!(m.mount_point, "/");
    assert_eq!(m.fstype, "ext4");
    assert_eq!(m.source, "/dev/vda");
    assert!(!m.read_only);
}

#[test]
fn mountinfo_lines_unescape_and_skip_what_they_cannot_read() {
    let m = image::parse_mountinfo_line(
        "313 305 0:41 / /run/media/usb\\040stick rw,relatime - vfat /dev/sdb1 rw",
    )
    .expect("line");
    assert_eq!(m.mount_point, "/run/media/usb stick");
    // Read-only in the superblock options alone still counts.
    let m = image::parse_mountinfo_line("1 0 8:1 / /usr rw - ext4 /dev/sda1 ro,errors=remount-ro")
        .expect("line");
    assert!(m.read_only);
    for bad in [
        "",
        "garbage",
        "1 0 x:y / /usr rw - ext4 /dev/sda1 rw",
        "1 0 8:1 / /usr rw",
    ] {
        assert_eq!(image::parse_mountinfo_line(bad), None, "{bad:?}");
    }
    assert_eq!(image::usr_mount("not mountinfo\n"), None);
}

#[test]
fn only_cryptsetup_verity_uuids_are_verity() {
    assert!(image::is_verity_uuid(&fixture("dm-uuid-verity.txt")));
    assert!(!image::is_verity_uuid(&fixture("dm-uuid-luks2.txt")));
    assert!(!image::is_verity_uuid(&fixture("dm-uuid-lvm.txt")));
    assert!(!image::is_verity_uuid(""));
}

#[test]
fn usrhash_comes_from_the_kernel_command_line() {
    assert_eq!(
        image::usrhash(&fixture("cmdline-image.txt")).as_deref(),
        Some("5ec5e6e4965538d8ae9fa1787ddfcf213b530ca99c358ff75a5fe9e5ca8cecb5")
    );
    assert_eq!(image::usrhash("ro quiet root=/dev/sda1"), None);
    assert_eq!(image::usrhash("usrhash= quiet"), None);
    assert_eq!(
        image::usrhash("usrhash=aa quiet usrhash=bb").as_deref(),
        Some("bb")
    );
}

#[test]
fn os_release_names_the_image_when_it_is_one() {
    let img = image::parse_os_release(&fixture("os-release-image.txt"));
    assert_eq!(img.image_id.as_deref(), Some("muster"));
    assert_eq!(img.image_version.as_deref(), Some("1.2.3"));
    assert_eq!(
        img.pretty_name.as_deref(),
        Some("Debian GNU/Linux 13 (trixie)")
    );
    let dev = image::parse_os_release(&fixture("os-release-debian.txt"));
    assert_eq!(dev.image_id, None);
    assert_eq!(dev.image_version, None);
    assert_eq!(
        dev.pretty_name.as_deref(),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
}

#[test]
fn the_kubernetes_manifest_says_which_kubernetes_or_none() {
    let none = image::parse_kubernetes_manifest(&fixture("kubernetes-none.json")).expect("none");
    assert_eq!(none.version, None);
    assert!(none.binaries.is_empty());
    let some =
        image::parse_kubernetes_manifest(&fixture("kubernetes-v1.33.2.json")).expect("v1.33.2");
    assert_eq!(some.version.as_deref(), Some("v1.33.2"));
    assert_eq!(some.binaries, ["kubeadm", "kubectl", "kubelet"]);
    assert!(image::parse_kubernetes_manifest("{\"version\": 1}").is_err());
}

/// A root with the image's files at their usual paths below it.
fn fake_image(root: &Path, kubernetes: &str, dm_uuid: Option<&str>) -> ImagePaths {
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    };
    if let Some(uuid) = dm_uuid {
        write("sys/dev/block/253:0/dm/uuid", &fixture(uuid));
        write("sys/dev/block/253:0/dm/name", &fixture("dm-name-usr.txt"));
    }
    ImagePaths {
        mountinfo: write("proc/self/mountinfo", &fixture("mountinfo-image.txt")),
        sys_dev_block: root.join("sys/dev/block"),
        cmdline: write("proc/cmdline", &fixture("cmdline-image.txt")),
        os_release: write("usr/lib/os-release", &fixture("os-release-image.txt")),
        kubernetes_json: write("usr/lib/muster/kubernetes.json", &fixture(kubernetes)),
    }
}

#[test]
fn the_image_reads_as_verity_protected_read_only_erofs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let paths = fake_image(
        tmp.path(),
        "kubernetes-none.json",
        Some("dm-uuid-verity.txt"),
    );
    let report = image::read(&paths);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let facts = report.facts;
    assert_eq!(
        facts,
        ImageFacts {
            id: Some("muster".into()),
            version: Some("1.2.3".into()),
            os: Some("Debian GNU/Linux 13 (trixie)".into()),
            usr: UsrFacts {
                mount_point: Some("/usr".into()),
                source: Some("/dev/mapper/usr".into()),
                fstype: Some("erofs".into()),
                read_only: true,
                device: Some("253:0".into()),
                verity: true,
                dm_name: Some("usr".into()),
                usrhash: Some(
                    "5ec5e6e4965538d8ae9fa1787ddfcf213b530ca99c358ff75a5fe9e5ca8cecb5".into()
                ),
            },
            kubernetes_version: None,
            kubernetes_binaries: vec![],
        }
    );
    assert_eq!(
        facts.summary(),
        "image muster 1.2.3: /usr read-only erofs on /dev/mapper/usr (dm-verity, usrhash=5ec5e6e4…), kubernetes none"
    );
}

#[test]
fn a_dm_device_that_is_not_verity_is_reported_as_such() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let paths = fake_image(
        tmp.path(),
        "kubernetes-v1.33.2.json",
        Some("dm-uuid-luks2.txt"),
    );
    let facts = image::read(&paths).facts;
    assert!(!facts.usr.verity);
    assert_eq!(facts.usr.dm_name.as_deref(), Some("usr"));
    assert_eq!(facts.kubernetes_version.as_deref(), Some("v1.33.2"));
    let line = facts.summary();
    assert!(!line.contains("dm-verity"), "{line}");
    assert!(
        line.ends_with("(not verity-protected), kubernetes v1.33.2"),
        "{line}"
    );
}

#[test]
fn a_machine_without_the_image_files_reports_what_is_there() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = |p: &str| tmp.path().join(p);
    let mountinfo = missing("mountinfo");
    std::fs::write(&mountinfo, fixture("mountinfo-dev-host.txt")).expect("write");
    let paths = ImagePaths {
        mountinfo,
        sys_dev_block: missing("sys/dev/block"),
        cmdline: missing("cmdline"),
        os_release: missing("os-release"),
        kubernetes_json: missing("kubernetes.json"),
    };
    let report = image::read(&paths);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let facts = report.facts;
    assert!(!facts.usr.verity);
    assert_eq!(facts.usr.mount_point.as_deref(), Some("/"));
    let line = facts.summary();
    assert_eq!(
        line,
        "image unknown (no IMAGE_ID in os-release): /usr read-write ext4 on /dev/vda (mounted at /) (not verity-protected), kubernetes none"
    );
    assert!(!line.contains("dm-verity") && !line.contains("/usr read-only"));

    // Nothing at all: still a line, no panic, no error.
    let nothing = ImagePaths {
        mountinfo: missing("none/mountinfo"),
        ..paths
    };
    let report = image::read(&nothing);
    assert!(report.problems.is_empty());
    assert_eq!(
        report.facts.summary(),
        "image unknown (no IMAGE_ID in os-release): /usr mount unknown (no mountinfo), kubernetes none"
    );
}

#[test]
fn a_broken_manifest_is_a_problem_naming_its_file_not_a_failure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let paths = fake_image(
        tmp.path(),
        "kubernetes-none.json",
        Some("dm-uuid-verity.txt"),
    );
    std::fs::write(&paths.kubernetes_json, "{\"version\": \"v1.33.2\"").expect("write");
    let report = image::read(&paths);
    assert_eq!(report.problems.len(), 1);
    assert!(matches!(
        &report.problems[0],
        ImageError::KubernetesManifest { path, .. } if *path == paths.kubernetes_json
    ));
    assert!(
        report.problems[0]
            .to_string()
            .contains("usr/lib/muster/kubernetes.json")
    );
    assert!(report.facts.usr.verity, "the other facts are still there");
}

#[test]
fn facts_round_trip_through_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let paths = fake_image(
        tmp.path(),
        "kubernetes-v1.33.2.json",
        Some("dm-uuid-verity.txt"),
    );
    let facts = image::read(&paths).facts;
    let json = serde_json::to_value(&facts).expect("json");
    assert_eq!(json["usr"]["verity"], true);
    assert_eq!(json["usr"]["read_only"], true);
    assert_eq!(json["kubernetes_version"], "v1.33.2");
    let back: ImageFacts = serde_json::from_value(json).expect("back");
    assert_eq!(back, facts);
}
