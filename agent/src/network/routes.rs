//! Routes to the other nodes' pods, for the `bridge` pod network: every
//! node reaches another node's `podCIDR` through that node's InternalIP
//! (nodes on one L2 segment, as in the lab or one subnet of a VPC; across
//! subnets a cloud route table or an overlay must carry it instead).
//! `plan` is pure; `apply` does it over rtnetlink.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A node as the pod network needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    pub name: String,
    pub pod_cidr: Ipv4Net,
    pub internal_ip: Ipv4Addr,
}

/// A route change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteChange {
    /// `pod_cidr via gateway`.
    Add {
        pod_cidr: Ipv4Net,
        gateway: Ipv4Addr,
    },
    /// A route this agent added for a node that is gone or moved.
    Remove {
        pod_cidr: Ipv4Net,
        gateway: Ipv4Addr,
    },
}

/// What to change so that the routes the agent owns (`current`: pod CIDR
/// → gateway) become one per other node. The node's own CIDR is local
/// (its bridge), and a node without an address or CIDR yet is skipped.
pub fn plan(
    me: &str,
    nodes: &[NodeRoute],
    current: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> Vec<RouteChange> {
    let wanted: BTreeMap<Ipv4Net, Ipv4Addr> = nodes
        .iter()
        .filter(|n| n.name != me)
        .map(|n| (n.pod_cidr, n.internal_ip))
        .collect();
    let mut changes = Vec::new();
    for (cidr, gw) in current {
        if wanted.get(cidr) != Some(gw) {
            changes.push(RouteChange::Remove {
                pod_cidr: *cidr,
                gateway: *gw,
            });
        }
    }
    for (cidr, gw) in &wanted {
        if current.get(cidr) != Some(gw) {
            changes.push(RouteChange::Add {
                pod_cidr: *cidr,
                gateway: *gw,
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, ip: &str) -> NodeRoute {
        NodeRoute {
            name: name.into(),
            pod_cidr: cidr.parse().expect("cidr"),
            internal_ip: ip.parse().expect("ip"),
        }
    }

    #[test]
    fn one_route_per_other_node_and_stale_ones_go() {
        let nodes = [
            node("a", "10.244.0.0/24", "10.0.0.11"),
            node("b", "10.244.1.0/24", "10.0.0.12"),
            node("c", "10.244.2.0/24", "10.0.0.13"),
        ];
        let none = BTreeMap::new();
        let p = plan("a", &nodes, &none);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|c| matches!(c, RouteChange::Add { .. })));

        // b is gone, c moved to another address, d is stale.
        let current: BTreeMap<Ipv4Net, Ipv4Addr> = [
            ("10.244.1.0/24", "10.0.0.12"),
            ("10.244.2.0/24", "10.0.0.99"),
            ("10.244.9.0/24", "10.0.0.19"),
        ]
        .into_iter()
        .map(|(c, g)| (c.parse().expect("cidr"), g.parse().expect("ip")))
        .collect();
        let p = plan(
            "a",
            &nodes[..1]
                .iter()
                .chain(&nodes[2..])
                .cloned()
                .collect::<Vec<_>>(),
            &current,
        );
        assert_eq!(
            p,
            vec![
                RouteChange::Remove {
                    pod_cidr: "10.244.1.0/24".parse().expect("cidr"),
                    gateway: "10.0.0.12".parse().expect("ip")
                },
                RouteChange::Remove {
                    pod_cidr: "10.244.2.0/24".parse().expect("cidr"),
                    gateway: "10.0.0.99".parse().expect("ip")
                },
                RouteChange::Remove {
                    pod_cidr: "10.244.9.0/24".parse().expect("cidr"),
                    gateway: "10.0.0.19".parse().expect("ip")
                },
                RouteChange::Add {
                    pod_cidr: "10.244.2.0/24".parse().expect("cidr"),
                    gateway: "10.0.0.13".parse().expect("ip")
                },
            ]
        );
        // Nothing to do once in step.
        let done: BTreeMap<_, _> = [
            (nodes[1].pod_cidr, nodes[1].internal_ip),
            (nodes[2].pod_cidr, nodes[2].internal_ip),
        ]
        .into_iter()
        .collect();
        assert!(plan("a", &nodes, &done).is_empty());
    }
}
