//! The control-plane components' command lines, as pure functions of one
//! spec (kubeadm's `getAPIServerCommand` and friends in
//! `cmd/kubeadm/app/phases/controlplane/manifests.go`, the flags they set
//! for 1.28, adapted to host services and an external etcd).
//!
//! Version-specific rendering goes here, keyed by `spec.version`: for the
//! supported releases (see `version.rs`) the flags below are the same.

use std::net::Ipv4Addr;

use ipnet::IpNet;

use super::certs::FRONT_PROXY_CLIENT;
use super::paths::KubePaths;
use super::version::KubeVersion;
use crate::config::LeaderElection;

/// What the control plane of this node is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneSpec {
    pub version: KubeVersion,
    pub cluster_name: String,
    /// This node's own address: advertised in the `kubernetes` Endpoints,
    /// never the VIP (clients would be sent to whichever node holds it).
    pub node_ip: Ipv4Addr,
    pub secure_port: u16,
    /// `https://127.0.0.1:2379` with stacked etcd (the local member), else
    /// every member.
    pub etcd_servers: Vec<String>,
    pub service_cidr: IpNet,
    pub pod_cidr: IpNet,
    pub cluster_domain: String,
    pub paths: KubePaths,
    /// Of the controller manager and the scheduler.
    pub leader_election: LeaderElection,
}

fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

fn path(p: std::path::PathBuf) -> String {
    p.display().to_string()
}

/// The issuer every apiserver of the cluster signs service-account tokens
/// with; it must be identical on all of them (a token from one is checked
/// by another).
pub fn service_account_issuer(cluster_domain: &str) -> String {
    format!("https://kubernetes.default.svc.{cluster_domain}")
}

