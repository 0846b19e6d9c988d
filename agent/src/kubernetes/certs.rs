//! The control plane's certificates as a table, kubeadm's way
//! (`cmd/kubeadm/app/phases/certs/certlist.go`): each entry is a file
//! stem, the CA that signs it and what it says. Pure: the agent issues and
//! keeps them with `pki::ensure_leaf`; tests compare the table.
//!
//! File names follow kubeadm's layout under `/etc/kubernetes/pki`, so
//! operators and tools find them where they expect. Client certificates
//! kubeadm embeds in its kubeconfigs (controller-manager, scheduler,
//! admin) are files here too, referenced by the kubeconfigs, so renewing
//! one is a file swap that client-go picks up on its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::pki::{Authority, LEAF_VALIDITY, LeafSpec, San, Usage, canonical_sans};

/// The group Kubernetes gives every permission, for the apiserver's
/// kubelet client (as kubeadm 1.28 does) and the break-glass admin.
pub const MASTERS_GROUP: &str = "system:masters";

/// What the cluster-wide part of the certificates says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiNames {
    /// The floating API address, when there is one.
    pub vip: Option<Ipv4Addr>,
    /// `apiEndpoint.dnsName`.
    pub dns_name: Option<String>,
    /// The service network: its first address is the `kubernetes` Service.
    pub service_cidr: IpNet,
    /// `cluster.local` unless configured otherwise.
    pub cluster_domain: String,
}

/// This node, as its certificates name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNames {
    /// The Kubernetes node name (the hostname, lower case).
    pub name: String,
    pub ip: Ipv4Addr,
}

/// One certificate of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEntry {
    /// `<stem>.crt` and `<stem>.key` in the pki directory.
    pub stem: &'static str,
    pub authority: Authority,
    pub spec: LeafSpec,
}

/// The first address of the service network: the ClusterIP of the
/// `kubernetes` Service, which in-cluster clients dial.
pub fn first_service_ip(service_cidr: &IpNet) -> Option<IpAddr> {
    match service_cidr {
        IpNet::V4(n) => n
            .network()
            .to_bits()
            .checked_add(1)
            .map(|b| IpAddr::V4(Ipv4Addr::from_bits(b))),
        IpNet::V6(n) => n
            .network()
            .to_bits()
            .checked_add(1)
            .map(|b| IpAddr::V6(Ipv6Addr::from_bits(b))),
    }
}

/// The names the API server answers to: its own node (name and address,
/// never only the VIP), the VIP and DNS name clients use, loopback for
/// the local agent and kubelet, and the in-cluster `kubernetes` Service.
pub fn apiserver_sans(api: &ApiNames, node: &NodeNames) -> Vec<San> {
    let mut sans = vec![
        San::Dns(node.name.clone()),
        San::Ip(IpAddr::V4(node.ip)),
        San::Dns("localhost".into()),
        San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        San::Dns("kubernetes".into()),
        San::Dns("kubernetes.default".into()),
        San::Dns("kubernetes.default.svc".into()),
        San::Dns(format!("kubernetes.default.svc.{}", api.cluster_domain)),
    ];
    sans.extend(api.vip.map(|v| San::Ip(IpAddr::V4(v))));
    sans.extend(api.dns_name.clone().map(San::Dns));
    sans.extend(first_service_ip(&api.service_cidr).map(San::Ip));
    canonical_sans(sans)
}

fn client(cn: &str, org: Option<&str>) -> LeafSpec {
    LeafSpec {
        common_name: cn.into(),
        organization: org.map(str::to_string),
        sans: Vec::new(),
        usages: vec![Usage::ClientAuth],
        validity: LEAF_VALIDITY,
    }
}

/// The client certificate of a control-plane node's kubelet, as kubeadm
/// writes into `kubelet.conf` on the nodes it holds the CA on: with it the
/// kubelet registers as soon as it starts, instead of waiting for the
/// controller-manager to sign its TLS-bootstrap request (that waited
/// 200 s under TCG: the signer is among the last controllers started).
/// The kubelet copies it into its own store and renews it from there.
pub fn kubelet_client(node_name: &str) -> LeafSpec {
    client(&format!("{NODE_USER_PREFIX}{node_name}"), Some(NODES_GROUP))
}

/// A kubelet's user name is this and its node's name; its group is
/// [`NODES_GROUP`]: what the Node authorizer and NodeRestriction admit.
pub const NODE_USER_PREFIX: &str = "system:node:";
pub const NODES_GROUP: &str = "system:nodes";

/// A serving certificate for a component that listens on loopback only.
fn loopback_server(cn: &str) -> LeafSpec {
    LeafSpec {
        common_name: cn.into(),
        organization: None,
        sans: canonical_sans([
            San::Dns("localhost".into()),
            San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ]),
        usages: vec![Usage::ServerAuth],
        validity: LEAF_VALIDITY,
    }
}

