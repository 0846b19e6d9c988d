//! The cluster config as typed values. Doc comments here become the
//! descriptions in `configs/schema.json`; checks that span fields live in
//! `validate.rs`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// A Muster cluster config: what users paste into launch-template user data
/// (plain YAML/JSON, or under the `muster:` key of a `#cloud-config`).
/// Only `cluster.name` and `cluster.secret` are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Muster cluster config", transform = super::schema::require_cluster)]
pub struct Config {
    // Defaulted only so that a missing name or secret is reported with the
    // other errors (by validation) instead of ending decoding early; the
    // schema still says required.
    #[serde(default)]
    pub cluster: Cluster,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default)]
    pub discovery: Discovery,
    #[serde(default)]
    pub api_endpoint: ApiEndpoint,
    #[serde(default)]
    pub kubernetes: Kubernetes,
    #[serde(default)]
    pub mesh: Mesh,
    #[serde(default)]
    pub dns: Dns,
    /// Add-ons installed once the API is up: a name (`argocd`) or
    /// `{name, version}`.
    #[serde(default)]
    pub addons: Vec<Addon>,
    #[serde(default)]
    pub metadata: MetadataSettings,
    #[serde(default)]
    pub cloud: CloudSettings,
}

/// Identity of the cluster, shared by every node of it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
#[schemars(transform = super::schema::require_name_and_secret)]
pub struct Cluster {
    /// Cluster name: a DNS label (lowercase letters, digits, `-`; at most 63).
    /// At most one etcd cluster is ever formed per name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The one shared credential (at least 32 characters) from which nodes
    /// authenticate each other. Never logged. Not given with `join`.
    #[schemars(length(min = 32))]
    pub secret: Secret,
    /// Instead of `secret`, for groups that only ever run workers
    /// (`topology.role: worker`): the join credential `muster
    /// join-credential` prints on a control-plane node. It lets a node join
    /// Kubernetes as a worker and nothing else: no CA key can be derived
    /// from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinCredential>,
}

/// A worker's join credential: the cluster's bootstrap token and the pin
/// of the Kubernetes CA it checks the API server against before sending
/// the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JoinCredential {
    /// The bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`. Never logged.
    pub token: Secret,
    /// `sha256:` and the hex SHA-256 of the Kubernetes CA's public key
    /// (kubeadm's `--discovery-token-ca-cert-hash`).
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub ca_pin: String,
}

/// Which machine does what.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Topology {
    /// This node's role. `auto`: the first members of the group, in a total
    /// order, become etcd/control plane, the rest workers. A fixed role
    /// suits a separate worker group.
    pub role: Role,
    pub control_plane: ControlPlane,
    pub etcd: Etcd,
    pub workers: Workers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    #[default]
    Auto,
    ControlPlane,
    Etcd,
    Worker,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlane {
    /// Control-plane nodes: 1, 3 or 5.
    #[schemars(extend("enum" = [1, 3, 5]))]
    pub count: u8,
    /// Let workloads run on control-plane nodes (no
    /// `node-role.kubernetes.io/control-plane:NoSchedule` taint).
    pub schedulable: bool,
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane {
            count: 3,
            schedulable: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Etcd {
    /// `controlPlane`: one etcd member on each control-plane node (stacked).
    /// `dedicated`: separate etcd nodes.
    pub placement: EtcdPlacement,
    /// Members when `placement: dedicated`: 1, 3, 5 or 7 (default 3). An even
    /// count is rejected: it tolerates no more failures than one fewer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [1, 3, 5, 7, null]))]
    pub count: Option<u8>,
    /// etcd's raft timers. The defaults (100ms, 1s) suit real machines; a
    /// slow or starved one (an emulated VM) needs longer ones or it keeps
    /// losing its leader. `muster agent --etcd-heartbeat-ms/--etcd-election-ms`
    /// override these.
    #[serde(skip_serializing_if = "EtcdTiming::is_unset")]
    pub timing: EtcdTiming,
    /// Scheduled snapshots of etcd, taken by the leader's agent, checked
    /// and uploaded (docs/design/backup.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<EtcdBackup>,
    /// Form the cluster from a snapshot in `backup.to` instead of an empty
    /// one: `latest`, or a snapshot's file name. Only a new cluster is ever
    /// restored: with a live cluster in the group, the node joins it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
}

/// `topology.etcd.backup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdBackup {
    /// Where snapshots go: `s3://BUCKET/PREFIX` (the instance role's
    /// credentials), `gs://BUCKET/PREFIX` (the instance's service account),
    /// or `file:///PATH` (a local disk or an NFS mount).
    pub to: String,
    /// How often the leader takes one (default 1h, at least 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ConfigDuration>,
    /// How many snapshots of this cluster to keep (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u16>,
    /// The S3 bucket's region (default: the instance's region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl EtcdBackup {
    pub const DEFAULT_SCHEDULE: std::time::Duration = std::time::Duration::from_secs(3600);
    pub const DEFAULT_KEEP: u16 = 24;

    pub fn schedule(&self) -> std::time::Duration {
        self.schedule.map_or(Self::DEFAULT_SCHEDULE, |d| d.0)
    }

    pub fn keep(&self) -> u16 {
        self.keep.unwrap_or(Self::DEFAULT_KEEP)
    }
}

/// etcd's `--heartbeat-interval` and `--election-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdTiming {
    /// How often the leader tells followers it is alive (default 100ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<ConfigDuration>,
    /// How long a follower waits for the leader before an election
    /// (default 1s): at least 5 heartbeats, at most 50s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout: Option<ConfigDuration>,
}

