//! kubernetes — boot phase 8: the control plane on Muster's etcd and VIP.
//!
//! Every control-plane node derives the same Kubernetes CA, front-proxy CA,
//! service-account key and bootstrap token from the cluster secret (no
//! node hands anything out), issues its own leaf certificates, and runs
//! kube-apiserver, kube-controller-manager and kube-scheduler as host
//! services from the binaries in `/usr` (no container image needed). The
//! apiserver advertises the node's own address; clients reach the cluster
//! through the VIP, which follows the local apiserver's `/readyz`
//! ([`health::ApiServerHealth`]). Cluster-wide objects are applied with
//! server-side apply by one node at a time under an etcd lock.
//!
//! * `version` — which release runs; version-specific rendering
//! * `paths` — kubeadm's file layout under `/etc/kubernetes`
//! * `certs`, `flags`, `kubeconfig`, `objects`, `token` — pure renderers
//! * `client` — the API (`kube`): apply, readiness, leases
//! * `control_plane` — the thin side-effect layer, one round at a time
//! * `drain` — cordon and evict the Node of a machine that is leaving
//! * `health` — the VIP's health check once Kubernetes runs
//!
//! The design and what each identity may do: `docs/design/kubernetes.md`.

pub mod certs;
pub mod client;
pub mod control_plane;
pub mod drain;
pub mod flags;
pub mod health;
pub mod join;
pub mod kubeconfig;
pub mod kubelet;
pub mod node;
pub mod objects;
pub mod paths;
pub mod proxy;
pub mod serving;
pub mod token;
pub mod version;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::{Config, EtcdPlacement};
use crate::etcd::client::{EtcdTls, client_url};
use crate::network::{after_reboot, bridge};
use crate::pki::PkiError;
use crate::roles::Role;
use crate::service::Supervisor;
use crate::state::{KubernetesStatus, StatusBoard};
use crate::vip::{EtcdAccess, EtcdMemberHealth, HealthCheck};
use certs::{ApiNames, NodeNames};
use control_plane::{Authorities, ControlPlane};
use flags::ControlPlaneSpec;
use paths::KubePaths;
use version::KubeVersion;

/// The control-plane binaries a node must carry to run Kubernetes.
pub const CONTROL_PLANE_BINARIES: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The cluster's DNS domain (Services are `NAME.NS.svc.<domain>`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// How often the phase's round runs.
const TICK: Duration = Duration::from_secs(2);

/// Where the binaries are and where the files go (agent flags).
#[derive(Debug, Clone)]
pub struct KubeOptions {
    pub bin_dir: PathBuf,
    pub paths: KubePaths,
}

/// Why the node cannot run the Kubernetes the config asks for. Found
/// before anything is started or written.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "kubernetes.version: `{wanted}` is set, but this node carries no Kubernetes ({path}: not found); use an image built with `image/build.sh --kubernetes`, or remove the setting"
    )]
    NoBinaries { wanted: String, path: PathBuf },
    #[error(
        "kubernetes.version: `{wanted}` is not the Kubernetes this node carries ({found} in {dir}); set `{found_plain}` or use an image with {wanted}"
    )]
    VersionMismatch {
        wanted: String,
        found: KubeVersion,
        found_plain: String,
        dir: PathBuf,
    },
    #[error(
        "kubernetes: this node carries {found}, which Muster does not render for (supported: v1.{}–v1.{})",
        version::OLDEST_MINOR,
        version::NEWEST_MINOR
    )]
    Unsupported { found: KubeVersion },
    #[error(
        "kubernetes: {path} is missing: the node carries {found} but not all of its control-plane binaries"
    )]
    Missing { found: KubeVersion, path: PathBuf },
    #[error(
        "cluster.join: a worker joins Kubernetes, but this node carries none ({path}: not found)"
    )]
    JoinWithoutKubernetes { path: PathBuf },
    #[error("kubernetes: {0}")]
    Pki(#[from] PkiError),
}

/// The Kubernetes this node will run, checked against the config:
/// `Ok(None)` when the node carries none and none is asked for (an
/// etcd-only cluster, as before Kubernetes was built).
pub async fn check(
    config: &Config,
    opts: &KubeOptions,
    image_version: Option<&str>,
) -> Result<Option<KubeVersion>, SetupError> {
    let found = version::detect(image_version, &opts.bin_dir).await;
    check_found(config.kubernetes.version.as_deref(), found, &opts.bin_dir)
}

