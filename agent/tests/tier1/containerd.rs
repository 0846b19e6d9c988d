//! Tier 1: the node's container images reach a real containerd 1.7 (Debian
//! 13's, the image's) through its gRPC API, with nothing pulled: the
//! sandbox image built from `image/images/pause.c` is imported into the
//! CRI namespace, pinned, survives containerd's garbage collector, and
//! runs. containerd starts with the config the agent renders.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use muster::containerd::{self, Containerd, config};
use muster::kubernetes::kubelet::CgroupDriver;

use crate::support::netns::{Net, wait_until};

fn containerd_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("MUSTER_CONTAINERD").unwrap_or_else(|_| "/opt/muster-test/containerd".into()),
    );
    assert!(
        dir.join("usr/bin/containerd").is_file(),
        "containerd not found under {} (set MUSTER_CONTAINERD): run `bash ci/install-deps.sh`",
        dir.display()
    );
    dir
}

/// The shipped images as `image/images/build.sh` makes them (pause only:
/// the busybox one comes from the Debian mirror).
fn build_images(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/images/build.sh");
    let run = Command::new("bash")
        .arg(&script)
        .arg(out)
        .output()
        .expect("run image/images/build.sh");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The garbage collector runs after every change to containerd's metadata,
/// at once, from its start. By default it runs 100 ms after containerd
/// starts and then after 100 changes, which is the window CI once hit: a
/// collection between two blob writes took the layer nobody referred to
/// yet ("apply layer …: content digest … not found"). Eager, it takes every
/// unreferenced blob, so an import that does not hold a lease fails every
/// time.
const EAGER_GC: &str = r#"[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.5
  deletion_threshold = 0
  mutation_threshold = 1
  schedule_delay = "0s"
  startup_delay = "0s""#;

#[test]
fn the_shipped_sandbox_image_is_imported_pinned_and_runs_without_a_registry() {
    let bin = containerd_dir();
    let net = Net::new("ctrd");
    let host = net.add_host("node");
    let dir = host.dir().to_path_buf();
    let images = dir.join("images");
    build_images(&images);

    // containerd with the agent's config, its own root, state and socket.
    let socket = dir.join("containerd.sock");
    let rendered = config::render(
        CgroupDriver::Cgroupfs,
        "/usr/lib/cni",
        &dir.join("net.d").display().to_string(),
    );
    let config_file = dir.join("config.toml");
    std::fs::write(
        &config_file,
        format!(
            "root = \"{}\"\nstate = \"{}\"\n{rendered}\n{EAGER_GC}\n[grpc]\n  address = \"{}\"\n",
            dir.join("root").display(),
            dir.join("state").display(),
            socket.display()
        ),
    )
    .expect("config");
    let path = format!(
        "{}:{}:{}",
        bin.join("usr/bin").display(),
        bin.join("usr/sbin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = host.command(bin.join("usr/bin/containerd"));
    cmd.arg("--config").arg(&config_file).env("PATH", &path);
    let _containerd = host.spawn_command(cmd, "containerd.log");
    wait_until(
        "containerd's socket",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || socket.exists(),
    )
    .expect("containerd starts");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let imported = rt.block_on(async {
        let c = Containerd::connect(&socket).await.expect("connect");
        let first = containerd::import_shipped(&c, &images)
            .await
            .expect("import");
        // Idempotent: nothing to do the second time.
        let again = containerd::import_shipped(&c, &images)
            .await
            .expect("import again");
        assert!(again.is_empty(), "imported twice: {again:?}");
        assert!(
            c.has_image(config::CRI_NAMESPACE, config::SANDBOX_IMAGE)
                .await
                .expect("get image")
        );
        first
    });
    assert_eq!(imported, vec![config::SANDBOX_IMAGE.to_string()]);

    let ctr = |args: &[&str]| {
        let out = host
            .command(bin.join("usr/bin/ctr"))
            .env("PATH", &path)
            .arg("--address")
            .arg(&socket)
            .arg("--namespace")
            .arg(config::CRI_NAMESPACE)
            .args(args)
            .output()
            .expect("run ctr");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, listed) = ctr(&["images", "ls"]);
    assert!(ok, "{listed}");
    let line = listed
        .lines()
        .find(|l| l.starts_with(config::SANDBOX_IMAGE))
        .unwrap_or_else(|| panic!("no sandbox image in:\n{listed}"));
    assert!(line.contains("io.cri-containerd.pinned=pinned"), "{line}");

    // The garbage collector keeps every blob (the manifest's labels name
    // its children), so the image still checks complete afterwards. A
    // synchronous image removal runs a collection.
    let (ok, tag) = ctr(&[
        "images",
        "tag",
        config::SANDBOX_IMAGE,
        "example.org/throwaway:1",
    ]);
    assert!(ok, "{tag}");
    let (ok, gc) = ctr(&["images", "rm", "--sync", "example.org/throwaway:1"]);
    assert!(ok, "{gc}");
    let (ok, check) = ctr(&["images", "check"]);
    assert!(ok, "{check}");
    let check_line = check
        .lines()
        .find(|l| l.starts_with(config::SANDBOX_IMAGE))
        .unwrap_or_else(|| panic!("{check}"));
    assert!(check_line.contains("complete"), "{check_line}");

    // The agent unpacked it at import (synced, so a power cut cannot leave
    // its files empty: containerd/unpack.rs), and the collection above
    // kept the snapshot: the config's GC label names it.
    let (ok, snaps) = ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]);
    assert!(ok, "{snaps}");
    assert!(
        snaps
            .lines()
            .any(|l| l.starts_with("sha256:") && l.contains("Committed")),
        "no committed snapshot named by its chain ID:\n{snaps}"
    );
    let snapshot_dirs = dir.join("root/io.containerd.snapshotter.v1.overlayfs/snapshots");
    let pause_sizes: Vec<u64> = std::fs::read_dir(&snapshot_dirs)
        .expect("snapshot dirs")
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path().join("fs/pause")).ok())
        .map(|m| m.len())
        .collect();
    assert!(
        pause_sizes.len() == 1 && pause_sizes[0] > 0,
        "the unpacked /pause: {pause_sizes:?}"
    );

    // And it runs from that snapshot: the static pause answers.
    let (ok, out) = ctr(&[
        "run",
        "--rm",
        config::SANDBOX_IMAGE,
        "pause-check",
        "/pause",
        "-v",
    ]);
    assert!(
        ok,
        "{out}\n--- containerd.log:\n{}",
        std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
    );
    assert!(out.contains("muster-pause 3.9"), "{out}");
}