/// Every certificate a control-plane node holds.
pub fn control_plane(api: &ApiNames, node: &NodeNames) -> Vec<CertEntry> {
    vec![
        CertEntry {
            stem: "apiserver",
            authority: Authority::Kubernetes,
            spec: LeafSpec {
                common_name: "kube-apiserver".into(),
                organization: None,
                sans: apiserver_sans(api, node),
                usages: vec![Usage::ServerAuth],
                validity: LEAF_VALIDITY,
            },
        },
        CertEntry {
            stem: "apiserver-kubelet-client",
            authority: Authority::Kubernetes,
            spec: client("kube-apiserver-kubelet-client", Some(MASTERS_GROUP)),
        },
        // etcd's clients are checked against the cluster (etcd) CA.
        CertEntry {
            stem: "apiserver-etcd-client",
            authority: Authority::Cluster,
            spec: client("kube-apiserver-etcd-client", None),
        },
        // Must match --requestheader-allowed-names.
        CertEntry {
            stem: "front-proxy-client",
            authority: Authority::FrontProxy,
            spec: client(FRONT_PROXY_CLIENT, None),
        },
        CertEntry {
            stem: "controller-manager",
            authority: Authority::Kubernetes,
            spec: client("system:kube-controller-manager", None),
        },
        CertEntry {
            stem: "scheduler",
            authority: Authority::Kubernetes,
            spec: client("system:kube-scheduler", None),
        },
        // Their secure ports (health and metrics, on loopback). Without a
        // certificate each generates two RSA-2048 keys at start, which
        // took 80-95 s under TCG (measured on the lab's consoles).
        CertEntry {
            stem: "controller-manager-server",
            authority: Authority::Kubernetes,
            spec: loopback_server("kube-controller-manager"),
        },
        CertEntry {
            stem: "scheduler-server",
            authority: Authority::Kubernetes,
            spec: loopback_server("kube-scheduler"),
        },
        // The admin kubeconfig (`muster kubeconfig`) and the agent's own
        // client: cluster objects are applied before any RBAC exists.
        CertEntry {
            stem: "admin",
            authority: Authority::Kubernetes,
            spec: client("kubernetes-admin", Some(MASTERS_GROUP)),
        },
    ]
}

/// The front proxy's client name, as the apiserver's allow list says it.
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> ApiNames {
        ApiNames {
            vip: Some(Ipv4Addr::new(10, 0, 0, 100)),
            dns_name: Some("api.prod.example.com".into()),
            service_cidr: "10.96.0.0/12".parse().expect("cidr"),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn node() -> NodeNames {
        NodeNames {
            name: "ip-10-0-0-11".into(),
            ip: Ipv4Addr::new(10, 0, 0, 11),
        }
    }

    #[test]
    fn the_apiserver_answers_to_node_vip_name_loopback_and_the_service() {
        let sans = apiserver_sans(&api(), &node());
        for want in [
            San::Ip("10.0.0.11".parse().expect("ip")),
            San::Ip("10.0.0.100".parse().expect("ip")),
            San::Ip("10.96.0.1".parse().expect("ip")),
            San::Ip("127.0.0.1".parse().expect("ip")),
            San::Dns("api.prod.example.com".into()),
            San::Dns("ip-10-0-0-11".into()),
            San::Dns("localhost".into()),
            San::Dns("kubernetes.default.svc.cluster.local".into()),
        ] {
            assert!(sans.contains(&want), "{want} missing from {sans:?}");
        }
        let no_vip = ApiNames {
            vip: None,
            dns_name: None,
            ..api()
        };
        assert_eq!(apiserver_sans(&no_vip, &node()).len(), sans.len() - 2);
    }

    #[test]
    fn the_table_names_kubeadms_files_with_their_cas_and_identities() {
        let table = control_plane(&api(), &node());
        let row = |stem: &str| {
            table
                .iter()
                .find(|e| e.stem == stem)
                .unwrap_or_else(|| panic!("no {stem}"))
        };
        assert_eq!(row("apiserver").spec.usages, vec![Usage::ServerAuth]);
        assert_eq!(row("apiserver-etcd-client").authority, Authority::Cluster);
        assert_eq!(row("front-proxy-client").authority, Authority::FrontProxy);
        assert_eq!(
            row("admin").spec.organization.as_deref(),
            Some(MASTERS_GROUP)
        );
        assert_eq!(
            row("controller-manager").spec.common_name,
            "system:kube-controller-manager"
        );
        assert_eq!(row("scheduler").spec.common_name, "system:kube-scheduler");
        for stem in ["controller-manager-server", "scheduler-server"] {
            assert_eq!(row(stem).spec.usages, vec![Usage::ServerAuth]);
            assert!(
                row(stem)
                    .spec
                    .sans
                    .contains(&San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))),
                "{stem} answers on 127.0.0.1"
            );
        }
        let mut stems: Vec<_> = table.iter().map(|e| e.stem).collect();
        stems.dedup();
        assert_eq!(stems.len(), table.len(), "stems are unique");
    }

    #[test]
    fn a_control_plane_kubelet_is_named_as_the_node_authorizer_expects() {
        let spec = kubelet_client("node-1");
        assert_eq!(spec.common_name, "system:node:node-1");
        assert_eq!(spec.organization.as_deref(), Some("system:nodes"));
        assert_eq!(spec.usages, vec![Usage::ClientAuth]);
    }

    #[test]
    fn first_service_ip_is_network_plus_one() {
        let ip = |c: &str| first_service_ip(&c.parse().expect("cidr")).map(|i| i.to_string());
        assert_eq!(ip("10.96.0.0/12").as_deref(), Some("10.96.0.1"));
        assert_eq!(ip("10.96.3.7/16").as_deref(), Some("10.96.0.1"));
        assert_eq!(ip("fd00::/108").as_deref(), Some("fd00::1"));
    }
}
