//! A control-plane node's part of boot phase 8, the thin side-effect layer
//! over the pure renderers: keep the derived PKI and the kubeconfigs on
//! disk, keep kube-apiserver, kube-controller-manager and kube-scheduler
//! running with the rendered flags, and (once per agent start, under an
//! etcd lock) apply the cluster objects.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tracing::{debug, info, warn};

use super::certs::{self, ApiNames, NodeNames};
use super::client::{self, ClientError};
use super::flags::{self, ControlPlaneSpec};
use super::kubeconfig::{self, Credential, KubeconfigSpec};
use super::objects::{self, ObjectInputs};
use super::token::BootstrapToken;
use crate::discovery::GroupAddresses;
use crate::etcd::client::{Etcd, EtcdTls};
use crate::pki::{
    self, Authority, CERT_MODE, ClusterCa, DerivedP256, KEY_MODE, PkiError, ensure_private_dir,
    write_if_changed,
};
use crate::service::{CpuShare, Ensured, ServiceSpec, Supervisor};
use crate::state::KubernetesStatus;

/// The etcd lock under which one control-plane node at a time applies
/// the cluster objects.
pub const OBJECTS_LOCK: &str = "muster/kubernetes-objects";
/// Files (certificates near expiry, tampered keys) are checked this often.
const FILES_EVERY: Duration = Duration::from_secs(600);
/// A round's quick probes, `/readyz` and the leader lookups: a slower
/// answer counts as none (not ready, leader unknown).
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Other API calls, chiefly the writes of the cluster objects. A
/// starting apiserver on a loaded machine takes seconds per write (3-VM
/// TCG labs: 2-8 s); a shorter limit made every agent give up and retry,
/// and the kubelets waited minutes for their bootstrap token.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// etcd calls of the objects lock, for the same reason.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// What a round spends looking after the Nodes (labels, approvals,
/// deleting the Nodes of gone machines); the rest waits for the next one.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// The supervised services.
pub const APISERVER: &str = "muster-kube-apiserver";
pub const CONTROLLER_MANAGER: &str = "muster-kube-controller-manager";
pub const SCHEDULER: &str = "muster-kube-scheduler";

/// The cluster's derived keys: every control-plane node computes the same.
pub struct Authorities {
    pub kubernetes: ClusterCa,
    pub front_proxy: ClusterCa,
    /// etcd's CA: signs the apiserver's etcd client certificate.
    pub cluster: ClusterCa,
    pub service_account: DerivedP256,
    pub token: BootstrapToken,
}

impl Authorities {
    pub fn derive(cluster_name: &str, secret: &[u8]) -> Result<Authorities, PkiError> {
        Ok(Authorities {
            kubernetes: ClusterCa::derive_authority(Authority::Kubernetes, cluster_name, secret)?,
            front_proxy: ClusterCa::derive_authority(Authority::FrontProxy, cluster_name, secret)?,
            cluster: ClusterCa::derive(cluster_name, secret)?,
            service_account: DerivedP256::derive(b"service-account/", cluster_name, secret)?,
            token: BootstrapToken::derive(cluster_name, secret)?,
        })
    }

    fn ca(&self, a: Authority) -> &ClusterCa {
        match a {
            Authority::Kubernetes => &self.kubernetes,
            Authority::FrontProxy => &self.front_proxy,
            Authority::Cluster => &self.cluster,
        }
    }
}

