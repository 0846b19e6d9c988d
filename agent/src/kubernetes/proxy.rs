//! kube-proxy on every node (iptables mode), so Services work: its
//! `KubeProxyConfiguration` and command line (pure).
//!
//! It runs as a host service with the node's own identity (the kubelet's
//! client certificate, group `system:nodes`), which the cluster objects
//! bind to `system:node-proxier`: a worker holds no other credential.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Serialize;

/// What one node's kube-proxy is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    /// The pod network: traffic from outside it to a Service is
    /// masqueraded.
    pub cluster_cidr: ipnet::IpNet,
    pub kubeconfig: PathBuf,
    pub config_file: PathBuf,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeProxyConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    bind_address: String,
    client_connection: ClientConnection,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: String,
    hostname_override: &'a str,
    mode: &'static str,
    /// Metrics and health on the node's own address, not every address.
    metrics_bind_address: String,
    healthz_bind_address: String,
}

#[derive(Serialize)]
struct ClientConnection {
    kubeconfig: String,
}

/// The `KubeProxyConfiguration` (kubeproxy.config.k8s.io/v1alpha1) as YAML.
pub fn config(s: &ProxySpec) -> String {
    let c = KubeProxyConfiguration {
        api_version: "kubeproxy.config.k8s.io/v1alpha1",
        kind: "KubeProxyConfiguration",
        bind_address: s.node_ip.to_string(),
        client_connection: ClientConnection {
            kubeconfig: s.kubeconfig.display().to_string(),
        },
        cluster_cidr: s.cluster_cidr.to_string(),
        hostname_override: &s.node_name,
        mode: "iptables",
        metrics_bind_address: "127.0.0.1:10249".into(),
        healthz_bind_address: format!("{}:10256", s.node_ip),
    };
    serde_saphyr::to_string(&c).unwrap_or_default()
}

pub fn flags(s: &ProxySpec) -> Vec<String> {
    vec![format!("--config={}", s.config_file.display())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_mode_for_the_pod_network() {
        let yaml = config(&ProxySpec {
            node_name: "node-4".into(),
            node_ip: Ipv4Addr::new(10, 77, 0, 14),
            cluster_cidr: "10.244.0.0/16".parse().expect("cidr"),
            kubeconfig: "/etc/kubernetes/kube-proxy.conf".into(),
            config_file: "/var/lib/kube-proxy/config.yaml".into(),
        });
        let v: serde_json::Value = serde_saphyr::from_str(&yaml).expect("YAML");
        for (path, want) in [
            ("/kind", "KubeProxyConfiguration"),
            ("/apiVersion", "kubeproxy.config.k8s.io/v1alpha1"),
            ("/mode", "iptables"),
            ("/clusterCIDR", "10.244.0.0/16"),
            ("/hostnameOverride", "node-4"),
            (
                "/clientConnection/kubeconfig",
                "/etc/kubernetes/kube-proxy.conf",
            ),
        ] {
            assert_eq!(
                v.pointer(path),
                Some(&serde_json::json!(want)),
                "{path}:\n{yaml}"
            );
        }
    }
}
