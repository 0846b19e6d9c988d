//! The `bridge` pod network (`kubernetes.cni: bridge`, the lab's default):
//! Debian's CNI plugins (bridge, host-local, portmap) give each pod an
//! address from its node's `podCIDR` on a Linux bridge; the agent routes
//! the other nodes' pod CIDRs to them (`routes.rs`). Pure rendering.

use ipnet::Ipv4Net;
use serde_json::json;

/// The conflist's file name in `/etc/cni/net.d` (lowest sorts first: the
/// runtime uses the first one).
pub const CONFLIST: &str = "10-muster-bridge.conflist";
/// The bridge on each node, gateway of its pods.
pub const BRIDGE: &str = "cni0";
/// The network's name: host-local keeps its reservations under
/// `/var/lib/cni/networks/NAME`, libcni its results as `NAME-…`.
pub const NETWORK: &str = "muster";

/// The CNI network config for a node whose pods live in `pod_cidr`.
/// `ipMasq` makes traffic from pods to anything outside the node's pod
/// range leave with the node's address (reaching the internet needs it);
/// `hairpinMode` lets a pod reach itself through a Service.
pub fn conflist(pod_cidr: Ipv4Net) -> String {
    let c = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    serde_json::to_string_pretty(&c).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_range_goes_to_host_local() {
        let text = conflist("10.244.3.0/24".parse().expect("cidr"));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.3.0/24"
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");
    }
}