/// Everything a control-plane round needs.
pub struct ControlPlane {
    pub spec: ControlPlaneSpec,
    pub api: ApiNames,
    pub node: NodeNames,
    pub authorities: Authorities,
    /// `https://VIP:PORT` (or the node's own address without a VIP): what
    /// admin.conf and cluster-info point at.
    pub endpoint: String,
    pub bin_dir: PathBuf,
    pub supervisor: Supervisor,
    /// Where the started services' arguments are recorded.
    pub record_dir: PathBuf,
    /// etcd, for the objects lock.
    pub etcd_endpoints: Vec<String>,
    pub etcd_tls: EtcdTls,
    files_checked: Option<Instant>,
    client: Option<kube::Client>,
    applied: Option<String>,
    was_ready: bool,
    /// The local apiserver has answered /readyz since the agent started:
    /// from then on the controllers (and this node's kubelet) run.
    seen_ready: bool,
    /// The last round's node work failed or timed out: the next failure
    /// is only logged at debug, the recovery at info.
    nodes_failing: bool,
}

/// The control-plane services to keep running. The controller manager and
/// the scheduler only start once the local apiserver has been ready: under
/// contention (three TCG VMs on two cores) starting all three at once kept
/// the apiserver from /readyz for minutes while the others crash-looped
/// against it. Pure.
pub fn services_wanted(apiserver_seen_ready: bool) -> &'static [&'static str] {
    if apiserver_seen_ready {
        &[APISERVER, CONTROLLER_MANAGER, SCHEDULER]
    } else {
        &[APISERVER]
    }
}

