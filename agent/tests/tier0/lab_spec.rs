//! The lab's user data is a valid cluster config for every way a lab can
//! run, and the timers it gives TCG VMs pass the VIP safety rule.

use muster::config::validate_text;
use muster::lab::spec::{Accel, BootMode, LabState, user_data};
use muster::vip::election::Timing;

fn lab(accel: Accel, boot: BootMode) -> LabState {
    let mut lab = LabState {
        name: "demo".into(),
        subnet: 3,
        image: "/tmp/image.qcow2".into(),
        accel,
        memory_mb: 1024,
        cpus: 1,
        control_plane: 3,
        workers: 1,
        secret: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==".into(),
        created_at: 1_700_000_000,
        boot,
        kernel_args: Vec::new(),
        nodes: Vec::new(),
    };
    for i in 0..4 {
        lab.add_node(i).expect("room for 4 nodes");
    }
    lab
}

#[test]
fn every_lab_user_data_is_a_valid_config() {
    for accel in [Accel::Kvm, Accel::Tcg] {
        for boot in [BootMode::Disk, BootMode::Pxe] {
            let text = user_data(&lab(accel, boot));
            let config = validate_text("lab user data", &text)
                .unwrap_or_else(|e| panic!("{accel} {boot:?}:\n{e}\n---\n{text}"));
            assert_eq!(config.cluster.name, "demo");
            assert_eq!(config.topology.control_plane.count, 3);
            assert_eq!(
                config.api_endpoint.vip,
                Some("10.77.3.100".parse().expect("ip"))
            );
            let timing = Timing::from_settings(&config.api_endpoint.timing);
            timing.check().expect("the lab's timers are safe");
            let (heartbeat, election) = config.topology.etcd.timing.millis();
            match accel {
                Accel::Kvm => {
                    assert_eq!(timing, Timing::default(), "KVM keeps the defaults");
                    assert_eq!((heartbeat, election), (100, 1000));
                    assert_eq!(config.api_endpoint.shed_etcd_leadership, None);
                    assert!(config.kubernetes.leader_election.is_unset());
                }
                Accel::Tcg => {
                    assert_eq!(timing.hold_for.as_millis(), 8000, "{text}");
                    assert_eq!(timing.takeover_after.as_millis(), 11000);
                    assert_eq!((heartbeat, election), (250, 2500));
                    // Leadership moves stall a TCG etcd for seconds.
                    assert_eq!(config.api_endpoint.shed_etcd_leadership, Some(false));
                    let le = config.kubernetes.leader_election.resolved();
                    assert_eq!(le.renew_deadline.0.as_secs(), 20);
                }
            }
        }
    }
}

#[test]
fn disk_boots_read_peers_from_the_group_and_pxe_boots_from_a_list() {
    let disk = user_data(&lab(Accel::Tcg, BootMode::Disk));
    assert!(disk.starts_with("#cloud-config\n"), "{disk}");
    assert!(disk.contains("cloudGroup"));
    let pxe = user_data(&lab(Accel::Tcg, BootMode::Pxe));
    assert!(!pxe.contains("cloud-config"));
    for n in 11..=14 {
        assert!(pxe.contains(&format!("- 10.77.3.{n}\n")), "{pxe}");
    }
}

#[test]
fn kernel_args_reach_a_disk_booted_vm_as_the_stub_smbios_string() {
    use muster::lab::vm::qemu_args;
    let paths = muster::lab::spec::LabPaths::new(std::path::Path::new("/tmp/labs"), "demo");
    let smbios = |lab: &LabState| -> Vec<String> {
        let args = qemu_args(lab, &paths, 0);
        args.windows(2)
            .filter(|w| w[0] == "-smbios")
            .map(|w| w[1].clone())
            .collect()
    };
    let mut disk = lab(Accel::Tcg, BootMode::Disk);
    assert!(smbios(&disk).is_empty(), "no arguments, no SMBIOS string");
    disk.kernel_args = vec![
        "systemd.default_device_timeout_sec=20".into(),
        "quiet,odd".into(),
    ];
    assert_eq!(
        smbios(&disk),
        vec![
            "type=11,value=io.systemd.stub.kernel-cmdline-extra=\
             systemd.default_device_timeout_sec=20 quiet,,odd"
                .to_string()
        ],
        "one string, space-separated, commas doubled for QEMU"
    );
    // PXE boots have no systemd-stub (iPXE loads the kernel itself).
    let mut pxe = lab(Accel::Tcg, BootMode::Pxe);
    pxe.kernel_args = disk.kernel_args.clone();
    assert!(smbios(&pxe).is_empty());
}
