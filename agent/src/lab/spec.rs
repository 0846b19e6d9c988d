//! What a lab is, as data: its network, its nodes and the cluster config its
//! VMs get as user data. Everything here is pure; `ops` does the I/O.
//!
//! One lab = one directory holding `lab.json` (this [`LabState`]),
//! `cloud.json` (the fake cloud's view, derived by [`cloud_view`]) and a
//! directory per node. Labs are told apart by name; each gets its own
//! network namespace and its own /24, so several labs never collide.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cloud::{InstanceState, LabCloud, LabInstance};

/// The first lab takes 10.77.0.0/24, the next 10.77.1.0/24, and so on.
pub const SUBNET_BASE: [u8; 2] = [10, 77];
/// Host part of the bridge (the VMs' gateway) in every lab subnet.
pub const GATEWAY_HOST: u8 = 1;
/// Host part of the API VIP: outside the node range.
pub const VIP_HOST: u8 = 100;
/// Node N (1-based) gets host part `NODE_HOST_BASE + N`.
pub const NODE_HOST_BASE: u8 = 10;
/// At most this many nodes per lab (host parts 11..=99 stay below the VIP).
pub const MAX_NODES: u32 = 89;
/// Where the fake cloud answers, on the bridge, as on a real cloud.
pub const METADATA_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The agent's status endpoint on every node (`muster agent --status-listen`).
pub const STATUS_PORT: u16 = 9743;

/// A lab as `lab.json` stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    /// Third octet of the lab's 10.77.X.0/24.
    pub subnet: u8,
    /// The qcow2 every node's disk is layered on (a copy inside the lab).
    pub image: PathBuf,
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Control-plane nodes asked for (`--nodes`); the rest are workers.
    pub control_plane: u32,
    /// Workers asked for at `up` (`--workers`); without any, workloads
    /// may run on the control plane.
    #[serde(default)]
    pub workers: u32,
    /// The cluster's shared secret, generated per lab (never printed).
    pub secret: String,
    /// When the lab was created, seconds since the epoch (launch times
    /// count from here so the group order is the launch order).
    pub created_at: u64,
    /// How the VMs boot: their own disks (cloud-like) or the network (PXE).
    #[serde(default)]
    pub boot: BootMode,
    /// Extra kernel command-line arguments for every VM booted from disk:
    /// systemd-stub appends the SMBIOS type-11 string
    /// `io.systemd.stub.kernel-cmdline-extra` to the UKI's own command
    /// line (without Secure Boot, as in the lab), so a later setting wins.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    pub nodes: Vec<NodeState>,
}

/// How a lab's VMs boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// UEFI from a qcow2 disk layered on the image; metadata from the fake
    /// cloud (AWS IMDSv2), peers from its Auto Scaling group API.
    #[default]
    Disk,
    /// Diskless, like bare metal: DHCP, iPXE fetches the PXE set over HTTP
    /// from the lab, the kernel command line says `muster.platform=metal
    /// muster.config=URL`; peers are listed statically (no cloud API).
    Pxe,
}

/// How QEMU runs the VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// One VM of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// 1-based; names the node (`node-3`), its tap, IP and MAC.
    pub index: u32,
    pub instance_id: String,
    pub power: Power,
    /// Seconds after the lab's creation this machine was launched.
    pub launched_after: u64,
    /// The group is terminating it and holds it in `Terminating:Wait`
    /// until its agent completes the lifecycle action (`lab upgrade`).
    #[serde(default)]
    pub leaving: bool,
}

/// What has happened to a node's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    /// QEMU runs (or should: `lab status` checks the process).
    On,
    /// Powered off with its disk kept (`lab stop`): still in the group.
    Off,
    /// Powered off for good (`lab kill`): out of the group, disk kept for
    /// post-mortems until `lab down`.
    Gone,
}

impl LabState {
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(GATEWAY_HOST)
    }

    pub fn vip(&self) -> Ipv4Addr {
        self.host(VIP_HOST)
    }

    fn host(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], self.subnet, host)
    }

    pub fn node_ip(&self, index: u32) -> Ipv4Addr {
        // Indexes are capped at MAX_NODES by `add_node`.
        self.host(NODE_HOST_BASE.saturating_add(u8::try_from(index).unwrap_or(u8::MAX)))
    }

    /// Locally administered, and unique across labs: 52:54:00 (QEMU) + subnet + index.
    pub fn node_mac(&self, index: u32) -> String {
        format!(
            "52:54:00:77:{:02x}:{:02x}",
            self.subnet,
            index.min(u32::from(u8::MAX))
        )
    }

    /// The SMBIOS system UUID of node `index` (what `metal` reads as the
    /// instance id): stable per lab and node.
    pub fn node_uuid(&self, index: u32) -> String {
        format!(
            "{:08x}-0000-4000-8000-{:04x}{:08x}",
            self.created_at & 0xffff_ffff,
            self.subnet,
            index
        )
    }

    /// The network namespace the lab lives in.
    pub fn netns(&self) -> String {
        format!("muster-lab-{}", self.name)
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| node_name(n.index) == name)
    }

    /// Control-plane nodes: the first `control_plane` launched. The agents
    /// decide roles themselves; this is what the lab expects them to decide.
    pub fn expected_control_plane(&self) -> usize {
        self.control_plane as usize
    }

    /// Appends a node launched `after_secs` after the lab was created.
    pub fn add_node(&mut self, after_secs: u64) -> Result<&NodeState, String> {
        let index = self.nodes.iter().map(|n| n.index).max().unwrap_or(0) + 1;
        if index > MAX_NODES {
            return Err(format!(
                "lab {}: at most {MAX_NODES} nodes per lab",
                self.name
            ));
        }
        self.nodes.push(NodeState {
            index,
            instance_id: instance_id(self.subnet, index, self.created_at),
            power: Power::On,
            launched_after: after_secs,
            leaving: false,
        });
        Ok(&self.nodes[self.nodes.len() - 1])
    }
}

