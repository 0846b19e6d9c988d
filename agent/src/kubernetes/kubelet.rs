//! The kubelet of every node: its `KubeletConfiguration`, its command line
//! and its bootstrap kubeconfig, rendered from typed inputs (pure).
//!
//! Every kubelet joins by TLS bootstrap with the cluster's bootstrap token:
//! the controller-manager signs its client certificate (auto-approved for
//! `system:bootstrappers`), and it rotates it itself. Serving certificates
//! are requested the same way (`serverTLSBootstrap`) and approved by the
//! control-plane agents after checking them (`serving.rs`), so `kubectl
//! logs` and `exec` verify the kubelet against the cluster CA.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::certs::first_service_ip;
use crate::config::{Taint, TaintEffect};

/// Where the kubelet keeps its state and certificates.
pub const ROOT_DIR: &str = "/var/lib/kubelet";
/// containerd's CRI socket.
pub const CONTAINERD_SOCKET: &str = "unix:///run/containerd/containerd.sock";

/// The cgroup driver: systemd on the image (containerd is set to match),
/// cgroupfs where there is no systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

/// What one node's kubelet is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletSpec {
    pub node_name: String,
    /// The node's private address: its InternalIP, never the VIP.
    pub node_ip: Ipv4Addr,
    /// The cluster CA (to check clients of the kubelet's API).
    pub client_ca_file: PathBuf,
    pub service_cidr: ipnet::IpNet,
    pub cluster_domain: String,
    pub cgroup_driver: CgroupDriver,
    pub labels: Vec<(String, String)>,
    pub taints: Vec<Taint>,
    /// The kubelet's config file, bootstrap kubeconfig and the kubeconfig
    /// it writes once bootstrapped.
    pub config_file: PathBuf,
    pub bootstrap_kubeconfig: PathBuf,
    pub kubeconfig: PathBuf,
    pub root_dir: PathBuf,
    /// `resolv.conf` handed to pods (systemd-resolved's upstream list, so
    /// a cluster DNS never loops to the stub resolver).
    pub resolv_conf: PathBuf,
}

/// The label every control-plane node gets (kubeadm's).
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// The cluster DNS address Services resolve through: the tenth address of
/// the service network (kubeadm's convention), reserved for CoreDNS.
pub fn cluster_dns(service_cidr: &ipnet::IpNet) -> Option<IpAddr> {
    let first = first_service_ip(service_cidr)?;
    match first {
        IpAddr::V4(v4) => Some(IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() + 9))),
        IpAddr::V6(v6) => Some(IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() + 9))),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    authentication: Authentication<'a>,
    authorization: Authorization,
    cgroup_driver: CgroupDriver,
    container_runtime_endpoint: &'static str,
    #[serde(rename = "clusterDNS")]
    cluster_dns: Vec<String>,
    cluster_domain: &'a str,
    rotate_certificates: bool,
    #[serde(rename = "serverTLSBootstrap")]
    server_tls_bootstrap: bool,
    resolv_conf: String,
    register_with_taints: Vec<TaintValue>,
    /// No static pods: the control plane runs as host services.
    static_pod_path: &'static str,
    /// Swap is not supported by Muster's nodes.
    fail_swap_on: bool,
    /// Protect the node: evict before it runs out of memory.
    eviction_hard: std::collections::BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authentication<'a> {
    anonymous: Enabled,
    webhook: Webhook,
    x509: X509<'a>,
}

#[derive(Serialize)]
struct Enabled {
    enabled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    enabled: bool,
    #[serde(rename = "cacheTTL")]
    cache_ttl: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct X509<'a> {
    #[serde(rename = "clientCAFile")]
    client_ca_file: &'a str,
}

#[derive(Serialize)]
struct Authorization {
    mode: &'static str,
}

#[derive(Serialize)]
struct TaintValue {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    effect: &'static str,
}