impl EtcdTiming {
    pub const DEFAULT_HEARTBEAT_MS: u32 = 100;
    pub const DEFAULT_ELECTION_MS: u32 = 1000;

    pub fn is_unset(&self) -> bool {
        *self == EtcdTiming::default()
    }

    /// (heartbeat, election timeout) in milliseconds, defaults applied.
    pub fn millis(&self) -> (u32, u32) {
        let ms = |d: Option<ConfigDuration>, default: u32| {
            d.map_or(default, |d| {
                u32::try_from(d.0.as_millis()).unwrap_or(u32::MAX)
            })
        };
        (
            ms(self.heartbeat, Self::DEFAULT_HEARTBEAT_MS),
            ms(self.election_timeout, Self::DEFAULT_ELECTION_MS),
        )
    }
}

/// A duration written with its unit (`200ms`, `2s`); see `forms.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub std::time::Duration);

impl Etcd {
    /// Members when dedicated and no count is given.
    pub const DEFAULT_DEDICATED_COUNT: u8 = 3;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EtcdPlacement {
    #[default]
    ControlPlane,
    Dedicated,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Workers {
    /// Node labels for workers.
    pub labels: BTreeMap<String, String>,
    /// Node taints for workers: `key=value:Effect`, `key:Effect`, or
    /// `{key, value, effect}`.
    pub taints: Vec<Taint>,
}

/// A Kubernetes node taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// How a node finds its peers. Give at most one method; none means
/// `cloudGroup` of the platform the node booted on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("maxProperties" = 1))]
pub struct Discovery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_group: Option<CloudGroup>,
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_peers: Option<StaticPeers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDiscovery>,
}

/// The chosen discovery method, with the default applied.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryMethod<'a> {
    CloudGroup(CloudGroup),
    Static(&'a StaticPeers),
    Dns(&'a DnsDiscovery),
}

impl Discovery {
    /// The method to use (validation guarantees at most one is set).
    pub fn method(&self) -> DiscoveryMethod<'_> {
        match (&self.cloud_group, &self.static_peers, &self.dns) {
            (_, Some(s), _) => DiscoveryMethod::Static(s),
            (_, _, Some(d)) => DiscoveryMethod::Dns(d),
            (g, _, _) => DiscoveryMethod::CloudGroup(g.clone().unwrap_or_default()),
        }
    }
}

/// Peers are the members of an autoscaling/managed instance group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudGroup {
    /// Cloud API to ask; default: the platform this node booted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<CloudProvider>,
    /// ASG or MIG name; default: this instance's own group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CloudProvider {
    Aws,
    Gce,
}

/// A fixed list of peers (bare metal, labs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticPeers {
    /// IPv4 addresses or host names of every node that may hold a control
    /// plane or etcd role (this node included).
    #[schemars(length(min = 1))]
    pub peers: Vec<String>,
}

