//! Every node's part of boot phases 8 and 9, the thin side-effect layer
//! over the renderers: containerd configured and the shipped images
//! imported, the kubelet (TLS bootstrap with the cluster's token) and
//! kube-proxy running, the pod network's conflist written once the node has
//! its `podCIDR`, and routes to the other nodes' pods.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use tracing::{debug, info, warn};

use super::client;
use super::kubeconfig::{self, Credential, KubeconfigSpec};
use super::kubelet::{self, KubeletSpec};
use super::paths::KubePaths;
use super::proxy::{self, ProxySpec};
use super::token::BootstrapToken;
use crate::containerd::{self, Containerd};
use crate::network::{after_reboot, bridge, routes};
use crate::pki::{CERT_MODE, IssuedCert, KEY_MODE, PkiError, write_if_changed};
use crate::service::{CpuShare, Ensured, ServiceSpec, Supervisor};
use crate::state::NodeStatus;

pub const KUBELET: &str = "muster-kubelet";
pub const KUBE_PROXY: &str = "muster-kube-proxy";
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What this node's kubelet and kube-proxy are made from.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub kubelet: KubeletSpec,
    pub proxy: ProxySpec,
    /// The API the kubelet joins through: the local apiserver on a
    /// control-plane node, the VIP on a worker.
    pub server: String,
    pub cluster: String,
    pub ca_pem: String,
    pub token: BootstrapToken,
    /// A control-plane node's kubelet starts with this client certificate
    /// (a `kubelet.conf` that embeds it, written once); every other
    /// kubelet bootstraps with the token.
    pub kubelet_client: Option<IssuedCert>,
    pub paths: KubePaths,
    /// The pod network is `bridge`: the agent writes its CNI config and
    /// keeps the routes (else the cluster's CNI add-on does).
    pub bridge: bool,
    /// Where the CNI plugins are and where the conflist goes.
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    /// containerd: its socket and config file, and the images to import.
    pub containerd_socket: PathBuf,
    pub containerd_config: PathBuf,
    pub images_dir: PathBuf,
    /// The CNI files of an earlier boot's sandboxes, cleared before the
    /// kubelet starts.
    pub sandbox_state: after_reboot::SandboxState,
}

/// The node's services and network, one round at a time.
pub struct NodeRunner {
    pub spec: NodeSpec,
    pub bin_dir: PathBuf,
    pub supervisor: Supervisor,
    pub record_dir: PathBuf,
    images_imported: bool,
    /// This agent has seen the earlier boot's sandbox files cleared.
    sandboxes_cleared: bool,
    client: Option<kube::Client>,
    /// Routes this agent added: pod CIDR → gateway.
    routes: BTreeMap<Ipv4Net, Ipv4Addr>,
}

/// The kubelet's client certificate and key, in one file, once it has
/// bootstrapped (what kube-proxy presents too).
pub fn kubelet_client_pem(root_dir: &Path) -> PathBuf {
    root_dir.join("pki/kubelet-client-current.pem")
}

impl NodeRunner {
    pub fn new(
        spec: NodeSpec,
        bin_dir: PathBuf,
        supervisor: Supervisor,
        record_dir: PathBuf,
    ) -> NodeRunner {
        NodeRunner {
            spec,
            bin_dir,
            supervisor,
            record_dir,
            images_imported: false,
            sandboxes_cleared: false,
            client: None,
            routes: BTreeMap::new(),
        }
    }

