//! Which names the cluster wants: the API name and one name per node.
//! Pure: `render(names, api_targets, nodes)`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::plan::{Scope, Wanted};
use super::registry;
use crate::config::Dns;

/// The namespace and names of the DNSEndpoint objects that describe the
/// records (their ExternalDNS resource labels, `crd/<ns>/<name>`).
pub const ENDPOINT_NAMESPACE: &str = "kube-system";
pub const API_ENDPOINT_OBJECT: &str = "muster-api";
pub const NODES_ENDPOINT_OBJECT: &str = "muster-nodes";

/// The names of one cluster, from `dns:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub zone: String,
    pub api: String,
    /// `nodes.prod.example.com`; `None`: no node records.
    pub nodes: Option<String>,
    pub ttl: u32,
    pub owner: String,
}

impl Names {
    /// `None` without a provider or a zone: nothing to publish.
    pub fn from_config(dns: &Dns, cluster_name: &str) -> Option<Names> {
        if dns.provider == crate::config::DnsProvider::None {
            return None;
        }
        let zone = dns
            .zone
            .as_deref()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        Some(Names {
            api: dns.api_fqdn()?.to_ascii_lowercase(),
            nodes: dns
                .nodes_subdomain
                .as_ref()
                .map(|s| format!("{}.{zone}", s.trim_end_matches('.').to_ascii_lowercase())),
            ttl: dns.ttl,
            owner: dns.owner_id(cluster_name).to_string(),
            zone,
        })
    }

    /// A node's record name: the first label of its hostname, lower case,
    /// under the nodes' subdomain; `None` when that is not a DNS label.
    pub fn node_name(&self, hostname: &str) -> Option<String> {
        let label = hostname.split('.').next()?.to_ascii_lowercase();
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        Some(format!("{label}.{}", self.nodes.as_ref()?)).filter(|_| valid)
    }
}

/// The records wanted now, and the names the agent may delete.
pub fn render(
    names: &Names,
    api_targets: &BTreeSet<IpAddr>,
    nodes: &BTreeMap<String, IpAddr>,
) -> (Vec<Wanted>, Scope) {
    let mut wanted = Vec::new();
    if !api_targets.is_empty() {
        wanted.push(Wanted {
            name: names.api.clone(),
            targets: api_targets.clone(),
            ttl: names.ttl,
            resource: registry::crd_resource(ENDPOINT_NAMESPACE, API_ENDPOINT_OBJECT),
        });
    }
    for (hostname, ip) in nodes {
        if let Some(name) = names.node_name(hostname) {
            wanted.push(Wanted {
                name,
                targets: [*ip].into(),
                ttl: names.ttl,
                resource: registry::crd_resource(ENDPOINT_NAMESPACE, NODES_ENDPOINT_OBJECT),
            });
        }
    }
    let scope = Scope {
        names: [names.api.clone()].into(),
        subdomains: names.nodes.iter().cloned().collect(),
    };
    (wanted, scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            zone: "example.test".into(),
            api: "api.example.test".into(),
            nodes: Some("nodes.example.test".into()),
            ttl: 60,
            owner: "prod".into(),
        }
    }

    #[test]
    fn the_api_and_every_node_get_a_name() {
        let nodes = [
            ("muster-1".to_string(), "10.0.0.1".parse().expect("ip")),
            (
                "IP-10-0-0-2.ec2.internal".to_string(),
                "10.0.0.2".parse().expect("ip"),
            ),
            ("bad_name".to_string(), "10.0.0.3".parse().expect("ip")),
        ]
        .into();
        let (wanted, scope) = render(
            &names(),
            &["10.0.0.100".parse().expect("ip")].into(),
            &nodes,
        );
        let got: Vec<_> = wanted
            .iter()
            .map(|w| format!("{} {:?} {}", w.name, w.targets, w.resource))
            .collect();
        assert_eq!(
            got,
            [
                "api.example.test {10.0.0.100} crd/kube-system/muster-api",
                "ip-10-0-0-2.nodes.example.test {10.0.0.2} crd/kube-system/muster-nodes",
                "muster-1.nodes.example.test {10.0.0.1} crd/kube-system/muster-nodes",
            ]
        );
        assert!(scope.contains("api.example.test"));
        assert!(scope.contains("old.nodes.example.test"));
        assert!(!scope.contains("www.example.test"));
    }

    #[test]
    fn without_a_nodes_subdomain_only_the_api_is_published() {
        let n = Names {
            nodes: None,
            ..names()
        };
        let nodes = [("muster-1".to_string(), "10.0.0.1".parse().expect("ip"))].into();
        let (wanted, scope) = render(&n, &["10.0.0.100".parse().expect("ip")].into(), &nodes);
        assert_eq!(wanted.len(), 1);
        assert!(!scope.contains("muster-1.nodes.example.test"));
    }
}