pub fn node_name(index: u32) -> String {
    format!("node-{index}")
}

pub fn tap_name(index: u32) -> String {
    format!("tap{index}")
}

/// A stable, AWS-looking id (`i-` + 17 hex digits) unique per lab and node.
fn instance_id(subnet: u8, index: u32, created_at: u64) -> String {
    format!(
        "i-0{:08x}{:02x}{:06x}",
        created_at & 0xffff_ffff,
        subnet,
        index
    )
}

/// Picks the first free /24 given the subnets other labs use.
pub fn free_subnet(taken: &[u8]) -> Option<u8> {
    (0..=u8::MAX).find(|s| !taken.contains(s))
}

/// A lab name is part of a namespace name and a directory: keep it short and plain.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "lab name {name:?}: use 1-20 characters a-z, 0-9 and '-', not starting with '-'"
        ))
    }
}

/// The cluster config every VM gets as user data (AWS shape: `#cloud-config`
/// with a `muster:` key). Peers come from the fake cloud's group API (disk
/// boot) or a static list of every node's address (PXE: the config that
/// `muster.config=` points at, plain Muster YAML, since bare metal has no
/// group API to ask); the VIP moves by ARP on the lab bridge.
pub fn user_data(lab: &LabState) -> String {
    match lab.boot {
        BootMode::Pxe => format!(
            "# Written by `muster lab` for lab {} (network boot).\n{}",
            lab.name,
            cluster_yaml(lab)
        ),
        BootMode::Disk => format!(
            "#cloud-config\n# Written by `muster lab` for lab {}: every VM gets this same document.\nmuster:\n{}",
            lab.name,
            indent(&cluster_yaml(lab), "  ")
        ),
    }
}

/// The Muster config of a lab's nodes.
fn cluster_yaml(lab: &LabState) -> String {
    let discovery = match lab.boot {
        BootMode::Disk => format!(
            "discovery:\n  cloudGroup:\n    provider: aws\ncloud:\n  endpoint: \"http://{METADATA_ADDR}/\"\n"
        ),
        BootMode::Pxe => {
            let peers: String = lab
                .nodes
                .iter()
                .map(|n| format!("      - {}\n", lab.node_ip(n.index)))
                .collect();
            format!("discovery:\n  static:\n    peers:\n{peers}")
        }
    };
    let timing = timing(lab.accel);
    // Workloads go to the workers; a lab without any runs them on its
    // control plane.
    let workers = lab.workers > 0;
    format!(
        "cluster:\n  name: {name}\n  secret: \"{secret}\"\n\
         topology:\n  controlPlane:\n    count: {cp}\n    schedulable: {schedulable}\n{etcd}\
         {discovery}\
         apiEndpoint:\n  vip: {vip}\n  mode: arp\n{api}\
         kubernetes:\n  cni: bridge\n{k8s}",
        name = lab.name,
        secret = lab.secret,
        cp = lab.control_plane,
        schedulable = !workers,
        etcd = timing.map_or(String::new(), |t| indent(t.etcd, "  ")),
        vip = lab.vip(),
        api = timing.map_or(String::new(), |t| indent(t.api_endpoint, "  ")),
        k8s = timing.map_or(String::new(), |t| indent(t.kubernetes, "  ")),
    )
}

/// Timers a lab sets in its nodes' config, as YAML under `apiEndpoint:`
/// and under `topology:`.
#[derive(Debug, Clone, Copy)]
pub struct LabTiming {
    pub api_endpoint: &'static str,
    pub etcd: &'static str,
    pub kubernetes: &'static str,
}