/// [`check`] on what was found (pure).
pub fn check_found(
    wanted: Option<&str>,
    found: Option<KubeVersion>,
    bin_dir: &Path,
) -> Result<Option<KubeVersion>, SetupError> {
    let Some(found) = found else {
        return match wanted {
            Some(w) => Err(SetupError::NoBinaries {
                wanted: w.to_string(),
                path: bin_dir.join("kube-apiserver"),
            }),
            None => Ok(None),
        };
    };
    if let Some(w) = wanted {
        let same = KubeVersion::parse(w).is_some_and(|w| w.same_minor(&found));
        if !same {
            return Err(SetupError::VersionMismatch {
                wanted: w.to_string(),
                found,
                found_plain: found.to_string().trim_start_matches('v').to_string(),
                dir: bin_dir.to_path_buf(),
            });
        }
    }
    if !found.supported() {
        return Err(SetupError::Unsupported { found });
    }
    if let Some(path) = CONTROL_PLANE_BINARIES
        .iter()
        .map(|b| bin_dir.join(b))
        .find(|p| !p.is_file())
    {
        return Err(SetupError::Missing { found, path });
    }
    Ok(Some(found))
}

/// What the phase needs from the rest of the agent.
pub struct KubeInputs<'a> {
    pub config: &'a Config,
    /// The Kubernetes node name.
    pub node_name: String,
    pub ip: Ipv4Addr,
    pub version: KubeVersion,
    pub opts: &'a KubeOptions,
    pub supervisor: Supervisor,
    pub state_dir: &'a Path,
    pub etcd_tls: EtcdTls,
    /// etcd client URLs of the other listed peers (dedicated etcd).
    pub etcd_peers: Vec<String>,
}

/// Everything the phase runs: the control plane (on a control-plane
/// node) and this machine as a Kubernetes node (every node but a
/// dedicated etcd one), both made ready before the role is known.
pub struct KubePhase {
    control_plane: Option<ControlPlane>,
    node: NodeInputs,
    /// The node runner, made for the role it was made for.
    node_runner: Option<(Role, node::NodeRunner)>,
}

/// How long a leaving machine's look at its own Node may take.
const DRAIN_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the node part is made from, whatever the role turns out to be.
struct NodeInputs {
    node_name: String,
    ip: Ipv4Addr,
    cluster: String,
    ca_pem: String,
    token: token::BootstrapToken,
    /// The API through the VIP (or this node without one).
    endpoint: String,
    port: u16,
    service_cidr: ipnet::IpNet,
    pod_cidr: ipnet::IpNet,
    cni: crate::config::Cni,
    schedulable: bool,
    worker_labels: Vec<(String, String)>,
    worker_taints: Vec<crate::config::Taint>,
    paths: KubePaths,
    bin_dir: PathBuf,
    supervisor: Supervisor,
    record_dir: PathBuf,
    /// Names the boot whose leftover sandbox files were cleared.
    sandbox_stamp: PathBuf,
    /// The kubelet's first client certificate, where this agent holds the
    /// Kubernetes CA (see `certs::kubelet_client`).
    kubelet_client: Option<crate::pki::IssuedCert>,
}

impl NodeInputs {
    /// The group lists this machine as leaving on purpose.
    fn leaving(&self, views: &[crate::discovery::Peer]) -> bool {
        views
            .iter()
            .any(|p| p.address == self.ip && p.lifecycle == crate::discovery::Lifecycle::Leaving)
    }