/// Peers are the records of a DNS name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsDiscovery {
    /// Name to resolve, e.g. `_muster._tcp.prod.example.com` for SRV.
    pub name: String,
    #[serde(default)]
    pub record: DnsRecord,
    /// Ask this server (`IP` or `IP:PORT`) instead of the system resolver
    /// (`/etc/resolv.conf`); SRV discovery only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DnsRecord {
    #[default]
    A,
    Srv,
}

/// The floating Kubernetes API endpoint `https://VIP:PORT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiEndpoint {
    /// The virtual IPv4 address; outside the pod and service CIDRs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    /// How the VIP moves: `arp` (shared L2), `bgp` (announce to routers),
    /// `aws` / `gce` (cloud API mover), `none`. Default: `none` without a
    /// vip; with one, the platform's own (`aws`, `gce`, else `arp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<VipMode>,
    /// Network interface for the VIP; default: the one with the default route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// BGP peering; required with `mode: bgp`, refused otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Bgp>,
    /// API server port.
    pub port: u16,
    /// DNS name clients use for the API (added to the serving certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// The VIP election's timers (docs/design/vip.md). The defaults give a
    /// failover of about 1 s on real machines; slow or starved machines
    /// (emulated VMs) need longer ones, or the holder cannot renew in time
    /// and the VIP flaps. Every combination must pass the safety rule
    /// ("never two holders"); one that does not is refused.
    #[serde(skip_serializing_if = "VipTimingSettings::is_unset")]
    pub timing: VipTimingSettings,
    /// While holding the VIP, move etcd leadership to another member, so
    /// that losing one machine never costs the VIP and the etcd leader at
    /// once (default true). Where a leadership move itself stalls etcd for
    /// seconds (emulated VMs), the moves cost more than they save: each
    /// one stalled the holder's renewals until it dropped the VIP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shed_etcd_leadership: Option<bool>,
}

impl Default for ApiEndpoint {
    fn default() -> Self {
        ApiEndpoint {
            vip: None,
            mode: None,
            interface: None,
            bgp: None,
            port: 6443,
            dns_name: None,
            timing: VipTimingSettings::default(),
            shed_etcd_leadership: None,
        }
    }
}

/// The VIP election's timers; each unset one keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct VipTimingSettings {
    /// The holder renews its claim this often (default 200ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_every: Option<ConfigDuration>,
    /// The holder drops the VIP when its last confirmed renewal was sent
    /// this long ago (default 700ms). Each etcd call may take half of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_for: Option<ConfigDuration>,
    /// A candidate takes over after the claim has not changed for this
    /// long (default 1s): the crash failover time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takeover_after: Option<ConfigDuration>,
    /// Lease TTL asked of etcd, whole seconds (default 2s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<ConfigDuration>,
    /// The holder drops the VIP this long before its lease can expire
    /// (default 500ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_margin: Option<ConfigDuration>,
    /// How often a candidate reads the claim (default 50ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_every: Option<ConfigDuration>,
    /// How late the holder's own step-down may come: timer lateness plus
    /// removing the address (default 200ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act_budget: Option<ConfigDuration>,
}

impl VipTimingSettings {
    pub fn is_unset(&self) -> bool {
        *self == VipTimingSettings::default()
    }
}