/// Timers for VMs under TCG, where a vCPU runs about 8x slower than the
/// host and three VMs share two host cores: etcd answers in hundreds of
/// milliseconds and now and then stalls for seconds (docs/design/vip.md,
/// "Timers under emulation", has the measured renewal latencies these
/// come from). The real machines' defaults (renewals every 200 ms, a
/// holder drops after 700 ms) cannot be kept there, and the VIP flapped.
/// etcd gets raft timers that survive a starved VM too: 250 ms heartbeats,
/// 2.5 s before a follower calls an election. While three apiservers start
/// beside a CPU hog, renewals took 1.3-1.8 s and each etcd leadership move
/// stalled them for several seconds: with 6 s of hold and shedding on, the
/// VIP changed hands 9 times in the first 10 minutes. So the holder keeps
/// etcd leadership there and holds for 8 s. The controller manager and
/// scheduler get 20 s to renew their leases (30 s leases): one write can
/// take several seconds there, and a leader that misses its deadline
/// exits. Longer leases cost their length after a leader's machine dies
/// or every machine restarts (60 s ones slowed the tier-2 power cycle).
pub const TCG_TIMING: LabTiming = LabTiming {
    api_endpoint: "\
timing:
  renewEvery: 1s
  holdFor: 8s
  takeoverAfter: 11s
  leaseTtl: 15s
  leaseMargin: 3s
  pollEvery: 1s
  actBudget: 1s
shedEtcdLeadership: false
",
    etcd: "\
etcd:
  timing:
    heartbeat: 250ms
    electionTimeout: 2500ms
",
    kubernetes: "\
leaderElection:
  leaseDuration: 30s
  renewDeadline: 20s
  retryPeriod: 4s
",
};

/// The timers a lab sets: under KVM the VMs run at about the host's speed
/// and keep the defaults.
pub fn timing(accel: Accel) -> Option<LabTiming> {
    match accel {
        Accel::Kvm => None,
        Accel::Tcg => Some(TCG_TIMING),
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// The fake cloud's view of the lab: one Auto Scaling group holding every
/// node that is not gone, in launch order.
pub fn cloud_view(lab: &LabState) -> LabCloud {
    LabCloud {
        region: "lab-local-1".into(),
        zone: "lab-local-1a".into(),
        group_name: format!("muster-lab-{}", lab.name),
        desired_capacity: None,
        user_data: user_data(lab),
        role_name: Some("muster-lab-node".into()),
        access_key_id: "ASIAMUSTERLAB0000001".into(),
        instances: lab
            .nodes
            .iter()
            .map(|n| LabInstance {
                instance_id: n.instance_id.clone(),
                private_ipv4: lab.node_ip(n.index),
                mac: lab.node_mac(n.index),
                hostname: node_name(n.index),
                launch_time: super::cloud::rfc3339(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(lab.created_at + n.launched_after),
                ),
                state: match n.power {
                    // A powered-off VM is still a running instance to the
                    // group, as a machine that lost power is to EC2.
                    Power::On | Power::Off => InstanceState::Running,
                    Power::Gone => InstanceState::Terminated,
                },
                in_group: n.power != Power::Gone,
                leaving: n.leaving,
            })
            .collect(),
    }
}

/// Files of one lab.
#[derive(Debug, Clone)]
pub struct LabPaths {
    pub dir: PathBuf,
}

impl LabPaths {
    pub fn new(root: &Path, name: &str) -> Self {
        LabPaths {
            dir: root.join(name),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("lab.json")
    }
    pub fn cloud(&self) -> PathBuf {
        self.dir.join("cloud.json")
    }
    pub fn image(&self) -> PathBuf {
        self.dir.join("image.qcow2")
    }
    /// A cluster-admin kubeconfig for the API through the VIP (0600).
    pub fn admin_conf(&self) -> PathBuf {
        self.dir.join("admin.conf")
    }
    /// Where the fake cloud records completed lifecycle actions.
    pub fn completions(&self) -> PathBuf {
        self.dir.join("lifecycle-completed")
    }
    /// A copy of the image `lab upgrade` launches replacements from.
    pub fn upgrade_image(&self, n: u64) -> PathBuf {
        self.dir.join(format!("image-upgrade-{n}.qcow2"))
    }
    pub fn server_pid(&self) -> PathBuf {
        self.dir.join("cloud.pid")
    }
    pub fn server_log(&self) -> PathBuf {
        self.dir.join("cloud.log")
    }
    pub fn dnsmasq_conf(&self) -> PathBuf {
        self.dir.join("dnsmasq.conf")
    }
    pub fn dnsmasq_hosts(&self) -> PathBuf {
        self.dir.join("dnsmasq.hosts")
    }
    pub fn dnsmasq_pid(&self) -> PathBuf {
        self.dir.join("dnsmasq.pid")
    }
    /// The PXE set (kernel, initrd, root image, iPXE script) and the
    /// config PXE nodes fetch, served over HTTP at `/pxe/`.
    pub fn pxe_dir(&self) -> PathBuf {
        self.dir.join("pxe")
    }
    pub fn node_dir(&self, index: u32) -> PathBuf {
        self.dir.join(node_name(index))
    }
    pub fn disk(&self, index: u32) -> PathBuf {
        self.node_dir(index).join("disk.qcow2")
    }
    pub fn efi_vars(&self, index: u32) -> PathBuf {
        self.node_dir(index).join("efi-vars.fd")
    }
    pub fn serial_log(&self, index: u32) -> PathBuf {
        self.node_dir(index).join("serial.log")
    }
    pub fn qemu_pid(&self, index: u32) -> PathBuf {
        self.node_dir(index).join("qemu.pid")
    }
}