    /// This machine's Node is drained (or gone), asked with the kubelet's
    /// own identity (a node may read itself and the pods bound to it).
    async fn drained(&self) -> bool {
        let client =
            match client::from_kubeconfig(&self.paths.kubelet_conf(), DRAIN_CHECK_TIMEOUT).await {
                Ok(c) => c,
                Err(e) => {
                    debug!("drain check: {e}");
                    return false;
                }
            };
        match tokio::time::timeout(
            DRAIN_CHECK_TIMEOUT,
            drain::is_drained(&client, &self.node_name),
        )
        .await
        {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                debug!("drain check: {e}");
                false
            }
            Err(_) => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        c: &Config,
        node_name: String,
        ip: Ipv4Addr,
        ca_pem: String,
        token: token::BootstrapToken,
        opts: &KubeOptions,
        supervisor: Supervisor,
        state_dir: &Path,
    ) -> NodeInputs {
        NodeInputs {
            node_name,
            ip,
            cluster: c.cluster.name.clone(),
            ca_pem,
            token,
            endpoint: api_endpoint(c, ip),
            port: c.api_endpoint.port,
            service_cidr: c.kubernetes.service_cidr,
            pod_cidr: c.kubernetes.pod_cidr,
            cni: c.kubernetes.cni,
            schedulable: c.topology.control_plane.schedulable,
            worker_labels: c
                .topology
                .workers
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            worker_taints: c.topology.workers.taints.clone(),
            paths: opts.paths.clone(),
            bin_dir: opts.bin_dir.clone(),
            supervisor,
            record_dir: record_dir(state_dir),
            sandbox_stamp: state_dir.join("node").join("cni-boot-id"),
            kubelet_client: None,
        }
    }

    /// The node runner for `role`: a control-plane kubelet talks to its
    /// own apiserver (no hairpin through the VIP), a worker's to the VIP.
    fn runner(&self, role: Role) -> node::NodeRunner {
        let control_plane = role == Role::ControlPlane;
        let server = if control_plane {
            format!("https://127.0.0.1:{}", self.port)
        } else {
            self.endpoint.clone()
        };
        let (labels, mut taints) = if control_plane {
            (Vec::new(), Vec::new())
        } else {
            (self.worker_labels.clone(), self.worker_taints.clone())
        };
        if control_plane && !self.schedulable {
            taints.push(crate::config::Taint {
                key: kubelet::CONTROL_PLANE_LABEL.into(),
                value: None,
                effect: crate::config::TaintEffect::NoSchedule,
            });
        }
        let root = self.paths.root();
        let kubelet = kubelet::KubeletSpec {
            node_name: self.node_name.clone(),
            node_ip: self.ip,
            client_ca_file: self.paths.ca().0,
            service_cidr: self.service_cidr,
            cluster_domain: CLUSTER_DOMAIN.into(),
            cgroup_driver: kubelet::CgroupDriver::Systemd,
            labels,
            taints,
            config_file: root.join("kubelet.yaml"),
            bootstrap_kubeconfig: root.join("bootstrap-kubelet.conf"),
            kubeconfig: self.paths.kubelet_conf(),
            root_dir: PathBuf::from(kubelet::ROOT_DIR),
            resolv_conf: PathBuf::from("/run/systemd/resolve/resolv.conf"),
        };
        let proxy = proxy::ProxySpec {
            node_name: self.node_name.clone(),
            node_ip: self.ip,
            cluster_cidr: self.pod_cidr,
            kubeconfig: root.join("kube-proxy.conf"),
            config_file: root.join("kube-proxy.yaml"),
        };
        node::NodeRunner::new(
            node::NodeSpec {
                kubelet,
                proxy,
                server,
                cluster: self.cluster.clone(),
                ca_pem: self.ca_pem.clone(),
                token: self.token.clone(),
                kubelet_client: self.kubelet_client.clone().filter(|_| control_plane),
                paths: self.paths.clone(),
                bridge: self.cni == crate::config::Cni::Bridge,
                cni_bin_dir: PathBuf::from("/usr/lib/cni"),
                cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
                containerd_socket: PathBuf::from(crate::containerd::SOCKET),
                containerd_config: PathBuf::from(crate::containerd::config::CONFIG_FILE),
                images_dir: PathBuf::from(crate::containerd::IMAGES_DIR),
                sandbox_state: after_reboot::SandboxState {
                    cni_state_dir: PathBuf::from(after_reboot::CNI_STATE_DIR),
                    network: bridge::NETWORK.into(),
                    boot_id_file: PathBuf::from(after_reboot::BOOT_ID_FILE),
                    stamp: self.sandbox_stamp.clone(),
                },
            },
            self.bin_dir.clone(),
            self.supervisor.clone(),
            self.record_dir.clone(),
        )
    }
}