pub fn apiserver(s: &ControlPlaneSpec) -> Vec<String> {
    let p = &s.paths;
    let key = p.leaf("apiserver").1;
    let cert = p.apiserver_chain();
    let (kubelet_cert, kubelet_key) = p.leaf("apiserver-kubelet-client");
    let (etcd_cert, etcd_key) = p.leaf("apiserver-etcd-client");
    let (proxy_cert, proxy_key) = p.leaf("front-proxy-client");
    vec![
        flag("advertise-address", s.node_ip),
        flag("allow-privileged", true),
        // Nothing without credentials: health checks and discovery use
        // certificates or the bootstrap token.
        flag("anonymous-auth", false),
        flag("authorization-mode", "Node,RBAC"),
        flag("bind-address", "0.0.0.0"),
        flag("client-ca-file", path(p.ca().0)),
        flag("enable-admission-plugins", "NodeRestriction"),
        flag("enable-bootstrap-token-auth", true),
        // A dead apiserver leaves the `kubernetes` Endpoints with its lease.
        flag("endpoint-reconciler-type", "lease"),
        flag("etcd-cafile", path(p.etcd_ca())),
        flag("etcd-certfile", path(etcd_cert)),
        flag("etcd-keyfile", path(etcd_key)),
        flag("etcd-servers", s.etcd_servers.join(",")),
        // Kubelet serving certificates are signed by the cluster CA (the
        // agents approve them, `serving.rs`): check them.
        flag("kubelet-certificate-authority", path(p.ca().0)),
        flag("kubelet-client-certificate", path(kubelet_cert)),
        flag("kubelet-client-key", path(kubelet_key)),
        flag(
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname",
        ),
        flag("profiling", false),
        flag("proxy-client-cert-file", path(proxy_cert)),
        flag("proxy-client-key-file", path(proxy_key)),
        flag("requestheader-allowed-names", FRONT_PROXY_CLIENT),
        flag("requestheader-client-ca-file", path(p.front_proxy_ca().0)),
        flag("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
        flag("requestheader-group-headers", "X-Remote-Group"),
        flag("requestheader-username-headers", "X-Remote-User"),
        flag("secure-port", s.secure_port),
        flag(
            "service-account-issuer",
            service_account_issuer(&s.cluster_domain),
        ),
        flag("service-account-key-file", path(p.sa_pub())),
        flag("service-account-signing-key-file", path(p.sa_key())),
        flag("service-cluster-ip-range", s.service_cidr),
        flag("tls-cert-file", path(cert)),
        flag("tls-private-key-file", path(key)),
    ]
}

pub fn controller_manager(s: &ControlPlaneSpec) -> Vec<String> {
    let p = &s.paths;
    let conf = path(p.controller_manager_conf());
    let (ca, ca_key) = p.ca();
    let mut args = vec![
        // Node IPAM: each Node gets a podCIDR from the pod network (the
        // bridge CNI and the agent's routes use it).
        flag("allocate-node-cidrs", true),
        flag("authentication-kubeconfig", &conf),
        flag("authorization-kubeconfig", &conf),
        flag("bind-address", "127.0.0.1"),
        flag("client-ca-file", path(ca.clone())),
        flag("cluster-cidr", s.pod_cidr),
        flag("cluster-name", &s.cluster_name),
        // The CSR signer: kubelet client (and serving) certificates.
        flag("cluster-signing-cert-file", path(ca.clone())),
        flag("cluster-signing-key-file", path(ca_key)),
        // bootstrapsigner and tokencleaner are off by default; kubelet TLS
        // bootstrap and cluster-info's signatures need them.
        flag("controllers", "*,bootstrapsigner,tokencleaner"),
        flag("kubeconfig", &conf),
    ];
    args.extend(leader_election(&s.leader_election));
    args.extend([
        flag("profiling", false),
        flag("requestheader-client-ca-file", path(p.front_proxy_ca().0)),
        flag("root-ca-file", path(ca)),
        flag("service-account-private-key-file", path(p.sa_key())),
        flag("service-cluster-ip-range", s.service_cidr),
    ]);
    args.extend(serving(p, "controller-manager-server"));
    args.push(flag("use-service-account-credentials", true));
    args
}

/// `--tls-cert-file` and `--tls-private-key-file` from the agent's table
/// (`certs.rs`): a component without them makes its own RSA keys at
/// every start, minutes under TCG.
fn serving(p: &KubePaths, stem: &str) -> [String; 2] {
    let (cert, key) = p.leaf(stem);
    [
        flag("tls-cert-file", path(cert)),
        flag("tls-private-key-file", path(key)),
    ]
}

/// `--leader-elect` and its timers.
fn leader_election(le: &LeaderElection) -> [String; 4] {
    [
        flag("leader-elect", true),
        flag("leader-elect-lease-duration", le.lease_duration),
        flag("leader-elect-renew-deadline", le.renew_deadline),
        flag("leader-elect-retry-period", le.retry_period),
    ]
}

pub fn scheduler(s: &ControlPlaneSpec) -> Vec<String> {
    let conf = path(s.paths.scheduler_conf());
    let mut args = vec![
        flag("authentication-kubeconfig", &conf),
        flag("authorization-kubeconfig", &conf),
        flag("bind-address", "127.0.0.1"),
        flag("kubeconfig", &conf),
    ];
    args.extend(leader_election(&s.leader_election));
    args.push(flag("profiling", false));
    args.extend(serving(&s.paths, "scheduler-server"));
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigDuration, LeaderElectionSettings};
    use std::time::Duration;

    fn spec() -> ControlPlaneSpec {
        ControlPlaneSpec {
            version: KubeVersion::parse("1.28.7").expect("version"),
            cluster_name: "prod".into(),
            node_ip: Ipv4Addr::new(10, 0, 0, 11),
            secure_port: 6443,
            etcd_servers: vec!["https://127.0.0.1:2379".into()],
            service_cidr: "10.96.0.0/12".parse().expect("cidr"),
            pod_cidr: "10.244.0.0/16".parse().expect("cidr"),
            cluster_domain: "cluster.local".into(),
            paths: KubePaths::new("/etc/kubernetes"),
            leader_election: LeaderElectionSettings::default().resolved(),
        }
    }

    fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        let prefix = format!("--{name}=");
        let mut found = args.iter().filter_map(|a| a.strip_prefix(&prefix));
        let v = found.next();
        assert!(found.next().is_none(), "--{name} given twice");
        v
    }

    #[test]
    fn the_apiserver_advertises_its_own_address_and_uses_kubeadms_files() {
        let a = apiserver(&spec());
        for (name, want) in [
            ("advertise-address", "10.0.0.11"),
            ("etcd-servers", "https://127.0.0.1:2379"),
            ("etcd-cafile", "/etc/kubernetes/pki/etcd/ca.crt"),
            ("client-ca-file", "/etc/kubernetes/pki/ca.crt"),
            ("tls-cert-file", "/etc/kubernetes/pki/apiserver-chain.crt"),
            ("service-account-key-file", "/etc/kubernetes/pki/sa.pub"),
            (
                "service-account-signing-key-file",
                "/etc/kubernetes/pki/sa.key",
            ),
            (
                "service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
            ),
            ("anonymous-auth", "false"),
            ("authorization-mode", "Node,RBAC"),
            ("enable-bootstrap-token-auth", "true"),
            ("requestheader-allowed-names", "front-proxy-client"),
            ("secure-port", "6443"),
            ("service-cluster-ip-range", "10.96.0.0/12"),
        ] {
            assert_eq!(value(&a, name), Some(want), "--{name}");
        }
    }

    #[test]
    fn the_controller_manager_signs_nodes_and_runs_the_bootstrap_controllers() {
        let c = controller_manager(&spec());
        for (name, want) in [
            ("controllers", "*,bootstrapsigner,tokencleaner"),
            ("cluster-signing-key-file", "/etc/kubernetes/pki/ca.key"),
            ("allocate-node-cidrs", "true"),
            ("cluster-cidr", "10.244.0.0/16"),
            ("leader-elect", "true"),
            ("kubeconfig", "/etc/kubernetes/controller-manager.conf"),
            ("use-service-account-credentials", "true"),
        ] {
            assert_eq!(value(&c, name), Some(want), "--{name}");
        }
        let s = scheduler(&spec());
        assert_eq!(
            value(&s, "kubeconfig"),
            Some("/etc/kubernetes/scheduler.conf")
        );
        assert_eq!(value(&s, "leader-elect"), Some("true"));
    }

    #[test]
    fn both_controllers_get_the_configured_leader_election_timers() {
        let mut slow = spec();
        slow.leader_election = LeaderElectionSettings {
            lease_duration: Some(ConfigDuration(Duration::from_secs(60))),
            renew_deadline: Some(ConfigDuration(Duration::from_secs(40))),
            retry_period: Some(ConfigDuration(Duration::from_millis(5500))),
        }
        .resolved();
        for args in [controller_manager(&slow), scheduler(&slow)] {
            assert_eq!(value(&args, "leader-elect-lease-duration"), Some("60s"));
            assert_eq!(value(&args, "leader-elect-renew-deadline"), Some("40s"));
            assert_eq!(value(&args, "leader-elect-retry-period"), Some("5500ms"));
        }
        // Unset: Kubernetes' own defaults, written out.
        let c = controller_manager(&spec());
        assert_eq!(value(&c, "leader-elect-lease-duration"), Some("15s"));
        assert_eq!(value(&c, "leader-elect-renew-deadline"), Some("10s"));
        assert_eq!(value(&c, "leader-elect-retry-period"), Some("2s"));
    }
}
