//! The node image boots (UEFI: OVMF, systemd-boot, UKI) with /usr read-only
//! behind dm-verity, and a byte changed in /usr stops the boot.
//!
//! One VM on a lab bridge; its metadata comes from the lab's fake cloud in
//! the AWS IMDSv2 shape at 169.254.169.254. Everything is read from the
//! serial console, as an operator would on a cloud console.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;
use std::time::Instant;

use crate::support::{TestLab, budget, image, pxe_set, run, tail};

#[test]
fn the_image_boots_a_verity_usr_and_the_agent_reads_its_metadata_and_plans() {
    let t = TestLab::new("boot");
    let lab = t.up(1, 0, &image());
    // `up` returns right after QEMU has daemonized: count from here.
    let started = Instant::now();
    let instance = lab.nodes[0].instance_id.clone();
    let limit = budget(420);

    t.wait_serial(1, "muster[", limit);
    let boot_secs = started.elapsed().as_secs_f64();
    t.wait_serial(1, "identified this machine", limit);
    t.wait_serial(1, "plan:", limit);
    // systemd reached its default target (multi-user) with no failed unit;
    // the agent says so, as systemd's own status lines stop once the agent
    // logs to the console.
    t.wait_serial(1, "systemd: boot finished", limit);
    let console = t.serial(1);
    let finished = console
        .lines()
        .find(|l| l.contains("systemd: boot finished"))
        .expect("boot finished line");
    assert!(finished.contains("running"), "{finished}");

    // The kernel was told which /usr to trust, and systemd opened it through dm-verity.
    assert!(console.contains("usrhash="), "{}", tail(&console, 30));
    assert!(
        console.contains("Integrity Protection Setup for usr"),
        "no veritysetup for /usr on the console"
    );
    // The agent's own view of the running image (from /proc/self/mountinfo
    // and the device-mapper UUID): read-only erofs behind dm-verity.
    console_line_with(
        &console,
        "INFO image muster",
        &[
            "/usr read-only",
            "erofs on /dev/mapper/usr",
            "dm-verity",
            // The image carries the Kubernetes test binaries (ci/test.sh).
            "kubernetes v1.28.7",
        ],
    );
    // It read its metadata from the (fake) AWS IMDSv2 and its user data.
    console_line_with(
        &console,
        "identified this machine",
        &["provider=aws", &instance],
    );
    assert!(
        console.contains("cluster config is valid"),
        "{}",
        tail(&console, 30)
    );
    // The first-boot root partition and the factory /etc worked.
    assert!(
        console.contains("Finished muster-etc.service"),
        "muster-etc did not run"
    );
    assert!(
        !console.contains("FAILED"),
        "a unit failed:\n{}",
        failed_lines(&console)
    );

    println!(
        "figures: QEMU start -> first agent log line {boot_secs:.1} s (accel {})",
        lab.accel
    );

    // The boot budget (issue 17): once the boot has finished, the image
    // reports its systemd-analyze time and the ten slowest units.
    t.wait_serial(1, "muster-boot-report: Startup finished in", limit);
    let report = |console: &str| -> Vec<String> {
        console
            .lines()
            .filter_map(|l| {
                l.split_once("muster-boot-report: ")
                    .map(|(_, r)| r.to_string())
            })
            .collect()
    };
    let started = Instant::now();
    while report(&t.serial(1)).len() < 11 && started.elapsed() < budget(30) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let report = report(&t.serial(1));
    let blame: Vec<&String> = report.iter().filter(|l| l.starts_with("blame ")).collect();
    assert!(
        blame.len() == 10 && blame.iter().all(|l| is_blame_line(l)),
        "the boot report lists the ten slowest units:\n{}",
        report.join("\n")
    );
    for line in &report {
        println!("figures: boot report: {line}");
    }
}

#[test]
fn a_flipped_byte_in_usr_stops_the_boot_at_dm_verity() {
    let t = TestLab::new("tamper");
    let tampered = t.root.path().join("tampered.qcow2");
    flip_usr_byte(&image(), &tampered, t.root.path());
    // The image gives devices 180 s (mkosi.conf) for slow clouds; waiting
    // that out is three minutes of nothing, so this VM gets 30 s through
    // the stub's SMBIOS command line (`muster lab up --kernel-arg`),
    // which also checks that systemd-stub honours it.
    t.up_with_kernel_args(1, &tampered, &["systemd.default_device_timeout_sec=30"]);
    let limit = budget(600);

    // dm-verity refuses the block; udev cannot read the device, /usr is
    // never mounted, and after the device timeout the initrd gives up.
    t.wait_serial(1, "device-mapper: verity:", limit);
    t.wait_serial(1, "data block 0 is corrupted", limit);
    t.wait_serial(1, "Reached target emergency.target", limit);
    let console = t.serial(1);
    assert!(
        console.contains("systemd.default_device_timeout_sec=30"),
        "the kernel command line lacks the lab's extra argument:\n{}",
        tail(&console, 40)
    );
    let console = t.serial(1);
    assert!(
        !console.contains("muster["),
        "the agent ran on a tampered /usr:\n{}",
        tail(&console, 40)
    );
}