    pub async fn round(&mut self, status: &mut NodeStatus) {
        status.name = self.spec.kubelet.node_name.clone();
        status.message = None;
        if let Err(e) = self.containerd().await {
            status.message = Some(e);
            return;
        }
        if let Err(e) = self.write_files() {
            status.message = Some(format!("kubelet files: {e}"));
            return;
        }
        if !self.sandboxes_cleared {
            match self.spec.sandbox_state.clear_once_per_boot() {
                // Said only when there were some (a first boot has none).
                Ok(Some(0)) | Ok(None) => {}
                Ok(Some(removed)) => {
                    info!(
                        removed,
                        "pod network: cleared the earlier boot's sandbox files"
                    )
                }
                Err(e) => {
                    status.message = Some(e.to_string());
                    return;
                }
            }
            self.sandboxes_cleared = true;
        }
        if let Err(e) = self
            .ensure(KUBELET, "kubelet", kubelet::flags(&self.spec.kubelet))
            .await
        {
            status.message = Some(e);
            return;
        }
        // Until the kubelet has its client certificate, nothing else can
        // talk to the API as this node.
        if !kubelet_client_pem(&self.spec.kubelet.root_dir).is_file() {
            status.message = Some("waiting for the kubelet's TLS bootstrap".into());
            return;
        }
        if let Err(e) = self
            .ensure(KUBE_PROXY, "kube-proxy", proxy::flags(&self.spec.proxy))
            .await
        {
            status.message = Some(e);
            return;
        }
        let Some(client) = self.client().await else {
            status.message = Some("cannot reach the API as this node yet".into());
            return;
        };
        let nodes: Api<Node> = Api::all(client);
        let list =
            match tokio::time::timeout(CALL_TIMEOUT, nodes.list(&ListParams::default())).await {
                Ok(Ok(l)) => l.items,
                Ok(Err(e)) => {
                    status.message = Some(format!("list nodes: {e}"));
                    self.client = None;
                    return;
                }
                Err(_) => {
                    status.message = Some("list nodes: no answer".into());
                    return;
                }
            };
        let me = list
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(status.name.as_str()));
        status.registered = me.is_some();
        let renewed = match me {
            Some(_) => self.lease_renewed(&status.name).await,
            None => None,
        };
        status.ready = me.is_some_and(|n| node_ready_now(n, renewed, crate::state::now_secs()));
        status.pod_cidr = me.and_then(pod_cidr).map(|c| c.to_string());
        if !self.spec.bridge {
            return;
        }
        match me.and_then(pod_cidr) {
            Some(cidr) => {
                let path = self.spec.cni_conf_dir.join(bridge::CONFLIST);
                match write_if_changed(&path, bridge::conflist(cidr).as_bytes(), CERT_MODE) {
                    Ok(true) => {
                        info!(%cidr, path = %path.display(), "pod network: wrote the node's CNI config")
                    }
                    Ok(false) => {}
                    Err(e) => status.message = Some(format!("pod network: {e}")),
                }
            }
            None => status.message = Some("waiting for the node's podCIDR".into()),
        }
        let others: Vec<routes::NodeRoute> = list.iter().filter_map(node_route).collect();
        for change in routes::plan(&status.name, &others, &self.routes) {
            match crate::network::apply_route(&change).await {
                Ok(()) => {
                    info!(?change, "pod network: route");
                    match change {
                        routes::RouteChange::Add { pod_cidr, gateway } => {
                            self.routes.insert(pod_cidr, gateway);
                        }
                        routes::RouteChange::Remove { pod_cidr, .. } => {
                            self.routes.remove(&pod_cidr);
                        }
                    }
                }
                Err(e) => warn!(?change, "pod network: {e}"),
            }
        }
        status.routes = self.routes.len();
    }

    /// When this node's kubelet last renewed its Lease (unix seconds).
    async fn lease_renewed(&self, name: &str) -> Option<u64> {
        let client = self.client.clone()?;
        let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
        match tokio::time::timeout(CALL_TIMEOUT, leases.get_opt(name)).await {
            Ok(Ok(lease)) => u64::try_from(lease?.spec?.renew_time?.0.as_second()).ok(),
            Ok(Err(e)) => {
                debug!("node lease {name}: {e}");
                None
            }
            Err(_) => None,
        }
    }

    async fn client(&mut self) -> Option<kube::Client> {
        if self.client.is_none() {
            self.client = client::from_kubeconfig(&self.spec.kubelet.kubeconfig, CALL_TIMEOUT)
                .await
                .ok();
        }
        self.client.clone()
    }

    /// containerd's config (restarting it when it changed), then the
    /// shipped images, once per agent start.
    async fn containerd(&mut self) -> Result<(), String> {
        let config = containerd::config::render(
            self.spec.kubelet.cgroup_driver,
            &self.spec.cni_bin_dir.display().to_string(),
            &self.spec.cni_conf_dir.display().to_string(),
        );
        if let Some(dir) = self.spec.containerd_config.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        if write_if_changed(&self.spec.containerd_config, config.as_bytes(), CERT_MODE)
            .map_err(|e| format!("containerd config: {e}"))?
        {
            info!(path = %self.spec.containerd_config.display(), "containerd: wrote its config; restarting it");
            self.supervisor
                .restart_system_unit("containerd.service")
                .await
                .map_err(|e| format!("containerd: {e}"))?;
            self.images_imported = false;
        }
        if !self.images_imported {
            let c = Containerd::connect(&self.spec.containerd_socket)
                .await
                .map_err(|e| e.to_string())?;
            let imported = containerd::import_shipped(&c, &self.spec.images_dir)
                .await
                .map_err(|e| e.to_string())?;
            if !imported.is_empty() {
                info!(images = ?imported, "containerd: imported the images the node ships");
            }
            self.images_imported = true;
        }
        Ok(())
    }

    fn write_files(&self) -> Result<(), PkiError> {
        let s = &self.spec;
        let pki = s.paths.pki();
        std::fs::create_dir_all(&pki).map_err(|e| PkiError::io("creating", &pki, e))?;
        // The kubelet makes its own root directory (the agent's unit may
        // not write under /var/lib but its own).
        std::fs::create_dir_all(&s.cni_conf_dir)
            .map_err(|e| PkiError::io("creating", &s.cni_conf_dir, e))?;
        if let Some(dir) = s.proxy.config_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PkiError::io("creating", dir, e))?;
        }
        write_if_changed(&s.kubelet.client_ca_file, s.ca_pem.as_bytes(), CERT_MODE)?;
        let bootstrap = kubeconfig::render(&KubeconfigSpec {
            cluster: &s.cluster,
            server: &s.server,
            ca_pem: &s.ca_pem,
            user: "kubelet-bootstrap",
            credential: Credential::Token(s.token.bearer()),
        });
        write_if_changed(
            &s.kubelet.bootstrap_kubeconfig,
            bootstrap.as_bytes(),
            KEY_MODE,
        )?;
        write_if_changed(
            &s.kubelet.config_file,
            kubelet::config(&s.kubelet).as_bytes(),
            CERT_MODE,
        )?;
        if let Some(issued) = &s.kubelet_client {
            self.write_kubelet_conf_once(issued)?;
        }
        let pem = kubelet_client_pem(&s.kubelet.root_dir);
        let proxy_conf = kubeconfig::render(&KubeconfigSpec {
            cluster: &s.cluster,
            server: &s.server,
            ca_pem: &s.ca_pem,
            user: "kube-proxy",
            credential: Credential::Files {
                cert: pem.clone(),
                key: pem,
            },
        });
        write_if_changed(&s.proxy.kubeconfig, proxy_conf.as_bytes(), KEY_MODE)?;
        write_if_changed(
            &s.proxy.config_file,
            proxy::config(&s.proxy).as_bytes(),
            CERT_MODE,
        )?;
        Ok(())
    }

    /// Only where there is none: once the kubelet runs, `kubelet.conf` is
    /// its own (it may point it at its certificate store), and a
    /// certificate it renewed must not be replaced by this one.
    fn write_kubelet_conf_once(&self, issued: &IssuedCert) -> Result<(), PkiError> {
        let s = &self.spec;
        let path = &s.kubelet.kubeconfig;
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PkiError::io("inspecting", path, e)),
        }
        let conf = kubeconfig::render(&KubeconfigSpec {
            cluster: &s.cluster,
            server: &s.server,
            ca_pem: &s.ca_pem,
            user: "kubelet",
            credential: Credential::Embedded {
                cert_pem: issued.cert_pem.clone(),
                key_pem: issued.key_pem.clone(),
            },
        });
        write_if_changed(path, conf.as_bytes(), KEY_MODE)?;
        info!(path = %path.display(), node = %s.kubelet.node_name, "kubelet: wrote its kubeconfig with a client certificate from the cluster CA (no TLS bootstrap on a control-plane node)");
        Ok(())
    }

    async fn ensure(&self, name: &str, binary: &str, args: Vec<String>) -> Result<(), String> {
        let spec = ServiceSpec {
            name: name.into(),
            program: self.bin_dir.join(binary),
            args,
            cpu: CpuShare::Normal,
        };
        match self
            .supervisor
            .ensure_current(&spec, &self.record_dir)
            .await
            .map_err(|e| format!("kubernetes: {e}"))?
        {
            Ensured::Running => {}
            Ensured::Started => info!(service = name, "started"),
            Ensured::Restarted => info!(service = name, "restarted with new arguments"),
        }
        Ok(())
    }
}

