//! The plan: what the agent will do in each boot phase, rendered from the
//! machine's facts and the cluster config. Pure, so `muster agent` can log it
//! and tests can check it. Each step says whether its phase is built yet, so
//! the log never implies work that does not happen.

use crate::config::{Cni, Config, DiscoveryMethod, EtcdPlacement, VipMode};
use crate::metadata::InstanceFacts;
use crate::roles::Topology;
use crate::state::Phase;

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub phase: Phase,
    pub action: String,
    /// False while the phase's module has not landed: the agent logs the
    /// step and does nothing for it.
    pub built: bool,
}

/// The plan for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

/// The role-assignment shape the config asks for.
pub fn topology(config: &Config) -> Topology {
    let etcd = &config.topology.etcd;
    Topology {
        control_plane_count: usize::from(config.topology.control_plane.count),
        dedicated_etcd_count: match etcd.placement {
            EtcdPlacement::ControlPlane => None,
            EtcdPlacement::Dedicated => Some(usize::from(
                etcd.count
                    .unwrap_or(crate::config::Etcd::DEFAULT_DEDICATED_COUNT),
            )),
        },
    }
}

impl Plan {
    /// `kubernetes`: the release the node carries (checked against the
    /// config), `None` when it carries none.
    pub fn build(
        facts: &InstanceFacts,
        config: &Config,
        kubernetes: Option<crate::kubernetes::version::KubeVersion>,
    ) -> Plan {
        let mut steps = Vec::new();
        let mut step = |phase, built, action: String| {
            steps.push(Step {
                phase,
                action,
                built,
            })
        };
        let topo = topology(config);

        let discovery = match config.discovery.method() {
            DiscoveryMethod::Static(s) => format!("static list of {} peers", s.peers.len()),
            DiscoveryMethod::Dns(d) => format!("DNS {:?} records of {}", d.record, d.name),
            DiscoveryMethod::CloudGroup(g) => format!(
                "{} group {}",
                g.provider
                    .map(|p| format!("{p:?}").to_lowercase())
                    .unwrap_or_else(|| facts.provider.to_string()),
                g.name
                    .as_deref()
                    .or(facts.group.as_deref())
                    .unwrap_or("(this instance's own)")
            ),
        };
        step(Phase::Discover, true, format!("find peers: {discovery}"));

        let roles = match topo.dedicated_etcd_count {
            Some(n) => format!(
                "{n} dedicated etcd, {} control plane, the rest workers",
                topo.control_plane_count
            ),
            None => format!(
                "{} control plane with stacked etcd, the rest workers",
                topo.control_plane_count
            ),
        };
        step(
            Phase::AssignRoles,
            true,
            format!(
                "role {:?}: {roles}; a running cluster decides first",
                config.topology.role
            ),
        );
        step(
            Phase::Pki,
            true,
            format!(
                "derive the cluster CA from the cluster secret; issue etcd certificates for {}",
                facts
                    .private_ipv4
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "this node".into())
            ),
        );
        step(
            Phase::Etcd,
            true,
            format!(
                "{}-member etcd with mutual TLS: form, join or restart as peers answer",
                topo.etcd_members()
            ),
        );

        let endpoint = &config.api_endpoint;
        let mode = endpoint.resolved_mode(VipMode::for_platform(facts.provider.as_str()));
        let vip = match endpoint.vip {
            Some(vip) => format!("https://{vip}:{} via {}", endpoint.port, mode.as_str()),
            None => "no VIP (mode none)".into(),
        };
        // Every mover is built (arp, bgp, aws, gce); `none` has nothing to run.
        let vip_built = endpoint.vip.is_some() && mode != VipMode::None;
        step(Phase::ApiEndpoint, vip_built, format!("API endpoint {vip}"));

        let k8s = &config.kubernetes;
        step(
            Phase::Kubernetes,
            kubernetes.is_some(),
            match kubernetes {
                Some(v) => format!(
                    "Kubernetes {v}: control plane on control-plane nodes, kubelet and kube-proxy on every node (pods {}, services {})",
                    k8s.pod_cidr, k8s.service_cidr
                ),
                None => "Kubernetes: this node carries no Kubernetes binaries".into(),
            },
        );
        // The `bridge` CNI (a node-local bridge, routes to the other nodes'
        // pod ranges) is built; Cilium, Calico and the mesh are not.
        let mut network = format!("CNI {:?}", k8s.cni).to_lowercase();
        let mut network_built = kubernetes.is_some() && k8s.cni == Cni::Bridge;
        if let Some(c) = &config.mesh.cilium {
            network.push_str(&format!(", Cilium Cluster Mesh id {}", c.cluster_id));
            network_built = false;
        }
        if config.mesh.istio.as_ref().is_some_and(|i| i.enabled) {
            network.push_str(", Istio multi-cluster");
            network_built = false;
        }
        step(Phase::Network, network_built, network);
        let names = crate::dns::records::Names::from_config(&config.dns, &config.cluster.name);
        let dns = match &names {
            Some(n) => {
                let nodes = n
                    .nodes
                    .as_ref()
                    .map(|d| format!(" and <node>.{d}"))
                    .unwrap_or_default();
                format!(
                    "publish {}{nodes} via {} (ExternalDNS owner `{}`)",
                    n.api,
                    config.dns.provider.as_str(),
                    n.owner
                )
            }
            None => "no DNS provider".into(),
        };
        // Every provider is built (rfc2136, route53, cloudflare, google).
        step(Phase::Dns, names.is_some(), dns);
        Plan { steps }
    }

    /// One line for `muster status`.
    pub fn summary(&self) -> String {
        let built: Vec<String> = self
            .steps
            .iter()
            .filter(|s| s.built)
            .map(|s| s.phase.to_string())
            .collect();
        let pending: Vec<String> = self
            .steps
            .iter()
            .filter(|s| !s.built)
            .map(|s| s.phase.to_string())
            .collect();
        format!(
            "built phases: {}; not built yet: {}",
            built.join(", "),
            pending.join(", ")
        )
    }
}