fn effect(e: TaintEffect) -> &'static str {
    match e {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

/// The `KubeletConfiguration` (kubelet.config.k8s.io/v1beta1) as YAML.
pub fn config(s: &KubeletSpec) -> String {
    let ca = s.client_ca_file.display().to_string();
    let c = KubeletConfiguration {
        api_version: "kubelet.config.k8s.io/v1beta1",
        kind: "KubeletConfiguration",
        authentication: Authentication {
            anonymous: Enabled { enabled: false },
            webhook: Webhook {
                enabled: true,
                cache_ttl: "2m0s",
            },
            x509: X509 {
                client_ca_file: &ca,
            },
        },
        authorization: Authorization { mode: "Webhook" },
        cgroup_driver: s.cgroup_driver,
        container_runtime_endpoint: CONTAINERD_SOCKET,
        cluster_dns: cluster_dns(&s.service_cidr)
            .map(|ip| ip.to_string())
            .into_iter()
            .collect(),
        cluster_domain: &s.cluster_domain,
        rotate_certificates: true,
        server_tls_bootstrap: true,
        resolv_conf: s.resolv_conf.display().to_string(),
        register_with_taints: s
            .taints
            .iter()
            .map(|t| TaintValue {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: effect(t.effect),
            })
            .collect(),
        static_pod_path: "",
        fail_swap_on: true,
        eviction_hard: [
            ("memory.available", "100Mi"),
            ("nodefs.available", "10%"),
            ("imagefs.available", "15%"),
        ]
        .into_iter()
        .collect(),
    };
    // Plain data: serialising cannot fail.
    serde_saphyr::to_string(&c).unwrap_or_default()
}

/// The kubelet's command line: what the config file cannot say.
pub fn flags(s: &KubeletSpec) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    let mut f = vec![
        format!("--config={}", p(&s.config_file)),
        format!("--bootstrap-kubeconfig={}", p(&s.bootstrap_kubeconfig)),
        format!("--kubeconfig={}", p(&s.kubeconfig)),
        format!("--root-dir={}", p(&s.root_dir)),
        format!("--hostname-override={}", s.node_name),
        // The InternalIP Kubernetes reports and routes pods to: the
        // node's own address, never the VIP it may hold.
        format!("--node-ip={}", s.node_ip),
    ];
    if !s.labels.is_empty() {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.push(format!("--node-labels={}", labels.join(",")));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> KubeletSpec {
        KubeletSpec {
            node_name: "node-4".into(),
            node_ip: Ipv4Addr::new(10, 77, 0, 14),
            client_ca_file: "/etc/kubernetes/pki/ca.crt".into(),
            service_cidr: "10.96.0.0/12".parse().expect("cidr"),
            cluster_domain: "cluster.local".into(),
            cgroup_driver: CgroupDriver::Systemd,
            labels: vec![("tier".into(), "web".into())],
            taints: vec![Taint::parse("dedicated=gpu:NoSchedule").expect("taint")],
            config_file: "/var/lib/kubelet/config.yaml".into(),
            bootstrap_kubeconfig: "/etc/kubernetes/bootstrap-kubelet.conf".into(),
            kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
            root_dir: ROOT_DIR.into(),
            resolv_conf: "/run/systemd/resolve/resolv.conf".into(),
        }
    }

    #[test]
    fn the_config_says_what_a_secure_node_needs() {
        let yaml = config(&spec());
        let v: serde_json::Value = serde_saphyr::from_str(&yaml).expect("YAML");
        let at = |path: &str| v.pointer(path).cloned().unwrap_or_default();
        for (path, want) in [
            ("/kind", "KubeletConfiguration"),
            ("/apiVersion", "kubelet.config.k8s.io/v1beta1"),
            ("/cgroupDriver", "systemd"),
            ("/clusterDNS/0", "10.96.0.10"),
            ("/clusterDomain", "cluster.local"),
            ("/authorization/mode", "Webhook"),
            (
                "/authentication/x509/clientCAFile",
                "/etc/kubernetes/pki/ca.crt",
            ),
            (
                "/containerRuntimeEndpoint",
                "unix:///run/containerd/containerd.sock",
            ),
            ("/registerWithTaints/0/effect", "NoSchedule"),
        ] {
            assert_eq!(at(path), serde_json::json!(want), "{path}:\n{yaml}");
        }
        for (path, want) in [
            ("/authentication/anonymous/enabled", false),
            ("/authentication/webhook/enabled", true),
            ("/serverTLSBootstrap", true),
            ("/rotateCertificates", true),
        ] {
            assert_eq!(at(path), serde_json::json!(want), "{path}:\n{yaml}");
        }
    }

    #[test]
    fn flags_pin_the_node_name_and_address() {
        let f = flags(&spec());
        assert!(f.contains(&"--node-ip=10.77.0.14".to_string()), "{f:?}");
        assert!(f.contains(&"--hostname-override=node-4".to_string()));
        assert!(f.contains(&"--node-labels=tier=web".to_string()));
        assert_eq!(
            cluster_dns(&"10.96.0.0/12".parse().expect("cidr")).map(|i| i.to_string()),
            Some("10.96.0.10".into())
        );
    }
}