#[test]
fn the_pxe_set_boots_a_diskless_vm_that_forms_its_cluster() {
    let t = TestLab::new("pxe");
    // A real network boot: SeaBIOS runs the NIC's iPXE ROM, which gets an
    // HTTP boot URL from dnsmasq and fetches the iPXE script, the kernel,
    // the initrd and the root image from the lab (not QEMU's -kernel).
    let lab = t.up_pxe(1, &pxe_set());
    let started = Instant::now();
    // Assembled includes the Kubernetes control plane and a Ready node.
    let limit = budget(900);

    t.wait_serial(1, "Linux version", limit);
    t.wait_serial(1, "identified this machine", limit);
    let booted = started.elapsed();
    let took = t.wait_assembled(limit);
    let console = t.serial(1);
    // iPXE itself prints to the VGA screen, not the serial port: the lab's
    // HTTP log shows it fetched the set, the kernel line shows what it booted.
    let served = std::fs::read_to_string(t.root.path().join(&t.lab.name).join("cloud.log"))
        .expect("lab cloud log");
    for file in [
        "boot.ipxe",
        "muster.ipxe",
        "vmlinuz",
        "initrd",
        "muster-usr.cpio",
        "config.yaml",
    ] {
        assert!(
            served
                .lines()
                .any(|l| l.contains("pxe: served") && l.contains(&format!("file={file}"))),
            "the PXE VM never fetched {file}:\n{served}"
        );
    }
    let cmdline = console
        .lines()
        .find(|l| l.contains("Command line:"))
        .expect("kernel command line");
    for want in [
        "root=tmpfs",
        "muster.platform=metal",
        "muster.config=http://",
        "usrhash=",
    ] {
        assert!(cmdline.contains(want), "{want:?} missing in: {cmdline}");
    }
    console_line_with(
        &console,
        "INFO image muster",
        &["/usr read-only", "on /dev/mapper/usr", "dm-verity"],
    );
    console_line_with(
        &console,
        "identified this machine",
        &["provider=metal", &lab.node_ip(1).to_string()],
    );
    println!(
        "figures: PXE power-on -> agent identified {:.0} s, -> etcd, VIP, API and a Ready node {:.0} s more (accel {})",
        booted.as_secs_f64(),
        took.as_secs_f64(),
        lab.accel
    );
}

/// Copies `src` to `dst` with one byte of the /usr partition inverted: in
/// the erofs superblock, which every mount reads, so the check cannot miss it.
fn flip_usr_byte(src: &std::path::Path, dst: &std::path::Path, work: &std::path::Path) {
    let raw = work.join("tamper.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(src)
        .arg(&raw));
    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(&raw)))
            .expect("sfdisk json");
    let usr = table["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("usr-") && !n.ends_with("-verity"))
        })
        .expect("a usr partition");
    let start = usr["start"].as_u64().expect("start sector");
    let offset = start * 512 + 1024;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&raw)
        .expect("open raw");
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&byte).expect("write");
    drop(file);
    run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&raw)
        .arg(dst));
    std::fs::remove_file(&raw).expect("remove raw");
}

/// `blame 12.345s systemd-udev-settle.service` (or `blame 1min 2.345s
/// …`): a duration in one or more parts, then a unit.
fn is_blame_line(line: &str) -> bool {
    const UNIT_TYPES: [&str; 8] = [
        "service", "mount", "socket", "swap", "timer", "path", "slice", "scope",
    ];
    let words: Vec<&str> = line.split_whitespace().collect();
    match &words[..] {
        ["blame", duration @ .., unit] if !duration.is_empty() => {
            duration
                .iter()
                .all(|d| d.starts_with(|c: char| c.is_ascii_digit()))
                && unit
                    .rsplit_once('.')
                    .is_some_and(|(_, kind)| UNIT_TYPES.contains(&kind))
        }
        _ => false,
    }
}

#[test]
fn blame_lines_are_told_apart_from_other_output() {
    assert!(is_blame_line("blame 12.345s systemd-udev-settle.service"));
    assert!(is_blame_line("blame 1min 2.345s containerd.service"));
    assert!(is_blame_line("blame 88ms tmp.mount"));
    assert!(!is_blame_line("blame 88ms dev-vda.device"));
    assert!(!is_blame_line("blame Bootup is not yet finished"));
    assert!(!is_blame_line("blame 3s"));
    assert!(!is_blame_line("Startup finished in 3s = 3s"));
}

fn failed_lines(console: &str) -> String {
    console
        .lines()
        .filter(|l| l.contains("FAILED"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first console line containing `marker`; fails unless it also
/// contains every one of `wants`.
fn console_line_with<'c>(console: &'c str, marker: &str, wants: &[&str]) -> &'c str {
    let line = console
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line:\n{}", tail(console, 30)));
    for want in wants {
        assert!(line.contains(want), "{want:?} missing in: {line}");
    }
    line
}