/// How long a kubelet's node Lease may go unrenewed before its `Ready`
/// condition is not believed: the node lifecycle controller's default
/// `--node-monitor-grace-period`.
pub const LEASE_GRACE_SECS: u64 = 40;

/// Ready now: the `Ready` condition is `True` and the kubelet renewed its
/// Lease within [`LEASE_GRACE_SECS`]. The condition alone can be stale:
/// after a power cycle a Node keeps the `Ready` its kubelet wrote before,
/// until the controller manager notices (a tier-2 run saw "3 Ready" that
/// became 2 a moment later). Both times come from this machine's clock
/// (its kubelet renews the Lease). Pure.
pub fn node_ready_now(n: &Node, lease_renewed_unix: Option<u64>, now_unix: u64) -> bool {
    node_ready(n)
        && lease_renewed_unix.is_some_and(|t| now_unix.saturating_sub(t) <= LEASE_GRACE_SECS)
}

/// The node's `Ready` condition is `True`.
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_cidr(n: &Node) -> Option<Ipv4Net> {
    n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()
}

/// A node's pod range and InternalIP, when it has both.
fn node_route(n: &Node) -> Option<routes::NodeRoute> {
    let internal = n
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse::<IpAddr>().ok())?;
    let IpAddr::V4(internal_ip) = internal else {
        return None;
    };
    Some(routes::NodeRoute {
        name: n.metadata.name.clone()?,
        pod_cidr: pod_cidr(n)?,
        internal_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus as KubeNodeStatus};

    fn node(ready: &str) -> Node {
        Node {
            status: Some(KubeNodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_ready_condition_counts_only_while_the_kubelet_renews_its_lease() {
        let now = 1_000_000;
        assert!(node_ready_now(&node("True"), Some(now - 5), now));
        assert!(node_ready_now(
            &node("True"),
            Some(now - LEASE_GRACE_SECS),
            now
        ));
        // Stale: written before a power cycle, no renewal since.
        assert!(!node_ready_now(
            &node("True"),
            Some(now - LEASE_GRACE_SECS - 1),
            now
        ));
        assert!(!node_ready_now(&node("True"), None, now));
        assert!(!node_ready_now(&node("False"), Some(now), now));
        assert!(!node_ready_now(&node("Unknown"), Some(now), now));
    }
}