impl ApiEndpoint {
    /// The mode in force: the explicit one; else `none` without a vip, else
    /// `platform_default` (see [`VipMode::for_platform`]).
    pub fn resolved_mode(&self, platform_default: VipMode) -> VipMode {
        match (self.mode, self.vip) {
            (Some(m), _) => m,
            (None, None) => VipMode::None,
            (None, Some(_)) => platform_default,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VipMode {
    Arp,
    Bgp,
    Aws,
    Gce,
    None,
}

impl VipMode {
    /// The natural mover on a platform named as in `muster.platform=`.
    pub fn for_platform(platform: &str) -> VipMode {
        match platform {
            "aws" => VipMode::Aws,
            "gce" => VipMode::Gce,
            _ => VipMode::Arp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VipMode::Arp => "arp",
            VipMode::Bgp => "bgp",
            VipMode::Aws => "aws",
            VipMode::Gce => "gce",
            VipMode::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bgp {
    /// Our autonomous system number.
    pub local_asn: u32,
    /// Routers to announce the VIP to.
    #[schemars(length(min = 1))]
    pub peers: Vec<BgpPeer>,
    /// Hold time this node proposes, in seconds: 0 (no keepalives) or at
    /// least 3; default 9. The router drops a silent session (and the
    /// route) after the smaller of both sides' values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BgpPeer {
    pub address: Ipv4Addr,
    pub asn: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Kubernetes {
    /// Kubernetes version, `MAJOR.MINOR.PATCH` (e.g. `1.33.2`); default: the
    /// version the image ships. Quote it: YAML reads `1.33` as a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Pod network; must not overlap `serviceCidr`.
    pub pod_cidr: IpNet,
    /// Service network; must not overlap `podCidr`.
    pub service_cidr: IpNet,
    pub cni: Cni,
    /// Leader election of the controller manager and the scheduler.
    #[serde(skip_serializing_if = "LeaderElectionSettings::is_unset")]
    pub leader_election: LeaderElectionSettings,
}

/// Leader election timers of kube-controller-manager and kube-scheduler
/// (their `--leader-elect-*` flags); each unset one keeps Kubernetes'
/// default. A leader that cannot renew within `renewDeadline` exits and is
/// restarted, so on slow machines (emulated VMs, where one apiserver write
/// can take seconds) short timers restart the controllers again and again:
/// no node gets a pod range and no kubelet certificate is signed.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaderElectionSettings {
    /// How long a lease lasts without renewal (default 15s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_duration: Option<ConfigDuration>,
    /// A leader gives up when it could not renew for this long (default
    /// 10s); shorter than `leaseDuration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_deadline: Option<ConfigDuration>,
    /// How often renewals and attempts are made (default 2s); the
    /// deadline must allow 1.2 of them (client-go's jitter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_period: Option<ConfigDuration>,
}

/// [`LeaderElectionSettings`] with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderElection {
    pub lease_duration: ConfigDuration,
    pub renew_deadline: ConfigDuration,
    pub retry_period: ConfigDuration,
}

impl LeaderElectionSettings {
    pub fn is_unset(&self) -> bool {
        *self == LeaderElectionSettings::default()
    }

    /// The timers in force (Kubernetes' defaults: 15s, 10s, 2s).
    pub fn resolved(&self) -> LeaderElection {
        let secs = |s| ConfigDuration(std::time::Duration::from_secs(s));
        LeaderElection {
            lease_duration: self.lease_duration.unwrap_or(secs(15)),
            renew_deadline: self.renew_deadline.unwrap_or(secs(10)),
            retry_period: self.retry_period.unwrap_or(secs(2)),
        }
    }
}

impl Default for Kubernetes {
    fn default() -> Self {
        Kubernetes {
            version: None,
            pod_cidr: IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16)),
            service_cidr: IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 12)),
            cni: Cni::Cilium,
            leader_election: LeaderElectionSettings::default(),
        }
    }
}

/// The pod network. `bridge` runs everywhere (Debian's CNI plugins and
/// routes the agent keeps between nodes on one L2 segment); `cilium` and
/// `calico` are installed into the cluster as add-ons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    #[default]
    Cilium,
    Calico,
    Bridge,
}

/// Multi-cluster membership.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Mesh {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cilium: Option<CiliumMesh>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioMesh>,
}

/// Cilium Cluster Mesh (needs `kubernetes.cni: cilium`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumMesh {
    /// Name in the mesh; default: `cluster.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Unique per mesh member, 1 to 255.
    #[schemars(range(min = 1, max = 255))]
    pub cluster_id: u32,
}

/// Istio multi-cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct IstioMesh {
    pub enabled: bool,
    /// Istio network name; clusters on different networks talk through
    /// east-west gateways. Default: one network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// DNS names for the API and nodes, published at bootstrap and then