/// Derives the cluster's keys and renders this node's control-plane spec.
/// Pure apart from the derivation's CPU time; nothing is written.
pub fn prepare(i: KubeInputs<'_>) -> Result<KubePhase, SetupError> {
    let c = i.config;
    let name = c.cluster.name.as_str();
    let authorities = Authorities::derive(name, c.cluster.secret.expose().as_bytes())?;
    let api = ApiNames {
        vip: c.api_endpoint.vip,
        dns_name: c.api_endpoint.dns_name.clone(),
        service_cidr: c.kubernetes.service_cidr,
        cluster_domain: CLUSTER_DOMAIN.into(),
    };
    let node = NodeNames {
        name: i.node_name,
        ip: i.ip,
    };
    let port = c.api_endpoint.port;
    let endpoint = api_endpoint(c, i.ip);
    // Stacked etcd: the local member, like kubeadm. Dedicated: all of them.
    let etcd_servers = match c.topology.etcd.placement {
        EtcdPlacement::ControlPlane => vec![client_url(Ipv4Addr::LOCALHOST)],
        EtcdPlacement::Dedicated => i.etcd_peers.clone(),
    };
    let spec = ControlPlaneSpec {
        version: i.version,
        cluster_name: name.to_string(),
        node_ip: i.ip,
        secure_port: port,
        etcd_servers: etcd_servers.clone(),
        service_cidr: c.kubernetes.service_cidr,
        pod_cidr: c.kubernetes.pod_cidr,
        cluster_domain: CLUSTER_DOMAIN.into(),
        paths: i.opts.paths.clone(),
        leader_election: c.kubernetes.leader_election.resolved(),
    };
    // The objects lock goes to the local member when etcd is stacked: the
    // discovered peers include workers, which run no etcd, and a balanced
    // client would send a share of the calls to them.
    let lock_endpoints = match c.topology.etcd.placement {
        EtcdPlacement::ControlPlane => vec![client_url(i.ip)],
        EtcdPlacement::Dedicated => i.etcd_peers,
    };
    let record_dir = record_dir(i.state_dir);
    let mut node_inputs = NodeInputs::new(
        c,
        node.name.clone(),
        i.ip,
        authorities.kubernetes.cert_pem().to_string(),
        authorities.token.clone(),
        i.opts,
        i.supervisor.clone(),
        i.state_dir,
    );
    node_inputs.kubelet_client = Some(
        authorities
            .kubernetes
            .issue(&certs::kubelet_client(&node.name))?,
    );
    Ok(KubePhase {
        control_plane: Some(ControlPlane::new(
            spec,
            api,
            node,
            authorities,
            endpoint,
            i.opts.bin_dir.clone(),
            i.supervisor,
            record_dir,
            lock_endpoints,
            i.etcd_tls,
        )),
        node: node_inputs,
        node_runner: None,
    })
}

fn record_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("services").join("specs")
}

/// `https://HOST:PORT` nodes and clients reach the API at: the VIP, else
/// `apiEndpoint.dnsName`, else this node itself.
pub fn api_endpoint(c: &Config, ip: Ipv4Addr) -> String {
    let port = c.api_endpoint.port;
    match (c.api_endpoint.vip, &c.api_endpoint.dns_name) {
        (Some(vip), _) => format!("https://{vip}:{port}"),
        (None, Some(name)) => format!("https://{name}:{port}"),
        (None, None) => format!("https://{ip}:{port}"),
    }
}