impl ControlPlane {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: ControlPlaneSpec,
        api: ApiNames,
        node: NodeNames,
        authorities: Authorities,
        endpoint: String,
        bin_dir: PathBuf,
        supervisor: Supervisor,
        record_dir: PathBuf,
        etcd_endpoints: Vec<String>,
        etcd_tls: EtcdTls,
    ) -> ControlPlane {
        ControlPlane {
            spec,
            api,
            node,
            authorities,
            endpoint,
            bin_dir,
            supervisor,
            record_dir,
            etcd_endpoints,
            etcd_tls,
            files_checked: None,
            client: None,
            applied: None,
            was_ready: false,
            seen_ready: false,
            nodes_failing: false,
        }
    }

    /// This node holds no etcd member any more (the leader shrank an
    /// over-size cluster, docs/design/bootstrap.md): stop the control-plane
    /// services, so that no apiserver runs on a worker and the VIP's health
    /// check stops counting this node. Only if this node started them; a
    /// later promotion starts them afresh.
    pub async fn stand_down(&mut self) -> Result<(), String> {
        if self.files_checked.is_none() {
            return Ok(());
        }
        info!("no longer a control-plane node; stopping its services");
        for name in [SCHEDULER, CONTROLLER_MANAGER, APISERVER] {
            self.supervisor
                .stop(name)
                .await
                .map_err(|e| format!("cannot stop {name}: {e}"))?;
        }
        self.files_checked = None;
        self.client = None;
        self.applied = None;
        self.was_ready = false;
        self.seen_ready = false;
        Ok(())
    }

    /// The agent's own kubeconfig: the local apiserver, admin identity.
    pub fn agent_kubeconfig(paths: &super::paths::KubePaths) -> PathBuf {
        paths.root().join("muster-agent.conf")
    }

    /// One round; what it found goes to the status. `group`: the
    /// addresses of the cluster's machines, as discovery lists them.
    pub async fn round(&mut self, status: &mut KubernetesStatus, group: &GroupAddresses) {
        status.components = vec![
            "kube-apiserver".into(),
            "kube-controller-manager".into(),
            "kube-scheduler".into(),
        ];
        status.message = None;
        if self
            .files_checked
            .is_none_or(|t| t.elapsed() >= FILES_EVERY)
        {
            match self.write_files() {
                Ok(()) => self.files_checked = Some(Instant::now()),
                Err(e) => {
                    status.message = Some(format!("kubernetes pki: {e}"));
                    return;
                }
            }
        }
        if let Err(e) = self.ensure_services().await {
            status.message = Some(e);
            return;
        }
        let Some(client) = self.client().await else {
            status.apiserver_ready = false;
            status.message = Some("waiting for the local kube-apiserver".into());
            return;
        };
        let ready = client::ready(&client, READY_TIMEOUT).await;
        if ready != self.was_ready {
            info!(ready, "kube-apiserver /readyz");
            self.was_ready = ready;
        }
        status.apiserver_ready = ready;
        if !ready {
            status.message = Some("the local kube-apiserver is not ready yet".into());
            return;
        }
        if !self.seen_ready {
            self.seen_ready = true;
            if let Err(e) = self.ensure_services().await {
                status.message = Some(e);
                return;
            }
        }
        if self.applied.is_none() {
            match self.apply_objects(&client).await {
                Ok(fp) => self.applied = Some(fp),
                Err(e) => {
                    warn!("{e}");
                    status.message = Some(e);
                }
            }
        }
        status.objects = self.applied.clone();
        // The round's own calls are bounded tighter than the client's
        // limit: the node part (kubelet, kube-proxy, routes) runs after
        // this round, and must not wait behind a slow apiserver.
        let failure = match tokio::time::timeout(
            ROUND_TIMEOUT,
            self.look_after_nodes(&client, group),
        )
        .await
        {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {ROUND_TIMEOUT:?}")),
        };
        self.report_node_work(failure);
        let leader = |lease: &'static str| {
            let client = client.clone();
            async move {
                tokio::time::timeout(READY_TIMEOUT, client::lease_holder(&client, lease))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            }
        };
        (status.controller_manager_leader, status.scheduler_leader) =
            tokio::join!(leader("kube-controller-manager"), leader("kube-scheduler"));
    }

    /// Logs the node work's failures once per streak (a slow apiserver
    /// under TCG fails many rounds in a row), and its recovery.
    fn report_node_work(&mut self, failure: Option<String>) {
        match (&failure, self.nodes_failing) {
            (Some(e), false) => warn!("kubernetes nodes: {e} (retried every round)"),
            (Some(e), true) => debug!("kubernetes nodes: {e}"),
            (None, true) => info!("kubernetes nodes: answered again"),
            (None, false) => {}
        }
        self.nodes_failing = failure.is_some();
    }

    /// What only a control-plane node can do for the nodes: mark itself as
    /// control plane (a kubelet may not set `node-role` labels; checked
    /// every round, so a Node its kubelet registered again is marked
    /// again), approve the kubelet serving certificates it can vouch for,
    /// drain the Nodes of machines that are leaving, and delete the Nodes
    /// of machines that left the group for good.
    async fn look_after_nodes(
        &mut self,
        client: &kube::Client,
        addresses: &GroupAddresses,
    ) -> Result<(), kube::Error> {
        let group = &addresses.live;
        let nodes: Api<Node> = Api::all(client.clone());
        let listed = nodes.list(&ListParams::default()).await?.items;
        let me = &self.node.name;
        if super::lacks_control_plane_label(&listed, me) {
            let patch = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": me, "labels": {super::kubelet::CONTROL_PLANE_LABEL: ""}}
            });
            nodes
                .patch(
                    me,
                    &PatchParams::apply(client::FIELD_MANAGER),
                    &Patch::Apply(&patch),
                )
                .await?;
            info!(node = %me, "labelled this node as control plane");
        }
        if group.is_empty() {
            return Ok(());
        }
        super::serving::approve_pending(client, group).await?;
        for action in super::node_actions(&listed, addresses) {
            match action {
                super::NodeAction::Drain(name) => {
                    super::drain::round(client, &name).await?;
                }
                super::NodeAction::Uncordon(name) => super::drain::uncordon(client, &name).await?,
                super::NodeAction::Delete(name) => {
                    match nodes.delete(&name, &Default::default()).await {
                        Ok(_) => {
                            info!(node = %name, "deleted the Node of a machine that left the group")
                        }
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    async fn client(&mut self) -> Option<kube::Client> {
        if self.client.is_none() {
            let path = Self::agent_kubeconfig(&self.spec.paths);
            self.client = client::from_kubeconfig(&path, REQUEST_TIMEOUT).await.ok();
        }
        self.client.clone()
    }

    /// The derived files (CAs, service-account key, etcd's CA) are
    /// rewritten when they differ from the derivation, which also repairs
    /// a tampered file; leaf certificates are kept while valid.
    fn write_files(&self) -> Result<(), PkiError> {
        let paths = &self.spec.paths;
        let pki_dir = paths.pki();
        std::fs::create_dir_all(paths.root())
            .map_err(|e| PkiError::io("creating", paths.root(), e))?;
        ensure_private_dir(&pki_dir)?;
        ensure_private_dir(&pki_dir.join("etcd"))?;
        let a = &self.authorities;
        let mut repaired = Vec::new();
        let mut write = |path: PathBuf, bytes: &[u8], mode: u32| -> Result<(), PkiError> {
            if write_if_changed(&path, bytes, mode)? {
                repaired.push(path.display().to_string());
            }
            Ok(())
        };
        for (ca, (cert, key)) in [
            (&a.kubernetes, paths.ca()),
            (&a.front_proxy, paths.front_proxy_ca()),
        ] {
            write(cert, ca.cert_pem().as_bytes(), CERT_MODE)?;
            if let Some(k) = ca.private_key_pem()? {
                write(key, k.expose().as_bytes(), KEY_MODE)?;
            }
        }
        write(
            paths.sa_key(),
            a.service_account.private_pem()?.expose().as_bytes(),
            KEY_MODE,
        )?;
        write(
            paths.sa_pub(),
            a.service_account.public_pem()?.as_bytes(),
            CERT_MODE,
        )?;
        write(paths.etcd_ca(), a.cluster.cert_pem().as_bytes(), CERT_MODE)?;

        let now = SystemTime::now();
        for entry in certs::control_plane(&self.api, &self.node) {
            let leaf = pki::ensure_leaf(
                &pki_dir,
                entry.stem,
                a.ca(entry.authority),
                &entry.spec,
                now,
            )?;
            if entry.stem == "apiserver" {
                // Served with the CA after it, so a worker holding only the
                // CA's pin can check the server before it sends its token
                // (`join.rs`).
                let chain = format!("{}{}", leaf.cert_pem, a.kubernetes.cert_pem());
                write(paths.apiserver_chain(), chain.as_bytes(), CERT_MODE)?;
            }
        }
        // The join credential for worker-only groups (`muster
        // join-credential` prints it; root only).
        let join = super::join_credential_yaml(
            &self.spec.cluster_name,
            &a.token,
            &a.kubernetes.spki_sha256(),
            &self.api,
            self.spec.secure_port,
        );
        write(paths.join_credential(), join.as_bytes(), KEY_MODE)?;

        let local = format!("https://127.0.0.1:{}", self.spec.secure_port);
        let ca_pem = a.kubernetes.cert_pem();
        let files = |stem: &str| {
            let (cert, key) = paths.leaf(stem);
            Credential::Files { cert, key }
        };
        let admin = {
            let (cert, key) = paths.leaf("admin");
            let read =
                |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| PkiError::io("reading", p, e));
            Credential::Embedded {
                cert_pem: read(&cert)?,
                key_pem: pki::KeyPem::new(read(&key)?),
            }
        };
        let cluster = self.spec.cluster_name.as_str();
        for (path, server, user, credential) in [
            (
                paths.controller_manager_conf(),
                local.as_str(),
                "system:kube-controller-manager",
                files("controller-manager"),
            ),
            (
                paths.scheduler_conf(),
                local.as_str(),
                "system:kube-scheduler",
                files("scheduler"),
            ),
            (
                Self::agent_kubeconfig(paths),
                local.as_str(),
                "muster-agent",
                files("admin"),
            ),
            (
                paths.admin_conf(),
                self.endpoint.as_str(),
                "kubernetes-admin",
                admin,
            ),
        ] {
            let text = kubeconfig::render(&KubeconfigSpec {
                cluster,
                server,
                ca_pem,
                user,
                credential,
            });
            write(path, text.as_bytes(), KEY_MODE)?;
        }
        if !repaired.is_empty() {
            info!(files = ?repaired, "wrote derived files");
        }
        Ok(())
    }

    /// Whether the local apiserver has been ready since the agent started:
    /// this node's kubelet starts then (it talks to that apiserver, and
    /// must not compete with its start for the CPU).
    pub fn seen_ready(&self) -> bool {
        self.seen_ready
    }

    async fn ensure_services(&self) -> Result<(), String> {
        let wanted = services_wanted(self.seen_ready);
        let bin = |name: &str| self.bin_dir.join(name);
        let specs = [
            ServiceSpec {
                name: APISERVER.into(),
                program: bin("kube-apiserver"),
                args: flags::apiserver(&self.spec),
                cpu: CpuShare::Normal,
            },
            ServiceSpec {
                name: CONTROLLER_MANAGER.into(),
                program: bin("kube-controller-manager"),
                args: flags::controller_manager(&self.spec),
                cpu: CpuShare::Normal,
            },
            ServiceSpec {
                name: SCHEDULER.into(),
                program: bin("kube-scheduler"),
                args: flags::scheduler(&self.spec),
                cpu: CpuShare::Normal,
            },
        ];
        for spec in specs.iter().filter(|s| wanted.contains(&s.name.as_str())) {
            match self
                .supervisor
                .ensure_current(spec, &self.record_dir)
                .await
                .map_err(|e| format!("kubernetes: {e}"))?
            {
                Ensured::Running => {}
                Ensured::Started => info!(service = %spec.name, "started"),
                Ensured::Restarted => info!(service = %spec.name, "restarted with new arguments"),
            }
        }
        Ok(())
    }

    /// Server-side apply of the cluster objects, by one control-plane node
    /// at a time (etcd lock). Idempotent: applying the same objects again
    /// changes nothing. Returns their fingerprint.
    async fn apply_objects(&self, client: &kube::Client) -> Result<String, String> {
        let a = &self.authorities;
        let objects = objects::render(&ObjectInputs {
            server: &self.endpoint,
            ca_pem: a.kubernetes.cert_pem(),
            token: &a.token,
        });
        let fingerprint = objects.fingerprint();
        let mut etcd = Etcd::connect(self.etcd_endpoints.clone(), &self.etcd_tls, LOCK_TIMEOUT)
            .await
            .map_err(|e| format!("kubernetes objects: {e}"))?;
        let (key, lease) = etcd
            .lock(OBJECTS_LOCK, 30)
            .await
            .map_err(|e| format!("kubernetes objects: lock: {e}"))?;
        let result = apply_all(client, &objects).await;
        etcd.unlock(key, lease).await;
        result.map_err(|e| format!("kubernetes objects: {e}"))?;
        info!(objects = ?objects.names(), %fingerprint, "cluster objects applied");
        Ok(fingerprint)
    }
}

async fn apply_all(client: &kube::Client, o: &objects::ClusterObjects) -> Result<(), ClientError> {
    for x in &o.secrets {
        client::apply_namespaced(client, x).await?;
    }
    for x in &o.config_maps {
        client::apply_namespaced(client, x).await?;
    }
    for x in &o.roles {
        client::apply_namespaced(client, x).await?;
    }
    for x in &o.role_bindings {
        client::apply_namespaced(client, x).await?;
    }
    for x in &o.cluster_role_bindings {
        client::apply_cluster(client, x).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controllers_wait_for_a_ready_apiserver() {
        assert_eq!(services_wanted(false), &[APISERVER]);
        assert_eq!(
            services_wanted(true),
            &[APISERVER, CONTROLLER_MANAGER, SCHEDULER]
        );
    }
}