/// handed to ExternalDNS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Dns {
    pub provider: DnsProvider,
    /// Zone to publish in, e.g. `prod.example.com`; required with a provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Name of the API inside the zone (`api` → `api.<zone>`); a name ending
    /// in `.` is absolute.
    pub api_name: String,
    /// Publish one A record per node, `<hostname>.<nodesSubdomain>.<zone>`
    /// (e.g. `nodes`); absent: only the API name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes_subdomain: Option<String>,
    /// TTL of the address records, seconds.
    pub ttl: u32,
    /// How often the published records are compared with the wanted ones.
    pub interval: ConfigDuration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route53: Option<Route53>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloudflare: Option<Cloudflare>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub google: Option<GoogleDns>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_dns: Option<ExternalDns>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            provider: DnsProvider::None,
            zone: None,
            api_name: "api".into(),
            nodes_subdomain: None,
            ttl: 60,
            interval: ConfigDuration(std::time::Duration::from_secs(30)),
            rfc2136: None,
            route53: None,
            cloudflare: None,
            google: None,
            external_dns: None,
        }
    }
}

impl Dns {
    /// The API's fully qualified name (without the trailing dot), if a zone is set.
    pub fn api_fqdn(&self) -> Option<String> {
        if let Some(abs) = self.api_name.strip_suffix('.') {
            return Some(abs.to_string());
        }
        let zone = self.zone.as_deref()?.trim_end_matches('.');
        Some(format!("{}.{zone}", self.api_name))
    }

    /// The ExternalDNS owner id: `externalDns.ownerId`, else the cluster name.
    pub fn owner_id<'a>(&'a self, cluster_name: &'a str) -> &'a str {
        self.external_dns
            .as_ref()
            .and_then(|e| e.owner_id.as_deref())
            .unwrap_or(cluster_name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsProvider {
    #[default]
    None,
    Rfc2136,
    Route53,
    Cloudflare,
    Google,
}

impl DnsProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsProvider::None => "none",
            DnsProvider::Rfc2136 => "rfc2136",
            DnsProvider::Route53 => "route53",
            DnsProvider::Cloudflare => "cloudflare",
            DnsProvider::Google => "google",
        }
    }
}

/// Dynamic DNS updates (BIND and friends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rfc2136 {
    /// Primary server, `HOST` or `HOST:PORT` (port 53 by default).
    pub server: String,
    pub tsig: Tsig,
}

/// TSIG key for signed updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tsig {
    pub key_name: String,
    #[serde(default)]
    pub algorithm: TsigAlgorithm,
    /// Base64 key material.
    pub secret: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum TsigAlgorithm {
    #[serde(rename = "hmac-sha256")]
    #[default]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Route53 {
    /// Hosted zone id; default: looked up by `dns.zone`. Credentials come
    /// from the instance role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted_zone_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cloudflare {
    /// API token with Zone:Read and DNS:Edit permissions; or
    /// `apiTokenFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
    /// A file holding the token (a mounted secret), read at each start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<String>,
}

/// Google Cloud DNS, with the instance's service account (metadata token).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GoogleDns {
    /// Project of the managed zone; default: the instance's project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Managed zone name; default: looked up by `dns.zone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalDns {
    /// TXT ownership id ExternalDNS takes over with; default: `cluster.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
}

/// An add-on: a name, or `{name, version}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Addon {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Add-ons Muster knows how to install.
pub const KNOWN_ADDONS: &[&str] = &[
    "argocd",
    "cert-manager",
    "external-dns",
    "grafana",
    "ingress-nginx",
    "metallb",
    "metrics-server",
    "prometheus",
];

/// How this node may reach its metadata service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MetadataSettings {
    /// AWS: allow falling back to IMDSv1 (no session token). Off: IMDSv1 is
    /// open to SSRF.
    pub allow_imdsv1: bool,
}

/// How this node reaches its cloud's API.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudSettings {
    /// Cloud API endpoint override: a VPC endpoint proxy, an AWS-compatible
    /// cloud, the local lab. An `http` or `https` URL; every AWS call
    /// (autoscaling, EC2) goes there instead of
    /// `https://SERVICE.REGION.amazonaws.com` (the `MUSTER_AWS_ENDPOINT`
    /// environment variable, when set, wins over this setting), and on GCE
    /// every Compute API call (group discovery, the alias-IP mover) goes
    /// there instead of `https://compute.googleapis.com/compute/v1/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(url)]
    pub endpoint: Option<String>,
}

impl CloudSettings {
    /// The endpoint as a URL; `None` when unset or (in an unvalidated
    /// config) not a URL.
    pub fn endpoint_url(&self) -> Option<url::Url> {
        self.endpoint
            .as_deref()
            .and_then(|e| url::Url::parse(e).ok())
    }
}