/// A worker of a worker-only group (`cluster.join`): no etcd, no VIP, no
/// CA key. It learns the Kubernetes CA from the API server, trusting it
/// through the pin (`join.rs`), then runs the node part like any worker.
/// A wrong pin or token is reported in the status and retried with capped
/// backoff (the control plane may not be up yet; a fixed config fixes it).
#[allow(clippy::too_many_arguments)]
pub async fn join_as_worker(
    config: &Config,
    node_name: String,
    ip: Ipv4Addr,
    version: KubeVersion,
    opts: &KubeOptions,
    supervisor: Supervisor,
    state_dir: &Path,
    board: StatusBoard,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let Some(join) = &config.cluster.join else {
        return;
    };
    let Some(token) = token::BootstrapToken::parse(join.token.expose()) else {
        return; // refused by validation
    };
    let endpoint = api_endpoint(config, ip);
    let mut status = KubernetesStatus {
        version: version.to_string(),
        ..KubernetesStatus::default()
    };
    let report = |status: &KubernetesStatus| {
        if let Err(e) = board.update(|s| s.kubernetes = Some(status.clone())) {
            warn!("cannot write status: {e}");
        }
    };
    let mut backoff = Duration::from_secs(1);
    let ca_pem = loop {
        match join::discover_ca(&endpoint, &join.ca_pin, &token).await {
            Ok(pem) => break pem,
            Err(e) => {
                warn!("{e}");
                status.message = Some(format!("joining as a worker: {e}"));
                report(&status);
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    };
    info!(%endpoint, "the API server's CA matches the pin; joining as a worker");
    let inputs = NodeInputs::new(
        config, node_name, ip, ca_pem, token, opts, supervisor, state_dir,
    );
    let mut runner = inputs.runner(Role::Worker);
    loop {
        status.message = None;
        let mut node = status.node.take().unwrap_or_default();
        runner.round(&mut node).await;
        status.node = Some(node);
        report(&status);
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// The config a worker-only group gets instead of the cluster secret:
/// the bootstrap token and the CA pin, the worker role, and the API
/// endpoint (the VIP, else the DNS name). Holds the token: 0600.
pub fn join_credential_yaml(
    cluster: &str,
    token: &token::BootstrapToken,
    ca_pin: &str,
    api: &ApiNames,
    port: u16,
) -> String {
    let mut endpoint = String::from("apiEndpoint:\n");
    if let Some(vip) = api.vip {
        endpoint.push_str(&format!("  vip: {vip}\n"));
    }
    if let Some(name) = &api.dns_name {
        endpoint.push_str(&format!("  dnsName: {name}\n"));
    }
    endpoint.push_str(&format!("  port: {port}\n"));
    format!(
        "# A worker-only group's cluster config: its machines join Kubernetes as\n\
         # workers with the cluster's bootstrap token and check the API server\n\
         # against the CA pin; they hold no CA key. Keep it as secret as the token:\n\
         # with it, anyone can join a node. Add the group's discovery settings.\n\
         cluster:\n  name: {cluster}\n  join:\n    token: \"{}\"\n    caPin: \"{ca_pin}\"\n\
         topology:\n  role: worker\n{endpoint}",
        token.bearer()
    )
}

/// A kubeconfig with a fresh cluster-admin certificate for the cluster of
/// `cluster_name` and `secret`, pointing at `server`: what `muster lab`
/// hands its user. Whoever holds the cluster secret can make one; that is
/// the secret's power (docs/design/pki.md).
pub fn admin_kubeconfig(
    cluster_name: &str,
    secret: &[u8],
    server: &str,
) -> Result<String, PkiError> {
    let ca = crate::pki::ClusterCa::derive_authority(
        crate::pki::Authority::Kubernetes,
        cluster_name,
        secret,
    )?;
    let spec = certs::control_plane(
        &ApiNames {
            vip: None,
            dns_name: None,
            service_cidr: crate::config::Kubernetes::default().service_cidr,
            cluster_domain: CLUSTER_DOMAIN.into(),
        },
        &NodeNames {
            name: "lab".into(),
            ip: Ipv4Addr::LOCALHOST,
        },
    )
    .into_iter()
    .find(|e| e.stem == "admin")
    .map(|e| e.spec)
    .ok_or(PkiError::Crypto("the certificate table has no admin entry"))?;
    let issued = ca.issue(&spec)?;
    Ok(kubeconfig::render(&kubeconfig::KubeconfigSpec {
        cluster: cluster_name,
        server,
        ca_pem: ca.cert_pem(),
        user: "kubernetes-admin",
        credential: kubeconfig::Credential::Embedded {
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        },
    }))
}

/// Runs the phase until `shutdown`: a round every few seconds on a
/// control-plane node. Services outlive the agent (like etcd).
pub async fn run(
    mut phase: KubePhase,
    version: KubeVersion,
    mut roles: watch::Receiver<Option<Role>>,
    views: watch::Receiver<Vec<crate::discovery::Peer>>,
    drained: watch::Sender<bool>,
    board: StatusBoard,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut status = KubernetesStatus {
        version: version.to_string(),
        ..KubernetesStatus::default()
    };
    let mut announced = None;
    // The kubelet needs systemd (its cgroup driver, containerd's unit):
    // without it (`--supervisor child`) only the control plane runs.
    let nodes_here = matches!(phase.node.supervisor, Supervisor::Systemd(_));
    loop {
        let role = *roles.borrow_and_update();
        if let Some(role) = role.filter(|r| *r != Role::Etcd) {
            if announced != Some(role) {
                info!(%version, %role, "running this node's part");
                announced = Some(role);
            }
            if role == Role::ControlPlane {
                let group = crate::discovery::GroupAddresses::of(&views.borrow());
                if let Some(cp) = phase.control_plane.as_mut() {
                    cp.round(&mut status, &group).await;
                }
            } else {
                status.components.clear();
                if let Some(cp) = phase.control_plane.as_mut()
                    && let Err(e) = cp.stand_down().await
                {
                    warn!("{e}");
                }
            }
            // A control-plane node's kubelet talks to the local apiserver:
            // it starts once that has been ready, so that it does not
            // compete with the apiserver's start for the CPU. (Waiting for
            // the bootstrap token as well was tried: after a power cycle
            // the kubelets then waited for every agent to re-apply the
            // cluster objects, and the tier-2 scenario took 463 s instead
            // of ~250 s to be Ready again.)
            let kubelet_may_start = role != Role::ControlPlane
                || phase
                    .control_plane
                    .as_ref()
                    .is_some_and(|cp| cp.seen_ready());
            if nodes_here && !kubelet_may_start && phase.node_runner.is_none() {
                status.node = Some(crate::state::NodeStatus {
                    message: Some(
                        "the kubelet starts once the local kube-apiserver is ready".into(),
                    ),
                    ..status.node.take().unwrap_or_default()
                });
            } else if nodes_here {
                if phase.node_runner.as_ref().is_none_or(|(r, _)| *r != role) {
                    phase.node_runner = Some((role, phase.node.runner(role)));
                }
                if let Some((_, runner)) = phase.node_runner.as_mut() {
                    let mut node = status.node.take().unwrap_or_default();
                    runner.round(&mut node).await;
                    status.node = Some(node);
                }
            }
            // A machine being terminated on purpose tells its etcd runner
            // when its Node is drained (etcd::runner::leave waits for it).
            if phase.node.leaving(&views.borrow()) {
                let done = !nodes_here || phase.node.drained().await;
                drained.send_replace(done);
            }
            if let Err(e) = board.update(|s| s.kubernetes = Some(status.clone())) {
                warn!("cannot write status: {e}");
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = roles.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// A Node's InternalIP addresses (none until its kubelet reported them).
fn internal_ips(n: &k8s_openapi::api::core::v1::Node) -> Vec<std::net::IpAddr> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// Nodes whose every address has left the cluster's group: their machines
/// are gone for good (the same signal that replaces an etcd member).
/// Pure. A Node with no InternalIP yet is kept.
pub fn gone_nodes(
    nodes: &[k8s_openapi::api::core::v1::Node],
    group: &std::collections::BTreeSet<std::net::IpAddr>,
) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| {
            let internal = internal_ips(n);
            (!internal.is_empty() && internal.iter().all(|ip| !group.contains(ip)))
                .then(|| n.metadata.name.clone())?
        })
        .collect()
}

/// Whether the Node named `me` is listed without the control-plane label
/// (an agent sets it after its kubelet registers; a Node registered again
/// lacks it). Not listed yet: nothing to label. Pure.
pub fn lacks_control_plane_label(nodes: &[k8s_openapi::api::core::v1::Node], me: &str) -> bool {
    nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(me))
        .is_some_and(|n| {
            !n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(kubelet::CONTROL_PLANE_LABEL))
        })
}

/// What a control-plane agent does with a Node its group no longer counts
/// on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    /// The machine is being terminated on purpose and its kubelet still
    /// reports: cordon the Node and evict its pods ([`drain`]).
    Drain(String),
    /// The machine left the group, or is leaving with its kubelet silent
    /// (nothing there could finish a graceful eviction): delete the Node,
    /// so its pods are removed and run elsewhere.
    Delete(String),
    /// The machine is live again (out of standby, a cancelled scale-in):
    /// lift the cordon [`drain`] set (never an operator's own).
    Uncordon(String),
}

/// What to do with the Nodes, given the group's live and leaving
/// addresses. Pure. Nodes of live machines, and Nodes with no InternalIP
/// yet, are left alone.
pub fn node_actions(
    nodes: &[k8s_openapi::api::core::v1::Node],
    group: &crate::discovery::GroupAddresses,
) -> Vec<NodeAction> {
    let known: std::collections::BTreeSet<std::net::IpAddr> =
        group.live.union(&group.leaving).copied().collect();
    let gone = gone_nodes(nodes, &known);
    let leaving = gone_nodes(nodes, &group.live);
    nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            if gone.contains(&name) || (leaving.contains(&name) && !node_ready(n)) {
                Some(NodeAction::Delete(name))
            } else if leaving.contains(&name) {
                Some(NodeAction::Drain(name))
            } else if drain::cordoned_while_leaving(n)
                && internal_ips(n).iter().any(|ip| group.live.contains(ip))
            {
                Some(NodeAction::Uncordon(name))
            } else {
                None
            }
        })
        .collect()
}

/// The Node's Ready condition is True (its kubelet reports).
fn node_ready(n: &k8s_openapi::api::core::v1::Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether a node may serve the API, for the VIP: its apiserver once
/// Kubernetes runs, its etcd member on an etcd-only cluster.
pub enum ServeHealth {
    ApiServer(health::ApiServerHealth),
    /// Boxed: an etcd client is large, and the enum lives in the VIP task.
    Etcd(Box<EtcdMemberHealth>),
}

impl ServeHealth {
    /// The VIP follows the local apiserver once Kubernetes runs (with the
    /// local etcd member where it is stacked), else the local etcd member.
    pub fn for_node(
        c: &Config,
        kubernetes_runs: bool,
        paths: &KubePaths,
        local_etcd: EtcdAccess,
    ) -> ServeHealth {
        let etcd = EtcdMemberHealth::new(local_etcd);
        if !kubernetes_runs {
            return ServeHealth::Etcd(Box::new(etcd));
        }
        let stacked = match c.topology.etcd.placement {
            EtcdPlacement::ControlPlane => Some(etcd),
            EtcdPlacement::Dedicated => None,
        };
        ServeHealth::ApiServer(health::ApiServerHealth::new(
            ControlPlane::agent_kubeconfig(paths),
            crate::vip::election::Timing::from_settings(&c.api_endpoint.timing).hold_for / 2,
            stacked,
        ))
    }
}

impl HealthCheck for ServeHealth {
    async fn healthy(&mut self) -> bool {
        match self {
            ServeHealth::ApiServer(h) => h.healthy().await,
            ServeHealth::Etcd(h) => h.healthy().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_credential_is_a_valid_worker_config() {
        let token = token::BootstrapToken::parse("abcdef.0123456789abcdef").expect("token");
        let api = ApiNames {
            vip: Some("10.0.0.100".parse().expect("ip")),
            dns_name: None,
            service_cidr: "10.96.0.0/12".parse().expect("cidr"),
            cluster_domain: CLUSTER_DOMAIN.into(),
        };
        let pin = format!("sha256:{}", "0a".repeat(32));
        let text = join_credential_yaml("prod", &token, &pin, &api, 6443);
        let c = crate::config::validate_text("join credential", &text).expect("valid");
        let join = c.cluster.join.clone().expect("join");
        assert_eq!(join.token.expose(), "abcdef.0123456789abcdef");
        assert_eq!(join.ca_pin, pin);
        assert_eq!(c.topology.role, crate::config::Role::Worker);
        assert_eq!(
            api_endpoint(&c, "10.0.0.7".parse().expect("ip")),
            "https://10.0.0.100:6443"
        );
    }

    fn v(s: &str) -> Option<KubeVersion> {
        KubeVersion::parse(s)
    }

    #[test]
    fn the_version_is_checked_before_anything_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        for b in CONTROL_PLANE_BINARIES {
            std::fs::write(dir.path().join(b), "").expect("write");
        }
        let bin = dir.path();
        assert_eq!(check_found(None, None, bin).expect("etcd only"), None);
        assert_eq!(
            check_found(None, v("1.28.7"), bin).expect("ok"),
            v("1.28.7")
        );
        assert_eq!(
            check_found(Some("1.28.2"), v("1.28.7"), bin).expect("same minor"),
            v("1.28.7")
        );
        let e = check_found(Some("1.30.1"), v("1.28.7"), bin).expect_err("mismatch");
        assert!(
            e.to_string().starts_with("kubernetes.version: `1.30.1`"),
            "{e}"
        );
        assert!(e.to_string().contains("set `1.28.7`"), "{e}");
        let e = check_found(Some("1.28.7"), None, bin).expect_err("no binaries");
        assert!(e.to_string().contains("kube-apiserver: not found"), "{e}");
        let e = check_found(None, v("1.20.0"), bin).expect_err("too old");
        assert!(e.to_string().contains("not render"), "{e}");
        std::fs::remove_file(bin.join("kube-scheduler")).expect("rm");
        let e = check_found(None, v("1.28.7"), bin).expect_err("missing");
        assert!(e.to_string().contains("kube-scheduler is missing"), "{e}");
    }

    fn node(name: &str, ip: Option<&str>, ready: &str) -> k8s_openapi::api::core::v1::Node {
        let addresses: Vec<serde_json::Value> = ip
            .map(|ip| serde_json::json!({"type": "InternalIP", "address": ip}))
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {
                "addresses": addresses,
                "conditions": [{"type": "Ready", "status": ready}]
            }
        }))
        .expect("node")
    }

    #[test]
    fn a_control_plane_node_is_labelled_while_its_node_lacks_the_label() {
        let mut labelled = node("cp-1", Some("10.0.0.1"), "True");
        labelled.metadata.labels =
            Some([(kubelet::CONTROL_PLANE_LABEL.to_string(), String::new())].into());
        let bare = node("cp-2", Some("10.0.0.2"), "True");
        let nodes = [labelled, bare];
        assert!(!lacks_control_plane_label(&nodes, "cp-1"));
        assert!(lacks_control_plane_label(&nodes, "cp-2"));
        // Not registered yet: nothing to patch.
        assert!(!lacks_control_plane_label(&nodes, "cp-3"));
    }

    #[test]
    fn leaving_machines_nodes_are_drained_while_their_kubelet_reports_and_deleted_once_gone() {
        let ip = |s: &str| -> std::net::IpAddr { s.parse().expect("ip") };
        let group = crate::discovery::GroupAddresses {
            live: [ip("10.0.0.1")].into(),
            leaving: [ip("10.0.0.2"), ip("10.0.0.3")].into(),
        };
        let nodes = [
            node("live", Some("10.0.0.1"), "True"),
            node("refresh", Some("10.0.0.2"), "True"),
            node("stopped", Some("10.0.0.3"), "Unknown"),
            node("gone", Some("10.0.0.4"), "True"),
            node("new", None, "False"),
        ];
        assert_eq!(
            node_actions(&nodes, &group),
            vec![
                NodeAction::Drain("refresh".into()),
                NodeAction::Delete("stopped".into()),
                NodeAction::Delete("gone".into()),
            ]
        );
        // Without leaving machines, only the gone one is touched (as before).
        let steady = crate::discovery::GroupAddresses {
            live: [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")].into(),
            leaving: Default::default(),
        };
        assert_eq!(
            node_actions(&nodes, &steady),
            vec![NodeAction::Delete("gone".into())]
        );
        // Back in service after a drain: the drain's cordon is lifted, an
        // operator's cordon (no mark) is not.
        let mut drained = node("refresh", Some("10.0.0.2"), "True");
        drained.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let mut by_operator = drained.clone();
        by_operator.metadata.name = Some("maintenance".into());
        drained.metadata.annotations = Some(
            [(
                drain::CORDONED_WHILE_LEAVING.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        // A Node with no address in the group is nobody's to uncordon.
        let mut unknown = drained.clone();
        unknown.metadata.name = Some("no-address".into());
        unknown.status = None;
        assert_eq!(
            node_actions(&[drained, by_operator, unknown], &steady),
            vec![NodeAction::Uncordon("refresh".into())]
        );
    }
}
