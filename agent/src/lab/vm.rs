//! The VMs: which accelerator to use and the exact QEMU command line.
//! Pure functions; `ops` starts and stops the processes.

use std::path::{Path, PathBuf};

use super::spec::{Accel, BootMode, LabPaths, LabState, node_name, tap_name};

/// UEFI firmware (Debian's `ovmf`): read-only code, per-VM variables.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Each node's disk: a qcow2 layered on the lab's image, this large, so
/// the first-boot repartitioning has room for the root partition.
pub const DISK_SIZE: &str = "6G";

/// KVM only when the CPU really offers hardware virtualisation: some hosts
/// expose a paravirtual /dev/kvm (kvm_pvm) without `vmx`/`svm`, on which a
/// stock kernel does not boot at usable speed (see docs/design.md, tier 2).
pub fn choose_accel(cpuinfo: &str, dev_kvm_exists: bool) -> Accel {
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if hw && dev_kvm_exists {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// Reads /proc/cpuinfo and /dev/kvm to choose.
pub fn detect_accel() -> Accel {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    choose_accel(&cpuinfo, Path::new("/dev/kvm").exists())
}

/// The arguments after `qemu-system-x86_64` for node `index`. QEMU
/// daemonizes, writes its pid file and sends the serial console to a file.
pub fn qemu_args(lab: &LabState, paths: &LabPaths, index: u32) -> Vec<String> {
    let s = |p: PathBuf| p.display().to_string();
    // Disk boot: UEFI (OVMF) from the node's qcow2. PXE: the default BIOS
    // (SeaBIOS) runs the NIC's iPXE ROM, and there is no disk at all.
    let boot: Vec<String> = match lab.boot {
        BootMode::Disk => vec![
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", s(paths.efi_vars(index))),
            "-drive".into(),
            format!("if=virtio,format=qcow2,file={}", s(paths.disk(index))),
        ],
        BootMode::Pxe => vec!["-boot".into(), "n".into()],
    };
    let kernel_args: Vec<String> = match lab.boot {
        BootMode::Disk if !lab.kernel_args.is_empty() => vec![
            "-smbios".into(),
            // QEMU's option syntax: a comma inside a value is doubled.
            format!(
                "type=11,value=io.systemd.stub.kernel-cmdline-extra={}",
                lab.kernel_args.join(" ").replace(',', ",,")
            ),
        ],
        _ => Vec::new(),
    };
    let accel = match lab.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg,thread=multi",
    };
    let cpu = match lab.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    };
    vec![
        "-name".into(),
        format!(
            "{},process=muster-lab-{}-{}",
            node_name(index),
            lab.name,
            node_name(index)
        ),
        "-machine".into(),
        "q35".into(),
        "-accel".into(),
        accel.into(),
        "-cpu".into(),
        cpu.into(),
        "-smp".into(),
        lab.cpus.to_string(),
        "-m".into(),
        lab.memory_mb.to_string(),
        "-uuid".into(),
        lab.node_uuid(index),
    ]
    .into_iter()
    .chain(boot)
    .chain(kernel_args)
    .chain([
        "-netdev".into(),
        format!(
            "tap,id=net0,ifname={},script=no,downscript=no",
            tap_name(index)
        ),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={}", lab.node_mac(index)),
        "-device".into(),
        "virtio-rng-pci".into(),
        // Appended, not truncated: a power cycle keeps the earlier boots.
        "-chardev".into(),
        format!(
            "file,id=console,append=on,path={}",
            s(paths.serial_log(index))
        ),
        "-serial".into(),
        "chardev:console".into(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-daemonize".into(),
        "-pidfile".into(),
        s(paths.qemu_pid(index)),
    ])
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_needs_both_the_cpu_flag_and_the_device() {
        let intel = "processor : 0\nflags : fpu vme vmx sse\n";
        let pvm = "processor : 0\nflags : fpu vme sse hypervisor\n";
        assert_eq!(choose_accel(intel, true), Accel::Kvm);
        assert_eq!(choose_accel(intel, false), Accel::Tcg);
        assert_eq!(choose_accel(pvm, true), Accel::Tcg);
        assert_eq!(choose_accel("flags : svm\n", true), Accel::Kvm);
        // A flag must match whole, not as a substring.
        assert_eq!(choose_accel("flags : vmxfoo\n", true), Accel::Tcg);
    }
}
